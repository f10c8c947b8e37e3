//! The throughput bench's policy row: a 1,000-rule policy in Tailscale's format, compiled by
//! pinhole-policy for the bench's two nodes, each node's share written as the packet filter
//! pinholed enforces (`--filter`). Every rule opens a port on node b to some other network;
//! the last one lets node a reach b's iperf3 port, so a new flow is checked against all of
//! them and established flows go through the flow table.

use anyhow::{Context, Result};
use pinhole_netlab::pinhole::{config, start_pinholed_with, Node};
use pinhole_netlab::Lab;
use pinhole_policy::{Member, Policy};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Rules in the bench's policy.
pub const RULES: usize = 1000;

/// The policy's text.
pub fn policy_text() -> String {
    let mut s = String::from(
        "{\n  // The bench's two nodes: a belongs to alice, b to bob.\n  \"acls\": [\n",
    );
    for i in 0..RULES - 1 {
        let _ = writeln!(
            s,
            "    {{ \"action\": \"accept\", \"src\": [\"10.{}.{}.0/24\"], \"dst\": [\"bob:{}\"] }},",
            i / 250,
            i % 250,
            10_000 + i
        );
    }
    s.push_str(
        "    { \"action\": \"accept\", \"src\": [\"alice\"], \"dst\": [\"bob:5201\"] },\n  ],\n}\n",
    );
    s
}

/// Writes node a's and node b's filters into `dir`; their paths, and how many rules b's has.
pub fn filters(a: &Node, b: &Node, dir: &Path) -> Result<(PathBuf, PathBuf, usize)> {
    let policy = pinhole_policy::load(&policy_text()).context("the bench's policy")?;
    let member = |id: &str, n: &Node, user: &str| -> Result<Member> {
        Ok(Member {
            id: id.into(),
            addresses: vec![n.v4.parse()?, n.v6.parse()?],
            user: Some(user.into()),
            tags: Vec::new(),
            routes: Vec::new(),
        })
    };
    let view = Policy::view(
        &policy,
        vec![member("a", a, "alice")?, member("b", b, "bob")?],
    );
    let (fa, fb) = (view.node_policy(0).filter, view.node_policy(1).filter);
    let pa = dir.join("a-filter.json");
    let pb = dir.join("b-filter.json");
    std::fs::write(&pa, serde_json::to_vec(&fa)?)?;
    std::fs::write(&pb, serde_json::to_vec(&fb)?)?;
    Ok((pa, pb, fb.len()))
}

/// Starts pinholed at both ends of the bench's lab, each with its filter.
pub fn start(lab: &mut Lab, a: &Node, b: &Node) -> Result<()> {
    let (fa, fb, rules) = filters(a, b, lab.dir())?;
    eprintln!("b's packet filter: {rules} rules (a's: none, replies only)");
    for (host, me, peer, filter) in [("a", a, b, &fa), ("b", b, a, &fb)] {
        let conf = lab.dir().join(format!("{host}.conf"));
        std::fs::write(&conf, config(me, peer, true))?;
        let conf = conf.to_string_lossy().into_owned();
        let filter = filter.to_string_lossy().into_owned();
        start_pinholed_with(lab, host, &["--config", &conf, "--filter", &filter]);
    }
    Ok(())
}
