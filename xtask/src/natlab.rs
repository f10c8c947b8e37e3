//! `cargo xtask natlab`: the NAT matrix — for each pair of router profiles, two Pinhole nodes
//! behind them, how they connect against what RFC 4787 reasoning expects — and
//! `cargo xtask natlab --shell A B`, one such lab left running to explore by hand.

use crate::{build_release_binaries, packages, require_root, root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::impair::Impairment;
use pinhole_netlab::nat::Profile;
use pinhole_netlab::nat_matrix::{self, Case, Outcome, RunOptions, Verdict};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cargo xtask natlab [--profiles P,P,…] [--loss PCT] [--delay MS] \
                     [--jitter MS] [--hold S] [--full] [--strict] [--out FILE]\n       \
                     cargo xtask natlab --shell PROFILE_A PROFILE_B";

struct Options {
    profiles: Option<Vec<Profile>>,
    impair: Impairment,
    full: bool,
    strict: bool,
    /// How long each settled path is watched for changes.
    hold: Duration,
    out: std::path::PathBuf,
    shell: Option<(Profile, Profile)>,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        profiles: None,
        impair: Impairment::default(),
        full: false,
        strict: false,
        hold: RunOptions::default().hold,
        out: root().join("target/natlab.md"),
        shell: None,
    };
    let mut it = args.iter();
    let ms = |v: Option<&&str>, what: &str| -> Result<Duration> {
        let v: f64 = v
            .with_context(|| format!("{what} needs milliseconds"))?
            .parse()
            .with_context(|| format!("{what}: not a number"))?;
        Duration::try_from_secs_f64(v / 1000.0).with_context(|| format!("{what}: out of range"))
    };
    while let Some(a) = it.next() {
        match *a {
            "--profiles" => {
                let list = it.next().context("--profiles needs a list")?;
                let ps = list
                    .split(',')
                    .map(|p| p.parse::<Profile>())
                    .collect::<Result<Vec<_>, _>>()?;
                o.profiles = Some(ps);
            }
            "--loss" => {
                o.impair.loss_percent = it
                    .next()
                    .context("--loss needs a percentage")?
                    .parse()
                    .context("--loss: not a number")?;
            }
            "--delay" => o.impair.delay = ms(it.next(), "--delay")?,
            "--jitter" => o.impair.jitter = ms(it.next(), "--jitter")?,
            "--full" => o.full = true,
            "--hold" => {
                let secs: u64 = it
                    .next()
                    .context("--hold needs seconds")?
                    .parse()
                    .context("--hold: not a number of seconds")?;
                o.hold = Duration::from_secs(secs);
            }
            "--strict" => o.strict = true,
            "--out" => o.out = it.next().context("--out needs a file")?.into(),
            "--shell" => {
                let a = it.next().context("--shell needs two profiles")?.parse()?;
                let b = it.next().context("--shell needs two profiles")?.parse()?;
                o.shell = Some((a, b));
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

pub fn run(args: &[&str]) -> Result<()> {
    let o = parse(args)?;
    require_root("cargo xtask natlab")?;
    packages::ensure(packages::LAB)?;
    build_release_binaries()?;
    if let Some((a, b)) = o.shell {
        return shell(Case::Pair(a, b), o.impair);
    }
    let mut grids: Vec<(String, Vec<Case>, Impairment)> = Vec::new();
    // The profiles of a grid run (every pair of them), for the square table.
    let grid_profiles = if o.full {
        Some(Profile::all_nine())
    } else {
        o.profiles.clone()
    };
    if o.full {
        let all = nat_matrix::grid(&Profile::all_nine());
        grids.push((
            "all nine × all nine".into(),
            all.clone(),
            Impairment::default(),
        ));
        let rough = Impairment {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(5),
            loss_percent: 10.0,
        };
        grids.push((
            "all nine × all nine, 10% loss, 50 ms delay (±5 ms) per pass".into(),
            all,
            rough,
        ));
    } else {
        let cases = match &o.profiles {
            Some(ps) => nat_matrix::grid(ps),
            None => nat_matrix::test_cases(),
        };
        grids.push(("selected cases".into(), cases, o.impair));
    }
    let mut doc = format!(
        "NAT matrix, {} on {} ({} cores)\n\n",
        chrono_like_date(),
        hostname(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut failures = 0;
    for (title, cases, impair) in grids {
        let t0 = Instant::now();
        let outcomes = run_all(&cases, impair, o.hold);
        let mut table = String::new();
        if let Some(ps) = grid_profiles.as_ref() {
            table.push_str(&nat_matrix::grid_markdown(ps, &outcomes));
            table.push('\n');
        }
        table.push_str(&nat_matrix::markdown(&outcomes));
        println!(
            "\n### {title}\n\n{table}\n({:.0} s)",
            t0.elapsed().as_secs_f64()
        );
        doc.push_str(&format!("### {title}\n\n{table}\n"));
        failures += outcomes
            .iter()
            .filter(|c| {
                c.verdict == Verdict::NoConnectivity
                    || (o.strict
                        && (c.flaps > 0
                            || !c.held_traffic()
                            || !matches!(
                                c.verdict,
                                Verdict::DirectAsExpected | Verdict::RelayedAsExpected
                            )))
            })
            .count();
        failures += cases.len() - outcomes.len();
    }
    std::fs::write(&o.out, &doc).with_context(|| format!("writing {}", o.out.display()))?;
    println!("written to {}", o.out.display());
    if failures > 0 {
        bail!("{failures} cells failed");
    }
    Ok(())
}

/// Runs the cases two labs at a time; a run that failed is said and left out.
fn run_all(cases: &[Case], impair: Impairment, hold: Duration) -> Vec<Outcome> {
    let opts = RunOptions {
        impair,
        hold,
        ..RunOptions::default()
    };
    let results = nat_matrix::run_all(cases, &opts, 2);
    let mut v = Vec::new();
    for (case, r) in cases.iter().zip(results) {
        match r {
            Ok(o) => {
                eprintln!("{}: {}", o.case, o.verdict);
                v.push(o);
            }
            Err(e) => eprintln!("{case}: {e}"),
        }
    }
    v
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// One lab left running until Enter or Ctrl-C, then torn down.
fn shell(case: Case, impair: Impairment) -> Result<()> {
    let running = nat_matrix::start(&case, impair).map_err(anyhow::Error::msg)?;
    let lab = &running.lab;
    let cli = pinhole_netlab::mesh::pinhole_cli();
    println!("\n== NAT lab: {case} (expected: {}) ==\n", case.expected());
    for host in ["a", "b"] {
        let ns = lab.ns(host)?;
        let sock = lab.dir().join(format!("{host}.sock"));
        let env = pinhole_netlab::mesh::hermetic_cli_env(lab, host).join(" ");
        println!("node {host}: sudo ip netns exec {ns} bash");
        println!(
            "  then: env {env} {} --socket {} status",
            cli.display(),
            sock.display()
        );
    }
    println!(
        "overlay addresses: a {} · b {}\ncontrol: sudo ip netns exec {} bash (pinhole-control at {})",
        running.addr_a,
        running.addr_b,
        lab.ns(pinhole_netlab::natlab::PUBLIC)?,
        pinhole_netlab::mesh::control_url()
    );
    println!(
        "logs: {}\n\npress Enter or Ctrl-C to tear the lab down",
        lab.dir().display()
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        STOP.store(true, Ordering::SeqCst);
    });
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("tearing down");
    drop(running);
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

/// Today's date (UTC), from `date`.
fn chrono_like_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
