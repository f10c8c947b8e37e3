//! `cargo xtask bench idle`: what an idle node costs. pinholed runs in a lab namespace with N
//! peers (simulated nodes registered with a local pinhole-control, holding their map streams,
//! so they are online with an endpoint each) and no traffic. Over the measuring window it
//! reports pinholed's wake-ups per second (voluntary context switches of all its threads: a
//! thread switches out voluntarily once per wake-up, when it goes back to sleep), its CPU
//! (nanosecond CPU time of its threads), and its memory per peer against the same node with no
//! peers, measured in the same run. A second window measures the same with a local API client
//! subscribed to the status, as the open app is.

use crate::bench_report::{self, cpu_ns, Versions};
use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::mesh::{self, Control};
use pinhole_netlab::Lab;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Time for the node to settle after its map is in (netcheck, port mapping, first keepalives of
/// the control and relay links) before the window starts.
const SETTLE: Duration = Duration::from_secs(10);

/// What pinholed did over one measuring window.
struct Window {
    wakeups_per_s: f64,
    preempted_per_s: f64,
    /// Share of one core over the window, in percent.
    cpu_percent: f64,
    /// Status snapshots the subscribed client received in the window.
    snapshots: u64,
}

struct Row {
    peers: usize,
    /// Seconds from pinholed's start until its status listed every peer.
    map_s: f64,
    online: usize,
    /// Nobody connected to the local API.
    alone: Window,
    /// A local API client subscribed to the status (the app open).
    subscribed: Window,
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
    let window = |w: &Window| {
        serde_json::json!({
            "wakeups_per_s": w.wakeups_per_s,
            "preempted_per_s": w.preempted_per_s,
            "cpu_percent_of_core": w.cpu_percent,
            "status_snapshots": w.snapshots,
        })
    };
    let figures = serde_json::json!({
        "window_s": seconds,
        "settle_s": SETTLE.as_secs(),
        "rows": rows.iter().map(|r| serde_json::json!({
            "peers": r.peers,
            "online": r.online,
            "map_in_s": r.map_s,
            "alone": window(&r.alone),
            "subscribed": window(&r.subscribed),
            "threads": r.threads,
            "rss_kib": r.rss_kib,
        })).collect::<Vec<_>>(),
    });
    bench_report::write("idle", &report, figures, &Versions::new())?;
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
    let alone = window(pid, seconds, || Ok(0))?;
    let socket = lab.dir().join("n1.sock");
    let subscribed = window(pid, seconds, || subscribe_for(&socket, seconds))?;
    if !lab.is_running(&node) {
        bail!("pinholed exited during the windows");
    }
    if subscribed.snapshots == 0 {
        bail!("the subscribed client received no status in {seconds} s");
    }
    Ok(Row {
        peers,
        map_s,
        online,
        alone,
        subscribed,
        threads: threads(pid),
        rss_kib: crate::bench_control::rss_kib(pid),
    })
}

/// Measures `pid` while `during` runs (it returns the status snapshots it received), or for
/// `seconds` of sleep when it returns at once.
fn window(pid: u32, seconds: u64, during: impl FnOnce() -> Result<u64>) -> Result<Window> {
    let (cpu0, switches0) = (cpu_ns(pid), switches(pid));
    let t0 = Instant::now();
    let snapshots = during()?;
    if let Some(rest) = Duration::from_secs(seconds).checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    let (cpu1, switches1) = (cpu_ns(pid), switches(pid));
    let wall = t0.elapsed();
    let per_s = |n: u64| n as f64 / wall.as_secs_f64();
    Ok(Window {
        wakeups_per_s: per_s(switches1.0.saturating_sub(switches0.0)),
        preempted_per_s: per_s(switches1.1.saturating_sub(switches0.1)),
        cpu_percent: bench_report::percent_of_core(cpu1.saturating_sub(cpu0), wall),
        snapshots,
    })
}

/// Holds a status subscription on pinholed's local API at `socket` for `seconds`, reading
/// every snapshot as the app does; returns how many arrived.
fn subscribe_for(socket: &std::path::Path, seconds: u64) -> Result<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut api = pinhole_client::local_api::LocalApi::connect(socket)
            .await
            .context("connecting to pinholed's local API")?;
        api.request(pinhole_proto::ipc::Op::Subscribe)
            .await
            .context("subscribing")?;
        let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut snapshots = 0;
        while let Ok(next) = tokio::time::timeout_at(until, api.next_status()).await {
            next.context("reading the subscription")?;
            snapshots += 1;
        }
        Ok(snapshots)
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
        "pinholed idle, two {seconds} s windows after the map is in and {} s to settle; no \
         traffic. Alone: nobody on the local API; subscribed: one client holding a status \
         subscription (the app open). Wake-ups: voluntary context switches of all threads per \
         second; CPU: nanosecond CPU time of all threads; memory per peer: RSS above the same \
         node with no peers (same run).\n",
        SETTLE.as_secs()
    );
    let _ = writeln!(
        s,
        "| peers | online | map in | wake-ups/s alone / subscribed | preempted/s | CPU alone (% of a core) | CPU subscribed | snapshots | threads | RSS | per peer |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
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
            "| {} | {} | {:.1} s | {:.1} / {:.1} | {:.1} / {:.1} | {:.4} | {:.4} | {} | {} | {:.1} MiB | {per_peer} |",
            r.peers,
            r.online,
            r.map_s,
            r.alone.wakeups_per_s,
            r.subscribed.wakeups_per_s,
            r.alone.preempted_per_s,
            r.subscribed.preempted_per_s,
            r.alone.cpu_percent,
            r.subscribed.cpu_percent,
            r.subscribed.snapshots,
            r.threads,
            r.rss_kib as f64 / 1024.0,
        );
    }
    s
}
