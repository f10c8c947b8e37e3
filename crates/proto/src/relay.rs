//! The relay protocol's frames and key proof.
//!
//! After an HTTP upgrade (or inside WebSocket binary messages) both sides exchange frames of a
//! 1-byte type and a 4-byte big-endian length. The relay opens with its X25519 key and a fresh
//! challenge; the client answers with its node key and an HMAC over the challenge keyed by the
//! X25519 shared secret, which only the holder of the node's private key can compute. Then the
//! client sends packets addressed by the destination's node key and receives packets labelled
//! with the sender's.

use crate::key::{Key, PrivateKey};
use crate::key_proof::{self, Purpose};

/// The value of the HTTP `Upgrade` header that asks for the relay protocol.
pub const UPGRADE_PROTOCOL: &str = "pinhole-relay";
/// Protocol version, sent in the relay's first frame.
pub const VERSION: u8 = 1;
/// The largest packet carried (an IP packet plus WireGuard's overhead fits).
pub const MAX_PACKET: usize = 64 * 1024;
/// The largest frame payload: a packet and the 32-byte key in front of it.
pub const MAX_FRAME: usize = MAX_PACKET + 32;
/// Bytes in front of every frame's payload.
pub const HEADER: usize = 5;
/// What a packet frame adds to its packet: the header and the 32-byte key.
pub const PACKET_OVERHEAD: usize = HEADER + 32;
/// A reason for refusal longer than this is cut.
const MAX_REASON: usize = 512;

/// Frame type bytes.
pub mod kind {
    pub const SERVER_KEY: u8 = 1;
    pub const CLIENT_INFO: u8 = 2;
    pub const SERVER_INFO: u8 = 3;
    pub const SEND_PACKET: u8 = 4;
    pub const RECV_PACKET: u8 = 5;
    pub const KEEP_ALIVE: u8 = 6;
    pub const PEER_GONE: u8 = 7;
    pub const REFUSED: u8 = 8;
}

/// One frame of the relay protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Relay → client, first: protocol version, the relay's X25519 key and a fresh challenge.
    ServerKey {
        version: u8,
        key: Key,
        challenge: [u8; 32],
    },
    /// Client → relay: the node key and the proof that the client holds its private half.
    ClientInfo { key: Key, proof: [u8; 32] },
    /// Relay → client: accepted; how often the relay sends keepalives (and expects them).
    ServerInfo { keepalive_secs: u16 },
    /// Client → relay: deliver `packet` to the node with key `dst`.
    SendPacket { dst: Key, packet: Vec<u8> },
    /// Relay → client: `packet` from the node with key `src`.
    RecvPacket { src: Key, packet: Vec<u8> },
    /// Either way: nothing to say, but the connection is alive.
    KeepAlive,
    /// Relay → client: the node with this key is not (or no longer) connected.
    PeerGone { key: Key },
    /// Relay → client, last: why the relay will not serve this client.
    Refused { reason: String },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame type {kind} with a payload of {len} bytes is malformed")]
    Malformed { kind: u8, len: usize },
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::ServerKey { .. } => kind::SERVER_KEY,
            Frame::ClientInfo { .. } => kind::CLIENT_INFO,
            Frame::ServerInfo { .. } => kind::SERVER_INFO,
            Frame::SendPacket { .. } => kind::SEND_PACKET,
            Frame::RecvPacket { .. } => kind::RECV_PACKET,
            Frame::KeepAlive => kind::KEEP_ALIVE,
            Frame::PeerGone { .. } => kind::PEER_GONE,
            Frame::Refused { .. } => kind::REFUSED,
        }
    }

    /// Appends the frame, header included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.kind());
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::ServerKey {
                version,
                key,
                challenge,
            } => {
                out.push(*version);
                out.extend_from_slice(&key.0);
                out.extend_from_slice(challenge);
            }
            Frame::ClientInfo { key, proof } => {
                out.extend_from_slice(&key.0);
                out.extend_from_slice(proof);
            }
            Frame::ServerInfo { keepalive_secs } => {
                out.extend_from_slice(&keepalive_secs.to_be_bytes())
            }
            Frame::SendPacket { dst: k, packet } | Frame::RecvPacket { src: k, packet } => {
                out.extend_from_slice(&k.0);
                out.extend_from_slice(packet);
            }
            Frame::KeepAlive => {}
            Frame::PeerGone { key } => out.extend_from_slice(&key.0),
            Frame::Refused { reason } => out.extend_from_slice(cut_reason(reason).as_bytes()),
        }
        let len = (out.len() - start - HEADER) as u32;
        out[start + 1..start + HEADER].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame's bytes, header included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// A packet frame's bytes built without an intermediate copy of the packet.
    pub fn packet_bytes(send: bool, key: &Key, packet: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(PACKET_OVERHEAD + packet.len());
        Frame::append_packet(send, key, packet, &mut out);
        out
    }

    /// Appends a packet frame to `out` (a batch of frames for one connection).
    pub fn append_packet(send: bool, key: &Key, packet: &[u8], out: &mut Vec<u8>) {
        out.push(if send {
            kind::SEND_PACKET
        } else {
            kind::RECV_PACKET
        });
        out.extend_from_slice(&((32 + packet.len()) as u32).to_be_bytes());
        out.extend_from_slice(&key.0);
        out.extend_from_slice(packet);
    }

    /// Parses one frame's type and payload.
    pub fn decode(kind: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let bad = || FrameError::Malformed { kind, len: p.len() };
        let key_at = |i: usize| -> Result<Key, FrameError> {
            p.get(i..i + 32)
                .and_then(|s| s.try_into().ok())
                .map(Key)
                .ok_or_else(bad)
        };
        let arr_at = |i: usize| -> Result<[u8; 32], FrameError> {
            p.get(i..i + 32)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(bad)
        };
        if p.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(p.len()));
        }
        Ok(match kind {
            kind::SERVER_KEY if p.len() == 65 => Frame::ServerKey {
                version: p[0],
                key: key_at(1)?,
                challenge: arr_at(33)?,
            },
            kind::CLIENT_INFO if p.len() == 64 => Frame::ClientInfo {
                key: key_at(0)?,
                proof: arr_at(32)?,
            },
            kind::SERVER_INFO if p.len() == 2 => Frame::ServerInfo {
                keepalive_secs: u16::from_be_bytes([p[0], p[1]]),
            },
            kind::SEND_PACKET if p.len() >= 32 => Frame::SendPacket {
                dst: key_at(0)?,
                packet: p[32..].to_vec(),
            },
            kind::RECV_PACKET if p.len() >= 32 => Frame::RecvPacket {
                src: key_at(0)?,
                packet: p[32..].to_vec(),
            },
            kind::KEEP_ALIVE if p.is_empty() => Frame::KeepAlive,
            kind::PEER_GONE if p.len() == 32 => Frame::PeerGone { key: key_at(0)? },
            // Invalid UTF-8 becomes U+FFFD (three bytes for one), so the text is cut again:
            // what decodes re-encodes to the same bytes (found by fuzzing).
            kind::REFUSED if p.len() <= MAX_REASON => Frame::Refused {
                reason: cut_reason(&String::from_utf8_lossy(p)).to_string(),
            },
            kind::SERVER_KEY..=kind::REFUSED => return Err(bad()),
            other => return Err(FrameError::UnknownType(other)),
        })
    }
}

/// At most [`MAX_REASON`] bytes of a refusal's text, cut on a character boundary.
fn cut_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Splits a byte stream into frames: feed what was read, take frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read the connection into directly, instead of [`Decoder::push`], with
    /// room for `want` more bytes: what is read must be appended to it (as `read_buf` does).
    pub fn buffer(&mut self, want: usize) -> &mut Vec<u8> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.reserve(want);
        &mut self.buf
    }

    /// The next whole frame, if one has arrived. An error means the stream is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.next_raw()? {
            Some((kind, payload)) => Frame::decode(kind, payload).map(Some),
            None => Ok(None),
        }
    }

    /// The next whole frame's type and payload, borrowed from the buffer.
    pub fn next_raw(&mut self) -> Result<Option<(u8, &[u8])>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if avail.len() < HEADER + len {
            self.compact();
            return Ok(None);
        }
        let kind = avail[0];
        let begin = self.start + HEADER;
        self.start = begin + len;
        Ok(Some((kind, &self.buf[begin..begin + len])))
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            // An idle connection keeps no large buffer.
            self.buf = Vec::new();
        }
    }
}

/// The length of the first `frames` whole frames in `bytes` (a batch made by this module's
/// encoders); all of it when it holds fewer.
pub fn frames_len(bytes: &[u8], frames: usize) -> usize {
    let mut at = 0;
    for _ in 0..frames {
        let Some(h) = bytes.get(at..at + HEADER) else {
            break;
        };
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if bytes.len() < at + HEADER + len {
            break;
        }
        at += HEADER + len;
    }
    at
}

/// The client's proof that it holds `private`, for the relay whose key is `server`.
pub fn key_proof(private: &PrivateKey, server: &Key, challenge: &[u8; 32]) -> [u8; 32] {
    key_proof::prove(Purpose::Relay, private, server, challenge)
}

/// The relay's check of a client's proof (constant time); low-order keys are refused.
pub fn verify_key_proof(
    server_private: &PrivateKey,
    challenge: &[u8; 32],
    client: &Key,
    proof: &[u8; 32],
) -> bool {
    key_proof::verify(Purpose::Relay, server_private, challenge, client, proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::ServerKey {
                version: VERSION,
                key: Key([1; 32]),
                challenge: [2; 32],
            },
            Frame::ClientInfo {
                key: Key([3; 32]),
                proof: [4; 32],
            },
            Frame::ServerInfo { keepalive_secs: 30 },
            Frame::SendPacket {
                dst: Key([5; 32]),
                packet: vec![9; 1400],
            },
            Frame::RecvPacket {
                src: Key([6; 32]),
                packet: vec![],
            },
            Frame::KeepAlive,
            Frame::PeerGone { key: Key([7; 32]) },
            Frame::Refused {
                reason: "unknown node key".into(),
            },
        ]
    }

    #[test]
    fn frames_round_trip_through_a_byte_stream_cut_anywhere() {
        let mut stream = Vec::new();
        for f in all_frames() {
            f.encode(&mut stream);
        }
        for cut in [1, 2, 5, 7, 100, stream.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, all_frames(), "chunks of {cut}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn packet_bytes_equal_the_general_encoding() {
        let k = Key([8; 32]);
        let p = vec![1, 2, 3];
        assert_eq!(
            Frame::packet_bytes(true, &k, &p),
            Frame::SendPacket {
                dst: k,
                packet: p.clone()
            }
            .to_bytes()
        );
        assert_eq!(
            Frame::packet_bytes(false, &k, &p),
            Frame::RecvPacket { src: k, packet: p }.to_bytes()
        );
    }

    #[test]
    fn frames_len_finds_the_end_of_the_first_frames_of_a_batch() {
        let k = Key([3; 32]);
        let mut batch = Vec::new();
        for n in [1usize, 1200, 0] {
            Frame::append_packet(false, &k, &vec![9; n], &mut batch);
        }
        assert_eq!(frames_len(&batch, 0), 0);
        assert_eq!(frames_len(&batch, 1), PACKET_OVERHEAD + 1);
        assert_eq!(frames_len(&batch, 2), 2 * PACKET_OVERHEAD + 1201);
        assert_eq!(frames_len(&batch, 3), batch.len());
        assert_eq!(frames_len(&batch, 9), batch.len());
        // The frames it counts decode, one by one, to the packets appended.
        let mut d = Decoder::default();
        d.push(&batch[..frames_len(&batch, 2)]);
        assert!(
            matches!(d.next_frame(), Ok(Some(Frame::RecvPacket { packet, .. })) if packet.len() == 1)
        );
        assert!(
            matches!(d.next_frame(), Ok(Some(Frame::RecvPacket { packet, .. })) if packet.len() == 1200)
        );
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn frames_read_into_the_buffer_in_pieces_decode_like_pushed_ones() {
        let k = Key([4; 32]);
        let mut bytes = Vec::new();
        for n in [0usize, 1, 700, 1500] {
            Frame::append_packet(true, &k, &vec![n as u8; n], &mut bytes);
        }
        for piece in [1, 5, 37, 1000, bytes.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for c in bytes.chunks(piece) {
                let buf = d.buffer(piece);
                assert!(buf.capacity() - buf.len() >= piece);
                buf.extend_from_slice(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            let sizes: Vec<usize> = got
                .iter()
                .map(|f| match f {
                    Frame::SendPacket { dst, packet } if *dst == k => packet.len(),
                    f => panic!("{f:?}"),
                })
                .collect();
            assert_eq!(sizes, [0, 1, 700, 1500], "pieces of {piece}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn oversized_unknown_and_malformed_frames_are_errors() {
        let mut d = Decoder::default();
        d.push(&[kind::SEND_PACKET, 0, 1, 0, 33]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(65_569)));
        let mut d = Decoder::default();
        d.push(&[42, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownType(42)));
        let mut d = Decoder::default();
        d.push(&[kind::PEER_GONE, 0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Malformed {
                kind: kind::PEER_GONE,
                len: 3
            })
        );
        let mut d = Decoder::default();
        d.push(&[kind::KEEP_ALIVE, 0, 0, 0, 1, 0]);
        assert!(d.next_frame().is_err());
        // A packet of exactly the limit is fine.
        let f = Frame::SendPacket {
            dst: Key([1; 32]),
            packet: vec![0; MAX_PACKET],
        };
        let mut d = Decoder::default();
        d.push(&f.to_bytes());
        assert_eq!(d.next_frame(), Ok(Some(f)));
    }

    #[test]
    fn long_refusals_are_cut_on_a_character_boundary() {
        let f = Frame::Refused {
            reason: "é".repeat(400),
        };
        let bytes = f.to_bytes();
        let mut d = Decoder::default();
        d.push(&bytes);
        match d.next_frame().unwrap() {
            Some(Frame::Refused { reason }) => assert_eq!(reason.chars().count(), 256),
            other => panic!("{other:?}"),
        }
    }

    /// Found by fuzzing: 300 bytes of invalid UTF-8 decode to 300 replacement characters (900
    /// bytes), which re-encoded were cut and decoded to a different text. Decoding cuts too now.
    #[test]
    fn refusals_with_invalid_utf8_decode_to_what_they_encode() {
        let mut raw = vec![kind::REFUSED];
        raw.extend_from_slice(&300u32.to_be_bytes());
        raw.extend_from_slice(&[0xff; 300]);
        let mut d = Decoder::default();
        d.push(&raw);
        let f = d.next_frame().unwrap().expect("a frame");
        let Frame::Refused { reason } = &f else {
            panic!("{f:?}")
        };
        assert!(reason.len() <= MAX_REASON);
        let mut again = Decoder::default();
        again.push(&f.to_bytes());
        assert_eq!(again.next_frame(), Ok(Some(f)));
    }
}
