//! Installs the Debian packages the lab needs when they are missing.

use anyhow::{bail, Result};
use std::process::Command;

/// (command that must exist, Debian package that provides it)
pub const LAB: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("wireguard-go", "wireguard-go"),
    ("wg", "wireguard-tools"),
    // A router that grants port mappings (UPnP IGD, NAT-PMP, PCP): the `+upnp` profiles.
    ("miniupnpd", "miniupnpd-nftables"),
];

/// What the test suite needs on top of the lab: a PostgreSQL server for the control API tests,
/// a third-party STUN server (coturn) for netcheck, curl to approve a sign-in like a browser,
/// dig to ask a node's DNS server, dnsmasq (the binary only: `dnsmasq-base` starts no
/// service) as the lab's upstream resolver, and dbus-daemon for a lab's own system bus.
pub const TEST: &[(&str, &str)] = &[
    ("/usr/lib/postgresql/*/bin/initdb", "postgresql"),
    ("turnserver", "coturn"),
    ("curl", "curl"),
    ("dig", "bind9-dnsutils"),
    ("dnsmasq", "dnsmasq-base"),
    // The lab's private D-Bus system bus, for systemd-resolved (downloaded by its test, never
    // installed: the package would take over the machine's resolv.conf).
    ("dbus-daemon", "dbus"),
];

/// What the desktop app needs to build (Tauri on WebKitGTK, the tray through libayatana) and its
/// web UI (Node and npm); paths stand for libraries, found by their pkg-config files.
pub const APP: &[(&str, &str)] = &[
    ("pkg-config", "pkg-config"),
    (
        "/usr/lib/*/pkgconfig/webkit2gtk-4.1.pc",
        "libwebkit2gtk-4.1-dev",
    ),
    (
        "/usr/lib/*/pkgconfig/ayatana-appindicator3-0.1.pc",
        "libayatana-appindicator3-dev",
    ),
    ("/usr/lib/*/pkgconfig/librsvg-2.0.pc", "librsvg2-dev"),
    ("node", "nodejs"),
    ("npm", "npm"),
    // Its end-to-end test: a display, a session bus, WebKit's WebDriver (tauri-driver, which
    // drives the app through it, is installed with cargo).
    ("Xvfb", "xvfb"),
    ("dbus-daemon", "dbus-daemon"),
    ("WebKitWebDriver", "webkit2gtk-driver"),
];

/// What the throughput benchmark needs on top of the lab.
pub const BENCH: &[(&str, &str)] = &[("iperf3", "iperf3")];

/// Whether a command is on the PATH, or (for an absolute path, which may hold a glob) a file
/// exists there.
fn have(cmd: &str) -> bool {
    let check = if cmd.starts_with('/') {
        format!("ls -d {cmd}")
    } else {
        format!("command -v {cmd}")
    };
    Command::new("sh")
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs (with apt-get, --no-install-recommends) whatever in `needs` is missing.
pub fn ensure(needs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !pinhole_netlab::have_root() {
        bail!("missing packages {missing:?}: install them with apt-get (needs root)");
    }
    eprintln!("installing {missing:?}");
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let status = Command::new("apt-get").arg("update").envs(env).status()?;
    if !status.success() {
        bail!("apt-get update failed");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .envs(env)
        .status()?;
    if !status.success() {
        bail!("apt-get install {missing:?} failed");
    }
    Ok(())
}
