//! The state a person sees first (`needs-login`, `stopped`, `connecting`, `connected`,
//! `session-expired`) and why, derived from what the daemon knows: pure, so every combination is
//! a unit test.

use crate::local_api::status::Headline;
use pinhole_proto::ipc::{LoginPrompt, State};

/// What the daemon knows that decides its state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// Run from a static WireGuard configuration: no sign-in at all.
    pub static_config: bool,
    /// A sign-in under way: the server, and the URL and code once a person must approve it.
    pub signing_in: Option<(&'a str, Option<&'a LoginPrompt>)>,
    /// Registered with a coordination server (following its map).
    pub signed_in: bool,
    /// Why control signed this node out (removed, expired), if it did.
    pub signed_out: Option<&'a str>,
    /// Why the last sign-in failed.
    pub login_error: Option<&'a str>,
    /// The TUN device is up.
    pub tunnel_up: bool,
    /// Why the TUN device could not be made.
    pub tun_error: Option<&'a str>,
    /// A network map has arrived.
    pub has_map: bool,
    /// Why control cannot be reached right now.
    pub unreachable: Option<&'a str>,
}

/// The state and its reason, in words.
pub fn headline(f: &Facts<'_>) -> Headline {
    let head = |state, reason: Option<String>| Headline {
        state,
        reason,
        login: None,
    };
    if let Some((server, prompt)) = f.signing_in {
        return match prompt {
            Some(p) => Headline {
                state: State::NeedsLogin,
                reason: Some("waiting for the sign-in to be approved in a browser".into()),
                login: Some(p.clone()),
            },
            None => head(State::Connecting, Some(format!("signing in to {server}"))),
        };
    }
    if !f.static_config && !f.signed_in {
        return match (f.signed_out, f.login_error) {
            (Some(why), _) => head(
                State::SessionExpired,
                Some(format!(
                    "signed out by the coordination server ({why}): run `pinhole login`"
                )),
            ),
            (None, Some(e)) => head(State::NeedsLogin, Some(format!("sign-in failed: {e}"))),
            (None, None) => head(
                State::NeedsLogin,
                Some("not signed in: run `pinhole login`".into()),
            ),
        };
    }
    if !f.tunnel_up {
        let reason = f
            .tun_error
            .map(str::to_string)
            .unwrap_or_else(|| "the tunnel is down: `pinhole up` connects".into());
        return head(State::Stopped, Some(reason));
    }
    if !f.static_config && !f.has_map {
        return head(
            State::Connecting,
            Some(match f.unreachable {
                Some(r) => format!("coordination server unreachable: {r}"),
                None => "waiting for the network map".into(),
            }),
        );
    }
    head(
        State::Connected,
        f.unreachable
            .map(|r| format!("coordination server unreachable ({r}); using the last network map")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Facts<'static> {
        Facts {
            signed_in: true,
            tunnel_up: true,
            has_map: true,
            ..Facts::default()
        }
    }

    fn said(f: Facts<'_>) -> (State, String) {
        let h = headline(&f);
        (h.state, h.reason.unwrap_or_default())
    }

    #[test]
    fn every_state_with_its_reason() {
        // Signed out from the start.
        let (s, r) = said(Facts::default());
        assert_eq!(s, State::NeedsLogin);
        assert!(r.contains("pinhole login"), "{r}");
        // A sign-in under way, then waiting for a person.
        let (s, r) = said(Facts {
            signing_in: Some(("https://c.example", None)),
            ..Facts::default()
        });
        assert_eq!(
            (s, r.as_str()),
            (State::Connecting, "signing in to https://c.example")
        );
        let prompt = LoginPrompt {
            url: "https://c.example/device?code=BCDF-GHJK".into(),
            code: "BCDF-GHJK".into(),
        };
        let h = headline(&Facts {
            signing_in: Some(("https://c.example", Some(&prompt))),
            signed_in: true,
            ..Facts::default()
        });
        assert_eq!(
            h.state,
            State::NeedsLogin,
            "a sign-in under way comes first"
        );
        assert_eq!(h.login, Some(prompt.clone()));
        // The sign-in failed (control unreachable, key refused): said, and still needs login.
        let (s, r) = said(Facts {
            login_error: Some("cannot reach the coordination server"),
            ..Facts::default()
        });
        assert_eq!(s, State::NeedsLogin);
        assert!(r.contains("sign-in failed: cannot reach"), "{r}");
        // Signed out by control (removed or expired), also while the tunnel was down.
        for tunnel_up in [true, false] {
            let (s, r) = said(Facts {
                signed_out: Some("node removed"),
                login_error: Some("older failure"),
                tunnel_up,
                ..Facts::default()
            });
            assert_eq!(s, State::SessionExpired);
            assert!(
                r.contains("node removed") && r.contains("pinhole login"),
                "{r}"
            );
        }
        // Signed in, tunnel down by choice, or because the device could not be made.
        let (s, r) = said(Facts {
            tunnel_up: false,
            ..up()
        });
        assert_eq!(s, State::Stopped);
        assert!(r.contains("pinhole up"), "{r}");
        let (s, r) = said(Facts {
            tunnel_up: false,
            tun_error: Some("cannot create the TUN device: permission denied"),
            ..up()
        });
        assert_eq!(
            (s, r.as_str()),
            (
                State::Stopped,
                "cannot create the TUN device: permission denied"
            )
        );
        // Up, waiting for the map (control reachable or not).
        let (s, r) = said(Facts {
            has_map: false,
            ..up()
        });
        assert_eq!(
            (s, r.as_str()),
            (State::Connecting, "waiting for the network map")
        );
        let (s, r) = said(Facts {
            has_map: false,
            unreachable: Some("connection refused"),
            ..up()
        });
        assert_eq!(s, State::Connecting);
        assert!(r.contains("unreachable: connection refused"), "{r}");
        // Connected; control gone later: still connected, on the last map.
        assert_eq!(said(up()), (State::Connected, String::new()));
        let (s, r) = said(Facts {
            unreachable: Some("timed out"),
            ..up()
        });
        assert_eq!(s, State::Connected);
        assert!(r.contains("using the last network map"), "{r}");
        // A static configuration never needs a sign-in or a map.
        let (s, _) = said(Facts {
            static_config: true,
            tunnel_up: true,
            ..Facts::default()
        });
        assert_eq!(s, State::Connected);
    }
}
