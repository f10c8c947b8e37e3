//! Batched reads and writes on the TUN device.
//!
//! On Linux the device is opened with offloads (virtio-net header): one read returns a TCP/UDP
//! super-packet of up to 64 KiB that tun-rs splits into MTU-sized packets, and writes coalesce
//! consecutive segments of a flow (GRO) into one, so the kernel sees far fewer syscalls: TCP
//! with [`crate::tun_gro`] as the packets are queued (one copy each), UDP with tun-rs's GRO at
//! the flush. Elsewhere (and where the kernel refuses offloads) it is one packet per read and
//! per write.

use std::io;
use tun_rs::AsyncDevice;

#[cfg(target_os = "linux")]
use crate::tun_gro::{Coalescer, VNET_HDR_LEN};
#[cfg(target_os = "linux")]
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

#[cfg(not(target_os = "linux"))]
const IDEAL_BATCH_SIZE: usize = 1;
#[cfg(not(target_os = "linux"))]
const VIRTIO_NET_HDR_LEN: usize = 0;

/// Largest packet (a TCP/UDP super-packet with offloads) one read returns.
#[cfg(target_os = "linux")]
const MAX_PACKET: usize = 65535;

pub struct TunIo {
    device: AsyncDevice,
    #[cfg(target_os = "linux")]
    original: Vec<u8>,
    #[cfg(target_os = "linux")]
    gro: GROTable,
    /// TCP coalescing and every packet but UDP, when the device takes virtio headers.
    #[cfg(target_os = "linux")]
    tcp: Option<Coalescer>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets waiting to be written, each after VIRTIO_NET_HDR_LEN bytes of headroom (UDP,
    /// or all of them without offloads).
    out: Vec<Vec<u8>>,
    out_len: usize,
}

impl TunIo {
    pub fn new(device: AsyncDevice, mtu: u16) -> Self {
        // Split segments are at most one MTU; without offloads a read is one packet.
        let seg = usize::from(mtu).max(1280) + 128;
        let batch = IDEAL_BATCH_SIZE;
        #[cfg(target_os = "linux")]
        let tcp = (device.tcp_gso() && VIRTIO_NET_HDR_LEN == VNET_HDR_LEN).then(Coalescer::default);
        TunIo {
            device,
            #[cfg(target_os = "linux")]
            original: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            #[cfg(target_os = "linux")]
            gro: GROTable::default(),
            #[cfg(target_os = "linux")]
            tcp,
            bufs: vec![vec![0u8; seg]; batch],
            sizes: vec![0; batch],
            out: Vec::new(),
            out_len: 0,
        }
    }

    /// The i-th packet of the last batch read.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.sizes[i]]
    }

    /// Waits for and reads one batch; returns how many packets it holds.
    pub async fn recv_batch(&mut self) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            self.device
                .recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0)
                .await
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.sizes[0] = self.device.recv(&mut self.bufs[0]).await?;
            Ok(1)
        }
    }

    /// Reads one batch if one is ready (`WouldBlock` otherwise).
    pub fn try_recv_batch(&mut self) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            self.device
                .try_recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0)
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.sizes[0] = self.device.try_recv(&mut self.bufs[0])?;
            Ok(1)
        }
    }

    /// Queues a packet for the next [`TunIo::flush`].
    pub fn queue(&mut self, packet: &[u8]) {
        #[cfg(target_os = "linux")]
        if let Some(tcp) = &mut self.tcp {
            if !is_udp(packet) {
                tcp.push(packet);
                return;
            }
        }
        if self.out_len == self.out.len() {
            // Buffers are reused; GRO grows the one it coalesces into as it needs.
            self.out.push(Vec::new());
        }
        let buf = &mut self.out[self.out_len];
        buf.clear();
        buf.resize(VIRTIO_NET_HDR_LEN, 0);
        buf.extend_from_slice(packet);
        self.out_len += 1;
    }

    /// Writes every queued packet; the first error is returned after the rest were tried.
    pub async fn flush(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        let mut result = Ok(());
        #[cfg(target_os = "linux")]
        if let Some(tcp) = &mut self.tcp {
            if !tcp.is_empty() {
                for buf in tcp.finish() {
                    if let Err(e) = self.device.send(buf).await {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
                tcp.clear();
            }
        }
        if self.out_len == 0 {
            #[cfg(target_os = "linux")]
            return result;
            #[cfg(not(target_os = "linux"))]
            return Ok(());
        }
        let n = std::mem::take(&mut self.out_len);
        #[cfg(target_os = "linux")]
        {
            let sent = self
                .device
                .send_multiple(&mut self.gro, &mut self.out[..n], VIRTIO_NET_HDR_LEN)
                .await
                .map(|_| ());
            result.and(sent)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut result = Ok(());
            for buf in &self.out[..n] {
                if let Err(e) = self.device.send(&buf[VIRTIO_NET_HDR_LEN..]).await {
                    result = Err(e);
                }
            }
            result
        }
    }
}

/// An IPv4 or IPv6 (without extension headers) UDP packet: tun-rs coalesces those.
#[cfg(target_os = "linux")]
fn is_udp(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9) == Some(&17),
        Some(6) => packet.get(6) == Some(&17),
        _ => false,
    }
}
