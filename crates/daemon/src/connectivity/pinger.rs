//! `pinhole ping` through the tunnel: ICMP echo requests made here and handed to the engine as
//! if they came from the TUN device; the replies are taken out of what the engine would write to
//! the device, so the ping measures the whole path (encryption, UDP, the peer's kernel).

use pinhole_dataplane::checksum::checksum;
use pinhole_engine::Key;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const IPV4_HEADER: usize = 20;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const PAYLOAD: &[u8] = b"pinhole ping: the path to a peer, measured through the tunnel.";

/// An echo request waiting for its reply.
#[derive(Debug)]
pub struct Pending<T> {
    pub peer: Key,
    pub name: String,
    pub address: Ipv4Addr,
    pub sent: Instant,
    deadline: Instant,
    seq: u16,
    /// Whoever asked (the reply channel).
    pub waiter: T,
}

/// Echo requests in flight.
#[derive(Debug)]
pub struct Pinger<T> {
    ident: u16,
    next_seq: u16,
    pending: Vec<Pending<T>>,
}

/// Where one echo request goes.
pub struct Target {
    pub peer: Key,
    pub name: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

impl<T> Pinger<T> {
    /// `ident` tells this daemon's echoes apart from others' (the ICMP identifier).
    pub fn new(ident: u16) -> Self {
        Pinger {
            ident,
            next_seq: 1,
            pending: Vec::new(),
        }
    }

    /// Records an echo request and returns the IPv4 packet to send.
    pub fn request(&mut self, now: Instant, to: Target, timeout: Duration, waiter: T) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let packet = echo_packet(to.src, to.dst, ICMP_ECHO_REQUEST, self.ident, seq, PAYLOAD);
        self.pending.push(Pending {
            peer: to.peer,
            name: to.name,
            address: to.dst,
            sent: now,
            deadline: now + timeout,
            seq,
            waiter,
        });
        packet
    }

    /// If `packet` (from the engine, bound for the TUN device) answers one of our requests,
    /// takes it: the request and its round-trip time.
    pub fn take_reply(&mut self, now: Instant, packet: &[u8]) -> Option<(Pending<T>, Duration)> {
        if self.pending.is_empty() {
            return None;
        }
        let echo = parse_echo(packet)?;
        if echo.kind != ICMP_ECHO_REPLY || echo.ident != self.ident {
            return None;
        }
        let i = self
            .pending
            .iter()
            .position(|p| p.seq == echo.seq && p.address == echo.src)?;
        let p = self.pending.swap_remove(i);
        let rtt = now.saturating_duration_since(p.sent);
        Some((p, rtt))
    }

    /// When the next request times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Requests whose time is up.
    pub fn expire(&mut self, now: Instant) -> Vec<Pending<T>> {
        let (gone, keep) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.pending = keep;
        gone
    }
}

struct Echo {
    src: Ipv4Addr,
    kind: u8,
    ident: u16,
    seq: u16,
}

fn parse_echo(p: &[u8]) -> Option<Echo> {
    if p.len() < IPV4_HEADER + 8 || p[0] >> 4 != 4 || p[9] != 1 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let icmp = p.get(ihl..)?;
    if ihl < IPV4_HEADER || icmp.len() < 8 || checksum(icmp) != 0 {
        return None;
    }
    let IpAddr::V4(src) = pinhole_proto::ip::source(p)? else {
        return None;
    };
    Some(Echo {
        src,
        kind: icmp[0],
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
    })
}

/// An IPv4 packet carrying one ICMP echo message.
fn echo_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let total = IPV4_HEADER + 8 + data.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&seq.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&p[..IPV4_HEADER]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let icmp = &mut p[IPV4_HEADER..];
    icmp[0] = kind;
    icmp[4..6].copy_from_slice(&ident.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    icmp[8..].copy_from_slice(data);
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

    fn target() -> Target {
        Target {
            peer: Key([2; 32]),
            name: "peer".into(),
            src: ME,
            dst: PEER,
        }
    }

    /// What the peer's kernel sends back: source and destination swapped, type 0.
    fn answer(request: &[u8]) -> Vec<u8> {
        let e = parse_echo(request).unwrap();
        echo_packet(PEER, ME, ICMP_ECHO_REPLY, e.ident, e.seq, &request[28..])
    }

    #[test]
    fn a_reply_to_our_request_is_taken_with_its_rtt() {
        let t0 = Instant::now();
        let mut p = Pinger::new(0x1234);
        let req = p.request(t0, target(), Duration::from_secs(2), "waiter");
        assert_eq!(checksum(&req[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum(&req[20..]), 0, "ICMP checksum");
        let (pending, rtt) = p
            .take_reply(t0 + Duration::from_millis(7), &answer(&req))
            .expect("our reply");
        assert_eq!(pending.waiter, "waiter");
        assert_eq!(rtt, Duration::from_millis(7));
        assert!(p.next_deadline().is_none());
    }

    #[test]
    fn other_traffic_passes_through() {
        let t0 = Instant::now();
        let mut p = Pinger::new(0x1234);
        let req = p.request(t0, target(), Duration::from_secs(2), ());
        // Someone else's echo reply (another identifier) goes to the device.
        let e = parse_echo(&req).unwrap();
        let foreign = echo_packet(PEER, ME, ICMP_ECHO_REPLY, 0x9999, e.seq, b"x");
        assert!(p.take_reply(t0, &foreign).is_none());
        // Our own request echoed back is not a reply; garbage and truncation are ignored.
        assert!(p.take_reply(t0, &req).is_none());
        assert!(p.take_reply(t0, &[0x45, 0, 0]).is_none());
        let mut bad = answer(&req);
        bad[30] ^= 0xff;
        assert!(p.take_reply(t0, &bad).is_none(), "bad checksum");
        assert!(p.take_reply(t0, &answer(&req)).is_some());
    }

    #[test]
    fn unanswered_requests_expire_at_their_deadline() {
        let t0 = Instant::now();
        let mut p = Pinger::new(1);
        p.request(t0, target(), Duration::from_secs(1), 1);
        p.request(t0, target(), Duration::from_secs(3), 2);
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let gone = p.expire(t0 + Duration::from_secs(2));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].waiter, 1);
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(3)));
    }
}
