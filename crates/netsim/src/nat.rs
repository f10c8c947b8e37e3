//! NAT models (RFC 4787): how a router maps a host's outbound datagrams to a public port
//! (endpoint-independent, address-dependent, address-and-port-dependent), which inbound
//! datagrams its filter lets through (the same three), how it picks ports (preserving the
//! host's, in sequence, at random), whether it hairpins, and when idle mappings expire.

use rand::rngs::SmallRng;
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What an outbound mapping depends on besides the host's own address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// Endpoint-independent: one public port for every destination.
    Eim,
    /// Address-dependent: a public port per destination address.
    Adm,
    /// Address-and-port-dependent ("symmetric"): a public port per destination address and port.
    Adpm,
}

/// Which inbound datagrams a mapping lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Endpoint-independent: anyone's.
    Eif,
    /// Address-dependent: from an address the host has sent to.
    Adf,
    /// Address-and-port-dependent: from an address and port the host has sent to.
    Adpf,
}

/// How the router picks a mapping's public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAlloc {
    /// The host's own port when free (Linux's default), else the next free one.
    Preserve,
    /// The next port of a counter, whatever the host's.
    Sequential,
    /// A random port.
    Random,
}

/// A router's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatConfig {
    pub mapping: Mapping,
    pub filtering: Filtering,
    pub ports: PortAlloc,
    /// Whether datagrams from inside to the router's own public address loop back in.
    pub hairpin: bool,
    /// How long an idle mapping lives (refreshed by packets both ways, as Linux does).
    pub timeout: Duration,
}

impl NatConfig {
    /// A router with these behaviours, preserving ports, without hairpinning, with a 30 s
    /// idle timeout (Linux's for unanswered UDP; shorter than most home routers).
    pub fn new(mapping: Mapping, filtering: Filtering) -> Self {
        NatConfig {
            mapping,
            filtering,
            ports: PortAlloc::Preserve,
            hairpin: false,
            timeout: Duration::from_secs(30),
        }
    }

    pub fn ports(mut self, ports: PortAlloc) -> Self {
        self.ports = ports;
        self
    }

    pub fn hairpin(mut self, on: bool) -> Self {
        self.hairpin = on;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// One mapping: a host's address toward some destinations, as a public port.
#[derive(Debug, Clone)]
struct Entry {
    internal: SocketAddr,
    /// The destination the mapping was made for (only what the mapping kind depends on is compared).
    toward: SocketAddr,
    port: u16,
    last_used: Instant,
    /// Remote endpoints the mapping has exchanged datagrams with, and when (the filter's memory,
    /// and where answers go out through this mapping).
    sent_to: Vec<(SocketAddr, Instant)>,
}

/// A router with its table of mappings.
#[derive(Debug)]
pub struct Nat {
    pub public_ip: IpAddr,
    pub config: NatConfig,
    entries: Vec<Entry>,
    next_port: u16,
    /// Mappings made so far (each costs the router a table entry).
    pub mappings_made: u64,
    /// Inbound datagrams the filter dropped.
    pub filtered: u64,
}

impl Nat {
    pub fn new(public_ip: IpAddr, config: NatConfig) -> Self {
        Nat {
            public_ip,
            config,
            entries: Vec::new(),
            next_port: 20000,
            mappings_made: 0,
            filtered: 0,
        }
    }

    fn live(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_used) < self.config.timeout
    }

    /// Whether the mapping carries a datagram from `internal` to `dst`: the one made for that
    /// destination, or the one a datagram from `dst` came in through (its answer goes back the
    /// same way, as a connection-tracking router does).
    fn same_mapping(&self, e: &Entry, internal: SocketAddr, dst: SocketAddr) -> bool {
        e.internal == internal
            && match self.config.mapping {
                Mapping::Eim => true,
                Mapping::Adm => {
                    e.toward.ip() == dst.ip() || e.sent_to.iter().any(|(a, _)| a.ip() == dst.ip())
                }
                Mapping::Adpm => e.toward == dst || e.sent_to.iter().any(|(a, _)| *a == dst),
            }
    }

    /// The public address a datagram from `internal` to `dst` leaves with (making or refreshing
    /// the mapping).
    pub fn outbound(
        &mut self,
        now: Instant,
        rng: &mut SmallRng,
        internal: SocketAddr,
        dst: SocketAddr,
    ) -> SocketAddr {
        let timeout = self.config.timeout;
        self.entries
            .retain(|e| now.saturating_duration_since(e.last_used) < timeout);
        let found = self
            .entries
            .iter()
            .position(|e| self.same_mapping(e, internal, dst));
        let i = match found {
            Some(i) => i,
            None => {
                let port = self.allocate(rng, internal.port());
                self.mappings_made += 1;
                self.entries.push(Entry {
                    internal,
                    toward: dst,
                    port,
                    last_used: now,
                    sent_to: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        let e = &mut self.entries[i];
        e.last_used = now;
        match e.sent_to.iter_mut().find(|(a, _)| *a == dst) {
            Some(s) => s.1 = now,
            None => e.sent_to.push((dst, now)),
        }
        SocketAddr::new(self.public_ip, e.port)
    }

    fn in_use(&self, port: u16) -> bool {
        self.entries.iter().any(|e| e.port == port)
    }

    fn allocate(&mut self, rng: &mut SmallRng, wanted: u16) -> u16 {
        let mut port = match self.config.ports {
            PortAlloc::Preserve => wanted,
            PortAlloc::Sequential => self.next_port,
            PortAlloc::Random => rng.gen_range(1024..=65535),
        };
        for _ in 0..65536 {
            if port >= 1024 && !self.in_use(port) {
                break;
            }
            port = match self.config.ports {
                PortAlloc::Random => rng.gen_range(1024..=65535),
                _ => port.checked_add(1).unwrap_or(1024),
            };
        }
        if self.config.ports == PortAlloc::Sequential {
            self.next_port = port.checked_add(1).unwrap_or(1024);
        }
        port
    }

    /// The host a datagram from `src` to the router's `port` goes to, if a live mapping has
    /// that port and the filter lets `src` in (refreshing the mapping).
    pub fn inbound(&mut self, now: Instant, port: u16, src: SocketAddr) -> Option<SocketAddr> {
        let filtering = self.config.filtering;
        let timeout = self.config.timeout;
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.port == port && now.saturating_duration_since(e.last_used) < timeout)
        else {
            self.filtered += 1;
            return None;
        };
        let e = &self.entries[i];
        let allowed = match filtering {
            Filtering::Eif => true,
            Filtering::Adf => e.sent_to.iter().any(|(a, _)| a.ip() == src.ip()),
            Filtering::Adpf => e.sent_to.iter().any(|(a, _)| *a == src),
        };
        if !allowed || !self.live(e, now) {
            self.filtered += 1;
            return None;
        }
        let e = &mut self.entries[i];
        e.last_used = now;
        // The router now tracks this exchange: more from `src` is let in, and answers to it
        // leave through this mapping.
        match e.sent_to.iter_mut().find(|(a, _)| *a == src) {
            Some(s) => s.1 = now,
            None => e.sent_to.push((src, now)),
        }
        Some(e.internal)
    }

    /// Forgets every mapping (a router reboot, `conntrack -F`): the next datagram of each host
    /// gets a new one, and its port may differ.
    pub fn flush(&mut self) {
        self.entries.clear();
    }

    /// Live mappings now.
    pub fn mappings(&self, now: Instant) -> usize {
        self.entries.iter().filter(|e| self.live(e, now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mappings_depend_on_what_their_kind_says() {
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        let host = a("10.0.0.2:41641");
        let (s1, s1b, s2) = (
            a("198.18.1.1:3478"),
            a("198.18.1.1:3479"),
            a("198.18.1.2:3478"),
        );
        for (m, same_port_other_port, same_other_addr) in [
            (Mapping::Eim, true, true),
            (Mapping::Adm, true, false),
            (Mapping::Adpm, false, false),
        ] {
            let mut nat = Nat::new(
                "192.0.2.1".parse().unwrap(),
                NatConfig::new(m, Filtering::Eif),
            );
            let x = nat.outbound(now, &mut rng, host, s1);
            assert_eq!(x, a("192.0.2.1:41641"), "{m:?}: the host's port is kept");
            assert_eq!(
                nat.outbound(now, &mut rng, host, s1b) == x,
                same_port_other_port,
                "{m:?}"
            );
            assert_eq!(
                nat.outbound(now, &mut rng, host, s2) == x,
                same_other_addr,
                "{m:?}"
            );
        }
    }

    #[test]
    fn filters_let_in_what_their_kind_says_until_the_mapping_expires() {
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        let host = a("10.0.0.2:41641");
        let peer = a("198.51.100.7:2000");
        for (f, other_port, other_addr) in [
            (Filtering::Eif, true, true),
            (Filtering::Adf, true, false),
            (Filtering::Adpf, false, false),
        ] {
            let cfg = NatConfig::new(Mapping::Eim, f).timeout(Duration::from_secs(30));
            let mut nat = Nat::new("192.0.2.1".parse().unwrap(), cfg);
            let x = nat.outbound(now, &mut rng, host, peer);
            assert_eq!(nat.inbound(now, x.port(), peer), Some(host), "{f:?}");
            assert_eq!(
                nat.inbound(now, x.port(), a("198.51.100.7:2001")).is_some(),
                other_port,
                "{f:?}"
            );
            assert_eq!(
                nat.inbound(now, x.port(), a("203.0.113.1:2000")).is_some(),
                other_addr,
                "{f:?}"
            );
            assert_eq!(
                nat.inbound(now, x.port() + 1, peer),
                None,
                "no mapping there"
            );
            let later = now + Duration::from_secs(31);
            assert_eq!(nat.inbound(later, x.port(), peer), None, "{f:?}: expired");
        }
    }

    #[test]
    fn ports_are_allocated_as_configured() {
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(7);
        let host = a("10.0.0.2:41641");
        let mut nat = Nat::new(
            "192.0.2.1".parse().unwrap(),
            NatConfig::new(Mapping::Adpm, Filtering::Adpf).ports(PortAlloc::Sequential),
        );
        let p: Vec<u16> = (0..3)
            .map(|i| {
                nat.outbound(
                    now,
                    &mut rng,
                    host,
                    SocketAddr::new("198.18.1.1".parse().unwrap(), 3478 + i),
                )
                .port()
            })
            .collect();
        assert_eq!(p, [20000, 20001, 20002]);
        let mut nat = Nat::new(
            "192.0.2.1".parse().unwrap(),
            NatConfig::new(Mapping::Eim, Filtering::Adpf),
        );
        let other = a("10.0.0.3:41641");
        let x = nat.outbound(now, &mut rng, host, a("198.18.1.1:1"));
        let y = nat.outbound(now, &mut rng, other, a("198.18.1.1:1"));
        assert_eq!(
            (x.port(), y.port()),
            (41641, 41642),
            "a taken port moves on"
        );
        nat.flush();
        assert_eq!(nat.mappings(now), 0);
    }
}
