//! `cargo xtask bench control`: one pinhole-control process on loopback, thousands of simulated
//! nodes (in-process clients, no TUN) registered and holding their map streams. Measures how long
//! one node's endpoint update takes to reach every peer, and the server's memory per connected
//! node. The update request's own round trip, measured in the same run, is the baseline.

use crate::{cmd, root};
use anyhow::{bail, Context, Result};
use pinhole_control_client::ControlClient;
use pinhole_proto::control::{NodeInfo, NodeUpdate};
use pinhole_proto::key::{Key, PrivateKey};
use rand::Rng;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Streams opening at once (each reads a full map of every node first).
const CONNECT_CONCURRENCY: usize = 64;
/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 16;
/// The address every probe update publishes; its port tells probes apart.
const MARKER: &[u8] = b"\"198.51.100.7:";

struct Outcome {
    nodes: usize,
    register_s: f64,
    connect_s: f64,
    rss_idle_kib: u64,
    rss_connected_kib: u64,
    update_rtt: Vec<f64>,
    all_peers: Vec<f64>,
    each_peer: Vec<f64>,
    reconnects: u64,
    missing: usize,
}

pub fn control(args: &[&str]) -> Result<()> {
    let mut sizes = vec![1_000usize, 10_000];
    let mut probes = 20usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--nodes" => {
                let v = it.next().context("--nodes takes N[,N…]")?;
                sizes = v
                    .split(',')
                    .map(|n| n.parse().context("--nodes takes numbers"))
                    .collect::<Result<_>>()?;
            }
            "--probes" => {
                probes = it.next().context("--probes takes N")?.parse()?;
            }
            _ => bail!("usage: cargo xtask bench control [--nodes 1000,10000] [--probes 20]"),
        }
    }
    cmd("cargo", &["build", "--release", "-p", "pinhole-control"])?;
    // Each process holds one socket per node (the server its side, this process the clients').
    raise_fd_limit(sizes.iter().max().copied().unwrap_or(0) as u64 + 1024)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    for &n in &sizes {
        eprintln!("\n== {n} simulated nodes ==");
        outcomes.push(rt.block_on(run(n, probes))?);
    }
    let report = report(&outcomes, probes);
    let figures = serde_json::json!({
        "probes": probes,
        "rows": outcomes.iter().map(|o| serde_json::json!({
            "nodes": o.nodes,
            "register_s": o.register_s,
            "connect_s": o.connect_s,
            "rss_idle_kib": o.rss_idle_kib,
            "rss_connected_kib": o.rss_connected_kib,
            "update_rtt_s": o.update_rtt,
            "all_peers_s": o.all_peers,
            "each_peer_s": o.each_peer,
            "reconnects": o.reconnects,
            "missing": o.missing,
        })).collect::<Vec<_>>(),
    });
    crate::bench_report::write(
        "control",
        &report,
        figures,
        &crate::bench_report::Versions::new(),
    )?;
    Ok(())
}

pub(crate) fn raise_fd_limit(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit failed");
        }
        if lim.rlim_cur < want {
            if lim.rlim_max < want {
                bail!(
                    "the open-file hard limit is {} and {want} are needed: raise it (ulimit -Hn) or bench fewer nodes",
                    lim.rlim_max
                );
            }
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                bail!("cannot raise the open-file limit to {want}");
            }
        }
    }
    Ok(())
}

pub(crate) struct ServerProc {
    pub(crate) child: Child,
    /// Where the embedded relay's metrics are served.
    pub(crate) metrics: SocketAddr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control_bin() -> PathBuf {
    root().join("target/release/pinhole-control")
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn start_server(dir: &Path, db: &str) -> Result<(ServerProc, SocketAddr)> {
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut command = Command::new(control_bin());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child. The server dies
        // with this process even if this process is killed (no orphan skews the next run).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let child = command
        .args(["--db", db, "--log", "warn", "serve", "--listen"])
        .arg(addr.to_string())
        .args(["--insecure-http", "--node-expiry", "never", "--no-stun"])
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting pinhole-control")?;
    let server = ServerProc { child, metrics };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!(
                "pinhole-control did not start; see {}",
                dir.join("server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((server, addr))
}

/// A reusable auth key for the database at `db`, made with the operator command.
pub(crate) fn create_authkey(db: &str) -> Result<String> {
    control_cli(
        db,
        &["authkey", "create", "--reusable", "--expiry", "1d"],
        None,
    )
}

/// Runs `pinhole-control --db DB ARGS…` (with `stdin` written to it, if any); its stdout,
/// trimmed, or its stderr as the error.
pub(crate) fn control_cli(db: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(control_bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "pinhole-control {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn random_key() -> Key {
    Key(rand::thread_rng().gen())
}

async fn run(n: usize, probes: usize) -> Result<Outcome> {
    let dir = root().join(format!("target/bench/control-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("control.db").display());
    let authkey = create_authkey(&db)?;
    let (server, addr) = start_server(&dir, &db)?;
    let pid = server.child.id();
    let client = ControlClient::new(&format!("http://{addr}"), None)?;

    // Register every node.
    let started = Instant::now();
    let tokens = register_all(&client, &authkey, n).await?;
    let register_s = started.elapsed().as_secs_f64();
    eprintln!("registered {n} nodes in {register_s:.1} s");
    let rss_idle_kib = rss_kib(pid);

    // Every node opens its map stream and keeps reading it.
    let started = Instant::now();
    let connected = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut readers = Vec::with_capacity(n);
    for token in tokens.clone() {
        let (client, sem, connected, lines, reconnects, seen_tx) = (
            client.clone(),
            sem.clone(),
            connected.clone(),
            lines.clone(),
            reconnects.clone(),
            seen_tx.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut first = true;
            loop {
                let permit = sem.acquire().await;
                let mut stream = match client.map(&token).await {
                    Ok(s) => s,
                    Err(_) => {
                        drop(permit);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                // The full map.
                if !matches!(stream.next_raw().await, Ok(Some(_))) {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                drop(permit);
                if first {
                    connected.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                while let Ok(Some(line)) = stream.next_raw().await {
                    lines.fetch_add(1, Ordering::Relaxed);
                    if let Some(seq) = probe_seq(&line) {
                        let _ = seen_tx.send((seq, Instant::now()));
                    }
                }
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    drop(seen_tx);
    let deadline = Instant::now() + Duration::from_secs(900);
    while connected.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} streams connected",
                connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{n} map streams open in {connect_s:.1} s; waiting for the presence updates to settle"
    );
    // Settled: no line for a second.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = lines.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let rss_connected_kib = rss_kib(pid);

    // Probes: one node publishes a new endpoint; every other node must see it.
    let seen = probe_updates(&client, &tokens, probes, &mut seen_rx).await?;
    for r in readers {
        r.abort();
    }
    drop(server);
    Ok(Outcome {
        nodes: n,
        register_s,
        connect_s,
        rss_idle_kib,
        rss_connected_kib,
        update_rtt: seen.update_rtt,
        all_peers: seen.all_peers,
        each_peer: seen.each_peer,
        reconnects: reconnects.load(Ordering::Relaxed),
        missing: seen.missing,
    })
}

/// Registers `n` simulated nodes (a few at a time); their node tokens.
async fn register_all(client: &ControlClient, authkey: &str, n: usize) -> Result<Vec<String>> {
    let sem = Arc::new(Semaphore::new(REGISTER_CONCURRENCY));
    let mut regs = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let client = client.clone();
        let authkey = authkey.to_string();
        regs.push(tokio::spawn(async move {
            let _permit = permit;
            let info = NodeInfo {
                disco_key: random_key(),
                hostname: format!("sim-{i}"),
                os: "linux".into(),
                tags: Vec::new(),
                advertised_routes: Vec::new(),
            };
            let private = PrivateKey::from_bytes(rand::random());
            client.register(&authkey, &private, &info).await
        }));
    }
    let mut tokens = Vec::with_capacity(n);
    for r in regs {
        tokens.push(r.await?.context("registering a simulated node")?.node_token);
    }
    Ok(tokens)
}

/// What the probes saw: each update's round trip, when all peers and each peer saw it, and
/// how many sightings never came.
struct Probed {
    update_rtt: Vec<f64>,
    all_peers: Vec<f64>,
    each_peer: Vec<f64>,
    missing: usize,
}

/// `probes` times, one random node publishes a new endpoint; every other node's stream must
/// show it (`seen_rx` hears each sighting).
async fn probe_updates(
    client: &ControlClient,
    tokens: &[String],
    probes: usize,
    seen_rx: &mut mpsc::UnboundedReceiver<(u32, Instant)>,
) -> Result<Probed> {
    let n = tokens.len();
    let mut update_rtt = Vec::new();
    let mut all_peers = Vec::new();
    let mut each_peer = Vec::new();
    let mut missing = 0;
    let mut early: HashMap<u32, Vec<Instant>> = HashMap::new();
    for p in 0..probes {
        let seq = 1000 + p as u32;
        let who = rand::thread_rng().gen_range(0..n);
        let upd = NodeUpdate {
            endpoints: Some(vec![format!("198.51.100.7:{seq}").parse()?]),
            ..Default::default()
        };
        let t0 = Instant::now();
        client.update(&tokens[who], &upd).await?;
        update_rtt.push(t0.elapsed().as_secs_f64());
        let mut got = early.remove(&seq).unwrap_or_default();
        let wait_until = tokio::time::Instant::now() + Duration::from_secs(10);
        while got.len() < n - 1 {
            match tokio::time::timeout_at(wait_until, seen_rx.recv()).await {
                Ok(Some((s, at))) if s == seq => got.push(at),
                Ok(Some((s, at))) => early.entry(s).or_default().push(at),
                _ => break,
            }
        }
        missing += (n - 1).saturating_sub(got.len());
        let mut lat: Vec<f64> = got
            .iter()
            .map(|at| at.duration_since(t0).as_secs_f64())
            .collect();
        lat.sort_by(f64::total_cmp);
        if let Some(max) = lat.last() {
            all_peers.push(*max);
        }
        each_peer.extend(lat);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Probed {
        update_rtt,
        all_peers,
        each_peer,
        missing,
    })
}

/// The probe number in a `peer_changed` line that carries the marker endpoint.
fn probe_seq(line: &[u8]) -> Option<u32> {
    if !line.starts_with(br#"{"type":"peer_changed""#) {
        return None;
    }
    let at = line.windows(MARKER.len()).position(|w| w == MARKER)? + MARKER.len();
    let digits: Vec<u8> = line[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[idx.min(s.len() - 1)]
}

fn report(outcomes: &[Outcome], probes: usize) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "pinhole-control fan-out, {probes} endpoint updates per size, one server process on loopback \
         (SQLite), simulated nodes in one client process, 2 cores shared by both\n"
    );
    let _ = writeln!(
        r,
        "| nodes | update RTT p50 (baseline) | every peer has it p50 | p99 | one peer p50 | p99 | p50 / baseline | server RSS | per node | per stream | reconnects | missed |"
    );
    let _ = writeln!(
        r,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for o in outcomes {
        let base = pct(&o.update_rtt, 50.0);
        let all50 = pct(&o.all_peers, 50.0);
        let _ = writeln!(
            r,
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1}× | {:.1} MiB | {:.1} KiB | {:.1} KiB | {} | {} |",
            o.nodes,
            base * 1e3,
            all50 * 1e3,
            pct(&o.all_peers, 99.0) * 1e3,
            pct(&o.each_peer, 50.0) * 1e3,
            pct(&o.each_peer, 99.0) * 1e3,
            all50 / base,
            o.rss_connected_kib as f64 / 1024.0,
            o.rss_connected_kib as f64 / o.nodes as f64,
            o.rss_connected_kib.saturating_sub(o.rss_idle_kib) as f64 / o.nodes as f64,
            o.reconnects,
            o.missing,
        );
    }
    let _ = writeln!(r);
    for o in outcomes {
        let _ = writeln!(
            r,
            "- {} nodes: registered in {:.1} s, all streams open (each read a full map) in {:.1} s",
            o.nodes, o.register_s, o.connect_s
        );
    }
    let _ = writeln!(
        r,
        "\nTargets: 10,000 nodes connected, every-peer p99 under 1 s, under 50 KiB of server memory per node. \
         \"per node\" is the whole server RSS divided by the nodes; \"per stream\" is what the open \
         streams added to the RSS measured after registration."
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_probe_numbers_only_in_peer_changes() {
        let line = br#"{"type":"peer_changed","peer":{"endpoints":["198.51.100.7:1003"]}}"#;
        assert_eq!(probe_seq(line), Some(1003));
        let own = br#"{"type":"self_changed","node":{"endpoints":["198.51.100.7:1003"]}}"#;
        assert_eq!(probe_seq(own), None);
        assert_eq!(pct(&[1.0, 2.0, 3.0], 50.0), 2.0);
    }
}
