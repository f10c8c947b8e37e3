//! The HTTP proxy a relay is reached through when one is configured: its URL read (Basic
//! credentials from it, never logged), and a CONNECT tunnel opened through it with hyper.

use crate::common::{send_upgrade, DialError, SetupError, Stream};
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;

/// An HTTP proxy reached with CONNECT, with Basic credentials when its URL has them.
#[derive(Clone)]
pub(crate) struct Proxy {
    host: String,
    port: u16,
    /// `Basic …` for Proxy-Authorization (never logged).
    auth: Option<HeaderValue>,
}

impl Proxy {
    /// Reads `http://[user:pass@]host:port`.
    pub(crate) fn parse(url: &str) -> Result<Proxy, SetupError> {
        use base64::Engine as _;
        // The URL is not repeated in errors: it may hold a password.
        let bad = |why: String| SetupError::Proxy(why);
        let u = url::Url::parse(url).map_err(|e| bad(format!("invalid proxy URL: {e}")))?;
        if u.scheme() != "http" {
            return Err(bad(
                "proxy URL: only http:// proxies (HTTP CONNECT) are supported".into(),
            ));
        }
        let host = u
            .host_str()
            .ok_or_else(|| bad("the proxy URL has no host".into()))?;
        let auth = if u.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| bad("the proxy credentials are not valid UTF-8".into()))
            };
            let user = decode(u.username())?;
            let pass = decode(u.password().unwrap_or(""))?;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| bad("the proxy credentials do not fit an HTTP header".into()))?;
            v.set_sensitive(true);
            Some(v)
        };
        Ok(Proxy {
            host: host.trim_matches(['[', ']']).to_string(),
            port: u.port().unwrap_or(8080),
            auth,
        })
    }

    /// A tunnel to `authority` through the proxy (HTTP CONNECT, with hyper).
    pub(crate) async fn connect(&self, authority: &str) -> Result<Box<dyn Stream>, DialError> {
        let at = format!("proxy {}:{}", self.host, self.port);
        let tcp = crate::tcp_race::connect(&self.host, self.port)
            .await
            .map_err(|e| DialError::Connect(at.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let mut req = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(authority)
            .header(hyper::header::HOST, authority);
        if let Some(a) = &self.auth {
            req = req.header(hyper::header::PROXY_AUTHORIZATION, a.clone());
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| DialError::Http(at.clone(), e.to_string()))?;
        let resp = send_upgrade(TokioIo::new(tcp), req, &at).await?;
        if !resp.status().is_success() {
            let why = match resp.status() {
                hyper::StatusCode::PROXY_AUTHENTICATION_REQUIRED if self.auth.is_some() => {
                    "407: the proxy refused the user name and password".to_string()
                }
                hyper::StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
                    "407: the proxy wants a user name and password (http://user:pass@host:port)"
                        .to_string()
                }
                s => s.to_string(),
            };
            return Err(DialError::Proxy(authority.to_string(), why));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| DialError::Http(at, e.to_string()))?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }
}

#[cfg(test)]
mod tests {
    use crate::Dialer;

    #[test]
    fn proxies_must_be_http() {
        assert!(Dialer::new(None, Some("http://[::1]:3128"), false).is_ok());
        let e = Dialer::new(None, Some("socks5://127.0.0.1:1080"), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("only http://"), "{e}");
    }
}
