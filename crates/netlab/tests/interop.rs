//! pinholed against stock WireGuard (Debian's wireguard-go configured with `wg setconf`):
//! the handshake works whichever side starts it, and pings come back.

mod common;

use common::*;
use pinhole_netlab::skip_without_root;
use pinhole_netlab::stock::{self, Implementation};

/// Debian's wireguard-go, from the PATH.
fn wireguard_go() -> Implementation {
    Implementation::WireguardGo("wireguard-go".into())
}

#[test]
fn pinholed_initiates_to_wireguard_go() {
    if skip_without_root("pinholed_initiates_to_wireguard_go") {
        return;
    }
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    let ifname =
        stock::start(&mut lab, "b", &wireguard_go(), &b, &a, false).expect("starting wireguard-go");
    let pa = start_pinholed(&mut lab, "a", &config(&a, &b, true));
    assert!(
        ping(&lab, "a", b.v4),
        "pinholed → wireguard-go over IPv4\n{}",
        pa.log_text()
    );
    assert!(ping(&lab, "a", b.v6), "pinholed → wireguard-go over IPv6");
    assert!(
        ping(&lab, "b", a.v4),
        "wireguard-go → pinholed, same session"
    );
    assert!(
        stock::has_handshake(&lab, "b", &ifname),
        "wg show reports the handshake"
    );
}

#[test]
fn wireguard_go_initiates_to_pinholed() {
    if skip_without_root("wireguard_go_initiates_to_pinholed") {
        return;
    }
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    // pinholed does not know where the peer is: it must answer the handshake and learn it.
    let pa = start_pinholed(&mut lab, "a", &config(&a, &b, false));
    let ifname =
        stock::start(&mut lab, "b", &wireguard_go(), &b, &a, true).expect("starting wireguard-go");
    assert!(
        ping(&lab, "b", a.v4),
        "wireguard-go → pinholed over IPv4\n{}",
        pa.log_text()
    );
    assert!(ping(&lab, "b", a.v6), "wireguard-go → pinholed over IPv6");
    assert!(
        ping(&lab, "a", b.v4),
        "pinholed answers on the learnt endpoint"
    );
    assert!(stock::has_handshake(&lab, "b", &ifname));
    assert!(pa.log_text().contains("handshake completed"));
}
