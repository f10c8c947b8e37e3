//! What the `dns` fuzz target (`fuzz/`, `cargo xtask fuzz dns`) runs on each input: the bytes
//! as a query to the node's DNS server, or as a resolver's answer to a query it forwarded.
//! Nothing may panic; every answer is a well-formed response carrying the query's id; and the
//! input changes nothing else: afterwards a good question is still answered from the zone.
//! A unit test replays the committed corpus (`fuzz/corpus/dns/`).

use crate::server::Server;
use crate::zone::{Zone, ZoneNode};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::net::SocketAddr;
use std::time::Instant;

/// The fuzz target's body. An input whose first byte is odd is a resolver's answer (to a
/// query forwarded just before, its id patched in); otherwise the rest is a query.
pub fn dns(data: &[u8]) {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let upstream: SocketAddr = ([192, 0, 2, 53], 53).into();
    let zone = match Zone::new(
        "pinhole.internal",
        [ZoneNode {
            name: "nas".into(),
            addresses: vec![[100, 64, 0, 3].into()],
        }],
        vec![ipnet::IpNet::from(ipnet::Ipv4Net::from(
            std::net::Ipv4Addr::new(100, 64, 0, 0),
        ))],
        1,
    ) {
        Ok(z) => z,
        Err(e) => panic!("the fuzz zone is refused: {e}"),
    };
    let mut server: Server<u8> = Server::new(zone, vec![upstream]);
    if how & 1 == 0 {
        server.handle_query(now, 1, rest);
        if let Some((_, answer)) = server.poll_reply() {
            let m = match Message::from_vec(&answer) {
                Ok(m) => m,
                Err(e) => panic!("an answer that does not decode: {e}"),
            };
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.id.to_be_bytes(), [rest[0], rest[1]]);
        }
    } else {
        server.handle_query(now, 1, &question(0x0101, "example.com."));
        let Some((_, sent)) = server.poll_upstream() else {
            panic!("a question for another name was not forwarded");
        };
        let mut answer = rest.to_vec();
        if answer.len() >= 2 {
            answer[..2].copy_from_slice(&sent[..2]);
        }
        server.handle_upstream(upstream, &answer);
        if let Some((_, back)) = server.poll_reply() {
            assert_eq!(back[..2], [1, 1], "an answer handed back under another id");
        }
    }
    // Whatever came before, the zone still answers.
    while server.poll_reply().is_some() {}
    server.handle_query(now, 2, &question(0x0202, "nas.pinhole.internal."));
    let answer = server.poll_reply().map(|(_, b)| Message::from_vec(&b));
    match answer {
        Some(Ok(m))
            if m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1 => {}
        other => panic!("the zone no longer answers: {other:?}"),
    }
}

fn question(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    if let Ok(n) = Name::from_ascii(name) {
        m.add_query(Query::query(n, RecordType::A));
    }
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// Every input in the committed corpus, and every crash the fuzzer found (kept there),
    /// still runs cleanly.
    #[test]
    fn the_dns_corpus_replays_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/dns");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus of dns ({}): {e}", dir.display()));
        let mut inputs = 0;
        for e in entries {
            let e = e.expect("a corpus entry");
            let data = std::fs::read(e.path()).expect("a corpus file");
            super::dns(&data);
            inputs += 1;
        }
        assert!(inputs >= 20, "the corpus of dns has {inputs} inputs");
    }
}
