//! The local API: a Unix socket (root:pinhole 0660, the peer's credentials checked) or a
//! Windows named pipe (local interactive users only) on which the CLI and the app ask for the
//! status, subscribe to it, and hand operations to the daemon's loop. One task per client;
//! operations run concurrently with the subscription; a client that sends garbage, too much,
//! the wrong version or nothing gets an error or is dropped, and the others are served as before.

pub use crate::local_api::command::{Answer, Command};
use pinhole_proto::ipc::{
    encode, ClientFrame, DaemonFrame, Decoder, Event, FrameError, Hello, IpcError, LogLines, Op,
    Reply, Status, MAX_REQUEST_FRAME, VERSION,
};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// Longest an operation may take before the client is told it timed out.
fn command_timeout(op: &Op) -> Duration {
    match op {
        // A person approves the sign-in in a browser: as long as a device code lives.
        Op::Login { .. } | Op::Up { .. } => Duration::from_secs(20 * 60),
        // A refresh of the status: a busy loop answers late, the last status is served then.
        Op::Status | Op::Subscribe => Duration::from_secs(2),
        _ => Duration::from_secs(60),
    }
}

/// Time a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

fn software() -> String {
    concat!("pinholed ", env!("CARGO_PKG_VERSION")).to_string()
}

fn error(id: u64, code: &str, message: impl Into<String>) -> DaemonFrame {
    DaemonFrame::Reply(Reply {
        id,
        ok: None,
        error: Some(IpcError {
            code: code.to_string(),
            message: message.into(),
        }),
    })
}

/// What one frame from a client leads to.
struct Outcome {
    replies: Vec<DaemonFrame>,
    close: bool,
    /// An operation for the daemon's loop; its reply goes out when it is done.
    command: Option<(u64, Op)>,
}

/// The state of one client connection.
struct Session {
    greeted: bool,
    subscribed: bool,
}

impl Session {
    fn frame(&mut self, frame: &[u8], status: &watch::Receiver<Status>) -> Outcome {
        let reply = |f| Outcome {
            replies: vec![f],
            close: false,
            command: None,
        };
        let value: serde_json::Value = match serde_json::from_slice(frame) {
            Ok(v) => v,
            Err(e) => return reply(error(0, "bad-frame", format!("not JSON: {e}"))),
        };
        let id = value.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
        let parsed: ClientFrame = match serde_json::from_value(value.clone()) {
            Ok(f) => f,
            Err(_) => {
                return reply(match value.get("op").and_then(|v| v.as_str()) {
                    Some(op) if value.get("id").is_some() => error(
                        id,
                        "unknown-operation",
                        format!(
                            "unknown operation {op:?}: this pinholed knows status, subscribe, up, down, login, logout, ping and netcheck"
                        ),
                    ),
                    _ => error(
                        id,
                        "bad-request",
                        "expected {\"hello\":{…}} or {\"id\":N,\"op\":…}",
                    ),
                })
            }
        };
        match parsed {
            ClientFrame::Hello { hello } if hello.version != VERSION => Outcome {
                replies: vec![error(
                    0,
                    "version-mismatch",
                    format!(
                        "protocol version mismatch: {} speaks version {}, this pinholed speaks version {VERSION}; update the older one",
                        hello.software, hello.version
                    ),
                )],
                close: true,
                command: None,
            },
            ClientFrame::Hello { .. } => {
                self.greeted = true;
                reply(DaemonFrame::Hello {
                    hello: Hello {
                        version: VERSION,
                        software: software(),
                    },
                })
            }
            ClientFrame::Request(_) if !self.greeted => reply(error(
                id,
                "hello-first",
                "send a hello with the protocol version first",
            )),
            ClientFrame::Request(r) => match r.op {
                Op::Status => reply(ok(r.id, &*status.borrow())),
                Op::Logs { lines } => {
                    let n = lines.map_or(pinhole_logring::LINES, |n| n as usize);
                    let lines = pinhole_logring::recent(n);
                    reply(ok(r.id, &LogLines { lines }))
                }
                Op::Subscribe => {
                    self.subscribed = true;
                    Outcome {
                        replies: vec![ok(r.id, &serde_json::Value::Null), snapshot(status)],
                        close: false,
                        command: None,
                    }
                }
                op => Outcome {
                    replies: Vec::new(),
                    close: false,
                    command: Some((r.id, op)),
                },
            },
        }
    }
}

/// Hands an operation to the daemon's loop and waits for it to be done.
async fn run_command(commands: mpsc::Sender<Command>, op: Op) -> Answer {
    let (tx, rx) = oneshot::channel();
    let timeout = command_timeout(&op);
    let gone = || IpcError {
        code: "shutting-down".into(),
        message: "pinholed is shutting down".into(),
    };
    commands
        .send(Command { op, reply: tx })
        .await
        .map_err(|_| gone())?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(IpcError {
            code: "timeout".into(),
            message: format!("no answer within {} s", timeout.as_secs()),
        }),
    }
}

fn ok<T: serde::Serialize>(id: u64, value: &T) -> DaemonFrame {
    DaemonFrame::Reply(Reply {
        id,
        ok: Some(serde_json::to_value(value).unwrap_or(serde_json::Value::Null)),
        error: None,
    })
}

fn snapshot(status: &watch::Receiver<Status>) -> DaemonFrame {
    DaemonFrame::Event {
        event: Event::State {
            status: Box::new(status.borrow().clone()),
        },
    }
}

/// A request whose answer is the status (status, subscribe).
fn reads_status(frame: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<ClientFrame>(frame),
        Ok(ClientFrame::Request(pinhole_proto::ipc::Request {
            op: Op::Status | Op::Subscribe,
            ..
        }))
    )
}

/// Serves one client until it leaves, breaks the protocol beyond repair, or the daemon stops.
pub async fn serve_client<S>(
    stream: S,
    mut status: watch::Receiver<Status>,
    commands: mpsc::Sender<Command>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut dec = Decoder::new(MAX_REQUEST_FRAME);
    let mut buf = vec![0u8; 16 * 1024];
    let mut session = Session {
        greeted: false,
        subscribed: false,
    };
    let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
    tokio::pin!(hello_deadline);
    // Answers of operations in flight; their tasks end with the connection.
    let (done_tx, mut done) = mpsc::channel::<(u64, Answer)>(16);
    let mut running = tokio::task::JoinSet::new();
    loop {
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if session.greeted && reads_status(&frame) {
                        // The daemon rebuilds the status only while someone is connected:
                        // have it brought up to date before it is read. If the loop does not
                        // answer, the last one is served.
                        let _ = run_command(commands.clone(), Op::Status).await;
                    }
                    let out = session.frame(&frame, &status);
                    for f in &out.replies {
                        if wr.write_all(&encode(f)).await.is_err() {
                            return;
                        }
                    }
                    if let Some((id, op)) = out.command {
                        let (commands, done_tx) = (commands.clone(), done_tx.clone());
                        running.spawn(async move {
                            let answer = run_command(commands, op).await;
                            let _ = done_tx.send((id, answer)).await;
                        });
                    }
                    if out.close {
                        return;
                    }
                }
                Ok(None) => break,
                Err(FrameError::TooLarge(n, max)) => {
                    let e = error(
                        0,
                        "frame-too-large",
                        format!("a frame of {n} bytes is over the limit of {max}"),
                    );
                    let _ = wr.write_all(&encode(&e)).await;
                    return;
                }
            }
        }
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => dec.push(&buf[..n]),
            },
            Some((id, answer)) = done.recv() => {
                let f = match answer {
                    Ok(v) => ok(id, &v),
                    Err(e) => error(id, &e.code, e.message),
                };
                if wr.write_all(&encode(&f)).await.is_err() {
                    return;
                }
            }
            changed = status.changed(), if session.subscribed => {
                if changed.is_err() || wr.write_all(&encode(&snapshot(&status))).await.is_err() {
                    return;
                }
            }
            _ = &mut hello_deadline, if !session.greeted => {
                let e = error(0, "hello-timeout", "no hello within 10 s");
                let _ = wr.write_all(&encode(&e)).await;
                return;
            }
        }
    }
}

/// The local API being served; it stops (and its socket goes) when this is dropped.
pub struct Served {
    task: tokio::task::JoinHandle<()>,
    #[cfg(unix)]
    path: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts serving the local API at `path` (a socket path, or a pipe name on Windows).
pub async fn serve(
    path: &std::path::Path,
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<Command>,
) -> anyhow::Result<Served> {
    #[cfg(unix)]
    {
        let access = unix::Access::system();
        let listener = unix::listen(path, access).await?;
        tracing::info!(socket = %path.display(), "local API listening");
        let task = tokio::spawn(unix::accept_loop(listener, access, status, commands));
        Ok(Served {
            task,
            path: path.to_path_buf(),
        })
    }
    #[cfg(windows)]
    {
        let server = pipe::first_instance(path)?;
        tracing::info!(pipe = %path.display(), "local API listening");
        let task = tokio::spawn(pipe::accept_loop(
            server,
            path.as_os_str().to_owned(),
            status,
            commands,
        ));
        Ok(Served { task })
    }
}

#[cfg(windows)]
mod pipe {
    //! The named pipe: remote clients rejected by the pipe itself; its security descriptor
    //! admits SYSTEM, administrators and interactive (logged-on, local) users only.
    use super::{serve_client, Command, Status};
    use crate::platform::win_security::SecurityDescriptor;
    use anyhow::{Context, Result};
    use std::ffi::OsString;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;
    use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
    use tokio::sync::{mpsc, watch};
    use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;

    /// SYSTEM and administrators: all; interactive users: read and write; nobody else.
    const SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)";

    fn create(path: &std::ffi::OsStr, first: bool) -> Result<NamedPipeServer> {
        let descriptor = SecurityDescriptor::from_sddl(SDDL)
            .context("cannot build the pipe's security descriptor")?;
        let mut attrs = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor.as_ptr(),
            bInheritHandle: 0,
        };
        let mut opts = ServerOptions::new();
        opts.first_pipe_instance(first).reject_remote_clients(true);
        // SAFETY: `attrs` and the descriptor it points to live until after the call.
        let server = unsafe {
            opts.create_with_security_attributes_raw(
                path,
                (&mut attrs as *mut SECURITY_ATTRIBUTES).cast(),
            )
        };
        drop(descriptor);
        let name: Vec<u16> = path.encode_wide().collect();
        server.with_context(|| {
            format!(
                "cannot create the pipe {} (is another pinholed running?)",
                String::from_utf16_lossy(&name)
            )
        })
    }

    pub fn first_instance(path: &Path) -> Result<NamedPipeServer> {
        create(path.as_os_str(), true)
    }

    pub async fn accept_loop(
        mut server: NamedPipeServer,
        path: OsString,
        status: watch::Receiver<Status>,
        commands: mpsc::Sender<Command>,
    ) {
        loop {
            if let Err(e) = server.connect().await {
                tracing::warn!("local API connect: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            let next = match create(&path, false) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("local API: {e:#}");
                    return;
                }
            };
            let client = std::mem::replace(&mut server, next);
            tokio::spawn(serve_client(client, status.clone(), commands.clone()));
        }
    }
}

#[cfg(unix)]
mod unix {
    use super::serve_client;
    use anyhow::{bail, Context, Result};
    use pinhole_proto::ipc::Status;
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use tokio::net::{UnixListener, UnixStream};
    use tokio::sync::watch;

    /// The group whose members may use the local API besides root.
    pub const GROUP: &str = "pinhole";

    /// Who may connect: root, and members of the `pinhole` group if it exists.
    #[derive(Debug, Clone, Copy)]
    pub struct Access {
        pub group: Option<u32>,
    }

    impl Access {
        pub fn system() -> Access {
            Access {
                group: group_id(GROUP),
            }
        }

        /// Whether the process with these credentials may use the API.
        pub fn allows(&self, uid: u32, gid: u32) -> bool {
            if uid == 0 {
                return true;
            }
            let Some(group) = self.group else {
                return false;
            };
            gid == group || user_groups(uid, gid).contains(&group)
        }
    }

    fn group_id(name: &str) -> Option<u32> {
        let cname = CString::new(name).ok()?;
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; `out` is null or points into `grp`.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut out,
            )
        };
        (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
    }

    /// Every group the user `uid` is in (primary `gid` included).
    // The casts between gid_t and `Gid` do nothing where they are the same type (Linux), and
    // are needed where they are not (Apple).
    #[allow(clippy::unnecessary_cast)]
    fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; `out` is null or points into `pw`.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc != 0 || out.is_null() {
            return vec![gid];
        }
        // Apple's getgrouplist takes and returns the groups as C ints, the others as gid_t.
        #[cfg(target_vendor = "apple")]
        type Gid = libc::c_int;
        #[cfg(not(target_vendor = "apple"))]
        type Gid = libc::gid_t;
        let mut groups: Vec<Gid> = vec![0; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: pw_name is a valid C string inside `buf`; `groups` has room for `n` entries.
        let rc = unsafe { libc::getgrouplist(pw.pw_name, gid as Gid, groups.as_mut_ptr(), &mut n) };
        if rc < 0 {
            return vec![gid];
        }
        groups.truncate(n.max(0) as usize);
        groups.into_iter().map(|g| g as u32).collect()
    }

    /// Binds the socket at `path`: parent directory created, a stale socket replaced (a live
    /// pinholed on it is an error), mode 0660, group `pinhole` when it exists.
    pub async fn listen(path: &Path, access: Access) -> Result<UnixListener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                bail!("another pinholed is already serving {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        if let Some(g) = access.group {
            std::os::unix::fs::chown(path, Some(0), Some(g))
                .with_context(|| format!("cannot give {} to group {GROUP}", path.display()))?;
        }
        Ok(listener)
    }

    /// Accepts clients until the task is dropped.
    pub async fn accept_loop(
        listener: UnixListener,
        access: Access,
        status: watch::Receiver<Status>,
        commands: tokio::sync::mpsc::Sender<super::Command>,
    ) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("local API accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let allowed = stream
                .peer_cred()
                .map(|c| access.allows(c.uid(), c.gid()))
                .unwrap_or(false);
            if !allowed {
                let cred = stream.peer_cred().ok();
                tracing::info!(uid = ?cred.map(|c| c.uid()), "local API client refused: not root and not in group {GROUP}");
                let e = super::error(
                    0,
                    "permission-denied",
                    format!("only root and members of group {GROUP} may use pinholed"),
                );
                let mut stream = stream;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    &pinhole_proto::ipc::encode(&e),
                )
                .await;
                continue;
            }
            tokio::spawn(serve_client(stream, status.clone(), commands.clone()));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn root_always_and_others_only_through_the_group() {
            let a = Access { group: Some(4242) };
            assert!(a.allows(0, 0));
            assert!(a.allows(1000, 4242));
            assert!(!a.allows(65534, 65534));
            let none = Access { group: None };
            assert!(none.allows(0, 0));
            assert!(!none.allows(1000, 1000));
        }
    }
}

#[cfg(all(test, windows))]
mod pipe_tests {
    use super::*;
    use pinhole_proto::ipc::{Request, State};
    use tokio::net::windows::named_pipe::ClientOptions;

    #[tokio::test]
    async fn a_local_client_is_served_over_the_named_pipe() {
        let name = format!(r"\\.\pipe\pinholed-test-{}", std::process::id());
        let path = std::path::Path::new(&name);
        let (_status_tx, status_rx) = watch::channel(Status {
            dns: None,
            state: State::Stopped,
            reason: None,
            login: None,
            self_node: None,
            peers: vec![],
        });
        let (cmd_tx, _cmd_rx) = mpsc::channel::<Command>(4);
        // (A second pinholed on the same name is refused by FILE_FLAG_FIRST_PIPE_INSTANCE on
        // Windows; Wine does not enforce that flag, so it is not asserted here.)
        let _served = serve(path, status_rx, cmd_tx)
            .await
            .expect("serving the pipe");
        let mut client = ClientOptions::new().open(path).expect("opening the pipe");
        let mut input = encode(&ClientFrame::Hello {
            hello: Hello {
                version: VERSION,
                software: "pinhole test".into(),
            },
        });
        input.extend(encode(&ClientFrame::Request(Request {
            id: 9,
            op: Op::Status,
        })));
        client.write_all(&input).await.unwrap();
        let mut d = Decoder::new(usize::MAX);
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 4096];
        while frames.len() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "the pipe closed early");
            d.push(&buf[..n]);
            while let Ok(Some(f)) = d.next_frame() {
                frames.push(serde_json::from_slice::<DaemonFrame>(&f).unwrap());
            }
        }
        assert!(matches!(&frames[0], DaemonFrame::Hello { .. }));
        match &frames[1] {
            DaemonFrame::Reply(Reply {
                id: 9, ok: Some(v), ..
            }) => assert_eq!(v["state"], "stopped"),
            f => panic!("{f:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::ipc::{Request, State};

    fn status() -> Status {
        Status {
            dns: None,
            state: State::Connected,
            reason: None,
            login: None,
            self_node: None,
            peers: vec![],
        }
    }

    fn hello(version: u32) -> Vec<u8> {
        encode(&ClientFrame::Hello {
            hello: Hello {
                version,
                software: "pinhole test".into(),
            },
        })
    }

    fn raw(json: &str) -> Vec<u8> {
        let mut v = (json.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v
    }

    /// Sends `input` to a served client and returns every frame the daemon wrote back.
    async fn exchange(input: Vec<u8>, tx: Option<&watch::Sender<Status>>) -> Vec<DaemonFrame> {
        let (rx_status_tx, rx_status) = watch::channel(status());
        let status_rx = tx.map(|t| t.subscribe()).unwrap_or(rx_status);
        let (client, server) = tokio::io::duplex(1 << 20);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(4);
        // The daemon's side: up succeeds, down fails, as a loop would answer.
        let daemon = tokio::spawn(async move {
            while let Some(c) = cmd_rx.recv().await {
                let r = match c.op {
                    Op::Up { .. } => Ok(serde_json::Value::Null),
                    _ => Err(IpcError {
                        code: "test".into(),
                        message: "down refused".into(),
                    }),
                };
                let _ = c.reply.send(r);
            }
        });
        let task = tokio::spawn(serve_client(server, status_rx, cmd_tx));
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(&input).await.unwrap();
        if let Some(t) = tx {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t.send_modify(|s| s.state = State::Stopped);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(cwr);
        drop(rx_status_tx);
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), crd.read_to_end(&mut out)).await;
        task.abort();
        daemon.abort();
        let mut d = Decoder::new(usize::MAX);
        d.push(&out);
        let mut frames = Vec::new();
        while let Ok(Some(f)) = d.next_frame() {
            frames.push(serde_json::from_slice(&f).unwrap());
        }
        frames
    }

    fn error_code(f: &DaemonFrame) -> Option<&str> {
        match f {
            DaemonFrame::Reply(Reply { error: Some(e), .. }) => Some(&e.code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn hello_then_status() {
        let mut input = hello(VERSION);
        input.extend(encode(&ClientFrame::Request(Request {
            id: 5,
            op: Op::Status,
        })));
        let frames = exchange(input, None).await;
        assert!(matches!(&frames[0], DaemonFrame::Hello { hello } if hello.version == VERSION));
        match &frames[1] {
            DaemonFrame::Reply(Reply {
                id: 5, ok: Some(v), ..
            }) => assert_eq!(v["state"], "connected"),
            f => panic!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn logs_answer_with_the_last_lines_kept() {
        pinhole_logring::push("first line\nsecond line for the logs test\n");
        let mut input = hello(VERSION);
        input.extend(encode(&ClientFrame::Request(Request {
            id: 6,
            op: Op::Logs { lines: Some(1) },
        })));
        let frames = exchange(input, None).await;
        match &frames[1] {
            DaemonFrame::Reply(Reply {
                id: 6, ok: Some(v), ..
            }) => {
                let got: LogLines = serde_json::from_value(v.clone()).unwrap();
                assert_eq!(got.lines, ["second line for the logs test"]);
            }
            f => panic!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn wrong_version_names_both_and_closes() {
        let mut input = hello(VERSION + 1);
        input.extend(encode(&ClientFrame::Request(Request {
            id: 5,
            op: Op::Status,
        })));
        let frames = exchange(input, None).await;
        assert_eq!(frames.len(), 1, "nothing after the mismatch");
        let DaemonFrame::Reply(Reply { error: Some(e), .. }) = &frames[0] else {
            panic!()
        };
        assert_eq!(e.code, "version-mismatch");
        assert!(
            e.message.contains(&format!("version {}", VERSION + 1))
                && e.message.contains(&format!("version {VERSION}")),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn malformed_and_unknown_frames_get_errors_and_the_session_goes_on() {
        let mut input = raw(r#"{"id":1,"op":"status"}"#);
        input.extend(hello(VERSION));
        input.extend(raw("not json"));
        input.extend(raw(r#"{"id":2,"op":"explode"}"#));
        input.extend(raw(r#"[1,2,3]"#));
        input.extend(raw(r#"{"id":3,"op":"status"}"#));
        let frames = exchange(input, None).await;
        let codes: Vec<Option<&str>> = frames.iter().map(error_code).collect();
        assert_eq!(
            codes,
            [
                Some("hello-first"),
                None,
                Some("bad-frame"),
                Some("unknown-operation"),
                Some("bad-request"),
                None
            ]
        );
        assert!(matches!(
            &frames[5],
            DaemonFrame::Reply(Reply {
                id: 3,
                ok: Some(_),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn oversized_frames_close_the_connection() {
        let mut input = hello(VERSION);
        input.extend(((MAX_REQUEST_FRAME + 1) as u32).to_be_bytes());
        input.extend(vec![b' '; 1000]);
        let frames = exchange(input, None).await;
        assert_eq!(error_code(frames.last().unwrap()), Some("frame-too-large"));
    }

    #[tokio::test]
    async fn subscribers_get_a_snapshot_now_and_on_every_change() {
        let (tx, _keep) = watch::channel(status());
        let mut input = hello(VERSION);
        input.extend(encode(&ClientFrame::Request(Request {
            id: 1,
            op: Op::Subscribe,
        })));
        let frames = exchange(input, Some(&tx)).await;
        let states: Vec<State> = frames
            .iter()
            .filter_map(|f| match f {
                DaemonFrame::Event {
                    event: Event::State { status },
                } => Some(status.state),
                _ => None,
            })
            .collect();
        assert_eq!(states, [State::Connected, State::Stopped]);
    }

    #[tokio::test]
    async fn status_and_subscribe_are_read_after_the_daemon_brought_the_status_up_to_date() {
        let (tx, rx) = watch::channel(status());
        let (client, server) = tokio::io::duplex(1 << 20);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(4);
        // The daemon's side: each refresh changes the status before it answers.
        let daemon = tokio::spawn(async move {
            let mut n = 0;
            while let Some(c) = cmd_rx.recv().await {
                assert!(matches!(c.op, Op::Status | Op::Subscribe), "{:?}", c.op);
                n += 1;
                tx.send_modify(|s| s.reason = Some(format!("refresh {n}")));
                let _ = c.reply.send(Ok(serde_json::Value::Null));
            }
        });
        let task = tokio::spawn(serve_client(server, rx, cmd_tx));
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut input = hello(VERSION);
        for (id, op) in [(1, Op::Status), (2, Op::Subscribe)] {
            input.extend(encode(&ClientFrame::Request(Request { id, op })));
        }
        cwr.write_all(&input).await.unwrap();
        let mut d = Decoder::new(usize::MAX);
        let mut frames: Vec<DaemonFrame> = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while frames.len() < 4 {
            let n = tokio::time::timeout(Duration::from_secs(5), crd.read(&mut buf))
                .await
                .expect("the daemon's frames")
                .unwrap();
            assert!(n > 0, "closed after {frames:?}");
            d.push(&buf[..n]);
            while let Ok(Some(f)) = d.next_frame() {
                frames.push(serde_json::from_slice(&f).unwrap());
            }
        }
        task.abort();
        daemon.abort();
        match &frames[1] {
            DaemonFrame::Reply(Reply {
                id: 1, ok: Some(v), ..
            }) => assert_eq!(v["reason"], "refresh 1", "the status as refreshed"),
            f => panic!("{f:?}"),
        }
        assert!(matches!(
            &frames[2],
            DaemonFrame::Reply(Reply { id: 2, .. })
        ));
        match &frames[3] {
            DaemonFrame::Event {
                event: Event::State { status },
            } => assert_eq!(status.reason.as_deref(), Some("refresh 2")),
            f => panic!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn up_and_down_go_to_the_daemon_loop_and_come_back_answered() {
        let mut input = hello(VERSION);
        input.extend(encode(&ClientFrame::Request(Request {
            id: 1,
            op: Op::Up {
                credential: None,
                accept_dns: None,
                advertise_tags: None,
                advertise_routes: None,
                advertise_exit_node: None,
                accept_routes: None,
                exit_node: None,
                exit_node_allow_lan: None,
            },
        })));
        input.extend(encode(&ClientFrame::Request(Request {
            id: 2,
            op: Op::Down,
        })));
        let frames = exchange(input, None).await;
        assert!(
            matches!(
                &frames[1],
                DaemonFrame::Reply(Reply {
                    id: 1,
                    error: None,
                    ..
                })
            ),
            "{frames:?}"
        );
        match &frames[2] {
            DaemonFrame::Reply(Reply {
                id: 2,
                error: Some(e),
                ..
            }) => assert_eq!(e.message, "down refused"),
            f => panic!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn events_keep_flowing_while_an_operation_waits() {
        // A login waits for a person; meanwhile the subscriber sees the prompt appear.
        let (status_tx, status_rx) = watch::channel(status());
        let (client, server) = tokio::io::duplex(1 << 20);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(4);
        let task = tokio::spawn(serve_client(server, status_rx, cmd_tx));
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut input = hello(VERSION);
        input.extend(encode(&ClientFrame::Request(Request {
            id: 1,
            op: Op::Subscribe,
        })));
        input.extend(encode(&ClientFrame::Request(Request {
            id: 2,
            op: Op::Login {
                server: None,
                auth_key: None,
                credential: None,
                hostname: None,
            },
        })));
        cwr.write_all(&input).await.unwrap();
        let refresh = cmd_rx.recv().await.expect("the subscription's refresh");
        assert!(matches!(refresh.op, Op::Status), "a refresh of the status");
        let _ = refresh.reply.send(Ok(serde_json::Value::Null));
        let login = cmd_rx.recv().await.expect("the login reached the loop");
        assert!(matches!(login.op, Op::Login { .. }));
        status_tx.send_modify(|s| {
            s.state = State::NeedsLogin;
            s.login = Some(pinhole_proto::ipc::LoginPrompt {
                url: "http://control/device".into(),
                code: "ABCD-EFGH".into(),
            });
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = login.reply.send(Ok(serde_json::json!({"name": "n1"})));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(cwr);
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), crd.read_to_end(&mut out)).await;
        task.abort();
        let mut d = Decoder::new(usize::MAX);
        d.push(&out);
        let mut order = Vec::new();
        while let Ok(Some(f)) = d.next_frame() {
            match serde_json::from_slice::<DaemonFrame>(&f).unwrap() {
                DaemonFrame::Event {
                    event: Event::State { status },
                } => order.push(format!("state {:?}", status.login.map(|l| l.code))),
                DaemonFrame::Reply(r) => order.push(format!("reply {}", r.id)),
                DaemonFrame::Hello { .. } => order.push("hello".into()),
            }
        }
        assert_eq!(
            order,
            [
                "hello",
                "reply 1",
                "state None",
                "state Some(\"ABCD-EFGH\")",
                "reply 2"
            ]
        );
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_frame_is_dropped() {
        let mut input = hello(VERSION);
        input.extend(100u32.to_be_bytes());
        input.extend(b"{\"id\":");
        let frames = exchange(input, None).await;
        assert_eq!(frames.len(), 1, "only the hello came back");
    }
}
