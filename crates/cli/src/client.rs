//! A connection to pinholed's local API (a Unix socket, or a named pipe on Windows): hello,
//! then requests with ids, each waiting for its reply, while state events of a subscription
//! are shown to a watcher. Errors say what to do.

use anyhow::{anyhow, bail, Context, Result};
use pinhole_proto::ipc::{
    encode, ClientFrame, DaemonFrame, Decoder, Event, Hello, Op, Request, Status, MAX_REPLY_FRAME,
    VERSION,
};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

pub struct Client {
    stream: Stream,
    decoder: Decoder,
    next_id: u64,
}

impl Client {
    /// Connects and says hello.
    pub async fn connect(path: &Path) -> Result<Client> {
        let stream = match open(path).await {
            Ok(s) => s,
            Err(e) => match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => bail!(
                    "pinholed is not running (nothing at {}): start it with `sudo pinholed --control-url URL` or its service",
                    path.display()
                ),
                std::io::ErrorKind::PermissionDenied => bail!(
                    "not allowed to talk to pinholed at {}: run as root or join the group pinhole",
                    path.display()
                ),
                _ => return Err(e).with_context(|| format!("cannot connect to {}", path.display())),
            },
        };
        let mut c = Client {
            stream,
            decoder: Decoder::new(MAX_REPLY_FRAME),
            next_id: 1,
        };
        c.send(&ClientFrame::Hello {
            hello: Hello {
                version: VERSION,
                software: concat!("pinhole ", env!("CARGO_PKG_VERSION")).to_string(),
            },
        })
        .await?;
        match c.frame().await? {
            DaemonFrame::Hello { .. } => Ok(c),
            DaemonFrame::Reply(r) => Err(daemon_error(r.error)),
            other => bail!("unexpected answer from pinholed: {other:?}"),
        }
    }

    async fn send(&mut self, frame: &ClientFrame) -> Result<()> {
        self.stream
            .write_all(&encode(frame))
            .await
            .context("pinholed closed the connection")
    }

    async fn frame(&mut self) -> Result<DaemonFrame> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return serde_json::from_slice(&f).context("pinholed sent something unreadable");
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                bail!("pinholed closed the connection");
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends one request and returns its result.
    pub async fn request(&mut self, op: Op) -> Result<serde_json::Value> {
        self.request_watching(op, |_| {}).await
    }

    /// Sends one request and returns its result; status snapshots of a subscription made
    /// earlier on this connection go to `watch` meanwhile.
    pub async fn request_watching(
        &mut self,
        op: Op,
        mut watch: impl FnMut(&Status),
    ) -> Result<serde_json::Value> {
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
                        Some(e) => Err(daemon_error(Some(e))),
                        None => Ok(r.ok.unwrap_or(serde_json::Value::Null)),
                    }
                }
                _ => continue,
            }
        }
    }
}

fn daemon_error(e: Option<pinhole_proto::ipc::IpcError>) -> anyhow::Error {
    match e {
        Some(e) if e.code == "permission-denied" => {
            anyhow!("{}: run as root or join the group pinhole", e.message)
        }
        Some(e) => anyhow!("{} ({})", e.message, e.code),
        None => anyhow!("pinholed refused without saying why"),
    }
}
