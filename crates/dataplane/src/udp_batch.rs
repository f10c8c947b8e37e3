//! Batched I/O on the node's UDP socket. Outgoing datagrams are gathered into runs — datagrams
//! to one destination of one size (the last may be shorter) — and each run goes out in one
//! `sendmsg` with `UDP_SEGMENT` (GSO: the kernel cuts it into datagrams); on receive, `recvmmsg`
//! fills several buffers per call and `UDP_GRO` hands over runs of datagrams from one sender in
//! one buffer, cut back here by their segment size. quinn-udp probes what the kernel supports
//! when the socket is set up and falls back to one datagram per call (a kernel or driver that
//! refuses GSO at send time turns it off for the rest of the run).

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The most bytes one GSO send may carry (the UDP length field).
const MAX_GSO_BYTES: usize = 65_535;
/// Room for one GRO-coalesced receive.
const RECV_BUFFER: usize = 65_535;

/// One run: `count` datagrams of `segment` bytes (the last may be shorter) to `dst`, stored
/// back to back in the batcher's buffer from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub dst: SocketAddr,
    start: usize,
    len: usize,
    pub segment: usize,
    pub count: usize,
}

/// Gathers outgoing datagrams into runs, in the order they were given.
#[derive(Debug, Default)]
pub struct Batcher {
    buf: Vec<u8>,
    runs: Vec<Run>,
}

impl Batcher {
    /// Adds a datagram to `dst`. It joins the last run when that goes to `dst`, its datagrams
    /// are this one's size (this one may be shorter, and then ends the run), the run has fewer
    /// than `max_segments` and stays within 64 KiB.
    pub fn push(&mut self, dst: SocketAddr, payload: &[u8], max_segments: usize) {
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        if let Some(run) = self.runs.last_mut() {
            let joins = run.dst == dst
                && run.count < max_segments
                && !payload.is_empty()
                && payload.len() <= run.segment
                // Every datagram but the last is exactly `segment` long.
                && run.len == run.segment * run.count
                && run.len + payload.len() <= MAX_GSO_BYTES;
            if joins {
                run.len += payload.len();
                run.count += 1;
                return;
            }
        }
        self.runs.push(Run {
            dst,
            start,
            len: payload.len(),
            segment: payload.len(),
            count: 1,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs so far, in order, with their bytes.
    pub fn runs(&self) -> impl Iterator<Item = (Run, &[u8])> {
        self.runs
            .iter()
            .map(|r| (*r, &self.buf[r.start..r.start + r.len]))
    }

    /// Forgets the runs, keeping the buffer's memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.runs.clear();
    }
}

/// What sending a batch did: runs and datagrams out, runs that failed (the first error kept).
#[derive(Debug, Default)]
pub struct Sent {
    pub runs: usize,
    pub datagrams: usize,
    pub failed: usize,
    pub first_error: Option<io::Error>,
}

/// Sends every run with `send` (destination, bytes, segment size when more than one datagram);
/// a run that fails is counted and the next one is still sent.
pub async fn send_runs<'a, F, Fut>(batcher: &'a Batcher, mut send: F) -> Sent
where
    F: FnMut(SocketAddr, &'a [u8], Option<usize>) -> Fut,
    Fut: std::future::Future<Output = io::Result<()>> + 'a,
{
    let mut sent = Sent::default();
    for (run, bytes) in batcher.runs() {
        let segment = (run.count > 1).then_some(run.segment);
        match send(run.dst, bytes, segment).await {
            Ok(()) => {
                sent.runs += 1;
                sent.datagrams += run.count;
            }
            Err(e) => {
                sent.failed += 1;
                sent.first_error.get_or_insert(e);
            }
        }
    }
    sent
}

/// quinn-udp's view of the socket: what the kernel offers (probed when made). None where the
/// OS refuses quinn-udp's socket options (Wine): then one datagram per call, as before.
pub struct BatchSocket {
    state: Option<UdpSocketState>,
}

impl BatchSocket {
    /// Sets `socket` up for GSO/GRO where the kernel has them, else for one datagram per call.
    pub fn new(socket: &UdpSocket) -> BatchSocket {
        match UdpSocketState::new(UdpSockRef::from(socket)) {
            Ok(state) => BatchSocket { state: Some(state) },
            Err(e) => {
                tracing::info!("UDP offloads unavailable ({e}): one datagram per call");
                BatchSocket::plain()
            }
        }
    }

    /// One datagram per send and per receive, no offloads.
    pub fn plain() -> BatchSocket {
        BatchSocket { state: None }
    }

    /// How many datagrams one send may carry (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.as_ref().map_or(1, |s| s.max_gso_segments())
    }

    /// How many datagrams one receive buffer may hold (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.as_ref().map_or(1, |s| s.gro_segments())
    }

    /// Sends `contents` to `dst` (as `segment`-byte datagrams when given), waiting while the
    /// socket's buffer is full.
    pub async fn send(
        &self,
        socket: &UdpSocket,
        dst: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        let Some(state) = &self.state else {
            // Without offloads runs hold one datagram; a longer one is cut here all the same.
            for d in split(contents, segment.unwrap_or(0)) {
                socket.send_to(d, dst).await?;
            }
            return Ok(());
        };
        let transmit = Transmit {
            destination: dst,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        socket
            .async_io(Interest::WRITABLE, || {
                state.try_send(UdpSockRef::from(socket), &transmit)
            })
            .await
    }

    /// Reads what has arrived into `rx` (`WouldBlock` when nothing); returns how many
    /// datagrams it holds now.
    pub fn try_recv(&self, socket: &UdpSocket, rx: &mut Receiver) -> io::Result<usize> {
        rx.filled = 0;
        let Some(state) = &self.state else {
            let (len, addr) = socket.try_recv_from(&mut rx.bufs[0])?;
            rx.meta[0] = RecvMeta {
                addr,
                len,
                stride: len,
                ..RecvMeta::default()
            };
            rx.filled = 1;
            return Ok(1);
        };
        let meta = &mut rx.meta;
        // On the stack: no allocation per receive (Receiver holds BATCH_SIZE buffers).
        let mut bufs = rx.bufs.iter_mut();
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = std::array::from_fn(|_| {
            IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..]))
        });
        let n = socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(socket), &mut slices, meta)
        })?;
        rx.filled = n;
        // Counted from the lengths, without cutting the buffers twice.
        Ok(meta[..n]
            .iter()
            .map(|m| m.len.div_ceil(m.stride.max(1)).max(1))
            .sum())
    }
}

/// Buffers for one `recvmmsg`: each holds one datagram, or a GRO run of them.
pub struct Receiver {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl Default for Receiver {
    fn default() -> Self {
        let n = quinn_udp::BATCH_SIZE;
        Receiver {
            bufs: vec![vec![0u8; RECV_BUFFER]; n],
            meta: vec![RecvMeta::default(); n],
            filled: 0,
        }
    }
}

impl Receiver {
    /// The datagrams of the last receive, with their senders, in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta
            .iter()
            .zip(&self.bufs)
            .take(self.filled)
            .flat_map(|(m, buf)| split(&buf[..m.len], m.stride).map(move |d| (m.addr, d)))
    }
}

/// A received buffer cut into its datagrams: `stride` bytes each, the last possibly shorter.
pub fn split(buf: &[u8], stride: usize) -> impl Iterator<Item = &[u8]> {
    let stride = if stride == 0 {
        buf.len().max(1)
    } else {
        stride
    };
    buf.chunks(stride)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn shape(b: &Batcher) -> Vec<(SocketAddr, usize, usize, usize)> {
        b.runs()
            .map(|(r, bytes)| (r.dst, r.segment, r.count, bytes.len()))
            .collect()
    }

    #[test]
    fn equal_datagrams_to_one_peer_make_one_run_and_a_shorter_one_ends_it() {
        let a = addr("192.0.2.1:41641");
        let mut b = Batcher::default();
        for _ in 0..3 {
            b.push(a, &[1u8; 1452], 64);
        }
        b.push(a, &[2u8; 100], 64);
        b.push(a, &[3u8; 1452], 64);
        assert_eq!(
            shape(&b),
            vec![(a, 1452, 4, 3 * 1452 + 100), (a, 1452, 1, 1452)]
        );
        let (_, bytes) = b.runs().next().unwrap();
        assert_eq!(bytes[3 * 1452], 2, "the short one is last in its run");
    }

    #[test]
    fn a_batch_that_mixes_peers_keeps_their_order() {
        let (a, c) = (addr("192.0.2.1:1"), addr("[2001:db8::1]:2"));
        let mut b = Batcher::default();
        b.push(a, &[1; 1000], 64);
        b.push(a, &[1; 1000], 64);
        b.push(c, &[2; 1000], 64);
        b.push(a, &[3; 1000], 64);
        assert_eq!(
            shape(&b),
            vec![(a, 1000, 2, 2000), (c, 1000, 1, 1000), (a, 1000, 1, 1000)]
        );
    }

    #[test]
    fn runs_stop_at_the_kernels_segment_limit_and_at_64_kib() {
        let a = addr("192.0.2.1:1");
        let mut b = Batcher::default();
        for _ in 0..5 {
            b.push(a, &[0; 100], 2);
        }
        assert_eq!(
            shape(&b).iter().map(|r| r.2).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let mut b = Batcher::default();
        // MTU-sized WireGuard datagrams (1420 + 32 bytes): 45 fit in 65,535 bytes, not 46.
        for _ in 0..50 {
            b.push(a, &[0; 1452], 64);
        }
        let counts: Vec<usize> = shape(&b).iter().map(|r| r.2).collect();
        assert_eq!(counts, vec![45, 5]);
        assert!(b.runs().all(|(_, bytes)| bytes.len() <= MAX_GSO_BYTES));
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        let a = addr("192.0.2.1:1");
        let mut b = Batcher::default();
        b.push(a, &[0; 148], 64); // a handshake-sized message
        b.push(a, &[0; 1452], 64);
        b.push(a, &[0; 1452], 64);
        assert_eq!(shape(&b), vec![(a, 148, 1, 148), (a, 1452, 2, 2904)]);
        b.clear();
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn a_failed_run_is_counted_and_the_rest_still_go() {
        let (a, c) = (addr("192.0.2.1:1"), addr("192.0.2.2:1"));
        let mut b = Batcher::default();
        for _ in 0..3 {
            b.push(a, &[1; 500], 64);
        }
        b.push(c, &[2; 500], 64);
        b.push(a, &[3; 500], 64);
        let mut seen = Vec::new();
        let sent = send_runs(&b, |dst, bytes, segment| {
            seen.push((dst, bytes.len(), segment));
            let fail = seen.len() == 1;
            async move {
                if fail {
                    // EIO: what Linux says when a driver cannot segment.
                    Err(io::Error::from_raw_os_error(5))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(
            seen,
            vec![(a, 1500, Some(500)), (c, 500, None), (a, 500, None)]
        );
        assert_eq!((sent.runs, sent.datagrams, sent.failed), (2, 2, 1));
        assert_eq!(sent.first_error.and_then(|e| e.raw_os_error()), Some(5));
    }

    #[test]
    fn a_coalesced_buffer_is_cut_at_its_stride() {
        let buf: Vec<u8> = (0..10).collect();
        let parts: Vec<&[u8]> = split(&buf, 4).collect();
        assert_eq!(parts, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        assert_eq!(split(&buf, 0).count(), 1, "no stride: one datagram");
    }

    /// Real sockets on loopback: a GSO run arrives as separate datagrams (in order), through
    /// GRO or not, and the one-per-call path delivers the same; `plain` forces the fallback
    /// that a system without quinn-udp's socket options (Wine) gets.
    async fn loopback(plain: bool) {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let make = |s: &UdpSocket| {
            if plain {
                BatchSocket::plain()
            } else {
                BatchSocket::new(s)
            }
        };
        let rx_batch = make(&rx);
        let tx_batch = make(&tx);
        if plain {
            assert_eq!((tx_batch.max_segments(), tx_batch.gro_segments()), (1, 1));
        } else if cfg!(target_os = "linux") {
            // Linux has had UDP GSO since 4.18: the run below must really go as one send.
            assert!(
                tx_batch.max_segments() >= 10,
                "no GSO: {}",
                tx_batch.max_segments()
            );
        }
        let mut receiver = Receiver::default();
        let dst = rx.local_addr().unwrap();
        let mut b = Batcher::default();
        for i in 0..10u8 {
            b.push(dst, &[i; 1200], tx_batch.max_segments());
        }
        b.push(dst, &[10; 300], tx_batch.max_segments());
        let gso = send_runs(&b, |d, bytes, seg| tx_batch.send(&tx, d, bytes, seg)).await;
        assert_eq!((gso.datagrams, gso.failed), (11, 0));
        if tx_batch.max_segments() >= 11 {
            assert_eq!(
                gso.runs, 1,
                "ten datagrams and a short tail in one GSO send"
            );
        }
        // Every datagram on its own.
        let mut one = Batcher::default();
        for i in 11..14u8 {
            one.push(dst, &[i; 1200], 1);
        }
        let single = send_runs(&one, |d, bytes, seg| tx_batch.send(&tx, d, bytes, seg)).await;
        assert_eq!((single.runs, single.datagrams), (3, 3));
        let mut got: Vec<(u8, usize)> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 14 && std::time::Instant::now() < deadline {
            rx.readable().await.unwrap();
            match rx_batch.try_recv(&rx, &mut receiver) {
                Ok(_) => {
                    for (from, d) in receiver.datagrams() {
                        assert_eq!(from, tx.local_addr().unwrap());
                        got.push((d[0], d.len()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut want: Vec<(u8, usize)> = (0..10u8).map(|i| (i, 1200)).collect();
        want.push((10, 300));
        want.extend((11..14u8).map(|i| (i, 1200)));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn gso_and_single_sends_arrive_as_the_datagrams_they_were() {
        loopback(false).await;
    }

    #[tokio::test]
    async fn without_offloads_the_same_datagrams_arrive_one_per_call() {
        loopback(true).await;
    }
}
