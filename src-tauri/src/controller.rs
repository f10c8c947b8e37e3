//! The app's controller: the one task that owns the connection to pinholed (a subscription
//! that pushes every state change), the person's stored sign-in and the settings. Tauri
//! commands send it a `Command`; it publishes a new `View` after every change and asks the
//! shell for `Effect`s (open the browser, notify). Requests to pinholed run on connections of
//! their own, so a sign-in waiting for the browser never holds up the peer list.

use crate::settings::{self, Settings};
use crate::view::{Action, ActionError, DaemonLink, Effect, View};
use pinhole_client::{credentials, LocalApi, LocalApiError};
use pinhole_proto::ipc::{
    Connection, Credential, LoginResult, NetcheckReport, Op, PingReply, Secret, State, Status,
};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Where the controller finds pinholed, the sign-in and the settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// The credential store entry (`session`, as the CLI's; tests use their own).
    pub credential_name: String,
    pub settings_path: PathBuf,
    /// How long to wait before trying pinholed again when it is not there.
    pub retry: Duration,
}

impl Config {
    /// This user's: `PINHOLE_SOCKET` or the OS's default socket, the CLI's credential entry and
    /// the settings in the user's config directory.
    pub fn from_env() -> Config {
        Config {
            socket: std::env::var_os("PINHOLE_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| pinhole_proto::ipc::default_socket_path().into()),
            credential_name: credentials::default_name(),
            settings_path: settings::default_path(),
            retry: Duration::from_secs(2),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, ActionError>>;

/// How long before this node's sign-in expires the app warns.
const EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// What the window (through Tauri commands) and the tray ask for.
#[derive(Debug)]
pub enum Command {
    /// Try pinholed again now.
    Retry,
    /// Sign in: with an auth key, or in the browser (the code shows in the status).
    SignIn {
        server: String,
        auth_key: Option<String>,
        reply: Reply<()>,
    },
    /// Stop waiting for the browser.
    CancelSignIn,
    /// The connect switch.
    SetConnected {
        on: bool,
        reply: Reply<()>,
    },
    SignOut {
        reply: Reply<()>,
    },
    Ping {
        peer: String,
        reply: Reply<PingReply>,
    },
    Netcheck {
        reply: Reply<NetcheckReport>,
    },
    SetSettings {
        settings: Settings,
        reply: Reply<()>,
    },
    /// The routes toggle, the exit-node picker and what this device offers (each `None`:
    /// unchanged; an empty exit node: none; an empty list of routes: none).
    SetRoutes {
        accept_routes: Option<bool>,
        exit_node: Option<String>,
        allow_lan: Option<bool>,
        /// What this device offers: networks (CIDRs) and being an exit node.
        advertise_routes: Option<Vec<String>>,
        advertise_exit_node: Option<bool>,
        reply: Reply<()>,
    },
}

/// A request that ran on its own connection, back with its result.
enum Done {
    SignedIn(Result<LoginResult, ActionError>, Reply<()>),
    Switched(Result<(), ActionError>, Reply<()>),
    SignedOut(Result<Option<String>, ActionError>, Reply<()>),
    Netcheck(Result<NetcheckReport, ActionError>, Reply<NetcheckReport>),
}

/// What the task of an action that started needs: where pinholed and the stored sign-in are,
/// and where its result and the person's answer go.
struct Started {
    reply: Reply<()>,
    socket: PathBuf,
    credential_name: String,
    done: mpsc::UnboundedSender<Done>,
}

/// Starts the controller; it runs until every command sender is gone.
pub fn spawn(
    cfg: Config,
) -> (
    mpsc::Sender<Command>,
    watch::Receiver<View>,
    mpsc::UnboundedReceiver<Effect>,
) {
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let settings = settings::load(&cfg.settings_path);
    let (view_tx, view_rx) = watch::channel(View::new(settings));
    let (effect_tx, effect_rx) = mpsc::unbounded_channel();
    let c = Controller::new(cfg, view_tx, effect_tx);
    tauri::async_runtime::spawn(c.run(cmd_rx));
    (cmd_tx, view_rx, effect_rx)
}

pub struct Controller {
    cfg: Config,
    view: View,
    view_tx: watch::Sender<View>,
    effects: mpsc::UnboundedSender<Effect>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    sign_in: Option<tokio::task::AbortHandle>,
    /// The sign-in code whose page was opened in the browser (opened once per code).
    opened_code: Option<String>,
    /// Whether "connect on start" has had its one chance.
    autoconnect_done: bool,
    /// The sign-in expiry already warned about (once each).
    expiry_warned: Option<String>,
}

impl Controller {
    pub fn new(
        cfg: Config,
        view_tx: watch::Sender<View>,
        effects: mpsc::UnboundedSender<Effect>,
    ) -> Controller {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let view = view_tx.borrow().clone();
        Controller {
            cfg,
            view,
            view_tx,
            effects,
            done_tx,
            done_rx,
            sign_in: None,
            opened_code: None,
            autoconnect_done: false,
            expiry_warned: None,
        }
    }

    fn publish(&self) {
        self.view_tx.send_replace(self.view.clone());
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let mut sub = self.subscribe().await;
            let retry = tokio::time::sleep(self.cfg.retry);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    next = next_status(&mut sub) => match next {
                        Ok(s) => self.on_status(s),
                        Err(e) => {
                            tracing::info!("lost pinholed: {e}");
                            // Reconnect soon: it may have restarted.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            break;
                        }
                    },
                    cmd = commands.recv() => match cmd {
                        None => return,
                        Some(Command::Retry) if sub.is_none() => break,
                        Some(Command::Retry) => {}
                        Some(c) => self.handle(c),
                    },
                    Some(done) = self.done_rx.recv() => self.on_done(done),
                    _ = &mut retry, if sub.is_none() => break,
                }
            }
        }
    }

    /// Connects to pinholed and subscribes; on failure the view says why.
    async fn subscribe(&mut self) -> Option<LocalApi> {
        let socket = self.cfg.socket.display().to_string();
        let result = async {
            let mut c = LocalApi::connect(&self.cfg.socket).await?;
            c.request(Op::Subscribe).await?;
            Ok::<_, LocalApiError>(c)
        }
        .await;
        match result {
            Ok(c) => {
                self.view.daemon = DaemonLink::Ready {
                    software: c.daemon().to_string(),
                };
                Some(c)
            }
            Err(e) => {
                let link = DaemonLink::from_error(&e, &socket);
                if link != self.view.daemon {
                    tracing::info!("pinholed: {e}");
                }
                self.view.daemon = link;
                self.view.status = None;
                self.publish();
                None
            }
        }
    }

    fn on_status(&mut self, s: Status) {
        let before = self.view.status.take();
        self.notify_changes(before.as_ref(), &s);
        self.warn_of_expiry(&s, std::time::SystemTime::now());
        // An interactive sign-in this app started: open its page once per code.
        if let (Some(p), Some(Action::SigningIn)) = (&s.login, self.view.action) {
            if self.opened_code.as_deref() != Some(p.code.as_str()) {
                self.opened_code = Some(p.code.clone());
                let _ = self.effects.send(Effect::OpenUrl(p.url.clone()));
            }
        }
        let stopped = s.state == State::Stopped;
        self.view.status = Some(s);
        if !self.autoconnect_done {
            self.autoconnect_done = true;
            if stopped && self.view.settings.connect_on_start && self.view.action.is_none() {
                let (reply, _) = oneshot::channel();
                self.switch(true, reply);
            }
        }
        self.publish();
    }

    /// Notifications for what changed between two snapshots, as the settings allow.
    fn notify_changes(&self, before: Option<&Status>, now: &Status) {
        let Some(before) = before else { return };
        let notify = |title: String, body: String| {
            let _ = self.effects.send(Effect::Notify { title, body });
        };
        if self.view.settings.notify_session
            && now.state == State::SessionExpired
            && before.state != State::SessionExpired
        {
            notify(
                "Pinhole: sign in again".into(),
                "Your session has expired; the tunnel is down until you sign in.".into(),
            );
        }
        if self.view.settings.notify_relayed {
            for p in &now.peers {
                let was_direct = before
                    .peers
                    .iter()
                    .any(|b| b.node_key == p.node_key && b.connection == Connection::Direct);
                if was_direct && p.connection == Connection::Relayed {
                    let why = p.path_reason.clone().unwrap_or_default();
                    let relay = p.relay.as_deref().unwrap_or("a relay");
                    notify(
                        format!("{} is relayed", p.name),
                        format!("Traffic now goes through {relay}. {why}")
                            .trim()
                            .to_string(),
                    );
                }
            }
        }
    }

    /// Once per expiry, when this node's sign-in ends within a day: a notification (if on).
    fn warn_of_expiry(&mut self, s: &Status, now: std::time::SystemTime) {
        let Some(expires) = s.self_node.as_ref().and_then(|me| me.expires.as_ref()) else {
            return;
        };
        if !self.view.settings.notify_session || self.expiry_warned.as_ref() == Some(expires) {
            return;
        }
        let Ok(at) = humantime::parse_rfc3339(expires) else {
            return;
        };
        let Ok(left) = at.duration_since(now) else {
            return; // already expired: pinholed says session-expired
        };
        if left > EXPIRY_WARNING {
            return;
        }
        self.expiry_warned = Some(expires.clone());
        let hours = left.as_secs().div_ceil(3600);
        let when = if hours <= 1 {
            "within the hour".to_string()
        } else {
            format!("in {hours} hours")
        };
        let _ = self.effects.send(Effect::Notify {
            title: "Pinhole: sign in again soon".into(),
            body: format!(
                "This device's sign-in expires {when} ({expires}); sign in again to stay connected."
            ),
        });
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Retry => {}
            Command::SignIn {
                server,
                auth_key,
                reply,
            } => self.sign_in(server, auth_key, reply),
            Command::CancelSignIn => {
                if let Some(t) = self.sign_in.take() {
                    t.abort();
                }
                if self.view.action == Some(Action::SigningIn) {
                    self.view.action = None;
                    self.publish();
                }
            }
            Command::SetConnected { on, reply } => self.switch(on, reply),
            Command::SignOut { reply } => self.sign_out(reply),
            Command::Ping { peer, reply } => {
                let socket = self.cfg.socket.clone();
                tokio::spawn(async move {
                    let op = Op::Ping {
                        peer,
                        timeout_ms: Some(3000),
                    };
                    let _ = reply.send(request(&socket, op).await);
                });
            }
            Command::SetRoutes {
                accept_routes,
                exit_node,
                allow_lan,
                advertise_routes,
                advertise_exit_node,
                reply,
            } => {
                // pinholed checks the exit node and says why it refuses one.
                let socket = self.cfg.socket.clone();
                tokio::spawn(async move {
                    let op = Op::Up {
                        credential: None,
                        accept_dns: None,
                        advertise_tags: None,
                        advertise_routes,
                        advertise_exit_node,
                        accept_routes,
                        exit_node,
                        exit_node_allow_lan: allow_lan,
                    };
                    let r = request::<serde_json::Value>(&socket, op).await.map(|_| ());
                    let _ = reply.send(r);
                });
            }
            Command::Netcheck { reply } => {
                let (socket, done) = (self.cfg.socket.clone(), self.done_tx.clone());
                tokio::spawn(async move {
                    let r = request(&socket, Op::Netcheck).await;
                    let _ = done.send(Done::Netcheck(r, reply));
                });
            }
            Command::SetSettings { settings, reply } => {
                let r = settings::save(&self.cfg.settings_path, &settings)
                    .map_err(|e| ActionError::new(e.to_string()));
                if r.is_ok() {
                    if settings.start_at_login != self.view.settings.start_at_login {
                        let _ = self
                            .effects
                            .send(Effect::StartAtLogin(settings.start_at_login));
                    }
                    self.view.settings = settings;
                    self.publish();
                }
                let _ = reply.send(r);
            }
        }
    }

    /// Starts an action unless pinholed is away or another one runs (then `reply` says why);
    /// what the action's task needs.
    fn begin(&mut self, action: Action, reply: Reply<()>) -> Option<Started> {
        let refusal = if !self.view.ready() {
            Some("pinholed is not reachable; see above for how to start it")
        } else if self.view.action.is_some() {
            Some("wait for the current action to finish")
        } else {
            None
        };
        if let Some(why) = refusal {
            let _ = reply.send(Err(ActionError::new(why)));
            return None;
        }
        self.view.action = Some(action);
        self.view.error = None;
        self.publish();
        Some(Started {
            reply,
            socket: self.cfg.socket.clone(),
            credential_name: self.cfg.credential_name.clone(),
            done: self.done_tx.clone(),
        })
    }

    fn sign_in(&mut self, server: String, auth_key: Option<String>, reply: Reply<()>) {
        let server = server.trim().trim_end_matches('/').to_string();
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            let _ = reply.send(Err(ActionError::new(
                "the server's address starts with https:// (for example https://pinhole.example.com)",
            )));
            return;
        }
        let Some(task) = self.begin(Action::SigningIn, reply) else {
            return;
        };
        // Remember the server for the next time, even if this sign-in fails.
        if self.view.settings.server.as_deref() != Some(server.as_str()) {
            self.view.settings.server = Some(server.clone());
            if let Err(e) = settings::save(&self.cfg.settings_path, &self.view.settings) {
                tracing::warn!("{e}");
            }
        }
        self.opened_code = None;
        let auth_key = auth_key
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let task = tokio::spawn(async move {
            let op = Op::Login {
                server: Some(server),
                auth_key: auth_key.map(Secret),
                credential: None,
                hostname: None,
            };
            let r = request::<LoginResult>(&task.socket, op).await;
            // The person's session (from the browser sign-in) goes to the credential store.
            let r = match r {
                Ok(res) => match &res.credential {
                    Some(c) => store(task.credential_name, c.clone()).await.map(|()| res),
                    None => Ok(res),
                },
                Err(e) => Err(e),
            };
            let _ = task.done.send(Done::SignedIn(r, task.reply));
        });
        self.sign_in = Some(task.abort_handle());
    }

    fn switch(&mut self, on: bool, reply: Reply<()>) {
        let action = if on {
            Action::Connecting
        } else {
            Action::Disconnecting
        };
        let Some(task) = self.begin(action, reply) else {
            return;
        };
        tokio::spawn(async move {
            let op = if on {
                // The stored session lets pinholed sign in again after it expired.
                Op::Up {
                    credential: load(task.credential_name).await,
                    accept_dns: None,
                    advertise_tags: None,
                    advertise_routes: None,
                    advertise_exit_node: None,
                    accept_routes: None,
                    exit_node: None,
                    exit_node_allow_lan: None,
                }
            } else {
                Op::Down
            };
            let r = request::<serde_json::Value>(&task.socket, op)
                .await
                .map(|_| ());
            let _ = task.done.send(Done::Switched(r, task.reply));
        });
    }

    fn sign_out(&mut self, reply: Reply<()>) {
        let Some(task) = self.begin(Action::SigningOut, reply) else {
            return;
        };
        tokio::spawn(async move {
            let name = task.credential_name;
            let credential = load(name.clone()).await;
            let op = Op::Logout { credential };
            let r = request::<pinhole_proto::ipc::LogoutResult>(&task.socket, op).await;
            let r = match r {
                Ok(res) => forget(name).await.map(|()| res.warning),
                Err(e) => Err(e),
            };
            let _ = task.done.send(Done::SignedOut(r, task.reply));
        });
    }

    fn on_done(&mut self, d: Done) {
        let (result, reply) = match d {
            Done::SignedIn(r, reply) => {
                self.sign_in = None;
                (r.map(|_| ()), reply)
            }
            Done::Switched(r, reply) => (r, reply),
            Done::SignedOut(r, reply) => {
                if let Ok(Some(warning)) = &r {
                    self.view.error = Some(ActionError::new(format!(
                        "Signed out here, but the server could not be told: {warning}"
                    )));
                }
                (r.map(|_| ()), reply)
            }
            Done::Netcheck(r, reply) => {
                if let Ok(report) = &r {
                    self.view.netcheck = Some(report.clone());
                    self.publish();
                }
                let _ = reply.send(r);
                return;
            }
        };
        self.view.action = None;
        if let Err(e) = &result {
            self.view.error = Some(e.clone());
        }
        self.publish();
        let _ = reply.send(result);
    }
}

/// The next snapshot of the subscription; never, without one.
async fn next_status(sub: &mut Option<LocalApi>) -> Result<Status, LocalApiError> {
    match sub {
        Some(c) => c.next_status().await,
        None => std::future::pending().await,
    }
}

/// One request on a connection of its own, its answer read as `T`.
pub(crate) async fn request<T: serde::de::DeserializeOwned>(
    socket: &std::path::Path,
    op: Op,
) -> Result<T, ActionError> {
    let mut c = LocalApi::connect(socket).await?;
    let value = c.request(op).await?;
    serde_json::from_value(value)
        .map_err(|e| ActionError::new(format!("pinholed answered something unexpected: {e}")))
}

async fn load(name: String) -> Option<Credential> {
    match tokio::task::spawn_blocking(move || credentials::load_named(&name)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!("{e}");
            None
        }
        Err(_) => None,
    }
}

async fn store(name: String, c: Credential) -> Result<(), ActionError> {
    tokio::task::spawn_blocking(move || credentials::save_named(&name, &c))
        .await
        .map_err(|e| ActionError::new(e.to_string()))?
        .map_err(|e| ActionError::new(format!("Signed in, but {e}")))
}

async fn forget(name: String) -> Result<(), ActionError> {
    tokio::task::spawn_blocking(move || credentials::forget_named(&name))
        .await
        .map_err(|e| ActionError::new(e.to_string()))?
        .map_err(|e| ActionError::new(format!("Signed out, but {e}")))
}

#[cfg(all(test, unix))]
#[path = "controller_tests.rs"]
mod tests;
