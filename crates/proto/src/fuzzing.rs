//! What the fuzz targets (`fuzz/`, `cargo xtask fuzz`) run on each input: every parser that
//! reads bytes from the network or another process, with the properties that must hold for any
//! input — no panic, and what parses re-encodes to the same thing. The same functions replay the
//! committed corpus (`fuzz/corpus/TARGET/`) in a unit test, so every input the fuzzer ever kept,
//! and every crash it found, stays a regression test of `cargo test`.

use crate::key::{Key, PrivateKey};
use crate::relay::{self, Decoder, Frame};

/// A fuzz target's body: takes any bytes, panics only when a property is broken.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: (name, function).
#[cfg(feature = "serde")]
pub const TARGETS: &[(&str, Target)] = &[
    ("stun", stun),
    ("relay_frames", relay_frames),
    ("relay_key_proof", relay_key_proof),
    ("ipc", ipc),
    ("wgconf", wgconf),
    ("control_api", control_api),
    ("disco", disco),
];

/// Disco: a message's plaintext decodes without panicking, and what decodes re-encodes to the
/// same bytes; a sealed packet opens only with the right key, to the same message, and any
/// input as a packet is refused or opens to a message that re-encodes (never a panic).
///
/// The boxes are made once (each is an X25519 agreement: made per input, they were most of
/// the target's time, 549 inputs a second in a 10-minute run).
pub fn disco(data: &[u8]) {
    use crate::disco::{decode, encode, DiscoBox};
    use std::sync::OnceLock;
    static BOXES: OnceLock<[DiscoBox; 3]> = OnceLock::new();
    let [seal_box, open_box, stranger] = BOXES.get_or_init(|| {
        let key = |b: u8| PrivateKey::from_bytes([b; 32]);
        [
            DiscoBox::new(&key(1), &key(2).public_key()),
            DiscoBox::new(&key(2), &key(1).public_key()),
            DiscoBox::new(&key(4), &key(3).public_key()),
        ]
    });
    if let Ok(m) = decode(data) {
        assert_eq!(encode(&m), data, "{m:?} re-encoded differently");
        let sealed = seal_box.seal([7; 24], &m);
        assert_eq!(open_box.open(&sealed), Ok(m));
    }
    if let Ok(m) = stranger.open(data) {
        // Only a forged box could open here: the fuzzer cannot forge Poly1305.
        panic!("an arbitrary input opened as {m:?}");
    }
}

/// STUN: parsing never panics; what parses was recognised as STUN; the answer a server would
/// send to a request parses back with the same transaction and address.
pub fn stun(data: &[u8]) {
    use crate::stun::Message;
    let Ok(m) = crate::stun::parse(data) else {
        return;
    };
    assert!(crate::stun::is_stun(data));
    if let Message::BindingRequest {
        tx, fingerprint, ..
    } = m
    {
        let seen: std::net::SocketAddr = "192.0.2.1:3478".parse().expect("a literal address");
        let answer = crate::stun::binding_success(tx, seen, None, None, fingerprint);
        match crate::stun::parse(&answer) {
            Ok(Message::BindingSuccess {
                tx: back,
                mapped: Some(addr),
                ..
            }) => {
                assert_eq!(back, tx);
                assert_eq!(addr, seen);
            }
            other => panic!("our own answer parsed as {other:?}"),
        }
    }
}

/// Relay frames: the decoder gives the same frames however the stream is cut, a bad frame is
/// an error (never a panic), and each frame re-encodes to bytes that decode to itself.
pub fn relay_frames(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_all(&[stream]);
    let at = usize::from(cut).min(stream.len());
    let (a, b) = stream.split_at(at);
    assert_eq!(decode_all(&[a, b]), whole, "cut at {at}");
    for f in whole.0 {
        let mut d = Decoder::default();
        d.push(&f.to_bytes());
        assert_eq!(d.next_frame(), Ok(Some(f)));
    }
}

/// Frames decoded from `parts` pushed in turn, and whether the stream ended in an error.
fn decode_all(parts: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut d = Decoder::default();
    let mut frames = Vec::new();
    for p in parts {
        d.push(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

/// Relay key proof: a client-info frame's key and proof checked against a fixed relay key and
/// challenge never pass unless made with the key's private half (the input cannot be).
pub fn relay_key_proof(data: &[u8]) {
    if data.len() < 64 {
        return;
    }
    let server = PrivateKey::from_bytes([0x42; 32]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&data[..32]);
    let mut proof = [0u8; 32];
    proof.copy_from_slice(&data[32..64]);
    let challenge = [0x17; 32];
    assert!(!relay::verify_key_proof(
        &server,
        &challenge,
        &Key(key),
        &proof
    ));
    // The frame carrying them decodes like any other.
    if let Ok(f) = Frame::decode(relay::kind::CLIENT_INFO, &data[..64]) {
        assert_eq!(
            f,
            Frame::ClientInfo {
                key: Key(key),
                proof
            }
        );
    }
}

/// IPC: the frame decoder never panics and respects its limit; a frame that parses as a client
/// or daemon frame serialises and parses back to the same value.
#[cfg(feature = "serde")]
pub fn ipc(data: &[u8]) {
    use crate::ipc::{ClientFrame, DaemonFrame, Decoder as IpcDecoder};
    let mut d = IpcDecoder::new(64 * 1024);
    d.push(data);
    while let Ok(Some(frame)) = d.next_frame() {
        assert!(frame.len() <= 64 * 1024);
        ipc_json(&frame);
    }
    // The whole input as one frame's JSON too (most inputs have no valid length prefix).
    ipc_json(data);
    fn ipc_json(json: &[u8]) {
        if let Ok(c) = serde_json::from_slice::<ClientFrame>(json) {
            let again = serde_json::to_vec(&c).expect("serialises");
            let back: ClientFrame = serde_json::from_slice(&again).expect("parses back");
            assert_eq!(back, c);
        }
        if let Ok(f) = serde_json::from_slice::<DaemonFrame>(json) {
            let again = serde_json::to_vec(&f).expect("serialises");
            serde_json::from_slice::<DaemonFrame>(&again).expect("parses back");
        }
    }
}

/// WireGuard config files: any text gives a config or an error naming a line, never a panic.
pub fn wgconf(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = crate::wgconf::WgConfig::parse(text) {
            let _ = e.to_string();
        }
    }
}

/// The control API's bodies and map-stream lines: what parses serialises and parses back to
/// the same value; a registration's proof fields are read without panicking.
#[cfg(feature = "serde")]
pub fn control_api(data: &[u8]) {
    use crate::control::{
        parse_map_line, DeviceCode, MapMessage, NodeUpdate, RegisterChallenge, RegisterRequest,
    };
    fn round_trip<T>(data: &[u8]) -> Option<T>
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        let v: T = serde_json::from_slice(data).ok()?;
        let again = serde_json::to_vec(&v).expect("serialises");
        let back: T = serde_json::from_slice(&again).expect("parses back");
        assert_eq!(back, v);
        Some(v)
    }
    if let Some(r) = round_trip::<RegisterRequest>(data) {
        let _ = r.proof_bytes();
    }
    round_trip::<NodeUpdate>(data);
    round_trip::<RegisterChallenge>(data);
    round_trip::<DeviceCode>(data);
    if let Ok(m) = parse_map_line(data) {
        let again = serde_json::to_vec(&m).expect("serialises");
        assert_eq!(parse_map_line(&again).expect("parses back"), m);
        let _: &MapMessage = &m;
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    /// Every input in the committed corpus (and every crash the fuzzer found, kept there) runs
    /// through its target again.
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let mut inputs = 0;
        for (name, target) in TARGETS {
            let dir = corpus.join(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("the corpus of {name} ({}): {e}", dir.display()));
            let mut here = 0;
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).expect("a corpus file");
                target(&data);
                here += 1;
            }
            assert!(here > 0, "the corpus of {name} is empty");
            inputs += here;
        }
        assert!(inputs >= TARGETS.len());
    }
}
