//! A connection to pinholed's local API (a Unix socket, or a named pipe on Windows): hello,
//! then requests with ids, each waiting for its reply, while the state events of a subscription
//! made on the connection go to a watcher or are read one by one. Every failure is a
//! `LocalApiError` that says what is wrong and what fixes it, so a program can also tell them
//! apart (not running, not allowed, another version, refused by the daemon).

use pinhole_proto::ipc::{
    encode, ClientFrame, DaemonFrame, Decoder, Event, Hello, IpcError, Op, Request, Status,
    MAX_REPLY_FRAME, VERSION,
};
use std::path::{Path, PathBuf};

/// Why talking to pinholed failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    #[error("pinholed is not running (nothing at {}): start it with `sudo pinholed --control-url URL` or its service", path.display())]
    NotRunning { path: PathBuf },
    /// The socket's permissions, or pinholed itself, refused this user.
    #[error("{detail}: run as root or join the group pinhole")]
    NotAllowed { detail: String },
    /// pinholed speaks another version of the local API (its message names both).
    #[error("{message}")]
    WrongVersion { message: String },
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinholed closed the connection")]
    Closed,
    #[error("pinholed sent something unreadable: {0}")]
    Unreadable(String),
    /// pinholed answered the request with an error.
    #[error("{message} ({code})")]
    Daemon { code: String, message: String },
    #[error("pinhole cannot reach pinholed at {} on this OS", path.display())]
    Unsupported { path: PathBuf },
}

impl LocalApiError {
    /// The daemon's error code (`ping-timeout`, `not-signed-in`, …) when it refused a request.
    pub fn code(&self) -> Option<&str> {
        match self {
            LocalApiError::Daemon { code, .. } => Some(code),
            LocalApiError::WrongVersion { .. } => Some("version-mismatch"),
            LocalApiError::NotAllowed { .. } => Some("permission-denied"),
            _ => None,
        }
    }

    fn from_daemon(e: Option<IpcError>) -> Self {
        match e {
            Some(e) if e.code == "permission-denied" => {
                LocalApiError::NotAllowed { detail: e.message }
            }
            Some(e) if e.code == "version-mismatch" => {
                LocalApiError::WrongVersion { message: e.message }
            }
            Some(e) => LocalApiError::Daemon {
                code: e.code,
                message: e.message,
            },
            None => LocalApiError::Daemon {
                code: "unknown".into(),
                message: "pinholed refused without saying why".into(),
            },
        }
    }
}

#[cfg(unix)]
type Stream = tokio::net::UnixStream;
#[cfg(windows)]
type Stream = tokio::net::windows::named_pipe::NamedPipeClient;

#[cfg(unix)]
async fn open(path: &Path) -> std::io::Result<Stream> {
    Stream::connect(path).await
}

#[cfg(windows)]
async fn open(path: &Path) -> std::io::Result<Stream> {
    use tokio::net::windows::named_pipe::ClientOptions;
    // ERROR_PIPE_BUSY: every instance is taken for a moment; try again shortly.
    const PIPE_BUSY: i32 = 231;
    for _ in 0..50 {
        match ClientOptions::new().open(path) {
            Err(e) if e.raw_os_error() == Some(PIPE_BUSY) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            r => return r,
        }
    }
    ClientOptions::new().open(path)
}

/// One connection to pinholed.
#[cfg(any(unix, windows))]
pub struct LocalApi {
    stream: Stream,
    decoder: Decoder,
    next_id: u64,
    /// Who answered the hello (`pinholed 0.1.0`).
    daemon: String,
}

#[cfg(any(unix, windows))]
impl LocalApi {
    /// Connects to pinholed at `path` and says hello.
    pub async fn connect(path: &Path) -> Result<LocalApi, LocalApiError> {
        let stream = match open(path).await {
            Ok(s) => s,
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        LocalApiError::NotRunning { path: path.into() }
                    }
                    std::io::ErrorKind::PermissionDenied => LocalApiError::NotAllowed {
                        detail: format!("not allowed to talk to pinholed at {}", path.display()),
                    },
                    _ => LocalApiError::Connect {
                        path: path.into(),
                        source: e,
                    },
                })
            }
        };
        let mut c = LocalApi {
            stream,
            decoder: Decoder::new(MAX_REPLY_FRAME),
            next_id: 1,
            daemon: String::new(),
        };
        c.send(&ClientFrame::Hello {
            hello: Hello {
                version: VERSION,
                software: concat!("pinhole ", env!("CARGO_PKG_VERSION")).to_string(),
            },
        })
        .await?;
        match c.frame().await? {
            DaemonFrame::Hello { hello } => {
                c.daemon = hello.software;
                Ok(c)
            }
            DaemonFrame::Reply(r) => Err(LocalApiError::from_daemon(r.error)),
            DaemonFrame::Event { .. } => Err(LocalApiError::Unreadable(
                "an event before the hello".into(),
            )),
        }
    }

    /// The daemon's name and version, from its hello.
    pub fn daemon(&self) -> &str {
        &self.daemon
    }

    async fn send(&mut self, frame: &ClientFrame) -> Result<(), LocalApiError> {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(&encode(frame))
            .await
            .map_err(|_| LocalApiError::Closed)
    }

    async fn frame(&mut self) -> Result<DaemonFrame, LocalApiError> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(f) = self
                .decoder
                .next_frame()
                .map_err(|e| LocalApiError::Unreadable(e.to_string()))?
            {
                return serde_json::from_slice(&f)
                    .map_err(|e| LocalApiError::Unreadable(e.to_string()));
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|_| LocalApiError::Closed)?;
            if n == 0 {
                return Err(LocalApiError::Closed);
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends one request and returns its result.
    pub async fn request(&mut self, op: Op) -> Result<serde_json::Value, LocalApiError> {
        self.request_watching(op, |_| {}).await
    }

    /// Sends one request and returns its result; the status snapshots of a subscription made
    /// earlier on this connection go to `watch` meanwhile.
    pub async fn request_watching(
        &mut self,
        op: Op,
        mut watch: impl FnMut(&Status),
    ) -> Result<serde_json::Value, LocalApiError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientFrame::Request(Request { id, op })).await?;
        loop {
            match self.frame().await? {
                DaemonFrame::Event {
                    event: Event::State { status },
                } => watch(&status),
                DaemonFrame::Reply(r) if r.id == id || r.id == 0 => {
                    return match r.error {
                        Some(e) => Err(LocalApiError::from_daemon(Some(e))),
                        None => Ok(r.ok.unwrap_or(serde_json::Value::Null)),
                    }
                }
                _ => continue,
            }
        }
    }

    /// The next state snapshot of the subscription made on this connection (`Op::Subscribe`);
    /// replies to nothing pending are skipped.
    pub async fn next_status(&mut self) -> Result<Status, LocalApiError> {
        loop {
            if let DaemonFrame::Event {
                event: Event::State { status },
            } = self.frame().await?
            {
                return Ok(*status);
            }
        }
    }
}

/// On an OS with neither Unix sockets nor named pipes there is no connection to make.
#[cfg(not(any(unix, windows)))]
pub struct LocalApi(std::convert::Infallible);

#[cfg(not(any(unix, windows)))]
impl LocalApi {
    pub async fn connect(path: &Path) -> Result<LocalApi, LocalApiError> {
        Err(LocalApiError::Unsupported { path: path.into() })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use pinhole_proto::ipc::Reply;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// A directory of this test's own, removed when dropped (also when the test fails).
    struct TestDir(PathBuf);

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A socket path in a directory of this test's own.
    fn socket(name: &str) -> (TestDir, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("pinhole-client-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        (TestDir(dir), path)
    }

    /// Reads one frame a client sent.
    async fn read_frame(s: &mut tokio::net::UnixStream, d: &mut Decoder) -> Option<ClientFrame> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(f) = d.next_frame().unwrap() {
                return Some(serde_json::from_slice(&f).unwrap());
            }
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            d.push(&buf[..n]);
        }
    }

    /// A pinholed stand-in: answers the hello with `hello_answer`, then each request with
    /// `answer(op)`, sending one state event before each reply.
    fn fake_daemon(
        path: &Path,
        hello_answer: DaemonFrame,
        answer: fn(&Op) -> Result<serde_json::Value, IpcError>,
    ) {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut d = Decoder::new(1 << 20);
            let Some(ClientFrame::Hello { .. }) = read_frame(&mut s, &mut d).await else {
                return;
            };
            s.write_all(&encode(&hello_answer)).await.unwrap();
            while let Some(ClientFrame::Request(r)) = read_frame(&mut s, &mut d).await {
                let status: Status = serde_json::from_value(
                    serde_json::json!({"state": "needs-login", "peers": []}),
                )
                .unwrap();
                let event = DaemonFrame::Event {
                    event: Event::State {
                        status: Box::new(status),
                    },
                };
                s.write_all(&encode(&event)).await.unwrap();
                let (ok, error) = match answer(&r.op) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                };
                let reply = DaemonFrame::Reply(Reply {
                    id: r.id,
                    ok,
                    error,
                });
                s.write_all(&encode(&reply)).await.unwrap();
            }
        });
    }

    fn hello() -> DaemonFrame {
        DaemonFrame::Hello {
            hello: Hello {
                version: VERSION,
                software: "pinholed 9.9.9".into(),
            },
        }
    }

    #[tokio::test]
    async fn nothing_at_the_socket_means_not_running() {
        let (_dir, path) = socket("absent");
        let e = LocalApi::connect(&path).await.err().unwrap();
        assert!(matches!(e, LocalApiError::NotRunning { .. }), "{e:?}");
        assert!(e.to_string().contains("pinholed is not running"), "{e}");
    }

    #[tokio::test]
    async fn requests_get_their_replies_and_events_go_to_the_watcher() {
        let (_dir, path) = socket("reply");
        fake_daemon(&path, hello(), |op| match op {
            Op::Status => Ok(serde_json::json!({"answered": "status"})),
            _ => Err(IpcError {
                code: "ping-timeout".into(),
                message: "no answer from b within 2000 ms".into(),
            }),
        });
        let mut c = LocalApi::connect(&path).await.unwrap();
        assert_eq!(c.daemon(), "pinholed 9.9.9");
        let mut seen = 0;
        let v = c.request_watching(Op::Status, |_| seen += 1).await.unwrap();
        assert_eq!(v["answered"], "status");
        assert_eq!(seen, 1, "the event before the reply went to the watcher");
        let e = c
            .request(Op::Ping {
                peer: "b".into(),
                timeout_ms: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("ping-timeout"));
        assert_eq!(
            e.to_string(),
            "no answer from b within 2000 ms (ping-timeout)"
        );
    }

    #[tokio::test]
    async fn another_version_and_a_refused_user_are_told_apart() {
        let (_dir, path) = socket("version");
        let refusal = |code: &str, message: &str| {
            DaemonFrame::Reply(Reply {
                id: 0,
                ok: None,
                error: Some(IpcError {
                    code: code.into(),
                    message: message.into(),
                }),
            })
        };
        fake_daemon(
            &path,
            refusal(
                "version-mismatch",
                "protocol version mismatch: pinhole speaks version 1, this pinholed speaks version 2; update the older one",
            ),
            |_| Ok(serde_json::Value::Null),
        );
        let e = LocalApi::connect(&path).await.err().unwrap();
        assert!(matches!(e, LocalApiError::WrongVersion { .. }), "{e:?}");
        assert!(e.to_string().contains("update the older one"), "{e}");
        let (_dir2, path) = socket("refused");
        fake_daemon(
            &path,
            refusal("permission-denied", "user 1000 is not in group pinhole"),
            |_| Ok(serde_json::Value::Null),
        );
        let e = LocalApi::connect(&path).await.err().unwrap();
        assert_eq!(e.code(), Some("permission-denied"));
        assert_eq!(
            e.to_string(),
            "user 1000 is not in group pinhole: run as root or join the group pinhole"
        );
    }

    #[tokio::test]
    async fn garbage_from_the_daemon_is_an_error_not_a_panic() {
        let (_dir, path) = socket("garbage");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut d = Decoder::new(1 << 20);
            read_frame(&mut s, &mut d).await;
            s.write_all(&[0, 0, 0, 3, b'{', b'x', b'}']).await.unwrap();
        });
        let e = LocalApi::connect(&path).await.err().unwrap();
        assert!(matches!(e, LocalApiError::Unreadable(_)), "{e:?}");
    }
}
