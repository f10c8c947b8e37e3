//! How two Pinhole nodes end up behind two routers: the path RFC 4787 reasoning expects, one
//! real run in a NAT lab (control with its relay and STUN, two nodes, pings over the tunnel,
//! `pinhole status --json` on both), and the grid of expected against observed.
//!
//! The expectation (plain hole punching: each side sends to the endpoint STUN saw for the
//! other, and answers wherever a packet came from):
//! - both sides map endpoint-independently: each sends from the very endpoint the other
//!   targets, so every filter lets the other in: direct;
//! - one side (A) maps endpoint-independently and filters by address at most (EIF, ADF): B's
//!   packets come from a new port of the address A sent to, A lets them in and answers there
//!   from its one mapping, which B sent to: direct;
//! - one side filters endpoint-independently: it lets the other's pings to its STUN mapping
//!   in, and its answers leave through that same mapping (the router tracks the exchange), from
//!   the very address the other sent to, whatever the other's NAT: direct;
//! - anything else (both address-dependent mappings with port or address filters, a symmetric
//!   NAT against a port-restricted one, UDP blocked): relayed.
//!
//! Two nodes behind one router meet directly only through hairpinning, with an
//! endpoint-independent mapping; a double NAT behaves as the stricter of its two routers.

//!
//! This module holds the cases and the expectation; [`running`] runs a case in a lab and reads
//! what the nodes saw, [`report`] writes the grid.

mod report;
mod running;

pub use report::*;
pub use running::*;

use crate::nat::{Filtering, Kind, Mapping, Ports, Profile};
use crate::natlab::Plan;
use std::fmt;

/// Where the nodes sit.
#[derive(Debug, Clone)]
pub enum Case {
    /// Node a behind `0`, node b behind `1`.
    Pair(Profile, Profile),
    /// Both nodes behind one router.
    SameRouter(Profile),
    /// Node a behind a home router `1` behind a carrier-grade NAT `0`; node b behind `2`.
    DoubleNat(Profile, Profile, Profile),
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Case::Pair(a, b) => write!(f, "{a} × {b}"),
            Case::SameRouter(p) => write!(f, "both behind one {p}"),
            Case::DoubleNat(c, h, b) => write!(f, "{h} behind CGNAT {c} × {b}"),
        }
    }
}

/// A path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Relayed,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        })
    }
}

/// A side's effective behaviour for the reasoning: None when UDP cannot pass. A router that
/// grants port mappings forwards the node's port from anyone: a full cone for it.
fn behaviour(p: &Profile) -> Option<(Mapping, Filtering)> {
    match p.kind {
        Kind::Public => Some((Mapping::Eim, Filtering::Eif)),
        Kind::Nat { .. } if p.port_mapping.is_some() => Some((Mapping::Eim, Filtering::Eif)),
        Kind::UdpBlocked => None,
        Kind::Nat {
            mapping, filtering, ..
        } => Some((mapping, filtering)),
    }
}

/// Whether port prediction crosses `hard` from `other`: `hard` allocates ports in sequence, so
/// `other` pings the ports after the ones the STUN servers saw and opens its filter for the
/// one `hard`'s pings come from. That suffices when `other` maps endpoint-independently (its
/// pings come from the address `hard` pinged), or when `hard` filters by address only (any
/// port of `other`'s address gets in); measured in netsim over 50 seeded runs per cell.
fn predictable(hard: &Profile, other: &Profile) -> bool {
    let Kind::Nat {
        ports: Ports::Sequential,
        filtering,
        ..
    } = hard.kind
    else {
        return false;
    };
    match behaviour(other) {
        None => false,
        Some((m, _)) => m == Mapping::Eim || filtering != Filtering::Adpf,
    }
}

/// Whether birthday probing crosses `hard` from `other`: `hard` maps every destination port
/// to a port nobody can predict (its two STUN ports differ), `other` maps
/// endpoint-independently; `hard` opens many mappings toward `other`, which probes random
/// ports until one is hit (netsim: 50 of 50 seeded runs per cell).
fn birthday(hard: &Profile, other: &Profile) -> bool {
    let Kind::Nat {
        mapping: Mapping::Adpm,
        ports: Ports::Hash | Ports::Random,
        ..
    } = hard.kind
    else {
        return false;
    };
    hard.port_mapping.is_none() && matches!(behaviour(other), Some((Mapping::Eim, _)))
}

fn rank_m(m: Mapping) -> u8 {
    match m {
        Mapping::Eim => 0,
        Mapping::Adm => 1,
        Mapping::Adpm => 2,
    }
}

fn rank_f(f: Filtering) -> u8 {
    match f {
        Filtering::Eif => 0,
        Filtering::Adf => 1,
        Filtering::Adpf => 2,
    }
}

/// Two NATs in a row behave as the stricter of each.
fn stack(outer: (Mapping, Filtering), inner: (Mapping, Filtering)) -> (Mapping, Filtering) {
    let m = if rank_m(outer.0) >= rank_m(inner.0) {
        outer.0
    } else {
        inner.0
    };
    let f = if rank_f(outer.1) >= rank_f(inner.1) {
        outer.1
    } else {
        inner.1
    };
    (m, f)
}

fn pair_expect(a: Option<(Mapping, Filtering)>, b: Option<(Mapping, Filtering)>) -> Path {
    let (Some((ma, fa)), Some((mb, fb))) = (a, b) else {
        return Path::Relayed;
    };
    let loose = |f: Filtering| f != Filtering::Adpf;
    let both_eim = ma == Mapping::Eim && mb == Mapping::Eim;
    let eim_and_loose = |m: Mapping, f: Filtering| m == Mapping::Eim && loose(f);
    let direct = both_eim
        || eim_and_loose(ma, fa)
        || eim_and_loose(mb, fb)
        || fa == Filtering::Eif
        || fb == Filtering::Eif;
    if direct {
        Path::Direct
    } else {
        Path::Relayed
    }
}

impl Case {
    /// The path RFC 4787 reasoning expects (see the module's header).
    pub fn expected(&self) -> Path {
        match self {
            Case::Pair(a, b) => match pair_expect(behaviour(a), behaviour(b)) {
                Path::Relayed
                    if predictable(a, b)
                        || predictable(b, a)
                        || birthday(a, b)
                        || birthday(b, a) =>
                {
                    Path::Direct
                }
                path => path,
            },
            Case::SameRouter(p) => match behaviour(p) {
                Some((Mapping::Eim, _)) if p.hairpin => Path::Direct,
                _ => Path::Relayed,
            },
            Case::DoubleNat(c, h, b) => {
                let a = behaviour(c).zip(behaviour(h)).map(|(c, h)| stack(c, h));
                // Either layer's unpredictable per-destination ports make the pair a
                // birthday case against an endpoint-independent mapping.
                let unpredictable = [c, h].iter().any(|p| {
                    matches!(
                        p.kind,
                        Kind::Nat {
                            mapping: Mapping::Adpm,
                            ports: Ports::Hash | Ports::Random,
                            ..
                        }
                    )
                });
                match pair_expect(a, behaviour(b)) {
                    Path::Relayed
                        if unpredictable && matches!(behaviour(b), Some((Mapping::Eim, _))) =>
                    {
                        Path::Direct
                    }
                    path => path,
                }
            }
        }
    }

    fn plan(&self) -> Plan {
        match self {
            Case::Pair(a, b) => Plan::new().site(a.clone(), &["a"]).site(b.clone(), &["b"]),
            Case::SameRouter(p) => Plan::new().site(p.clone(), &["a", "b"]),
            Case::DoubleNat(c, h, b) => Plan::new()
                .cgnat(c.clone())
                .site_behind(0, h.clone(), &["a"])
                .site(b.clone(), &["b"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(a: &str, b: &str) -> Case {
        Case::Pair(a.parse().unwrap(), b.parse().unwrap())
    }

    #[test]
    fn expectations_follow_rfc_4787_reasoning() {
        use Path::*;
        let table = [
            ("full-cone", "symmetric", Direct),
            ("restricted-cone", "symmetric", Direct),
            ("port-restricted-cone", "port-restricted-cone", Direct),
            // Birthday probing: a symmetric NAT facing an endpoint-independent mapping.
            ("port-restricted-cone", "symmetric", Direct),
            ("port-restricted-cone", "adm-adpf", Relayed),
            ("symmetric", "symmetric", Relayed),
            ("adm-eif", "adpm-adf", Direct),
            ("adm-eif", "adpm-adpf", Direct),
            ("adm-adf", "adpm-adpf", Relayed),
            ("adm-adf", "adm-adf", Relayed),
            ("public", "symmetric", Direct),
            ("udp-blocked", "full-cone", Relayed),
            // A port forwarded by the router is reachable from anyone.
            ("symmetric+upnp", "symmetric", Direct),
            ("symmetric+upnp", "udp-blocked", Relayed),
            ("symmetric+igd", "symmetric", Direct),
            // Port prediction: the next ports of a sequential symmetric NAT.
            ("port-restricted-cone", "symmetric+seq", Direct),
            ("symmetric", "symmetric+seq", Relayed),
            ("symmetric", "adpm-adf+seq", Direct),
        ];
        for (a, b, want) in table {
            assert_eq!(case(a, b).expected(), want, "{a} × {b}");
            assert_eq!(case(b, a).expected(), want, "{b} × {a}");
        }
        let p = |s: &str| s.parse::<Profile>().unwrap();
        assert_eq!(Case::SameRouter(p("eim-adpf+hairpin")).expected(), Direct);
        assert_eq!(Case::SameRouter(p("eim-adpf")).expected(), Relayed);
        assert_eq!(Case::SameRouter(p("symmetric+hairpin")).expected(), Relayed);
        // A symmetric CGNAT makes a cone home router symmetric.
        assert_eq!(
            Case::DoubleNat(p("symmetric"), p("full-cone"), p("port-restricted-cone")).expected(),
            Direct,
            "birthday probing"
        );
        assert_eq!(
            Case::DoubleNat(p("symmetric"), p("full-cone"), p("symmetric")).expected(),
            Relayed
        );
        assert_eq!(
            Case::DoubleNat(p("eim-adf"), p("eim-adpf"), p("full-cone")).expected(),
            Direct
        );
        assert_eq!(test_cases().len(), 14);
    }
}
