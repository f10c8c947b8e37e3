//! The policy applied to an account's nodes: for each node, the peers it may see (it may reach
//! them or they it), its inbound packet filter, and what it may reach on each peer.

use crate::model::{Acl, Policy};
use crate::target::{Dst, Target};
use ipnet::IpNet;
use pinhole_proto::filter::{Access, FilterRule, NodePolicy, PeerAccess, PortRange};
use std::net::IpAddr;

/// A node as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: String,
    pub addresses: Vec<IpAddr>,
    /// Its user; ignored when it has tags (a tagged node belongs to its tags).
    pub user: Option<String>,
    pub tags: Vec<String>,
    /// The networks it forwards for peers (its approved routes: a subnet router's LANs, both
    /// default routes for an exit node). A rule's destination CIDR (or `*`) that overlaps one
    /// names the router, and opens that part of its network in the router's filter.
    pub routes: Vec<IpNet>,
}

/// A set of node indices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSet(Vec<u64>);

impl NodeSet {
    fn with_len(n: usize) -> NodeSet {
        NodeSet(vec![0; n.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn union(&mut self, other: &NodeSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The indices in the set.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

/// Every node's share of the policy, by the index of the node in the list it was made from.
pub struct View {
    members: Vec<Member>,
    visible: Vec<NodeSet>,
    rules: Vec<ResolvedRule>,
}

/// A rule with its names resolved to nodes: who it lets in, where, on what.
struct ResolvedRule {
    src: NodeSet,
    /// The rule's source addresses that are not nodes' (CIDRs, hosts, `*`).
    src_nets: Vec<IpNet>,
    /// Per destination entry: its nodes, ports, and whether it is `autogroup:self`.
    dst: Vec<(NodeSet, Vec<PortRange>, bool)>,
    /// Per destination entry, the addresses it names when they are networks (a CIDR, `*`):
    /// routers forward to the part of them they route.
    dst_nets: Vec<Vec<IpNet>>,
    all_dst: NodeSet,
    protos: Vec<u8>,
}

impl ResolvedRule {
    fn own_devices(&self) -> bool {
        self.dst.iter().any(|(_, _, own)| *own)
    }
}

impl Policy {
    /// Applies the policy to `members`. A policy without `acls` lets everyone see and reach
    /// everyone (as one rule `* → *:*`).
    pub fn view(&self, members: Vec<Member>) -> View {
        let n = members.len();
        let allow_all = [Acl {
            pos: Default::default(),
            src: vec![Target::Any],
            dst: vec![Dst {
                pos: Default::default(),
                target: Target::Any,
                ports: vec![PortRange::ALL],
            }],
            protos: Vec::new(),
        }];
        let acls = self.acls.as_deref().unwrap_or(&allow_all);
        let rules: Vec<ResolvedRule> = acls.iter().map(|a| self.resolve(a, &members)).collect();
        let mut visible = vec![NodeSet::with_len(n); n];
        for r in &rules {
            if r.own_devices() {
                // Only pairs of the same user's untagged nodes, plus the rule's other entries.
                for d in r.all_dst.iter() {
                    for s in r.src.iter() {
                        if pair_allowed(r, &members, s, d) {
                            visible[d].insert(s);
                            visible[s].insert(d);
                        }
                    }
                }
                continue;
            }
            for d in r.all_dst.iter() {
                visible[d].union(&r.src);
            }
            if !r.all_dst.is_empty() {
                for s in r.src.iter() {
                    visible[s].union(&r.all_dst);
                }
            }
        }
        for (i, v) in visible.iter_mut().enumerate() {
            // A node is not its own peer.
            v.0[i / 64] &= !(1 << (i % 64));
        }
        View {
            members,
            visible,
            rules,
        }
    }

    fn resolve(&self, acl: &Acl, members: &[Member]) -> ResolvedRule {
        let n = members.len();
        let mut src = NodeSet::with_len(n);
        let mut src_nets = Vec::new();
        for t in &acl.src {
            match t {
                Target::Any => src_nets.extend([any_v4(), any_v6()]),
                Target::Net(net) => src_nets.push(*net),
                _ => {}
            }
            for (i, m) in members.iter().enumerate() {
                if self.names(t, m) {
                    src.insert(i);
                }
            }
        }
        let mut all_dst = NodeSet::with_len(n);
        let dst_nets = acl
            .dst
            .iter()
            .map(|d| match &d.target {
                Target::Any => vec![any_v4(), any_v6()],
                Target::Net(net) => vec![*net],
                _ => Vec::new(),
            })
            .collect();
        let dst = acl
            .dst
            .iter()
            .map(|d| {
                let own = d.target == Target::OwnDevices;
                let mut set = NodeSet::with_len(n);
                for (i, m) in members.iter().enumerate() {
                    let named = if own {
                        m.tags.is_empty() && m.user.is_some()
                    } else {
                        self.names(&d.target, m)
                    };
                    if named {
                        set.insert(i);
                    }
                }
                all_dst.union(&set);
                (set, d.ports.clone(), own)
            })
            .collect();
        ResolvedRule {
            src,
            src_nets,
            dst,
            dst_nets,
            all_dst,
            protos: acl.protos.clone(),
        }
    }

    /// Whether target `t` names node `m` (as a source or an ordinary destination).
    fn names(&self, t: &Target, m: &Member) -> bool {
        let person = if m.tags.is_empty() {
            m.user.as_deref()
        } else {
            None
        };
        match t {
            Target::Any => true,
            Target::User(u) => person == Some(u.as_str()),
            Target::Group(g) => person.is_some_and(|u| {
                self.groups
                    .get(g)
                    .is_some_and(|members| members.iter().any(|x| x == u))
            }),
            Target::Member => person.is_some(),
            Target::Tag(tag) => m.tags.iter().any(|x| x == tag),
            Target::OwnDevices => false,
            Target::Net(net) => {
                m.addresses.iter().any(|a| net.contains(a))
                    || m.routes.iter().any(|r| overlap(net, r).is_some())
            }
        }
    }
}

/// The part two networks share: the smaller one when one holds the other, else none.
fn overlap(a: &IpNet, b: &IpNet) -> Option<IpNet> {
    if a.contains(b) {
        Some(b.trunc())
    } else if b.contains(a) {
        Some(a.trunc())
    } else {
        None
    }
}

/// For a rule with `autogroup:self`: whether node `s` may reach node `d` through it.
fn pair_allowed(r: &ResolvedRule, members: &[Member], s: usize, d: usize) -> bool {
    r.dst
        .iter()
        .any(|(set, _, own)| set.contains(d) && (!own || same_person(&members[s], &members[d])))
}

fn same_person(a: &Member, b: &Member) -> bool {
    a.tags.is_empty() && b.tags.is_empty() && a.user.is_some() && a.user == b.user
}

fn any_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

fn any_v6() -> IpNet {
    IpNet::V6(ipnet::Ipv6Net::default())
}

fn host_nets(m: &Member) -> impl Iterator<Item = IpNet> + '_ {
    m.addresses.iter().map(|a| IpNet::from(*a))
}

impl View {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The peers node `i` may see.
    pub fn visible(&self, i: usize) -> &NodeSet {
        &self.visible[i]
    }

    /// Whether nodes `a` and `b` see each other.
    pub fn sees(&self, a: usize, b: usize) -> bool {
        self.visible.get(a).is_some_and(|v| v.contains(b))
    }

    /// Node `d`'s filter and what it may reach.
    pub fn node_policy(&self, d: usize) -> NodePolicy {
        let me = &self.members[d];
        let mut filter = Vec::new();
        for r in self.rules.iter().filter(|r| r.all_dst.contains(d)) {
            let (anyone, own) = r.ports_for(d);
            if !anyone.is_empty() {
                let mut src = r.src_nets.clone();
                let everything = src.contains(&any_v4()) && src.contains(&any_v6());
                if !everything {
                    src.extend(r.src.iter().flat_map(|s| host_nets(&self.members[s])));
                }
                filter.push(rule(src, me, anyone, &r.protos));
            }
            // What the rule opens of the networks this node routes.
            for ((set, ports, is_self), nets) in r.dst.iter().zip(&r.dst_nets) {
                let routed: Vec<IpNet> = nets
                    .iter()
                    .flat_map(|n| me.routes.iter().filter_map(|route| overlap(n, route)))
                    .collect();
                if *is_self || !set.contains(d) || routed.is_empty() {
                    continue;
                }
                let mut src = r.src_nets.clone();
                let everything = src.contains(&any_v4()) && src.contains(&any_v6());
                if !everything {
                    src.extend(r.src.iter().flat_map(|s| host_nets(&self.members[s])));
                }
                filter.push(FilterRule {
                    src,
                    dst: routed,
                    ports: ports.clone(),
                    protos: r.protos.clone(),
                });
            }
            if !own.is_empty() {
                let src: Vec<IpNet> = r
                    .src
                    .iter()
                    .filter(|&s| same_person(&self.members[s], me))
                    .flat_map(|s| host_nets(&self.members[s]))
                    .collect();
                if !src.is_empty() {
                    filter.push(rule(src, me, own, &r.protos));
                }
            }
        }
        let reach = self.visible[d]
            .iter()
            .filter_map(|peer| {
                let them = &self.members[peer];
                let allow: Vec<Access> = self
                    .rules
                    .iter()
                    .filter(|r| r.src.contains(d) && r.all_dst.contains(peer))
                    .filter_map(|r| {
                        let (mut ports, own) = r.ports_for(peer);
                        if same_person(me, them) {
                            ports.extend(own);
                        }
                        ports.sort();
                        ports.dedup();
                        (!ports.is_empty()).then(|| Access {
                            ports,
                            protos: r.protos.clone(),
                        })
                    })
                    .collect();
                (!allow.is_empty()).then(|| PeerAccess {
                    id: them.id.clone(),
                    allow,
                })
            })
            .collect();
        NodePolicy { filter, reach }
    }
}

impl ResolvedRule {
    /// The ports the rule opens on node `d`: to all its sources, and (`autogroup:self`) to the
    /// same person's nodes only.
    fn ports_for(&self, d: usize) -> (Vec<PortRange>, Vec<PortRange>) {
        let (mut anyone, mut own) = (Vec::new(), Vec::new());
        for (set, ports, is_self) in &self.dst {
            if set.contains(d) {
                if *is_self {
                    own.extend(ports);
                } else {
                    anyone.extend(ports);
                }
            }
        }
        for v in [&mut anyone, &mut own] {
            v.sort();
            v.dedup();
        }
        (anyone, own)
    }
}

fn rule(src: Vec<IpNet>, me: &Member, ports: Vec<PortRange>, protos: &[u8]) -> FilterRule {
    FilterRule {
        src,
        dst: host_nets(me).collect(),
        ports,
        protos: protos.to_vec(),
    }
}
