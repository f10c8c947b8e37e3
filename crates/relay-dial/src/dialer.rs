//! Dialing a relay: TCP (attempts raced, see [`crate::tcp_race`]) or a CONNECT tunnel through
//! the proxy, TLS for `https`, then the HTTP upgrade to the relay protocol, or a WebSocket
//! carrying it when the plain upgrade is refused on the way (or WebSockets are asked for).

use crate::common::{send_upgrade, DialError, SetupError, Stream};
use crate::proxy::Proxy;
use hyper_util::rt::TokioIo;
use pinhole_proto::relay::UPGRADE_PROTOCOL;
use std::sync::Arc;
use std::time::Duration;

/// How long opening a connection (TCP, proxy, TLS, upgrade) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach relays: TLS trust, an optional HTTP proxy, and whether to go straight to
/// WebSockets (for networks that pass nothing else).
#[derive(Clone)]
pub struct Dialer {
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    proxy: Option<Proxy>,
    websocket_only: bool,
}

impl Dialer {
    /// Trusts the system's web roots plus `extra_ca_pem`; `proxy` is
    /// `http://[user:pass@]host:port`.
    pub fn new(
        extra_ca_pem: Option<&[u8]>,
        proxy: Option<&str>,
        websocket_only: bool,
    ) -> Result<Dialer, SetupError> {
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_ca_pem {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| SetupError::Ca(e.to_string()))?;
                roots.add(cert).map_err(|e| SetupError::Ca(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Dialer {
            tls: Arc::new(config),
            proxy: proxy.map(Proxy::parse).transpose()?,
            websocket_only,
        })
    }

    /// Opens `url` and upgrades it to the relay protocol (or a WebSocket carrying it, when the
    /// plain upgrade is refused on the way or WebSockets are asked for).
    pub async fn dial(&self, url: &str) -> Result<Box<dyn Stream>, DialError> {
        tokio::time::timeout(DIAL_TIMEOUT, self.dial_inner(url))
            .await
            .map_err(|_| DialError::Timeout(url.to_string()))?
    }

    async fn dial_inner(&self, url: &str) -> Result<Box<dyn Stream>, DialError> {
        let t = Target::parse(url)?;
        if !self.websocket_only {
            let stream = self.open(&t).await?;
            match upgrade_plain(stream, &t).await {
                Err(DialError::Upgrade(_, status)) => {
                    tracing::debug!(%url, %status, "plain upgrade refused: trying a WebSocket")
                }
                other => return other,
            }
        }
        let stream = self.open(&t).await?;
        upgrade_websocket(stream, &t).await
    }

    /// TCP to the relay (through the proxy's CONNECT tunnel when there is one), then TLS for
    /// `https`.
    async fn open(&self, t: &Target) -> Result<Box<dyn Stream>, DialError> {
        let authority = &t.authority;
        let base: Box<dyn Stream> = match &self.proxy {
            None => {
                let tcp = crate::tcp_race::connect(&t.host, t.port)
                    .await
                    .map_err(|e| DialError::Connect(authority.clone(), e))?;
                let _ = tcp.set_nodelay(true);
                Box::new(tcp)
            }
            Some(p) => p.connect(authority).await?,
        };
        if !t.tls {
            return Ok(base);
        }
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|_| DialError::Url(t.url.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let s = connector
            .connect(name, base)
            .await
            .map_err(|e| DialError::Tls(authority.clone(), e))?;
        Ok(Box::new(s))
    }
}

/// A relay URL taken apart.
struct Target {
    url: String,
    tls: bool,
    /// Host name or address, without brackets.
    host: String,
    port: u16,
    /// `host:port` as it goes into Host and CONNECT (IPv6 in brackets).
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, DialError> {
        let bad = || DialError::Url(url.to_string());
        let u = url::Url::parse(url).map_err(|_| bad())?;
        let tls = match u.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        let host = u
            .host_str()
            .ok_or_else(bad)?
            .trim_matches(['[', ']'])
            .to_string();
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            url: url.to_string(),
            tls,
            host,
            port,
            authority,
            path: u.path().to_string(),
        })
    }
}

/// `GET /relay` with `Upgrade: pinhole-relay` (hyper's HTTP/1.1 client): after the 101, relay
/// frames on the connection itself.
async fn upgrade_plain(stream: Box<dyn Stream>, t: &Target) -> Result<Box<dyn Stream>, DialError> {
    let req = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(t.path.as_str())
        .header(hyper::header::HOST, t.authority.as_str())
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, UPGRADE_PROTOCOL)
        .header(
            hyper::header::USER_AGENT,
            concat!("pinhole/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|_| DialError::Url(t.url.clone()))?;
    let resp = send_upgrade(TokioIo::new(stream), req, &t.authority).await?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = format!(
            "HTTP/1.1 {} {}",
            resp.status().as_u16(),
            resp.status().canonical_reason().unwrap_or("")
        );
        return Err(DialError::Upgrade(
            t.url.clone(),
            status.trim_end().to_string(),
        ));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| DialError::Http(t.authority.clone(), e.to_string()))?;
    Ok(Box::new(TokioIo::new(upgraded)))
}

/// The same path as a WebSocket: relay frames in binary messages.
async fn upgrade_websocket(
    stream: Box<dyn Stream>,
    t: &Target,
) -> Result<Box<dyn Stream>, DialError> {
    use pinhole_wsio::tokio_tungstenite;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let scheme = if t.tls { "wss" } else { "ws" };
    let ws_url = format!("{scheme}://{}{}", t.authority, t.path);
    let mut req = ws_url
        .into_client_request()
        .map_err(|_| DialError::Url(t.url.clone()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(UPGRADE_PROTOCOL),
    );
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| DialError::Upgrade(t.url.clone(), format!("WebSocket: {e}")))?;
    Ok(Box::new(pinhole_wsio::WsByteStream::new(ws)))
}
