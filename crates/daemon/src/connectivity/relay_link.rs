//! The relay connections: one task per relay region in use (the home region, and the regions of
//! peers packets go to), each driving a [`RelayClient`] over a stream the [`Dialer`] opened
//! (TCP, an HTTP CONNECT proxy, TLS, the upgrade to the relay protocol: `pinhole-relay-dial`).
//! Packets to send come in over a bounded channel; packets received and connection changes go
//! out to the daemon's loop.

use pinhole_engine::{Key, PrivateKey, RelayClient, RelayEvent, RelayTransmit};
use pinhole_proto::control::RelayMap;
pub use pinhole_relay_dial::Dialer;
use pinhole_relay_dial::Stream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Packets waiting for one region's connection before more are dropped.
const SEND_QUEUE: usize = 1024;

/// Something a relay connection reports to the daemon.
pub struct Incoming {
    pub region: Arc<str>,
    pub event: RelayEvent,
}

/// What the daemon can say about a region's connection.
#[derive(Debug, Clone, Default)]
pub struct RegionState {
    pub connected: bool,
    pub error: Option<String>,
}

/// How long a connection to a relay region other than the home one stays open with nothing
/// sent through it (as Tailscale closes idle DERP connections after a minute).
pub const RELAY_IDLE: Duration = Duration::from_secs(60);

/// A relay map URL made absolute: `/relay` is on the coordination server itself, `:PORT/relay`
/// on its host at another port (same scheme). None for an empty URL (a STUN-only server) or
/// one that does not parse.
pub fn resolve_url(url: &str, control_base: Option<&str>) -> Option<String> {
    if url.starts_with('/') {
        let base = reqwest::Url::parse(control_base?).ok()?;
        return base.join(url).ok().map(|u| u.to_string());
    }
    if let Some(rest) = url.strip_prefix(':') {
        let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let port: u16 = port.parse().ok()?;
        let mut base = reqwest::Url::parse(control_base?).ok()?;
        base.set_port(Some(port)).ok()?;
        return base
            .join(if path.is_empty() { "/" } else { path })
            .ok()
            .map(|u| u.to_string());
    }
    reqwest::Url::parse(url).ok().map(|u| u.to_string())
}

struct RegionConn {
    tx: mpsc::Sender<(Key, Vec<u8>)>,
    task: JoinHandle<()>,
    state: Arc<Mutex<RegionState>>,
    /// When a packet was last handed to it (or it was opened).
    last_used: std::time::Instant,
}

impl Drop for RegionConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The relay connections in use.
pub struct Relays {
    private: PrivateKey,
    dialer: Dialer,
    /// Each region's relay URLs (absolute).
    urls: HashMap<Arc<str>, Vec<String>>,
    conns: HashMap<Arc<str>, RegionConn>,
    /// The map and control URL `urls` was made from (the status is published often; the map
    /// changes rarely).
    map_input: Option<(Option<RelayMap>, Option<String>)>,
    events_tx: mpsc::Sender<Incoming>,
    events_rx: mpsc::Receiver<Incoming>,
    /// Packets dropped because a region's queue was full or the region is unknown (logged when
    /// the tunnel goes down).
    pub dropped: u64,
}

impl Relays {
    pub fn new(private: PrivateKey, dialer: Dialer) -> Relays {
        let (events_tx, events_rx) = mpsc::channel(SEND_QUEUE);
        Relays {
            private,
            dialer,
            urls: HashMap::new(),
            conns: HashMap::new(),
            map_input: None,
            events_tx,
            events_rx,
            dropped: 0,
        }
    }

    /// A new node key (after a logout): every connection is closed.
    pub fn set_key(&mut self, private: PrivateKey) {
        self.private = private;
        self.conns.clear();
    }

    /// The relays of a new map; connections to regions that left or changed are closed.
    pub fn set_map(&mut self, map: Option<&RelayMap>, control_base: Option<&str>) {
        let input = (map.cloned(), control_base.map(str::to_string));
        if self.map_input.as_ref() == Some(&input) {
            return;
        }
        self.map_input = Some(input);
        let mut urls: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for r in map.iter().flat_map(|m| m.regions.iter()) {
            let list: Vec<String> = r
                .relays
                .iter()
                .filter_map(|x| resolve_url(&x.url, control_base))
                .collect();
            if !list.is_empty() {
                urls.insert(Arc::from(r.code.as_str()), list);
            }
        }
        let old = std::mem::replace(&mut self.urls, urls);
        self.conns.retain(|code, _| {
            old.get(code)
                .is_some_and(|u| self.urls.get(code) == Some(u))
        });
    }

    /// Closes every connection (the tunnel is down or the node signed out).
    pub fn close_all(&mut self) {
        self.conns.clear();
    }

    /// Keeps a connection to `region` open (the home relay, where peers send to this node).
    pub fn ensure(&mut self, region: &str) {
        // Called for every relayed packet: the common case returns before anything is copied.
        if self
            .conns
            .get(region)
            .is_some_and(|c| !c.task.is_finished())
        {
            return;
        }
        let Some((code, urls)) = self
            .urls
            .get_key_value(region)
            .map(|(c, u)| (c.clone(), u.clone()))
        else {
            return;
        };
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let state = Arc::new(Mutex::new(RegionState::default()));
        let task = tokio::spawn(run_region(
            code.clone(),
            urls,
            self.private.clone(),
            self.dialer.clone(),
            rx,
            self.events_tx.clone(),
            state.clone(),
        ));
        self.conns.insert(
            code,
            RegionConn {
                tx,
                task,
                state,
                last_used: std::time::Instant::now(),
            },
        );
    }

    /// Closes the connections to regions other than `keep` (the home region) that nothing was
    /// sent through for `idle`: peers send to this node through its home relay, so another
    /// region is only needed while packets go there, and it reopens with the next one.
    /// Returns the regions closed.
    pub fn close_idle(
        &mut self,
        keep: Option<&str>,
        now: std::time::Instant,
        idle: Duration,
    ) -> Vec<Arc<str>> {
        let mut closed = Vec::new();
        self.conns.retain(|code, c| {
            let wanted = keep == Some(&**code) || now.saturating_duration_since(c.last_used) < idle;
            if !wanted {
                closed.push(code.clone());
            }
            wanted
        });
        closed
    }

    /// Hands a packet to its region's connection (opened if needed).
    pub fn send(&mut self, t: RelayTransmit) {
        self.ensure(&t.region);
        match self.conns.get_mut(&t.region) {
            Some(c) if c.tx.try_send((t.peer, t.payload)).is_ok() => {
                c.last_used = std::time::Instant::now();
            }
            _ => self.dropped += 1,
        }
    }

    /// The next thing a connection reports.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.events_rx.recv().await
    }

    /// Something a connection already reported, without waiting.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.events_rx.try_recv().ok()
    }

    /// Why each region with a connection that is down cannot be reached.
    pub fn errors(&self) -> HashMap<String, String> {
        self.conns
            .iter()
            .filter_map(|(code, c)| {
                let s = c.state.lock().unwrap_or_else(|p| p.into_inner());
                match (&s.connected, &s.error) {
                    (false, Some(e)) => Some((code.to_string(), e.clone())),
                    _ => None,
                }
            })
            .collect()
    }
}

/// One region's connection for as long as it is wanted: dial, serve, redial after the backoff.
async fn run_region(
    region: Arc<str>,
    urls: Vec<String>,
    private: PrivateKey,
    dialer: Dialer,
    mut rx: mpsc::Receiver<(Key, Vec<u8>)>,
    events: mpsc::Sender<Incoming>,
    state: Arc<Mutex<RegionState>>,
) {
    let mut client = RelayClient::new(private, std::time::Instant::now());
    let mut attempt = 0usize;
    loop {
        // Wait for the backoff, holding packets that arrive meanwhile.
        loop {
            let now = std::time::Instant::now();
            if client.poll_dial(now) {
                break;
            }
            let at = client.poll_timeout().map_or(now, |t| t);
            tokio::select! {
                _ = tokio::time::sleep_until(Instant::from_std(at)) => {}
                m = rx.recv() => match m {
                    Some((dst, p)) => { client.send(&dst, &p); }
                    None => return,
                },
            }
        }
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let mut stream = match dialer.dial(url).await {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                let repeated = state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .error
                    .as_deref()
                    == Some(msg.as_str());
                if repeated {
                    tracing::debug!(%region, "relay: {e}");
                } else {
                    tracing::warn!(%region, "relay: {e}");
                }
                client.handle_disconnected(std::time::Instant::now(), &e.to_string());
                set_state(&state, false, Some(msg));
                forward_events(&region, &mut client, &events).await;
                continue;
            }
        };
        client.handle_connected(std::time::Instant::now());
        if !serve(
            &region,
            stream.as_mut(),
            &mut client,
            &mut rx,
            &events,
            &state,
        )
        .await
        {
            return;
        }
        set_state(&state, false, client.last_error().map(str::to_string));
        forward_events(&region, &mut client, &events).await;
    }
}

/// A connected stream served until it ends: what the client writes goes out, what arrives
/// goes in, packets to send are handed over, timers run. False when the packet channel closed
/// (the region is no longer wanted).
async fn serve(
    region: &Arc<str>,
    stream: &mut (dyn Stream + '_),
    client: &mut RelayClient,
    rx: &mut mpsc::Receiver<(Key, Vec<u8>)>,
    events: &mpsc::Sender<Incoming>,
    state: &Mutex<RegionState>,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        while let Some(w) = client.poll_write() {
            out.extend_from_slice(&w);
        }
        if !out.is_empty() {
            // Flushed: TLS and WebSockets send only then.
            let written = async {
                stream.write_all(&out).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                client.handle_disconnected(std::time::Instant::now(), &format!("write: {e}"));
                out.clear();
                break;
            }
            out.clear();
        }
        let connected = client.is_connected();
        if connected {
            set_state(state, true, None);
        }
        forward_events(region, client, events).await;
        if client.wants_close() {
            break;
        }
        let deadline = client
            .poll_timeout()
            .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(60));
        tokio::select! {
            r = stream.read(&mut buf) => {
                let now = std::time::Instant::now();
                match r {
                    Ok(0) => {
                        client.handle_disconnected(now, "the relay closed the connection");
                        break;
                    }
                    Ok(n) => client.handle_input(now, &buf[..n]),
                    Err(e) => {
                        client.handle_disconnected(now, &format!("read: {e}"));
                        break;
                    }
                }
            }
            m = rx.recv() => match m {
                Some((dst, p)) => {
                    client.send(&dst, &p);
                    while let Ok((dst, p)) = rx.try_recv() {
                        client.send(&dst, &p);
                        if out.len() > 256 * 1024 { break; }
                    }
                }
                None => return false,
            },
            _ = tokio::time::sleep_until(Instant::from_std(deadline)) => {
                client.handle_timeout(std::time::Instant::now());
            }
        }
    }
    true
}

/// Records a region's connection state for the status.
fn set_state(state: &Mutex<RegionState>, connected: bool, error: Option<String>) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.connected = connected;
    s.error = error;
}

async fn forward_events(
    region: &Arc<str>,
    client: &mut RelayClient,
    events: &mpsc::Sender<Incoming>,
) {
    while let Some(event) = client.poll_event() {
        match &event {
            RelayEvent::Connected => tracing::info!(%region, "relay connected"),
            RelayEvent::Disconnected { reason } => {
                tracing::info!(%region, "relay disconnected: {reason}")
            }
            _ => {}
        }
        let _ = events
            .send(Incoming {
                region: region.clone(),
                event,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_relay_urls_are_on_the_coordination_server() {
        assert_eq!(
            resolve_url("/relay", Some("http://198.18.0.1:8080")).as_deref(),
            Some("http://198.18.0.1:8080/relay")
        );
        assert_eq!(
            resolve_url("/relay", Some("https://ctl.example/")).as_deref(),
            Some("https://ctl.example/relay")
        );
        assert_eq!(resolve_url("/relay", None), None);
        assert_eq!(
            resolve_url("https://r1.example/relay", None).as_deref(),
            Some("https://r1.example/relay")
        );
        assert_eq!(resolve_url("not a url", None), None);
        assert_eq!(resolve_url("", Some("http://198.18.0.1:8080")), None);
    }

    #[test]
    fn relay_urls_with_only_a_port_are_on_the_coordination_servers_host() {
        assert_eq!(
            resolve_url(":8443/relay", Some("https://ctl.example/")).as_deref(),
            Some("https://ctl.example:8443/relay")
        );
        assert_eq!(
            resolve_url(":3340/relay", Some("http://198.18.0.1:8080/")).as_deref(),
            Some("http://198.18.0.1:3340/relay")
        );
        assert_eq!(resolve_url(":99999/relay", Some("http://h:1/")), None);
        assert_eq!(resolve_url(":x/relay", Some("http://h:1/")), None);
        assert_eq!(resolve_url(":3340/relay", None), None);
    }

    use pinhole_proto::control::{Relay as MapRelay, RelayRegion};
    use pinhole_relay::http_server::{accept_loop, tls_acceptor, TlsFiles};
    use pinhole_relay::{Relay, RelayConfig, StaticAuthorizer};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A relay on loopback (TLS with a fresh self-signed certificate when `tls`) that knows
    /// `keys`; its address, with TLS the certificate to trust, and the relay.
    async fn relay_server(keys: &[PrivateKey], tls: bool) -> (SocketAddr, Option<String>, Relay) {
        let auth = Arc::new(StaticAuthorizer::default());
        for k in keys {
            auth.allow(k.public_key(), "lab");
        }
        let relay = Relay::new(auth, RelayConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (acceptor, pem) = if tls {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "pinholed-relay-tls-{}-{}",
                std::process::id(),
                addr.port()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
            let files = TlsFiles {
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            };
            let acceptor = tls_acceptor(&files).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            (Some(acceptor), Some(cert.cert.pem()))
        } else {
            (None, None)
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(stop);
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            pinhole_relay::http::router(relay.clone()),
            rx,
        ));
        (addr, pem, relay)
    }

    /// An HTTP CONNECT proxy on loopback that counts the tunnels it opened; with `basic`, it
    /// wants that `Proxy-Authorization` and answers 407 otherwise.
    async fn connect_proxy(basic: Option<&'static str>) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(AtomicU64::new(0));
        let count = tunnels.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8(head).unwrap();
                    let target = head
                        .strip_prefix("CONNECT ")
                        .and_then(|r| r.split(' ').next())
                        .unwrap()
                        .to_string();
                    if let Some(want) = basic {
                        let given = head.lines().find_map(|l| {
                            l.to_ascii_lowercase()
                                .starts_with("proxy-authorization:")
                                .then(|| l["proxy-authorization:".len()..].trim().to_string())
                        });
                        if given.as_deref() != Some(want) {
                            let _ = client
                                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"lab\"\r\nContent-Length: 0\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                    let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        (addr, tunnels)
    }

    fn map(url: &str) -> RelayMap {
        RelayMap {
            regions: vec![RelayRegion {
                code: "lab".into(),
                name: "lab".into(),
                relays: vec![MapRelay {
                    url: url.into(),
                    stun: None,
                }],
            }],
        }
    }

    async fn wait_connected(r: &mut Relays) {
        loop {
            let inc = tokio::time::timeout(Duration::from_secs(10), r.recv())
                .await
                .expect("an event within 10 s")
                .expect("events");
            match inc.event {
                RelayEvent::Connected => return,
                RelayEvent::Disconnected { reason } => panic!("{reason}"),
                _ => {}
            }
        }
    }

    /// Two nodes' relay connections exchange a packet through the relay at `url`.
    async fn exchange(url: &str, dialer: Dialer, a: &PrivateKey, b: &PrivateKey) {
        let mut ra = Relays::new(a.clone(), dialer.clone());
        let mut rb = Relays::new(b.clone(), dialer);
        for r in [&mut ra, &mut rb] {
            r.set_map(Some(&map(url)), None);
            r.ensure("lab");
        }
        wait_connected(&mut ra).await;
        wait_connected(&mut rb).await;
        ra.send(RelayTransmit {
            region: "lab".into(),
            peer: b.public_key(),
            payload: b"through the relay".to_vec(),
        });
        loop {
            let inc = tokio::time::timeout(Duration::from_secs(10), rb.recv())
                .await
                .expect("the packet within 10 s")
                .expect("events");
            if let RelayEvent::Packet { from, packet } = inc.event {
                assert_eq!(from, a.public_key());
                assert_eq!(packet, b"through the relay");
                assert!(ra.errors().is_empty());
                return;
            }
        }
    }

    #[tokio::test]
    async fn packets_cross_the_relay_over_tls_and_through_a_connect_proxy() {
        let (a, b) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        // HTTPS, trusting the relay's certificate as --control-ca would.
        let (addr, pem, _) = relay_server(&[a.clone(), b.clone()], true).await;
        let dialer = Dialer::new(pem.as_deref().map(str::as_bytes), None, false).unwrap();
        exchange(
            &format!("https://localhost:{}/relay", addr.port()),
            dialer,
            &a,
            &b,
        )
        .await;
        // Plain HTTP through an HTTP CONNECT proxy: both connections go through it.
        let (addr, _, _) = relay_server(&[a.clone(), b.clone()], false).await;
        let (proxy, tunnels) = connect_proxy(None).await;
        let dialer = Dialer::new(None, Some(&format!("http://{proxy}")), false).unwrap();
        exchange(&format!("http://{addr}/relay"), dialer, &a, &b).await;
        assert_eq!(tunnels.load(Ordering::Relaxed), 2);
    }
    /// A proxy that wants a user name and password: `http://user:pass@proxy` gets through
    /// (Basic, percent-escapes decoded); none, or wrong ones, are reported as such.
    #[tokio::test]
    async fn proxies_with_basic_authentication() {
        let (a, b) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        let (addr, _, _) = relay_server(&[a.clone(), b.clone()], false).await;
        // "alice:p@ss word" in Basic.
        let (proxy, tunnels) = connect_proxy(Some("Basic YWxpY2U6cEBzcyB3b3Jk")).await;
        let url = format!("http://{addr}/relay");
        let dialer = Dialer::new(
            None,
            Some(&format!("http://alice:p%40ss%20word@{proxy}")),
            false,
        )
        .unwrap();
        exchange(&url, dialer, &a, &b).await;
        assert_eq!(tunnels.load(Ordering::Relaxed), 2);
        for (proxy_url, want) in [
            (format!("http://{proxy}"), "wants a user name and password"),
            (
                format!("http://alice:wrong@{proxy}"),
                "refused the user name and password",
            ),
        ] {
            let dialer = Dialer::new(None, Some(&proxy_url), false).unwrap();
            let e = dialer.dial(&url).await.err().expect("refused").to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("wrong"), "no password in errors: {e}");
        }
    }

    /// Like `relay_server`, behind a middlebox that refuses the plain upgrade (as some proxies
    /// and firewalls do) but lets WebSockets through.
    async fn relay_behind_websocket_only_middlebox(keys: &[PrivateKey]) -> SocketAddr {
        let auth = Arc::new(StaticAuthorizer::default());
        for k in keys {
            auth.allow(k.public_key(), "lab");
        }
        let relay = Relay::new(auth, RelayConfig::default());
        let router = pinhole_relay::http::router(relay).layer(axum::middleware::from_fn(
            |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let plain = req.headers().get("upgrade").is_some_and(|v| {
                    v.as_bytes()
                        .eq_ignore_ascii_case(pinhole_proto::relay::UPGRADE_PROTOCOL.as_bytes())
                });
                if plain {
                    use axum::response::IntoResponse;
                    return axum::http::StatusCode::FORBIDDEN.into_response();
                }
                next.run(req).await
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(stop);
        tokio::spawn(accept_loop(listener, None, router, rx));
        addr
    }

    #[tokio::test]
    async fn websockets_carry_the_relay_when_the_plain_upgrade_is_refused() {
        let (a, b) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        let addr = relay_behind_websocket_only_middlebox(&[a.clone(), b.clone()]).await;
        let url = format!("http://{addr}/relay");
        // Falls back on its own…
        exchange(&url, Dialer::new(None, None, false).unwrap(), &a, &b).await;
        // …or goes straight to WebSockets when told to.
        exchange(&url, Dialer::new(None, None, true).unwrap(), &a, &b).await;
    }

    #[tokio::test]
    async fn an_unreachable_or_refusing_relay_is_reported() {
        let (addr, _, _) = relay_server(&[PrivateKey::from_bytes([1; 32])], false).await;
        let dialer = Dialer::new(None, None, false).unwrap();
        // A stranger's key is refused; a dead port cannot be connected to.
        for (url, key, want) in [
            (
                format!("http://{addr}/relay"),
                PrivateKey::from_bytes([9; 32]),
                "not authorised",
            ),
            (
                "http://127.0.0.1:9/relay".to_string(),
                PrivateKey::from_bytes([1; 32]),
                "cannot connect",
            ),
            (
                format!("http://{addr}/nothing"),
                PrivateKey::from_bytes([1; 32]),
                "did not switch",
            ),
        ] {
            let mut r = Relays::new(key, dialer.clone());
            r.set_map(Some(&map(&url)), None);
            r.ensure("lab");
            let ok = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if r.errors().get("lab").is_some_and(|e| e.contains(want)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(ok.is_ok(), "{url}: {:?}", r.errors());
        }
    }

    #[tokio::test]
    async fn idle_connections_to_other_regions_are_closed_but_the_home_stays() {
        let (a, b) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        let (home_addr, _, home) = relay_server(std::slice::from_ref(&a), false).await;
        let (other_addr, _, other) = relay_server(std::slice::from_ref(&a), false).await;
        let region = |code: &str, addr: SocketAddr| RelayRegion {
            code: code.into(),
            name: code.into(),
            relays: vec![MapRelay {
                url: format!("http://{addr}/relay"),
                stun: None,
            }],
        };
        let map = RelayMap {
            regions: vec![region("home", home_addr), region("other", other_addr)],
        };
        let mut r = Relays::new(a.clone(), Dialer::new(None, None, false).unwrap());
        r.set_map(Some(&map), None);
        r.ensure("home");
        wait_connected(&mut r).await;
        // A packet for a peer whose home is "other" opens a connection there.
        r.send(RelayTransmit {
            region: "other".into(),
            peer: b.public_key(),
            payload: b"to a peer homed elsewhere".to_vec(),
        });
        wait_connected(&mut r).await;
        let clients = |x: &Relay| x.client_count();
        assert_eq!((clients(&home), clients(&other)), (1, 1));
        let now = std::time::Instant::now();
        // Recently used: nothing closes.
        assert!(r.close_idle(Some("home"), now, RELAY_IDLE).is_empty());
        // A minute later with nothing sent: "other" closes, the home stays.
        let later = now + RELAY_IDLE + Duration::from_secs(1);
        let closed = r.close_idle(Some("home"), later, RELAY_IDLE);
        assert_eq!(closed, vec![Arc::<str>::from("other")]);
        let gone = tokio::time::timeout(Duration::from_secs(10), async {
            while clients(&other) != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(gone.is_ok(), "the relay still has the idle connection");
        assert_eq!(clients(&home), 1);
        // The next packet there reopens it.
        r.send(RelayTransmit {
            region: "other".into(),
            peer: b.public_key(),
            payload: b"again".to_vec(),
        });
        wait_connected(&mut r).await;
        assert_eq!(clients(&other), 1);
    }
}
