//! What dialing's steps share: the stream they hand on, their errors, and one HTTP/1.1
//! exchange that may switch protocols (a proxy's CONNECT, the relay's upgrade).

use tokio::io::{AsyncRead, AsyncWrite};

/// Longest HTTP response head accepted from a relay or proxy.
const MAX_HEAD: usize = 16 * 1024;

/// Why a dialer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the extra CA certificates: {0}")]
    Ca(String),
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("{0}")]
    Proxy(String),
}

/// Why a relay could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid relay URL {0}")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("the proxy refused to connect to {0}: {1}")]
    Proxy(String, String),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("{0} did not switch to the relay protocol: {1}")]
    Upgrade(String, String),
    #[error("HTTP with {0}: {1}")]
    Http(String, String),
    #[error("timed out connecting to {0}")]
    Timeout(String),
}

/// A connection to a relay, after the upgrade.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Sends one request on a fresh HTTP/1.1 connection over `io` and returns the response; the
/// connection is driven in the background with upgrades enabled (CONNECT tunnels and protocol
/// switches hand the connection over afterwards).
pub(crate) async fn send_upgrade<I>(
    io: I,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
    at: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, DialError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(io)
        .await
        .map_err(|e| DialError::Http(at.to_string(), e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::trace!("relay HTTP connection: {e}");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| DialError::Http(at.to_string(), e.to_string()))
}
