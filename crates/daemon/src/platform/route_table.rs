//! The routes to peers' networks and to an exit node, kept in a routing table of pinholed's
//! own (Linux), as wg-quick and Tailscale do: the main table is never touched, so a subnet
//! route equal to a connected network cannot replace the kernel's route, and removing ours
//! leaves theirs. Rules, while the table holds anything:
//!
//! - 5060: packets with pinholed's firewall mark (its own UDP and relay connections) and to
//!   the coordination server's addresses use the main table: they never loop into the tunnel;
//! - 5061: marked packets the main table has no route for are refused, not routed into the
//!   tunnel further down (a peer's LAN address it published as a candidate, say);
//! - 5062 (an exit node with `--exit-node-allow-lan` only): the main table's routes more
//!   specific than a default route (the local networks) win;
//! - 5064: the table itself.
//!
//! Every change is applied at once and undone in reverse on removal; a crash's leftovers (the
//! table's routes, the rules at these priorities) are removed at the next start. Elsewhere
//! (macOS, Windows) subnet routes go to the main table through the device, and an exit node is
//! refused with a reason.

use anyhow::{Context, Result};
use ipnet::IpNet;
use std::net::IpAddr;

/// The table's number (`ip route show table 5068`) and the rules' priorities.
#[cfg(target_os = "linux")]
mod numbers {
    pub const TABLE: u32 = 5068;
    pub const PRIO_BYPASS: u32 = 5060;
    pub const PRIO_REFUSE: u32 = 5061;
    pub const PRIO_LAN: u32 = 5062;
    pub const PRIO_TABLE: u32 = 5064;
}
#[cfg(target_os = "linux")]
use numbers::*;

/// What is installed.
#[derive(Debug)]
pub struct RouteTable {
    dev: String,
    routes: Vec<IpNet>,
    /// The rules as installed: none, or with the LAN rule or without, and the bypassed hosts.
    rules: Option<Rules>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules {
    allow_lan: bool,
    bypass: Vec<IpAddr>,
}

impl RouteTable {
    pub fn new(dev: &str) -> RouteTable {
        RouteTable {
            dev: dev.to_string(),
            routes: Vec::new(),
            rules: None,
        }
    }

    /// Makes the table hold exactly `want`, with the rules that go with it. `bypass`: hosts
    /// always reached outside the tunnel (the coordination server). On an error, what was
    /// done is kept and the error says what failed; the next sync tries again.
    pub fn sync(&mut self, want: &[IpNet], allow_lan: bool, bypass: &[IpAddr]) -> Result<()> {
        let mut want: Vec<IpNet> = want.iter().map(|n| n.trunc()).collect();
        want.sort();
        want.dedup();
        let rules = (!want.is_empty()).then(|| Rules {
            allow_lan: allow_lan && want.iter().any(|n| n.prefix_len() == 0),
            bypass: bypass.to_vec(),
        });
        // Rules first (our own packets leave by the main table before a default route appears
        // in ours), routes after; on the way down the other way round.
        if rules.is_some() && rules != self.rules {
            self.remove_rules();
            if let Some(r) = &rules {
                add_rules(r)?;
                self.rules = Some(r.clone());
            }
        }
        let gone: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|n| !want.contains(n))
            .copied()
            .collect();
        for net in gone {
            remove_route(&self.dev, &net);
            self.routes.retain(|n| *n != net);
        }
        for net in &want {
            if !self.routes.contains(net) {
                add_route(&self.dev, net)
                    .with_context(|| format!("the route to {net} could not be added"))?;
                self.routes.push(*net);
            }
        }
        if rules.is_none() {
            self.remove_rules();
        }
        Ok(())
    }

    /// Removes everything installed.
    pub fn clear(&mut self) {
        for net in std::mem::take(&mut self.routes).iter().rev() {
            remove_route(&self.dev, net);
        }
        self.remove_rules();
    }

    fn remove_rules(&mut self) {
        if self.rules.take().is_some() {
            delete_rules();
        }
    }
}

impl Drop for RouteTable {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Removes what a pinholed that did not stop cleanly left: the table's routes and the rules.
#[cfg(target_os = "linux")]
pub fn clean_leftovers() {
    delete_rules();
    for family in ["-4", "-6"] {
        let table = TABLE.to_string();
        let _ = run(&["ip", family, "route", "flush", "table", &table]);
    }
}

#[cfg(target_os = "linux")]
fn add_rules(r: &Rules) -> Result<()> {
    let mark = format!(
        "{:#x}/{:#x}",
        pinhole_dataplane::bypass::MARK,
        pinhole_dataplane::bypass::MASK
    );
    let refuse = PRIO_REFUSE.to_string();
    let (bypass, lan, table) = (
        PRIO_BYPASS.to_string(),
        PRIO_LAN.to_string(),
        PRIO_TABLE.to_string(),
    );
    let our_table = TABLE.to_string();
    for family in ["-4", "-6"] {
        let v6 = family == "-6";
        let mut rules: Vec<Vec<&str>> =
            vec![vec!["fwmark", &mark, "lookup", "main", "priority", &bypass]];
        let hosts: Vec<String> = r
            .bypass
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| a.to_string())
            .collect();
        for h in &hosts {
            rules.push(vec!["to", h, "lookup", "main", "priority", &bypass]);
        }
        rules.push(vec!["fwmark", &mark, "unreachable", "priority", &refuse]);
        if r.allow_lan {
            rules.push(vec![
                "lookup",
                "main",
                "suppress_prefixlength",
                "0",
                "priority",
                &lan,
            ]);
        }
        rules.push(vec!["lookup", &our_table, "priority", &table]);
        for rule in rules {
            let mut argv = vec!["ip", family, "rule", "add"];
            argv.extend(rule);
            if let Err(e) = run(&argv) {
                if v6 && !ipv6_enabled() {
                    tracing::debug!("no IPv6 here: {e:#}");
                    break;
                }
                delete_rules();
                return Err(e).context("the routing rules could not be added");
            }
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn ipv6_enabled() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// Deletes every rule at our priorities (each `del` removes one).
#[cfg(target_os = "linux")]
fn delete_rules() {
    for family in ["-4", "-6"] {
        for prio in [PRIO_BYPASS, PRIO_REFUSE, PRIO_LAN, PRIO_TABLE] {
            let p = prio.to_string();
            for _ in 0..64 {
                if run(&["ip", family, "rule", "del", "priority", &p]).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn add_route(dev: &str, net: &IpNet) -> Result<()> {
    let (family, dst, table) = route_args(net);
    run(&[
        "ip", family, "route", "replace", &dst, "dev", dev, "table", &table,
    ])
}

#[cfg(target_os = "linux")]
fn remove_route(dev: &str, net: &IpNet) {
    let (family, dst, table) = route_args(net);
    if let Err(e) = run(&[
        "ip", family, "route", "del", &dst, "dev", dev, "table", &table,
    ]) {
        tracing::debug!("removing the route to {net}: {e:#}");
    }
}

#[cfg(target_os = "linux")]
fn route_args(net: &IpNet) -> (&'static str, String, String) {
    let family = if net.addr().is_ipv6() { "-6" } else { "-4" };
    let dst = if net.prefix_len() == 0 {
        "default".to_string()
    } else {
        net.to_string()
    };
    (family, dst, TABLE.to_string())
}

#[cfg(not(target_os = "linux"))]
fn add_rules(_: &Rules) -> Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn delete_rules() {}

#[cfg(not(target_os = "linux"))]
fn add_route(dev: &str, net: &IpNet) -> Result<()> {
    if net.prefix_len() == 0 {
        anyhow::bail!("exit nodes are supported on Linux only for now");
    }
    crate::platform::routes::add(dev, net)
}

#[cfg(not(target_os = "linux"))]
fn remove_route(dev: &str, net: &IpNet) {
    crate::platform::routes::remove(dev, net)
}

#[cfg(target_os = "linux")]
use super::routes::run;
