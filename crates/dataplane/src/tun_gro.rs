//! Receive coalescing (GRO) for the TUN device: the decrypted TCP segments of one flush that
//! continue each other are appended, as they arrive, into one super-packet with a virtio-net
//! header asking the kernel to treat it as a TSO packet, so the receiving stack sees one packet
//! of up to 64 KiB instead of ~45.
//!
//! Packets reach this in the order WireGuard delivered them, so only appending is tried (a
//! segment that does not continue the run of its flow starts a new one); every other packet
//! (non-TCP, SYN/FIN/RST, options that differ, a bad checksum, IP options or fragments) is
//! written on its own, in its place in the order. Each packet is copied once: headers of the
//! first, payload of the rest straight after. Checksums are verified before a segment merges:
//! the kernel computes the super-packet's own and would not see a wrong one.

use crate::checksum::{fold, sum_words};
use std::ops::Range;

/// Length of the virtio-net header in front of every packet written to an offload TUN.
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet (IPv4 total length / IPv6 payload length are 16 bits).
const MAX_IP_LEN: usize = 65535;
/// Packets looked at, from the newest, for the last one of a segment's connection; past them
/// the segment starts a super-packet of its own.
const FLOWS_SCANNED: usize = 8;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const IPPROTO_TCP: u8 = 6;

/// One buffer to write: a virtio-net header, then the packet.
struct Item {
    /// The TCP connection the packet belongs to, if it is TCP.
    conn: Option<Conn>,
    /// `Some` while TCP segments may still be appended (or were).
    run: Option<Run>,
}

/// A TCP super-packet under construction and what a segment must match to join it.
#[derive(Clone, Copy)]
struct Run {
    fields: Fields,
    ip_len: usize,
    tcp_len: usize,
    /// Payload bytes of the first segment; every other but the last has as many.
    gso_size: usize,
    segments: usize,
    next_seq: u32,
    /// A shorter segment or one with PSH ended the run.
    closed: bool,
}

/// Addresses and ports.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Conn {
    src: u128,
    dst: u128,
    ports: u32,
    v6: bool,
}

/// What else must be equal for segments to merge: the TCP header but for sequence number,
/// checksum and PSH, and the IP fields the kernel's GRO compares.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fields {
    ack: u32,
    window: u16,
    /// Data offset and the reserved/AE bits beside it.
    offset_byte: u8,
    /// IPv4: TOS, flags, TTL; IPv6: version/class/flow label, hop limit.
    ip: u64,
}

/// A TCP segment that may merge.
struct Segment {
    fields: Fields,
    ip_len: usize,
    tcp_len: usize,
    seq: u32,
    psh: bool,
    payload: Range<usize>,
}

/// Coalesces the packets of one flush; buffers are kept for the next.
#[derive(Default)]
pub struct Coalescer {
    bufs: Vec<Vec<u8>>,
    items: Vec<Item>,
}

impl Coalescer {
    /// Adds a packet (a whole IP packet, without a virtio header).
    pub fn push(&mut self, packet: &[u8]) {
        let Some((conn, segment)) = parse(packet) else {
            return self.start(packet, None, None);
        };
        let Some(seg) = segment else {
            // Later segments of this connection must not jump ahead of it.
            return self.start(packet, Some(conn), None);
        };
        if self.append(packet, conn, &seg) {
            return;
        }
        let run = Run {
            fields: seg.fields,
            ip_len: seg.ip_len,
            tcp_len: seg.tcp_len,
            gso_size: seg.payload.len(),
            segments: 1,
            next_seq: seg.seq.wrapping_add(seg.payload.len() as u32),
            closed: seg.psh,
        };
        self.start(packet, Some(conn), Some(run));
    }

    /// The buffers to write, each a virtio-net header and a packet, in order; the headers are
    /// final once this is called.
    pub fn finish(&mut self) -> impl Iterator<Item = &[u8]> {
        for (item, buf) in self.items.iter().zip(self.bufs.iter_mut()) {
            match (item.conn, item.run) {
                (Some(conn), Some(run)) if run.segments > 1 => seal(buf, conn.v6, &run),
                _ => buf[..VNET_HDR_LEN].fill(0),
            }
        }
        self.bufs[..self.items.len()].iter().map(|b| b.as_slice())
    }

    /// Forgets the packets (the buffers stay for reuse).
    pub fn clear(&mut self) {
        self.items.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn start(&mut self, packet: &[u8], conn: Option<Conn>, run: Option<Run>) {
        let i = self.items.len();
        if i == self.bufs.len() {
            self.bufs.push(Vec::new());
        }
        let buf = &mut self.bufs[i];
        buf.clear();
        buf.resize(VNET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.items.push(Item { conn, run });
    }

    /// Appends `seg` to the run of the connection's newest packet if it continues it.
    fn append(&mut self, packet: &[u8], conn: Conn, seg: &Segment) -> bool {
        let n = self.items.len();
        for i in (n.saturating_sub(FLOWS_SCANNED)..n).rev() {
            let item = &mut self.items[i];
            if item.conn != Some(conn) {
                continue;
            }
            // The connection's newest packet decides: appending to anything older would
            // put this segment ahead of a packet that came before it.
            let Some(run) = &mut item.run else {
                return false;
            };
            let buf = &mut self.bufs[i];
            let fits = !run.closed
                && run.fields == seg.fields
                && run.next_seq == seg.seq
                && run.ip_len == seg.ip_len
                && run.tcp_len == seg.tcp_len
                && !seg.payload.is_empty()
                && seg.payload.len() <= run.gso_size
                && buf.len() - VNET_HDR_LEN + seg.payload.len() <= MAX_IP_LEN
                && same_options(buf, packet, run.ip_len, run.tcp_len);
            if !fits {
                return false;
            }
            buf.extend_from_slice(&packet[seg.payload.clone()]);
            run.segments += 1;
            run.next_seq = seg.seq.wrapping_add(seg.payload.len() as u32);
            if seg.payload.len() < run.gso_size || seg.psh {
                run.closed = true;
            }
            if seg.psh {
                buf[VNET_HDR_LEN + run.ip_len + 13] |= TCP_PSH;
            }
            return true;
        }
        false
    }
}

/// TCP options of the run's first segment and of `packet` are the same bytes.
fn same_options(buf: &[u8], packet: &[u8], ip_len: usize, tcp_len: usize) -> bool {
    let opts = ip_len + 20..ip_len + tcp_len;
    buf[VNET_HDR_LEN..][opts.clone()] == packet[opts]
}

/// The connection of a TCP packet whose headers are whole, and the segment if it may merge:
/// an ACK (or ACK+PSH) with data and a valid checksum, no IP options, not a fragment.
fn parse(p: &[u8]) -> Option<(Conn, Option<Segment>)> {
    let first = *p.first()?;
    let (v6, ip_len, src, dst, ip, plain) = match first >> 4 {
        4 => {
            if p.len() < 20 || first & 0x0f != 5 || p[9] != IPPROTO_TCP {
                return None;
            }
            if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
                return None;
            }
            let src = u128::from(u32::from_be_bytes([p[12], p[13], p[14], p[15]]));
            let dst = u128::from(u32::from_be_bytes([p[16], p[17], p[18], p[19]]));
            let ip = u64::from(p[1]) << 16 | u64::from(p[6]) << 8 | u64::from(p[8]);
            // More-fragments or a fragment offset: not ours to merge; nor a header whose
            // checksum is wrong (the merged packet gets a new one).
            let whole = p[6] & 0x3f == 0 && p[7] == 0 && fold(sum_words(&p[..20], 0)) == 0xffff;
            (false, 20, src, dst, ip, whole)
        }
        6 => {
            if p.len() < 40 || p[6] != IPPROTO_TCP {
                return None;
            }
            if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
                return None;
            }
            let src = u128::from_be_bytes(p[8..24].try_into().ok()?);
            let dst = u128::from_be_bytes(p[24..40].try_into().ok()?);
            let ip = u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]])) << 8 | u64::from(p[7]);
            (true, 40, src, dst, ip, true)
        }
        _ => return None,
    };
    let t = p.get(ip_len..)?;
    if t.len() < 20 {
        return None;
    }
    let conn = Conn {
        src,
        dst,
        ports: u32::from_be_bytes([t[0], t[1], t[2], t[3]]),
        v6,
    };
    let tcp_len = usize::from(t[12] >> 4) * 4;
    let flags = t[13];
    let mergeable = plain
        && (20..=60).contains(&tcp_len)
        && t.len() > tcp_len
        && (flags == TCP_ACK || flags == TCP_ACK | TCP_PSH)
        && checksum_ok(p, v6, ip_len);
    if !mergeable {
        return Some((conn, None));
    }
    let segment = Segment {
        fields: Fields {
            ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            window: u16::from_be_bytes([t[14], t[15]]),
            offset_byte: t[12],
            ip,
        },
        ip_len,
        tcp_len,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        psh: flags & TCP_PSH != 0,
        payload: ip_len + tcp_len..p.len(),
    };
    Some((conn, Some(segment)))
}

/// The TCP checksum of `p` is right. Merging would hide a wrong one: the kernel computes the
/// super-packet's checksum itself.
fn checksum_ok(p: &[u8], v6: bool, ip_len: usize) -> bool {
    let sum = sum_words(&p[ip_len..], pseudo_header(p, v6, p.len() - ip_len));
    fold(sum) == 0xffff
}

/// The pseudo-header's ones'-complement sum (addresses, protocol, TCP length).
fn pseudo_header(p: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    sum_words(addrs, u64::from(IPPROTO_TCP) + tcp_len as u64)
}

/// Makes `buf` (virtio header + merged packet) a TSO packet: IP length and checksum, the
/// TCP checksum field holding the pseudo-header sum for the kernel to complete.
fn seal(buf: &mut [u8], v6: bool, run: &Run) {
    let packet_len = buf.len() - VNET_HDR_LEN;
    let tcp_total = packet_len - run.ip_len;
    let (hdr, p) = buf.split_at_mut(VNET_HDR_LEN);
    if v6 {
        p[4..6].copy_from_slice(&(tcp_total as u16).to_be_bytes());
    } else {
        p[2..4].copy_from_slice(&(packet_len as u16).to_be_bytes());
        p[10..12].fill(0);
        let c = !fold(sum_words(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let partial = fold(pseudo_header(p, v6, tcp_total));
    p[run.ip_len + 16..run.ip_len + 18].copy_from_slice(&partial.to_be_bytes());

    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    hdr[1] = if v6 {
        VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        VIRTIO_NET_HDR_GSO_TCPV4
    };
    // The header's fields are in the host's byte order (legacy virtio-net on TUN).
    hdr[2..4].copy_from_slice(&((run.ip_len + run.tcp_len) as u16).to_ne_bytes());
    hdr[4..6].copy_from_slice(&(run.gso_size as u16).to_ne_bytes());
    hdr[6..8].copy_from_slice(&(run.ip_len as u16).to_ne_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 4] = [100, 64, 0, 1];
    const B: [u8; 4] = [100, 64, 0, 2];

    /// An IPv4 TCP segment with a correct checksum.
    fn tcp4(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        tcp4_with(seq, 7, flags, &[], payload)
    }

    fn tcp4_with(seq: u32, ack: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + options.len();
        let total = 20 + tcp_len + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&A);
        p[16..20].copy_from_slice(&B);
        let c = !fold(sum_words(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        fill_tcp(&mut p, false, 20, seq, ack, flags, options, payload);
        p
    }

    fn tcp6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let total = 40 + 20 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = IPPROTO_TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        fill_tcp(&mut p, true, 40, seq, 7, flags, &[], payload);
        p
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_tcp(
        p: &mut [u8],
        v6: bool,
        ip: usize,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &[u8],
        payload: &[u8],
    ) {
        let tcp_len = 20 + options.len();
        p[ip..ip + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[ip + 2..ip + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[ip + 4..ip + 8].copy_from_slice(&seq.to_be_bytes());
        p[ip + 8..ip + 12].copy_from_slice(&ack.to_be_bytes());
        p[ip + 12] = ((tcp_len / 4) as u8) << 4;
        p[ip + 13] = flags;
        p[ip + 14..ip + 16].copy_from_slice(&512u16.to_be_bytes());
        p[ip + 20..ip + tcp_len].copy_from_slice(options);
        p[ip + tcp_len..].copy_from_slice(payload);
        let len = p.len() - ip;
        let c = !fold(sum_words(&p[ip..], pseudo_header(p, v6, len)));
        p[ip + 16..ip + 18].copy_from_slice(&c.to_be_bytes());
    }

    /// The TCP checksum of an IPv4 packet (no IP options) made right again after an edit.
    fn redo_tcp4_checksum(p: &mut [u8]) {
        p[36..38].fill(0);
        let len = p.len() - 20;
        let sum = !fold(sum_words(&p[20..], pseudo_header(p, false, len)));
        p[36..38].copy_from_slice(&sum.to_be_bytes());
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn out(c: &mut Coalescer) -> Vec<Vec<u8>> {
        c.finish().map(|b| b.to_vec()).collect()
    }

    fn hdr_u16(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    /// What the kernel does with a TSO super-packet: cut it into gso_size segments, each with
    /// the first's headers, its own sequence number, length and full checksums.
    fn segment(buf: &[u8]) -> Vec<Vec<u8>> {
        let (hdr, p) = buf.split_at(VNET_HDR_LEN);
        if hdr[1] == 0 {
            assert_eq!(
                hdr, [0u8; VNET_HDR_LEN],
                "a single packet has an empty header"
            );
            return vec![p.to_vec()];
        }
        assert_eq!(hdr[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        let v6 = hdr[1] == VIRTIO_NET_HDR_GSO_TCPV6;
        let (hdr_len, gso) = (hdr_u16(hdr, 2) as usize, hdr_u16(hdr, 4) as usize);
        let ip = hdr_u16(hdr, 6) as usize;
        assert_eq!(hdr_u16(hdr, 8), 16, "checksum offset in TCP");
        // The merged packet's own lengths and IPv4 header checksum are right.
        if v6 {
            assert_eq!(u16::from_be_bytes([p[4], p[5]]) as usize, p.len() - 40);
        } else {
            assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
            assert_eq!(fold(sum_words(&p[..20], 0)), 0xffff, "IPv4 header checksum");
        }
        // The TCP checksum field holds the pseudo-header sum over the merged length.
        let partial = u16::from_be_bytes([p[ip + 16], p[ip + 17]]);
        assert_eq!(partial, fold(pseudo_header(p, v6, p.len() - ip)));
        let seq0 = u32::from_be_bytes([p[ip + 4], p[ip + 5], p[ip + 6], p[ip + 7]]);
        let psh = p[ip + 13] & TCP_PSH != 0;
        let chunks: Vec<&[u8]> = p[hdr_len..].chunks(gso).collect();
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let mut s = p[..hdr_len].to_vec();
                s.extend_from_slice(data);
                let seq = seq0.wrapping_add((i * gso) as u32);
                s[ip + 4..ip + 8].copy_from_slice(&seq.to_be_bytes());
                if i != last || !psh {
                    s[ip + 13] &= !TCP_PSH;
                }
                let n = s.len();
                if v6 {
                    s[4..6].copy_from_slice(&((n - 40) as u16).to_be_bytes());
                } else {
                    s[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                    s[10..12].fill(0);
                    let c = !fold(sum_words(&s[..20], 0));
                    s[10..12].copy_from_slice(&c.to_be_bytes());
                }
                s[ip + 16..ip + 18].fill(0);
                let c = !fold(sum_words(&s[ip..], pseudo_header(&s, v6, n - ip)));
                s[ip + 16..ip + 18].copy_from_slice(&c.to_be_bytes());
                s
            })
            .collect()
    }

    /// A small deterministic generator for the property test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn any_sequence_of_packets_comes_back_whole_and_in_order_when_cut_like_the_kernel() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let mut c = Coalescer::default();
            // Three connections (two IPv4, one IPv6), each with its own next sequence number.
            let mut seqs = [1u32, 1 << 31, u32::MAX - 5000];
            let mut sent = Vec::new();
            for _ in 0..rng.below(120) {
                let conn = rng.below(3) as usize;
                let len = match rng.below(4) {
                    0 => 1 + rng.below(1380) as usize,
                    _ => 1380,
                };
                let flags = match rng.below(20) {
                    0 => TCP_ACK | TCP_PSH,
                    1 => TCP_ACK | 0x01,
                    2 => 0x02,
                    _ => TCP_ACK,
                };
                // Sometimes a gap or a repeat.
                match rng.below(25) {
                    0 => seqs[conn] = seqs[conn].wrapping_add(1380),
                    1 => seqs[conn] = seqs[conn].wrapping_sub(len as u32),
                    _ => {}
                }
                let data = payload(len, rng.below(256) as u8);
                let mut p = match conn {
                    0 => tcp4(seqs[conn], flags, &data),
                    1 => {
                        let mut p = tcp4(seqs[conn], flags, &data);
                        p[20..22].copy_from_slice(&40001u16.to_be_bytes());
                        redo_tcp4_checksum(&mut p);
                        p
                    }
                    _ => tcp6(seqs[conn], flags, &data),
                };
                seqs[conn] = seqs[conn].wrapping_add(len as u32);
                // Sometimes damage: a flipped byte anywhere, or a cut.
                match rng.below(40) {
                    0 => {
                        let at = rng.below(p.len() as u64) as usize;
                        p[at] ^= 1 << rng.below(8);
                    }
                    1 => p.truncate(rng.below(p.len() as u64) as usize),
                    _ => {}
                }
                c.push(&p);
                sent.push(p);
            }
            let bufs = out(&mut c);
            for b in &bufs {
                assert!(b.len() - VNET_HDR_LEN <= MAX_IP_LEN, "round {round}");
            }
            let got: Vec<Vec<u8>> = bufs.iter().flat_map(|b| segment(b)).collect();
            assert_eq!(got.len(), sent.len(), "round {round}");
            // Connections may interleave differently; each one's packets keep their order
            // (and so do the packets that are not TCP at all).
            let (got, sent) = (by_connection(&got), by_connection(&sent));
            assert_eq!(got.len(), sent.len(), "round {round}");
            for ((conn, g), (_, s)) in got.iter().zip(&sent) {
                assert!(
                    g == s,
                    "round {round}: the packets of {} came back different",
                    if conn.is_some() {
                        "a connection"
                    } else {
                        "no connection"
                    }
                );
            }
        }
    }

    /// Packets grouped by their TCP connection (`None`: not TCP), in order within each group;
    /// the groups sorted by connection, so that two lists can be compared.
    fn by_connection(packets: &[Vec<u8>]) -> Vec<(Option<Conn>, Vec<Vec<u8>>)> {
        let mut groups: Vec<(Option<Conn>, Vec<Vec<u8>>)> = Vec::new();
        for p in packets {
            let conn = parse(p).map(|(c, _)| c);
            match groups.iter_mut().find(|(c, _)| *c == conn) {
                Some((_, g)) => g.push(p.clone()),
                None => groups.push((conn, vec![p.clone()])),
            }
        }
        groups.sort_by_key(|(c, _)| c.map(|c| (c.v6, c.src, c.dst, c.ports)));
        groups
    }

    #[test]
    fn in_order_segments_become_one_super_packet_that_splits_back_into_them() {
        let mut c = Coalescer::default();
        let sent: Vec<Vec<u8>> = (0..10u32)
            .map(|i| tcp4(1000 + i * 1360, TCP_ACK, &payload(1360, i as u8)))
            .collect();
        for p in &sent {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 1);
        assert_eq!(bufs[0][1], VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(hdr_u16(&bufs[0], 4), 1360);
        assert_eq!(segment(&bufs[0]), sent);
    }

    #[test]
    fn ipv6_segments_merge_and_a_shorter_last_one_ends_the_run() {
        let mut c = Coalescer::default();
        let sent = vec![
            tcp6(5, TCP_ACK, &payload(1340, 1)),
            tcp6(5 + 1340, TCP_ACK, &payload(1340, 2)),
            tcp6(5 + 2680, TCP_ACK, &payload(700, 3)),
        ];
        let after = tcp6(5 + 3380, TCP_ACK, &payload(1340, 4));
        for p in sent.iter().chain([&after]) {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 2, "nothing follows a short segment in a run");
        assert_eq!(bufs[0][1], VIRTIO_NET_HDR_GSO_TCPV6);
        assert_eq!(segment(&bufs[0]), sent);
        assert_eq!(segment(&bufs[1]), vec![after]);
    }

    #[test]
    fn psh_ends_a_run_and_stays_on_its_last_segment() {
        let mut c = Coalescer::default();
        let sent = vec![
            tcp4(0, TCP_ACK, &payload(1000, 1)),
            tcp4(1000, TCP_ACK | TCP_PSH, &payload(1000, 2)),
        ];
        let next = tcp4(2000, TCP_ACK, &payload(1000, 3));
        for p in sent.iter().chain([&next]) {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 2);
        assert_ne!(bufs[0][VNET_HDR_LEN + 20 + 13] & TCP_PSH, 0);
        assert_eq!(segment(&bufs[0]), sent);
        assert_eq!(segment(&bufs[1]), vec![next]);
    }

    #[test]
    fn a_gap_or_a_reordered_segment_starts_a_new_packet_and_order_is_kept() {
        let mut c = Coalescer::default();
        let p = |i: u32| tcp4(i * 100, TCP_ACK, &payload(100, i as u8));
        // 0 1 | 3 (gap) | 2 (late: older than the run) | 4 continues 3? no: 2 is newer
        for i in [0, 1, 3, 2, 4] {
            c.push(&p(i));
        }
        let got: Vec<Vec<u8>> = out(&mut c).iter().flat_map(|b| segment(b)).collect();
        let want: Vec<Vec<u8>> = [0, 1, 3, 2, 4].into_iter().map(p).collect();
        assert_eq!(got, want, "segments come out in the order they went in");
    }

    #[test]
    fn interleaved_flows_each_get_their_own_super_packet() {
        let mut c = Coalescer::default();
        let other = |seq: u32, n: u8| {
            let mut p = tcp4(seq, TCP_ACK, &payload(500, n));
            // Another source port.
            p[20..22].copy_from_slice(&40001u16.to_be_bytes());
            redo_tcp4_checksum(&mut p);
            p
        };
        let a: Vec<_> = (0..3u32)
            .map(|i| tcp4(i * 500, TCP_ACK, &payload(500, i as u8)))
            .collect();
        let b: Vec<_> = (0..3u32).map(|i| other(9000 + i * 500, i as u8)).collect();
        for i in 0..3 {
            c.push(&a[i]);
            c.push(&b[i]);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 2);
        assert_eq!(segment(&bufs[0]), a);
        assert_eq!(segment(&bufs[1]), b);
    }

    #[test]
    fn segments_that_must_not_merge_are_written_alone_and_unchanged() {
        let mut c = Coalescer::default();
        let first = tcp4(0, TCP_ACK, &payload(100, 0));
        let mut bad = tcp4(100, TCP_ACK, &payload(100, 1));
        bad[60] ^= 0xff; // payload corrupted: checksum no longer matches
        let other_ack = tcp4_with(100, 8, TCP_ACK, &[], &payload(100, 2));
        let fin = tcp4(200, TCP_ACK | 0x01, &payload(100, 3));
        let pure_ack = tcp4(300, TCP_ACK, &[]);
        let options = tcp4_with(
            300,
            7,
            TCP_ACK,
            &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            &[9; 50],
        );
        let udp = {
            let mut p = tcp4(0, TCP_ACK, &payload(100, 4));
            p[9] = 17;
            p
        };
        let all = [&first, &bad, &other_ack, &fin, &pure_ack, &options, &udp];
        for p in all {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), all.len());
        for (buf, p) in bufs.iter().zip(all) {
            assert_eq!(&buf[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
            assert_eq!(&buf[VNET_HDR_LEN..], p.as_slice());
        }
    }

    #[test]
    fn a_segment_with_a_wrong_ip_header_checksum_does_not_merge() {
        let mut c = Coalescer::default();
        let first = tcp4(0, TCP_ACK, &payload(100, 0));
        let mut second = tcp4(100, TCP_ACK, &payload(100, 1));
        second[10] ^= 1;
        let third = tcp4(200, TCP_ACK, &payload(100, 2));
        for p in [&first, &second, &third] {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(
            bufs.len(),
            3,
            "the bad header is neither merged nor merged past"
        );
        assert_eq!(&bufs[1][VNET_HDR_LEN..], second.as_slice());
    }

    #[test]
    fn a_segment_whose_reserved_tcp_bits_differ_does_not_merge() {
        let mut c = Coalescer::default();
        let first = tcp4(0, TCP_ACK, &payload(100, 0));
        let mut second = tcp4(100, TCP_ACK, &payload(100, 1));
        second[32] |= 0x01; // the AE bit beside the data offset
        redo_tcp4_checksum(&mut second);
        for p in [&first, &second] {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 2);
        assert_eq!(&bufs[1][VNET_HDR_LEN..], second.as_slice());
    }

    #[test]
    fn options_that_are_equal_merge_and_differing_ones_do_not() {
        let mut c = Coalescer::default();
        let ts = |v: u8| [1, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 2];
        let a = tcp4_with(0, 7, TCP_ACK, &ts(1), &payload(1000, 0));
        let b = tcp4_with(1000, 7, TCP_ACK, &ts(1), &payload(1000, 1));
        let d = tcp4_with(2000, 7, TCP_ACK, &ts(2), &payload(1000, 2));
        for p in [&a, &b, &d] {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 2);
        assert_eq!(segment(&bufs[0]), vec![a, b]);
        assert_eq!(segment(&bufs[1]), vec![d]);
    }

    #[test]
    fn a_super_packet_stays_within_64_kib_and_the_rest_starts_another() {
        let mut c = Coalescer::default();
        // MTU-sized segments: 1420 - 40 = 1380 bytes of payload.
        let sent: Vec<_> = (0..60u32)
            .map(|i| tcp4(i * 1380, TCP_ACK, &payload(1380, i as u8)))
            .collect();
        for p in &sent {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 2);
        for b in &bufs {
            assert!(b.len() - VNET_HDR_LEN <= MAX_IP_LEN);
        }
        // 47 segments fit: 40 + 47 * 1380 = 64,900 bytes; the 48th would pass 65,535.
        assert_eq!(segment(&bufs[0]).len(), 47);
        let got: Vec<Vec<u8>> = bufs.iter().flat_map(|b| segment(b)).collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn buffers_are_reused_and_a_cleared_coalescer_starts_empty() {
        let mut c = Coalescer::default();
        c.push(&tcp4(0, TCP_ACK, &payload(100, 0)));
        c.push(&tcp4(100, TCP_ACK, &payload(100, 1)));
        assert_eq!(out(&mut c).len(), 1);
        c.clear();
        assert!(c.is_empty());
        let next = tcp4(200, TCP_ACK, &payload(100, 2));
        c.push(&next);
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), 1);
        assert_eq!(&bufs[0][VNET_HDR_LEN..], next.as_slice());
    }

    #[test]
    fn truncated_and_malformed_packets_pass_through_untouched() {
        let mut c = Coalescer::default();
        let whole = tcp4(0, TCP_ACK, &payload(100, 0));
        let inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x45],
            whole[..30].to_vec(),
            {
                let mut p = whole.clone();
                p[20 + 12] = 0xf0; // data offset 60 > what is there
                p
            },
            {
                let mut p = whole.clone();
                p[6] = 0x20; // more fragments
                p
            },
            vec![0x60; 39],
        ];
        for p in &inputs {
            c.push(p);
        }
        let bufs = out(&mut c);
        assert_eq!(bufs.len(), inputs.len());
        for (b, p) in bufs.iter().zip(&inputs) {
            assert_eq!(&b[VNET_HDR_LEN..], p.as_slice());
        }
    }
}
