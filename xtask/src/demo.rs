//! `cargo xtask demo`: a coordination server and three pinholed nodes in a namespace lab, n3
//! behind a firewall that drops all UDP. The nodes join with an auth key, learn each other from
//! the server's map, and ping each other's overlay addresses (n1 and n2 directly, n3 through the
//! relay embedded in the server); `pinhole status` on each shows its peers and the path to each,
//! `pinhole ping` the path and round trip through the tunnel, `pinhole netcheck` what n1's and
//! n3's networks allow.

use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Result};
use pinhole_netlab::mesh::{self, start_node, wait_line, Control};

use std::time::Duration;

const NODES: [&str; 3] = ["n1", "n2", "n3"];

pub fn run() -> Result<()> {
    require_root("cargo xtask demo")?;
    packages::ensure(packages::LAB)?;
    build_release_binaries()?;

    println!("\n== Pinhole demo: pinhole-control and three nodes in network namespaces ==\n");
    let mut lab = mesh::star(&NODES);
    let control = Control::new(&lab);
    let server = control.start(&mut lab);
    println!(
        "control: pinhole-control in namespace \"{}\" at {} (SQLite, plain HTTP for the lab)",
        mesh::PUBLIC,
        mesh::control_url()
    );
    let key = control.authkey_file(&lab);
    println!(
        "auth key: created with `pinhole-control authkey create --reusable` (shown only once)\n"
    );

    mesh::block_udp(&lab, "n3");
    println!("n3: its firewall drops all UDP (nftables): it can only be reached through a relay\n");
    let mut procs = Vec::new();
    for n in NODES {
        let p = start_node(&mut lab, n, &key);
        procs.push(p);
    }
    for (i, p) in procs.iter().enumerate() {
        for other in NODES.iter().filter(|o| **o != NODES[i]) {
            let peer = format!("peer={other} ");
            if wait_line(p, &[&peer, "endpoint=Some("], Duration::from_secs(10)).is_none() {
                bail!(
                    "{} never learned {other}'s endpoint:\n{}",
                    NODES[i],
                    p.log_text()
                );
            }
        }
    }
    // n3's netcheck finds no UDP (3 s) and takes the embedded relay as home; its peers learn
    // that from the map and reach it there.
    if wait_line(&procs[2], &["relay connected"], Duration::from_secs(15)).is_none() {
        bail!("n3 never connected to the relay:\n{}", procs[2].log_text());
    }
    let relayed = pinhole_netlab::Lab::wait_for(Duration::from_secs(15), || {
        mesh::pinhole(
            &lab,
            "n1",
            &["ping", "n3", "--count", "1", "--timeout-ms", "1000"],
        )
        .0
    });
    if !relayed {
        bail!("n1 cannot reach n3 through the relay");
    }
    print!("{}", control.cli(&lab, &["node", "list"]));
    println!();

    let addrs: Vec<String> = NODES.iter().map(|n| control.address_of(&lab, n)).collect();
    let mut failures = 0;
    for (i, from) in NODES.iter().enumerate() {
        for (j, to) in addrs.iter().enumerate() {
            if i == j {
                continue;
            }
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
            println!(
                "[{verdict}] ping {from} → {} ({to}): {}",
                NODES[j],
                summary.join("; ")
            );
        }
    }

    for n in NODES {
        println!("\n$ pinhole status    (on {n})");
        let (ok, table, err) = mesh::pinhole(&lab, n, &["status"]);
        if !ok {
            failures += 1;
            println!("FAIL: {err}");
        }
        print!("{table}");
    }
    for (host, args) in [
        ("n1", &["ping", "n2", "--count", "3"][..]),
        ("n1", &["ping", "n3", "--count", "3"][..]),
        ("n1", &["netcheck"][..]),
        ("n3", &["netcheck"][..]),
    ] {
        println!("\n$ pinhole {}    (on {host})", args.join(" "));
        let (ok, out, err) = mesh::pinhole(&lab, host, args);
        if !ok {
            failures += 1;
            println!("FAIL: {err}");
        }
        print!("{out}");
    }
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
