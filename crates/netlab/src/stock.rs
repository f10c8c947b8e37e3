//! Stock WireGuard peers in a lab: wireguard-go or boringtun-cli, configured with `wg setconf`.

use crate::pinhole::{setconf, Node};
use crate::{Lab, LabError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static N: AtomicU32 = AtomicU32::new(0);

/// A userspace WireGuard implementation that speaks the UAPI (`wg`) interface.
#[derive(Debug, Clone)]
pub enum Implementation {
    /// wireguard-go at the given path (or a name on the PATH: Debian's package).
    WireguardGo(String),
    /// boringtun-cli at the given path.
    BoringtunCli(String),
}

/// Starts `imp` in `host` as `me` with one peer (with its endpoint if `knows_peer`), adds
/// addresses and routes, and returns the interface name (unique per process: wg's control
/// sockets live in a shared /var/run).
pub fn start(
    lab: &mut Lab,
    host: &str,
    imp: &Implementation,
    me: &Node,
    peer: &Node,
    knows_peer: bool,
) -> Result<String, LabError> {
    let ifname = format!(
        "wg{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    );
    match imp {
        Implementation::WireguardGo(path) => {
            lab.spawn_env(host, &[path, "-f", &ifname], &[("LOG_LEVEL", "error")])?
        }
        Implementation::BoringtunCli(path) => {
            lab.spawn(host, &[path, "-f", "--disable-drop-privileges", &ifname])?
        }
    };
    let t = Duration::from_secs(5);
    let appeared = Lab::wait_for(Duration::from_secs(10), || {
        lab.run(host, &["wg", "show", &ifname], t)
            .is_ok_and(|o| o.status.success())
    });
    if !appeared {
        return Err(LabError::Timeout {
            cmd: format!("{imp:?} creating {ifname}"),
            secs: 10,
        });
    }
    let conf = setconf(me, peer, knows_peer);
    let path = lab.dir().join(format!("{ifname}.conf"));
    std::fs::write(&path, conf)?;
    let p = path.to_string_lossy().into_owned();
    let v4 = format!("{}/32", me.v4);
    let v6 = format!("{}/128", me.v6);
    let r4 = format!("{}/32", peer.v4);
    let r6 = format!("{}/128", peer.v6);
    for argv in [
        vec!["wg", "setconf", &ifname, &p],
        vec!["ip", "addr", "add", &v4, "dev", &ifname],
        vec!["ip", "addr", "add", &v6, "dev", &ifname, "nodad"],
        vec!["ip", "link", "set", &ifname, "mtu", "1420", "up"],
        vec!["ip", "route", "add", &r4, "dev", &ifname],
        vec!["ip", "-6", "route", "add", &r6, "dev", &ifname],
    ] {
        lab.run_ok(host, &argv, t)?;
    }
    Ok(ifname)
}

/// True once `wg show` reports a completed handshake on `ifname`.
pub fn has_handshake(lab: &Lab, host: &str, ifname: &str) -> bool {
    let out = lab
        .run_ok(
            host,
            &["wg", "show", ifname, "latest-handshakes"],
            Duration::from_secs(5),
        )
        .unwrap_or_default();
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|t| t > 0)
}
