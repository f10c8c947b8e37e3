//! `cargo xtask demo`: two pinholed nodes in a namespace lab ping each other across the tunnel.

use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Result};
use pinhole_netlab::pinhole::{config, node_a, node_b, start_pinholed, two_hosts};
use std::time::Duration;

pub fn run() -> Result<()> {
    require_root("cargo xtask demo")?;
    packages::ensure(packages::LAB)?;
    build_release_binaries()?;

    println!("\n== Pinhole demo: two nodes in network namespaces, WireGuard between them ==\n");
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    println!("node a: underlay {}  overlay {} {}", a.underlay, a.v4, a.v6);
    println!("node b: underlay {}  overlay {} {}", b.underlay, b.v4, b.v6);
    println!("a knows b's endpoint; b learns a's from a's first handshake\n");
    let pa = start_pinholed(&mut lab, "a", &config(&a, &b, true));
    let pb = start_pinholed(&mut lab, "b", &config(&b, &a, false));

    let mut failures = 0;
    for (from, to, label) in [
        ("a", b.v4, "a → b  IPv4"),
        ("a", b.v6, "a → b  IPv6"),
        ("b", a.v4, "b → a  IPv4"),
        ("b", a.v6, "b → a  IPv6"),
    ] {
        let out = lab.run(
            from,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", to],
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
        println!("[{verdict}] ping {label} ({to}): {}", summary.join("; "));
    }

    println!("\nwhat the daemons said:");
    for (name, p) in [("a", &pa), ("b", &pb)] {
        for line in p.log_text().lines().filter(|l| {
            l.contains("handshake completed")
                || l.contains("endpoint changed")
                || l.contains("is up")
        }) {
            let msg = line.split_once("pinholed::run: ").map_or(line, |(_, m)| m);
            println!("  {name}: {msg}");
        }
    }
    for (name, p) in [("a", &pa), ("b", &pb)] {
        lab.stop(p, Duration::from_secs(5));
        if let Some(line) = p.log_text().lines().find(|l| l.contains("stopped")) {
            let msg = line.split_once("pinholed::run: ").map_or(line, |(_, m)| m);
            println!("  {name}: {msg}");
        }
    }
    drop(lab);
    println!("\nlab removed (namespaces, TUN devices, processes)");
    if failures > 0 {
        bail!("{failures} ping(s) failed");
    }
    Ok(())
}
