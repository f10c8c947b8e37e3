//! Linux with systemd-resolved (current desktops): pinholed's server set as the DNS server of
//! the tunnel's link over resolved's D-Bus API, the suffix as that link's search domain (so
//! `nas` and `nas.SUFFIX` go to it) and the link never the default route (every other name
//! stays with the system's resolvers). Reverted with RevertLink on down; when pinholed dies
//! the link goes with the TUN device and resolved forgets it by itself.
//!
//! The D-Bus calls run on a task of their own: `apply` and `revert` hand it the wanted state
//! and return at once; how it went shows in `describe`.

use super::{DnsConfig, OsDns};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use zbus::Connection;

const DESTINATION: &str = "org.freedesktop.resolve1";
const PATH: &str = "/org/freedesktop/resolve1";
const MANAGER: &str = "org.freedesktop.resolve1.Manager";
/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the task should make true: a link configured, or none.
type Wanted = Option<(DnsConfig, String)>;

/// The handle the shell holds.
pub struct Resolved {
    wanted: watch::Sender<Wanted>,
    /// What the task last managed, in words.
    state: Arc<Mutex<String>>,
}

impl Resolved {
    /// Whether systemd-resolved answers on the system bus (then it is the way to configure
    /// DNS here).
    pub async fn present() -> bool {
        let probe = async {
            let c = Connection::system().await.ok()?;
            let reply = c
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "NameHasOwner",
                    &DESTINATION,
                )
                .await
                .ok()?;
            reply.body().deserialize::<bool>().ok()
        };
        tokio::time::timeout(CALL_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Starts the task that talks to resolved.
    pub fn start() -> Self {
        let (wanted, rx) = watch::channel(None);
        let state = Arc::new(Mutex::new("systemd-resolved (not changed)".to_string()));
        tokio::spawn(run(rx, state.clone()));
        Self { wanted, state }
    }
}

impl OsDns for Resolved {
    fn apply(&mut self, cfg: &DnsConfig) -> Result<(), super::OsDnsError> {
        let Some(link) = cfg.interface.clone() else {
            return Err(super::OsDnsError::Write(
                "systemd-resolved".into(),
                std::io::Error::other("the tunnel has no device yet"),
            ));
        };
        self.wanted.send_if_modified(|w| {
            let next = Some((cfg.clone(), link));
            let changed = *w != next;
            *w = next;
            changed
        });
        Ok(())
    }

    fn revert(&mut self) -> Result<(), super::OsDnsError> {
        self.wanted.send_if_modified(|w| w.take().is_some());
        Ok(())
    }

    fn describe(&self) -> String {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "systemd-resolved".to_string())
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        // resolved sends pinholed only the account's names; anything else asked of it
        // directly goes where the system's resolv.conf says (resolved's own stub).
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| crate::platform::resolvers::nameservers(&t))
            .unwrap_or_default()
    }
}

/// Applies each wanted state as it comes; the link configured last is reverted first when
/// another replaces it.
async fn run(mut rx: watch::Receiver<Wanted>, state: Arc<Mutex<String>>) {
    let mut configured: Option<u32> = None;
    loop {
        let wanted = rx.borrow_and_update().clone();
        let said = match wanted {
            Some((cfg, link)) => match configure(&cfg, &link, &mut configured).await {
                Ok(()) => format!(
                    "systemd-resolved: {} for .{} on {link}",
                    cfg.server, cfg.suffix
                ),
                Err(e) => {
                    tracing::warn!("systemd-resolved refused the tunnel's DNS: {e}");
                    format!("not configured: systemd-resolved: {e}")
                }
            },
            None => match configured.take() {
                Some(index) => match revert_link(index).await {
                    Ok(()) => "systemd-resolved (not changed)".to_string(),
                    Err(e) => {
                        tracing::warn!("systemd-resolved: reverting the link: {e}");
                        format!("systemd-resolved: reverting failed: {e}")
                    }
                },
                None => "systemd-resolved (not changed)".to_string(),
            },
        };
        if let Ok(mut s) = state.lock() {
            *s = said;
        }
        if rx.changed().await.is_err() {
            // The daemon is gone: put the link back if it still exists.
            if let Some(index) = configured {
                let _ = revert_link(index).await;
            }
            return;
        }
    }
}

async fn configure(
    cfg: &DnsConfig,
    link: &str,
    configured: &mut Option<u32>,
) -> Result<(), String> {
    let index = if_index(link).ok_or_else(|| format!("no network device called {link}"))?;
    if let Some(old) = configured.filter(|old| *old != index) {
        let _ = revert_link(old).await;
    }
    let (family, bytes) = match cfg.server {
        IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
    };
    let idx = i32::try_from(index).map_err(|_| "a device index out of range".to_string())?;
    call("SetLinkDNS", &(idx, vec![(family, bytes)])).await?;
    // A search domain (not only a routing one): bare names are completed with it too.
    call("SetLinkDomains", &(idx, vec![(cfg.suffix.clone(), false)])).await?;
    call("SetLinkDefaultRoute", &(idx, false)).await?;
    *configured = Some(index);
    tracing::info!(device = %link, server = %cfg.server, suffix = %cfg.suffix, "systemd-resolved sends the account's names to pinholed");
    Ok(())
}

async fn revert_link(index: u32) -> Result<(), String> {
    let idx = i32::try_from(index).map_err(|_| "a device index out of range".to_string())?;
    match call("RevertLink", &(idx,)).await {
        // The device went first (down removes it): resolved forgot the link with it.
        Err(e) if e.contains("NoSuchLink") => Ok(()),
        r => r,
    }
}

/// One method call on resolved's manager.
async fn call<B>(method: &str, body: &B) -> Result<(), String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let go = async {
        let c = Connection::system().await.map_err(|e| e.to_string())?;
        c.call_method(Some(DESTINATION), PATH, Some(MANAGER), method, body)
            .await
            .map(|_| ())
            .map_err(|e| format!("{method}: {e}"))
    };
    tokio::time::timeout(CALL_TIMEOUT, go)
        .await
        .map_err(|_| format!("{method}: no answer in {} s", CALL_TIMEOUT.as_secs()))?
}

/// The index of network device `name`.
fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
