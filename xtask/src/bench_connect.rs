//! `cargo xtask bench connect`: how fast two nodes behind NATs meet, in the NAT lab.
//!
//! For each pair of router profiles, `--runs` fresh labs (control with its relay and STUN, two
//! nodes signed in and up). First the time until both maps list the other (the control plane:
//! over a lossy network the map stream's TCP takes its time); from then, a pings b every few
//! tens of milliseconds while both statuses are watched: the time to the first answered ping
//! (over whatever path) and to both sides being direct, and the disco pings both sent by then.
//! Reported as p50/p95 per pair, the direct path also from both up; a run that never got there
//! (no direct path by the deadline, or no connectivity at all) counts in the percentiles as a
//! miss, slower than any run that did, so a p95 is only a time when 95% of the runs made it.
//! The targets (issue 13): first packet p95 < 1 s; direct p50 < 0.5 s and p95 < 2 s where a
//! direct path is possible; with 10% loss, direct p95 < 3 s.

use crate::bench_report::{self, Versions};
use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::impair::Impairment;
use pinhole_netlab::nat_matrix::{self, Case, Path};
use std::fmt::Write as _;
use std::time::Duration;

const USAGE: &str = "usage: cargo xtask bench connect [--runs N] [--pairs A:B,A:B,…] [--loss PCT] \
                     [--delay MS]";

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
    let (runs, pairs, impair) = options(args)?;
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
    let mut figures = Vec::new();
    for (a, b) in &pairs {
        let case = Case::Pair(a.parse()?, b.parse()?);
        let expected = case.expected();
        // A relayed pair is measured to its first packet; a direct one to the path.
        let deadline = Duration::from_secs(15);
        let want_direct = expected == Path::Direct;
        let PairRuns {
            known,
            first,
            direct,
            from_up,
            pings,
            failed,
        } = run_pair(
            &format!("{a}-{b}"),
            &case,
            impair,
            runs,
            deadline,
            want_direct,
        )?;
        let reached = direct.iter().flatten().count();
        let (p_direct, p_from_up) = if want_direct {
            (
                (percentile(&direct, 0.5), percentile(&direct, 0.95)),
                (percentile(&from_up, 0.5), percentile(&from_up, 0.95)),
            )
        } else {
            ((None, None), (None, None))
        };
        let show = |v: Option<Option<f64>>| match v {
            None => "–".to_string(),
            Some(None) => "miss".to_string(),
            Some(Some(t)) => format!("{t:.2}"),
        };
        let line = format!(
            "| {case} | {expected} | {} / {} | {} / {} | {} / {} | {} / {} | {reached}/{runs} | {} |\n",
            show(percentile(&known, 0.5)),
            show(percentile(&known, 0.95)),
            show(percentile(&first, 0.5)),
            show(percentile(&first, 0.95)),
            show(p_direct.0),
            show(p_direct.1),
            show(p_from_up.0),
            show(p_from_up.1),
            show(percentile(&pings, 0.5)),
        );
        eprint!("{line}");
        table.push_str(&line);
        if failed > 0 {
            let _ = writeln!(table, "\n{case}: {failed} runs without connectivity\n");
        }
        let value = |v: Option<Option<f64>>| v.flatten();
        figures.push(serde_json::json!({
            "pair": case.to_string(),
            "expected": expected.to_string(),
            "runs": runs,
            "direct_runs": reached,
            "failed_runs": failed,
            "maps_s": {"p50": value(percentile(&known, 0.5)), "p95": value(percentile(&known, 0.95))},
            "first_packet_s": {"p50": value(percentile(&first, 0.5)), "p95": value(percentile(&first, 0.95))},
            "direct_s": {"p50": value(p_direct.0), "p95": value(p_direct.1)},
            "direct_from_up_s": {"p50": value(p_from_up.0), "p95": value(p_from_up.1)},
            "direct_times_s": direct,
        }));
    }
    let _ = writeln!(
        table,
        "\nA run that never got there counts as a miss: a percentile reads \"miss\" when more runs \
         than it leaves out missed."
    );
    let figures = serde_json::json!({
        "loss_percent": impair.loss_percent,
        "delay_ms": impair.delay.as_millis() as u64,
        "pairs": figures,
    });
    bench_report::write("connect", &table, figures, &Versions::new())?;
    Ok(())
}

/// One pair's runs: one entry per run in each list (None where the run never got there), and
/// how many runs had no connectivity at all.
#[derive(Default)]
struct PairRuns {
    known: Vec<Option<f64>>,
    first: Vec<Option<f64>>,
    direct: Vec<Option<f64>>,
    from_up: Vec<Option<f64>>,
    pings: Vec<Option<f64>>,
    failed: usize,
}

/// Runs one pair `runs` times; a run that never goes direct leaves both nodes' status and
/// logs in target/bench/connect-misses/.
fn run_pair(
    name: &str,
    case: &Case,
    impair: Impairment,
    runs: usize,
    deadline: Duration,
    want_direct: bool,
) -> Result<PairRuns> {
    let mut r = PairRuns::default();
    for i in 0..runs {
        match nat_matrix::meet(case, impair, deadline, want_direct) {
            Ok(m) => {
                r.known.push(Some(m.known));
                r.first.push(Some(m.first_packet));
                r.direct.push(m.direct);
                r.from_up.push(m.direct.and(m.direct_from_up));
                if m.direct.is_some() {
                    r.pings.push(Some(m.pings as f64));
                }
                if let Some(report) = &m.miss_report {
                    let dir = crate::root().join("target/bench/connect-misses");
                    std::fs::create_dir_all(&dir)?;
                    let file = dir.join(format!("{name}-run{i}.log"));
                    std::fs::write(&file, report)?;
                    eprintln!(
                        "{case} run {i}: never direct; both nodes' status and logs in {}",
                        file.display()
                    );
                }
            }
            Err(e) => {
                r.failed += 1;
                r.known.push(None);
                r.first.push(None);
                r.direct.push(None);
                r.from_up.push(None);
                eprintln!("{case} run {i}: {e}");
            }
        }
    }
    Ok(r)
}

/// Pairs of NAT profiles, by name.
type Pairs = Vec<(String, String)>;

/// `--runs N --pairs A:B,… --loss PCT --delay MS`.
fn options(args: &[&str]) -> Result<(usize, Pairs, Impairment)> {
    let mut runs = 50usize;
    let mut pairs: Vec<(String, String)> = PAIRS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut impair = Impairment::default();
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
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    Ok((runs, pairs, impair))
}

/// The `p` percentile (nearest rank) of runs where None is a run that never got there: misses
/// sort after every time. None for no runs, Some(None) when the rank falls on a miss.
fn percentile(runs: &[Option<f64>], p: f64) -> Option<Option<f64>> {
    if runs.is_empty() {
        return None;
    }
    let mut v = runs.to_vec();
    v.sort_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Some(v[((v.len() - 1) as f64 * p).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn a_run_that_never_went_direct_counts_as_a_miss() {
        // 18 runs made it in 0.1 … 1.8 s, two never did.
        let mut runs: Vec<Option<f64>> = (1..=18).map(|i| Some(f64::from(i) / 10.0)).collect();
        runs.extend([None, None]);
        // Nearest rank of 20: p50 is the 11th (index 10), p95 the 19th (index 18): a miss.
        assert_eq!(percentile(&runs, 0.5), Some(Some(1.1)));
        assert_eq!(percentile(&runs, 0.95), Some(None));
        // The same times without the misses: p95 is a time again.
        assert_eq!(percentile(&runs[..18], 0.95), Some(Some(1.7)));
        assert_eq!(percentile(&[None, None], 0.5), Some(None));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
