//! The NAT matrix of `cargo xtask test`: two Pinhole nodes behind the classic four NAT types
//! pairwise, both behind one hairpinning router, behind a double NAT, one side public, and one
//! side with UDP blocked. Every cell must connect over the tunnel, end on the path RFC 4787
//! reasoning expects (direct where hole punching can work, relayed where it cannot), and keep
//! it while traffic flows; and a pair whose router forgets every mapping is direct again
//! within 10 s.

use pinhole_netlab::nat_matrix::{self, Case, RunOptions, Verdict};
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
