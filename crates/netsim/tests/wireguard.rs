//! Two engines on the simulated network: handshake, IPv4 and IPv6 both ways, loss, rekey, bad input.

use pinhole_engine::{Event, Key, PeerSettings};
use pinhole_netsim::packets::{udp_payload, udp_v4, udp_v6};
use pinhole_netsim::{HostId, Link, Sim};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

const A4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0, 0, 0, 0, 0, 0, 2);

struct Pair {
    sim: Sim,
    a: HostId,
    b: HostId,
    a_key: Key,
    b_key: Key,
}

/// A knows B's endpoint; B learns A's from A's first handshake, as with a stock WireGuard server.
fn pair(seed: u64, link: Link) -> Pair {
    let mut sim = Sim::new(seed);
    sim.set_link(link);
    let (ka, kb) = (sim.key(), sim.key());
    let a = sim.add_host("192.0.2.1:51820".parse().unwrap(), ka);
    let b = sim.add_host("198.51.100.2:51820".parse().unwrap(), kb);
    let (a_key, b_key) = (sim.engine(a).public_key(), sim.engine(b).public_key());
    let now = sim.now();
    let b_addr = sim.addr(b);
    sim.engine(a)
        .upsert_peer(
            now,
            PeerSettings {
                public_key: b_key,
                preshared_key: None,
                allowed_ips: vec![
                    format!("{B4}/32").parse().unwrap(),
                    format!("{B6}/128").parse().unwrap(),
                ],
                endpoint: Some(b_addr),
                candidates: Vec::new(),
                disco_key: None,
                persistent_keepalive: None,
                relay: None,
            },
        )
        .unwrap();
    sim.engine(b)
        .upsert_peer(
            now,
            PeerSettings {
                public_key: a_key,
                preshared_key: None,
                allowed_ips: vec![
                    format!("{A4}/32").parse().unwrap(),
                    format!("{A6}/128").parse().unwrap(),
                ],
                endpoint: None,
                candidates: Vec::new(),
                disco_key: None,
                persistent_keepalive: None,
                relay: None,
            },
        )
        .unwrap();
    Pair {
        sim,
        a,
        b,
        a_key,
        b_key,
    }
}

fn handshakes(sim: &Sim, h: HostId) -> usize {
    sim.events(h)
        .iter()
        .filter(|(_, e)| matches!(e, Event::HandshakeCompleted { .. }))
        .count()
}

#[test]
fn handshake_and_packets_both_ways_v4_and_v6() {
    let Pair {
        mut sim,
        a,
        b,
        a_key,
        b_key,
    } = pair(1, Link::default());
    sim.send_tun(a, &udp_v4(A4, B4, 1000, 2000, b"hello over v4"));
    sim.advance(Duration::from_millis(100));
    let got = sim.take_tun(b);
    assert_eq!(
        got.len(),
        1,
        "the packet queued during the handshake arrives"
    );
    assert_eq!(udp_payload(&got[0]), Some(&b"hello over v4"[..]));
    assert!(handshakes(&sim, a) >= 1 && handshakes(&sim, b) >= 1);

    sim.send_tun(b, &udp_v4(B4, A4, 2000, 1000, b"reply v4"));
    sim.send_tun(b, &udp_v6(B6, A6, 2000, 1000, b"reply v6"));
    sim.send_tun(a, &udp_v6(A6, B6, 1000, 2000, b"hello v6"));
    sim.advance(Duration::from_millis(100));
    let at_a: Vec<_> = sim.take_tun(a);
    let at_b: Vec<_> = sim.take_tun(b);
    assert_eq!(at_a.len(), 2);
    assert_eq!(udp_payload(&at_a[0]), Some(&b"reply v4"[..]));
    assert_eq!(udp_payload(&at_a[1]), Some(&b"reply v6"[..]));
    assert_eq!(at_b.len(), 1);
    assert_eq!(udp_payload(&at_b[0]), Some(&b"hello v6"[..]));

    // B learnt A's endpoint from the handshake (roaming), and both count the traffic.
    let pb = sim.engine(b).peer(&a_key).unwrap();
    assert_eq!(pb.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
    assert_eq!(pb.rx_packets, 2);
    assert_eq!(pb.tx_packets, 2);
    assert_eq!(sim.engine(a).peer(&b_key).unwrap().rx_packets, 2);
}

#[test]
fn handshake_takes_one_round_trip() {
    let link = Link {
        latency: Duration::from_millis(25),
        loss: 0.0,
    };
    let Pair { mut sim, a, b, .. } = pair(2, link);
    let t0 = sim.now();
    sim.send_tun(a, &udp_v4(A4, B4, 1, 2, b"x"));
    sim.advance(Duration::from_millis(200));
    let (t, _) = sim
        .events(a)
        .iter()
        .find(|(_, e)| matches!(e, Event::HandshakeCompleted { .. }))
        .cloned()
        .expect("handshake completes");
    assert_eq!(
        t - t0,
        Duration::from_millis(50),
        "initiation + response = one RTT"
    );
    assert_eq!(sim.take_tun(b).len(), 1);
}

#[test]
fn survives_ten_percent_loss() {
    let link = Link {
        latency: Duration::from_millis(15),
        loss: 0.10,
    };
    let Pair { mut sim, a, b, .. } = pair(3, link);
    let n = 500;
    for i in 0..n {
        let msg = format!("packet {i}");
        sim.send_tun(a, &udp_v4(A4, B4, 1, 2, msg.as_bytes()));
        sim.send_tun(b, &udp_v6(B6, A6, 2, 1, msg.as_bytes()));
        sim.advance(Duration::from_millis(20));
    }
    sim.advance(Duration::from_secs(1));
    assert!(sim.lost > 50, "the link really lost packets ({})", sim.lost);
    let at_b = sim.take_tun(b);
    let at_a = sim.take_tun(a);
    // Every packet that arrived is intact and in order, and most arrive despite the loss.
    for got in [&at_b, &at_a] {
        assert!(got.len() >= n * 8 / 10, "only {} of {n} arrived", got.len());
        let mut last = None;
        for p in got.iter() {
            let text = std::str::from_utf8(udp_payload(p).unwrap()).unwrap();
            let i: usize = text.strip_prefix("packet ").unwrap().parse().unwrap();
            assert!(last < Some(i), "out of order or duplicated");
            last = Some(i);
        }
    }
}

#[test]
fn rekeys_after_rekey_time_and_keeps_flowing() {
    let Pair { mut sim, a, b, .. } = pair(4, Link::default());
    let mut received_per_window = Vec::new();
    // Ten simulated minutes of one packet per second each way.
    for _ in 0..600 {
        sim.send_tun(a, &udp_v4(A4, B4, 1, 2, b"tick"));
        sim.send_tun(b, &udp_v4(B4, A4, 2, 1, b"tock"));
        sim.advance(Duration::from_secs(1));
        received_per_window.push(sim.take_tun(b).len() + sim.take_tun(a).len());
    }
    assert!(sim.elapsed() >= Duration::from_secs(600));
    // REKEY_AFTER_TIME is 120 s: the first handshake, then about one new session per 120 s.
    let (ha, hb) = (handshakes(&sim, a), handshakes(&sim, b));
    assert!(
        (5..=7).contains(&ha) && (5..=7).contains(&hb),
        "handshakes a={ha} b={hb}"
    );
    // Packets flowed through every rekey: no second after the first lost more than one packet.
    let lost: usize = received_per_window[1..].iter().map(|&n| 2 - n.min(2)).sum();
    assert!(lost <= 6, "{lost} packets lost around rekeys");
}

#[test]
fn garbage_and_truncated_messages_are_dropped_and_counted() {
    let Pair { mut sim, a, b, .. } = pair(5, Link::default());
    sim.send_tun(a, &udp_v4(A4, B4, 1, 2, b"first"));
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.take_tun(b).len(), 1);

    let attacker = "203.0.113.9:4444".parse().unwrap();
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![1, 0, 0, 0],
        vec![4, 0, 0, 0, 1, 2, 3],
        vec![2, 0, 0, 0, 9, 9],
        vec![3; 64],
        vec![0xff; 1500],
    ];
    junk.extend((0..200u32).map(|i| {
        (0..(i % 180) as u8)
            .map(|j| j.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }));
    // A data message with a valid-looking header but a wrong tag.
    let mut forged = vec![4u8, 0, 0, 0];
    forged.extend_from_slice(&(1u32 << 8).to_le_bytes());
    forged.extend_from_slice(&[0u8; 8 + 16 + 32]);
    junk.push(forged);
    for j in &junk {
        sim.inject(b, attacker, j);
    }
    let stats = sim.engine(b).stats().clone();
    // Each one is dropped and counted exactly once.
    assert_eq!(
        stats.rx_invalid + stats.rx_unknown_peer,
        junk.len() as u64,
        "{stats:?}"
    );
    sim.send_tun(a, &udp_v4(A4, B4, 1, 2, b"still works"));
    sim.advance(Duration::from_millis(100));
    let got = sim.take_tun(b);
    assert_eq!(got.len(), 1);
    assert_eq!(udp_payload(&got[0]), Some(&b"still works"[..]));
}

#[test]
fn packets_from_outside_allowed_ips_are_dropped() {
    let Pair { mut sim, a, b, .. } = pair(6, Link::default());
    // A claims a source address that belongs to nobody in B's table.
    sim.send_tun(
        a,
        &udp_v4(Ipv4Addr::new(100, 64, 0, 99), B4, 1, 2, b"spoof"),
    );
    sim.advance(Duration::from_millis(100));
    assert!(sim.take_tun(b).is_empty());
    assert_eq!(sim.engine(b).stats().rx_disallowed_source, 1);
}

#[test]
fn no_route_is_counted() {
    let Pair { mut sim, a, .. } = pair(7, Link::default());
    sim.send_tun(a, &udp_v4(A4, Ipv4Addr::new(10, 9, 9, 9), 1, 2, b"nowhere"));
    sim.send_tun(a, b"not ip");
    assert_eq!(sim.engine(a).stats().tun_no_route, 1);
    assert_eq!(sim.engine(a).stats().tun_invalid, 1);
}
