//! The controller against a pinholed stand-in on a Unix socket of the test's own (the local
//! API boundary): what the view says, what pinholed is asked, what goes to the credential
//! store and which effects the shell is asked for.

use super::*;
use pinhole_proto::ipc::{
    encode, ClientFrame, DaemonFrame, Decoder, Event, Hello, IpcError, LoginPrompt, Nat,
    PeerStatus, Reply as IpcReply, SelfStatus, VERSION,
};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, Notify};

/// A directory, credential entry and settings file of the test's own, removed when dropped.
struct Place {
    dir: PathBuf,
    cfg: Config,
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = credentials::forget_named(&self.cfg.credential_name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn place(name: &str) -> Place {
    let dir = std::env::temp_dir().join(format!("pinhole-app-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = Config {
        socket: dir.join("api.sock"),
        credential_name: format!("app-test-{}-{name}", std::process::id()),
        settings_path: dir.join("settings.json"),
        retry: Duration::from_millis(50),
    };
    Place { dir, cfg }
}

/// What the stand-in knows and was asked.
struct Fake {
    status: Mutex<Status>,
    ops: Mutex<Vec<Op>>,
    changes: broadcast::Sender<Status>,
    /// Approves the interactive sign-in under way.
    approve: Notify,
    /// Answer to the hello: None for pinholed's own hello.
    hello_error: Option<IpcError>,
    /// Answer to any login with an auth key.
    login_error: Option<IpcError>,
}

impl Fake {
    fn set(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().unwrap();
        f(&mut s);
        let _ = self.changes.send(s.clone());
    }

    fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

fn me() -> SelfStatus {
    SelfStatus {
        dns_name: "laptop.pinhole.internal".into(),
        name: "laptop".into(),
        node_key: "k".into(),
        addresses: vec!["100.64.0.1".into()],
        endpoints: vec![],
        nat: Nat::default(),
        home_relay: Some("local".into()),
        expires: None,
        tags: vec![],
        policy: false,
        advertised_routes: Vec::new(),
        approved_routes: Vec::new(),
        accept_routes: false,
        exit_node: None,
        routing_error: None,
    }
}

fn status(state: State) -> Status {
    Status {
        dns: None,
        state,
        reason: None,
        login: None,
        self_node: matches!(state, State::Connected | State::Stopped).then(me),
        peers: vec![],
    }
}

fn peer(name: &str, connection: Connection) -> PeerStatus {
    PeerStatus {
        dns_name: format!("{name}.pinhole.internal"),
        name: name.into(),
        node_key: format!("key-{name}"),
        addresses: vec!["100.64.0.2".into()],
        online: true,
        connection,
        endpoint: None,
        relay: Some("local".into()),
        rtt_ms: None,
        path_reason: (connection == Connection::Relayed).then(|| "UDP blocked".to_string()),
        last_handshake: None,
        last_seen: None,
        rx_bytes: 0,
        tx_bytes: 0,
        endpoint_kind: None,
        candidates: vec![],
        disco_pings_sent: 0,
        tags: vec![],
        filtered_packets: 0,
        may_reach: None,
        routes: Vec::new(),
        exit_node: false,
        routes_in_use: Vec::new(),
    }
}

fn fake(state: State) -> Arc<Fake> {
    Arc::new(Fake {
        status: Mutex::new(status(state)),
        ops: Mutex::new(vec![]),
        changes: broadcast::channel(64).0,
        approve: Notify::new(),
        hello_error: None,
        login_error: None,
    })
}

/// Serves the stand-in at `path` until the returned task is aborted.
fn serve(path: &std::path::Path, fake: Arc<Fake>) -> tokio::task::JoinHandle<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.spawn(session(s, fake.clone()));
        }
    })
}

async fn read_frame(s: &mut UnixStream, d: &mut Decoder) -> Option<ClientFrame> {
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(f) = d.next_frame().ok()? {
            return serde_json::from_slice(&f).ok();
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        d.push(&buf[..n]);
    }
}

/// One frame to the client; the lock keeps events and replies whole.
async fn send(w: &tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>, f: &DaemonFrame) {
    let _ = w.lock().await.write_all(&encode(f)).await;
}

async fn session(mut s: UnixStream, fake: Arc<Fake>) {
    let mut d = Decoder::new(1 << 20);
    let Some(ClientFrame::Hello { .. }) = read_frame(&mut s, &mut d).await else {
        return;
    };
    if let Some(e) = &fake.hello_error {
        let reply = DaemonFrame::Reply(IpcReply {
            id: 0,
            ok: None,
            error: Some(e.clone()),
        });
        let _ = s.write_all(&encode(&reply)).await;
        return;
    }
    let hello = DaemonFrame::Hello {
        hello: Hello {
            version: VERSION,
            software: "pinholed 9.9.9".into(),
        },
    };
    if s.write_all(&encode(&hello)).await.is_err() {
        return;
    }
    let (mut r, w) = s.into_split();
    let w = Arc::new(tokio::sync::Mutex::new(w));
    let mut buf = vec![0u8; 4096];
    loop {
        let req = loop {
            match d.next_frame() {
                Ok(Some(f)) => break serde_json::from_slice::<ClientFrame>(&f).ok(),
                Ok(None) => {}
                Err(_) => return,
            }
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => d.push(&buf[..n]),
            }
        };
        let Some(ClientFrame::Request(req)) = req else {
            return;
        };
        fake.ops.lock().unwrap().push(req.op.clone());
        let reply = |ok: Result<serde_json::Value, IpcError>| {
            let (ok, error) = match ok {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e)),
            };
            DaemonFrame::Reply(IpcReply {
                id: req.id,
                ok,
                error,
            })
        };
        let answer = match req.op.clone() {
            Op::Subscribe => {
                send(&w, &reply(Ok(serde_json::Value::Null))).await;
                let mut changes = fake.changes.subscribe();
                let now = fake.status.lock().unwrap().clone();
                let event = |s: Status| DaemonFrame::Event {
                    event: Event::State {
                        status: Box::new(s),
                    },
                };
                send(&w, &event(now)).await;
                let w = w.clone();
                tokio::spawn(async move {
                    while let Ok(s) = changes.recv().await {
                        send(&w, &event(s)).await;
                    }
                });
                continue;
            }
            Op::Login {
                server, auth_key, ..
            } => {
                let server = server.unwrap_or_default();
                match (auth_key, &fake.login_error) {
                    (Some(_), Some(e)) => Err(e.clone()),
                    (Some(_), None) => {
                        fake.set(|s| *s = status(State::Connected));
                        Ok(
                            serde_json::json!({"server": server, "name": "laptop", "addresses": ["100.64.0.1"]}),
                        )
                    }
                    (None, _) => {
                        fake.set(|s| {
                            s.login = Some(LoginPrompt {
                                url: format!("{server}/device"),
                                code: "ABCD-EFGH".into(),
                            })
                        });
                        fake.approve.notified().await;
                        fake.set(|s| *s = status(State::Connected));
                        Ok(
                            serde_json::json!({"server": server, "name": "laptop", "addresses": ["100.64.0.1"],
                            "credential": {"server": server, "session_token": "phs_from_browser"}}),
                        )
                    }
                }
            }
            Op::Up { .. } => {
                fake.set(|s| *s = status(State::Connected));
                Ok(serde_json::Value::Null)
            }
            Op::Down => {
                fake.set(|s| *s = status(State::Stopped));
                Ok(serde_json::Value::Null)
            }
            Op::Logout { .. } => {
                fake.set(|s| *s = status(State::NeedsLogin));
                Ok(serde_json::json!({}))
            }
            Op::Ping { peer, .. } => Ok(serde_json::json!({"peer": peer, "address": "100.64.0.2",
                "rtt_ms": 1.5, "connection": "direct", "endpoint": "192.0.2.2:41641", "relay": null})),
            Op::Netcheck => Err(IpcError {
                code: "no-network-map".into(),
                message: "not signed in: run pinhole login --server URL first".into(),
            }),
            Op::Status => Ok(serde_json::to_value(&*fake.status.lock().unwrap()).unwrap()),
            Op::Logs { .. } => Ok(serde_json::json!({"lines": ["pinholed: a log line"]})),
        };
        send(&w, &reply(answer)).await;
    }
}

struct Running {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
    effects: mpsc::UnboundedReceiver<Effect>,
}

fn start(cfg: &Config) -> Running {
    let settings = settings::load(&cfg.settings_path);
    let (view_tx, view) = watch::channel(View::new(settings));
    let (effect_tx, effects) = mpsc::unbounded_channel();
    let (commands, rx) = mpsc::channel(16);
    tokio::spawn(Controller::new(cfg.clone(), view_tx, effect_tx).run(rx));
    Running {
        commands,
        view,
        effects,
    }
}

impl Running {
    /// Waits (up to 5 s) for a view that passes `ok`.
    async fn until(&mut self, what: &str, ok: impl Fn(&View) -> bool) -> View {
        let found = {
            let wait = self.view.wait_for(|v| ok(v));
            match tokio::time::timeout(Duration::from_secs(5), wait).await {
                Ok(Ok(v)) => Some(v.clone()),
                _ => None,
            }
        };
        found.unwrap_or_else(|| panic!("no view with {what}; the last: {:?}", self.view.borrow()))
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ActionError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("an answer within 5 s")
            .expect("the controller answers")
    }

    async fn effect(&mut self) -> Effect {
        tokio::time::timeout(Duration::from_secs(5), self.effects.recv())
            .await
            .expect("an effect within 5 s")
            .expect("the controller runs")
    }
}

fn state(v: &View) -> Option<State> {
    v.status.as_ref().map(|s| s.state)
}

#[tokio::test]
async fn a_missing_daemon_is_explained_and_found_when_it_starts() {
    let p = place("missing");
    let mut app = start(&p.cfg);
    let v = app
        .until("not running", |v| {
            matches!(v.daemon, DaemonLink::NotRunning { .. })
        })
        .await;
    let DaemonLink::NotRunning { socket, fix } = v.daemon else {
        unreachable!()
    };
    assert_eq!(socket, p.cfg.socket.display().to_string());
    assert!(fix.contains("pinholed"), "{fix}");
    assert!(v.status.is_none());
    // Commands say why they cannot run.
    let e = app
        .ask(|reply| Command::SetConnected { on: true, reply })
        .await
        .unwrap_err();
    assert!(e.message.contains("not reachable"), "{e}");
    // pinholed starts: the app finds it by itself.
    let _d = serve(&p.cfg.socket, fake(State::Stopped));
    let v = app
        .until("ready", |v| v.ready() && v.status.is_some())
        .await;
    assert_eq!(
        v.daemon,
        DaemonLink::Ready {
            software: "pinholed 9.9.9".into()
        }
    );
    assert_eq!(state(&v), Some(State::Stopped));
}

#[tokio::test]
async fn another_version_is_told_apart() {
    let p = place("version");
    let f = Arc::new(Fake {
        hello_error: Some(IpcError {
            code: "version-mismatch".into(),
            message: "pinholed 2.0 speaks local API version 2, the client version 1".into(),
        }),
        ..Arc::into_inner(fake(State::Stopped)).unwrap()
    });
    let _d = serve(&p.cfg.socket, f);
    let mut app = start(&p.cfg);
    let v = app
        .until("wrong version", |v| {
            matches!(v.daemon, DaemonLink::WrongVersion { .. })
        })
        .await;
    let DaemonLink::WrongVersion { message, .. } = v.daemon else {
        unreachable!()
    };
    assert!(message.contains("version 2"), "{message}");
}

#[tokio::test]
async fn browser_sign_in_opens_the_page_once_stores_the_session_and_up_hands_it_over() {
    let p = place("browser");
    let f = fake(State::NeedsLogin);
    let _d = serve(&p.cfg.socket, f.clone());
    let mut app = start(&p.cfg);
    app.until("signed out", |v| state(v) == Some(State::NeedsLogin))
        .await;
    let commands = app.commands.clone();
    let signing = tokio::spawn(async move {
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::SignIn {
                server: " https://control.example/ ".into(),
                auth_key: None,
                reply: tx,
            })
            .await
            .unwrap();
        rx.await.unwrap()
    });
    let v = app
        .until("the code", |v| {
            v.status.as_ref().is_some_and(|s| s.login.is_some())
        })
        .await;
    assert_eq!(v.action, Some(Action::SigningIn));
    assert_eq!(
        app.effect().await,
        Effect::OpenUrl("https://control.example/device".into())
    );
    // The server is remembered for the next time, also on disk.
    assert_eq!(
        v.settings.server.as_deref(),
        Some("https://control.example")
    );
    assert_eq!(
        settings::load(&p.cfg.settings_path).server.as_deref(),
        Some("https://control.example")
    );
    f.approve.notify_one();
    signing.await.unwrap().expect("signed in");
    let v = app
        .until("connected", |v| {
            state(v) == Some(State::Connected) && v.action.is_none()
        })
        .await;
    assert_eq!(v.error, None);
    let stored = credentials::load_named(&p.cfg.credential_name).unwrap();
    assert_eq!(
        stored,
        Some(Credential {
            server: "https://control.example".into(),
            session_token: "phs_from_browser".into()
        })
    );
    assert!(app.effects.try_recv().is_err(), "the page opened once");
    // Switch off and on: `up` carries the stored session.
    app.ask(|reply| Command::SetConnected { on: false, reply })
        .await
        .unwrap();
    app.until("stopped", |v| state(v) == Some(State::Stopped))
        .await;
    app.ask(|reply| Command::SetConnected { on: true, reply })
        .await
        .unwrap();
    let ops = f.ops();
    assert!(
        matches!(ops.last(), Some(Op::Up { credential: Some(c), .. }) if c.session_token == "phs_from_browser"),
        "{ops:?}"
    );
    // Signing out hands the session to pinholed and removes it from the store.
    app.ask(|reply| Command::SignOut { reply }).await.unwrap();
    assert!(
        matches!(
            f.ops().last(),
            Some(Op::Logout {
                credential: Some(_)
            })
        ),
        "{:?}",
        f.ops()
    );
    assert_eq!(
        credentials::load_named(&p.cfg.credential_name).unwrap(),
        None
    );
    app.until("signed out", |v| state(v) == Some(State::NeedsLogin))
        .await;
}

#[tokio::test]
async fn a_refused_sign_in_says_why_and_changes_nothing_else() {
    let p = place("refused");
    let f = Arc::new(Fake {
        login_error: Some(IpcError {
            code: "login-failed".into(),
            message: "the server refused the auth key: it has expired".into(),
        }),
        ..Arc::into_inner(fake(State::NeedsLogin)).unwrap()
    });
    let _d = serve(&p.cfg.socket, f.clone());
    let mut app = start(&p.cfg);
    app.until("signed out", |v| state(v) == Some(State::NeedsLogin))
        .await;
    // Not a URL: refused before pinholed is asked.
    let e = app
        .ask(|reply| Command::SignIn {
            server: "control.example".into(),
            auth_key: None,
            reply,
        })
        .await
        .unwrap_err();
    assert!(e.message.contains("https://"), "{e}");
    assert!(!f.ops().iter().any(|o| matches!(o, Op::Login { .. })));
    let e = app
        .ask(|reply| Command::SignIn {
            server: "https://control.example".into(),
            auth_key: Some("phk_old".into()),
            reply,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("login-failed"));
    assert_eq!(e.message, "the server refused the auth key: it has expired");
    let v = app
        .until("the error", |v| v.error.is_some() && v.action.is_none())
        .await;
    assert_eq!(v.error, Some(e));
    assert_eq!(state(&v), Some(State::NeedsLogin));
    assert_eq!(
        credentials::load_named(&p.cfg.credential_name).unwrap(),
        None
    );
    // A failing request in another view leaves the rest alone too.
    let e = app
        .ask(|reply| Command::Netcheck { reply })
        .await
        .unwrap_err();
    assert!(e.message.contains("not signed in"), "{e}");
    assert!(app.view.borrow().ready());
}

#[tokio::test]
async fn pings_answer_with_the_path_and_one_action_runs_at_a_time() {
    let p = place("ping");
    let f = fake(State::Connected);
    let _d = serve(&p.cfg.socket, f.clone());
    let mut app = start(&p.cfg);
    app.until("connected", |v| state(v) == Some(State::Connected))
        .await;
    let r = app
        .ask(|reply| Command::Ping {
            peer: "server".into(),
            reply,
        })
        .await
        .unwrap();
    assert_eq!((r.rtt_ms, r.connection), (1.5, Connection::Direct));
    // An interactive sign-in waits for the browser; a switch meanwhile is refused.
    let commands = app.commands.clone();
    let _signing = tokio::spawn(async move {
        let (tx, rx) = oneshot::channel();
        let _ = commands
            .send(Command::SignIn {
                server: "https://control.example".into(),
                auth_key: None,
                reply: tx,
            })
            .await;
        rx.await
    });
    app.until("signing in", |v| v.action == Some(Action::SigningIn))
        .await;
    let e = app
        .ask(|reply| Command::SetConnected { on: false, reply })
        .await
        .unwrap_err();
    assert!(e.message.contains("wait"), "{e}");
    // Cancelling frees the app again.
    app.commands.send(Command::CancelSignIn).await.unwrap();
    app.until("no action", |v| v.action.is_none()).await;
    app.ask(|reply| Command::SetConnected { on: false, reply })
        .await
        .unwrap();
}

#[tokio::test]
async fn notifications_follow_the_settings() {
    let p = place("notify");
    settings::save(
        &p.cfg.settings_path,
        &Settings {
            notify_relayed: true,
            ..Settings::default()
        },
    )
    .unwrap();
    let f = fake(State::Connected);
    f.set(|s| s.peers = vec![peer("server", Connection::Direct)]);
    let _d = serve(&p.cfg.socket, f.clone());
    let mut app = start(&p.cfg);
    app.until("the peer", |v| {
        v.status.as_ref().is_some_and(|s| !s.peers.is_empty())
    })
    .await;
    f.set(|s| s.peers = vec![peer("server", Connection::Relayed)]);
    let Effect::Notify { title, body } = app.effect().await else {
        panic!("a notification")
    };
    assert_eq!(title, "server is relayed");
    assert!(
        body.contains("local") && body.contains("UDP blocked"),
        "{body}"
    );
    f.set(|s| *s = status(State::SessionExpired));
    let Effect::Notify { title, .. } = app.effect().await else {
        panic!("a notification")
    };
    assert!(title.contains("sign in again"), "{title}");
    // Turned off: nothing more.
    let off = Settings {
        notify_relayed: false,
        notify_session: false,
        ..app.view.borrow().settings.clone()
    };
    app.ask(|reply| Command::SetSettings {
        settings: off,
        reply,
    })
    .await
    .unwrap();
    f.set(|s| {
        *s = status(State::Connected);
        s.peers = vec![peer("server", Connection::Direct)];
    });
    app.until("direct again", |v| {
        v.status
            .as_ref()
            .is_some_and(|s| s.peers.iter().any(|p| p.connection == Connection::Direct))
    })
    .await;
    f.set(|s| *s = status(State::SessionExpired));
    app.until("expired", |v| state(v) == Some(State::SessionExpired))
        .await;
    assert!(app.effects.try_recv().is_err());
}

#[tokio::test]
async fn a_sign_in_that_expires_within_a_day_is_warned_of_once() {
    let p = place("expiry");
    let f = fake(State::Connected);
    let in_a_week = std::time::SystemTime::now() + Duration::from_secs(7 * 86400);
    let week = humantime::format_rfc3339_seconds(in_a_week).to_string();
    f.set(|s| {
        if let Some(me) = &mut s.self_node {
            me.expires = Some(week.clone())
        }
    });
    let _d = serve(&p.cfg.socket, f.clone());
    let mut app = start(&p.cfg);
    app.until("connected", |v| state(v) == Some(State::Connected))
        .await;
    let in_5h = std::time::SystemTime::now() + Duration::from_secs(5 * 3600 - 60);
    let soon = humantime::format_rfc3339_seconds(in_5h).to_string();
    f.set(|s| {
        if let Some(me) = &mut s.self_node {
            me.expires = Some(soon.clone())
        }
    });
    let Effect::Notify { title, body } = app.effect().await else {
        panic!("a notification")
    };
    assert!(title.contains("sign in again soon"), "{title}");
    assert!(body.contains("in 5 hours"), "{body}");
    // Further snapshots with the same expiry: no second warning.
    f.set(|s| s.peers = vec![peer("server", Connection::Direct)]);
    app.until("the peer", |v| {
        v.status.as_ref().is_some_and(|s| !s.peers.is_empty())
    })
    .await;
    assert!(app.effects.try_recv().is_err(), "warned once");
}

#[tokio::test]
async fn connect_on_start_brings_a_stopped_tunnel_up_once() {
    let p = place("autoconnect");
    settings::save(
        &p.cfg.settings_path,
        &Settings {
            connect_on_start: true,
            start_at_login: false,
            ..Settings::default()
        },
    )
    .unwrap();
    let f = fake(State::Stopped);
    let _d = serve(&p.cfg.socket, f.clone());
    let mut app = start(&p.cfg);
    app.until("connected", |v| {
        state(v) == Some(State::Connected) && v.action.is_none()
    })
    .await;
    assert_eq!(
        f.ops()
            .iter()
            .filter(|o| matches!(o, Op::Up { .. }))
            .count(),
        1
    );
    // Switched off by hand, it stays off.
    app.ask(|reply| Command::SetConnected { on: false, reply })
        .await
        .unwrap();
    app.until("stopped", |v| state(v) == Some(State::Stopped))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.ops()
            .iter()
            .filter(|o| matches!(o, Op::Up { .. }))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_restarted_daemon_is_found_again() {
    let p = place("restart");
    let d = serve(&p.cfg.socket, fake(State::Connected));
    let mut app = start(&p.cfg);
    app.until("connected", |v| state(v) == Some(State::Connected))
        .await;
    d.abort();
    let _ = d.await;
    let _ = std::fs::remove_file(&p.cfg.socket);
    app.until("not running", |v| {
        matches!(v.daemon, DaemonLink::NotRunning { .. })
    })
    .await;
    let _d = serve(&p.cfg.socket, fake(State::Stopped));
    app.until("back", |v| state(v) == Some(State::Stopped))
        .await;
}
