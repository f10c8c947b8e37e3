//! One client's connection, after the HTTP upgrade: the key proof, control's authorisation,
//! then frames both ways until either side stops, a frame is bad, or the client goes silent.

use crate::metrics;
use crate::relay::{Forwarded, Relay, Shared};
use pinhole_proto::key::Key;
use pinhole_proto::relay::{self as wire, Decoder, Frame, FrameError};
use std::collections::HashSet;
use std::net::IpAddr;
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
        let (id, mut rx, close) = self.shared.register(key, network.clone());
        metrics::add(&self.shared.metrics.accepted, 1);
        tracing::debug!(key = %key.short(), "relay client connected");
        let info = Frame::ServerInfo {
            keepalive_secs: self.shared.config.keepalive.as_secs().clamp(1, 3600) as u16,
        };
        let end = match self.write_now(&info.to_bytes()).await {
            Ok(()) => self.serve(key, &network, &mut rx, &close).await,
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
        rx: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
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
        let mut chunk: Vec<u8> = Vec::new();
        let mut want = READ_SMALL;
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
            if chunk.capacity() < want {
                chunk.reserve(want);
            }
            tokio::select! {
                r = self.io.read_buf(&mut chunk) => {
                    let n = match r {
                        Ok(0) => return ConnectionEnd::Closed,
                        Ok(n) => n,
                        Err(e) => return e.into(),
                    };
                    self.decoder.push(&chunk);
                    if n == chunk.capacity() {
                        want = READ_BIG;
                        chunk.clear();
                    } else if n < READ_SMALL && chunk.capacity() > READ_SMALL {
                        want = READ_SMALL;
                        chunk = Vec::new();
                    } else {
                        chunk.clear();
                    }
                    heard = Instant::now();
                    if let Err(e) = self.handle_frames(&key, network, &mut out) {
                        return e;
                    }
                }
                q = rx.recv() => {
                    let Some(first) = q else { return ConnectionEnd::ClosedByRelay };
                    out.extend_from_slice(&first);
                    while out.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(more) => out.extend_from_slice(&more),
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

    fn handle_frames(
        &mut self,
        key: &Key,
        network: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), ConnectionEnd> {
        let m = &self.shared.metrics;
        while let Some((kind, payload)) = self.decoder.next_raw()? {
            if kind == wire::kind::SEND_PACKET && payload.len() >= 32 {
                // The hot path: the packet is forwarded straight from the read buffer.
                let mut dst = Key([0; 32]);
                dst.0.copy_from_slice(&payload[..32]);
                let packet = &payload[32..];
                metrics::add(&m.packets_in, 1);
                metrics::add(&m.bytes_in, packet.len() as u64);
                if self.shared.forward(key, network, &dst, packet) == Forwarded::NoPeer {
                    // Unknown destinations leave no trace: only peers that are here are noted.
                    Frame::PeerGone { key: dst }.encode(out);
                } else if self.sent_to.len() < MAX_DESTINATIONS && self.sent_to.insert(dst) {
                    self.shared.note_sender(dst, *key);
                }
                continue;
            }
            match Frame::decode(kind, payload)? {
                Frame::KeepAlive => metrics::add(&m.keepalives_in, 1),
                _ => return Err(ConnectionEnd::Unexpected),
            }
        }
        Ok(())
    }
}
