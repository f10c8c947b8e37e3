//! What the packet filter reads from an IP packet: protocol, addresses, ports (or an ICMP echo
//! id), whether it is a fragment, and for ICMP errors the packet they are about.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;
pub const SCTP: u8 = 132;

/// A packet's addresses and ports (for ICMP echo messages, the echo id; see [`transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// What kind of ICMP message a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    EchoRequest,
    EchoReply,
    /// An error about a packet this side sent (unreachable, time exceeded, too big…): the
    /// tuple of that packet.
    Error(Tuple),
    Other,
}

/// Which datagram a fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
}

/// A packet as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// A whole packet, or the first fragment of one (`first_of` set) with its L4 header.
    Whole {
        tuple: Tuple,
        icmp: Option<Icmp>,
        /// TCP flags (SYN, FIN, RST…); 0 for other protocols.
        tcp_flags: u8,
        first_of: Option<FragmentKey>,
    },
    /// A later fragment: no header of its own to judge.
    Later(FragmentKey),
    /// Too short, a first fragment without its ports, or not IP.
    Malformed,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;

/// Reads a packet.
pub fn parse(p: &[u8]) -> Packet {
    match p.first().map(|b| b >> 4) {
        Some(4) => parse_v4(p, 0),
        Some(6) => parse_v6(p, 0),
        _ => Packet::Malformed,
    }
}

fn parse_v4(p: &[u8], depth: u8) -> Packet {
    if p.len() < 20 {
        return Packet::Malformed;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return Packet::Malformed;
    }
    let proto = p[9];
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    let flags_offset = u16::from_be_bytes([p[6], p[7]]);
    let more = flags_offset & 0x2000 != 0;
    let offset = flags_offset & 0x1fff;
    let key = FragmentKey {
        src,
        dst,
        id: u32::from(u16::from_be_bytes([p[4], p[5]])),
        proto,
    };
    if offset != 0 {
        return Packet::Later(key);
    }
    transport(proto, src, dst, &p[ihl..], more.then_some(key), depth)
}

fn parse_v6(p: &[u8], depth: u8) -> Packet {
    if p.len() < 40 {
        return Packet::Malformed;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&p[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&p[24..40]);
    let (src, dst) = (
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
    );
    let mut next = p[6];
    let mut at = 40;
    let mut first_of = None;
    // Extension headers: hop-by-hop, routing, destination options, fragment.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let Some(h) = p.get(at..at + 2) else {
                    return Packet::Malformed;
                };
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                let Some(h) = p.get(at..at + 8) else {
                    return Packet::Malformed;
                };
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                let more = h[3] & 1 != 0;
                let key = FragmentKey {
                    src,
                    dst,
                    id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    proto: h[0],
                };
                if offset != 0 {
                    return Packet::Later(key);
                }
                next = h[0];
                at += 8;
                if more {
                    first_of = Some(key);
                }
            }
            _ => break,
        }
    }
    let Some(rest) = p.get(at..) else {
        return Packet::Malformed;
    };
    transport(next, src, dst, rest, first_of, depth)
}

fn transport(
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    l4: &[u8],
    first_of: Option<FragmentKey>,
    depth: u8,
) -> Packet {
    let mut tuple = Tuple {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
    };
    let mut icmp = None;
    let mut tcp_flags = 0;
    match proto {
        TCP | UDP | SCTP => {
            // A packet quoted in an ICMP error may keep only 8 bytes of its header.
            let need = if proto == TCP && depth == 0 { 14 } else { 4 };
            let Some(h) = l4.get(..need) else {
                return Packet::Malformed;
            };
            tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            if proto == TCP && depth == 0 {
                tcp_flags = h[13];
            }
        }
        ICMP | ICMPV6 => {
            let Some(h) = l4.get(..8) else {
                return Packet::Malformed;
            };
            let v6 = proto == ICMPV6;
            let kind = match (v6, h[0]) {
                (false, 8) | (true, 128) => Icmp::EchoRequest,
                (false, 0) | (true, 129) => Icmp::EchoReply,
                (false, 3 | 4 | 11 | 12) | (true, 1..=4) if depth == 0 => {
                    let inner = match if v6 {
                        parse_v6(&l4[8..], 1)
                    } else {
                        parse_v4(&l4[8..], 1)
                    } {
                        Packet::Whole { tuple, .. } => tuple,
                        _ => return Packet::Malformed,
                    };
                    Icmp::Error(inner)
                }
                _ => Icmp::Other,
            };
            // The echo id stands in the port of the side that asked: a request's source, a
            // reply's destination (so a reply matches its request's flow, a request does not).
            let id = u16::from_be_bytes([h[4], h[5]]);
            match kind {
                Icmp::EchoRequest => tuple.sport = id,
                Icmp::EchoReply => tuple.dport = id,
                _ => {}
            }
            icmp = Some(kind);
        }
        _ => {}
    }
    Packet::Whole {
        tuple,
        icmp,
        tcp_flags,
        first_of,
    }
}
