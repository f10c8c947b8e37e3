//! The tray icon's look and menu, as data computed from the view (so every state's whole menu
//! is tested without a desktop), and the thin part that puts them on the OS's tray.

use crate::view::{Action, DaemonLink, View};
use pinhole_proto::ipc::State;

/// Which icon the tray shows; the shapes differ, not only the colours, so the monochrome set
/// tells the states apart too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    Disconnected,
    Connecting,
    Connected,
    /// Something needs the person: pinholed missing, session expired, an action failed.
    Attention,
}

impl Look {
    pub fn file_stem(self) -> &'static str {
        match self {
            Look::Disconnected => "disconnected",
            Look::Connecting => "connecting",
            Look::Connected => "connected",
            Look::Attention => "attention",
        }
    }
}

/// One menu entry; `id` is what a click reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A line of text that cannot be clicked.
    Label(String),
    Button {
        id: &'static str,
        label: String,
        enabled: bool,
    },
    Separator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub look: Look,
    pub tooltip: String,
    pub items: Vec<Item>,
}

pub const OPEN: &str = "open";
pub const QUIT: &str = "quit";
pub const CONNECT: &str = "connect";
pub const DISCONNECT: &str = "disconnect";
pub const COPY_ADDRESS: &str = "copy-address";
pub const SIGN_IN: &str = "sign-in";

fn button(id: &'static str, label: &str, enabled: bool) -> Item {
    Item::Button {
        id,
        label: label.to_string(),
        enabled,
    }
}

/// The tray for a view.
pub fn menu(v: &View) -> Menu {
    let state = v.status.as_ref().map(|s| s.state);
    let (look, headline) = match (&v.daemon, state, v.action) {
        (DaemonLink::NotRunning { .. }, _, _) => (Look::Attention, "Pinhole service not running"),
        (DaemonLink::NotAllowed { .. }, _, _) => (Look::Attention, "Not allowed to use Pinhole"),
        (DaemonLink::WrongVersion { .. }, _, _) => (Look::Attention, "Pinhole needs an update"),
        (DaemonLink::Unreachable { .. }, _, _) => (Look::Attention, "Pinhole service unreachable"),
        (DaemonLink::Connecting, _, _) | (_, None, _) => (Look::Disconnected, "Starting…"),
        (_, _, Some(Action::SigningIn)) => (Look::Connecting, "Signing in…"),
        (_, _, Some(Action::Connecting)) => (Look::Connecting, "Connecting…"),
        (_, _, Some(Action::Disconnecting)) => (Look::Connecting, "Disconnecting…"),
        (_, _, Some(Action::SigningOut)) => (Look::Connecting, "Signing out…"),
        (_, Some(State::SessionExpired), _) => (Look::Attention, "Session expired: sign in again"),
        (_, Some(State::NeedsLogin), _) => (Look::Disconnected, "Signed out"),
        (_, Some(State::Stopped), _) => (Look::Disconnected, "Disconnected"),
        (_, Some(State::Connecting), _) => (Look::Connecting, "Connecting…"),
        (_, Some(State::Connected), _) => (Look::Connected, "Connected"),
    };
    let mut items = vec![Item::Label(headline.to_string())];
    let own = v.status.as_ref().and_then(|s| s.self_node.as_ref());
    if let Some(me) = own {
        if let Some(addr) = me.addresses.first() {
            items.push(Item::Label(format!("This device: {}", me.name)));
            items.push(button(COPY_ADDRESS, &format!("Copy {addr}"), true));
        }
    }
    items.push(Item::Separator);
    let idle = v.ready() && v.action.is_none();
    match state {
        Some(State::NeedsLogin | State::SessionExpired) if v.ready() => {
            items.push(button(SIGN_IN, "Sign in…", v.action.is_none()))
        }
        Some(State::Connected | State::Connecting) => {
            items.push(button(DISCONNECT, "Disconnect", idle))
        }
        Some(State::Stopped) => items.push(button(CONNECT, "Connect", idle)),
        _ => {}
    }
    items.push(button(OPEN, "Open Pinhole", true));
    items.push(Item::Separator);
    items.push(button(QUIT, "Quit Pinhole", true));
    Menu {
        look,
        tooltip: format!("Pinhole: {headline}"),
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use pinhole_proto::ipc::{Nat, SelfStatus, Status};

    fn view(daemon: DaemonLink, state: Option<State>, action: Option<Action>) -> View {
        let mut v = View::new(Settings::default());
        v.daemon = daemon;
        v.action = action;
        v.status = state.map(|state| Status {
            dns: None,
            state,
            reason: None,
            login: None,
            self_node: matches!(state, State::Connected | State::Stopped | State::Connecting).then(
                || SelfStatus {
                    dns_name: String::new(),
                    name: "laptop".into(),
                    node_key: "k".into(),
                    addresses: vec!["100.64.0.1".into(), "fd7a:115c:a1e0::1".into()],
                    endpoints: vec![],
                    nat: Nat::default(),
                    home_relay: None,
                    expires: None,
                    tags: vec![],
                    policy: false,
                    advertised_routes: Vec::new(),
                    approved_routes: Vec::new(),
                    accept_routes: false,
                    exit_node: None,
                    routing_error: None,
                },
            ),
            peers: vec![],
        });
        v
    }

    fn ready() -> DaemonLink {
        DaemonLink::Ready {
            software: "pinholed 0.1.0".into(),
        }
    }

    fn b(id: &'static str, label: &str, enabled: bool) -> Item {
        button(id, label, enabled)
    }

    fn l(text: &str) -> Item {
        Item::Label(text.into())
    }

    #[test]
    fn connected_shows_the_address_and_disconnect() {
        let m = menu(&view(ready(), Some(State::Connected), None));
        assert_eq!(m.look, Look::Connected);
        assert_eq!(m.tooltip, "Pinhole: Connected");
        assert_eq!(
            m.items,
            vec![
                l("Connected"),
                l("This device: laptop"),
                b(COPY_ADDRESS, "Copy 100.64.0.1", true),
                Item::Separator,
                b(DISCONNECT, "Disconnect", true),
                b(OPEN, "Open Pinhole", true),
                Item::Separator,
                b(QUIT, "Quit Pinhole", true),
            ]
        );
    }

    #[test]
    fn stopped_offers_connect_and_greys_it_while_an_action_runs() {
        let m = menu(&view(ready(), Some(State::Stopped), None));
        assert_eq!(m.look, Look::Disconnected);
        assert_eq!(
            m.items,
            vec![
                l("Disconnected"),
                l("This device: laptop"),
                b(COPY_ADDRESS, "Copy 100.64.0.1", true),
                Item::Separator,
                b(CONNECT, "Connect", true),
                b(OPEN, "Open Pinhole", true),
                Item::Separator,
                b(QUIT, "Quit Pinhole", true),
            ]
        );
        let m = menu(&view(
            ready(),
            Some(State::Stopped),
            Some(Action::Connecting),
        ));
        assert_eq!(m.look, Look::Connecting);
        assert_eq!(m.items[0], l("Connecting…"));
        assert_eq!(m.items[4], b(CONNECT, "Connect", false));
    }

    #[test]
    fn signed_out_and_expired_offer_sign_in() {
        let m = menu(&view(ready(), Some(State::NeedsLogin), None));
        assert_eq!(m.look, Look::Disconnected);
        assert_eq!(
            m.items,
            vec![
                l("Signed out"),
                Item::Separator,
                b(SIGN_IN, "Sign in…", true),
                b(OPEN, "Open Pinhole", true),
                Item::Separator,
                b(QUIT, "Quit Pinhole", true),
            ]
        );
        let m = menu(&view(ready(), Some(State::SessionExpired), None));
        assert_eq!(m.look, Look::Attention);
        assert_eq!(m.items[0], l("Session expired: sign in again"));
        assert_eq!(m.items[2], b(SIGN_IN, "Sign in…", true));
        let m = menu(&view(
            ready(),
            Some(State::NeedsLogin),
            Some(Action::SigningIn),
        ));
        assert_eq!(m.look, Look::Connecting);
        assert_eq!(m.items[0], l("Signing in…"));
        assert_eq!(m.items[2], b(SIGN_IN, "Sign in…", false));
    }

    #[test]
    fn a_missing_daemon_needs_attention_and_offers_only_open_and_quit() {
        for (link, headline) in [
            (
                DaemonLink::NotRunning {
                    socket: "/run/pinhole/pinholed.sock".into(),
                    fix: "start it".into(),
                },
                "Pinhole service not running",
            ),
            (
                DaemonLink::NotAllowed {
                    detail: "no".into(),
                    fix: "join".into(),
                    joined_since_login: false,
                },
                "Not allowed to use Pinhole",
            ),
            (
                DaemonLink::WrongVersion {
                    message: "v2".into(),
                    fix: "update".into(),
                },
                "Pinhole needs an update",
            ),
        ] {
            let m = menu(&view(link, None, None));
            assert_eq!(m.look, Look::Attention);
            assert_eq!(
                m.items,
                vec![
                    l(headline),
                    Item::Separator,
                    b(OPEN, "Open Pinhole", true),
                    Item::Separator,
                    b(QUIT, "Quit Pinhole", true),
                ]
            );
        }
        let m = menu(&view(DaemonLink::Connecting, None, None));
        assert_eq!(m.look, Look::Disconnected);
        assert_eq!(m.items[0], l("Starting…"));
    }

    #[test]
    fn connecting_shows_the_connecting_look() {
        let m = menu(&view(ready(), Some(State::Connecting), None));
        assert_eq!(m.look, Look::Connecting);
        assert_eq!(m.items[4], b(DISCONNECT, "Disconnect", true));
    }
}
