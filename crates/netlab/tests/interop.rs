//! pinholed against stock WireGuard (Debian's wireguard-go configured with `wg setconf`):
//! the handshake works whichever side starts it, and pings come back.

mod common;

use common::*;
use pinhole_netlab::{skip_without_root, Lab};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static N: AtomicU32 = AtomicU32::new(0);

/// Starts wireguard-go as `b` with `conf` (wg setconf format plus our Address handling).
/// Its interface name is unique per test: wg's control sockets live in a shared /var/run.
fn start_wireguard_go(lab: &mut Lab, me: &Node, peer: &Node, endpoint: Option<String>) -> String {
    let ifname = format!(
        "wg{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    );
    lab.spawn_env("b", &["wireguard-go", "-f", &ifname], &[("LOG_LEVEL", "error")])
        .expect("starting wireguard-go (apt-get install wireguard-go)");
    let t = Duration::from_secs(5);
    let appeared = Lab::wait_for(Duration::from_secs(10), || {
        lab.run("b", &["ip", "link", "show", &ifname], t)
            .is_ok_and(|o| o.status.success())
    });
    assert!(appeared, "wireguard-go created {ifname}");
    let mut conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}/128\n",
        me.private.to_base64(),
        peer.public.to_base64(),
        peer.v4,
        peer.v6
    );
    if let Some(ep) = endpoint {
        conf.push_str(&format!("Endpoint = {ep}\n"));
    }
    let path = lab.dir().join("wg-b.conf");
    std::fs::write(&path, conf).unwrap();
    let p = path.to_str().unwrap();
    let v4 = format!("{}/32", me.v4);
    let v6 = format!("{}/128", me.v6);
    let r4 = format!("{}/32", peer.v4);
    let r6 = format!("{}/128", peer.v6);
    for argv in [
        vec!["wg", "setconf", &ifname, p],
        vec!["ip", "addr", "add", &v4, "dev", &ifname],
        vec!["ip", "addr", "add", &v6, "dev", &ifname, "nodad"],
        vec!["ip", "link", "set", &ifname, "up"],
        vec!["ip", "route", "add", &r4, "dev", &ifname],
        vec!["ip", "-6", "route", "add", &r6, "dev", &ifname],
    ] {
        lab.run_ok("b", &argv, t).expect("configuring wireguard-go");
    }
    ifname
}

fn wg_has_handshake(lab: &Lab, ifname: &str) -> bool {
    let out = lab
        .run_ok("b", &["wg", "show", ifname, "latest-handshakes"], Duration::from_secs(5))
        .unwrap_or_default();
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|t| t > 0)
}

#[test]
fn pinholed_initiates_to_wireguard_go() {
    if skip_without_root("pinholed_initiates_to_wireguard_go") {
        return;
    }
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    let ifname = start_wireguard_go(&mut lab, &b, &a, None);
    let pa = start_pinholed(
        &mut lab,
        "a",
        &config(&a, &b, 51820, Some(format!("{}:51820", b.underlay))),
    );
    assert!(ping(&lab, "a", b.v4), "pinholed → wireguard-go over IPv4\n{}", pa.log_text());
    assert!(ping(&lab, "a", b.v6), "pinholed → wireguard-go over IPv6");
    assert!(ping(&lab, "b", a.v4), "wireguard-go → pinholed, same session");
    assert!(wg_has_handshake(&lab, &ifname), "wg show reports the handshake");
}

#[test]
fn wireguard_go_initiates_to_pinholed() {
    if skip_without_root("wireguard_go_initiates_to_pinholed") {
        return;
    }
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    // pinholed does not know where the peer is: it must answer the handshake and learn it.
    let pa = start_pinholed(&mut lab, "a", &config(&a, &b, 51820, None));
    let ifname = start_wireguard_go(&mut lab, &b, &a, Some(format!("{}:51820", a.underlay)));
    assert!(ping(&lab, "b", a.v4), "wireguard-go → pinholed over IPv4\n{}", pa.log_text());
    assert!(ping(&lab, "b", a.v6), "wireguard-go → pinholed over IPv6");
    assert!(ping(&lab, "a", b.v4), "pinholed answers on the learnt endpoint");
    assert!(wg_has_handshake(&lab, &ifname));
    assert!(pa.log_text().contains("handshake completed"));
}
