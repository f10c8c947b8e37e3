//! The NAT matrix of `cargo xtask test`: two Pinhole nodes behind the classic four NAT types
//! pairwise, both behind one hairpinning router, behind a double NAT, one side public, and one
//! side with UDP blocked. Every cell must connect over the tunnel; how each came out against
//! RFC 4787 reasoning is printed (a path worse than expected is reported, not failed, until
//! NAT traversal lands).

use pinhole_netlab::nat_matrix::{self, Outcome, RunOptions, Verdict};
use pinhole_netlab::skip_without_root;
use std::sync::Mutex;

#[test]
fn every_nat_pair_connects() {
    if skip_without_root("every_nat_pair_connects") {
        return;
    }
    let cases = nat_matrix::test_cases();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, Result<Outcome, String>)>> = Mutex::new(Vec::new());
    // Two labs at a time (a 2-core machine); each lab is torn down when its run ends.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(case) = cases.get(i) else { break };
                let r = std::panic::catch_unwind(|| nat_matrix::run(case, &RunOptions::default()))
                    .unwrap_or_else(|_| Err(format!("{case}: the run panicked")));
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (i, r) in results {
        match r {
            Ok(o) => outcomes.push(o),
            Err(e) => failures.push(format!("{}: {e}", cases[i])),
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
