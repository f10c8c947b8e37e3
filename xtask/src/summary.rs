//! The test run's summary: how many tests ran in each suite (read from cargo's and the test
//! harness's output as it goes by), how long each step took, and every step that was skipped,
//! with why. A suite is named
//! by its package and target, which cargo tells for each test executable when asked for JSON.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One test executable's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    pub name: String,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

#[derive(Debug, Default)]
pub struct Summary {
    suites: Vec<Suite>,
    skipped: Vec<(String, String)>,
    /// Steps that finished, with how long each took.
    steps: Vec<(String, Duration)>,
    /// The step running now, and since when.
    current: Option<(String, Instant)>,
}

impl Summary {
    /// Starts timing the step `name`, ending the one before it.
    pub fn step(&mut self, name: &str) {
        self.end_step();
        self.current = Some((name.to_string(), Instant::now()));
    }

    fn end_step(&mut self) {
        if let Some((name, since)) = self.current.take() {
            self.steps.push((name, since.elapsed()));
        }
    }

    /// Records a step of the run that did not run, and why.
    pub fn skip(&mut self, step: &str, why: &str) {
        eprintln!("\n!!! SKIPPED: {step}: {why} !!!\n");
        self.skipped.push((step.to_string(), why.to_string()));
    }

    /// Records a suite run by something other than cargo (the UI's component tests).
    pub fn add(&mut self, suite: Suite) {
        self.suites.push(suite);
    }

    /// Runs `cargo test ARGS` (with `envs`), showing its output as it comes and counting each
    /// suite's tests; `label` is added to suite names (e.g. "windows"). Fails when cargo does.
    pub fn cargo_test(
        &mut self,
        label: &str,
        args: &[&str],
        envs: &[(&str, String)],
    ) -> Result<()> {
        let names = executables(args, envs)?;
        eprintln!("$ cargo test {}", args.join(" "));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec cargo test "$@" 2>&1"#)
            .arg("cargo-test")
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(crate::root())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run cargo test")?;
        let out = child.stdout.take().context("no output pipe")?;
        let mut current: Option<String> = None;
        let mut stderr = std::io::stderr();
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test's output")?;
            let _ = writeln!(stderr, "{line}");
            if let Some(suite) = running_suite(&line, &names) {
                current = Some(suite);
            } else if let Some((passed, failed, ignored)) = result_counts(&line) {
                let base = current.take().unwrap_or_else(|| "(unnamed suite)".into());
                let name = if label.is_empty() {
                    base
                } else {
                    format!("{base} [{label}]")
                };
                self.suites.push(Suite {
                    name,
                    passed,
                    failed,
                    ignored,
                });
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("cargo test {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// The table, the skips, and a closing line of the form `N passed, N failed`; `failed_step`
    /// names a step that failed outside the test suites (formatting, lints, a build), which
    /// counts as one failure there.
    pub fn print(&mut self, failed_step: Option<&str>) {
        self.end_step();
        let width = self
            .suites
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        eprintln!("\n== test summary ==");
        eprintln!("{:width$}  passed  failed  ignored", "suite");
        let (mut passed, mut failed, mut ignored) = (0, 0, 0);
        for s in self
            .suites
            .iter()
            .filter(|s| s.passed + s.failed + s.ignored > 0)
        {
            eprintln!(
                "{:width$}  {:>6}  {:>6}  {:>7}",
                s.name, s.passed, s.failed, s.ignored
            );
            passed += s.passed;
            failed += s.failed;
            ignored += s.ignored;
        }
        let empty = self
            .suites
            .iter()
            .filter(|s| s.passed + s.failed + s.ignored == 0)
            .count();
        eprintln!("({empty} suites with no tests not listed)");
        if !self.steps.is_empty() {
            eprintln!("steps:");
            for (name, took) in &self.steps {
                eprintln!("  {:>8}  {name}", minutes(*took));
            }
            let total: Duration = self.steps.iter().map(|(_, d)| *d).sum();
            eprintln!("  {:>8}  in all", minutes(total));
        }
        if self.skipped.is_empty() {
            eprintln!("skipped steps: none");
        } else {
            eprintln!("skipped steps:");
            for (step, why) in &self.skipped {
                eprintln!("  - {step}: {why}");
            }
        }
        if let Some(step) = failed_step {
            eprintln!("failed: {step}");
            failed = failed.max(1);
        }
        eprintln!("{}", closing_line(passed, failed, ignored, &self.skipped));
    }
}

/// `M:SS` (or `H:MM:SS`).
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `N passed, N failed, N ignored, N steps skipped (names)`: ignored tests and skipped steps
/// apart, every skipped step by name.
fn closing_line(passed: u64, failed: u64, ignored: u64, skipped: &[(String, String)]) -> String {
    let mut line = format!("{passed} passed, {failed} failed, {ignored} ignored, ");
    match skipped.len() {
        0 => line.push_str("no step skipped"),
        n => {
            let names: Vec<&str> = skipped.iter().map(|(s, _)| s.as_str()).collect();
            let steps = if n == 1 { "step" } else { "steps" };
            line.push_str(&format!("{n} {steps} skipped ({})", names.join("; ")));
        }
    }
    line
}

/// Each test executable of `cargo test ARGS` and the suite name for it ("package: target"),
/// from cargo's JSON build messages (building them now, so the run that follows only runs).
fn executables(args: &[&str], envs: &[(&str, String)]) -> Result<HashMap<String, String>> {
    let mut build = vec![
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    build.extend(args.iter().copied().take_while(|a| *a != "--"));
    let out = Command::new("cargo")
        .args(&build)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(crate::root())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    Ok(suite_names(&String::from_utf8_lossy(&out.stdout)))
}

/// Reads cargo's JSON messages: executable file name → "package: target".
fn suite_names(json_lines: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let package = v["package_id"]
            .as_str()
            .map(package_name)
            .unwrap_or_default();
        let kind = v["target"]["kind"][0].as_str().unwrap_or("");
        let target = v["target"]["name"].as_str().unwrap_or("");
        let what = match kind {
            "lib" => "unit".to_string(),
            _ => format!("{kind} {target}"),
        };
        let file = std::path::Path::new(exe)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        names.insert(file, format!("{package}: {what}"));
    }
    names
}

/// The package's name in a cargo package id (`path+file:///…/crates/proto#pinhole-proto@0.1.0`
/// or the older `pinhole-proto 0.1.0 (path+file:///…)`).
fn package_name(id: &str) -> String {
    if let Some((_, rest)) = id.rsplit_once('#') {
        let name = rest.split('@').next().unwrap_or(rest);
        // `…/crates/xtask#0.1.0`: the name is the last path segment.
        if name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            let before = id.rsplit_once('#').map(|(b, _)| b).unwrap_or(id);
            return before.rsplit('/').next().unwrap_or(before).to_string();
        }
        return name.to_string();
    }
    id.split_whitespace().next().unwrap_or(id).to_string()
}

/// `Running unittests src/lib.rs (target/debug/deps/pinhole_proto-0123abcd)` → the suite's name;
/// `Doc-tests pinhole_proto` → "pinhole_proto: doc".
fn running_suite(line: &str, names: &HashMap<String, String>) -> Option<String> {
    let t = line.trim();
    if let Some(krate) = t.strip_prefix("Doc-tests ") {
        return Some(format!("{}: doc", krate.trim()));
    }
    let rest = t.strip_prefix("Running ")?;
    let path = rest.rsplit_once('(')?.1.trim_end_matches(')');
    let file = std::path::Path::new(path).file_name()?.to_string_lossy();
    Some(
        names
            .get(file.as_ref())
            .cloned()
            .unwrap_or_else(|| rest.to_string()),
    )
}

/// `test result: ok. 3 passed; 0 failed; 1 ignored; …` → (3, 0, 1).
fn result_counts(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut counts = (0, 0, 0);
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what.trim_end_matches('.') {
            "passed" => counts.0 = n,
            "failed" => counts.1 = n,
            "ignored" => counts.2 = n,
            _ => {}
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_names_skipped_steps_apart_from_ignored_tests() {
        assert_eq!(
            closing_line(10, 0, 2, &[]),
            "10 passed, 0 failed, 2 ignored, no step skipped"
        );
        let skipped = [
            (
                "macOS check for aarch64-apple-darwin".to_string(),
                "no target".to_string(),
            ),
            ("Windows unit tests".to_string(), "no target".to_string()),
        ];
        assert_eq!(
            closing_line(10, 1, 0, &skipped),
            "10 passed, 1 failed, 0 ignored, 2 steps skipped (macOS check for \
             aarch64-apple-darwin; Windows unit tests)"
        );
        assert_eq!(minutes(Duration::from_secs(75)), "1:15");
        assert_eq!(minutes(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn reads_cargo_and_libtest_lines() {
        assert_eq!(
            result_counts("test result: ok. 21 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s"),
            Some((21, 0, 2))
        );
        assert_eq!(
            result_counts("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured"),
            Some((3, 1, 0))
        );
        assert_eq!(result_counts("test foo ... ok"), None);
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/control#pinhole-control@0.1.0","target":{"kind":["test"],"name":"api"},"executable":"/w/target/debug/deps/api-0123abcd"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/proto#pinhole-proto@0.1.0","target":{"kind":["lib"],"name":"pinhole_proto"},"executable":"/w/target/debug/deps/pinhole_proto-99"}
{"reason":"compiler-artifact","package_id":"path+file:///w/xtask#0.1.0","target":{"kind":["bin"],"name":"xtask"},"executable":"/w/target/debug/deps/xtask-77"}
{"reason":"build-finished","success":true}"#;
        let names = suite_names(json);
        assert_eq!(
            running_suite(
                "     Running tests/api.rs (target/debug/deps/api-0123abcd)",
                &names
            ),
            Some("pinhole-control: test api".into())
        );
        assert_eq!(
            running_suite(
                "     Running unittests src/lib.rs (target/debug/deps/pinhole_proto-99)",
                &names
            ),
            Some("pinhole-proto: unit".into())
        );
        assert_eq!(
            running_suite(
                "   Running unittests src/main.rs (target/debug/deps/xtask-77)",
                &names
            ),
            Some("xtask: bin xtask".into())
        );
        assert_eq!(
            running_suite("   Doc-tests pinhole_proto", &names),
            Some("pinhole_proto: doc".into())
        );
    }
}
