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
//!
//! This module holds the engine's state, its peers' set-up and what the shell polls; beside
//! it: [`datagrams`] (WireGuard in and out), [`paths`] (disco messages and discovery driven)
//! and [`timers`].

mod datagrams;
mod paths;
mod timers;

// The parts' shared helpers, for each other (they see this module's items).
use datagrams::{new_tunn, push_relay, push_udp, push_udp_on, send_to_peer};
use paths::{close_sockets_of, disco_wake, perform, set_discovery, traffic};
use timers::{probe, resend_pending_init, unproven};

use crate::allowed_ips::AllowedIps;
use crate::clock::Clock;
use crate::discovery::{Discovery, Send};
use crate::filter::Filter;
use crate::peer::{Path, Peer, PeerDisco, PeerSettings, PeerStatus, MAX_CANDIDATES};
use crate::transmit::{RelayTransmit, SocketId, SocketRequest, Transmit, MAIN_SOCKET};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use pinhole_proto::disco::{self, DiscoBox, Message, TxId};
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use pinhole_proto::filter::FilterRule;
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
    /// Decrypted packets the policy's filter refused.
    pub rx_filtered: u64,
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
    /// The policy's inbound filter; none: everything comes in (an account without a policy).
    filter: Option<Filter>,
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
            filter: None,
            events: VecDeque::new(),
            stats: EngineStats::default(),
            buf: vec![0u8; MAX_PACKET],
        }
    }

    /// Sets the policy's inbound filter (`None`: let everything in). A new filter keeps the
    /// flows this node opened; what the old rules let in is judged again by the new ones.
    pub fn set_filter(&mut self, rules: Option<&[FilterRule]>, now: Instant) {
        match (rules, &mut self.filter) {
            (None, f) => *f = None,
            (Some(r), Some(f)) => f.set_rules(r),
            (Some(r), f) => *f = Some(Filter::new(r, now)),
        }
    }

    /// The filter, if a policy set one.
    pub fn filter(&self) -> Option<&Filter> {
        self.filter.as_ref()
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

    /// Sets the prefixes a peer is reached at and may send from (its own addresses and the
    /// routes it forwards), leaving its sessions and paths as they are; false if there is no
    /// such peer.
    pub fn set_allowed_ips(&mut self, key: &Key, nets: &[ipnet::IpNet]) -> bool {
        let Some(&idx) = self.by_key.get(key) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(&idx) else {
            return false;
        };
        self.routes.remove_value(&idx);
        for net in nets {
            self.routes.insert(*net, idx);
        }
        peer.settings.allowed_ips = nets.to_vec();
        true
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

/// How long a handshake initiation is worth sending again: until WireGuard retries it itself.
const INIT_RESEND_WITHIN: Duration = Duration::from_secs(5);
/// While a disco peer's handshake is unanswered, a new initiation goes out this often (on a
/// lossy network a lost initiation or response would otherwise cost WireGuard's own retry,
/// 5 s later: most of the time to the first packet), for at most [`INIT_RETRY_FOR`].
const INIT_RETRY_EVERY: Duration = Duration::from_secs(1);
const INIT_RETRY_FOR: Duration = Duration::from_secs(10);
