//! The NAT lab: the topologies people sit behind, built from namespaces.
//!
//! ```text
//!   control/relay/STUN: "public" (198.18.1.1 and .2 on its loopback; it routes the internet)
//!     ├─ wan 198.18.(10+i).2 ── router r<i> (a NAT profile) ── lan<k> 10.<i>.<k>.1 ── node 10.<i>.<k>.2
//!     ├─ wan ── carrier-grade NAT c<j> ── 100.64.<i>.0/24 ── home router r<i> ── … (double NAT)
//!     └─ a public node on 198.18.(10+i).2 (no NAT)
//! ```
//! Every node behind a router has its own LAN link, so two nodes behind one router reach each
//! other only through the router's public address (hairpinning) or a relay. Delay, jitter and
//! loss on the public network come from [`crate::impair`].

use crate::impair::{self, Impairment};
use crate::nat::{Kind, Profile};
use crate::{Lab, LabError, Topology};
use std::time::Duration;

/// The namespace that is the internet (control runs there, as in [`crate::mesh`]).
pub const PUBLIC: &str = crate::mesh::PUBLIC;
/// The public namespace's two "server" addresses (control and STUN; RFC 5780's alternate).
pub const SERVER_IP: &str = "198.18.1.1";
pub const SERVER_ALT_IP: &str = "198.18.1.2";

/// Where a site hangs: directly on the internet, or behind a carrier-grade NAT.
#[derive(Debug, Clone)]
pub struct Site {
    pub profile: Profile,
    pub nodes: Vec<String>,
    /// The index in [`Plan::cgnats`] of the carrier-grade NAT in front of this site's router.
    pub behind: Option<usize>,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub sites: Vec<Site>,
    pub cgnats: Vec<Profile>,
    /// Delay, jitter and loss on the public network.
    pub impair: Impairment,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }

    /// A router of `profile` with `nodes` behind it (a `public` profile: one node, no router).
    pub fn site(mut self, profile: Profile, nodes: &[&str]) -> Plan {
        self.sites.push(Site {
            profile,
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            behind: None,
        });
        self
    }

    /// A carrier-grade NAT of `profile`; sites added with [`Plan::site_behind`] sit behind it.
    pub fn cgnat(mut self, profile: Profile) -> Plan {
        self.cgnats.push(profile);
        self
    }

    /// A site whose router's upstream is the carrier-grade NAT `cgnat` (double NAT).
    pub fn site_behind(mut self, cgnat: usize, profile: Profile, nodes: &[&str]) -> Plan {
        self.sites.push(Site {
            profile,
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            behind: Some(cgnat),
        });
        self
    }

    pub fn impair(mut self, imp: Impairment) -> Plan {
        self.impair = imp;
        self
    }

    /// The router namespace of site `i` (from 0).
    pub fn router(i: usize) -> String {
        format!("r{}", i + 1)
    }

    /// The namespace of carrier-grade NAT `j` (from 0).
    pub fn cgnat_host(j: usize) -> String {
        format!("c{}", j + 1)
    }

    /// Builds it: namespaces, links, routes, NAT rules, loss. Torn down when the lab drops.
    pub fn build(&self) -> Result<Lab, LabError> {
        let mut t = Topology::new().router(PUBLIC);
        let mut rules: Vec<(String, Profile, String, String)> = Vec::new();
        for (j, p) in self.cgnats.iter().enumerate() {
            let c = Plan::cgnat_host(j);
            let n = 100 + j;
            let (up, wan) = (format!("198.18.{n}.1/24"), format!("198.18.{n}.2/24"));
            t = t
                .router(&c)
                .link_named(
                    PUBLIC,
                    &format!("c{j}"),
                    &[up.as_str()],
                    &c,
                    "wan",
                    &[wan.as_str()],
                )
                .route(&c, "default", &format!("198.18.{n}.1"));
            rules.push((c, p.clone(), "wan".into(), format!("198.18.{n}.2")));
        }
        for (i, site) in self.sites.iter().enumerate() {
            let n = 10 + i;
            if matches!(site.profile.kind, Kind::Public) {
                let [node] = site.nodes.as_slice() else {
                    return Err(LabError::Plan(format!(
                        "a public site holds exactly one node, not {:?}",
                        site.nodes
                    )));
                };
                let (up, me) = (format!("198.18.{n}.1/24"), format!("198.18.{n}.2/24"));
                t = t
                    .host(node)
                    .link_named(
                        PUBLIC,
                        &format!("s{i}"),
                        &[up.as_str()],
                        node,
                        "eth0",
                        &[me.as_str()],
                    )
                    .route(node, "default", &format!("198.18.{n}.1"));
                continue;
            }
            let r = Plan::router(i);
            t = t.router(&r);
            let wan_ip = match site.behind {
                None => {
                    let (up, wan) = (format!("198.18.{n}.1/24"), format!("198.18.{n}.2/24"));
                    t = t
                        .link_named(
                            PUBLIC,
                            &format!("s{i}"),
                            &[up.as_str()],
                            &r,
                            "wan",
                            &[wan.as_str()],
                        )
                        .route(&r, "default", &format!("198.18.{n}.1"));
                    format!("198.18.{n}.2")
                }
                Some(j) => {
                    if j >= self.cgnats.len() {
                        return Err(LabError::Plan(format!("no carrier-grade NAT {j}")));
                    }
                    let c = Plan::cgnat_host(j);
                    let (up, wan) = (format!("100.64.{i}.1/24"), format!("100.64.{i}.2/24"));
                    t = t
                        .link_named(
                            &c,
                            &format!("lan{i}"),
                            &[up.as_str()],
                            &r,
                            "wan",
                            &[wan.as_str()],
                        )
                        .route(&r, "default", &format!("100.64.{i}.1"));
                    format!("100.64.{i}.2")
                }
            };
            for (k, node) in site.nodes.iter().enumerate() {
                let (gw, me) = (format!("10.{i}.{k}.1/24"), format!("10.{i}.{k}.2/24"));
                t = t
                    .host(node)
                    .link_named(
                        &r,
                        &format!("lan{k}"),
                        &[gw.as_str()],
                        node,
                        "eth0",
                        &[me.as_str()],
                    )
                    .route(node, "default", &format!("10.{i}.{k}.1"));
            }
            rules.push((r, site.profile.clone(), "wan".into(), wan_ip));
        }
        let mut lab = Lab::build(&t)?;
        // The servers' addresses on the public namespace's loopback: reachable from everywhere.
        for ip in [SERVER_IP, SERVER_ALT_IP] {
            lab.run_ok(
                PUBLIC,
                &["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"],
                Duration::from_secs(5),
            )?;
        }
        for (host, profile, wan, wan_ip) in &rules {
            apply(&lab, host, profile, wan, wan_ip)?;
        }
        if rules.iter().any(|(_, p, _, _)| p.port_mapping.is_some()) {
            start_upnp_stun(&mut lab)?;
            for (host, profile, wan, _) in &rules {
                if let Some(granting) = profile.port_mapping {
                    start_miniupnpd(&mut lab, host, wan, granting)?;
                }
            }
        }
        if !self.impair.is_none() {
            impair::start(&mut lab, self.impair)?;
        }
        Ok(lab)
    }
}

/// The STUN server miniupnpd checks its public address with (pinhole-relay, STUN only, with
/// RFC 5780's alternate address and port).
fn start_upnp_stun(lab: &mut Lab) -> Result<(), LabError> {
    let relay = crate::mesh::pinhole_relay();
    let [port, alt_port] = crate::nat::UPNP_STUN_PORTS;
    let listen = format!("{SERVER_IP}:{port}");
    let p = lab.spawn(
        PUBLIC,
        &[
            relay.to_str().unwrap_or("pinhole-relay"),
            "--stun-listen",
            &listen,
            "--stun-alternate-ip",
            SERVER_ALT_IP,
            "--stun-alternate-port",
            &alt_port.to_string(),
        ],
    )?;
    if !Lab::wait_for(Duration::from_secs(10), || p.log_text().contains("STUN")) {
        return Err(LabError::Plan(format!(
            "the STUN server for miniupnpd did not start: {}",
            p.log_text()
        )));
    }
    Ok(())
}

/// Runs miniupnpd (UPnP IGD, and NAT-PMP and PCP unless `granting` says IGD only) on router
/// `host`: it listens on every LAN interface, maps ports for the nodes behind it (each only
/// for itself), and forwards from `wan` with rules in its own nftables table. It stops with
/// the lab.
fn start_miniupnpd(
    lab: &mut Lab,
    host: &str,
    wan: &str,
    granting: crate::nat::Granting,
) -> Result<(), LabError> {
    let t = Duration::from_secs(10);
    let links = lab.run_ok(host, &["ip", "-o", "link", "show"], t)?;
    let lans: Vec<String> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("lan"))
        .collect();
    if lans.is_empty() {
        return Err(LabError::Plan(format!("{host} has no LAN for miniupnpd")));
    }
    // miniupnpd-nftables expects its table and chains to exist.
    let table = "table inet miniupnpd {\n  \
                 chain forward { type filter hook forward priority filter; policy accept; }\n  \
                 chain prerouting { type nat hook prerouting priority dstnat; policy accept; }\n  \
                 chain postrouting { type nat hook postrouting priority srcnat; policy accept; }\n}\n";
    let nft = lab.dir().join(format!("{host}-miniupnpd.nft"));
    std::fs::write(&nft, table)?;
    lab.run_ok(host, &["nft", "-f", &nft.to_string_lossy()], t)?;
    let [stun_port, _] = crate::nat::UPNP_STUN_PORTS;
    let natpmp = match granting {
        crate::nat::Granting::All => "yes",
        crate::nat::Granting::IgdOnly => "no",
    };
    let mut conf = format!(
        "ext_ifname={wan}\n\
         enable_natpmp={natpmp}\nenable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
         uuid=3b1d5c3e-6a51-4a6c-9bd0-2f1e4c8a7d10\n\
         ext_perform_stun=yes\next_stun_host={SERVER_IP}\next_stun_port={stun_port}\n\
         upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n\
         upnp_forward_chain=forward\nupnp_nat_chain=prerouting\n\
         upnp_nat_postrouting_chain=postrouting\n\
         allow 1024-65535 10.0.0.0/8 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    );
    for lan in &lans {
        conf.push_str(&format!("listening_ip={lan}\n"));
    }
    let file = lab.dir().join(format!("{host}-miniupnpd.conf"));
    std::fs::write(&file, conf)?;
    let pid = lab.dir().join(format!("{host}-miniupnpd.pid"));
    let p = lab.spawn(
        host,
        &[
            "miniupnpd",
            "-d",
            "-f",
            &file.to_string_lossy(),
            "-P",
            &pid.to_string_lossy(),
        ],
    )?;
    // Ready once its public address checked out and it listens for NAT-PMP/PCP.
    let ready = Lab::wait_for(Duration::from_secs(15), || {
        let log = p.log_text();
        let listening = match granting {
            crate::nat::Granting::All => log.contains("Listening for NAT-PMP/PCP"),
            crate::nat::Granting::IgdOnly => log.contains("HTTP listening"),
        };
        listening || log.contains("impossible")
    });
    let log = p.log_text();
    if !ready || !log.contains("Port forwarding is now enabled") {
        return Err(LabError::Plan(format!(
            "miniupnpd on {host} does not forward ports (is miniupnpd-nftables installed?):\n{log}"
        )));
    }
    Ok(())
}

/// Makes `host` a router of `profile` (external interface `wan` with `wan_ip`, internal ones
/// `lan*`).
pub fn apply(
    lab: &Lab,
    host: &str,
    profile: &Profile,
    wan: &str,
    wan_ip: &str,
) -> Result<(), LabError> {
    let t = Duration::from_secs(10);
    for (k, v) in profile.sysctls() {
        lab.run_ok(host, &["sysctl", "-qw", &format!("{k}={v}")], t)?;
    }
    if let Some(rules) = profile.ruleset(wan, wan_ip, "lan*") {
        let file = lab.dir().join(format!("{host}.nft"));
        std::fs::write(&file, rules)?;
        lab.run_ok(host, &["nft", "-f", &file.to_string_lossy()], t)?;
    }
    Ok(())
}

/// Reboots router `host` as far as its NAT goes: every mapping is forgotten (`conntrack -F`)
/// and new ones get other ports (the port hash is seeded anew), so the path through it breaks
/// until both sides learn its new public port. A router whose profile preserves ports keeps
/// them, as such routers do.
pub fn reboot(lab: &Lab, host: &str) -> Result<(), LabError> {
    let t = Duration::from_secs(10);
    let before = lab.dir().join(format!("{host}.nft"));
    let rules = std::fs::read_to_string(&before)?;
    let after = lab.dir().join(format!("{host}-rebooted.nft"));
    std::fs::write(
        &after,
        format!(
            "flush ruleset\n{}",
            rules.replace(crate::nat::HASH_SEED, crate::nat::REBOOTED_HASH_SEED)
        ),
    )?;
    lab.run_ok(host, &["nft", "-f", &after.to_string_lossy()], t)?;
    lab.run_ok(host, &["conntrack", "-F"], t)?;
    Ok(())
}
