//! The client side of pinhole-control's API: device sign-in, registration, a node's own
//! updates, and the map stream read line by line. Used by pinholed, the CLI and the benchmark.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use pinhole_proto::control::{
    parse_map_line, AccessToken, ApiError, DeviceCode, MapMessage, Node, NodeInfo, NodeUpdate,
    OAuthError, RegisterChallenge, RegisterRequest, RegisterResponse, API_PREFIX, MAX_MAP_LINE,
};
use pinhole_proto::key::PrivateKey;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod hedge;

/// Why a call to the coordination server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid coordination server URL {0:?}: use https://HOST[:PORT]")]
    Url(String),
    #[error("invalid CA certificate: {0}")]
    Ca(reqwest::Error),
    #[error("cannot reach the coordination server at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the coordination server refused: {message} (HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the coordination server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True if the server answered that the credential is bad (sign in again); false for network
    /// trouble and server errors, which are worth retrying.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ClientError::Api {
                status: 401 | 403,
                ..
            }
        )
    }

    /// True for errors worth retrying later (unreachable, overloaded, restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Protocol(_) => true,
            ClientError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// One coordination server.
#[derive(Clone)]
pub struct ControlClient {
    http: reqwest::Client,
    base: String,
    /// How fast answers come, which says when an unanswered request is sent again.
    latency: Arc<hedge::Latency>,
}

/// The answer to one device-token poll.
#[derive(Debug)]
pub enum DevicePoll {
    /// Not approved yet: poll again after the interval.
    Pending,
    /// Polling too often: add 5 s to the interval (RFC 8628 §3.5).
    SlowDown,
    Approved(AccessToken),
}

impl ControlClient {
    /// A client for `base_url` (`https://host[:port]`); `extra_ca_pem` adds a trusted CA.
    pub fn new(base_url: &str, extra_ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base).map_err(|_| ClientError::Url(base_url.into()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ClientError::Url(base_url.into()));
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(30))
            .http1_only()
            .user_agent(concat!("pinhole/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_ca_pem {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(pem).map_err(ClientError::Ca)?,
            );
        }
        let http = b.build().map_err(ClientError::Ca)?;
        Ok(ControlClient {
            http,
            base,
            latency: Arc::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source: e,
        }
    }

    /// Sends a request that may safely arrive twice: a copy goes out on another connection when
    /// no answer came in the usual time (see `hedge`).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        self.hedged(req.timeout(Duration::from_secs(30))).await
    }

    /// Sends a request once, however long it takes.
    async fn send_once(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let t0 = Instant::now();
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        self.latency.observe(t0.elapsed());
        check(resp).await
    }

    async fn hedged(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        match req.try_clone() {
            Some(copy) => {
                hedge::race(self.send_once(req), self.latency.hedge_after(), || {
                    self.send_once(copy)
                })
                .await
            }
            None => self.send_once(req).await,
        }
    }

    /// The JSON answer to a request that may safely arrive twice.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        self.body(resp).await
    }

    /// The JSON answer to a request sent once.
    async fn json_once<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send_once(req.timeout(Duration::from_secs(30))).await?;
        self.body(resp).await
    }

    async fn body<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Registers the node holding `private` with an auth key or a session token: fetches a
    /// challenge and answers it with the proof that this node holds its key.
    pub async fn register(
        &self,
        token: &str,
        private: &PrivateKey,
        info: &NodeInfo,
    ) -> Result<RegisterResponse, ClientError> {
        let challenge = self.register_challenge().await?;
        self.register_request(token, &RegisterRequest::new(private, &challenge, info))
            .await
    }

    /// A fresh registration challenge.
    pub async fn register_challenge(&self) -> Result<RegisterChallenge, ClientError> {
        self.json(self.http.post(self.url("/register/challenge")))
            .await
    }

    /// Sends a registration as it is (its proof made by the caller).
    pub async fn register_request(
        &self,
        token: &str,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        // Sent once: a second registration that arrives would replace the node token the
        // first one returned.
        self.json_once(
            self.http
                .post(self.url("/register"))
                .bearer_auth(token)
                .json(req),
        )
        .await
    }

    /// Changes the node's own record. Sent once: a copy whose first try was only late (its
    /// request bytes still in the kernel's buffer when it lost the race) could land after a
    /// newer update and put back the older endpoints.
    pub async fn update(&self, node_token: &str, upd: &NodeUpdate) -> Result<Node, ClientError> {
        self.json_once(
            self.http
                .patch(self.url("/node"))
                .bearer_auth(node_token)
                .json(upd),
        )
        .await
    }

    /// A relay asks which network (account) the node with `key` belongs to; `None` when control
    /// knows no registered, unexpired node with that key. `secret` is the relay secret.
    pub async fn relay_authorize(
        &self,
        secret: &str,
        key: &pinhole_proto::key::Key,
    ) -> Result<Option<String>, ClientError> {
        let req = self
            .http
            .get(self.url("/relay/authorize"))
            .query(&[("key", key.to_base64())])
            .bearer_auth(secret);
        match self.json::<pinhole_proto::control::RelayGrant>(req).await {
            Ok(g) => Ok(Some(g.network)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node leaves the network.
    pub async fn delete_self(&self, node_token: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url("/node")).bearer_auth(node_token))
            .await
            .map(drop)
    }

    /// Whether the server answers its health check; the round trip it took.
    pub async fn health(&self) -> Result<Duration, ClientError> {
        let t0 = std::time::Instant::now();
        let req = self.http.get(format!("{}/healthz", self.base));
        self.send_once(req.timeout(Duration::from_secs(30))).await?;
        Ok(t0.elapsed())
    }

    /// Revokes a person's session (sign-out).
    pub async fn logout(&self, session: &str) -> Result<(), ClientError> {
        self.send(self.http.post(self.url("/logout")).bearer_auth(session))
            .await
            .map(drop)
    }

    /// The signed-in person's nodes.
    pub async fn nodes(&self, session: &str) -> Result<Vec<Node>, ClientError> {
        self.json(self.http.get(self.url("/nodes")).bearer_auth(session))
            .await
    }

    /// Starts device sign-in: the code to show and where to enter it.
    pub async fn device_code(&self) -> Result<DeviceCode, ClientError> {
        // Not hedged: each copy would make a code of its own.
        self.json_once(self.http.post(self.url("/device/code")))
            .await
    }

    /// Asks once whether the device code was approved.
    pub async fn device_token(&self, device_code: &str) -> Result<DevicePoll, ClientError> {
        let resp = self
            .http
            .post(self.url("/device/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
            ])
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if status == 200 {
            return serde_json::from_slice(&bytes)
                .map(DevicePoll::Approved)
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        let err: OAuthError = serde_json::from_slice(&bytes).map_err(|_| ClientError::Api {
            status,
            code: "http".into(),
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        })?;
        match err.error.as_str() {
            "authorization_pending" => Ok(DevicePoll::Pending),
            "slow_down" => Ok(DevicePoll::SlowDown),
            _ => Err(ClientError::Api {
                status,
                message: err.error_description.unwrap_or_else(|| err.error.clone()),
                code: err.error,
            }),
        }
    }

    /// Opens the node's map stream; the first message is the full map.
    pub async fn map(&self, node_token: &str) -> Result<MapStream, ClientError> {
        // A second stream while the first is still unanswered is harmless: the server keeps
        // both until the loser's connection closes.
        let resp = self
            .hedged(self.http.get(self.url("/map")).bearer_auth(node_token))
            .await?;
        Ok(MapStream {
            body: Box::pin(resp.bytes_stream()),
            buf: BytesMut::new(),
            scanned: 0,
            url: self.base.clone(),
        })
    }
}

/// Turns a non-2xx answer into `ClientError::Api` with the server's own words.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    Err(match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.error,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http".into(),
            message: status.canonical_reason().unwrap_or("error").to_string(),
        },
    })
}

/// A read buffer larger than this is shrunk once the long line in it is consumed.
const SHRINK_ABOVE: usize = 64 * 1024;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The map stream: newline-delimited JSON messages.
pub struct MapStream {
    body: ByteStream,
    buf: BytesMut,
    scanned: usize,
    url: String,
}

impl MapStream {
    /// The next message; none when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<MapMessage>, ClientError> {
        match self.next_raw().await? {
            Some(line) => parse_map_line(&line)
                .map(Some)
                .map_err(|e| ClientError::Protocol(format!("bad map line: {e}"))),
            None => Ok(None),
        }
    }

    /// The next raw line without parsing it (for clients that only count or skip lines).
    pub async fn next_raw(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(line) = self.next_line() {
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_MAP_LINE {
                return Err(ClientError::Protocol(format!(
                    "map line longer than {MAX_MAP_LINE} bytes"
                )));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        source: e,
                    })
                }
                None => return Ok(None),
            }
        }
    }

    /// Bytes held for lines not read yet (and spare capacity).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn next_line(&mut self) -> Option<Bytes> {
        // Bytes already searched are not searched again: a full map can be megabytes long.
        let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
            self.scanned = self.buf.len();
            return None;
        };
        let line = self.buf.split_to(self.scanned + pos).freeze();
        self.buf.advance(1);
        self.scanned = 0;
        // After a full map the buffer still holds its megabytes: keep only what is left in it.
        if self.buf.capacity() > SHRINK_ABOVE && self.buf.capacity() > 4 * self.buf.len() {
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that reads each request and answers `[]` on every connection but
    /// the first, which it holds unanswered (as if its SYN or request were lost); it counts the
    /// connections.
    async fn first_connection_lost() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n == 0 {
                    held.push(conn);
                    continue;
                }
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(got) = conn.read(&mut buf).await {
                        if got == 0 {
                            break;
                        }
                        let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                      content-length: 2\r\n\r\n[]";
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn an_unanswered_request_is_sent_again_on_another_connection() {
        let (url, connections) = first_connection_lost().await;
        let client = ControlClient::new(&url, None).unwrap();
        let t0 = Instant::now();
        let nodes = client.nodes("session").await.unwrap();
        assert!(nodes.is_empty());
        // The copy left after half a second, not after a TCP retransmission or the timeout.
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The next request goes out once, on the connection that answered (no copy).
        client.nodes("session").await.unwrap();
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_registration_is_sent_once() {
        let (url, connections) = first_connection_lost().await;
        let client = ControlClient::new(&url, None).unwrap();
        let challenge = RegisterChallenge {
            server_key: PrivateKey::from_bytes([1; 32]).public_key(),
            challenge: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            expires_in: 60,
        };
        let info = NodeInfo {
            disco_key: PrivateKey::from_bytes([2; 32]).public_key(),
            hostname: "a".into(),
            os: "linux".into(),
            tags: Vec::new(),
            advertised_routes: Vec::new(),
        };
        let req = RegisterRequest::new(&PrivateKey::from_bytes([3; 32]), &challenge, &info);
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            client.register_request("phk_key", &req),
        )
        .await;
        assert!(sent.is_err(), "the held request cannot have been answered");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_endpoint_update_is_sent_once() {
        let (url, connections) = first_connection_lost().await;
        let client = ControlClient::new(&url, None).unwrap();
        let upd = NodeUpdate {
            endpoints: Some(vec![]),
            home_relay: None,
            disco_key: None,
            tags: None,
            advertised_routes: None,
        };
        let sent =
            tokio::time::timeout(Duration::from_secs(2), client.update("phn_token", &upd)).await;
        assert!(sent.is_err(), "the held request cannot have been answered");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_device_code_is_asked_for_once() {
        let (url, connections) = first_connection_lost().await;
        let client = ControlClient::new(&url, None).unwrap();
        let asked = tokio::time::timeout(Duration::from_secs(2), client.device_code()).await;
        assert!(asked.is_err(), "the held request cannot have been answered");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    fn stream_of(chunks: Vec<&'static [u8]>) -> MapStream {
        let items: Vec<reqwest::Result<Bytes>> = chunks
            .into_iter()
            .map(|c| Ok(Bytes::from_static(c)))
            .collect();
        MapStream {
            body: Box::pin(futures_util::stream::iter(items)),
            buf: BytesMut::new(),
            scanned: 0,
            url: "test".into(),
        }
    }

    #[tokio::test]
    async fn lines_split_across_chunks_and_big_buffers_shrink() {
        let big: &'static [u8] = Box::leak(vec![b'x'; 1 << 20].into_boxed_slice());
        let mut s = stream_of(vec![
            b"{\"type\":\"keep",
            b"alive\"}\nab",
            big,
            b"\n{\"type\":\"keepalive\"}",
            b"\n",
        ]);
        assert_eq!(s.next().await.unwrap(), Some(MapMessage::Keepalive));
        let line = s.next_raw().await.unwrap().unwrap();
        assert_eq!(line.len(), 2 + (1 << 20));
        drop(line);
        assert!(
            s.buffered_capacity() <= SHRINK_ABOVE,
            "{}",
            s.buffered_capacity()
        );
        assert_eq!(s.next().await.unwrap(), Some(MapMessage::Keepalive));
        assert_eq!(s.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_bad_line_is_an_error_not_a_panic() {
        let mut s = stream_of(vec![b"{nope}\n"]);
        assert!(matches!(s.next().await, Err(ClientError::Protocol(_))));
    }

    #[test]
    fn urls_are_checked() {
        assert!(ControlClient::new("ftp://x", None).is_err());
        assert!(ControlClient::new("not a url", None).is_err());
        assert!(ControlClient::new("http://192.0.2.1:8080/", None).is_ok());
    }
}
