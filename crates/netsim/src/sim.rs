//! The simulated network: hosts (public, or behind NAT routers on a shared LAN), links, a
//! clock, and the event loop that drives the engines.

use crate::nat::{Nat, NatConfig};
use pinhole_engine::{Engine, Event, Key, PrivateKey, SocketId, SocketRequest, MAIN_SOCKET};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A host in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostId(usize);

/// A NAT router in the simulation; the hosts behind it share a LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatId(usize);

/// How datagrams between two hosts travel: one-way latency and the chance of loss.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub latency: Duration,
    pub loss: f64,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            latency: Duration::from_millis(10),
            loss: 0.0,
        }
    }
}

struct Host {
    addr: SocketAddr,
    /// The router the host is behind (none: a public address).
    nat: Option<usize>,
    disco_key: Key,
    engine: Engine,
    tun_received: Vec<Vec<u8>>,
    events: Vec<(Instant, Event)>,
    /// Extra sockets the engine asked for, by id: their ports (on the host's address).
    sockets: HashMap<SocketId, u16>,
    next_socket: SocketId,
}

impl Host {
    /// The socket bound to `port` of the host's address.
    fn socket_of(&self, port: u16) -> Option<SocketId> {
        if port == self.addr.port() {
            return Some(MAIN_SOCKET);
        }
        self.sockets
            .iter()
            .find(|(_, p)| **p == port)
            .map(|(id, _)| *id)
    }

    /// The address `socket` is bound to.
    fn socket_addr(&self, socket: SocketId) -> SocketAddr {
        match self.sockets.get(&socket) {
            Some(port) => SocketAddr::new(self.addr.ip(), *port),
            None => self.addr,
        }
    }
}

/// Who receives a datagram in flight.
#[derive(Debug, Clone, Copy)]
enum Target {
    Host(usize),
    /// A router's public address: its filter decides on arrival.
    Nat(usize),
    Nowhere,
}

/// Where a packet in flight goes.
enum Hop {
    Udp {
        /// The source as the receiver will see it (after the sender's NAT).
        from: SocketAddr,
        to: SocketAddr,
        target: Target,
    },
    Relay {
        region: Arc<str>,
        from: Key,
        to: Key,
    },
}

struct InFlight {
    at: Instant,
    seq: u64,
    hop: Hop,
    payload: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A network of hosts on a simulated clock.
pub struct Sim {
    start: Instant,
    now: Instant,
    rng: SmallRng,
    hosts: Vec<Host>,
    /// Public hosts by address.
    by_addr: HashMap<SocketAddr, usize>,
    /// Hosts behind a router, by (router, LAN address).
    lan: HashMap<(usize, SocketAddr), usize>,
    nats: Vec<Nat>,
    nat_by_ip: HashMap<IpAddr, usize>,
    by_key: HashMap<Key, usize>,
    link: Link,
    /// One-way latency through a relay (client → relay → client).
    relay_latency: Duration,
    /// Hosts whose UDP is dropped both ways (a firewall that blocks UDP).
    udp_blocked: HashSet<usize>,
    /// Packets carried by relays.
    pub relayed: u64,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Datagrams sent to an address no host has.
    pub undeliverable: u64,
    /// Datagrams lost on the link.
    pub lost: u64,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams sent over UDP by any host.
    pub udp_sent: u64,
    /// Extra sockets opened by any host (birthday probing).
    pub sockets_opened: u64,
}

impl Sim {
    /// An empty network; `seed` fixes every random choice (loss, keys made by [`Sim::key`]).
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            rng: SmallRng::seed_from_u64(seed),
            hosts: Vec::new(),
            by_addr: HashMap::new(),
            lan: HashMap::new(),
            nats: Vec::new(),
            nat_by_ip: HashMap::new(),
            by_key: HashMap::new(),
            link: Link::default(),
            relay_latency: Duration::from_millis(30),
            udp_blocked: HashSet::new(),
            relayed: 0,
            in_flight: BinaryHeap::new(),
            seq: 0,
            undeliverable: 0,
            lost: 0,
            delivered: 0,
            udp_sent: 0,
            sockets_opened: 0,
        }
    }

    /// A private key drawn from the simulation's RNG.
    pub fn key(&mut self) -> PrivateKey {
        pinhole_engine::private_key_from_bytes(self.rng.gen())
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Sets latency and loss for every datagram from now on.
    pub fn set_link(&mut self, link: Link) {
        self.link = link;
    }

    /// Sets the one-way latency of every relay (all relays are one perfect service here).
    pub fn set_relay_latency(&mut self, d: Duration) {
        self.relay_latency = d;
    }

    /// Drops (or stops dropping) every UDP datagram to and from the host.
    pub fn block_udp(&mut self, h: HostId, blocked: bool) {
        if blocked {
            self.udp_blocked.insert(h.0);
        } else {
            self.udp_blocked.remove(&h.0);
        }
    }

    /// Adds a host reachable at `addr`, running an engine with `private_key` (and a disco key
    /// drawn from the simulation's RNG).
    pub fn add_host(&mut self, addr: SocketAddr, private_key: PrivateKey) -> HostId {
        self.by_addr.insert(addr, self.hosts.len());
        self.push_host(addr, None, private_key)
    }

    /// Adds a NAT router with the public address `public_ip`.
    pub fn add_nat(&mut self, public_ip: IpAddr, config: NatConfig) -> NatId {
        self.nat_by_ip.insert(public_ip, self.nats.len());
        self.nats.push(Nat::new(public_ip, config));
        NatId(self.nats.len() - 1)
    }

    /// Adds a host at LAN address `addr` behind the router `nat`.
    pub fn add_host_behind(
        &mut self,
        nat: NatId,
        addr: SocketAddr,
        private_key: PrivateKey,
    ) -> HostId {
        self.lan.insert((nat.0, addr), self.hosts.len());
        self.push_host(addr, Some(nat.0), private_key)
    }

    fn push_host(&mut self, addr: SocketAddr, nat: Option<usize>, key: PrivateKey) -> HostId {
        let mut engine = Engine::new(&key, self.now);
        let disco = self.key();
        let disco_key = disco.public_key();
        engine.set_disco_key(disco);
        engine.seed_disco_rng(self.rng.gen());
        self.by_key.insert(engine.public_key(), self.hosts.len());
        self.hosts.push(Host {
            addr,
            nat,
            disco_key,
            engine,
            tun_received: Vec::new(),
            events: Vec::new(),
            sockets: HashMap::new(),
            next_socket: 1,
        });
        HostId(self.hosts.len() - 1)
    }

    /// The host's UDP address (on its LAN, for a host behind a router).
    pub fn addr(&self, h: HostId) -> SocketAddr {
        self.hosts[h.0].addr
    }

    /// The host's disco public key (what control would hand its peers).
    pub fn disco_key(&self, h: HostId) -> Key {
        self.hosts[h.0].disco_key
    }

    /// The address a STUN server at `server` sees the host at (making the mapping a real STUN
    /// request would make).
    pub fn stun(&mut self, h: HostId, server: SocketAddr) -> SocketAddr {
        let (from, _) = self.route(h.0, server);
        from
    }

    /// A router, to inspect or to flush its mappings.
    pub fn nat(&mut self, n: NatId) -> &mut Nat {
        &mut self.nats[n.0]
    }

    /// Moves the host to another network (another router, or a public address): it keeps its
    /// engine and peers, as a laptop that changes Wi-Fi does.
    pub fn move_host(&mut self, h: HostId, nat: Option<NatId>, addr: SocketAddr) {
        let old = &self.hosts[h.0];
        match old.nat {
            Some(n) => self.lan.remove(&(n, old.addr)),
            None => self.by_addr.remove(&old.addr),
        };
        match nat {
            Some(n) => self.lan.insert((n.0, addr), h.0),
            None => self.by_addr.insert(addr, h.0),
        };
        self.hosts[h.0].addr = addr;
        self.hosts[h.0].nat = nat.map(|n| n.0);
    }

    /// The source the receiver sees and who receives a datagram from host `i`'s main socket
    /// to `dst`, translating through the host's router.
    fn route(&mut self, i: usize, dst: SocketAddr) -> (SocketAddr, Target) {
        self.route_from(i, MAIN_SOCKET, dst)
    }

    /// The same from one of the host's sockets.
    fn route_from(&mut self, i: usize, socket: SocketId, dst: SocketAddr) -> (SocketAddr, Target) {
        let src = self.hosts[i].socket_addr(socket);
        let Some(n) = self.hosts[i].nat else {
            return (src, self.target(dst));
        };
        if let Some(&j) = self.lan.get(&(n, dst)) {
            return (src, Target::Host(j));
        }
        let now = self.now;
        let ext = self.nats[n].outbound(now, &mut self.rng, src, dst);
        if dst.ip() == self.nats[n].public_ip {
            let back = if self.nats[n].config.hairpin {
                Target::Nat(n)
            } else {
                Target::Nowhere
            };
            return (ext, back);
        }
        (ext, self.target(dst))
    }

    fn target(&self, dst: SocketAddr) -> Target {
        if let Some(&j) = self.by_addr.get(&dst) {
            Target::Host(j)
        } else if let Some(&n) = self.nat_by_ip.get(&dst.ip()) {
            Target::Nat(n)
        } else {
            Target::Nowhere
        }
    }

    /// The host's engine, to configure or inspect.
    pub fn engine(&mut self, h: HostId) -> &mut Engine {
        &mut self.hosts[h.0].engine
    }

    /// Hands an IP packet to the host as if its TUN device had read it.
    pub fn send_tun(&mut self, h: HostId, packet: &[u8]) {
        let now = self.now;
        self.hosts[h.0].engine.handle_tun(now, packet);
        self.drain(h.0);
    }

    /// Adds or updates a peer of the host now (as a map update does), and sends what that
    /// makes the engine send.
    pub fn upsert_peer(
        &mut self,
        h: HostId,
        settings: pinhole_engine::PeerSettings,
    ) -> Result<(), pinhole_engine::EngineError> {
        let now = self.now;
        let r = self.hosts[h.0].engine.upsert_peer(now, settings);
        self.drain(h.0);
        r
    }

    /// Hands a raw datagram to the host as if it arrived from `from`.
    pub fn inject(&mut self, h: HostId, from: SocketAddr, datagram: &[u8]) {
        let now = self.now;
        self.hosts[h.0].engine.handle_network(now, from, datagram);
        self.drain(h.0);
    }

    /// The IP packets the host's engine gave to its TUN device so far (taken, so the list empties).
    pub fn take_tun(&mut self, h: HostId) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.hosts[h.0].tun_received)
    }

    /// The host's events so far, with their times.
    pub fn events(&self, h: HostId) -> &[(Instant, Event)] {
        &self.hosts[h.0].events
    }

    /// Runs the network for `d` of simulated time.
    pub fn advance(&mut self, d: Duration) {
        let deadline = self.now + d;
        loop {
            let next_packet = self.in_flight.peek().map(|Reverse(p)| p.at);
            let (timer_at, timer_host) = self
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.engine.poll_timeout(), i))
                .min()
                .unwrap_or((deadline, usize::MAX));
            let packet_first = next_packet.is_some_and(|p| p <= timer_at);
            let next = if packet_first {
                next_packet.unwrap_or(deadline)
            } else {
                timer_at
            };
            if next > deadline {
                break;
            }
            self.now = self.now.max(next);
            if packet_first {
                let Some(Reverse(p)) = self.in_flight.pop() else {
                    break;
                };
                let now = self.now;
                match p.hop {
                    Hop::Udp { from, to, target } => {
                        // Who gets it, and on the socket bound to the port it arrives at.
                        let (host, port) = match target {
                            Target::Host(i) => (Some(i), to.port()),
                            Target::Nat(n) => match self.nats[n].inbound(now, to.port(), from) {
                                Some(inside) => {
                                    (self.lan.get(&(n, inside)).copied(), inside.port())
                                }
                                None => (None, 0),
                            },
                            Target::Nowhere => (None, 0),
                        };
                        let socket = host.and_then(|i| self.hosts[i].socket_of(port));
                        match (host, socket) {
                            (Some(i), Some(socket)) if !self.udp_blocked.contains(&i) => {
                                self.delivered += 1;
                                self.hosts[i]
                                    .engine
                                    .handle_network_on(now, socket, from, &p.payload);
                                self.drain(i);
                            }
                            (Some(_), None) => self.undeliverable += 1,
                            (Some(_), Some(_)) => self.lost += 1,
                            (None, _) => self.undeliverable += 1,
                        }
                    }
                    Hop::Relay { region, from, to } => match self.by_key.get(&to) {
                        Some(&i) => {
                            self.relayed += 1;
                            self.hosts[i]
                                .engine
                                .handle_relay(now, &region, from, &p.payload);
                            self.drain(i);
                        }
                        None => self.undeliverable += 1,
                    },
                }
            } else if timer_host != usize::MAX {
                let now = self.now;
                self.hosts[timer_host].engine.handle_timeout(now);
                self.drain(timer_host);
            }
        }
        self.now = deadline;
    }

    /// Moves everything the host's engine produced into the network and the host's records.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let me = self.hosts[i].engine.public_key();
        let blocked = self.udp_blocked.contains(&i);
        while let Some(r) = self.hosts[i].engine.poll_socket_request() {
            match r {
                SocketRequest::Open { for_peer, count } => {
                    let ids = self.open_sockets(i, count);
                    self.hosts[i].engine.sockets_opened(now, &for_peer, ids);
                }
                SocketRequest::Close { ids } => self.close_sockets(i, &ids),
            }
        }
        while let Some(t) = self.hosts[i].engine.poll_transmit() {
            if blocked || (self.link.loss > 0.0 && self.rng.gen_bool(self.link.loss)) {
                self.lost += 1;
                continue;
            }
            let (from, target) = self.route_from(i, t.socket, t.dst);
            self.udp_sent += 1;
            self.seq += 1;
            self.in_flight.push(Reverse(InFlight {
                at: now + self.link.latency,
                seq: self.seq,
                hop: Hop::Udp {
                    from,
                    to: t.dst,
                    target,
                },
                payload: t.payload,
            }));
        }
        while let Some(t) = self.hosts[i].engine.poll_relay_transmit() {
            self.seq += 1;
            self.in_flight.push(Reverse(InFlight {
                at: now + self.relay_latency,
                seq: self.seq,
                hop: Hop::Relay {
                    region: t.region,
                    from: me,
                    to: t.peer,
                },
                payload: t.payload,
            }));
        }
        let host = &mut self.hosts[i];
        while let Some(p) = host.engine.poll_tun() {
            host.tun_received.push(p);
        }
        while let Some(e) = host.engine.poll_event() {
            host.events.push((now, e));
        }
    }

    /// Opens `count` extra sockets on host `i` (ports from 30000 up, on its address).
    fn open_sockets(&mut self, i: usize, count: u16) -> Vec<SocketId> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let host = &mut self.hosts[i];
            let id = host.next_socket;
            host.next_socket = host.next_socket.wrapping_add(1).max(1);
            let port = 30000 + (id % 30000);
            host.sockets.insert(id, port);
            let addr = SocketAddr::new(host.addr.ip(), port);
            match host.nat {
                Some(n) => self.lan.insert((n, addr), i),
                None => self.by_addr.insert(addr, i),
            };
            ids.push(id);
        }
        self.sockets_opened += u64::from(count);
        ids
    }

    fn close_sockets(&mut self, i: usize, ids: &[SocketId]) {
        for id in ids {
            let host = &mut self.hosts[i];
            if let Some(port) = host.sockets.remove(id) {
                let addr = SocketAddr::new(host.addr.ip(), port);
                match host.nat {
                    Some(n) => self.lan.remove(&(n, addr)),
                    None => self.by_addr.remove(&addr),
                };
            }
        }
    }

    /// How many extra sockets host `h` has open now.
    pub fn open_socket_count(&self, h: HostId) -> usize {
        self.hosts[h.0].sockets.len()
    }
}
