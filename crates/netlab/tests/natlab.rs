//! The NAT matrix of `cargo xtask test`: two Pinhole nodes behind the classic four NAT types
//! pairwise, both behind one hairpinning router, behind a double NAT, one side public, and one
//! side with UDP blocked. Every cell must connect over the tunnel, end on the path RFC 4787
//! reasoning expects (direct where hole punching can work, relayed where it cannot), and keep
//! it while traffic flows; a pair whose router forgets every mapping is direct again within
//! 10 s; and a router that grants port mappings (miniupnpd) turns two symmetric NATs, relayed
//! in the matrix, direct.

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
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Two port-restricted cones (the common home router) direct; then a's router forgets every
/// mapping (`conntrack -F`): the pair is direct again within 10 s.
#[test]
fn a_flushed_router_is_direct_again_within_10_s() {
    if skip_without_root("a_flushed_router_is_direct_again_within_10_s") {
        return;
    }
    let case = Case::Pair(
        "port-restricted-cone".parse().unwrap(),
        "port-restricted-cone".parse().unwrap(),
    );
    let secs = nat_matrix::recovery_after_flush(&case, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{case}: direct again {secs:.1} s after conntrack -F");
}

/// Symmetric × symmetric is relayed in the matrix above. With miniupnpd on a's router, a maps
/// its port (PCP is asked first), publishes it as a `portmap` endpoint, and b reaches it there:
/// the pair is direct. netcheck names the protocol and the forwarded address, and says which
/// router hairpins (a's does, b's does not).
#[test]
fn a_port_mapping_turns_two_symmetric_nats_direct() {
    if skip_without_root("a_port_mapping_turns_two_symmetric_nats_direct") {
        return;
    }
    let case = Case::Pair(
        "symmetric+upnp+hairpin".parse().unwrap(),
        "symmetric".parse().unwrap(),
    );
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
    let log_a = running.procs[1].log_text();
    assert!(
        a.connection == "direct" && b.connection == "direct",
        "not direct after {secs:.1} s: a {a:?}, b {b:?}\n{log_a}"
    );
    println!("{case}: direct {secs:.1} s after both were up");
    let st_b = mesh::status_json(lab, "b");
    let peer = &st_b["peers"][0];
    assert_eq!(peer["endpoint_kind"], "portmap", "{st_b:#}");

    let netcheck = |host: &str| -> serde_json::Value {
        let (ok, out, err) = mesh::pinhole(lab, host, &["netcheck", "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).expect("netcheck --json")
    };
    let nc = netcheck("a");
    let pm = &nc["port_mapping"];
    assert_eq!(pm["protocol"], "pcp", "{nc:#}");
    assert_eq!(pm["gateway"], "10.0.0.1", "{nc:#}");
    let external = pm["external"].as_str().unwrap_or_default();
    assert!(external.starts_with("198.18.10.2:"), "{nc:#}");
    assert_eq!(
        peer["endpoint"], external,
        "b uses the forwarded port: {st_b:#}"
    );
    assert_eq!(nc["hairpinning"], true, "{nc:#}");
    assert_eq!(
        (&nc["ipv4"], &nc["ipv6"]),
        (&serde_json::json!(true), &serde_json::Value::Null)
    );
    // b's gateway answers no port-mapping protocol: once all three were tried, netcheck says so.
    let mut nc_b = netcheck("b");
    let asked = std::time::Instant::now();
    while nc_b["port_mapping"]["error"] == "still asking the gateway"
        && asked.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(500));
        nc_b = netcheck("b");
    }
    assert_eq!(nc_b["hairpinning"], false, "{nc_b:#}");
    assert!(nc_b["port_mapping"]["protocol"].is_null(), "{nc_b:#}");
    let why = nc_b["port_mapping"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("PCP") && why.contains("UPnP"), "{nc_b:#}");
    let (_, text, _) = mesh::pinhole(lab, "a", &["netcheck"]);
    println!("$ pinhole netcheck (a)\n{text}");
}
