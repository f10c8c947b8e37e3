//! A policy read from its HuJSON text: groups, tag owners, hosts, rules and tests, every name
//! checked against what the policy defines. Mistakes come back with their line and column.

use crate::hujson::{self, Kind, Pos, Value};
use crate::target::{protos_of, user_name, Dst, Names, Target};
use crate::PolicyError;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The largest policy accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// An account's access policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// `group:x` → its users.
    pub groups: BTreeMap<String, Vec<String>>,
    /// `tag:x` → who may put it on a node (users, groups, tags).
    pub tag_owners: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, IpNet>,
    /// `None`: the policy has no `acls` section, which allows everything.
    pub acls: Option<Vec<Acl>>,
    pub tests: Vec<PolicyTest>,
    /// `autoApprovers`: routes (CIDR → who) and exit nodes, kept for route approval.
    pub auto_approvers: AutoApprovers,
}

/// One `acls` entry (`action: accept`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub pos: Pos,
    pub src: Vec<Target>,
    pub dst: Vec<Dst>,
    /// Empty: TCP, UDP and ICMP.
    pub protos: Vec<u8>,
}

/// One `tests` entry: what `src` may and may not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTest {
    pub pos: Pos,
    pub src: Target,
    pub protos: Vec<u8>,
    pub accept: Vec<Dst>,
    pub deny: Vec<Dst>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutoApprovers {
    pub routes: BTreeMap<IpNet, Vec<String>>,
    pub exit_node: Vec<String>,
}

/// Sections of Tailscale's format that are read and not used here.
const IGNORED: [&str; 6] = [
    "ssh",
    "nodeAttrs",
    "derpMap",
    "randomizeClientPort",
    "disableIPv4",
    "OneCGNATRoute",
];

impl Policy {
    /// Reads and checks a policy (its own `tests` are run by [`crate::check`]).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                pos: Pos { line: 1, col: 1 },
                reason: format!("the policy is larger than {MAX_POLICY_BYTES} bytes"),
            });
        }
        let doc = hujson::parse(text).map_err(|e| PolicyError {
            pos: e.pos,
            reason: e.reason,
        })?;
        let top = object(&doc)?;
        let mut p = Policy::default();
        // Names first: rules may use them wherever they are written.
        for (pos, key, v) in top {
            match key.as_str() {
                "groups" => p.groups = groups(v)?,
                "tagOwners" => p.tag_owners = string_lists(v)?,
                "hosts" => p.hosts = hosts(v)?,
                "acls" | "tests" | "autoApprovers" => {}
                "grants" => {
                    return Err(PolicyError {
                        pos: *pos,
                        reason: "\"grants\" are not supported yet: write the rules as \"acls\""
                            .into(),
                    })
                }
                k if IGNORED.contains(&k) => {}
                k => {
                    return Err(PolicyError {
                        pos: *pos,
                        reason: format!(
                            "unknown section {k:?}: a policy has groups, tagOwners, hosts, acls, tests and autoApprovers"
                        ),
                    })
                }
            }
        }
        if let Some((_, _, owners)) = top.iter().find(|(_, k, _)| k == "tagOwners") {
            p.check_owners(owners)?;
        }
        let names = Names {
            groups: &p.groups,
            tag_owners: &p.tag_owners,
            hosts: &p.hosts,
        };
        let mut acls = None;
        let mut tests = Vec::new();
        let mut auto = AutoApprovers::default();
        for (_, key, v) in top {
            match key.as_str() {
                "acls" => {
                    acls = Some(
                        array(v)?
                            .iter()
                            .map(|a| acl(&names, a))
                            .collect::<Result<_, _>>()?,
                    )
                }
                "tests" => {
                    tests = array(v)?
                        .iter()
                        .map(|t| test(&names, t))
                        .collect::<Result<_, _>>()?
                }
                "autoApprovers" => auto = auto_approvers(&names, v)?,
                _ => {}
            }
        }
        p.acls = acls;
        p.tests = tests;
        p.auto_approvers = auto;
        Ok(p)
    }

    /// Every owner of a tag is a user, a known group or a known tag.
    fn check_owners(&self, tag_owners: &Value) -> Result<(), PolicyError> {
        for (_, _, owners) in object(tag_owners)? {
            for (pos, o) in strings(owners)? {
                let unknown = (o.starts_with("group:") && !self.groups.contains_key(o))
                    || (o.starts_with("tag:") && !self.tag_owners.contains_key(o));
                if unknown {
                    return Err(PolicyError {
                        pos,
                        reason: format!("unknown owner {o:?}: define it first"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `user` may put `tag` on a node: listed as an owner, directly or through a group.
    pub fn owns_tag(&self, user: &str, tag: &str) -> bool {
        let user = user_name(user);
        self.tag_owners.get(tag).is_some_and(|owners| {
            owners.iter().any(|o| {
                *o == user
                    || self
                        .groups
                        .get(o)
                        .is_some_and(|members| members.contains(&user))
            })
        })
    }

    /// The routes in `offered` that `autoApprovers` approves for a node of `user` with `tags`:
    /// each route inside an approved prefix whose approvers name the node (its tag, or for an
    /// untagged node its user or a group of its user); the default routes (an exit node) when
    /// `exitNode` names it.
    pub fn auto_approved(
        &self,
        user: Option<&str>,
        tags: &[String],
        offered: &[IpNet],
    ) -> Vec<IpNet> {
        let names_node = |owners: &[String]| {
            owners.iter().any(|o| {
                if tags.is_empty() {
                    let Some(u) = user.map(user_name) else {
                        return false;
                    };
                    *o == u || self.groups.get(o).is_some_and(|m| m.contains(&u))
                } else {
                    tags.contains(o)
                }
            })
        };
        offered
            .iter()
            .filter(|r| {
                if r.prefix_len() == 0 {
                    names_node(&self.auto_approvers.exit_node)
                } else {
                    self.auto_approvers
                        .routes
                        .iter()
                        .any(|(net, owners)| net.contains(*r) && names_node(owners))
                }
            })
            .copied()
            .collect()
    }

    /// The user names the policy mentions (in groups, owners and rules), for warnings about
    /// names that are no user of the account.
    pub fn user_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.groups.values().flatten().cloned().collect();
        out.extend(
            self.tag_owners
                .values()
                .flatten()
                .filter(|o| !o.contains(':'))
                .cloned(),
        );
        for a in self.acls.iter().flatten() {
            let dsts = a.dst.iter().map(|d| &d.target);
            for t in a.src.iter().chain(dsts) {
                if let Target::User(u) = t {
                    out.push(u.clone());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn error(v: &Value, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        pos: v.pos,
        reason: reason.into(),
    }
}

fn object(v: &Value) -> Result<&[(Pos, String, Value)], PolicyError> {
    match &v.kind {
        Kind::Object(m) => Ok(m),
        k => Err(error(v, format!("expected an object, found {}", k.what()))),
    }
}

fn array(v: &Value) -> Result<&[Value], PolicyError> {
    match &v.kind {
        Kind::Array(a) => Ok(a),
        k => Err(error(v, format!("expected a list, found {}", k.what()))),
    }
}

fn string(v: &Value) -> Result<&str, PolicyError> {
    match &v.kind {
        Kind::String(s) => Ok(s),
        k => Err(error(v, format!("expected a string, found {}", k.what()))),
    }
}

fn strings(v: &Value) -> Result<Vec<(Pos, &str)>, PolicyError> {
    array(v)?.iter().map(|i| Ok((i.pos, string(i)?))).collect()
}

fn groups(v: &Value) -> Result<BTreeMap<String, Vec<String>>, PolicyError> {
    let mut out = BTreeMap::new();
    for (pos, name, members) in object(v)? {
        if !name.starts_with("group:") || name.len() == "group:".len() {
            return Err(PolicyError {
                pos: *pos,
                reason: format!("group names start with \"group:\": {name:?}"),
            });
        }
        let mut users = Vec::new();
        for (p, m) in strings(members)? {
            if m.contains(':') && !m.contains('@') {
                return Err(PolicyError {
                    pos: p,
                    reason: format!("{m:?}: a group holds users, not groups or tags"),
                });
            }
            users.push(user_name(m));
        }
        out.insert(name.clone(), users);
    }
    Ok(out)
}

fn string_lists(v: &Value) -> Result<BTreeMap<String, Vec<String>>, PolicyError> {
    let mut out = BTreeMap::new();
    for (pos, name, owners) in object(v)? {
        if !name.starts_with("tag:") || name.len() == "tag:".len() {
            return Err(PolicyError {
                pos: *pos,
                reason: format!("tag names start with \"tag:\": {name:?}"),
            });
        }
        let list = strings(owners)?
            .into_iter()
            .map(|(_, o)| {
                if o.starts_with("group:") || o.starts_with("tag:") || o.starts_with("autogroup:") {
                    o.to_string()
                } else {
                    user_name(o)
                }
            })
            .collect();
        out.insert(name.clone(), list);
    }
    Ok(out)
}

fn hosts(v: &Value) -> Result<BTreeMap<String, IpNet>, PolicyError> {
    let mut out = BTreeMap::new();
    for (pos, name, addr) in object(v)? {
        if name.contains(':') || name.is_empty() {
            return Err(PolicyError {
                pos: *pos,
                reason: format!("{name:?} cannot be a host name"),
            });
        }
        let s = string(addr)?;
        let net = s
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| error(addr, format!("{s:?} is not an address or CIDR")))?;
        out.insert(name.clone(), net);
    }
    Ok(out)
}

fn acl(names: &Names<'_>, v: &Value) -> Result<Acl, PolicyError> {
    let mut action = None;
    let (mut src, mut dst, mut protos) = (None, None, Vec::new());
    for (pos, key, val) in object(v)? {
        match key.as_str() {
            "action" => action = Some((val, string(val)?)),
            "src" | "users" => {
                src = Some(
                    strings(val)?
                        .into_iter()
                        .map(|(p, s)| names.target(s, p, false))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            "dst" | "ports" => {
                dst = Some(
                    strings(val)?
                        .into_iter()
                        .map(|(p, s)| names.dst(s, p))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            "proto" => protos = protos_of(string(val)?, val.pos)?,
            k => {
                return Err(PolicyError {
                    pos: *pos,
                    reason: format!("unknown field {k:?} in a rule: use action, src, dst, proto"),
                })
            }
        }
    }
    match action {
        Some((_, "accept")) => {}
        Some((val, a)) => {
            return Err(error(
                val,
                format!("action {a:?}: the only action is \"accept\""),
            ))
        }
        None => return Err(error(v, "a rule needs \"action\": \"accept\"")),
    }
    let src = src.ok_or_else(|| error(v, "a rule needs \"src\""))?;
    let dst = dst.ok_or_else(|| error(v, "a rule needs \"dst\""))?;
    if dst.iter().any(|d| d.target == Target::OwnDevices)
        && src
            .iter()
            .any(|s| matches!(s, Target::Tag(_) | Target::Net(_) | Target::Any))
    {
        return Err(error(
            v,
            "autogroup:self is only for rules whose sources are users or groups",
        ));
    }
    Ok(Acl {
        pos: v.pos,
        src,
        dst,
        protos,
    })
}

fn test(names: &Names<'_>, v: &Value) -> Result<PolicyTest, PolicyError> {
    let mut t = PolicyTest {
        pos: v.pos,
        src: Target::Any,
        protos: Vec::new(),
        accept: Vec::new(),
        deny: Vec::new(),
    };
    let mut has_src = false;
    for (pos, key, val) in object(v)? {
        match key.as_str() {
            "src" => {
                t.src = names.target(string(val)?, val.pos, false)?;
                has_src = true;
            }
            "proto" => t.protos = protos_of(string(val)?, val.pos)?,
            "accept" | "deny" => {
                let list = strings(val)?
                    .into_iter()
                    .map(|(p, s)| names.dst(s, p))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "accept" {
                    t.accept = list;
                } else {
                    t.deny = list;
                }
            }
            k => {
                return Err(PolicyError {
                    pos: *pos,
                    reason: format!("unknown field {k:?} in a test: use src, proto, accept, deny"),
                })
            }
        }
    }
    if !has_src {
        return Err(error(v, "a test needs \"src\""));
    }
    Ok(t)
}

fn auto_approvers(names: &Names<'_>, v: &Value) -> Result<AutoApprovers, PolicyError> {
    let mut out = AutoApprovers::default();
    for (pos, key, val) in object(v)? {
        let who = |val: &Value| -> Result<Vec<String>, PolicyError> {
            strings(val)?
                .into_iter()
                .map(|(p, s)| {
                    names.target(s, p, false)?;
                    Ok(s.to_string())
                })
                .collect()
        };
        match key.as_str() {
            "routes" => {
                for (p, cidr, owners) in object(val)? {
                    let net = cidr.parse::<IpNet>().map_err(|_| PolicyError {
                        pos: *p,
                        reason: format!("{cidr:?} is not a CIDR"),
                    })?;
                    out.routes.insert(net.trunc(), who(owners)?);
                }
            }
            "exitNode" => out.exit_node = who(val)?,
            k => {
                return Err(PolicyError {
                    pos: *pos,
                    reason: format!("unknown field {k:?} in autoApprovers: use routes, exitNode"),
                })
            }
        }
    }
    Ok(out)
}
