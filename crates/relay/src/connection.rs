//! One client's connection, after the HTTP upgrade: the key proof, control's authorisation,
//! then frames both ways until either side stops, a frame is bad, or the client goes silent.

use crate::metrics;
use crate::relay::{Forwarded, Outgoing, Registration, Relay, Shared, Target};
use pinhole_proto::key::Key;
use pinhole_proto::relay::{self as wire, Decoder, Frame, FrameError};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    #[error("connection closed by the client")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("unexpected frame before authentication")]
    Unexpected,
    #[error("refused: {0}")]
    Refused(String),
    #[error("client silent for {0:?}")]
    Silent(Duration),
    #[error("no key proof within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("closed by the relay (revoked, replaced by a newer connection, or shutting down)")]
    ClosedByRelay,
}

/// Bytes read at a time: little while a client is quiet (10,000 idle clients must stay small),
/// more once reads come back full.
const READ_SMALL: usize = 2 * 1024;
const READ_BIG: usize = 64 * 1024;
/// Bytes written at most per batch.
const WRITE_BATCH: usize = 64 * 1024;
/// Destinations one read's packets are grouped by at most; past this the groups made so far
/// are forwarded and new ones begun (the lookup is a linear scan).
const BATCH_DESTINATIONS: usize = 16;

impl Relay {
    /// Serves one client (connected from `peer`, when known) on an upgraded connection until
    /// it ends. An address that opens connections faster than the configured limit is refused
    /// before any work is done for it.
    pub async fn serve_connection<S>(&self, io: S, peer: Option<IpAddr>) -> ConnectionEnd
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if let Some(ip) = peer {
            if let Err(wait) = self
                .shared
                .handshakes
                .attempt(ip, std::time::Instant::now())
            {
                metrics::add(&self.shared.metrics.refused_rate_limited, 1);
                tracing::debug!(%ip, "relay client refused: too many connection attempts");
                let mut io = io;
                let reason = format!(
                    "too many connection attempts from this address: try again in {} s",
                    wait.as_secs().max(1)
                );
                let _ = io
                    .write_all(
                        &Frame::Refused {
                            reason: reason.clone(),
                        }
                        .to_bytes(),
                    )
                    .await;
                let _ = io.flush().await;
                let _ = io.shutdown().await;
                return ConnectionEnd::Refused(reason);
            }
        }
        let mut conn = Conn {
            shared: self.shared.clone(),
            io,
            decoder: Decoder::default(),
            sent_to: HashSet::new(),
        };
        conn.run().await
    }
}

struct Conn<S> {
    shared: Arc<Shared>,
    io: S,
    decoder: Decoder,
    /// Connected destinations this client has sent to (noted as their sender), at most
    /// [`MAX_DESTINATIONS`].
    sent_to: HashSet<Key>,
}

/// Destinations one client is noted as a sender to, at most.
const MAX_DESTINATIONS: usize = 4096;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    async fn run(&mut self) -> ConnectionEnd {
        let (key, network) = match self.handshake().await {
            Ok(k) => k,
            Err(e) => {
                if let ConnectionEnd::Refused(reason) = &e {
                    let _ = self
                        .io
                        .write_all(
                            &Frame::Refused {
                                reason: reason.clone(),
                            }
                            .to_bytes(),
                        )
                        .await;
                    let _ = self.io.shutdown().await;
                }
                return e;
            }
        };
        let Registration {
            id,
            mut rx,
            queued,
            close,
        } = self.shared.register(key, network.clone());
        metrics::add(&self.shared.metrics.accepted, 1);
        tracing::debug!(key = %key.short(), "relay client connected");
        let info = Frame::ServerInfo {
            keepalive_secs: self.shared.config.keepalive.as_secs().clamp(1, 3600) as u16,
        };
        let end = match self.write_now(&info.to_bytes()).await {
            Ok(()) => self.serve(key, &network, &mut rx, &queued, &close).await,
            Err(e) => ConnectionEnd::from(e),
        };
        self.shared.unregister(&key, id, &self.sent_to);
        tracing::debug!(key = %key.short(), "relay client gone: {end}");
        if matches!(end, ConnectionEnd::Frame(_) | ConnectionEnd::Silent(_)) {
            metrics::add(&self.shared.metrics.protocol_errors, 1);
        }
        end
    }

    /// Writes and flushes.
    async fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads until a whole frame has arrived.
    async fn read_frame(&mut self) -> Result<Frame, ConnectionEnd> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ConnectionEnd> {
        let mut chunk = vec![0u8; READ_SMALL];
        let n = self.io.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectionEnd::Closed);
        }
        self.decoder.push(&chunk[..n]);
        Ok(())
    }

    async fn handshake(&mut self) -> Result<(Key, Arc<str>), ConnectionEnd> {
        let challenge: [u8; 32] = rand::random();
        let hello = Frame::ServerKey {
            version: wire::VERSION,
            key: self.shared.public,
            challenge,
        };
        self.io.write_all(&hello.to_bytes()).await?;
        self.io.flush().await?;
        let limit = self.shared.config.handshake_timeout;
        let frame = tokio::time::timeout(limit, self.read_frame())
            .await
            .map_err(|_| ConnectionEnd::HandshakeTimeout(limit))??;
        let Frame::ClientInfo { key, proof } = frame else {
            return Err(ConnectionEnd::Unexpected);
        };
        let m = &self.shared.metrics;
        if !wire::verify_key_proof(&self.shared.private, &challenge, &key, &proof) {
            metrics::add(&m.refused_bad_proof, 1);
            tracing::info!(key = %key.short(), "relay client refused: key proof failed");
            return Err(ConnectionEnd::Refused(
                "the proof of the node key is wrong".into(),
            ));
        }
        match self.shared.auth.check(&key).await {
            // The answer (server-info) is sent by run() once the client is registered, so a
            // packet sent to it right after it hears the answer finds it.
            Ok(Some(grant)) => Ok((key, grant.network)),
            Ok(None) => {
                metrics::add(&m.refused_unknown_key, 1);
                tracing::info!(key = %key.short(), "relay client refused: not a node of the coordination server");
                Err(ConnectionEnd::Refused(
                    "the node key is not authorised by the coordination server".into(),
                ))
            }
            Err(e) => {
                metrics::add(&m.refused_control_unreachable, 1);
                tracing::warn!(key = %key.short(), "relay client refused: {e}");
                Err(ConnectionEnd::Refused(e.to_string()))
            }
        }
    }

    async fn serve(
        &mut self,
        key: Key,
        network: &Arc<str>,
        rx: &mut tokio::sync::mpsc::Receiver<Outgoing>,
        queued: &AtomicUsize,
        close: &tokio::sync::Notify,
    ) -> ConnectionEnd {
        let keepalive = self.shared.config.keepalive;
        let silence = keepalive * 5 / 2;
        let mut stop = self.shared.stop.subscribe();
        if *stop.borrow() {
            return ConnectionEnd::ClosedByRelay;
        }
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        let mut heard = Instant::now();
        let mut out: Vec<u8> = Vec::new();
        let mut want = READ_SMALL;
        let mut batches = Batches::default();
        loop {
            // Replies made while reading (peer gone) go out before waiting again.
            if !out.is_empty() {
                // Flushed: a WebSocket sends a message only then (a no-op on TCP).
                if let Err(e) = async {
                    self.io.write_all(&out).await?;
                    self.io.flush().await
                }
                .await
                {
                    return e.into();
                }
                out.clear();
            }
            tokio::select! {
                // Read straight into the decoder's buffer: the packets are copied once, into
                // their destinations' batches.
                r = self.io.read_buf(self.decoder.buffer(want)) => {
                    let n = match r {
                        Ok(0) => return ConnectionEnd::Closed,
                        Ok(n) => n,
                        Err(e) => return e.into(),
                    };
                    if n >= want {
                        want = READ_BIG;
                    } else if n < READ_SMALL {
                        want = READ_SMALL;
                    }
                    heard = Instant::now();
                    if let Err(e) = self.handle_frames(&key, network, &mut batches, n, &mut out) {
                        return e;
                    }
                }
                q = rx.recv() => {
                    let Some(first) = q else { return ConnectionEnd::ClosedByRelay };
                    queued.fetch_sub(first.packets, Ordering::Relaxed);
                    // The first batch is written from where the sender's connection put it.
                    if out.is_empty() {
                        out = first.bytes;
                    } else {
                        out.extend_from_slice(&first.bytes);
                    }
                    while out.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(more) => {
                                queued.fetch_sub(more.packets, Ordering::Relaxed);
                                out.extend_from_slice(&more.bytes);
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > silence {
                        return ConnectionEnd::Silent(silence);
                    }
                    Frame::KeepAlive.encode(&mut out);
                }
                _ = close.notified() => return ConnectionEnd::ClosedByRelay,
                _ = stop.changed() => return ConnectionEnd::ClosedByRelay,
            }
        }
    }

    /// Handles the whole frames read so far (`read` bytes came in last): packets are grouped by
    /// destination, in order, and each group is forwarded as one batch.
    fn handle_frames(
        &mut self,
        key: &Key,
        network: &str,
        batches: &mut Batches,
        read: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ConnectionEnd> {
        let m = &self.shared.metrics;
        let (mut packets, mut bytes) = (0u64, 0u64);
        let mut result = Ok(());
        loop {
            let (kind, payload) = match self.decoder.next_raw() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            if kind == wire::kind::SEND_PACKET && payload.len() >= 32 {
                // The hot path: the packet is framed for its destination straight from the
                // read buffer, into that destination's batch.
                let mut dst = Key([0; 32]);
                dst.0.copy_from_slice(&payload[..32]);
                let packet = &payload[32..];
                packets += 1;
                bytes += packet.len() as u64;
                if batches.is_full_without(&dst) {
                    forward_all(&self.shared, &mut self.sent_to, key, batches, out);
                }
                batches.push(&self.shared, network, key, dst, packet, read);
                continue;
            }
            match Frame::decode(kind, payload) {
                Ok(Frame::KeepAlive) => metrics::add(&m.keepalives_in, 1),
                Ok(_) => {
                    result = Err(ConnectionEnd::Unexpected);
                    break;
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        metrics::add(&m.packets_in, packets);
        metrics::add(&m.bytes_in, bytes);
        // What came before a bad frame is forwarded like any packet.
        forward_all(&self.shared, &mut self.sent_to, key, batches, out);
        result
    }
}

/// Forwards every batch made so far; unknown destinations are answered with peer-gone.
fn forward_all(
    shared: &Shared,
    sent_to: &mut HashSet<Key>,
    key: &Key,
    batches: &mut Batches,
    out: &mut Vec<u8>,
) {
    let m = &shared.metrics;
    for mut g in batches.groups.drain(..) {
        let Some(target) = &g.target else {
            metrics::add(&m.drops_no_peer, g.dropped as u64);
            // Unknown destinations leave no trace: only peers that are here are noted.
            Frame::PeerGone { key: g.dst }.encode(out);
            continue;
        };
        if g.dropped > 0 {
            metrics::add(&m.drops_queue_full, g.dropped as u64);
        }
        if g.batch.packets == 0 {
            continue;
        }
        // A group that took little of the room it was given gives the rest back before it
        // waits in a queue.
        if g.batch.bytes.capacity() > 2 * g.batch.bytes.len() + 4096 {
            g.batch.bytes.shrink_to_fit();
        }
        if shared.deliver(target, g.batch) == Forwarded::NoPeer {
            Frame::PeerGone { key: g.dst }.encode(out);
        } else if sent_to.len() < MAX_DESTINATIONS && sent_to.insert(g.dst) {
            shared.note_sender(g.dst, *key);
        }
    }
}

/// One read's packets for one destination.
struct Group {
    dst: Key,
    /// Its queue, if it is connected in the sender's network.
    target: Option<Target>,
    /// Packets its queue had room for when it was looked up; more are dropped uncopied.
    room: usize,
    batch: Outgoing,
    /// Packets dropped uncopied: no room in its queue, or (without a target) no such peer.
    dropped: usize,
}

/// One read's packets, framed for their destinations and grouped by destination in the order
/// each was first named.
#[derive(Default)]
struct Batches {
    groups: Vec<Group>,
}

impl Batches {
    /// Whether adding a packet for `dst` would need one group more than allowed.
    fn is_full_without(&self, dst: &Key) -> bool {
        self.groups.len() >= BATCH_DESTINATIONS && !self.groups.iter().any(|g| g.dst == *dst)
    }

    /// Adds a packet from `src` to `dst` (in `network`); a new group starts with room for
    /// `hint` bytes (what the last read brought, at most [`WRITE_BATCH`]).
    fn push(
        &mut self,
        shared: &Shared,
        network: &str,
        src: &Key,
        dst: Key,
        packet: &[u8],
        hint: usize,
    ) {
        let i = match self.groups.iter().position(|g| g.dst == dst) {
            Some(i) => i,
            None => {
                let target = shared.target(network, &dst);
                let room = target.as_ref().map_or(0, |t| shared.room(t));
                self.groups.push(Group {
                    dst,
                    target,
                    room,
                    batch: Outgoing::default(),
                    dropped: 0,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[i];
        // No target: room is 0.
        if g.batch.packets >= g.room {
            g.dropped += 1;
            return;
        }
        if g.batch.bytes.capacity() == 0 {
            let need = wire::PACKET_OVERHEAD + packet.len();
            g.batch.bytes = Vec::with_capacity(hint.clamp(need, WRITE_BATCH.max(need)));
        }
        Frame::append_packet(false, src, packet, &mut g.batch.bytes);
        g.batch.packets += 1;
    }
}
