//! The packet filter as control sends it to a node: which sources may reach which of the node's
//! addresses on which ports and protocols, and, for people, what this node may reach on each
//! peer. Made by control from the account's policy; enforced by the engine on every packet that
//! arrives through the tunnel.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// IP protocol numbers the filter knows by name.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// What a rule without `proto` allows: TCP, UDP and ICMP (both versions).
    pub const DEFAULT: [u8; 4] = [TCP, UDP, ICMP, ICMPV6];

    /// A protocol's name for people ("tcp"), or its number.
    pub fn name(p: u8) -> String {
        match p {
            ICMP => "icmp".into(),
            TCP => "tcp".into(),
            UDP => "udp".into(),
            ICMPV6 => "icmpv6".into(),
            SCTP => "sctp".into(),
            n => format!("proto {n}"),
        }
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    pub fn one(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == PortRange::ALL {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// One rule of a node's inbound filter: a packet from an address in `src` to an address in
/// `dst` is let in if its protocol is in `protos` (empty: [`proto::DEFAULT`]) and, for
/// protocols with ports (TCP, UDP, SCTP), its destination port is in `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FilterRule {
    pub src: Vec<IpNet>,
    pub dst: Vec<IpNet>,
    pub ports: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protos: Vec<u8>,
}

/// Ports and protocols a node may reach on one peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Access {
    pub ports: Vec<PortRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protos: Vec<u8>,
}

/// What a node may reach on one peer (by the peer's node id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAccess {
    pub id: String,
    pub allow: Vec<Access>,
}

/// A node's part of the policy: its inbound filter and what it may reach. `None` (no policy in
/// the account): everything is allowed both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePolicy {
    pub filter: Vec<FilterRule>,
    pub reach: Vec<PeerAccess>,
}

/// `access` in words for people: "ports 22 and 443", "every port", "ping (icmp)".
pub fn describe(access: &[Access]) -> String {
    if access.is_empty() {
        return "nothing".into();
    }
    let mut any_port = false;
    let mut ports: Vec<PortRange> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for a in access {
        let protos: &[u8] = if a.protos.is_empty() {
            &proto::DEFAULT
        } else {
            &a.protos
        };
        let ported = protos
            .iter()
            .any(|p| matches!(*p, proto::TCP | proto::UDP | proto::SCTP));
        if ported {
            if a.ports.contains(&PortRange::ALL) {
                any_port = true;
            } else {
                ports.extend(a.ports.iter().copied());
            }
        }
        for p in protos {
            if !matches!(*p, proto::TCP | proto::UDP | proto::SCTP) {
                let n = if matches!(*p, proto::ICMP | proto::ICMPV6) {
                    "ping".to_string()
                } else {
                    proto::name(*p)
                };
                if !others.contains(&n) {
                    others.push(n);
                }
            }
        }
    }
    ports.sort();
    ports.dedup();
    let mut parts = Vec::new();
    if any_port {
        parts.push("every port".to_string());
    } else if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        let word = if list.len() == 1 && ports[0].first == ports[0].last {
            "port"
        } else {
            "ports"
        };
        parts.push(format!("{word} {}", join_words(&list)));
    }
    parts.extend(others);
    join_words(&parts)
}

fn join_words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_reads_as_words() {
        let a = |ports: &[(u16, u16)], protos: &[u8]| Access {
            ports: ports
                .iter()
                .map(|&(first, last)| PortRange { first, last })
                .collect(),
            protos: protos.to_vec(),
        };
        assert_eq!(
            describe(&[a(&[(22, 22), (443, 443)], &[proto::TCP])]),
            "ports 22 and 443"
        );
        assert_eq!(describe(&[a(&[(22, 22)], &[proto::TCP])]), "port 22");
        assert_eq!(describe(&[a(&[(0, 65535)], &[])]), "every port and ping");
        assert_eq!(
            describe(&[
                a(&[(80, 80)], &[proto::TCP]),
                a(&[(0, 65535)], &[proto::ICMP])
            ]),
            "port 80 and ping"
        );
        assert_eq!(describe(&[]), "nothing");
        assert_eq!(
            describe(&[a(&[(8000, 8100), (22, 22), (443, 443)], &[proto::TCP])]),
            "ports 22, 443 and 8000-8100"
        );
    }

    #[test]
    fn rules_round_trip_as_json() {
        let r = FilterRule {
            src: vec!["100.64.0.0/10".parse().unwrap()],
            dst: vec!["100.64.0.2/32".parse().unwrap()],
            ports: vec![PortRange::one(22), PortRange::ALL],
            protos: vec![proto::TCP],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<FilterRule>(&text).unwrap(), r);
    }
}
