//! Netcheck: what the local network allows, learned by sending STUN Binding requests from the
//! node's own UDP socket to the relay regions' STUN servers. Whether UDP gets out at all, the
//! public address:port the NAT gives this socket, whether that mapping changes per destination
//! (a hard NAT), whether the NAT hairpins (a packet to its own public address comes back in),
//! which address families work, and the round-trip time to each region. Sans-IO: the caller sends what
//! `poll_transmit` returns, feeds STUN datagrams to `handle_stun`, and wakes it at `poll_timeout`.

use crate::Transmit;
use pinhole_proto::stun::{self, Message, TxId};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// When each attempt at a server goes out, counted from the start, until one is answered (UDP
/// loses packets: with 10% lost each way a third of a second's wait per loss, not the whole
/// netcheck's, and the node's public address is published that much sooner).
const ATTEMPTS: [Duration; 7] = [
    Duration::ZERO,
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_millis(900),
    Duration::from_millis(1400),
    Duration::from_millis(2000),
    Duration::from_millis(2600),
];

/// How long a netcheck waits for answers.
pub const NETCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the hairpin probe (a request sent to this socket's own public address) may take
/// to come back in.
const HAIRPIN_WAIT: Duration = Duration::from_millis(500);

/// A STUN server of a relay region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunServer {
    pub region: String,
    pub addr: SocketAddr,
}

/// What one server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub server: StunServer,
    pub latency: Option<Duration>,
    /// This socket's address as the server saw it.
    pub mapped: Option<SocketAddr>,
}

/// What a netcheck learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether UDP gets out; unknown without servers.
    pub udp: Option<bool>,
    /// Distinct public addresses seen.
    pub public: Vec<SocketAddr>,
    /// Whether servers at different addresses, or two ports of one server, saw different
    /// mappings (a hard NAT); unknown with fewer than two answers.
    pub mapping_varies_by_dest: Option<bool>,
    pub probes: Vec<Probe>,
    /// The region with the lowest latency.
    pub preferred_region: Option<String>,
    /// Whether IPv4 / IPv6 STUN servers answered; unknown without a server of that family.
    pub ipv4: Option<bool>,
    pub ipv6: Option<bool>,
    /// Whether a packet sent to this socket's own public IPv4 address came back in (the NAT
    /// hairpins: two nodes behind it can reach each other at their public addresses); unknown
    /// without a public address.
    pub hairpinning: Option<bool>,
}

struct ServerState {
    server: StunServer,
    /// Transaction id and send time of each attempt made.
    sent: Vec<(TxId, Instant)>,
    answer: Option<(Duration, Option<SocketAddr>)>,
}

/// One run of STUN probes.
pub struct Netcheck {
    start: Instant,
    seed: TxId,
    servers: Vec<ServerState>,
    queue: VecDeque<Transmit>,
    /// When the hairpin probe went out, and whether it came back.
    hairpin_sent: Option<Instant>,
    hairpin_back: bool,
}

impl Netcheck {
    /// Starts probing `servers`; `seed` (random) makes the transaction ids unguessable.
    pub fn new(now: Instant, servers: Vec<StunServer>, seed: TxId) -> Self {
        let mut n = Netcheck {
            start: now,
            seed,
            servers: servers
                .into_iter()
                .map(|server| ServerState {
                    server,
                    sent: Vec::new(),
                    answer: None,
                })
                .collect(),
            queue: VecDeque::new(),
            hairpin_sent: None,
            hairpin_back: false,
        };
        n.handle_timeout(now);
        n
    }

    fn tx_id(&self, server: usize, attempt: usize) -> TxId {
        let mut tx = self.seed;
        let n = (server * ATTEMPTS.len() + attempt) as u32;
        for (b, x) in tx[8..].iter_mut().zip(n.to_be_bytes()) {
            *b ^= x;
        }
        tx
    }

    /// The hairpin probe's transaction id: the seed inverted (no attempt's id can equal it).
    fn hairpin_tx(&self) -> TxId {
        self.seed.map(|b| !b)
    }

    /// Sends the attempts that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_done(now) {
            return;
        }
        self.send_hairpin(now);
        let elapsed = now.saturating_duration_since(self.start);
        for i in 0..self.servers.len() {
            let s = &self.servers[i];
            let next = s.sent.len();
            if s.answer.is_some() || next >= ATTEMPTS.len() || ATTEMPTS[next] > elapsed {
                continue;
            }
            let tx = self.tx_id(i, next);
            let dst = s.server.addr;
            self.servers[i].sent.push((tx, now));
            self.queue.push_back(Transmit {
                socket: crate::transmit::MAIN_SOCKET,
                dst,
                payload: stun::binding_request(tx),
            });
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    /// Once a public IPv4 address is known: one request to it, which comes back in only
    /// through a NAT that hairpins.
    fn send_hairpin(&mut self, now: Instant) {
        if self.hairpin_sent.is_some() {
            return;
        }
        let Some(public) = self
            .servers
            .iter()
            .filter_map(|s| s.answer.and_then(|(_, m)| m))
            .find(|m| m.is_ipv4())
        else {
            return;
        };
        self.hairpin_sent = Some(now);
        self.queue.push_back(Transmit {
            socket: crate::transmit::MAIN_SOCKET,
            dst: public,
            payload: stun::binding_request(self.hairpin_tx()),
        });
    }

    /// Takes a STUN answer to one of our requests (or the hairpin probe coming back); false if
    /// it is neither.
    pub fn handle_stun(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        let (tx, mapped) = match stun::parse(datagram) {
            Ok(Message::BindingSuccess { tx, mapped, .. }) => (tx, mapped),
            Ok(Message::BindingRequest { tx, .. })
                if self.hairpin_sent.is_some() && tx == self.hairpin_tx() =>
            {
                self.hairpin_back = true;
                return true;
            }
            _ => return false,
        };
        for s in &mut self.servers {
            if let Some((_, sent)) = s.sent.iter().find(|(t, _)| *t == tx) {
                if !same_host(s.server.addr, from) {
                    return false;
                }
                if s.answer.is_none() {
                    s.answer = Some((now.saturating_duration_since(*sent), mapped));
                    self.send_hairpin(now);
                }
                return true;
            }
        }
        false
    }

    /// Whether every server has answered (the hairpin probe may still be on its way): the
    /// public addresses are known.
    pub fn all_answered(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|s| s.answer.is_some())
    }

    /// When the hairpin probe stops being waited for, if it is.
    fn hairpin_deadline(&self) -> Option<Instant> {
        match self.hairpin_sent {
            Some(sent) if !self.hairpin_back => Some(sent + HAIRPIN_WAIT),
            _ => None,
        }
    }

    /// Done when every server answered (and the hairpin probe came back or had its time), or
    /// the time is up.
    pub fn is_done(&self, now: Instant) -> bool {
        let answered = self.servers.iter().all(|s| s.answer.is_some())
            && self.hairpin_deadline().is_none_or(|t| t <= now);
        answered || now >= self.start + NETCHECK_TIMEOUT
    }

    /// When to call `handle_timeout` next; none once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let end = self.start + NETCHECK_TIMEOUT;
        if self.servers.iter().all(|s| s.answer.is_some()) {
            return self.hairpin_deadline().map(|t| t.min(end));
        }
        let next_attempt = self
            .servers
            .iter()
            .filter(|s| s.answer.is_none())
            .filter_map(|s| ATTEMPTS.get(s.sent.len()))
            .min()
            .map(|d| self.start + *d);
        Some(next_attempt.map_or(end, |t| t.min(end)))
    }

    pub fn report(&self) -> Report {
        let probes: Vec<Probe> = self
            .servers
            .iter()
            .map(|s| Probe {
                server: s.server.clone(),
                latency: s.answer.map(|(rtt, _)| rtt),
                mapped: s.answer.and_then(|(_, m)| m),
            })
            .collect();
        let answered: Vec<&Probe> = probes.iter().filter(|p| p.latency.is_some()).collect();
        let mut public: Vec<SocketAddr> = answered.iter().filter_map(|p| p.mapped).collect();
        public.sort();
        public.dedup();
        // Compare mappings seen by servers at different IPs, per address family. With one
        // server IP, two of its ports still tell: different mappings are a mapping that
        // depends on the destination (the common hard NAT); the same mapping is an
        // endpoint-independent one (an address-dependent mapping that keeps the port for
        // every port of one address is rare, and a second server address would show it).
        let mut varies = None;
        let mut port_varies = false;
        let mut port_agrees = false;
        for p in &answered {
            for q in &answered {
                let (Some(a), Some(b)) = (p.mapped, q.mapped) else {
                    continue;
                };
                if a.is_ipv4() != b.is_ipv4() {
                    continue;
                }
                if p.server.addr.ip() != q.server.addr.ip() {
                    varies = Some(varies.unwrap_or(false) || a != b);
                } else if p.server.addr.port() != q.server.addr.port() {
                    port_varies |= a != b;
                    port_agrees |= a == b;
                }
            }
        }
        if port_varies {
            varies = Some(true);
        } else if port_agrees && varies.is_none() {
            varies = Some(false);
        }
        let preferred_region = answered
            .iter()
            .min_by_key(|p| p.latency)
            .map(|p| p.server.region.clone());
        let family = |v4: bool| {
            let asked = probes.iter().filter(|p| p.server.addr.is_ipv4() == v4);
            let mut any = false;
            let mut answer = false;
            for p in asked {
                any = true;
                answer |= p.latency.is_some();
            }
            any.then_some(answer)
        };
        Report {
            udp: (!self.servers.is_empty()).then_some(!answered.is_empty()),
            public,
            mapping_varies_by_dest: varies,
            ipv4: family(true),
            ipv6: family(false),
            hairpinning: self.hairpin_sent.map(|_| self.hairpin_back),
            probes,
            preferred_region,
        }
    }
}

/// Whether an answer came from the server asked (v4-mapped v6 forms compared as v4).
fn same_host(asked: SocketAddr, from: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(asked.ip()) == canon(from.ip()) && asked.port() == from.port()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME_PUBLIC: &str = "203.0.113.5:40000";

    fn server(region: &str, addr: &str) -> StunServer {
        StunServer {
            region: region.into(),
            addr: addr.parse().unwrap(),
        }
    }

    /// A STUN server's answer to a request, as a NAT with the given mapping would let it out.
    fn answer(req: &Transmit, mapped: &str) -> Vec<u8> {
        let Ok(Message::BindingRequest { tx, .. }) = stun::parse(&req.payload) else {
            panic!("not a binding request")
        };
        stun::binding_success(tx, mapped.parse().unwrap(), None, None, true)
    }

    /// A netcheck of two regions at different addresses, with the first request to each.
    fn two_regions(t0: Instant) -> (Netcheck, Transmit, Transmit) {
        let servers = vec![
            server("fra", "198.51.100.1:3478"),
            server("nyc", "198.51.100.2:3478"),
        ];
        let mut n = Netcheck::new(t0, servers, [7; 12]);
        let a = n.poll_transmit().unwrap();
        let b = n.poll_transmit().unwrap();
        (n, a, b)
    }

    #[test]
    fn an_easy_nat_maps_the_same_way_to_every_server() {
        let t0 = Instant::now();
        let (mut n, a, b) = two_regions(t0);
        assert!(n.poll_transmit().is_none());
        assert!(n.handle_stun(
            t0 + Duration::from_millis(30),
            b.dst,
            &answer(&b, ME_PUBLIC)
        ));
        assert!(!n.is_done(t0 + Duration::from_millis(30)));
        assert!(n.handle_stun(
            t0 + Duration::from_millis(12),
            a.dst,
            &answer(&a, ME_PUBLIC)
        ));
        // Then only the hairpin probe is waited for.
        assert!(!n.is_done(t0 + Duration::from_millis(30)));
        assert!(n.is_done(t0 + Duration::from_millis(30) + HAIRPIN_WAIT));
        let r = n.report();
        assert_eq!(r.udp, Some(true));
        assert_eq!(r.public, vec![ME_PUBLIC.parse().unwrap()]);
        assert_eq!(r.mapping_varies_by_dest, Some(false));
        assert_eq!(r.preferred_region.as_deref(), Some("fra"));
        assert_eq!(r.probes[1].latency, Some(Duration::from_millis(30)));
    }

    #[test]
    fn a_hard_nat_shows_a_new_port_per_destination() {
        let t0 = Instant::now();
        let (mut n, a, b) = two_regions(t0);
        n.handle_stun(t0, a.dst, &answer(&a, "203.0.113.5:40000"));
        n.handle_stun(t0, b.dst, &answer(&b, "203.0.113.5:40001"));
        let r = n.report();
        assert_eq!(r.mapping_varies_by_dest, Some(true));
        assert_eq!(r.public.len(), 2);
    }

    #[test]
    fn two_ports_of_one_server_show_a_port_dependent_mapping_only() {
        let t0 = Instant::now();
        let run = |first: &str, second: &str| {
            let mut n = Netcheck::new(
                t0,
                vec![
                    server("local", "198.18.1.1:3478"),
                    server("local", "198.18.1.1:3479"),
                ],
                [1; 12],
            );
            let (a, b) = (n.poll_transmit().unwrap(), n.poll_transmit().unwrap());
            n.handle_stun(t0, a.dst, &answer(&a, first));
            n.handle_stun(t0, b.dst, &answer(&b, second));
            n.report().mapping_varies_by_dest
        };
        assert_eq!(run("203.0.113.5:40000", "203.0.113.5:40001"), Some(true));
        assert_eq!(
            run("203.0.113.5:40000", "203.0.113.5:40000"),
            Some(false),
            "the same mapping from one server's two ports: endpoint-independent"
        );
    }

    #[test]
    fn lost_requests_are_retried_and_silence_means_no_udp() {
        let t0 = Instant::now();
        let mut n = Netcheck::new(t0, vec![server("fra", "198.51.100.1:3478")], [1; 12]);
        let mut sent = vec![n.poll_transmit().unwrap().payload];
        for at in &ATTEMPTS[1..] {
            assert_eq!(n.poll_timeout(), Some(t0 + *at));
            n.handle_timeout(t0 + *at);
            let retry = n.poll_transmit().expect("a retry");
            assert!(
                !sent.contains(&retry.payload),
                "a new transaction id per attempt"
            );
            sent.push(retry.payload);
        }
        n.handle_timeout(t0 + Duration::from_millis(2900));
        assert!(n.poll_transmit().is_none(), "seven attempts at most");
        assert_eq!(n.poll_timeout(), Some(t0 + NETCHECK_TIMEOUT));
        assert!(n.is_done(t0 + NETCHECK_TIMEOUT));
        let r = n.report();
        assert_eq!(r.udp, Some(false));
        assert_eq!(r.mapping_varies_by_dest, None);
        assert_eq!(r.preferred_region, None);
    }

    #[test]
    fn answers_from_strangers_or_to_other_transactions_are_ignored() {
        let t0 = Instant::now();
        let mut n = Netcheck::new(t0, vec![server("fra", "198.51.100.1:3478")], [1; 12]);
        let req = n.poll_transmit().unwrap();
        let stranger: SocketAddr = "192.0.2.66:3478".parse().unwrap();
        assert!(!n.handle_stun(t0, stranger, &answer(&req, ME_PUBLIC)));
        let forged = stun::binding_success([9; 12], ME_PUBLIC.parse().unwrap(), None, None, true);
        assert!(!n.handle_stun(t0, req.dst, &forged));
        assert!(!n.handle_stun(t0, req.dst, b"\x01\x00\x00\x00garbage"));
        assert_eq!(n.report().udp, Some(false));
    }

    #[test]
    fn a_probe_to_the_own_public_address_tells_whether_the_nat_hairpins() {
        let t0 = Instant::now();
        let run = |comes_back: bool| {
            let mut n = Netcheck::new(t0, vec![server("fra", "198.51.100.1:3478")], [3; 12]);
            let req = n.poll_transmit().unwrap();
            let t1 = t0 + Duration::from_millis(20);
            n.handle_stun(t1, req.dst, &answer(&req, ME_PUBLIC));
            let probe = n.poll_transmit().expect("the hairpin probe");
            assert_eq!(probe.dst, ME_PUBLIC.parse().unwrap());
            assert!(!n.is_done(t1), "waits for the probe");
            assert_eq!(n.poll_timeout(), Some(t1 + HAIRPIN_WAIT));
            if comes_back {
                // Through a hairpinning NAT it arrives from the public address itself.
                assert!(n.handle_stun(t1, ME_PUBLIC.parse().unwrap(), &probe.payload));
                assert!(n.is_done(t1));
            } else {
                assert!(n.is_done(t1 + HAIRPIN_WAIT));
            }
            assert!(n.poll_transmit().is_none(), "one probe");
            n.report()
        };
        let r = run(true);
        assert_eq!(r.hairpinning, Some(true));
        assert_eq!(
            (r.ipv4, r.ipv6),
            (Some(true), None),
            "no IPv6 server: unknown"
        );
        assert_eq!(run(false).hairpinning, Some(false));
        // A request with another id is somebody else's, not the probe.
        let mut n = Netcheck::new(t0, vec![server("fra", "198.51.100.1:3478")], [3; 12]);
        let req = n.poll_transmit().unwrap();
        n.handle_stun(t0, req.dst, &answer(&req, ME_PUBLIC));
        assert!(!n.handle_stun(
            t0,
            ME_PUBLIC.parse().unwrap(),
            &stun::binding_request([5; 12])
        ));
        assert_eq!(n.report().hairpinning, Some(false));
    }

    #[test]
    fn each_address_family_is_reported_by_its_own_servers() {
        let t0 = Instant::now();
        let mut n = Netcheck::new(
            t0,
            vec![
                server("fra", "198.51.100.1:3478"),
                server("fra", "[2001:db8::1]:3478"),
            ],
            [4; 12],
        );
        let v4 = n.poll_transmit().unwrap();
        n.handle_stun(t0, v4.dst, &answer(&v4, ME_PUBLIC));
        let r = n.report();
        assert_eq!((r.ipv4, r.ipv6), (Some(true), Some(false)));
    }

    #[test]
    fn no_servers_means_unknown() {
        let n = Netcheck::new(Instant::now(), Vec::new(), [0; 12]);
        assert_eq!(n.report().udp, None);
        assert!(n.poll_timeout().is_none());
    }
}
