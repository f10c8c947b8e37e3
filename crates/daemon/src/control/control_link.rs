//! pinholed's side of the coordination server: signing in (auth key or device code), then
//! following the map stream for as long as the daemon runs, reconnecting with backoff, and
//! publishing this node's endpoints. Messages go to the daemon's loop over a channel; when control
//! is unreachable, nothing is sent and the loop keeps the last map.

use crate::connectivity::endpoints;
use crate::platform::identity::{self, Registration};
use anyhow::{bail, Context, Result};
use pinhole_control_client::{ClientError, ControlClient, DevicePoll};
use pinhole_proto::control::{MapMessage, NodeInfo, NodeUpdate, MAP_KEEPALIVE_SECS};
use pinhole_proto::endpoint::Endpoint;
use pinhole_proto::ipc::LoginPrompt;
use pinhole_proto::key::{Key, PrivateKey};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the daemon's loop hears from control.
#[derive(Debug)]
pub enum ControlMsg {
    Map(Box<MapMessage>),
    /// Control no longer accepts this node; peers should go.
    SignedOut(String),
    /// The map stream is down (the last map stays in use); why, in words.
    Unreachable(String),
    /// The endpoints this node published.
    Endpoints(Vec<Endpoint>),
}

/// Exponential backoff with jitter: 1 s doubling to 30 s, ±20 %.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
    }
}

/// What a node signs in with.
pub enum How {
    /// An auth key (headless machines).
    AuthKey(String),
    /// A person's session from an earlier interactive sign-in.
    Session(String),
    /// Device sign-in: a URL and a code for a person to approve in a browser.
    Interactive,
}

/// The secrets never show in debug output.
impl std::fmt::Debug for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            How::AuthKey(_) => "AuthKey(…)",
            How::Session(_) => "Session(…)",
            How::Interactive => "Interactive",
        })
    }
}

/// How this node signs in when it has no registration yet.
pub struct SignIn {
    pub how: How,
    pub hostname: String,
    /// Tags to ask for (`pinhole up --advertise-tags`).
    pub tags: Vec<String>,
    /// Routes to offer (`pinhole up --advertise-routes`, `--advertise-exit-node`).
    pub routes: Vec<ipnet::IpNet>,
    /// Keep retrying while control is unreachable (a service starting before the network);
    /// otherwise fail at once with a clear error (a person is waiting).
    pub patient: bool,
    /// Ask a person (device sign-in) when a stored session is refused.
    pub interactive_fallback: bool,
}

/// A finished sign-in: the registration, and the person's session when one was made here.
pub struct SignedIn {
    pub registration: Registration,
    pub session_token: Option<String>,
}

/// Signs in and registers the node, then saves the registration. Prompts for an interactive
/// sign-in go to `prompts`.
pub async fn sign_in(
    client: &ControlClient,
    state_dir: &Path,
    private: &PrivateKey,
    disco_key: Key,
    how: SignIn,
    prompts: mpsc::Sender<LoginPrompt>,
) -> Result<SignedIn> {
    let node_key = private.public_key();
    let info = NodeInfo {
        disco_key,
        hostname: how.hostname.clone(),
        os: std::env::consts::OS.to_string(),
        tags: how.tags.clone(),
        advertised_routes: how.routes.clone(),
    };
    let stored_session = matches!(how.how, How::Session(_));
    let (mut token, mut made_here) = match how.how {
        How::AuthKey(k) => (k, false),
        How::Session(s) => (s, false),
        How::Interactive => (device_sign_in(client, how.patient, &prompts).await?, true),
    };
    let mut backoff = Backoff::new();
    let resp = loop {
        match client.register(&token, private, &info).await {
            Ok(r) => break r,
            Err(e) if e.is_transient() && how.patient => {
                let d = backoff.next_delay();
                tracing::warn!("registration: {e}; retrying in {:.1} s", d.as_secs_f64());
                tokio::time::sleep(d).await;
            }
            Err(e) if e.is_transient() => {
                bail!("cannot reach the coordination server: {e}")
            }
            Err(e) if e.is_auth() && stored_session && !made_here && how.interactive_fallback => {
                tracing::info!("the stored session was refused ({e}); signing in interactively");
                token = device_sign_in(client, how.patient, &prompts).await?;
                made_here = true;
            }
            Err(e) => return Err(e).context("the coordination server refused the sign-in"),
        }
    };
    let r = Registration {
        control_url: client.base_url().to_string(),
        node_key,
        node_id: resp.node_id,
        name: resp.name,
        addresses: resp.addresses,
        node_token: resp.node_token,
        expires_at: resp.expires_at,
    };
    identity::save_registration(state_dir, &r)?;
    tracing::info!(name = %r.name, addresses = ?r.addresses, account = %resp.account, "registered");
    let asked = pinhole_dns::label::label(&info.hostname);
    if asked != r.name {
        tracing::info!(
            "this node is {} in the account's map, not {asked}: another node has that name, or the operator renamed this one",
            r.name
        );
    }
    Ok(SignedIn {
        registration: r,
        session_token: made_here.then_some(token),
    })
}

/// Device sign-in: shows where to approve the code, then waits for the approval.
async fn device_sign_in(
    client: &ControlClient,
    patient: bool,
    prompts: &mpsc::Sender<LoginPrompt>,
) -> Result<String> {
    let mut backoff = Backoff::new();
    loop {
        let code = match client.device_code().await {
            Ok(c) => c,
            Err(e) if e.is_transient() && patient => {
                let d = backoff.next_delay();
                tracing::warn!("sign-in: {e}; retrying in {:.1} s", d.as_secs_f64());
                tokio::time::sleep(d).await;
                continue;
            }
            Err(e) if e.is_transient() => bail!("cannot reach the coordination server: {e}"),
            Err(e) => return Err(e).context("the coordination server refused the sign-in"),
        };
        tracing::info!(
            "to sign in, open {} and enter the code {} (or open {})",
            code.verification_uri,
            code.user_code,
            code.verification_uri_complete
        );
        let _ = prompts
            .send(LoginPrompt {
                url: code.verification_uri.clone(),
                code: code.user_code.clone(),
            })
            .await;
        let mut interval = Duration::from_secs(code.interval.max(1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
        loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() >= deadline {
                tracing::info!("the sign-in code expired; here is a new one");
                break;
            }
            match client.device_token(&code.device_code).await {
                Ok(DevicePoll::Approved(t)) => return Ok(t.access_token),
                Ok(DevicePoll::Pending) => {}
                Ok(DevicePoll::SlowDown) => interval += Duration::from_secs(5),
                Err(ClientError::Api { code, .. }) if code == "expired_token" => break,
                Err(e) if e.is_transient() => tracing::debug!("sign-in poll: {e}"),
                Err(e) => bail!("sign-in failed: {e}"),
            }
        }
    }
}

/// What this node learned about its own addresses, for the map-stream task to publish.
pub struct Discovered {
    /// This node's addresses as STUN servers saw them (netcheck).
    pub reflexive: tokio::sync::watch::Receiver<Vec<SocketAddr>>,
    /// The port mapping the gateway granted.
    pub portmapped: tokio::sync::watch::Receiver<pinhole_portmap::State>,
    /// Told when the OS says the network changed.
    pub network_changed: std::sync::Arc<tokio::sync::Notify>,
}

/// The node as the map-stream and publishing tasks know it: its server, its registration, its
/// disco key and its WireGuard port.
#[derive(Clone)]
pub struct Following {
    pub client: ControlClient,
    pub reg: Registration,
    pub disco_key: Key,
    pub port: u16,
}

/// Follows the map stream until control says goodbye or the daemon stops. What `found` holds
/// is published with the interface addresses by a task of its own (an update never holds up
/// the map: on a lossy network one can take a second or more), and again whenever it changes.
pub async fn follow(node: Following, tx: mpsc::Sender<ControlMsg>, found: Discovered) {
    // Counts map-stream reconnections: the server may have lost what was published.
    let (reconnected, streams) = tokio::sync::watch::channel(0u64);
    let publisher = tokio::spawn(publish_endpoints(node.clone(), tx.clone(), found, streams));
    let Following { client, reg, .. } = node;
    // The publisher ends with this task, also when it is aborted.
    let _publisher = AbortOnDrop(publisher);
    let mut backoff = Backoff::new();
    let silence = Duration::from_secs(3 * MAP_KEEPALIVE_SECS);
    let mut connections = 0u64;
    loop {
        match client.map(&reg.node_token).await {
            Ok(mut stream) => {
                tracing::info!("map stream connected");
                connections += 1;
                if connections > 1 {
                    reconnected.send_replace(connections);
                }
                loop {
                    match tokio::time::timeout(silence, stream.next()).await {
                        Ok(Ok(Some(msg))) => {
                            backoff.reset();
                            let goodbye = matches!(msg, MapMessage::Goodbye { .. });
                            if tx.send(ControlMsg::Map(Box::new(msg))).await.is_err() || goodbye {
                                return;
                            }
                        }
                        Ok(Ok(None)) => {
                            tracing::warn!("map stream ended; keeping the last map");
                            let _ = tx
                                .send(ControlMsg::Unreachable(
                                    "the coordination server closed the map stream".into(),
                                ))
                                .await;
                            break;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("map stream: {e}; keeping the last map");
                            let _ = tx.send(ControlMsg::Unreachable(e.to_string())).await;
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(
                                "map stream silent for {} s; reconnecting",
                                silence.as_secs()
                            );
                            let _ = tx
                                .send(ControlMsg::Unreachable(
                                    "the coordination server went silent".into(),
                                ))
                                .await;
                            break;
                        }
                    }
                }
            }
            Err(e) if e.is_auth() => {
                tracing::error!("control no longer accepts this node: {e}");
                let _ = tx.send(ControlMsg::SignedOut(e.to_string())).await;
                return;
            }
            Err(e) => {
                tracing::warn!("{e}; keeping the last map");
                let _ = tx.send(ControlMsg::Unreachable(e.to_string())).await;
            }
        }
        let d = backoff.next_delay();
        tracing::info!("reconnecting to control in {:.1} s", d.as_secs_f64());
        tokio::time::sleep(d).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes this node's endpoints at once, every 30 s, when the OS says the network changed,
/// when STUN saw a new address, when the gateway granted or lost a port mapping, after the map
/// stream reconnected (`streams` changes), and again after a failed update (1 s, doubling to
/// 30 s while control stays unreachable, so that a server coming back is not swamped).
async fn publish_endpoints(
    node: Following,
    tx: mpsc::Sender<ControlMsg>,
    found: Discovered,
    mut streams: tokio::sync::watch::Receiver<u64>,
) {
    let Discovered {
        mut reflexive,
        mut portmapped,
        network_changed,
    } = found;
    let mut published: Option<Vec<Endpoint>> = None;
    let mut refresh = tokio::time::interval(Duration::from_secs(30));
    let mut retry: Option<tokio::time::Instant> = None;
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            _ = refresh.tick() => {}
            _ = network_changed.notified() => {}
            Ok(()) = reflexive.changed() => {}
            Ok(()) = portmapped.changed() => {}
            Ok(()) = streams.changed() => published = None,
            _ = async { tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)).await },
                if retry.is_some() => {}
        }
        let seen = reflexive.borrow_and_update().clone();
        let mapped = portmapped
            .borrow_and_update()
            .mapped
            .as_ref()
            .map(|m| m.external);
        retry = None;
        match publish(&node, mapped, &seen, &mut published).await {
            Ok(Some(eps)) => {
                backoff.reset();
                if tx.send(ControlMsg::Endpoints(eps)).await.is_err() {
                    return;
                }
            }
            Ok(None) => backoff.reset(),
            Err(()) => {
                let wait = backoff.next_delay();
                tracing::info!("publishing endpoints again in {:.1} s", wait.as_secs_f64());
                retry = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// Sends this node's endpoints (and disco key) when they differ from what was last published;
/// the endpoints if they were sent, `Err` if the server could not be told: the interface addresses, the gateway's port mapping
/// (`mapped`), then the addresses STUN servers saw (`reflexive`).
async fn publish(
    node: &Following,
    mapped: Option<SocketAddr>,
    reflexive: &[SocketAddr],
    published: &mut Option<Vec<Endpoint>>,
) -> Result<Option<Vec<Endpoint>>, ()> {
    let toward = control_ip(node.client.base_url()).await;
    let local = tokio::task::spawn_blocking({
        let skip: Vec<IpAddr> = node.reg.addresses.clone();
        let port = node.port;
        move || endpoints::local(port, toward, &skip)
    })
    .await
    .unwrap_or_default();
    let eps = endpoints::merge(local, mapped, reflexive);
    if published.as_ref() == Some(&eps) {
        return Ok(None);
    }
    let upd = NodeUpdate {
        endpoints: Some(eps.clone()),
        home_relay: None,
        disco_key: Some(node.disco_key),
        tags: None,
        advertised_routes: None,
    };
    match node.client.update(&node.reg.node_token, &upd).await {
        Ok(_) => {
            tracing::info!(endpoints = ?eps, "endpoints published");
            *published = Some(eps.clone());
            Ok(Some(eps))
        }
        Err(e) => {
            tracing::warn!("publishing endpoints: {e}");
            Err(())
        }
    }
}

/// The coordination server's address, to find the local address facing it.
async fn control_ip(url: &str) -> Option<IpAddr> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = u.port_or_known_default()?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.ok()?;
    #[allow(clippy::let_and_return)] // the iterator borrows `host`, which must outlive it
    let first = addrs.next().map(|a| a.ip());
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A coordination server on loopback whose map stream answers at once with a keepalive
    /// line, and which never answers an endpoint update (as over a lossy link); it counts the
    /// updates it was sent.
    async fn server_that_never_answers_updates() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let updates = Arc::new(AtomicUsize::new(0));
        let seen = updates.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if head.starts_with(b"GET /api/v1/map") {
                        // The stream's head at once, its first line a moment later (when the
                        // node is already publishing its endpoints).
                        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                        let _ = conn.write_all(head.as_bytes()).await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let line = "{\"type\":\"keepalive\"}\n";
                        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                        let _ = conn.write_all(chunk.as_bytes()).await;
                    } else if head.starts_with(b"PATCH /api/v1/node") {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    // Held open, unanswered.
                    let _ = conn.read(&mut buf).await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
            }
        });
        (url, updates)
    }

    #[tokio::test]
    async fn an_unanswered_update_does_not_hold_up_the_map() {
        let (url, updates) = server_that_never_answers_updates().await;
        let client = ControlClient::new(&url, None).unwrap();
        let reg = Registration {
            control_url: url,
            node_key: PrivateKey::from_bytes([7; 32]).public_key(),
            node_id: "n1".into(),
            name: "a".into(),
            addresses: vec![],
            node_token: "token".into(),
            expires_at: None,
        };
        let (_reflexive_tx, reflexive) = tokio::sync::watch::channel(Vec::new());
        let (_portmap_tx, portmapped) =
            tokio::sync::watch::channel(pinhole_portmap::State::default());
        let (tx, mut rx) = mpsc::channel(16);
        let node = Following {
            client,
            reg,
            disco_key: PrivateKey::from_bytes([8; 32]).public_key(),
            port: 41641,
        };
        let task = tokio::spawn(follow(
            node,
            tx,
            Discovered {
                reflexive,
                portmapped,
                network_changed: Arc::new(tokio::sync::Notify::new()),
            },
        ));
        let msg = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(
            matches!(msg, Ok(Some(ControlMsg::Map(ref m))) if **m == MapMessage::Keepalive),
            "the map's first line should arrive while the update hangs: {msg:?}"
        );
        // The update was sent, and is still unanswered.
        let t0 = std::time::Instant::now();
        while updates.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(updates.load(Ordering::SeqCst) >= 1, "no update was sent");
        task.abort();
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
        for _ in 0..10 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(capped <= Duration::from_secs(36) && capped >= Duration::from_secs(24));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
