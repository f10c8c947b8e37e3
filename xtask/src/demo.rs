//! `cargo xtask demo`: a coordination server (with its embedded relay and STUN) and four
//! pinholed nodes in network namespaces, each behind its own emulated NAT router: a
//! port-restricted cone (the common home router), a symmetric NAT, a restricted cone, and a
//! network that drops all UDP. The nodes join with an auth key, learn each other from the
//! server's map and ping each other's overlay addresses; disco finds the direct paths where the
//! NATs allow them and the relay carries the rest. `pinhole status` on each node shows every
//! peer's path (direct with its endpoint and candidate kind, or relayed and why), `pinhole ping`
//! the path and round trip, `pinhole netcheck` what two of the networks allow. Each path is
//! checked against what RFC 4787 reasoning expects.

use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Result};
use pinhole_netlab::mesh::{self, start_node, status_json, Control};
use pinhole_netlab::nat::Profile;
use pinhole_netlab::nat_matrix::{Case, Path};
use pinhole_netlab::natlab::{Plan, SERVER_IP};
use std::time::Duration;

/// The nodes and the router each sits behind.
const NODES: [(&str, &str); 4] = [
    ("n1", "port-restricted-cone"),
    ("n2", "symmetric"),
    ("n3", "restricted-cone"),
    ("n4", "udp-blocked"),
];

pub fn run() -> Result<()> {
    require_root("cargo xtask demo")?;
    packages::ensure(packages::LAB)?;
    build_release_binaries()?;

    println!("\n== Pinhole demo: pinhole-control and four nodes behind emulated NATs ==\n");
    let mut plan = Plan::new();
    for (n, profile) in NODES {
        plan = plan.site(profile.parse()?, &[n]);
    }
    let mut lab = plan.build()?;
    let control = Control::new(&lab);
    let stun = format!("{SERVER_IP}:3478");
    let server = control.start_with(&mut lab, &["--stun-listen", &stun]);
    println!(
        "control: pinhole-control in namespace \"{}\" at {} (SQLite, its relay and STUN; plain \
         HTTP for the lab)",
        pinhole_netlab::natlab::PUBLIC,
        mesh::control_url()
    );
    let key = control.authkey_file(&lab);
    println!(
        "auth key: created with `pinhole-control authkey create --reusable` (shown only once)"
    );
    for (n, profile) in NODES {
        println!("{n}: behind its own router, {profile} (nftables NAT and conntrack)");
    }
    println!();
    let mut procs = Vec::new();
    for (n, _) in NODES {
        procs.push(start_node(&mut lab, n, &key));
    }
    // Every node has every other in its map, online.
    for (n, _) in NODES {
        let all = pinhole_netlab::Lab::wait_for(Duration::from_secs(20), || {
            let st = status_json(&lab, n);
            st["peers"].as_array().is_some_and(|p| {
                p.len() == NODES.len() - 1 && p.iter().all(|p| p["online"] == true)
            })
        });
        if !all {
            bail!(
                "{n} never saw all its peers online: {}",
                status_json(&lab, n)
            );
        }
    }
    print!("{}", control.cli(&lab, &["node", "list"]));
    println!();

    let addrs: Vec<String> = NODES
        .iter()
        .map(|(n, _)| control.address_of(&lab, n))
        .collect();
    let mut failures = ping_all(&lab, &addrs)?;
    failures += check_paths(&lab, &addrs)?;
    failures += show_cli(&lab);
    for p in &procs {
        lab.stop(p, Duration::from_secs(5));
    }
    lab.stop(&server, Duration::from_secs(5));
    drop(lab);
    println!("\nlab removed (namespaces, TUN devices, processes)");
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    Ok(())
}

/// Every node pings every other's address over the tunnel; the failures.
fn ping_all(lab: &pinhole_netlab::Lab, addrs: &[String]) -> Result<usize> {
    let mut failures = 0;
    for (i, (from, _)) in NODES.iter().enumerate() {
        for (j, to) in addrs.iter().enumerate() {
            if i == j {
                continue;
            }
            let out = lab.run(
                from,
                &["ping", "-c", "5", "-i", "0.2", "-W", "2", to],
                Duration::from_secs(15),
            )?;
            let text = String::from_utf8_lossy(&out.stdout);
            let summary: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("packets transmitted") || l.starts_with("rtt"))
                .collect();
            let verdict = if out.status.success() { "ok  " } else { "FAIL" };
            if !out.status.success() {
                failures += 1;
            }
            println!(
                "[{verdict}] ping {from} → {} ({to}): {}",
                NODES[j].0,
                summary.join("; ")
            );
        }
    }
    Ok(failures)
}

/// Each pair on the path its two NATs allow; the pairs that are not.
fn check_paths(lab: &pinhole_netlab::Lab, addrs: &[String]) -> Result<usize> {
    let mut failures = 0;
    println!();
    for (i, (a, pa)) in NODES.iter().enumerate() {
        for (b, pb) in NODES.iter().skip(i + 1) {
            let expected = Case::Pair(pa.parse::<Profile>()?, pb.parse::<Profile>()?).expected();
            let want = match expected {
                Path::Direct => "direct",
                Path::Relayed => "relayed",
            };
            let got = path_between(lab, addrs, a, b);
            let verdict = if got == want { "ok  " } else { "FAIL" };
            if got != want {
                failures += 1;
            }
            println!("[{verdict}] {a} ({pa}) ↔ {b} ({pb}): {got}, expected {want}");
        }
    }
    Ok(failures)
}

/// What a user sees from the CLI on the nodes: `pinhole status` everywhere, pings and
/// netchecks; the commands that failed.
fn show_cli(lab: &pinhole_netlab::Lab) -> usize {
    let mut failures = 0;
    for (n, _) in NODES {
        println!("\n$ pinhole status    (on {n})");
        let (ok, table, err) = mesh::pinhole(lab, n, &["status"]);
        if !ok {
            failures += 1;
            println!("FAIL: {err}");
        }
        print!("{table}");
    }
    for (host, args) in [
        ("n1", &["ping", "n3", "--count", "3"][..]),
        ("n1", &["ping", "n2", "--count", "3"][..]),
        ("n1", &["netcheck"][..]),
        ("n4", &["netcheck"][..]),
    ] {
        println!("\n$ pinhole {}    (on {host})", args.join(" "));
        let (ok, out, err) = mesh::pinhole(lab, host, args);
        if !ok {
            failures += 1;
            println!("FAIL: {err}");
        }
        print!("{out}");
    }
    failures
}

/// The path both `a` and `b` report for each other ("direct" only when both do), after
/// traffic had a few seconds to find one.
fn path_between(lab: &pinhole_netlab::Lab, addrs: &[String], a: &str, b: &str) -> String {
    let index = |n: &str| NODES.iter().position(|(x, _)| *x == n).unwrap_or(0);
    let connection = |from: &str, to: &str| -> String {
        let st = status_json(lab, from);
        st["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == to))
            .and_then(|p| p["connection"].as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    let mut last = String::new();
    // Up to 8 s with traffic: a relayed pair stays relayed for all of it.
    for _ in 0..16 {
        let _ = lab.run(
            a,
            &["ping", "-c", "1", "-W", "1", &addrs[index(b)]],
            Duration::from_secs(5),
        );
        let (x, y) = (connection(a, b), connection(b, a));
        last = if x == "direct" && y == "direct" {
            return "direct".into();
        } else if x == "relayed" && y == "relayed" {
            "relayed".into()
        } else {
            format!("{x} / {y}")
        };
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}
