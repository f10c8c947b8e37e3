//! The filter's memory: flows seen recently (who opened each, and under which policy), and
//! first fragments it let in. Both are bounded; when full, the oldest entries go first.

use super::packet::{FragmentKey, Tuple, TCP, UDP};
use std::collections::HashMap;

/// The tables' hasher: aHash with per-process random keys (SipHash cost a measurable share of
/// the per-packet lookup; a fixed-key hash would let a peer aim collisions).
type Hasher = ahash::RandomState;
use std::net::IpAddr;

/// A flow as seen from this node, the same for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
}

impl FlowKey {
    /// The flow of a packet this node sends.
    pub fn outbound(t: &Tuple) -> FlowKey {
        FlowKey {
            proto: t.proto,
            local: t.src,
            remote: t.dst,
            local_port: t.sport,
            remote_port: t.dport,
        }
    }

    /// The flow of a packet this node receives.
    pub fn inbound(t: &Tuple) -> FlowKey {
        FlowKey {
            proto: t.proto,
            local: t.dst,
            remote: t.src,
            local_port: t.dport,
            remote_port: t.sport,
        }
    }
}

/// Who started a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// This node: replies are let in whatever the policy says.
    Local,
    /// The peer, let in by the policy of this generation (checked again when it changes).
    Remote(u32),
}

#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub opener: Opener,
    /// Seconds on the filter's clock after which the flow is forgotten.
    pub expires: u32,
}

/// Idle seconds before a flow is forgotten.
pub fn idle_timeout(proto: u8, closing: bool) -> u32 {
    match proto {
        TCP if closing => 30,
        TCP => 3600,
        UDP => 120,
        _ => 30,
    }
}

/// Seconds a first fragment's acceptance lasts for the fragments after it.
pub const FRAGMENT_LIFETIME: u32 = 30;

/// Bounded maps of flows and fragments.
pub struct Tables {
    pub flows: HashMap<FlowKey, Flow, Hasher>,
    pub fragments: HashMap<FragmentKey, u32, Hasher>,
    max_flows: usize,
    max_fragments: usize,
    /// Entries dropped to make room before they expired.
    pub evicted: u64,
}

impl Tables {
    pub fn new(max_flows: usize, max_fragments: usize) -> Tables {
        Tables {
            flows: HashMap::default(),
            fragments: HashMap::default(),
            max_flows,
            max_fragments,
            evicted: 0,
        }
    }

    /// Records or refreshes a flow.
    pub fn put(&mut self, key: FlowKey, flow: Flow, now: u32) {
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&key) {
            self.flows.retain(|_, f| f.expires > now);
            if self.flows.len() >= self.max_flows {
                self.evicted += evict_oldest(&mut self.flows, |f| f.expires) as u64;
            }
        }
        self.flows.insert(key, flow);
    }

    /// Remembers that a first fragment was let in.
    pub fn put_fragment(&mut self, key: FragmentKey, now: u32) {
        if self.fragments.len() >= self.max_fragments && !self.fragments.contains_key(&key) {
            self.fragments.retain(|_, e| *e > now);
            if self.fragments.len() >= self.max_fragments {
                self.evicted += evict_oldest(&mut self.fragments, |e| *e) as u64;
            }
        }
        self.fragments.insert(key, now + FRAGMENT_LIFETIME);
    }

    /// Whether a later fragment belongs to a datagram whose first fragment was let in.
    pub fn fragment_allowed(&self, key: &FragmentKey, now: u32) -> bool {
        self.fragments.get(key).is_some_and(|e| *e > now)
    }

    /// Forgets what has expired.
    pub fn sweep(&mut self, now: u32) {
        self.flows.retain(|_, f| f.expires > now);
        self.fragments.retain(|_, e| *e > now);
    }

    /// Bytes one tracked flow costs (its entry plus the hash table's control byte).
    pub fn bytes_per_flow() -> usize {
        std::mem::size_of::<(FlowKey, Flow)>() + 1
    }
}

/// Drops the eighth of the entries that expire first; returns how many went.
fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V, Hasher>,
    expiry: impl Fn(&V) -> u32,
) -> usize {
    let mut times: Vec<u32> = map.values().map(&expiry).collect();
    let n = (times.len() / 8).max(1);
    let (_, cut, _) = times.select_nth_unstable(n - 1);
    let cut = *cut;
    let before = map.len();
    let mut dropped = 0;
    map.retain(|_, v| {
        if dropped < n && expiry(v) <= cut {
            dropped += 1;
            false
        } else {
            true
        }
    });
    before - map.len()
}
