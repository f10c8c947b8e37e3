//! The NAT matrix of `cargo xtask test`: two Pinhole nodes behind the classic four NAT types
//! pairwise, both behind one hairpinning router, behind a double NAT, one side public, and one
//! side with UDP blocked. Every cell must connect over the tunnel, end on the path RFC 4787
//! reasoning expects (direct where hole punching can work, relayed where it cannot), and keep
//! it (and carry the traffic) while traffic flows; a pair whose router reboots (every mapping
//! forgotten, new ones on other ports) is direct again within 15 s; and a router that grants
//! port mappings (miniupnpd) turns two symmetric NATs, relayed in the matrix, direct.

use pinhole_netlab::mesh;
use pinhole_netlab::nat_matrix::{self, Case, Path, RunOptions, Verdict};
use pinhole_netlab::skip_without_root;
use std::time::Duration;

#[test]
fn every_nat_pair_connects_on_the_expected_path_and_keeps_it() {
    if skip_without_root("every_nat_pair_connects_on_the_expected_path_and_keeps_it") {
        return;
    }
    let cases = nat_matrix::test_cases();
    let opts = RunOptions {
        // The full 30 s hold runs in `cargo xtask natlab`; here 10 s per cell.
        hold: Duration::from_secs(10),
        ..RunOptions::default()
    };
    // Two labs at a time (a 2-core machine).
    let results = nat_matrix::run_all(&cases, &opts, 2);
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (case, r) in cases.iter().zip(results) {
        match r {
            Ok(o) => outcomes.push(o),
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    println!("{}", nat_matrix::markdown(&outcomes));
    for o in &outcomes {
        if !matches!(
            o.verdict,
            Verdict::DirectAsExpected | Verdict::RelayedAsExpected
        ) {
            failures.push(format!("{}: {} ({:?} / {:?})", o.case, o.verdict, o.a, o.b));
        }
        if o.flaps > 0 {
            failures.push(format!(
                "{}: the path changed {} times in {} s",
                o.case,
                o.flaps,
                o.held_for.as_secs()
            ));
        }
        if !o.held_traffic() {
            failures.push(format!(
                "{}: the held path lost traffic: {} of {} pings answered",
                o.case, o.hold_answered, o.hold_pings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Two port-restricted cones (the common home router; a's picks its public ports by a hash,
/// as most do, rather than keeping the node's) direct; then a's router reboots: it forgets
/// every mapping and gives new ones other ports, so the path breaks (the test fails if it did
/// not) until both sides know a's new port. The pair is direct again, at the new port, within
/// 15 s: the direct path's trust runs out (5 s), a's lost path makes it ask STUN for its
/// public address again, and the new one reaches b through control and a's call-me-maybe.
#[test]
fn a_rebooted_router_is_direct_again_within_15_s() {
    if skip_without_root("a_rebooted_router_is_direct_again_within_15_s") {
        return;
    }
    let case = Case::Pair(
        "port-restricted-cone+hash".parse().unwrap(),
        "port-restricted-cone".parse().unwrap(),
    );
    let secs = nat_matrix::recovery_after_reboot(&case, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{case}: direct again {secs:.1} s after the router rebooted");
}

/// Symmetric × symmetric is relayed in the matrix above. With miniupnpd on a's router, a maps
/// its port (PCP is asked first), publishes it as a `portmap` endpoint, and b reaches it there:
/// the pair is direct. netcheck names the protocol and the forwarded address, and says which
/// router hairpins (a's does, b's does not). Signing out deletes the mapping.
#[test]
fn a_port_mapping_turns_two_symmetric_nats_direct() {
    if skip_without_root("a_port_mapping_turns_two_symmetric_nats_direct") {
        return;
    }
    let lab = port_mapped_pair("symmetric+upnp+hairpin", "pcp");
    let netcheck_b = wait_for_port_mapping_answer(&lab, "b");
    assert_eq!(netcheck_b["hairpinning"], false, "{netcheck_b:#}");
    assert!(
        netcheck_b["port_mapping"]["protocol"].is_null(),
        "{netcheck_b:#}"
    );
    let why = netcheck_b["port_mapping"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("PCP") && why.contains("NAT-PMP") && why.contains("UPnP"),
        "{netcheck_b:#}"
    );
}

/// The same with a router that offers UPnP IGD only (NAT-PMP and PCP off): found by SSDP.
#[test]
fn a_upnp_igd_mapping_turns_two_symmetric_nats_direct() {
    if skip_without_root("a_upnp_igd_mapping_turns_two_symmetric_nats_direct") {
        return;
    }
    port_mapped_pair("symmetric+igd", "upnp");
}

/// Runs a (behind `profile_a`, which grants port mappings) and b (symmetric) until direct, and
/// checks that b reaches a at the port a's router forwards, which a's netcheck names with
/// `protocol`; then a signs out and its router forwards nothing any more. The running lab.
fn port_mapped_pair(profile_a: &str, protocol: &str) -> nat_matrix::Running {
    let case = Case::Pair(profile_a.parse().unwrap(), "symmetric".parse().unwrap());
    assert_eq!(case.expected(), Path::Direct);
    let running = nat_matrix::start(&case, Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let lab = &running.lab;
    let (addr_a, addr_b) = (running.addr_a.as_str(), running.addr_b.as_str());
    let secs = nat_matrix::settle(
        lab,
        (addr_a, addr_b),
        Duration::from_secs(20),
        running.up_at,
    );
    let (a, b) = (nat_matrix::seen(lab, "a"), nat_matrix::seen(lab, "b"));
    assert!(
        a.connection == "direct" && b.connection == "direct",
        "not direct after {secs:.1} s: a {a:?}, b {b:?}\n{}",
        running.procs[1].log_text()
    );
    println!("{case}: direct {secs:.1} s after both were up");
    let st_b = mesh::status_json(lab, "b");
    let peer = &st_b["peers"][0];
    assert_eq!(peer["endpoint_kind"], "portmap", "{st_b:#}");

    let nc = netcheck(lab, "a");
    let pm = &nc["port_mapping"];
    assert_eq!(pm["protocol"], protocol, "{nc:#}");
    assert_eq!(pm["gateway"], "10.0.0.1", "{nc:#}");
    let external = pm["external"].as_str().unwrap_or_default();
    assert!(external.starts_with("198.18.10.2:"), "{nc:#}");
    assert_eq!(
        peer["endpoint"], external,
        "b uses the forwarded port: {st_b:#}"
    );
    let hairpins = case.to_string().contains("hairpin");
    assert_eq!(nc["hairpinning"], hairpins, "{nc:#}");
    assert_eq!(
        (&nc["ipv4"], &nc["ipv6"]),
        (&serde_json::json!(true), &serde_json::Value::Null)
    );
    let (_, text, _) = mesh::pinhole(lab, "a", &["netcheck"]);
    println!("$ pinhole netcheck (a)\n{text}");

    // Signing out deletes the mapping on the router.
    let (ok, _, err) = mesh::pinhole(lab, "a", &["logout"]);
    assert!(ok, "{err}");
    let forwarded = || {
        lab.run_ok(
            "r1",
            &["nft", "list", "table", "inet", "miniupnpd"],
            Duration::from_secs(5),
        )
        .unwrap_or_default()
        .contains("10.0.0.2")
    };
    let gone = pinhole_netlab::Lab::wait_for(Duration::from_secs(5), || !forwarded());
    assert!(gone, "the router still forwards to a after it signed out");
    running
}

fn netcheck(lab: &pinhole_netlab::Lab, host: &str) -> serde_json::Value {
    let (ok, out, err) = mesh::pinhole(lab, host, &["netcheck", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("netcheck --json")
}

/// netcheck on `host` once its port mapper has heard from every protocol (or 15 s passed).
fn wait_for_port_mapping_answer(running: &nat_matrix::Running, host: &str) -> serde_json::Value {
    let lab = &running.lab;
    let mut nc = netcheck(lab, host);
    let asked = std::time::Instant::now();
    while nc["port_mapping"]["error"] == "still asking the gateway"
        && asked.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(500));
        nc = netcheck(lab, host);
    }
    nc
}

/// Port-restricted cone × symmetric is relayed in the matrix (the symmetric NAT hashes its
/// ports). When the symmetric NAT takes its ports from a counter instead (`+seq`), a pings the
/// ports after the two its STUN servers saw, one of them is where b's pings come from, and the
/// pair is direct and stays so.
#[test]
fn port_prediction_turns_a_sequential_symmetric_nat_direct() {
    if skip_without_root("port_prediction_turns_a_sequential_symmetric_nat_direct") {
        return;
    }
    direct_and_held(
        "port-restricted-cone",
        "symmetric+seq",
        Duration::from_secs(10),
    );
}

/// Birthday probing in real namespaces: a port-restricted cone and a symmetric NAT whose ports
/// nobody can predict (`masquerade random`). b opens 256 extra sockets toward a's public
/// endpoint, a probes random ports of b's address, and the pair goes direct and stays so.
#[test]
fn birthday_probing_turns_a_random_port_symmetric_nat_direct() {
    if skip_without_root("birthday_probing_turns_a_random_port_symmetric_nat_direct") {
        return;
    }
    direct_and_held(
        "port-restricted-cone",
        "symmetric+random",
        Duration::from_secs(20),
    );
}

/// Runs the pair `a` × `b` (expected direct) with `settle` to turn direct: it must, and keep
/// the path for 5 s.
fn direct_and_held(a: &str, b: &str, settle: Duration) {
    let case = Case::Pair(a.parse().unwrap(), b.parse().unwrap());
    assert_eq!(case.expected(), Path::Direct);
    let opts = RunOptions {
        settle_timeout: settle,
        hold: Duration::from_secs(5),
        ..RunOptions::default()
    };
    let out = nat_matrix::run(&case, &opts).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", nat_matrix::markdown(std::slice::from_ref(&out)));
    assert_eq!(out.verdict, Verdict::DirectAsExpected, "{out:?}");
    assert_eq!(out.flaps, 0, "{out:?}");
    assert!(out.held_traffic(), "the held path lost traffic: {out:?}");
}
