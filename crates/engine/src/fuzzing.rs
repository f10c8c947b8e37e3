//! What the `datagram` fuzz target (`fuzz/`, `cargo xtask fuzz datagram`) runs on each input:
//! one datagram into an engine that has a peer, the way the daemon's socket and relay hand
//! them in — raw, or as a disco packet sealed by the peer (so the fuzzer reaches the decoder
//! and the discovery logic behind the box). Nothing may panic, and the input changes nothing
//! else: afterwards the engine still answers the peer's ping with a pong that names the ping's
//! source. A unit test replays the committed corpus (`fuzz/corpus/datagram/`).

use crate::{Endpoint, EndpointKind, Engine, PeerSettings, PrivateKey, Transmit};
use pinhole_proto::disco::{DiscoBox, Message, TxId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ping sent after the input, and the nonce it is sealed with (never a fuzzed one: the
/// fuzzed packets use nonce 0).
const PROBE_TX: TxId = TxId([9; 12]);
const PROBE_NONCE: [u8; 24] = [9; 24];

/// The fuzz target's body. The first byte says how the rest arrives: 0 raw on UDP from the
/// peer's endpoint, 1 raw from the peer through the relay, 2 as disco plaintext sealed by the
/// peer and sent on UDP, 3 the same through the relay.
pub fn datagram(data: &[u8]) {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let node = PrivateKey::from_bytes([5; 32]);
    let disco = PrivateKey::from_bytes([7; 32]);
    let peer = PrivateKey::from_bytes([6; 32]);
    let peer_disco = PrivateKey::from_bytes([8; 32]);
    let from: SocketAddr = ([192, 0, 2, 2], 41641).into();
    let region: Arc<str> = Arc::from("r1");

    let mut engine = Engine::new(&node, now);
    engine.set_disco_key(disco.clone());
    engine.seed_disco_rng(1);
    let settings = PeerSettings {
        public_key: peer.public_key(),
        preshared_key: None,
        allowed_ips: vec!["100.64.0.2/32".parse().expect("a literal network")],
        endpoint: None,
        candidates: vec![Endpoint::new(from, EndpointKind::Stun)],
        disco_key: Some(peer_disco.public_key()),
        persistent_keepalive: None,
        relay: Some(region.to_string()),
    };
    if let Err(e) = engine.upsert_peer(now, settings) {
        panic!("the fuzz engine's peer is refused: {e}");
    }
    let peer_box = DiscoBox::new(&peer_disco, &disco.public_key());
    let sealed;
    let packet = if how & 2 == 0 {
        rest
    } else {
        sealed = peer_box.seal_plaintext([0; 24], rest);
        &sealed
    };
    if how & 1 == 0 {
        engine.handle_network(now, from, packet);
    } else {
        engine.handle_relay(now, &region, peer.public_key(), packet);
    }
    drain(&mut engine);
    let later = now + Duration::from_millis(1500);
    engine.handle_timeout(later);
    drain(&mut engine);

    let ping = Message::Ping {
        tx: PROBE_TX,
        node_key: peer.public_key(),
    };
    engine.handle_network(later, from, &peer_box.seal(PROBE_NONCE, &ping));
    let pong = drain(&mut engine)
        .into_iter()
        .filter(|t| t.dst == from)
        .find_map(|t| peer_box.open(&t.payload).ok());
    assert_eq!(
        pong,
        Some(Message::Pong {
            tx: PROBE_TX,
            observed: from
        }),
        "after the input the engine no longer answers its peer's ping"
    );
}

/// Everything the engine wants sent, events and TUN packets dropped (they are not checked).
fn drain(engine: &mut Engine) -> Vec<Transmit> {
    let mut out = Vec::new();
    while let Some(t) = engine.poll_transmit() {
        out.push(t);
    }
    while engine.poll_relay_transmit().is_some() {}
    while engine.poll_tun().is_some() {}
    while engine.poll_event().is_some() {}
    while engine.poll_socket_request().is_some() {}
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input in the committed corpus, and every crash the fuzzer found (kept there),
    /// runs through the target again.
    #[test]
    fn the_datagram_corpus_replays_cleanly() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/datagram");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus of datagram ({}): {e}", dir.display()));
        let mut inputs = 0;
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("a corpus file");
            datagram(&data);
            inputs += 1;
        }
        assert!(inputs >= 20, "the corpus of datagram has {inputs} inputs");
    }

    /// A ping sealed by the peer, a lone mode byte and nothing at all leave the engine
    /// answering.
    #[test]
    fn well_formed_and_empty_inputs_keep_the_engine_answering() {
        let mut ping = vec![2u8, 1, 0];
        ping.extend_from_slice(&[3; 12]);
        ping.extend_from_slice(&PrivateKey::from_bytes([6; 32]).public_key().0);
        datagram(&ping);
        datagram(&[0]);
        datagram(&[]);
    }
}
