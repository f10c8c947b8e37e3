//! pinholed's side of the coordination server: signing in (auth key or device code), then
//! following the map stream for as long as the daemon runs, reconnecting with backoff, and
//! publishing this node's endpoints. Messages go to the daemon's loop over a channel; when control
//! is unreachable, nothing is sent and the loop keeps the last map.

use crate::endpoints;
use crate::identity::{self, Registration};
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
    };
    identity::save_registration(state_dir, &r)?;
    tracing::info!(name = %r.name, addresses = ?r.addresses, account = %resp.account, "registered");
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
    pub portmapped: tokio::sync::watch::Receiver<crate::portmap::State>,
    /// Told when the OS says the network changed.
    pub network_changed: std::sync::Arc<tokio::sync::Notify>,
}

/// Follows the map stream until control says goodbye or the daemon stops. What `found` holds
/// is published with the interface addresses, and again whenever it changes.
pub async fn follow(
    client: ControlClient,
    reg: Registration,
    disco_key: Key,
    port: u16,
    tx: mpsc::Sender<ControlMsg>,
    found: Discovered,
) {
    let Discovered {
        mut reflexive,
        mut portmapped,
        network_changed,
    } = found;
    let mut backoff = Backoff::new();
    let silence = Duration::from_secs(3 * MAP_KEEPALIVE_SECS);
    loop {
        match client.map(&reg.node_token).await {
            Ok(mut stream) => {
                tracing::info!("map stream connected");
                // Published afresh on every connection: the server may have lost it.
                let mut published: Option<Vec<Endpoint>> = None;
                let mut refresh = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tokio::select! {
                        r = tokio::time::timeout(silence, stream.next()) => match r {
                            Ok(Ok(Some(msg))) => {
                                backoff.reset();
                                let goodbye = matches!(msg, MapMessage::Goodbye { .. });
                                if tx.send(ControlMsg::Map(Box::new(msg))).await.is_err() || goodbye {
                                    return;
                                }
                            }
                            Ok(Ok(None)) => {
                                tracing::warn!("map stream ended; keeping the last map");
                                let _ = tx.send(ControlMsg::Unreachable("the coordination server closed the map stream".into())).await;
                                break;
                            }
                            Ok(Err(e)) => {
                                tracing::warn!("map stream: {e}; keeping the last map");
                                let _ = tx.send(ControlMsg::Unreachable(e.to_string())).await;
                                break;
                            }
                            Err(_) => {
                                tracing::warn!("map stream silent for {} s; reconnecting", silence.as_secs());
                                let _ = tx.send(ControlMsg::Unreachable("the coordination server went silent".into())).await;
                                break;
                            }
                        },
                        // Every 30 s, when the OS says the network changed, when STUN saw a
                        // new address, and when the gateway granted or lost a port mapping.
                        _ = async {
                            tokio::select! {
                                _ = refresh.tick() => {}
                                _ = network_changed.notified() => {}
                                Ok(()) = reflexive.changed() => {}
                                Ok(()) = portmapped.changed() => {}
                            }
                        } => {
                            let seen = reflexive.borrow_and_update().clone();
                            let mapped = portmapped.borrow_and_update().mapped.as_ref().map(|m| m.external);
                            if let Some(eps) = publish(&client, &reg, disco_key, port, mapped, &seen, &mut published).await {
                                let _ = tx.send(ControlMsg::Endpoints(eps)).await;
                            }
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

/// Sends this node's endpoints (and disco key) when they differ from what was last published;
/// the endpoints if they were sent: the interface addresses, the gateway's port mapping
/// (`mapped`), then the addresses STUN servers saw (`reflexive`).
async fn publish(
    client: &ControlClient,
    reg: &Registration,
    disco_key: Key,
    port: u16,
    mapped: Option<SocketAddr>,
    reflexive: &[SocketAddr],
    published: &mut Option<Vec<Endpoint>>,
) -> Option<Vec<Endpoint>> {
    let toward = control_ip(client.base_url()).await;
    let local = tokio::task::spawn_blocking({
        let skip: Vec<IpAddr> = reg.addresses.clone();
        move || endpoints::local(port, toward, &skip)
    })
    .await
    .unwrap_or_default();
    let eps = endpoints::merge(local, mapped, reflexive);
    if published.as_ref() == Some(&eps) {
        return None;
    }
    let upd = NodeUpdate {
        endpoints: Some(eps.clone()),
        home_relay: None,
        disco_key: Some(disco_key),
    };
    match client.update(&reg.node_token, &upd).await {
        Ok(_) => {
            tracing::info!(endpoints = ?eps, "endpoints published");
            *published = Some(eps.clone());
            Some(eps)
        }
        Err(e) => {
            tracing::warn!("publishing endpoints: {e}");
            None
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
