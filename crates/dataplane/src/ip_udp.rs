//! UDP datagrams inside IP packets, for services a node answers on the TUN device itself (its
//! DNS server): reading the addresses, ports and payload of an IPv4 or IPv6 packet carrying
//! UDP, and building one with correct lengths and checksums.

use crate::checksum::{fold, sum_words};
use std::net::{IpAddr, SocketAddr};

const UDP: u8 = 17;
const UDP_HEADER: usize = 8;
/// The hop limit of packets built here (they go straight to the local stack).
const TTL: u8 = 64;

/// A UDP datagram read from an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// The UDP datagram in `packet`, if it is one: an unfragmented IPv4 packet or an IPv6 packet
/// whose first next-header is UDP, with lengths that agree. Checksums are not checked (the
/// packet comes from the local stack).
pub fn parse(packet: &[u8]) -> Option<Datagram<'_>> {
    let (src, dst, udp) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes(packet.get(2..4)?.try_into().ok()?));
            let fragment = u16::from_be_bytes(packet.get(6..8)?.try_into().ok()?);
            // More fragments, or an offset: not a whole datagram.
            if ihl < 20 || total < ihl || total > packet.len() || fragment & 0x3fff != 0 {
                return None;
            }
            if *packet.get(9)? != UDP {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(src.into()),
                IpAddr::V4(dst.into()),
                packet.get(ihl..total)?,
            )
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes(packet.get(4..6)?.try_into().ok()?));
            if *packet.get(6)? != UDP || 40 + payload > packet.len() {
                return None;
            }
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(src.into()),
                IpAddr::V6(dst.into()),
                packet.get(40..40 + payload)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes(udp.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(udp.get(4..6)?.try_into().ok()?));
    if len < UDP_HEADER || len > udp.len() {
        return None;
    }
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: &udp[UDP_HEADER..len],
    })
}

/// An IP packet carrying `payload` in UDP from `src` to `dst` (both of one family), with its
/// checksums; none if the families differ or the payload cannot fit in one packet.
pub fn build(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = UDP_HEADER + payload.len();
    let udp_len16 = u16::try_from(udp_len).ok()?;
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + udp_len).ok()?;
            let mut pseudo = [0u8; 12];
            pseudo[..4].copy_from_slice(&s.octets());
            pseudo[4..8].copy_from_slice(&d.octets());
            pseudo[9] = UDP;
            pseudo[10..12].copy_from_slice(&udp_len16.to_be_bytes());
            set_udp_checksum(&mut udp, &pseudo);
            let mut p = Vec::with_capacity(20 + udp_len);
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, TTL, UDP, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let sum = !fold(sum_words(&p[..20], 0));
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            p.extend_from_slice(&udp);
            Some(p)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut pseudo = [0u8; 40];
            pseudo[..16].copy_from_slice(&s.octets());
            pseudo[16..32].copy_from_slice(&d.octets());
            pseudo[32..36].copy_from_slice(&u32::from(udp_len16).to_be_bytes());
            pseudo[39] = UDP;
            set_udp_checksum(&mut udp, &pseudo);
            let mut p = Vec::with_capacity(40 + udp_len);
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&udp_len16.to_be_bytes());
            p.extend_from_slice(&[UDP, TTL]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&udp);
            Some(p)
        }
        _ => None,
    }
}

/// Fills in the UDP checksum over the pseudo-header and the segment (0 is sent as 0xffff).
fn set_udp_checksum(udp: &mut [u8], pseudo: &[u8]) {
    let mut sum = !fold(sum_words(udp, sum_words(pseudo, 0)));
    if sum == 0 {
        sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum;

    /// The UDP checksum verifies: the sum over pseudo-header and segment is all ones.
    fn udp_checksum_ok(p: &[u8]) -> bool {
        let d = parse(p).expect("a datagram");
        let (pseudo, udp): (Vec<u8>, &[u8]) = match (d.src.ip(), d.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(t)) => {
                let mut ps = Vec::new();
                ps.extend_from_slice(&s.octets());
                ps.extend_from_slice(&t.octets());
                ps.extend_from_slice(&[0, UDP]);
                ps.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
                (ps, &p[20..])
            }
            (IpAddr::V6(s), IpAddr::V6(t)) => {
                let mut ps = Vec::new();
                ps.extend_from_slice(&s.octets());
                ps.extend_from_slice(&t.octets());
                ps.extend_from_slice(&((p.len() - 40) as u32).to_be_bytes());
                ps.extend_from_slice(&[0, 0, 0, UDP]);
                (ps, &p[40..])
            }
            _ => unreachable!(),
        };
        fold(sum_words(udp, sum_words(&pseudo, 0))) == 0xffff
    }

    #[test]
    fn built_packets_parse_back_with_valid_checksums() {
        for (src, dst) in [
            ("100.64.0.1:40000", "100.100.100.100:53"),
            ("[fd7a:115c:a1e0::1]:40000", "[fd7a:115c:a1e0::53]:53"),
        ] {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            for len in [0usize, 1, 33, 512] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let p = build(src, dst, &payload).unwrap();
                let d = parse(&p).unwrap();
                assert_eq!((d.src, d.dst, d.payload), (src, dst, &payload[..]));
                assert!(udp_checksum_ok(&p), "{src} {len}");
                if src.is_ipv4() {
                    assert_eq!(checksum(&p[..20]), 0, "the IPv4 header checksum");
                }
            }
        }
        let v4: SocketAddr = "100.64.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert!(build(v4, v6, b"x").is_none(), "families differ");
    }

    #[test]
    fn other_packets_are_not_datagrams() {
        let src: SocketAddr = "100.64.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "100.100.100.100:53".parse().unwrap();
        let good = build(src, dst, b"query").unwrap();
        assert!(parse(&good).is_some());
        // TCP, a fragment, a lying length, a short UDP header, garbage.
        let mut tcp = good.clone();
        tcp[9] = 6;
        assert!(parse(&tcp).is_none());
        let mut fragment = good.clone();
        fragment[6] = 0x20;
        assert!(parse(&fragment).is_none());
        let mut long = good.clone();
        long[2..4].copy_from_slice(&1000u16.to_be_bytes());
        assert!(parse(&long).is_none());
        let mut udp_len = good.clone();
        udp_len[24..26].copy_from_slice(&4u16.to_be_bytes());
        assert!(parse(&udp_len).is_none());
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        assert!(parse(&[0x45]).is_none());
        assert!(parse(&[]).is_none());
    }
}
