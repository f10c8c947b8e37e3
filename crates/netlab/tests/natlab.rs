//! The NAT matrix of `cargo xtask test`: two Pinhole nodes behind the classic four NAT types
//! pairwise, both behind one hairpinning router, behind a double NAT, one side public, and one
//! side with UDP blocked. Every cell must connect over the tunnel; how each came out against
//! RFC 4787 reasoning is printed (a path worse than expected is reported, not failed, until
//! NAT traversal lands).

use pinhole_netlab::nat_matrix::{self, RunOptions, Verdict};
use pinhole_netlab::skip_without_root;

#[test]
fn every_nat_pair_connects() {
    if skip_without_root("every_nat_pair_connects") {
        return;
    }
    let cases = nat_matrix::test_cases();
    // Two labs at a time (a 2-core machine).
    let results = nat_matrix::run_all(&cases, &RunOptions::default(), 2);
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
        if o.verdict == Verdict::NoConnectivity {
            failures.push(format!(
                "{}: no connectivity ({:?} / {:?})",
                o.case, o.a, o.b
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
