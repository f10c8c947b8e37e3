//! The packet filter: what control's policy lets into this node through the tunnel. Every
//! decrypted packet is judged before it reaches the TUN device: replies to flows this node
//! opened come in (stateful, like a firewall), new flows come in if a rule lets their source
//! reach the destination port and protocol, later fragments only after their first fragment
//! was let in. Sans-IO: packets and `now` in, a verdict out.

mod flows;
mod packet;

pub use flows::FlowKey;
use flows::{idle_timeout, Flow, Opener, Tables};
use ipnet::IpNet;
use packet::{Icmp, Packet, Tuple, SCTP, TCP, TCP_FIN, TCP_RST, UDP};
#[cfg(test)]
use packet::{ICMP, ICMPV6};
use pinhole_proto::filter::{proto, FilterRule, PortRange};
use std::time::Instant;

/// Flows remembered at most (about 56 bytes each).
pub const MAX_FLOWS: usize = 32 * 1024;
/// First fragments remembered at most.
pub const MAX_FRAGMENTS: usize = 4096;
/// Seconds between sweeps of expired entries.
const SWEEP_EVERY: u32 = 10;

/// Why a packet was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// No rule lets its source reach this port, and it answers nothing this node sent.
    Policy,
    /// A later fragment of a datagram whose first fragment was not let in.
    Fragment,
    /// Not a readable IP packet (or a first fragment too short to show its ports).
    Malformed,
}

/// One rule, ready to match.
#[derive(Debug, Clone)]
struct Rule {
    src: Vec<IpNet>,
    dst: Vec<IpNet>,
    ports: Vec<PortRange>,
    /// A bit per IP protocol number.
    protos: [u64; 4],
}

impl Rule {
    fn new(r: &FilterRule) -> Rule {
        let mut protos = [0u64; 4];
        let list: &[u8] = if r.protos.is_empty() {
            &proto::DEFAULT
        } else {
            &r.protos
        };
        for p in list {
            protos[usize::from(*p / 64)] |= 1 << (p % 64);
        }
        Rule {
            src: r.src.clone(),
            dst: r.dst.clone(),
            ports: r.ports.clone(),
            protos,
        }
    }

    fn allows(&self, t: &Tuple) -> bool {
        self.protos[usize::from(t.proto / 64)] & (1 << (t.proto % 64)) != 0
            && (!matches!(t.proto, TCP | UDP | SCTP)
                || self.ports.iter().any(|r| r.contains(t.dport)))
            && self.dst.iter().any(|n| n.contains(&t.dst))
            && self.src.iter().any(|n| n.contains(&t.src))
    }
}

/// Counters of what the filter did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    pub dropped_policy: u64,
    pub dropped_fragments: u64,
    pub dropped_malformed: u64,
    /// New inbound flows a rule let in.
    pub accepted_new: u64,
    /// Flows or fragments forgotten early to stay within the bounds.
    pub evicted: u64,
}

/// A node's inbound filter and the flows it tracks.
pub struct Filter {
    rules: Vec<Rule>,
    generation: u32,
    tables: Tables,
    epoch: Instant,
    last_sweep: u32,
    stats: FilterStats,
}

impl Filter {
    pub fn new(rules: &[FilterRule], now: Instant) -> Filter {
        Filter::with_bounds(rules, now, MAX_FLOWS, MAX_FRAGMENTS)
    }

    pub fn with_bounds(
        rules: &[FilterRule],
        now: Instant,
        max_flows: usize,
        max_fragments: usize,
    ) -> Filter {
        Filter {
            rules: rules.iter().map(Rule::new).collect(),
            generation: 0,
            tables: Tables::new(max_flows, max_fragments),
            epoch: now,
            last_sweep: 0,
            stats: FilterStats::default(),
        }
    }

    /// New rules: flows this node opened stay; flows the old rules let in are judged again
    /// by the new ones on their next packet.
    pub fn set_rules(&mut self, rules: &[FilterRule]) {
        self.rules = rules.iter().map(Rule::new).collect();
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    pub fn stats(&self) -> FilterStats {
        FilterStats {
            evicted: self.tables.evicted,
            ..self.stats
        }
    }

    /// Flows tracked now.
    pub fn tracked_flows(&self) -> usize {
        self.tables.flows.len()
    }

    /// Bytes of memory one tracked flow takes.
    pub fn bytes_per_flow() -> usize {
        Tables::bytes_per_flow()
    }

    fn clock(&mut self, now: Instant) -> u32 {
        let s =
            u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX);
        if s >= self.last_sweep + SWEEP_EVERY {
            self.last_sweep = s;
            self.tables.sweep(s);
        }
        s
    }

    /// A packet this node sends through the tunnel: its flow is remembered so that replies
    /// come back in.
    pub fn outbound(&mut self, packet: &[u8], now: Instant) {
        let Packet::Whole {
            tuple,
            icmp,
            tcp_flags,
            ..
        } = packet::parse(packet)
        else {
            return;
        };
        if icmp.is_some_and(|k| k != Icmp::EchoRequest) {
            return;
        }
        let s = self.clock(now);
        let expires = s.saturating_add(idle_timeout(
            tuple.proto,
            tcp_flags & (TCP_FIN | TCP_RST) != 0,
        ));
        let key = FlowKey::outbound(&tuple);
        match self.tables.flows.get_mut(&key) {
            Some(f) => f.expires = expires,
            None => self.tables.put(
                key,
                Flow {
                    opener: Opener::Local,
                    expires,
                },
                s,
            ),
        }
    }

    /// A packet that arrived through the tunnel: let in, or why not.
    pub fn inbound(&mut self, packet: &[u8], now: Instant) -> Result<(), Drop> {
        let s = self.clock(now);
        let (tuple, icmp, tcp_flags, first_of) = match packet::parse(packet) {
            Packet::Whole {
                tuple,
                icmp,
                tcp_flags,
                first_of,
            } => (tuple, icmp, tcp_flags, first_of),
            Packet::Later(key) => {
                return if self.tables.fragment_allowed(&key, s) {
                    Ok(())
                } else {
                    self.stats.dropped_fragments += 1;
                    Err(Drop::Fragment)
                };
            }
            Packet::Malformed => {
                self.stats.dropped_malformed += 1;
                return Err(Drop::Malformed);
            }
        };
        let verdict = match icmp {
            // An error about a packet this node sent: in if that packet's flow is known.
            Some(Icmp::Error(inner)) => {
                let known = self.tables.flows.contains_key(&FlowKey::outbound(&inner));
                if known || self.allowed(&tuple) {
                    Ok(())
                } else {
                    Err(Drop::Policy)
                }
            }
            _ => self.judge_flow(&tuple, tcp_flags, s),
        };
        match verdict {
            Ok(()) => {
                if let Some(k) = first_of {
                    self.tables.put_fragment(k, s);
                }
                Ok(())
            }
            Err(d) => {
                self.stats.dropped_policy += 1;
                Err(d)
            }
        }
    }

    fn judge_flow(&mut self, t: &Tuple, tcp_flags: u8, s: u32) -> Result<(), Drop> {
        let key = FlowKey::inbound(t);
        let expires = s.saturating_add(idle_timeout(t.proto, tcp_flags & (TCP_FIN | TCP_RST) != 0));
        if let Some(f) = self.tables.flows.get_mut(&key) {
            let current = match f.opener {
                Opener::Local => true,
                Opener::Remote(g) => g == self.generation,
            };
            if current && f.expires > s {
                f.expires = expires;
                return Ok(());
            }
        }
        if self.allowed(t) {
            self.stats.accepted_new += 1;
            let flow = Flow {
                opener: Opener::Remote(self.generation),
                expires,
            };
            self.tables.put(key, flow, s);
            Ok(())
        } else {
            self.tables.flows.remove(&key);
            Err(Drop::Policy)
        }
    }

    fn allowed(&self, t: &Tuple) -> bool {
        self.rules.iter().any(|r| r.allows(t))
    }
}

/// What the `filter` fuzz target runs on each input: the bytes as a packet this node sends and
/// as one it receives, against a filter with a rule; nothing may panic, and afterwards a packet
/// the rule allows is still let in.
pub fn fuzz(data: &[u8]) {
    let now = Instant::now();
    let rule = FilterRule {
        src: vec![IpNet::from(std::net::IpAddr::from([100, 64, 0, 1]))],
        dst: vec![IpNet::from(std::net::IpAddr::from([100, 64, 0, 2]))],
        ports: vec![PortRange::one(22)],
        protos: Vec::new(),
    };
    let mut f = Filter::with_bounds(&[rule], now, 16, 4);
    f.outbound(data, now);
    let _ = f.inbound(data, now);
    let mut ssh = vec![
        0x45, 0, 0, 40, 0, 1, 0, 0, 64, TCP, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2,
    ];
    ssh.extend_from_slice(&[
        0xc3, 0x50, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0,
    ]);
    assert_eq!(
        f.inbound(&ssh, now),
        Ok(()),
        "an allowed packet after the input"
    );
}

#[cfg(test)]
mod tests;
