//! `cargo xtask bench connect`: how fast two nodes behind NATs meet, in the NAT lab.
//!
//! For each pair of router profiles, `--runs` fresh labs (control with its relay and STUN, two
//! nodes signed in and up). First the time until both maps list the other (the control plane:
//! over a lossy network the map stream's TCP takes its time); from then, a pings b every few
//! tens of milliseconds while both statuses are watched: the time to the first answered ping
//! (over whatever path) and to both sides being direct, and the disco pings both sent by then.
//! Reported as p50/p95 per pair, the direct path also from both up; the targets (issue 13): first packet p95 < 1 s; direct p50 <
//! 0.5 s and p95 < 2 s where a direct path is possible; with 10% loss, direct p95 < 3 s.

use crate::{build_release_binaries, packages, require_root, root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::impair::Impairment;
use pinhole_netlab::nat_matrix::{self, Case, Path};
use std::fmt::Write as _;
use std::time::Duration;

const USAGE: &str = "usage: cargo xtask bench connect [--runs N] [--pairs A:B,A:B,…] [--loss PCT] \
                     [--delay MS] [--out FILE]";

/// The pairs measured by default: the common home routers against each other and against the
/// hard cases, and two that can only be relayed (first packet only).
const PAIRS: &[(&str, &str)] = &[
    ("port-restricted-cone", "port-restricted-cone"),
    ("restricted-cone", "symmetric"),
    ("full-cone", "symmetric"),
    ("public", "symmetric"),
    ("port-restricted-cone", "symmetric"),
    ("udp-blocked", "port-restricted-cone"),
];

pub fn connect(args: &[&str]) -> Result<()> {
    let mut runs = 50usize;
    let mut pairs: Vec<(String, String)> = PAIRS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut impair = Impairment::default();
    let mut out = root().join("target/bench-connect.md");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--runs" => runs = it.next().context(USAGE)?.parse().context("--runs")?,
            "--pairs" => {
                pairs = it
                    .next()
                    .context(USAGE)?
                    .split(',')
                    .map(|p| {
                        let (a, b) = p.split_once(':').context("a pair is A:B")?;
                        Ok((a.to_string(), b.to_string()))
                    })
                    .collect::<Result<_>>()?;
            }
            "--loss" => {
                impair.loss_percent = it.next().context(USAGE)?.parse().context("--loss")?
            }
            "--delay" => {
                let ms: u64 = it.next().context(USAGE)?.parse().context("--delay")?;
                impair.delay = Duration::from_millis(ms);
            }
            "--out" => out = it.next().context(USAGE)?.into(),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    require_root("cargo xtask bench connect")?;
    packages::ensure(packages::LAB)?;
    build_release_binaries()?;
    let mut table = format!(
        "From both nodes up to both maps listing the other, then from there to the first packet \
         and to a direct path, {runs} runs per pair, loss {}%, delay {} ms per pass\n\n\
         | pair | expected | maps p50 / p95 (s) | first packet p50 / p95 (s) | direct p50 / p95 (s) | \
         direct from up p50 / p95 (s) | direct in | disco pings per punch (median) |\n\
         |---|---|---|---|---|---|---|---|\n",
        impair.loss_percent,
        impair.delay.as_millis()
    );
    for (a, b) in &pairs {
        let case = Case::Pair(a.parse()?, b.parse()?);
        let expected = case.expected();
        // A relayed pair is measured to its first packet; a direct one to the path.
        let deadline = Duration::from_secs(15);
        let want_direct = expected == Path::Direct;
        let (mut known, mut first, mut direct, mut from_up, mut pings) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut failed = 0;
        for i in 0..runs {
            match nat_matrix::meet(&case, impair, deadline, want_direct) {
                Ok(m) => {
                    known.push(m.known);
                    first.push(m.first_packet);
                    if let Some(d) = m.direct {
                        direct.push(d);
                        from_up.extend(m.direct_from_up);
                        pings.push(m.pings as f64);
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("{case} run {i}: {e}");
                }
            }
        }
        let pct = |v: &mut Vec<f64>, p: f64| -> String {
            if v.is_empty() {
                return "–".into();
            }
            v.sort_by(f64::total_cmp);
            format!("{:.2}", v[((v.len() - 1) as f64 * p).round() as usize])
        };
        let line = format!(
            "| {case} | {expected} | {} / {} | {} / {} | {} / {} | {} / {} | {}/{runs} | {} |\n",
            pct(&mut known, 0.5),
            pct(&mut known, 0.95),
            pct(&mut first, 0.5),
            pct(&mut first, 0.95),
            pct(&mut direct, 0.5),
            pct(&mut direct, 0.95),
            pct(&mut from_up, 0.5),
            pct(&mut from_up, 0.95),
            direct.len(),
            pct(&mut pings, 0.5),
        );
        eprint!("{line}");
        table.push_str(&line);
        if failed > 0 {
            let _ = writeln!(table, "\n{case}: {failed} runs without connectivity\n");
        }
    }
    println!("\n{table}");
    std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}
