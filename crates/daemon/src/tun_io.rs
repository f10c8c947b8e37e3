//! Batched reads and writes on the TUN device.
//!
//! On Linux the device is opened with offloads (virtio-net header): one read returns a TCP/UDP
//! super-packet of up to 64 KiB that tun-rs splits into MTU-sized packets, and writes coalesce
//! consecutive segments of a flow (GRO) into one, so the kernel sees far fewer syscalls. Elsewhere
//! (and where the kernel refuses offloads) it is one packet per read and per write.

use std::io;
use tun_rs::AsyncDevice;

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
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets waiting to be written, each after VIRTIO_NET_HDR_LEN bytes of headroom.
    out: Vec<Vec<u8>>,
    out_len: usize,
}

impl TunIo {
    pub fn new(device: AsyncDevice, mtu: u16) -> Self {
        // Split segments are at most one MTU; without offloads a read is one packet.
        let seg = usize::from(mtu).max(1280) + 128;
        let batch = IDEAL_BATCH_SIZE;
        TunIo {
            device,
            #[cfg(target_os = "linux")]
            original: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            #[cfg(target_os = "linux")]
            gro: GROTable::default(),
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

    /// Writes every queued packet.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out_len == 0 {
            return Ok(());
        }
        let n = std::mem::take(&mut self.out_len);
        #[cfg(target_os = "linux")]
        {
            self.device
                .send_multiple(&mut self.gro, &mut self.out[..n], VIRTIO_NET_HDR_LEN)
                .await
                .map(|_| ())
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
