//! `cargo xtask bench idle`: what an idle node costs. pinholed runs in a lab namespace with N
//! peers (simulated nodes registered with a local pinhole-control, holding their map streams,
//! so they are online with an endpoint each) and no traffic. Over the measuring window it
//! reports pinholed's wake-ups per second (voluntary context switches of all its threads: a
//! thread switches out voluntarily once per wake-up, when it goes back to sleep), its CPU, and
//! its memory per peer against the same node with no peers, measured in the same run.

use crate::bench_relay::cpu_seconds;
use crate::{build_release_binaries, packages, require_root, root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::mesh::{self, Control};
use pinhole_netlab::Lab;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Time for the node to settle after its map is in (netcheck, port mapping, first keepalives of
/// the control and relay links) before the window starts.
const SETTLE: Duration = Duration::from_secs(10);

struct Row {
    peers: usize,
    /// Seconds from pinholed's start until its status listed every peer.
    map_s: f64,
    online: usize,
    wakeups_per_s: f64,
    preempted_per_s: f64,
    /// Share of one core over the window, in percent.
    cpu_percent: f64,
    threads: usize,
    rss_kib: u64,
}

pub fn idle(args: &[&str]) -> Result<()> {
    let mut sizes = vec![100usize, 10_000];
    let mut seconds = 60u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--peers" => {
                let v = it.next().context("--peers takes N[,N…]")?;
                sizes = v
                    .split(',')
                    .map(|n| n.parse().context("--peers takes numbers"))
                    .collect::<Result<_>>()?;
            }
            "--seconds" => {
                seconds = it.next().context("--seconds takes N")?.parse()?;
            }
            _ => bail!("usage: cargo xtask bench idle [--peers 100,10000] [--seconds 60]"),
        }
    }
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    require_root("cargo xtask bench idle")?;
    packages::ensure(packages::LAB)?;
    build_release_binaries()?;
    crate::bench_control::raise_fd_limit(sizes.iter().max().copied().unwrap_or(0) as u64 + 1024)?;
    // The baseline: the same node with no peers, first.
    sizes.retain(|&n| n > 0);
    sizes.insert(0, 0);
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("\n== {n} peers ==");
        rows.push(measure(n, seconds)?);
    }
    let report = render(&rows, seconds);
    println!("\n{report}");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("idle.md"), &report)?;
    eprintln!("(also written to target/bench/idle.md)");
    Ok(())
}

fn measure(peers: usize, seconds: u64) -> Result<Row> {
    let mut lab = mesh::star(&["n1", "sim"]);
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let key_arg = key.to_string_lossy().into_owned();
    if peers > 0 {
        let tool = pinhole_netlab::pinhole::tool();
        let (count, hold) = (peers.to_string(), "86400".to_string());
        let url = mesh::control_url();
        let sims = lab.spawn(
            "sim",
            &[
                &tool.to_string_lossy(),
                "sim-nodes",
                &url,
                &key_arg,
                &count,
                &hold,
                "--endpoints-first",
            ],
        )?;
        let done = format!("registered={peers} streams={peers}");
        let started = Instant::now();
        if !Lab::wait_for(Duration::from_secs(1800), || {
            sims.log_text().contains(&done)
        }) {
            bail!("the simulated nodes did not connect:\n{}", sims.log_text());
        }
        eprintln!(
            "{peers} simulated nodes online in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let node = mesh::start_node(&mut lab, "n1", &key);
    let mut listed = 0;
    let mut online = 0;
    let complete = Lab::wait_for(Duration::from_secs(600), || {
        let status = mesh::status_json(&lab, "n1");
        let list = status["peers"].as_array().cloned().unwrap_or_default();
        listed = list.len();
        online = list.iter().filter(|p| p["online"] == true).count();
        listed >= peers && status["state"] == "connected"
    });
    if !complete {
        bail!("pinholed listed {listed} of {peers} peers");
    }
    let map_s = started.elapsed().as_secs_f64();
    eprintln!("pinholed lists {listed} peers ({online} online) after {map_s:.1} s");
    let lab_dir = lab.dir().to_string_lossy().into_owned();
    let pid = crate::bench::pinholed_pids(&lab_dir)
        .first()
        .copied()
        .context("pinholed's process")?;
    std::thread::sleep(SETTLE);
    let (cpu0, switches0) = (cpu_seconds(pid), switches(pid));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, switches1) = (cpu_seconds(pid), switches(pid));
    let window = t0.elapsed().as_secs_f64();
    if !lab.is_running(&node) {
        bail!("pinholed exited during the window");
    }
    Ok(Row {
        peers,
        map_s,
        online,
        wakeups_per_s: switches1.0.saturating_sub(switches0.0) as f64 / window,
        preempted_per_s: switches1.1.saturating_sub(switches0.1) as f64 / window,
        cpu_percent: (cpu1 - cpu0) / window * 100.0,
        threads: threads(pid),
        rss_kib: crate::bench_control::rss_kib(pid),
    })
}

/// Voluntary and involuntary context switches of all of `pid`'s threads so far.
fn switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        total.0 += field("voluntary_ctxt_switches:");
        total.1 += field("nonvoluntary_ctxt_switches:");
    }
    total
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn render(rows: &[Row], seconds: u64) -> String {
    let base = rows.iter().find(|r| r.peers == 0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pinholed idle, {seconds} s window after the map is in and {} s to settle; no traffic. \
         Wake-ups: voluntary context switches of all threads per second; memory per peer: RSS \
         above the same node with no peers (same run).\n",
        SETTLE.as_secs()
    );
    let _ = writeln!(
        s,
        "| peers | online | map in | wake-ups/s | preempted/s | CPU (% of a core) | threads | RSS | per peer |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let per_peer = match base {
            Some(b) if r.peers > 0 => format!(
                "{:.2} KiB",
                r.rss_kib.saturating_sub(b.rss_kib) as f64 / r.peers as f64
            ),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} s | {:.1} | {:.1} | {:.3} | {} | {:.1} MiB | {per_peer} |",
            r.peers,
            r.online,
            r.map_s,
            r.wakeups_per_s,
            r.preempted_per_s,
            r.cpu_percent,
            r.threads,
            r.rss_kib as f64 / 1024.0,
        );
    }
    s
}
