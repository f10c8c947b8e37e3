//! The policy's packet filter between two engines: the receiving side decides, replies to what
//! a node opened come back, refused packets are counted on the peer that sent them.

use pinhole_engine::{Key, PeerSettings};
use pinhole_netsim::packets::{udp_payload, udp_v4};
use pinhole_netsim::{HostId, Link, Sim};
use pinhole_proto::filter::{FilterRule, PortRange};
use std::net::Ipv4Addr;
use std::time::Duration;

const DEV: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

fn peer(key: Key, ip: Ipv4Addr, endpoint: Option<std::net::SocketAddr>) -> PeerSettings {
    PeerSettings {
        public_key: key,
        preshared_key: None,
        allowed_ips: vec![format!("{ip}/32").parse().unwrap()],
        endpoint,
        candidates: Vec::new(),
        disco_key: None,
        persistent_keepalive: None,
        relay: None,
    }
}

/// A developer's laptop and a server: "dev may reach the server on 22 and 443; the server
/// reaches nobody", as control hands it to both.
fn team() -> (Sim, HostId, HostId, Key, Key) {
    let mut sim = Sim::new(7);
    sim.set_link(Link::default());
    let (k1, k2) = (sim.key(), sim.key());
    let dev = sim.add_host("192.0.2.1:51820".parse().unwrap(), k1);
    let server = sim.add_host("198.51.100.2:51820".parse().unwrap(), k2);
    let (dk, sk) = (
        sim.engine(dev).public_key(),
        sim.engine(server).public_key(),
    );
    let server_addr = sim.addr(server);
    sim.upsert_peer(dev, peer(sk, SERVER, Some(server_addr)))
        .unwrap();
    sim.upsert_peer(server, peer(dk, DEV, None)).unwrap();
    let now = sim.now();
    let server_filter = vec![FilterRule {
        src: vec![format!("{DEV}/32").parse().unwrap()],
        dst: vec![format!("{SERVER}/32").parse().unwrap()],
        ports: vec![PortRange::one(22), PortRange::one(443)],
        protos: Vec::new(),
    }];
    sim.engine(server).set_filter(Some(&server_filter), now);
    sim.engine(dev).set_filter(Some(&[]), now);
    (sim, dev, server, dk, sk)
}

fn arrived(sim: &mut Sim, h: HostId) -> Vec<Vec<u8>> {
    sim.advance(Duration::from_millis(100));
    sim.take_tun(h)
}

#[test]
fn allowed_ports_pass_others_are_refused_and_counted() {
    let (mut sim, dev, server, dk, _) = team();
    sim.send_tun(dev, &udp_v4(DEV, SERVER, 40000, 22, b"ssh"));
    sim.send_tun(dev, &udp_v4(DEV, SERVER, 40001, 443, b"https"));
    sim.send_tun(dev, &udp_v4(DEV, SERVER, 40002, 5432, b"postgres"));
    let got = arrived(&mut sim, server);
    let payloads: Vec<_> = got.iter().filter_map(|p| udp_payload(p)).collect();
    assert_eq!(payloads, vec![&b"ssh"[..], &b"https"[..]]);
    let seen_by_server = sim.engine(server).peer(&dk).unwrap();
    assert_eq!(seen_by_server.filtered_packets, 1);
    assert_eq!(seen_by_server.rx_packets, 2);

    // The server answers the developer's SSH flow: the reply comes back in, though the
    // developer's own filter lets nothing new in.
    sim.send_tun(server, &udp_v4(SERVER, DEV, 22, 40000, b"banner"));
    let got = arrived(&mut sim, dev);
    assert_eq!(
        got.iter()
            .filter_map(|p| udp_payload(p))
            .collect::<Vec<_>>(),
        vec![&b"banner"[..]]
    );
}

#[test]
fn a_node_that_ignores_its_filter_still_cannot_get_in() {
    // The server sends to the developer unasked (as a node with no filter of its own would):
    // the developer's engine refuses it, whatever the sender does.
    let (mut sim, dev, server, _, sk) = team();
    let now = sim.now();
    sim.engine(server).set_filter(None, now);
    sim.send_tun(dev, &udp_v4(DEV, SERVER, 40000, 22, b"hello"));
    assert_eq!(arrived(&mut sim, server).len(), 1);
    sim.send_tun(server, &udp_v4(SERVER, DEV, 5555, 8080, b"unasked"));
    sim.send_tun(
        server,
        &udp_v4(SERVER, DEV, 22, 40001, b"not the open flow"),
    );
    assert!(arrived(&mut sim, dev).is_empty());
    assert_eq!(sim.engine(dev).peer(&sk).unwrap().filtered_packets, 2);
}

#[test]
fn a_looser_policy_opens_the_port_at_once_and_keeps_sessions() {
    let (mut sim, dev, server, _, _) = team();
    sim.send_tun(dev, &udp_v4(DEV, SERVER, 40000, 5432, b"refused"));
    assert!(arrived(&mut sim, server).is_empty());
    let handshakes_before = sim.engine(server).peers()[0].handshakes;
    let looser = vec![FilterRule {
        src: vec![format!("{DEV}/32").parse().unwrap()],
        dst: vec![format!("{SERVER}/32").parse().unwrap()],
        ports: vec![
            PortRange::one(22),
            PortRange::one(443),
            PortRange::one(5432),
        ],
        protos: Vec::new(),
    }];
    let now = sim.now();
    sim.engine(server).set_filter(Some(&looser), now);
    sim.send_tun(dev, &udp_v4(DEV, SERVER, 40000, 5432, b"let in"));
    let got = arrived(&mut sim, server);
    assert_eq!(
        got.iter()
            .filter_map(|p| udp_payload(p))
            .collect::<Vec<_>>(),
        vec![&b"let in"[..]]
    );
    // Same WireGuard session: a policy change is not a reconnect.
    assert_eq!(sim.engine(server).peers()[0].handshakes, handshakes_before);
}
