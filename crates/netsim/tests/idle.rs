//! An idle engine costs nothing: its next deadline is its real next timer, not a fixed tick.

use pinhole_engine::{Engine, PeerSettings, PrivateKey};
use pinhole_netsim::packets::udp_v4;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Wake-ups (calls to `handle_timeout` at the engine's own deadline) between `from` and `until`.
fn wakeups(engine: &mut Engine, from: Instant, until: Instant) -> usize {
    let mut n = 0;
    let mut now = from;
    loop {
        let next = engine.poll_timeout().max(now);
        if next > until {
            return n;
        }
        now = next;
        engine.handle_timeout(now);
        while engine.poll_transmit().is_some() {}
        while engine.poll_relay_transmit().is_some() {}
        n += 1;
    }
}

/// A node with 100 peers in its map and no traffic wakes once, not four times a second; a
/// peer that gets a packet has WireGuard's timers run for it (handshake retries) until it has
/// been quiet for ten minutes, and then the engine is quiet again.
#[test]
fn an_idle_engine_with_100_peers_has_no_timer() {
    let start = Instant::now();
    let mut engine = Engine::new(&PrivateKey::from_bytes([1; 32]), start);
    for i in 0..100u8 {
        let key = PrivateKey::from_bytes([i.wrapping_add(2); 32]).public_key();
        engine
            .upsert_peer(
                start,
                PeerSettings {
                    public_key: key,
                    preshared_key: None,
                    allowed_ips: vec![format!("100.64.1.{i}/32").parse().unwrap()],
                    endpoint: Some(format!("192.0.2.{i}:41641").parse().unwrap()),
                    candidates: Vec::new(),
                    disco_key: None,
                    persistent_keepalive: None,
                    relay: Some("local".to_string()),
                },
            )
            .unwrap();
    }
    let minute = Duration::from_secs(60);
    let idle = wakeups(&mut engine, start, start + minute);
    assert!(idle <= 1, "{idle} wake-ups in an idle minute");
    assert_eq!(
        engine.sessions(),
        0,
        "no WireGuard state for peers that never talked"
    );

    // A packet for one peer: a handshake starts, its retries need the timers.
    let t0 = start + minute;
    let packet = udp_v4(
        Ipv4Addr::new(100, 64, 0, 1),
        Ipv4Addr::new(100, 64, 1, 7),
        5000,
        6000,
        b"hello",
    );
    engine.handle_tun(t0, &packet);
    assert!(engine.poll_timeout() <= t0 + Duration::from_millis(250));
    assert_eq!(engine.sessions(), 1);
    let busy = wakeups(&mut engine, t0, t0 + minute);
    assert!(busy >= 200, "the timers ran for the peer: {busy}");
    // Ten minutes after the last packet the engine is quiet again.
    let later = t0 + Duration::from_secs(601);
    wakeups(&mut engine, t0 + minute, later);
    let quiet = wakeups(&mut engine, later, later + minute);
    assert!(quiet <= 1, "{quiet} wake-ups in a quiet minute");
    assert_eq!(
        engine.sessions(),
        0,
        "the quiet peer's WireGuard state is gone"
    );
}
