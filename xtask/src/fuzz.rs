//! `cargo xtask fuzz [--seconds N] [TARGET…]`: runs each coverage-guided fuzz target (`fuzz/`,
//! cargo-fuzz with libFuzzer) for N seconds. New inputs go to a scratch corpus first; only
//! those that reach new code are merged into the committed corpus (`fuzz/corpus/TARGET`). A
//! crash is copied into the committed corpus, where `cargo test` replays it from then on, and
//! fails the run. Prints executions, executions per second and what was found per target.

use crate::root;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// The fuzz targets (the names of `fuzz/fuzz_targets/*.rs`).
const TARGETS: &[&str] = &[
    "stun",
    "relay_frames",
    "relay_key_proof",
    "ipc",
    "wgconf",
    "control_api",
    "disco",
    "datagram",
    "dns",
    "filter",
];

struct Outcome {
    target: String,
    runs: u64,
    per_second: u64,
    /// Code edges covered at the end (libFuzzer's `cov:`).
    coverage: u64,
    added: usize,
    crash: Option<String>,
}

pub fn run(args: &[&str]) -> Result<()> {
    let mut seconds = 60u64;
    let mut chosen = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--seconds takes a number")?
            }
            t if TARGETS.contains(&t) => chosen.push(t),
            other => bail!(
                "unknown fuzz argument {other:?} (targets: {})",
                TARGETS.join(", ")
            ),
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.to_vec();
    }
    ensure_cargo_fuzz()?;
    let mut outcomes = Vec::new();
    for t in chosen {
        outcomes.push(fuzz_one(t, seconds)?);
    }
    eprintln!("\n== fuzzing, {seconds} s per target ==");
    eprintln!("target            executions   exec/s  coverage  new corpus  crash");
    for o in &outcomes {
        eprintln!(
            "{:16} {:>11} {:>8} {:>9} {:>11}  {}",
            o.target,
            o.runs,
            o.per_second,
            o.coverage,
            o.added,
            o.crash.as_deref().unwrap_or("none")
        );
    }
    let crashes: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if !crashes.is_empty() {
        bail!(
            "{} target(s) crashed; the inputs are in fuzz/corpus (replayed by cargo test): fix and commit them",
            crashes.len()
        );
    }
    Ok(())
}

/// The toolchain flag for cargo fuzz: nightly when installed, else stable with RUSTC_BOOTSTRAP.
fn fuzz_command() -> Command {
    let nightly = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"));
    let mut c = Command::new("cargo");
    if nightly {
        c.arg("+nightly");
    } else {
        c.env("RUSTC_BOOTSTRAP", "1");
    }
    c.arg("fuzz");
    c.current_dir(root().join("fuzz"));
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        crate::cmd("cargo", &["install", "cargo-fuzz", "--locked"])?;
    }
    Ok(())
}

fn fuzz_one(target: &str, seconds: u64) -> Result<Outcome> {
    let fuzz = root().join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let scratch = root().join("target/fuzz-scratch").join(target);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&corpus)?;
    let artifacts = fuzz.join("artifacts").join(target);
    let _ = std::fs::remove_dir_all(&artifacts);
    eprintln!("$ cargo fuzz run {target} ({seconds} s)");
    let out = fuzz_command()
        .args(["run", target])
        .arg(&scratch)
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
            "-rss_limit_mb=2048",
            "-max_len=70000",
        ])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run cargo fuzz")?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let runs = stat("number_of_executed_units");
    let per_second = stat("average_exec_per_sec");
    let coverage = log
        .lines()
        .rev()
        .filter_map(|l| l.split_once(" cov: "))
        .find_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let crash = if out.status.success() {
        None
    } else {
        // The input that crashed becomes a regression input of the committed corpus.
        let found = std::fs::read_dir(&artifacts)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path());
        match found {
            Some(path) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "crash".into());
                std::fs::copy(&path, corpus.join(&name))?;
                eprintln!("{}", tail(&log, 40));
                Some(name)
            }
            None => bail!("cargo fuzz run {target} failed:\n{}", tail(&log, 40)),
        }
    };
    let added = merge(target, &corpus, &scratch)?;
    Ok(Outcome {
        target: target.to_string(),
        runs,
        per_second,
        coverage,
        added,
        crash,
    })
}

/// Merges into the committed corpus the scratch inputs that reach new code; how many it added.
fn merge(target: &str, corpus: &Path, scratch: &Path) -> Result<usize> {
    let before = count(corpus);
    let out = fuzz_command()
        .args(["run", target])
        .arg(corpus)
        .arg(scratch)
        .args(["--", "-merge=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run cargo fuzz (merge)")?;
    if !out.status.success() {
        bail!(
            "merging the corpus of {target} failed:\n{}",
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    Ok(count(corpus).saturating_sub(before))
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
