//! What a policy's `src`, `dst` and tests name: everyone, a user, a group, a tag, the
//! account's members, a person's own devices, or addresses; and the ports after a `dst`.

use crate::hujson::Pos;
use crate::PolicyError;
use ipnet::IpNet;
use pinhole_proto::filter::{proto, PortRange};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One name in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `*`: every node and every address.
    Any,
    /// A user's untagged nodes (`alice`, `alice@`, `alice@example.com`).
    User(String),
    /// The untagged nodes of a group's users (`group:dev`).
    Group(String),
    /// Nodes with the tag (`tag:server`).
    Tag(String),
    /// `autogroup:member`: every untagged node of a user.
    Member,
    /// `autogroup:self` (destinations only): the source user's own untagged nodes.
    OwnDevices,
    /// Addresses: a host from `hosts`, an address or a CIDR.
    Net(IpNet),
}

/// A destination: a target and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dst {
    pub pos: Pos,
    pub target: Target,
    pub ports: Vec<PortRange>,
}

/// The names a policy defines, for reading targets.
pub struct Names<'a> {
    pub groups: &'a BTreeMap<String, Vec<String>>,
    pub tag_owners: &'a BTreeMap<String, Vec<String>>,
    pub hosts: &'a BTreeMap<String, IpNet>,
}

/// A user name as the policy compares it: without a trailing `@` (Headscale's `alice@`).
pub fn user_name(s: &str) -> String {
    s.strip_suffix('@').unwrap_or(s).to_string()
}

impl Names<'_> {
    /// Reads one target (without ports).
    pub fn target(&self, s: &str, pos: Pos, dst: bool) -> Result<Target, PolicyError> {
        let err = |reason: String| PolicyError { pos, reason };
        if s == "*" {
            return Ok(Target::Any);
        }
        if s.starts_with("group:") {
            return if self.groups.contains_key(s) {
                Ok(Target::Group(s.to_string()))
            } else {
                Err(err(format!("unknown group {s:?}: define it in \"groups\"")))
            };
        }
        if s.starts_with("tag:") {
            return if self.tag_owners.contains_key(s) {
                Ok(Target::Tag(s.to_string()))
            } else {
                Err(err(format!(
                    "unknown tag {s:?}: give it owners in \"tagOwners\""
                )))
            };
        }
        if let Some(a) = s.strip_prefix("autogroup:") {
            return match a {
                "member" | "members" => Ok(Target::Member),
                "self" if dst => Ok(Target::OwnDevices),
                "self" => Err(err("autogroup:self can only be a destination".into())),
                _ => Err(err(format!("autogroup:{a} is not supported here"))),
            };
        }
        if let Some(net) = self.hosts.get(s) {
            return Ok(Target::Net(*net));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Target::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Target::Net(IpNet::from(ip)));
        }
        if s.is_empty() || s.contains(':') || s.contains(char::is_whitespace) {
            return Err(err(format!(
                "unknown name {s:?}: not a user, group:, tag:, host, address or CIDR"
            )));
        }
        Ok(Target::User(user_name(s)))
    }

    /// Reads `TARGET:PORTS`.
    pub fn dst(&self, s: &str, pos: Pos) -> Result<Dst, PolicyError> {
        let Some((target, ports)) = s.rsplit_once(':') else {
            return Err(PolicyError {
                pos,
                reason: format!("{s:?} needs ports: write TARGET:PORTS, e.g. {s}:22 or {s}:*"),
            });
        };
        let ports = match ports_of(ports, pos) {
            Ok(p) => p,
            Err(_) if self.target(s, pos, true).is_ok() => {
                return Err(PolicyError {
                    pos,
                    reason: format!("{s:?} needs ports: write {s}:22 or {s}:*"),
                })
            }
            Err(e0) => return Err(e0),
        };
        Ok(Dst {
            pos,
            target: self.target(target, pos, true)?,
            ports,
        })
    }
}

/// `*`, `22`, `80,443`, `8000-8100` or a mix.
pub fn ports_of(s: &str, pos: Pos) -> Result<Vec<PortRange>, PolicyError> {
    let err = |reason: String| PolicyError { pos, reason };
    if s == "*" {
        return Ok(vec![PortRange::ALL]);
    }
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| err(format!("{p:?} is not a port (0-65535)")))
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(err(format!("the port range {part:?} runs backwards")));
                }
                PortRange { first, last }
            }
            None if part.trim() == "*" => PortRange::ALL,
            None => PortRange::one(port(part)?),
        };
        out.push(range);
    }
    Ok(out)
}

/// `proto`: a name or an IP protocol number; `icmp` means ICMP for IPv4 and IPv6.
pub fn protos_of(s: &str, pos: Pos) -> Result<Vec<u8>, PolicyError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "" => Vec::new(),
        "tcp" => vec![proto::TCP],
        "udp" => vec![proto::UDP],
        "icmp" => vec![proto::ICMP, proto::ICMPV6],
        "ipv6-icmp" | "icmpv6" => vec![proto::ICMPV6],
        "sctp" => vec![proto::SCTP],
        "igmp" => vec![2],
        "gre" => vec![47],
        "esp" => vec![50],
        "ah" => vec![51],
        n => match n.parse::<u8>() {
            Ok(p) => vec![p],
            Err(_) => {
                return Err(PolicyError {
                    pos,
                    reason: format!(
                        "unknown protocol {s:?}: use tcp, udp, icmp, sctp or a protocol number"
                    ),
                })
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_written() {
        let p = Pos::default();
        assert_eq!(ports_of("*", p).unwrap(), vec![PortRange::ALL]);
        assert_eq!(
            ports_of("22,8000-8100", p).unwrap(),
            vec![
                PortRange::one(22),
                PortRange {
                    first: 8000,
                    last: 8100
                }
            ]
        );
        assert!(ports_of("70000", p).is_err());
        assert!(ports_of("90-80", p)
            .unwrap_err()
            .reason
            .contains("backwards"));
        assert!(ports_of("", p).is_err());
    }

    #[test]
    fn names_are_looked_up() {
        let groups = BTreeMap::from([("group:dev".to_string(), vec!["alice".to_string()])]);
        let tags = BTreeMap::from([("tag:server".to_string(), vec!["group:dev".to_string()])]);
        let hosts = BTreeMap::from([("db".to_string(), "10.0.0.5/32".parse().unwrap())]);
        let n = Names {
            groups: &groups,
            tag_owners: &tags,
            hosts: &hosts,
        };
        let p = Pos::default();
        assert_eq!(
            n.target("alice@", p, false).unwrap(),
            Target::User("alice".into())
        );
        assert_eq!(
            n.target("db", p, false).unwrap(),
            Target::Net("10.0.0.5/32".parse().unwrap())
        );
        assert_eq!(
            n.target("10.1.2.3/16", p, false).unwrap(),
            Target::Net("10.1.0.0/16".parse().unwrap())
        );
        assert!(n
            .target("group:ops", p, false)
            .unwrap_err()
            .reason
            .contains("unknown group"));
        assert!(n
            .target("tag:nope", p, false)
            .unwrap_err()
            .reason
            .contains("tagOwners"));
        assert!(n.target("autogroup:self", p, false).is_err());
        let d = n.dst("tag:server:22,443", p).unwrap();
        assert_eq!(d.target, Target::Tag("tag:server".into()));
        assert_eq!(d.ports.len(), 2);
        let d = n.dst("fd7a:115c:a1e0::/48:*", p).unwrap();
        assert_eq!(
            d.target,
            Target::Net("fd7a:115c:a1e0::/48".parse().unwrap())
        );
        assert!(n.dst("tag:server", p).is_err());
    }
}
