//! Disco: the messages nodes exchange to find a direct path, sealed between their disco keys.
//!
//! A packet is `MAGIC`, the sender's disco public key, a 24-byte nonce, and a NaCl box
//! (X25519 + XSalsa20-Poly1305) of one message: `Ping{tx id, node key}`,
//! `Pong{tx id, observed source}`, `CallMeMaybe{endpoints}` or `Birthday{address, sockets}`
//! (the sender opened that many extra mappings on its public address toward the receiver,
//! which probes random ports there: birthday probing). The magic's first byte (`P`,
//! 0x50) tells disco apart from WireGuard (1–4) and STUN (top two bits zero) on the one socket.

use crate::endpoint::{Endpoint, EndpointKind};
use crate::key::{Key, PrivateKey};
use crypto_box::aead::Aead;
use crypto_box::SalsaBox;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The first bytes of every disco packet: "PH" and the speech-balloon emoji in UTF-8.
pub const MAGIC: [u8; 6] = [b'P', b'H', 0xf0, 0x9f, 0x92, 0xac];
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Magic, sender key and nonce.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_LEN + NONCE_LEN;
/// The most endpoints a call-me-maybe carries.
pub const MAX_ENDPOINTS: usize = 16;

const VERSION: u8 = 0;
const PING: u8 = 1;
const PONG: u8 = 2;
const CALL_ME_MAYBE: u8 = 3;
const BIRTHDAY: u8 = 4;
const ADDR_LEN: usize = 18;

/// A ping's transaction id, echoed by its pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub [u8; 12]);

/// One disco message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Can you hear me on this path?", with the sender's node key (the key its WireGuard uses).
    Ping { tx: TxId, node_key: Key },
    /// The answer to a ping, with the address the ping came from as the answerer saw it.
    Pong { tx: TxId, observed: SocketAddr },
    /// "Ping me at these endpoints now" (sent through the relay, so both sides ping at once).
    CallMeMaybe { endpoints: Vec<Endpoint> },
    /// "I opened `sockets` mappings on my public address `ip`, each toward your endpoint:
    /// probe random ports of it" (through the relay). Birthday probing across a NAT that maps
    /// every destination to a random port.
    Birthday { ip: IpAddr, sockets: u16 },
}

/// Why a disco packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoError {
    #[error("not a disco packet from the expected sender")]
    NotDisco,
    #[error("the box does not open (wrong key or altered)")]
    Unauthentic,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("unsupported message version {0}")]
    Version(u8),
    #[error("message of type {kind} has the wrong length {len}")]
    Length { kind: u8, len: usize },
    #[error("unknown endpoint kind {0}")]
    EndpointKind(u8),
}

/// Whether the packet starts like a disco packet (and is long enough to be one).
pub fn is_disco(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN + TAG_LEN && packet.starts_with(&MAGIC)
}

/// The sender's disco key, read without opening the box (to find the key to open it with).
pub fn sender(packet: &[u8]) -> Option<Key> {
    if !is_disco(packet) {
        return None;
    }
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&packet[MAGIC.len()..MAGIC.len() + KEY_LEN]);
    Some(Key(k))
}

/// The shared box between this node's disco key and a peer's (one X25519 per peer, kept).
pub struct DiscoBox {
    inner: SalsaBox,
    own: Key,
    peer: Key,
}

impl DiscoBox {
    pub fn new(own_private: &PrivateKey, peer: &Key) -> Self {
        let secret = crypto_box::SecretKey::from(*own_private.as_bytes());
        let public = crypto_box::PublicKey::from(peer.0);
        DiscoBox {
            inner: SalsaBox::new(&public, &secret),
            own: own_private.public_key(),
            peer: *peer,
        }
    }

    /// A packet carrying `msg`, sealed with `nonce` (which must never repeat for this pair of
    /// keys: 24 random bytes do).
    pub fn seal(&self, nonce: [u8; NONCE_LEN], msg: &Message) -> Vec<u8> {
        self.seal_plaintext(nonce, &encode(msg))
    }

    /// A packet carrying any plaintext, valid or not (what a peer holding the key could send:
    /// the fuzz targets use it to reach the decoder behind the box).
    pub fn seal_plaintext(&self, nonce: [u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
        let sealed = self.inner.encrypt(&nonce.into(), plain).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.own.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The message in a packet from the peer this box was made for.
    pub fn open(&self, packet: &[u8]) -> Result<Message, DiscoError> {
        if sender(packet) != Some(self.peer) {
            return Err(DiscoError::NotDisco);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[MAGIC.len() + KEY_LEN..HEADER_LEN]);
        let plain = self
            .inner
            .decrypt(&nonce.into(), &packet[HEADER_LEN..])
            .map_err(|_| DiscoError::Unauthentic)?;
        decode(&plain)
    }
}

/// The plaintext of a message: type, version, body.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match msg {
        Message::Ping { tx, node_key } => {
            out.extend_from_slice(&[PING, VERSION]);
            out.extend_from_slice(&tx.0);
            out.extend_from_slice(&node_key.0);
        }
        Message::Pong { tx, observed } => {
            out.extend_from_slice(&[PONG, VERSION]);
            out.extend_from_slice(&tx.0);
            put_addr(&mut out, *observed);
        }
        Message::CallMeMaybe { endpoints } => {
            out.extend_from_slice(&[CALL_ME_MAYBE, VERSION]);
            for e in endpoints.iter().take(MAX_ENDPOINTS) {
                out.push(e.kind.code());
                put_addr(&mut out, e.addr);
            }
        }
        Message::Birthday { ip, sockets } => {
            out.extend_from_slice(&[BIRTHDAY, VERSION]);
            // An address's layout: the IP, then the count where a port would be.
            put_addr(&mut out, SocketAddr::new(*ip, *sockets));
        }
    }
    out
}

/// Reads a message's plaintext; any length or value out of place is an error.
pub fn decode(plain: &[u8]) -> Result<Message, DiscoError> {
    let [kind, version, body @ ..] = plain else {
        return Err(DiscoError::Length {
            kind: 0,
            len: plain.len(),
        });
    };
    if *version != VERSION {
        return Err(DiscoError::Version(*version));
    }
    let wrong = || DiscoError::Length {
        kind: *kind,
        len: body.len(),
    };
    match *kind {
        PING => {
            if body.len() != 12 + KEY_LEN {
                return Err(wrong());
            }
            Ok(Message::Ping {
                tx: tx_id(&body[..12]),
                node_key: Key(body[12..].try_into().map_err(|_| wrong())?),
            })
        }
        PONG => {
            if body.len() != 12 + ADDR_LEN {
                return Err(wrong());
            }
            Ok(Message::Pong {
                tx: tx_id(&body[..12]),
                observed: get_addr(&body[12..]),
            })
        }
        CALL_ME_MAYBE => {
            let entry = 1 + ADDR_LEN;
            if body.len() % entry != 0 || body.len() / entry > MAX_ENDPOINTS {
                return Err(wrong());
            }
            let endpoints = body
                .chunks_exact(entry)
                .map(|c| {
                    let kind =
                        EndpointKind::from_code(c[0]).ok_or(DiscoError::EndpointKind(c[0]))?;
                    Ok(Endpoint::new(get_addr(&c[1..]), kind))
                })
                .collect::<Result<_, DiscoError>>()?;
            Ok(Message::CallMeMaybe { endpoints })
        }
        BIRTHDAY => {
            if body.len() != ADDR_LEN {
                return Err(wrong());
            }
            let a = get_addr(body);
            Ok(Message::Birthday {
                ip: a.ip(),
                sockets: a.port(),
            })
        }
        other => Err(DiscoError::UnknownType(other)),
    }
}

fn tx_id(b: &[u8]) -> TxId {
    let mut t = [0u8; 12];
    t.copy_from_slice(&b[..12]);
    TxId(t)
}

/// An address as 16 bytes (IPv4 mapped into IPv6) and a big-endian port.
fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn get_addr(b: &[u8]) -> SocketAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    let v6 = Ipv6Addr::from(o);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, u16::from_be_bytes([b[16], b[17]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (PrivateKey, PrivateKey) {
        (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        )
    }

    fn messages() -> Vec<Message> {
        vec![
            Message::Ping {
                tx: TxId([7; 12]),
                node_key: Key([9; 32]),
            },
            Message::Pong {
                tx: TxId([7; 12]),
                observed: "192.0.2.1:41641".parse().unwrap(),
            },
            Message::Pong {
                tx: TxId([8; 12]),
                observed: "[2001:db8::5]:9".parse().unwrap(),
            },
            Message::CallMeMaybe {
                endpoints: vec![
                    Endpoint::new("10.0.0.2:41641".parse().unwrap(), EndpointKind::Local),
                    Endpoint::new("198.51.100.7:2000".parse().unwrap(), EndpointKind::Stun),
                ],
            },
            Message::CallMeMaybe { endpoints: vec![] },
            Message::Birthday {
                ip: "203.0.113.9".parse().unwrap(),
                sockets: 256,
            },
        ]
    }

    #[test]
    fn sealed_messages_open_on_the_other_side_only() {
        let (a, b) = keys();
        let ab = DiscoBox::new(&a, &b.public_key());
        let ba = DiscoBox::new(&b, &a.public_key());
        let eve = DiscoBox::new(&PrivateKey::from_bytes([3; 32]), &a.public_key());
        for (i, m) in messages().into_iter().enumerate() {
            let p = ab.seal([i as u8; 24], &m);
            assert!(is_disco(&p));
            assert_eq!(sender(&p), Some(a.public_key()));
            assert_eq!(ba.open(&p), Ok(m));
            assert_eq!(eve.open(&p), Err(DiscoError::Unauthentic));
        }
    }

    #[test]
    fn an_altered_packet_is_rejected() {
        let (a, b) = keys();
        let ab = DiscoBox::new(&a, &b.public_key());
        let ba = DiscoBox::new(&b, &a.public_key());
        let p = ab.seal([0; 24], &messages()[0]);
        for i in MAGIC.len()..p.len() {
            let mut q = p.clone();
            q[i] ^= 1;
            assert!(ba.open(&q).is_err(), "byte {i} flipped still opened");
        }
        assert_eq!(ba.open(&p[..HEADER_LEN]), Err(DiscoError::NotDisco));
        assert_eq!(
            ab.open(&p),
            Err(DiscoError::NotDisco),
            "own packet reflected back"
        );
    }

    #[test]
    fn bad_plaintexts_are_errors() {
        assert!(matches!(decode(&[]), Err(DiscoError::Length { .. })));
        assert_eq!(decode(&[9, 0]), Err(DiscoError::UnknownType(9)));
        assert_eq!(decode(&[PING, 1]), Err(DiscoError::Version(1)));
        assert!(matches!(
            decode(&[PING, 0, 1, 2]),
            Err(DiscoError::Length { kind: PING, .. })
        ));
        let mut cmm = vec![CALL_ME_MAYBE, 0, 0];
        cmm.extend_from_slice(&[0; ADDR_LEN]);
        assert_eq!(decode(&cmm), Err(DiscoError::EndpointKind(0)));
        let too_many = encode(&Message::CallMeMaybe {
            endpoints: vec![
                Endpoint::new("192.0.2.1:1".parse().unwrap(), EndpointKind::Local);
                MAX_ENDPOINTS + 3
            ],
        });
        assert!(
            matches!(decode(&too_many), Ok(Message::CallMeMaybe { endpoints }) if endpoints.len() == MAX_ENDPOINTS)
        );
    }

    #[test]
    fn disco_is_told_apart_from_wireguard_and_stun() {
        let (a, b) = keys();
        let p = DiscoBox::new(&a, &b.public_key()).seal([0; 24], &messages()[0]);
        assert!(!crate::stun::is_stun(&p));
        assert!(!(1..=4).contains(&p[0]));
        assert!(!is_disco(&[1, 0, 0, 0]));
    }
}
