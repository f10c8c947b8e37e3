//! The engine: a set of WireGuard peers behind one private key, routing TUN packets to them by
//! allowed IPs and network datagrams to them by session index, over UDP when the peer's endpoint
//! answers and through the peer's home relay when it does not.
//!
//! For a peer with a disco key (every peer from the map) the direct path is found and kept by
//! disco pings (see [`crate::discovery`]): traffic starts over the relay at once, pings and a
//! call-me-maybe go out in parallel, the first pong makes the path direct. Disco packets come
//! and go on the same UDP socket and relay as WireGuard; their first bytes tell them apart.
//!
//! For a plain WireGuard peer (a static configuration) the direct path is trusted while
//! authentic packets arrive over UDP; while it is not, packets go to the relay, handshake
//! initiations go both ways, and a WireGuard keepalive over UDP every few seconds probes the
//! direct path. A keepalive that arrives over UDP after a quiet spell is answered over UDP, so
//! both sides learn at once that the direct path works.

use crate::allowed_ips::AllowedIps;
use crate::clock::Clock;
use crate::discovery::{Discovery, Send};
use crate::peer::{Path, Peer, PeerDisco, PeerSettings, PeerStatus, MAX_CANDIDATES};
use crate::transmit::{RelayTransmit, SocketId, SocketRequest, Transmit, MAIN_SOCKET};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use pinhole_proto::disco::{self, DiscoBox, Message, TxId};
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use pinhole_proto::ip;
use pinhole_proto::key::{Key, PrivateKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often WireGuard's timers (handshake retry, rekey, keepalive, expiry) are evaluated while
/// any peer has something going on; with none, the engine has no deadline at all.
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// The deadline an engine with nothing to do gives (far away: nothing is due).
const IDLE_DEADLINE: Duration = Duration::from_secs(3600);
/// Handshake messages per second accepted before cookies are demanded (WireGuard's DoS defence).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Largest datagram or IP packet handled, plus WireGuard's overhead.
const MAX_PACKET: usize = 65535 + 32;
/// Packets queued for the network or the TUN device before new ones are dropped.
const MAX_QUEUE: usize = 4096;

/// How often the direct path is probed while packets go through a relay.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A trusted direct path with nothing heard for this long is probed (before its trust runs out).
const HEARTBEAT_AFTER: Duration = Duration::from_secs(8);
/// Peers with no traffic for this long are not probed (WireGuard's session ends at 180 s).
const PROBE_WHILE_ACTIVE: Duration = Duration::from_secs(120);
/// A packet over UDP is answered with a keepalive over UDP unless one went out this recently.
const ANSWER_GAP: Duration = Duration::from_secs(1);

/// Where an incoming packet came from.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    Udp(SocketId, SocketAddr),
    Relay { region: &'a Arc<str>, from: Key },
}

/// What the engine wants sent: datagrams over UDP and packets through relays.
#[derive(Default)]
struct Outbox {
    udp: VecDeque<Transmit>,
    relay: VecDeque<RelayTransmit>,
    sockets: VecDeque<SocketRequest>,
}

/// Something the engine wants its owner (and the user) to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A WireGuard handshake with the peer completed: a fresh session is in use.
    HandshakeCompleted { peer: Key },
    /// The peer's endpoint changed (it roamed, or its NAT mapping changed).
    EndpointChanged { peer: Key, endpoint: SocketAddr },
    /// The direct path to the peer stopped answering and none replaces it: packets go
    /// through the relay while discovery looks for a new one. This node's own public address
    /// may have changed (its router rebooted): the shell asks STUN again.
    DirectLost { peer: Key },
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
    /// Datagrams for a peer with neither an endpoint nor a relay known yet.
    pub tx_no_endpoint: u64,
    /// Packets received through a relay.
    pub rx_relayed: u64,
    /// Packets sent through a relay.
    pub tx_relayed: u64,
    /// Keepalives sent over UDP to probe or confirm a direct path.
    pub tx_probes: u64,
    /// Handshake initiations sent again at once because the peer's path changed.
    pub tx_init_resent: u64,
    /// Disco messages sent (pings, pongs, call-me-maybes) and received authentic.
    pub tx_disco: u64,
    pub rx_disco: u64,
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

/// This node's disco identity and what it tells peers about itself.
struct OwnDisco {
    private: PrivateKey,
    /// This node's endpoints, as published (sent in call-me-maybes).
    endpoints: Vec<Endpoint>,
    /// Whether they show a NAT that maps every destination to a random port.
    random_ports: bool,
    rng: StdRng,
}

/// The sans-IO WireGuard engine.
pub struct Engine {
    private: StaticSecret,
    public: PublicKey,
    clock: Clock,
    rate_limiter: Arc<RateLimiter>,
    /// Peers by their 24-bit index (the upper bits of every session index boringtun hands out).
    /// Boxed: a map of 10,000 peers keeps spare slots of 16 bytes, not of a whole peer.
    peers: HashMap<u32, Box<Peer>>,
    by_key: HashMap<Key, u32>,
    routes: AllowedIps<u32>,
    next_index: u32,
    next_tick: Instant,
    /// When some peer's discovery has something to do.
    next_disco: Instant,
    disco: Option<OwnDisco>,
    /// Disco peers by their disco key.
    by_disco: HashMap<Key, u32>,
    next_rate_reset: Instant,
    out: Outbox,
    /// The last `now` the engine was given (for status snapshots).
    last_now: Instant,
    tun_out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stats: EngineStats,
    buf: Vec<u8>,
}

impl Engine {
    /// A new engine with the node's private key; `now` is the origin of the engine's clock.
    pub fn new(private_key: &PrivateKey, now: Instant) -> Self {
        let private = StaticSecret::from(*private_key.as_bytes());
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
            next_disco: now + IDLE_DEADLINE,
            disco: None,
            by_disco: HashMap::new(),
            next_rate_reset: now + Duration::from_secs(1),
            out: Outbox::default(),
            last_now: now,
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

    /// Turns on disco with this node's disco key (its public half is what control hands to
    /// peers); peers with a disco key are then reached by disco path discovery.
    pub fn set_disco_key(&mut self, private: PrivateKey) {
        let (endpoints, random_ports) = self
            .disco
            .take()
            .map(|d| (d.endpoints, d.random_ports))
            .unwrap_or_default();
        let own = OwnDisco {
            private,
            endpoints,
            random_ports,
            rng: StdRng::from_entropy(),
        };
        for peer in self.peers.values_mut() {
            if let Some(d) = &mut peer.disco {
                d.boxed = DiscoBox::new(&own.private, &d.key);
            }
        }
        self.disco = Some(own);
    }

    /// Seeds the random choices of disco (transaction ids, nonces, probed ports) so a
    /// simulation repeats itself; without it they come from the OS.
    pub fn seed_disco_rng(&mut self, seed: u64) {
        if let Some(d) = &mut self.disco {
            d.rng = StdRng::seed_from_u64(seed);
        }
    }

    /// This node's disco public key, if disco is on.
    pub fn disco_public_key(&self) -> Option<Key> {
        self.disco.as_ref().map(|d| d.private.public_key())
    }

    /// This node's network changed (the OS said so): every disco peer with traffic pings its
    /// path at once, and one without a working path is tried again at once.
    pub fn network_changed(&mut self, now: Instant) {
        self.clock.sync(now);
        self.last_now = now;
        let mut next = self.next_disco;
        for peer in self.peers.values_mut() {
            let Some(d) = &mut peer.disco else {
                continue;
            };
            let sends = d.state.network_changed(now);
            if !sends.is_empty() {
                perform(
                    &mut self.out,
                    &mut self.stats,
                    self.disco.as_mut(),
                    &self.public,
                    peer,
                    sends,
                    now,
                );
            }
            next = next.min(disco_wake(peer, now));
        }
        self.next_disco = next;
    }

    /// This node's endpoints (as published): what call-me-maybes tell peers to ping.
    pub fn set_own_endpoints(&mut self, endpoints: Vec<Endpoint>) {
        if let Some(d) = &mut self.disco {
            d.random_ports = crate::discovery::random_ports(&endpoints);
            d.endpoints = endpoints;
            for peer in self.peers.values_mut() {
                if let Some(pd) = &mut peer.disco {
                    pd.state.set_own_random(d.random_ports);
                }
            }
        }
    }

    /// The extra sockets asked for `peer` are open (ids the shell chose; none if it could
    /// not): birthday probing starts from them.
    pub fn sockets_opened(&mut self, now: Instant, peer: &Key, ids: Vec<SocketId>) {
        let Some(p) = self
            .by_key
            .get(peer)
            .and_then(|i| self.peers.get_mut(i))
            .filter(|p| p.disco.is_some())
        else {
            // The peer left (or has no disco) meanwhile: nobody needs them.
            self.out.sockets.push_back(SocketRequest::Close { ids });
            return;
        };
        let sends = match &mut p.disco {
            Some(d) => d.state.sockets_opened(now, ids),
            None => return,
        };
        perform(
            &mut self.out,
            &mut self.stats,
            self.disco.as_mut(),
            &self.public,
            p,
            sends,
            now,
        );
        self.next_disco = self.next_disco.min(disco_wake(p, now));
    }

    /// What the engine asks of the shell's sockets next.
    pub fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.out.sockets.pop_front()
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
                let before = peer.path(now);
                set_discovery(
                    &mut self.out,
                    self.disco.as_ref(),
                    &mut self.by_disco,
                    idx,
                    peer,
                    &settings,
                    now,
                );
                // A working direct path stays (it may be a candidate the peer answered from).
                if settings.endpoint.is_some()
                    && peer.endpoint != settings.endpoint
                    && peer.direct(now).is_none()
                {
                    peer.endpoint = settings.endpoint;
                    peer.udp_rx_at = None;
                }
                peer.set_relay(settings.relay.as_deref());
                peer.settings = settings;
                // A handshake waiting on a path that just changed: send it again now, on the
                // new path, rather than at WireGuard's retry (REKEY_TIMEOUT, 5 s).
                if peer.path(now) != before {
                    resend_pending_init(&mut self.out, &mut self.stats, peer, now);
                }
                // New candidates for a peer whose traffic waits for a path: tried now.
                if let Some(d) = &mut peer.disco {
                    let sends = d.state.poll(now);
                    let own = self.disco.as_mut();
                    if !sends.is_empty() {
                        perform(
                            &mut self.out,
                            &mut self.stats,
                            own,
                            &self.public,
                            peer,
                            sends,
                            now,
                        );
                    }
                    self.next_disco = self.next_disco.min(disco_wake(peer, now));
                }
            }
            return Ok(());
        }
        let idx = self.allocate_index()?;
        // A peer kept alive needs its session from the start; the others get one on their
        // first packet (see `Peer::tunn`).
        let keepalive = settings.persistent_keepalive.is_some_and(|k| k > 0);
        let tunn = keepalive.then(|| new_tunn(&self.private, &self.rate_limiter, &settings, idx));
        for net in &settings.allowed_ips {
            self.routes.insert(*net, idx);
        }
        self.by_key.insert(settings.public_key, idx);
        if settings.persistent_keepalive.is_some_and(|k| k > 0) {
            self.next_tick = self.next_tick.min(now + TIMER_TICK);
        }
        let mut peer = Peer::new(idx, tunn, settings.clone());
        set_discovery(
            &mut self.out,
            self.disco.as_ref(),
            &mut self.by_disco,
            idx,
            &mut peer,
            &settings,
            now,
        );
        self.peers.insert(idx, Box::new(peer));
        Ok(())
    }

    /// Removes a peer and its routes.
    pub fn remove_peer(&mut self, key: &Key) {
        if let Some(idx) = self.by_key.remove(key) {
            self.routes.remove_value(&idx);
            if let Some(d) = self.peers.remove(&idx).and_then(|p| p.disco) {
                self.by_disco.remove(&d.key);
                close_sockets_of(&mut self.out, &d.state);
            }
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
        self.last_now = now;
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        peer.active_at = Some(now);
        peer.touched_at = Some(now);
        self.next_tick = self.next_tick.min(now + TIMER_TICK);
        let own = self.disco.as_mut();
        if let Some(wake) = traffic(&mut self.out, &mut self.stats, own, &self.public, peer, now) {
            self.next_disco = self.next_disco.min(wake);
        }
        let tunn = peer.tunn.get_or_insert_with(|| {
            new_tunn(
                &self.private,
                &self.rate_limiter,
                &peer.settings,
                peer.index,
            )
        });
        match tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(out) => {
                peer.tx_bytes += packet.len() as u64;
                peer.tx_packets += 1;
                send_to_peer(&mut self.out, &mut self.stats, peer, now, out);
            }
            TunnResult::Err(e) => tracing::debug!(?e, "encapsulate failed"),
            _ => {}
        }
    }

    /// A UDP datagram received from `from` on the main socket.
    pub fn handle_network(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_network_on(now, MAIN_SOCKET, from, datagram)
    }

    /// A UDP datagram received from `from` on `socket`.
    pub fn handle_network_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        if disco::is_disco(datagram) {
            self.handle_disco(now, Via::Udp(socket, from), datagram);
        } else {
            self.handle_wire(now, Via::Udp(socket, from), datagram);
        }
    }

    /// A packet the node with key `from` sent through the relay of `region`.
    pub fn handle_relay(&mut self, now: Instant, region: &Arc<str>, from: Key, packet: &[u8]) {
        self.stats.rx_relayed += 1;
        if disco::is_disco(packet) {
            self.handle_disco(now, Via::Relay { region, from }, packet);
        } else {
            self.handle_wire(now, Via::Relay { region, from }, packet);
        }
    }

    /// A disco packet: pings are answered with a pong to their source, pongs prove a path, a
    /// call-me-maybe starts pinging the caller's endpoints.
    fn handle_disco(&mut self, now: Instant, via: Via<'_>, packet: &[u8]) {
        self.clock.sync(now);
        self.last_now = now;
        let Some(own) = self.disco.as_mut() else {
            self.stats.rx_invalid += 1;
            return;
        };
        let Some(&idx) = disco::sender(packet).and_then(|k| self.by_disco.get(&k)) else {
            self.stats.rx_unknown_peer += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        let before = peer.path(now);
        let Some(d) = &mut peer.disco else {
            return;
        };
        let msg = match d.boxed.open(packet) {
            Ok(m) => m,
            Err(e) => {
                tracing::trace!(%e, ?via, "dropped disco packet");
                self.stats.rx_invalid += 1;
                return;
            }
        };
        self.stats.rx_disco += 1;
        if let Via::Relay { from, .. } = via {
            if from == peer.settings.public_key {
                d.state.heard_via_relay(now);
            }
        }
        let sends = match (msg, via) {
            (Message::Ping { tx, node_key }, Via::Udp(socket, from)) => {
                if node_key != peer.settings.public_key {
                    self.stats.rx_invalid += 1;
                    return;
                }
                if socket != MAIN_SOCKET {
                    tracing::debug!(peer = %node_key.short(), socket, %from, "ping on a birthday socket");
                }
                let pong = seal(own, d, &Message::Pong { tx, observed: from });
                self.stats.tx_disco += 1;
                push_udp_on(&mut self.out, &mut self.stats, socket, from, &pong);
                d.state.ping_received_on(now, socket, from)
            }
            (Message::Pong { tx, observed }, Via::Udp(socket, from)) => {
                if let Some(best) = d.state.pong_on(now, socket, from, tx, observed) {
                    peer.endpoint = Some(best);
                    peer.endpoint_socket = d.state.best_socket();
                    self.events.push_back(Event::EndpointChanged {
                        peer: peer.settings.public_key,
                        endpoint: best,
                    });
                }
                Vec::new()
            }
            (Message::Birthday { ip, .. }, Via::Relay { from, .. }) => {
                if from != peer.settings.public_key {
                    self.stats.rx_invalid += 1;
                    return;
                }
                let sends = d.state.birthday_called(now, ip);
                tracing::debug!(peer = %from.short(), %ip, probing = !sends.is_empty(), "birthday probing asked");
                sends
            }
            (Message::CallMeMaybe { endpoints }, Via::Relay { from, .. }) => {
                if from != peer.settings.public_key {
                    self.stats.rx_invalid += 1;
                    return;
                }
                d.state.called(now, &endpoints)
            }
            // Pings and pongs through a relay prove nothing about UDP; a call over UDP is
            // not how calls come.
            _ => Vec::new(),
        };
        if !sends.is_empty() {
            perform(
                &mut self.out,
                &mut self.stats,
                Some(own),
                &self.public,
                peer,
                sends,
                now,
            );
        }
        if peer.path(now) != before {
            resend_pending_init(&mut self.out, &mut self.stats, peer, now);
        }
        self.next_disco = self.next_disco.min(disco_wake(peer, now));
    }

    fn handle_wire(&mut self, now: Instant, via: Via<'_>, datagram: &[u8]) {
        self.clock.sync(now);
        self.last_now = now;
        self.reset_rate_limit(now);
        let src_ip = match via {
            Via::Udp(_, from) => Some(from.ip()),
            Via::Relay { .. } => None,
        };
        let mut cookie = [0u8; 64];
        let packet = match self
            .rate_limiter
            .verify_packet(src_ip, datagram, &mut cookie)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(reply)) => {
                // Under load: answer with a cookie instead of doing the handshake's work.
                if let Via::Udp(socket, from) = via {
                    push_udp_on(&mut self.out, &mut self.stats, socket, from, reply);
                }
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
        let is_init = matches!(packet, Packet::HandshakeInit(_));
        let Some(peer) = self.peers.get_mut(&idx) else {
            self.stats.rx_unknown_peer += 1;
            return;
        };
        if let Via::Relay { from, .. } = via {
            if from != peer.settings.public_key {
                // The relay vouches for the sender's key: a packet for another peer's session is not
                // the sender's to send.
                self.stats.rx_invalid += 1;
                return;
            }
        }
        // Replies go back the way the packet came.
        let reply_via =
            |out: &mut Outbox, stats: &mut EngineStats, peer: &Peer, bytes: &[u8]| match via {
                Via::Udp(socket, from) => push_udp_on(out, stats, socket, from, bytes),
                Via::Relay { region, from } => {
                    let region = peer.relay.as_ref().unwrap_or(region).clone();
                    push_relay(out, stats, region, from, bytes);
                }
            };
        if peer.tunn.is_none() && !is_init {
            // No session here: nothing but an initiation can be for this peer.
            self.stats.rx_invalid += 1;
            return;
        }
        let tunn = peer.tunn.get_or_insert_with(|| {
            new_tunn(
                &self.private,
                &self.rate_limiter,
                &peer.settings,
                peer.index,
            )
        });
        let (out, src): (&[u8], Option<IpAddr>) =
            match tunn.decapsulate(src_ip, datagram, &mut self.buf) {
                TunnResult::WriteToTunnelV4(out, src) => (out, Some(src.into())),
                TunnResult::WriteToTunnelV6(out, src) => (out, Some(src.into())),
                TunnResult::Done => (&[], None),
                TunnResult::WriteToNetwork(out) => {
                    reply_via(&mut self.out, &mut self.stats, peer, out);
                    // Packets queued while the handshake was in flight go out now, once this
                    // side completed it (a response). Not after answering an initiation: the
                    // responder's session is not usable until the initiator's first packet, so
                    // boringtun would start a handshake of its own for them, and two peers
                    // with traffic answering each other's initiations that way kept starting
                    // new ones and evicting every session they made (a handshake storm: no
                    // packet got through for 15 s, 1 run in 12 over a slow lossy relay).
                    peer.awaiting_confirmation |= is_init;
                    if !is_init {
                        while let TunnResult::WriteToNetwork(out) = peer.next_queued(&mut self.buf)
                        {
                            reply_via(&mut self.out, &mut self.stats, peer, out);
                        }
                    }
                    if let Via::Udp(..) = via {
                        peer.udp_tx_at = Some(now);
                    }
                    (&[], None)
                }
                TunnResult::Err(WireGuardError::UnderLoad) => return,
                TunnResult::Err(
                    WireGuardError::DuplicateCounter
                    | WireGuardError::WrongTai64nTimestamp
                    | WireGuardError::UnexpectedPacket,
                ) if peer.relay.is_some() => {
                    // The second copy of a handshake sent both ways (over UDP and the relay), or
                    // the answer to it: expected, not an attack.
                    return;
                }
                TunnResult::Err(e) => {
                    tracing::trace!(?e, ?via, "dropped datagram");
                    self.stats.rx_invalid += 1;
                    return;
                }
            };
        // Authentic: the peer's timers run again (a handshake answered, a session renewed).
        peer.touched_at = Some(now);
        if let Via::Relay { region, .. } = via {
            peer.relay_seen(region);
            if let Some(d) = &mut peer.disco {
                d.state.heard_via_relay(now);
            }
        }
        self.next_tick = self.next_tick.min(now + TIMER_TICK);
        if let Some(src) = src.filter(|_| !out.is_empty()) {
            peer.active_at = Some(now);
            let own = self.disco.as_mut();
            if let Some(wake) =
                traffic(&mut self.out, &mut self.stats, own, &self.public, peer, now)
            {
                self.next_disco = self.next_disco.min(wake);
            }
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
        if let (Via::Udp(socket, from), None) = (via, &peer.disco) {
            // WireGuard's roaming: the last authentic source is where the peer is (disco peers:
            // the path disco chose stays until disco chooses another).
            peer.endpoint_socket = socket;
            if peer.endpoint != Some(from) {
                peer.endpoint = Some(from);
                self.events.push_back(Event::EndpointChanged {
                    peer: peer.settings.public_key,
                    endpoint: from,
                });
            }
            peer.udp_rx_at = Some(now);
            // The peer may not know yet that UDP works back to it (it may be sending through
            // the relay): say so over UDP.
            let quiet = peer
                .udp_tx_at
                .is_none_or(|t| now.saturating_duration_since(t) >= ANSWER_GAP);
            if quiet && peer.relay.is_some() {
                probe(&mut self.out, &mut self.stats, peer, now, &mut self.buf);
            }
        }
        if is_data && peer.awaiting_confirmation {
            // The initiator's first packet confirms a responder's session: what was queued
            // during the handshake goes now (checked only then, not on every packet).
            peer.awaiting_confirmation = false;
            while let TunnResult::WriteToNetwork(bytes) = peer.next_queued(&mut self.buf) {
                send_to_peer(&mut self.out, &mut self.stats, peer, now, bytes);
            }
        }
        if (!is_data || peer.handshakes == 0) && peer.check_new_handshake(now) {
            self.events.push_back(Event::HandshakeCompleted {
                peer: peer.settings.public_key,
            });
        }
    }

    /// Runs WireGuard's timers if their tick is due, and discovery's if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_disco {
            self.run_discovery(now);
        }
        if now < self.next_tick {
            return;
        }
        self.clock.sync(now);
        self.last_now = now;
        self.reset_rate_limit(now);
        let mut busy = false;
        for peer in self.peers.values_mut() {
            if !peer.needs_timers(now) {
                // Quiet for QUIET_AFTER: the session's keys are gone; so goes its memory (and
                // any initiation still waiting: the next packet starts a handshake afresh).
                if peer.tunn.take().is_some() {
                    peer.pending_init = None;
                    peer.awaiting_confirmation = false;
                }
                continue;
            }
            busy = true;
            let Some(tunn) = peer.tunn.as_deref_mut() else {
                continue;
            };
            match tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(out) => {
                    send_to_peer(&mut self.out, &mut self.stats, peer, now, out)
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
            if init_retry_due(peer, now) {
                // A new initiation (a resent copy of the old one would be refused as a replay,
                // and could not make up for a lost response).
                let init = match peer.tunn.as_deref_mut() {
                    Some(t) => t.format_handshake_initiation(&mut self.buf, true),
                    None => TunnResult::Done,
                };
                if let TunnResult::WriteToNetwork(init) = init {
                    self.stats.tx_init_resent += 1;
                    peer.init_resent_at = Some(now);
                    send_to_peer(&mut self.out, &mut self.stats, peer, now, init);
                }
            }
            if probe_due(peer, now) {
                probe(&mut self.out, &mut self.stats, peer, now, &mut self.buf);
            }
        }
        self.next_tick = now + if busy { TIMER_TICK } else { IDLE_DEADLINE };
    }

    /// Runs every disco peer's discovery (pings, heartbeats, fall-backs) and finds the next
    /// time one is due.
    fn run_discovery(&mut self, now: Instant) {
        self.clock.sync(now);
        self.last_now = now;
        let mut next = now + IDLE_DEADLINE;
        for peer in self.peers.values_mut() {
            if peer.disco.is_none() {
                continue;
            }
            let before = peer.path(now);
            let Some(d) = &mut peer.disco else {
                continue;
            };
            let sends = d.state.poll(now);
            if !sends.is_empty() {
                perform(
                    &mut self.out,
                    &mut self.stats,
                    self.disco.as_mut(),
                    &self.public,
                    peer,
                    sends,
                    now,
                );
            }
            if let Some(d) = &peer.disco {
                if let (Path::Direct(_), Some(best)) = (&before, d.state.best()) {
                    peer.endpoint_socket = d.state.best_socket();
                    if peer.endpoint != Some(best) {
                        peer.endpoint = Some(best);
                        self.events.push_back(Event::EndpointChanged {
                            peer: peer.settings.public_key,
                            endpoint: best,
                        });
                    }
                }
            }
            let after = peer.path(now);
            // A proven path (a pong came back), not an endpoint tried for want of a relay.
            let direct = peer.direct(now).is_some();
            if peer.was_direct && !direct {
                self.events.push_back(Event::DirectLost {
                    peer: peer.settings.public_key,
                });
            }
            peer.was_direct = direct;
            if after != before {
                resend_pending_init(&mut self.out, &mut self.stats, peer, now);
            }
            next = next.min(disco_wake(peer, now));
        }
        self.next_disco = next;
    }

    /// WireGuard's handshake rate limit counts per second; its count is reset lazily (an idle
    /// engine has no tick to do it on).
    fn reset_rate_limit(&mut self, now: Instant) {
        if now >= self.next_rate_reset {
            self.rate_limiter.reset_count();
            self.next_rate_reset = now + Duration::from_secs(1);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.udp.pop_front()
    }

    /// The next packet to send through a relay.
    pub fn poll_relay_transmit(&mut self) -> Option<RelayTransmit> {
        self.out.relay.pop_front()
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
        self.next_tick.min(self.next_disco)
    }

    /// Drop counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Peers holding WireGuard state now (those that talked within the last ten minutes, and
    /// those kept alive).
    pub fn sessions(&self) -> usize {
        self.peers.values().filter(|p| p.tunn.is_some()).count()
    }

    /// The state of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = self.last_now;
        let mut v: Vec<PeerStatus> = self.peers.values().map(|p| p.status(now)).collect();
        v.sort_by_key(|p| p.public_key);
        v
    }

    /// The state of one peer.
    pub fn peer(&self, key: &Key) -> Option<PeerStatus> {
        let idx = self.by_key.get(key)?;
        self.peers.get(idx).map(|p| p.status(self.last_now))
    }
}

/// Sends a WireGuard message to `peer` on its current path; handshake initiations go over both
/// the relay and UDP while the direct path is not confirmed (whichever arrives first wins; the
/// other copy is a replay the responder ignores).
fn send_to_peer(
    out: &mut Outbox,
    stats: &mut EngineStats,
    peer: &mut Peer,
    now: Instant,
    bytes: &[u8],
) {
    if bytes.first() == Some(&1) {
        peer.pending_init = Some((now, bytes.to_vec()));
        // A new attempt after WireGuard gave up on the last one (90 s) retries quickly again.
        if peer
            .init_first_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(90))
        {
            peer.init_first_at = Some(now);
        }
    }
    match peer.path(now) {
        // No relay and nothing confirmed yet: a handshake tries every candidate.
        Path::Direct(_) if bytes.first() == Some(&1) && peer.direct(now).is_none() => {
            peer.udp_tx_at = Some(now);
            for ep in unproven(peer) {
                push_udp(out, stats, ep, bytes);
            }
        }
        Path::Direct(ep) => {
            peer.udp_tx_at = Some(now);
            push_udp_on(out, stats, peer.endpoint_socket, ep, bytes);
        }
        Path::Relayed(region) => {
            if bytes.first() == Some(&1) && peer.disco.is_none() {
                for ep in unproven(peer) {
                    peer.udp_tx_at = Some(now);
                    push_udp(out, stats, ep, bytes);
                }
            }
            push_relay(out, stats, region, peer.settings.public_key, bytes);
        }
        Path::None => stats.tx_no_endpoint += 1,
    }
}

/// How long a handshake initiation is worth sending again: until WireGuard retries it itself.
const INIT_RESEND_WITHIN: Duration = Duration::from_secs(5);
/// While a disco peer's handshake is unanswered, a new initiation goes out this often (on a
/// lossy network a lost initiation or response would otherwise cost WireGuard's own retry,
/// 5 s later: most of the time to the first packet), for at most [`INIT_RETRY_FOR`].
const INIT_RETRY_EVERY: Duration = Duration::from_secs(1);
const INIT_RETRY_FOR: Duration = Duration::from_secs(10);

/// Whether a disco peer's unanswered handshake is due a new initiation.
fn init_retry_due(peer: &Peer, now: Instant) -> bool {
    let (Some((at, _)), Some(first)) = (&peer.pending_init, peer.init_first_at) else {
        return false;
    };
    let last = peer.init_resent_at.map_or(*at, |r| r.max(*at));
    peer.disco.is_some()
        && now.saturating_duration_since(last) >= INIT_RETRY_EVERY
        && now.saturating_duration_since(first) < INIT_RETRY_FOR
}

/// Sends the handshake initiation still waiting for an answer again, on the peer's path now.
fn resend_pending_init(out: &mut Outbox, stats: &mut EngineStats, peer: &mut Peer, now: Instant) {
    let Some((at, init)) = peer.pending_init.take() else {
        return;
    };
    if now.saturating_duration_since(at) >= INIT_RESEND_WITHIN {
        return;
    }
    stats.tx_init_resent += 1;
    peer.init_resent_at = Some(now);
    send_to_peer(out, stats, peer, now, &init);
    // Keep the original time: it expires when WireGuard's own retry comes.
    if let Some((_, bytes)) = peer.pending_init.take() {
        peer.pending_init = Some((at, bytes));
    }
}

/// Whether the direct path of `peer` needs a probe now: while relayed (every [`PROBE_EVERY`]),
/// or when a trusted direct path has been quiet (a heartbeat); only for peers in use.
fn probe_due(peer: &Peer, now: Instant) -> bool {
    if peer.endpoint.is_none() || peer.relay.is_none() || peer.disco.is_some() {
        return false;
    }
    let active = peer
        .active_at
        .is_some_and(|t| now.saturating_duration_since(t) < PROBE_WHILE_ACTIVE);
    let session = peer
        .since_handshake()
        .is_some_and(|d| d < Duration::from_secs(170));
    if !active || !session {
        return false;
    }
    let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
    if since(peer.probe_at) < PROBE_EVERY {
        return false;
    }
    match peer.direct(now) {
        None => true,
        Some(_) => since(peer.udp_rx_at) >= HEARTBEAT_AFTER,
    }
}

/// A peer's WireGuard state, made when it is first needed.
fn new_tunn(
    private: &StaticSecret,
    rate_limiter: &Arc<RateLimiter>,
    settings: &PeerSettings,
    index: u32,
) -> Box<Tunn> {
    Box::new(Tunn::new(
        private.clone(),
        PublicKey::from(settings.public_key.0),
        settings.preshared_key.map(|k| k.0),
        settings.persistent_keepalive,
        index,
        Some(rate_limiter.clone()),
    ))
}

/// Where UDP to a peer without a confirmed direct path goes: its endpoint and every other
/// candidate (at most [`MAX_CANDIDATES`]); each send opens the way through this side's NAT,
/// and whichever answers becomes the endpoint.
fn unproven(peer: &Peer) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = peer.endpoint.into_iter().collect();
    for c in &peer.settings.candidates {
        if v.len() >= MAX_CANDIDATES {
            break;
        }
        if !v.contains(&c.addr) {
            v.push(c.addr);
        }
    }
    v
}

/// A WireGuard keepalive over UDP to the peer's endpoint, and while no direct path works to
/// every candidate (only with a session: without one, boringtun would start a handshake).
fn probe(out: &mut Outbox, stats: &mut EngineStats, peer: &mut Peer, now: Instant, buf: &mut [u8]) {
    if peer.since_handshake().is_none() {
        return;
    }
    let targets = match peer.direct(now) {
        Some(ep) => vec![ep],
        None => unproven(peer),
    };
    if targets.is_empty() {
        return;
    }
    let Some(tunn) = peer.tunn.as_deref_mut() else {
        return;
    };
    if let TunnResult::WriteToNetwork(bytes) = tunn.encapsulate(&[], buf) {
        stats.tx_probes += 1;
        peer.probe_at = Some(now);
        peer.udp_tx_at = Some(now);
        for ep in targets {
            push_udp(out, stats, ep, bytes);
        }
    }
}

fn push_udp(out: &mut Outbox, stats: &mut EngineStats, dst: SocketAddr, payload: &[u8]) {
    push_udp_on(out, stats, MAIN_SOCKET, dst, payload)
}

fn push_udp_on(
    out: &mut Outbox,
    stats: &mut EngineStats,
    socket: SocketId,
    dst: SocketAddr,
    payload: &[u8],
) {
    if out.udp.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    out.udp.push_back(Transmit {
        socket,
        dst,
        payload: payload.to_vec(),
    });
}

fn push_relay(
    out: &mut Outbox,
    stats: &mut EngineStats,
    region: Arc<str>,
    peer: Key,
    payload: &[u8],
) {
    if out.relay.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    stats.tx_relayed += 1;
    out.relay.push_back(RelayTransmit {
        region,
        peer,
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

/// Sets up (or updates, or removes) a peer's discovery from its settings: a disco peer when both
/// this node and the peer have disco keys.
fn set_discovery(
    out: &mut Outbox,
    own: Option<&OwnDisco>,
    by_disco: &mut HashMap<Key, u32>,
    idx: u32,
    peer: &mut Peer,
    settings: &PeerSettings,
    now: Instant,
) {
    let wanted = own.zip(settings.disco_key);
    match (wanted, &mut peer.disco) {
        (Some((own, key)), Some(d)) => {
            if d.key != key {
                // The peer restarted (a new disco key): a new box, and what its old pings
                // proved still stands until it stops answering.
                by_disco.remove(&d.key);
                d.key = key;
                d.boxed = DiscoBox::new(&own.private, &key);
                by_disco.insert(key, idx);
            }
            d.state.set_candidates(now, &settings.candidates);
        }
        (Some((own, key)), None) => {
            let mut state = Discovery::new();
            state.set_own_random(own.random_ports);
            state.set_candidates(now, &settings.candidates);
            by_disco.insert(key, idx);
            peer.disco = Some(PeerDisco {
                key,
                boxed: DiscoBox::new(&own.private, &key),
                state,
            });
        }
        (None, Some(d)) => {
            by_disco.remove(&d.key);
            close_sockets_of(out, &d.state);
            peer.disco = None;
        }
        (None, None) => {}
    }
}

/// Asks the shell to close the extra sockets a peer's discovery holds (it is going away).
fn close_sockets_of(out: &mut Outbox, d: &Discovery) {
    let ids = d.sockets();
    if !ids.is_empty() {
        out.sockets.push_back(SocketRequest::Close { ids });
    }
}

/// Traffic for or from a peer: a disco peer's discovery may start a round (its pings and call
/// go out now); when its timers changed, when it is due next.
fn traffic(
    out: &mut Outbox,
    stats: &mut EngineStats,
    own: Option<&mut OwnDisco>,
    public: &PublicKey,
    peer: &mut Peer,
    now: Instant,
) -> Option<Instant> {
    let sends = peer.disco.as_mut()?.state.note_traffic(now)?;
    if !sends.is_empty() {
        perform(out, stats, own, public, peer, sends, now);
    }
    Some(disco_wake(peer, now))
}

/// When a peer's discovery is due next (far away when nothing is).
fn disco_wake(peer: &Peer, now: Instant) -> Instant {
    peer.disco
        .as_ref()
        .and_then(|d| d.state.next_wake(now))
        .unwrap_or(now + IDLE_DEADLINE)
}

/// A disco ping to `to` from `socket`, recorded with its transaction id.
#[allow(clippy::too_many_arguments)]
fn ping(
    out: &mut Outbox,
    stats: &mut EngineStats,
    own: &mut OwnDisco,
    public: &PublicKey,
    d: &mut PeerDisco,
    now: Instant,
    socket: SocketId,
    to: SocketAddr,
) {
    let tx = TxId(own.rng.gen());
    let msg = Message::Ping {
        tx,
        node_key: Key(public.to_bytes()),
    };
    let packet = seal(own, d, &msg);
    d.state.ping_sent_on(now, socket, to, tx);
    stats.tx_disco += 1;
    push_udp_on(out, stats, socket, to, &packet);
}

/// A disco message sealed for the peer with a fresh random nonce.
fn seal(own: &mut OwnDisco, d: &PeerDisco, msg: &Message) -> Vec<u8> {
    let nonce: [u8; 24] = own.rng.gen();
    d.boxed.seal(nonce, msg)
}

/// Sends what a peer's discovery asked for: pings over UDP (recorded with their ids), a
/// call-me-maybe with this node's endpoints through the peer's relay.
fn perform(
    out: &mut Outbox,
    stats: &mut EngineStats,
    own: Option<&mut OwnDisco>,
    public: &PublicKey,
    peer: &mut Peer,
    sends: Vec<Send>,
    now: Instant,
) {
    let (Some(own), Some(d)) = (own, &mut peer.disco) else {
        return;
    };
    for s in sends {
        match s {
            Send::Ping(to) => ping(out, stats, own, public, d, now, MAIN_SOCKET, to),
            Send::PingFrom(socket, to) => ping(out, stats, own, public, d, now, socket, to),
            Send::ProbeRandom { ip, count } => {
                tracing::debug!(peer = %peer.settings.public_key.short(), %ip, count, "birthday probes");
                for _ in 0..count {
                    let port: u16 = own.rng.gen_range(1024..=65535);
                    let to = SocketAddr::new(ip, port);
                    ping(out, stats, own, public, d, now, MAIN_SOCKET, to);
                }
            }
            Send::Birthday { sockets } => {
                let Some(region) = peer.relay.clone() else {
                    tracing::debug!(peer = %peer.settings.public_key.short(), "birthday sockets open, but the peer has no relay to ask it through");
                    continue;
                };
                let ip = own
                    .endpoints
                    .iter()
                    .find(|e| e.kind == EndpointKind::Stun && e.addr.is_ipv4())
                    .map(|e| e.addr.ip());
                let Some(ip) = ip else {
                    tracing::debug!(peer = %peer.settings.public_key.short(), "birthday sockets open, but no STUN server has seen this node's IPv4 address");
                    continue;
                };
                tracing::debug!(peer = %peer.settings.public_key.short(), %ip, sockets, "birthday sockets open: asking the peer to probe");
                let packet = seal(own, d, &Message::Birthday { ip, sockets });
                stats.tx_disco += 1;
                push_relay(out, stats, region, peer.settings.public_key, &packet);
            }
            Send::OpenSockets(count) => out.sockets.push_back(SocketRequest::Open {
                for_peer: peer.settings.public_key,
                count,
            }),
            Send::CloseSockets(ids) => out.sockets.push_back(SocketRequest::Close { ids }),
            Send::CallMeMaybe => {
                let Some(region) = peer.relay.clone() else {
                    continue;
                };
                let mut endpoints = own.endpoints.clone();
                if let Some(seen) = d.state.observed_self() {
                    if !endpoints.iter().any(|e| e.addr == seen) {
                        endpoints.push(Endpoint::new(seen, EndpointKind::PeerReflexive));
                    }
                }
                endpoints.truncate(disco::MAX_ENDPOINTS);
                let packet = seal(own, d, &Message::CallMeMaybe { endpoints });
                stats.tx_disco += 1;
                push_relay(out, stats, region, peer.settings.public_key, &packet);
            }
        }
    }
}
