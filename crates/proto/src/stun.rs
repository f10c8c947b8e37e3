//! STUN (RFC 8489) Binding messages: what a client sends to learn its public address and what a
//! server answers (XOR-MAPPED-ADDRESS, and OTHER-ADDRESS from RFC 5780), with FINGERPRINT so
//! STUN can share a UDP socket with WireGuard. Pure encoding and parsing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_CHANGE_REQUEST: u16 = 0x0003;
const ATTR_RESPONSE_ORIGIN: u16 = 0x802B;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_OTHER_ADDRESS: u16 = 0x802C;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A transaction id: 96 random bits chosen by the client.
pub type TxId = [u8; 12];

/// Why bytes are not a STUN message we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("STUN message truncated")]
    Truncated,
    #[error("STUN FINGERPRINT does not match")]
    BadFingerprint,
    #[error("malformed STUN address attribute")]
    BadAddress,
}

/// A parsed Binding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    BindingRequest {
        tx: TxId,
        /// Whether the request carried a FINGERPRINT (the answer should too).
        fingerprint: bool,
        /// CHANGE-REQUEST (RFC 5780): answer from the other address and/or port.
        change_ip: bool,
        change_port: bool,
    },
    BindingSuccess {
        tx: TxId,
        /// The client's address as the server saw it.
        mapped: Option<SocketAddr>,
        /// The server's other address and port, for NAT behaviour tests (RFC 5780).
        other: Option<SocketAddr>,
    },
    BindingError {
        tx: TxId,
        code: u16,
        reason: String,
    },
    /// Some other STUN method or class (ignored by Pinhole).
    Other {
        tx: TxId,
        kind: u16,
    },
}

/// Whether `b` looks like a STUN message (header checks only): cheap enough to run on every
/// datagram before handing it to WireGuard, whose messages start with a type byte and three
/// zero bytes and so never carry the magic cookie at offset 4.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER
        && b[0] & 0xc0 == 0
        && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == MAGIC_COOKIE
        && usize::from(u16::from_be_bytes([b[2], b[3]])) + HEADER == b.len()
        && b.len().is_multiple_of(4)
}

/// A Binding request with a FINGERPRINT.
pub fn binding_request(tx: TxId) -> Vec<u8> {
    let mut m = header(BINDING_REQUEST, tx);
    finish(&mut m, true);
    m
}

/// A Binding request asking the server to answer from its other address and/or port
/// (RFC 5780 CHANGE-REQUEST), for NAT behaviour discovery.
pub fn binding_request_with_change(tx: TxId, change_ip: bool, change_port: bool) -> Vec<u8> {
    let mut m = header(BINDING_REQUEST, tx);
    let flags: u32 = (u32::from(change_ip) << 2) | (u32::from(change_port) << 1);
    attribute(&mut m, ATTR_CHANGE_REQUEST, &flags.to_be_bytes());
    finish(&mut m, true);
    m
}

/// What a server puts in a Binding success answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Where the request came from, as the server saw it.
    pub mapped: SocketAddr,
    /// The server's other address:port (RFC 5780), if it has one.
    pub other: Option<SocketAddr>,
    /// The address:port the answer is sent from (RFC 5780 RESPONSE-ORIGIN).
    pub origin: Option<SocketAddr>,
    pub software: Option<&'a str>,
    pub fingerprint: bool,
}

/// A Binding success answer telling the client where it came from.
pub fn binding_success(
    tx: TxId,
    mapped: SocketAddr,
    other: Option<SocketAddr>,
    software: Option<&str>,
    fingerprint: bool,
) -> Vec<u8> {
    answer(
        tx,
        &Answer {
            mapped,
            other,
            origin: None,
            software,
            fingerprint,
        },
    )
}

/// A Binding success answer with every attribute of `a`.
pub fn answer(tx: TxId, a: &Answer<'_>) -> Vec<u8> {
    let (mapped, other, software, fingerprint) = (a.mapped, a.other, a.software, a.fingerprint);
    let mut m = header(BINDING_SUCCESS, tx);
    let xored = xor_address(mapped, &tx);
    attribute(&mut m, ATTR_XOR_MAPPED_ADDRESS, &address_value(xored));
    if let Some(o) = a.origin {
        attribute(&mut m, ATTR_RESPONSE_ORIGIN, &address_value(o));
    }
    if let Some(o) = other {
        attribute(&mut m, ATTR_OTHER_ADDRESS, &address_value(o));
    }
    if let Some(s) = software {
        attribute(&mut m, ATTR_SOFTWARE, s.as_bytes());
    }
    finish(&mut m, fingerprint);
    m
}

/// A Binding error answer (e.g. 420 with the attributes the server cannot honour).
pub fn binding_error(
    tx: TxId,
    code: u16,
    reason: &str,
    unknown: &[u16],
    fingerprint: bool,
) -> Vec<u8> {
    let mut m = header(BINDING_ERROR, tx);
    let mut v = vec![0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8];
    v.extend_from_slice(reason.as_bytes());
    attribute(&mut m, ATTR_ERROR_CODE, &v);
    if !unknown.is_empty() {
        let list: Vec<u8> = unknown.iter().flat_map(|a| a.to_be_bytes()).collect();
        attribute(&mut m, ATTR_UNKNOWN_ATTRIBUTES, &list);
    }
    finish(&mut m, fingerprint);
    m
}

/// The CHANGE-REQUEST attribute's type, for 420 answers.
pub const CHANGE_REQUEST: u16 = ATTR_CHANGE_REQUEST;

/// Reads a Binding message; anything malformed is an error, never a panic.
pub fn parse(b: &[u8]) -> Result<Message, StunError> {
    if !is_stun(b) {
        return Err(StunError::NotStun);
    }
    let kind = u16::from_be_bytes([b[0], b[1]]);
    let mut tx = [0u8; 12];
    tx.copy_from_slice(&b[8..20]);
    let mut mapped = None;
    let mut xor_mapped = None;
    let mut other = None;
    let mut fingerprint = false;
    let mut error = None;
    let mut change = 0u32;
    let mut at = HEADER;
    while at < b.len() {
        if at + 4 > b.len() {
            return Err(StunError::Truncated);
        }
        let t = u16::from_be_bytes([b[at], b[at + 1]]);
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        let value = b.get(at + 4..at + 4 + len).ok_or(StunError::Truncated)?;
        match t {
            ATTR_MAPPED_ADDRESS => mapped = Some(read_address(value)?),
            ATTR_XOR_MAPPED_ADDRESS => xor_mapped = Some(xor_address(read_address(value)?, &tx)),
            ATTR_OTHER_ADDRESS => other = Some(read_address(value)?),
            ATTR_CHANGE_REQUEST if len == 4 => {
                change = u32::from_be_bytes([value[0], value[1], value[2], value[3]])
            }
            ATTR_ERROR_CODE if len >= 4 => {
                let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
                error = Some((code, String::from_utf8_lossy(&value[4..]).into_owned()));
            }
            ATTR_FINGERPRINT => {
                if len != 4 || at + 8 != b.len() {
                    return Err(StunError::BadFingerprint);
                }
                let want = crc32(&b[..at]) ^ FINGERPRINT_XOR;
                if u32::from_be_bytes([value[0], value[1], value[2], value[3]]) != want {
                    return Err(StunError::BadFingerprint);
                }
                fingerprint = true;
            }
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    Ok(match kind {
        BINDING_REQUEST => Message::BindingRequest {
            tx,
            fingerprint,
            change_ip: change & 0x4 != 0,
            change_port: change & 0x2 != 0,
        },
        BINDING_SUCCESS => Message::BindingSuccess {
            tx,
            mapped: xor_mapped.or(mapped),
            other,
        },
        BINDING_ERROR => {
            let (code, reason) = error.unwrap_or((0, String::new()));
            Message::BindingError { tx, code, reason }
        }
        kind => Message::Other { tx, kind },
    })
}

fn header(kind: u16, tx: TxId) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&tx);
    m
}

fn set_length(m: &mut [u8], body: usize) {
    m[2..4].copy_from_slice(&(body as u16).to_be_bytes());
}

fn attribute(m: &mut Vec<u8>, t: u16, value: &[u8]) {
    m.extend_from_slice(&t.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(value);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
    let body = m.len() - HEADER;
    set_length(m, body);
}

/// Sets the length and, if asked, appends the FINGERPRINT (CRC-32 of everything before it,
/// with the length already counting the fingerprint).
fn finish(m: &mut Vec<u8>, fingerprint: bool) {
    let body = m.len() - HEADER;
    if !fingerprint {
        set_length(m, body);
        return;
    }
    set_length(m, body + 8);
    let crc = crc32(m) ^ FINGERPRINT_XOR;
    m.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    m.extend_from_slice(&4u16.to_be_bytes());
    m.extend_from_slice(&crc.to_be_bytes());
}

fn address_value(a: SocketAddr) -> Vec<u8> {
    let mut v = vec![0u8];
    match a.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

fn read_address(v: &[u8]) -> Result<SocketAddr, StunError> {
    if v.len() < 4 {
        return Err(StunError::BadAddress);
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    let ip = match (v[1], v.len()) {
        (1, 8) => IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7])),
        (2, 20) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&v[4..20]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(StunError::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

/// XOR-MAPPED-ADDRESS's transform (its own inverse): port with the cookie's top half, IPv4
/// with the cookie, IPv6 with the cookie and the transaction id.
fn xor_address(a: SocketAddr, tx: &TxId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = a.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match a.ip() {
        IpAddr::V4(ip) => {
            let mut o = ip.octets();
            for (b, c) in o.iter_mut().zip(cookie) {
                *b ^= c;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            let mask = cookie.iter().chain(tx.iter());
            for (b, c) in o.iter_mut().zip(mask) {
                *b ^= c;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    SocketAddr::new(ip, port)
}

/// CRC-32 (IEEE 802.3), as FINGERPRINT uses it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: TxId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn requests_and_answers_round_trip_for_both_families() {
        let req = binding_request(TX);
        assert!(is_stun(&req));
        assert_eq!(
            parse(&req),
            Ok(Message::BindingRequest {
                tx: TX,
                fingerprint: true,
                change_ip: false,
                change_port: false,
            })
        );
        assert_eq!(
            parse(&binding_request_with_change(TX, false, true)),
            Ok(Message::BindingRequest {
                tx: TX,
                fingerprint: true,
                change_ip: false,
                change_port: true,
            })
        );
        for mapped in ["192.0.2.1:41641", "[2001:db8::7]:3478"] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let other: SocketAddr = "198.51.100.2:3479".parse().unwrap();
            let ans = binding_success(TX, mapped, Some(other), Some("pinhole"), true);
            assert_eq!(
                parse(&ans),
                Ok(Message::BindingSuccess {
                    tx: TX,
                    mapped: Some(mapped),
                    other: Some(other)
                })
            );
        }
    }

    /// RFC 5769 section 2.2: a sample IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853).
    #[test]
    fn reads_the_rfc_5769_sample_response() {
        let hex = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 \
                   746f7220 00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 \
                   2af9ba53 f06be7d7 80280004 c07d4c96";
        let hex: String = hex.split_whitespace().collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        match parse(&bytes) {
            Ok(Message::BindingSuccess { mapped, .. }) => {
                assert_eq!(mapped, Some("192.0.2.1:32853".parse().unwrap()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_answers_carry_their_code() {
        let e = binding_error(TX, 420, "Unknown Attribute", &[CHANGE_REQUEST], true);
        assert_eq!(
            parse(&e),
            Ok(Message::BindingError {
                tx: TX,
                code: 420,
                reason: "Unknown Attribute".into()
            })
        );
    }

    #[test]
    fn wireguard_and_garbage_are_not_stun() {
        let mut wg = vec![1u8, 0, 0, 0];
        wg.resize(148, 7);
        assert!(!is_stun(&wg));
        assert_eq!(parse(&[0u8; 3]), Err(StunError::NotStun));
        let mut req = binding_request(TX);
        let n = req.len();
        req[n - 1] ^= 1;
        assert_eq!(parse(&req), Err(StunError::BadFingerprint));
        // An attribute running past the end.
        let mut m = header(BINDING_SUCCESS, TX);
        m.extend_from_slice(&[0, 0x20, 0, 40, 0, 1, 0, 0]);
        set_length(&mut m, 8);
        assert_eq!(parse(&m), Err(StunError::Truncated));
    }
}
