//! What Pinhole's tests share: the rule for a test that cannot do its real part here (no root,
//! no PostgreSQL, no coturn, a port taken).
//!
//! Under `cargo xtask test` (and so in CI), which sets [`REQUIRE_ALL`], such a test fails with
//! the reason: a suite that passes has run every test for real. Elsewhere (a developer's plain
//! `cargo test`) it is skipped, and says so where `cargo test` shows it: straight to the
//! process's standard error, past the test harness's output capture, and into the file named by
//! [`SKIP_LOG`] when that is set.

use std::io::Write as _;

/// Set (to anything but `0`) by `cargo xtask test`: a test that cannot run fails.
pub const REQUIRE_ALL: &str = "PINHOLE_TEST_REQUIRE_ALL";
/// A file that each skip appends one line to: `test<TAB>reason`.
pub const SKIP_LOG: &str = "PINHOLE_TEST_SKIP_LOG";

/// Whether the run wants every test for real.
pub fn all_required() -> bool {
    std::env::var_os(REQUIRE_ALL).is_some_and(|v| v != "0" && !v.is_empty())
}

/// Call when `test` cannot do its real part, with `why` in words. Returns `true` (return from
/// the test) where skipping is allowed; panics with the reason under `cargo xtask test`.
#[must_use = "return from the test when this says to skip"]
pub fn skip(test: &str, why: &str) -> bool {
    if all_required() {
        panic!("{test} cannot run here: {why} (under `cargo xtask test` every test must run)");
    }
    let line = format!("\n*** SKIPPED {test}: {why} ***\n");
    // Written to the real standard error, not through eprintln!, which the harness captures
    // and shows only for failing tests.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}\t{why}");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test touches the environment, so nothing races with it.
    #[test]
    fn skips_out_loud_or_fails_when_every_test_must_run() {
        let log = std::env::temp_dir().join(format!("pinhole-skip-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        std::env::remove_var(REQUIRE_ALL);
        std::env::set_var(SKIP_LOG, &log);
        assert!(skip("a_test", "no coturn"));
        let logged = std::fs::read_to_string(&log).expect("the skip is logged");
        assert_eq!(logged, "a_test\tno coturn\n");
        std::env::set_var(REQUIRE_ALL, "1");
        let failed = std::panic::catch_unwind(|| skip("b_test", "not root"));
        let message = failed
            .expect_err("under xtask a skip fails")
            .downcast::<String>()
            .map(|s| *s)
            .unwrap_or_default();
        assert!(
            message.contains("b_test cannot run here: not root"),
            "{message}"
        );
        std::env::remove_var(REQUIRE_ALL);
        std::env::remove_var(SKIP_LOG);
        let _ = std::fs::remove_file(&log);
    }
}
