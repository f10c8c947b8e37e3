//! A policy's own `tests`: whether a source may reach a destination and port, decided from the
//! rules alone (no nodes needed), as Tailscale checks them before taking a policy.

use crate::model::{Acl, Policy};
use crate::target::{Dst, Target};
use crate::PolicyError;
use pinhole_proto::filter::proto;

impl Policy {
    /// Runs the policy's tests; the first that fails is the error, at the entry that failed.
    pub fn check(&self) -> Result<(), PolicyError> {
        for t in &self.tests {
            let protos: &[u8] = if t.protos.is_empty() {
                &[proto::TCP]
            } else {
                &t.protos
            };
            for (dsts, want) in [(&t.accept, true), (&t.deny, false)] {
                for d in dsts {
                    let got = protos.iter().all(|p| self.allows(&t.src, d, *p));
                    if got != want {
                        let (says, is) = if want {
                            ("accept", "the rules do not allow it")
                        } else {
                            ("deny", "a rule allows it")
                        };
                        return Err(PolicyError {
                            pos: d.pos,
                            reason: format!(
                                "test failed: it says {} from {} to {}:{}, but {is}",
                                says,
                                describe(&t.src),
                                describe(&d.target),
                                ports(d)
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether some rule lets `src` reach every port of `dst` over `p`.
    pub fn allows(&self, src: &Target, dst: &Dst, p: u8) -> bool {
        let Some(acls) = &self.acls else {
            return true;
        };
        dst.ports.iter().all(|range| {
            acls.iter().any(|a| {
                allows_proto(a, p)
                    && a.src.iter().any(|s| self.src_covers(s, src))
                    && a.dst.iter().any(|d| {
                        self.dst_covers(&d.target, &dst.target, src)
                            && d.ports.iter().any(|r| {
                                r.first <= range.first && range.last <= r.last || !has_ports(p)
                            })
                    })
            })
        })
    }

    /// Whether the rule's source `rule` includes everything `who` names.
    fn src_covers(&self, rule: &Target, who: &Target) -> bool {
        match (rule, who) {
            (Target::Any, _) => true,
            (Target::User(a), Target::User(b)) => a == b,
            (Target::Group(g), Target::User(u)) => self.in_group(g, u),
            (Target::Group(g), Target::Group(h)) => g == h,
            (Target::Member, Target::User(_) | Target::Group(_)) => true,
            (Target::Tag(a), Target::Tag(b)) => a == b,
            (Target::Net(n), Target::Net(m)) => n.contains(m),
            _ => false,
        }
    }

    /// Whether the rule's destination `rule` includes `dst` when `src` asks.
    fn dst_covers(&self, rule: &Target, dst: &Target, src: &Target) -> bool {
        match (rule, dst) {
            (Target::OwnDevices, Target::User(u)) => matches!(src, Target::User(s) if s == u),
            (Target::OwnDevices, _) => false,
            (r, d) => self.src_covers(r, d),
        }
    }

    fn in_group(&self, group: &str, user: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|m| m.iter().any(|u| u == user))
    }
}

/// Whether the rule covers protocol `p`.
pub fn allows_proto(a: &Acl, p: u8) -> bool {
    if a.protos.is_empty() {
        proto::DEFAULT.contains(&p)
    } else {
        a.protos.contains(&p)
    }
}

/// Whether the protocol has ports (the rest match any port a rule names).
pub fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::SCTP)
}

fn describe(t: &Target) -> String {
    match t {
        Target::Any => "*".into(),
        Target::User(u) | Target::Group(u) | Target::Tag(u) => u.clone(),
        Target::Member => "autogroup:member".into(),
        Target::OwnDevices => "autogroup:self".into(),
        Target::Net(n) => n.to_string(),
    }
}

fn ports(d: &Dst) -> String {
    let list: Vec<String> = d.ports.iter().map(|p| p.to_string()).collect();
    list.join(",")
}
