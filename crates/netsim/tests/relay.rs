//! Two engines that know each other's endpoint and home relay: relayed where UDP is blocked,
//! direct where it works (also when the relay wins the first race), and back to the relay when
//! the direct path breaks mid-session.

use pinhole_engine::{Key, Path, PeerSettings};
use pinhole_netsim::packets::{udp_payload, udp_v4};
use pinhole_netsim::{HostId, Link, Sim};
use std::net::Ipv4Addr;
use std::time::Duration;

const A4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

struct Pair {
    sim: Sim,
    a: HostId,
    b: HostId,
    a_key: Key,
    b_key: Key,
}

/// Both sides know the other's endpoint and home relay, as from the coordination server's map.
fn pair(seed: u64, udp_latency_ms: u64, relay_latency_ms: u64) -> Pair {
    let mut sim = Sim::new(seed);
    sim.set_link(Link {
        latency: Duration::from_millis(udp_latency_ms),
        loss: 0.0,
    });
    sim.set_relay_latency(Duration::from_millis(relay_latency_ms));
    let (ka, kb) = (sim.key(), sim.key());
    let a = sim.add_host("192.0.2.1:41641".parse().unwrap(), ka);
    let b = sim.add_host("198.51.100.2:41641".parse().unwrap(), kb);
    let (a_key, b_key) = (sim.engine(a).public_key(), sim.engine(b).public_key());
    let now = sim.now();
    for (me, other, key, ip, region) in [(a, b, b_key, B4, "fra"), (b, a, a_key, A4, "nyc")] {
        let endpoint = Some(sim.addr(other));
        sim.engine(me)
            .upsert_peer(
                now,
                PeerSettings {
                    public_key: key,
                    preshared_key: None,
                    allowed_ips: vec![format!("{ip}/32").parse().unwrap()],
                    endpoint,
                    candidates: Vec::new(),
                    disco_key: None,
                    persistent_keepalive: None,
                    relay: Some(region.into()),
                },
            )
            .unwrap();
    }
    Pair {
        sim,
        a,
        b,
        a_key,
        b_key,
    }
}

/// One packet each way every 100 ms for `secs` seconds; returns how many arrived at each side.
fn traffic(p: &mut Pair, secs: u64) -> (usize, usize) {
    let (mut at_a, mut at_b) = (0, 0);
    for i in 0..secs * 10 {
        let msg = format!("{i}");
        p.sim.send_tun(p.a, &udp_v4(A4, B4, 1, 2, msg.as_bytes()));
        p.sim.send_tun(p.b, &udp_v4(B4, A4, 2, 1, msg.as_bytes()));
        p.sim.advance(Duration::from_millis(100));
        at_b += p.sim.take_tun(p.b).len();
        at_a += p.sim.take_tun(p.a).len();
    }
    (at_a, at_b)
}

#[test]
fn udp_blocked_both_sides_talk_through_their_home_relays() {
    let mut p = pair(1, 10, 30);
    p.sim.block_udp(p.a, true);
    p.sim.block_udp(p.b, true);
    p.sim.send_tun(p.a, &udp_v4(A4, B4, 1, 2, b"first"));
    p.sim.advance(Duration::from_millis(200));
    let got = p.sim.take_tun(p.b);
    assert_eq!(got.len(), 1, "the first packet arrives through the relay");
    assert_eq!(udp_payload(&got[0]), Some(&b"first"[..]));
    let (at_a, at_b) = traffic(&mut p, 10);
    assert_eq!((at_a, at_b), (100, 100), "nothing lost on the relayed path");
    // Each side sends to the other's home relay; the direct path is still probed (and fails).
    let pa = p.sim.engine(p.a).peer(&p.b_key).unwrap();
    let pb = p.sim.engine(p.b).peer(&p.a_key).unwrap();
    assert_eq!(pa.path, Path::Relayed("fra".into()));
    assert_eq!(pb.path, Path::Relayed("nyc".into()));
    assert!(p.sim.engine(p.a).stats().tx_probes >= 3);
    assert_eq!(p.sim.engine(p.a).stats().rx_invalid, 0);
}

#[test]
fn where_udp_works_the_path_is_direct_even_if_the_relay_is_faster() {
    // The relay answers first (5 ms against 20 ms): the handshake completes through it, then
    // the probes find the direct path and both sides move to it.
    let mut p = pair(2, 20, 5);
    let (at_a, at_b) = traffic(&mut p, 3);
    assert!(at_a >= 29 && at_b >= 29, "{at_a} {at_b}");
    let relayed_before = p.sim.relayed;
    let pa = p.sim.engine(p.a).peer(&p.b_key).unwrap();
    let pb = p.sim.engine(p.b).peer(&p.a_key).unwrap();
    assert_eq!(pa.path, Path::Direct("198.51.100.2:41641".parse().unwrap()));
    assert_eq!(pb.path, Path::Direct("192.0.2.1:41641".parse().unwrap()));
    let (at_a, at_b) = traffic(&mut p, 3);
    assert_eq!((at_a, at_b), (30, 30));
    assert_eq!(
        p.sim.relayed, relayed_before,
        "nothing more goes through the relay"
    );
    for h in [p.a, p.b] {
        assert_eq!(p.sim.engine(h).stats().rx_invalid, 0);
    }
}

#[test]
fn a_direct_path_that_breaks_falls_back_to_the_relay_and_recovers() {
    let mut p = pair(3, 10, 30);
    traffic(&mut p, 2);
    let direct = Path::Direct("198.51.100.2:41641".parse().unwrap());
    assert_eq!(p.sim.engine(p.a).peer(&p.b_key).unwrap().path, direct);
    // A firewall starts dropping B's UDP: after the direct path's trust runs out, the relay
    // carries the traffic.
    p.sim.block_udp(p.b, true);
    let (_, _) = traffic(&mut p, 16);
    assert_eq!(
        p.sim.engine(p.a).peer(&p.b_key).unwrap().path,
        Path::Relayed("fra".into())
    );
    let (at_a, at_b) = traffic(&mut p, 5);
    assert_eq!((at_a, at_b), (50, 50), "relayed traffic flows");
    // UDP comes back: the probes find it and the path is direct again.
    p.sim.block_udp(p.b, false);
    traffic(&mut p, 5);
    assert_eq!(p.sim.engine(p.a).peer(&p.b_key).unwrap().path, direct);
}

#[test]
fn idle_direct_peers_keep_their_path_with_heartbeats() {
    let mut p = pair(4, 10, 30);
    traffic(&mut p, 1);
    // A minute with one packet every 30 s one way only: heartbeats keep the path direct.
    for _ in 0..2 {
        p.sim.send_tun(p.a, &udp_v4(A4, B4, 1, 2, b"rare"));
        p.sim.advance(Duration::from_secs(30));
        assert!(matches!(
            p.sim.engine(p.a).peer(&p.b_key).unwrap().path,
            Path::Direct(_)
        ));
        assert!(matches!(
            p.sim.engine(p.b).peer(&p.a_key).unwrap().path,
            Path::Direct(_)
        ));
    }
}

/// Found in the NAT lab: a first packet sent before the peer's relay is known started a
/// handshake toward an endpoint that could not answer, and WireGuard tried again only after
/// REKEY_TIMEOUT (5 s). The waiting initiation now goes out on the relay as soon as it is
/// learnt, and the first packet arrives a relay round trip later.
#[test]
fn a_handshake_waiting_for_a_path_leaves_on_the_relay_as_soon_as_it_is_known() {
    let mut p = pair(7, 10, 30);
    p.sim.block_udp(p.a, true);
    p.sim.block_udp(p.b, true);
    // a knows b's endpoint only (b's home relay is not in a's map yet).
    let now = p.sim.now();
    let without_relay = PeerSettings {
        public_key: p.b_key,
        preshared_key: None,
        allowed_ips: vec![format!("{B4}/32").parse().unwrap()],
        endpoint: Some(p.sim.addr(p.b)),
        candidates: Vec::new(),
        disco_key: None,
        persistent_keepalive: None,
        relay: None,
    };
    p.sim
        .engine(p.a)
        .upsert_peer(now, without_relay.clone())
        .unwrap();
    p.sim.send_tun(p.a, &udp_v4(A4, B4, 1, 2, b"first"));
    p.sim.advance(Duration::from_millis(300));
    assert!(
        p.sim.take_tun(p.b).is_empty(),
        "UDP is blocked: nothing yet"
    );
    // The map brings b's home relay.
    p.sim
        .upsert_peer(
            p.a,
            PeerSettings {
                relay: Some("fra".into()),
                ..without_relay
            },
        )
        .unwrap();
    p.sim.advance(Duration::from_millis(200));
    let got = p.sim.take_tun(p.b);
    assert_eq!(
        got.len(),
        1,
        "the first packet arrived 200 ms after the relay was known"
    );
    assert_eq!(udp_payload(&got[0]), Some(&b"first"[..]));
    assert_eq!(p.sim.engine(p.a).stats().tx_init_resent, 1);
    let path = p.sim.engine(p.a).peer(&p.b_key).map(|s| s.path);
    assert!(matches!(path, Some(Path::Relayed(_))), "{path:?}");
}

/// Seen in the app's end-to-end test (once): the answering side's map did not name the
/// initiator's home relay yet, so its replies went to the initiator's endpoint over UDP, which
/// was blocked, and a ping through the relay got no answer. Replies now go back through the
/// relay the peer's packets came through until the map names one.
#[test]
fn replies_go_back_through_the_relay_the_peer_came_through_before_the_map_names_it() {
    let mut p = pair(8, 10, 30);
    p.sim.block_udp(p.a, true);
    p.sim.block_udp(p.b, true);
    // b knows a's endpoint only.
    let without_relay = PeerSettings {
        public_key: p.a_key,
        preshared_key: None,
        allowed_ips: vec![format!("{A4}/32").parse().unwrap()],
        endpoint: Some(p.sim.addr(p.a)),
        candidates: Vec::new(),
        disco_key: None,
        persistent_keepalive: None,
        relay: None,
    };
    p.sim.upsert_peer(p.b, without_relay.clone()).unwrap();
    p.sim.send_tun(p.a, &udp_v4(A4, B4, 1, 2, b"ping"));
    p.sim.advance(Duration::from_millis(200));
    assert_eq!(
        p.sim.take_tun(p.b).len(),
        1,
        "a's packet came through the relay"
    );
    p.sim.send_tun(p.b, &udp_v4(B4, A4, 2, 1, b"pong"));
    p.sim.advance(Duration::from_millis(100));
    let got = p.sim.take_tun(p.a);
    assert_eq!(got.len(), 1, "b's reply went back through the relay");
    assert_eq!(udp_payload(&got[0]), Some(&b"pong"[..]));
    let path = p.sim.engine(p.b).peer(&p.a_key).map(|s| s.path);
    assert_eq!(path, Some(Path::Relayed("fra".into())));
    // The map's home relay wins once it names one; a map update without one keeps the way
    // that works.
    p.sim.upsert_peer(p.b, without_relay.clone()).unwrap();
    let path = p.sim.engine(p.b).peer(&p.a_key).map(|s| s.path);
    assert_eq!(path, Some(Path::Relayed("fra".into())));
    p.sim
        .upsert_peer(
            p.b,
            PeerSettings {
                relay: Some("nyc".into()),
                ..without_relay
            },
        )
        .unwrap();
    let path = p.sim.engine(p.b).peer(&p.a_key).map(|s| s.path);
    assert_eq!(path, Some(Path::Relayed("nyc".into())));
    let (at_a, at_b) = traffic(&mut p, 2);
    assert_eq!((at_a, at_b), (20, 20));
}

/// A peer's WireGuard state exists only while it talks: none before the first packet, gone
/// ten minutes after the last authentic packet (the direct path's heartbeats go on for two
/// minutes after the traffic; the keys expired at nine), made again by the next packet, which
/// arrives (a new handshake) as the first one did.
#[test]
fn a_pair_quiet_for_ten_minutes_talks_again_on_new_sessions() {
    let mut p = pair(9, 10, 30);
    for h in [p.a, p.b] {
        assert_eq!(p.sim.engine(h).sessions(), 0);
    }
    let (at_a, at_b) = traffic(&mut p, 2);
    assert_eq!((at_a, at_b), (20, 20));
    for h in [p.a, p.b] {
        assert_eq!(p.sim.engine(h).sessions(), 1);
    }
    p.sim.advance(Duration::from_secs(11 * 60));
    for h in [p.a, p.b] {
        assert_eq!(
            p.sim.engine(h).sessions(),
            1,
            "heartbeats until two minutes ago"
        );
    }
    p.sim.advance(Duration::from_secs(2 * 60));
    for h in [p.a, p.b] {
        assert_eq!(
            p.sim.engine(h).sessions(),
            0,
            "dropped after ten quiet minutes"
        );
    }
    p.sim.send_tun(p.a, &udp_v4(A4, B4, 1, 2, b"again"));
    p.sim.advance(Duration::from_millis(200));
    let got = p.sim.take_tun(p.b);
    assert_eq!(got.len(), 1, "the first packet after the quiet arrives");
    assert_eq!(udp_payload(&got[0]), Some(&b"again"[..]));
    let (at_a, at_b) = traffic(&mut p, 2);
    assert_eq!((at_a, at_b), (20, 20));
    for h in [p.a, p.b] {
        assert_eq!(p.sim.engine(h).stats().rx_invalid, 0);
    }
}

fn local(addr: std::net::SocketAddr) -> pinhole_engine::Endpoint {
    pinhole_engine::Endpoint::new(addr, pinhole_engine::EndpointKind::Local)
}

/// Plain WireGuard peers (no disco keys): both sides know each other first at an address that does not answer (a LAN address seen
/// from another network) and have the working one among the peer's other published
/// endpoints: the handshake and the probes try every candidate, and the path goes direct on
/// the one that answers. Knowing only the first endpoint, the pair stays relayed.
#[test]
fn every_published_endpoint_is_tried_and_the_one_that_answers_wins() {
    let run = |with_candidates: bool| {
        let mut p = pair(11, 10, 30);
        let dead: std::net::SocketAddr = "203.0.113.9:41641".parse().unwrap();
        for (me, other, key, ip, region) in [
            (p.a, p.b, p.b_key, B4, "fra"),
            (p.b, p.a, p.a_key, A4, "nyc"),
        ] {
            let real = p.sim.addr(other);
            p.sim
                .upsert_peer(
                    me,
                    PeerSettings {
                        public_key: key,
                        preshared_key: None,
                        allowed_ips: vec![format!("{ip}/32").parse().unwrap()],
                        endpoint: Some(dead),
                        candidates: if with_candidates {
                            vec![local(dead), local(real)]
                        } else {
                            vec![local(dead)]
                        },
                        disco_key: None,
                        persistent_keepalive: None,
                        relay: Some(region.into()),
                    },
                )
                .unwrap();
        }
        let (at_a, at_b) = traffic(&mut p, 5);
        let path = p.sim.engine(p.a).peer(&p.b_key).map(|s| s.path);
        (at_a, at_b, path, p.sim.addr(p.b))
    };
    let (at_a, at_b, path, b_addr) = run(true);
    assert!(
        at_a >= 45 && at_b >= 45,
        "traffic got through: {at_a}/{at_b} of 50"
    );
    assert_eq!(path, Some(Path::Direct(b_addr)));
    let (_, _, path, _) = run(false);
    assert!(matches!(path, Some(Path::Relayed(_))), "{path:?}");
}
