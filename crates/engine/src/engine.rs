//! The engine: a set of WireGuard peers behind one private key, routing TUN packets to them by
//! allowed IPs and network datagrams to them by session index.

use crate::allowed_ips::AllowedIps;
use crate::clock::Clock;
use crate::peer::{Peer, PeerSettings, PeerStatus};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use pinhole_proto::ip;
use pinhole_proto::key::Key;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often WireGuard's timers (handshake retry, rekey, keepalive, expiry) are evaluated.
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// Handshake messages per second accepted before cookies are demanded (WireGuard's DoS defence).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Largest datagram or IP packet handled, plus WireGuard's overhead.
const MAX_PACKET: usize = 65535 + 32;
/// Packets queued for the network or the TUN device before new ones are dropped.
const MAX_QUEUE: usize = 4096;

/// A UDP datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Something the engine wants its owner (and the user) to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A WireGuard handshake with the peer completed: a fresh session is in use.
    HandshakeCompleted { peer: Key },
    /// The peer's endpoint changed (it roamed, or its NAT mapping changed).
    EndpointChanged { peer: Key, endpoint: SocketAddr },
}

/// Counters of what the engine dropped and why; all only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams that were not well-formed or not authentic WireGuard messages.
    pub rx_invalid: u64,
    /// Authentic-looking datagrams for a session or key we do not know.
    pub rx_unknown_peer: u64,
    /// Decrypted packets whose source address is not in the sender's allowed IPs.
    pub rx_disallowed_source: u64,
    /// Packets from the TUN device with no peer for their destination.
    pub tun_no_route: u64,
    /// Packets from the TUN device that were not IPv4/IPv6.
    pub tun_invalid: u64,
    /// Datagrams for a peer whose endpoint is not known yet.
    pub tx_no_endpoint: u64,
    /// Packets dropped because the owner did not drain a queue.
    pub queue_full: u64,
}

/// Configuration errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("a peer cannot have the engine's own public key")]
    OwnKey,
    #[error("too many peers (at most {0})")]
    TooManyPeers(u32),
}

/// The sans-IO WireGuard engine.
pub struct Engine {
    private: StaticSecret,
    public: PublicKey,
    clock: Clock,
    rate_limiter: Arc<RateLimiter>,
    /// Peers by their 24-bit index (the upper bits of every session index boringtun hands out).
    peers: HashMap<u32, Peer>,
    by_key: HashMap<Key, u32>,
    routes: AllowedIps<u32>,
    next_index: u32,
    next_tick: Instant,
    next_rate_reset: Instant,
    transmits: VecDeque<Transmit>,
    tun_out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stats: EngineStats,
    buf: Vec<u8>,
}

impl Engine {
    /// A new engine with the node's private key; `now` is the origin of the engine's clock.
    pub fn new(private_key: Key, now: Instant) -> Self {
        let private = StaticSecret::from(private_key.0);
        let public = PublicKey::from(&private);
        let clock = Clock::new(now);
        clock.sync(now);
        Engine {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
            clock,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::default(),
            next_index: 1,
            next_tick: now,
            next_rate_reset: now + Duration::from_secs(1),
            transmits: VecDeque::new(),
            tun_out: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            buf: vec![0u8; MAX_PACKET],
        }
    }

    /// The node's public key.
    pub fn public_key(&self) -> Key {
        Key(self.public.to_bytes())
    }

    /// Adds a peer, or updates it in place if its key is known (sessions survive an update).
    pub fn upsert_peer(&mut self, now: Instant, settings: PeerSettings) -> Result<(), EngineError> {
        self.clock.sync(now);
        if settings.public_key.0 == self.public.to_bytes() {
            return Err(EngineError::OwnKey);
        }
        if let Some(&idx) = self.by_key.get(&settings.public_key) {
            self.routes.remove_value(&idx);
            for net in &settings.allowed_ips {
                self.routes.insert(*net, idx);
            }
            if let Some(peer) = self.peers.get_mut(&idx) {
                if settings.endpoint.is_some() {
                    peer.endpoint = settings.endpoint;
                }
                peer.settings = settings;
            }
            return Ok(());
        }
        let idx = self.allocate_index()?;
        let tunn = Tunn::new(
            self.private.clone(),
            PublicKey::from(settings.public_key.0),
            settings.preshared_key.map(|k| k.0),
            settings.persistent_keepalive,
            idx,
            Some(self.rate_limiter.clone()),
        );
        for net in &settings.allowed_ips {
            self.routes.insert(*net, idx);
        }
        self.by_key.insert(settings.public_key, idx);
        self.peers.insert(idx, Peer::new(tunn, settings));
        Ok(())
    }

    /// Removes a peer and its routes.
    pub fn remove_peer(&mut self, key: &Key) {
        if let Some(idx) = self.by_key.remove(key) {
            self.routes.remove_value(&idx);
            self.peers.remove(&idx);
        }
    }

    fn allocate_index(&mut self) -> Result<u32, EngineError> {
        const LIMIT: u32 = 1 << 24;
        if self.peers.len() as u32 >= LIMIT - 1 {
            return Err(EngineError::TooManyPeers(LIMIT - 1));
        }
        loop {
            let idx = self.next_index;
            self.next_index = (self.next_index + 1) % LIMIT;
            if idx != 0 && !self.peers.contains_key(&idx) {
                return Ok(idx);
            }
        }
    }

    /// An IP packet read from the TUN device.
    pub fn handle_tun(&mut self, now: Instant, packet: &[u8]) {
        let Some(dst) = ip::destination(packet) else {
            self.stats.tun_invalid += 1;
            return;
        };
        let Some(&idx) = self.routes.lookup(dst) else {
            self.stats.tun_no_route += 1;
            return;
        };
        self.clock.sync(now);
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        match peer.tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(out) => {
                peer.tx_bytes += packet.len() as u64;
                peer.tx_packets += 1;
                push_transmit(&mut self.transmits, &mut self.stats, peer.endpoint, out);
            }
            TunnResult::Err(e) => tracing::debug!(?e, "encapsulate failed"),
            _ => {}
        }
    }

    /// A UDP datagram received from `from`.
    pub fn handle_network(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.clock.sync(now);
        let mut cookie = [0u8; 64];
        let packet = match self
            .rate_limiter
            .verify_packet(Some(from.ip()), datagram, &mut cookie)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(reply)) => {
                // Under load: answer with a cookie instead of doing the handshake's work.
                push_transmit(&mut self.transmits, &mut self.stats, Some(from), reply);
                return;
            }
            Err(_) => {
                self.stats.rx_invalid += 1;
                return;
            }
        };
        let idx = match &packet {
            Packet::HandshakeInit(init) => {
                match parse_handshake_anon(&self.private, &self.public, init) {
                    Ok(half) => match self.by_key.get(&Key(half.peer_static_public)) {
                        Some(&idx) => idx,
                        None => {
                            self.stats.rx_unknown_peer += 1;
                            return;
                        }
                    },
                    Err(_) => {
                        self.stats.rx_invalid += 1;
                        return;
                    }
                }
            }
            Packet::HandshakeResponse(p) => p.receiver_idx >> 8,
            Packet::PacketCookieReply(p) => p.receiver_idx >> 8,
            Packet::PacketData(p) => p.receiver_idx >> 8,
        };
        let is_data = matches!(packet, Packet::PacketData(_));
        let Some(peer) = self.peers.get_mut(&idx) else {
            self.stats.rx_unknown_peer += 1;
            return;
        };

        let (out, src): (&[u8], IpAddr) =
            match peer
                .tunn
                .decapsulate(Some(from.ip()), datagram, &mut self.buf)
            {
                TunnResult::WriteToTunnelV4(out, src) => (out, src.into()),
                TunnResult::WriteToTunnelV6(out, src) => (out, src.into()),
                TunnResult::Done => (&[], from.ip()),
                TunnResult::WriteToNetwork(out) => {
                    push_transmit(&mut self.transmits, &mut self.stats, Some(from), out);
                    // Packets queued while the handshake was in flight go out now.
                    while let TunnResult::WriteToNetwork(out) =
                        peer.tunn.decapsulate(None, &[], &mut self.buf)
                    {
                        push_transmit(&mut self.transmits, &mut self.stats, Some(from), out);
                    }
                    (&[], from.ip())
                }
                TunnResult::Err(WireGuardError::UnderLoad) => return,
                TunnResult::Err(e) => {
                    tracing::trace!(?e, %from, "dropped datagram");
                    self.stats.rx_invalid += 1;
                    return;
                }
            };
        if !out.is_empty() {
            deliver(
                &self.routes,
                idx,
                peer,
                src,
                out,
                &mut self.tun_out,
                &mut self.stats,
            );
        }
        // WireGuard's roaming: the last authentic source is where the peer is.
        if peer.endpoint != Some(from) {
            peer.endpoint = Some(from);
            self.events.push_back(Event::EndpointChanged {
                peer: peer.settings.public_key,
                endpoint: from,
            });
        }
        if (!is_data || peer.handshakes == 0) && peer.check_new_handshake(now) {
            self.events.push_back(Event::HandshakeCompleted {
                peer: peer.settings.public_key,
            });
        }
    }

    /// Runs WireGuard's timers if their tick is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.clock.sync(now);
        self.next_tick = now + TIMER_TICK;
        if now >= self.next_rate_reset {
            self.rate_limiter.reset_count();
            self.next_rate_reset = now + Duration::from_secs(1);
        }
        for peer in self.peers.values_mut() {
            match peer.tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(out) => {
                    push_transmit(&mut self.transmits, &mut self.stats, peer.endpoint, out)
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(?e, "timer error"),
                _ => {}
            }
            if peer.check_new_handshake(now) {
                self.events.push_back(Event::HandshakeCompleted {
                    peer: peer.settings.public_key,
                });
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next decrypted IP packet to write to the TUN device.
    pub fn poll_tun(&mut self) -> Option<Vec<u8>> {
        self.tun_out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Drop counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The state of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let mut v: Vec<PeerStatus> = self.peers.values().map(Peer::status).collect();
        v.sort_by_key(|p| p.public_key);
        v
    }

    /// The state of one peer.
    pub fn peer(&self, key: &Key) -> Option<PeerStatus> {
        let idx = self.by_key.get(key)?;
        self.peers.get(idx).map(Peer::status)
    }
}

fn push_transmit(
    q: &mut VecDeque<Transmit>,
    stats: &mut EngineStats,
    dst: Option<SocketAddr>,
    payload: &[u8],
) {
    let Some(dst) = dst else {
        stats.tx_no_endpoint += 1;
        return;
    };
    if q.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    q.push_back(Transmit {
        dst,
        payload: payload.to_vec(),
    });
}

/// Hands a decrypted packet to the TUN queue if its source is one of the sender's allowed IPs.
fn deliver(
    routes: &AllowedIps<u32>,
    idx: u32,
    peer: &mut Peer,
    src: IpAddr,
    packet: &[u8],
    tun_out: &mut VecDeque<Vec<u8>>,
    stats: &mut EngineStats,
) {
    if routes.lookup(src) != Some(&idx) {
        stats.rx_disallowed_source += 1;
        return;
    }
    if tun_out.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    peer.rx_bytes += packet.len() as u64;
    peer.rx_packets += 1;
    tun_out.push_back(packet.to_vec());
}
