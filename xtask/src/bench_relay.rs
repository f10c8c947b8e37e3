//! `cargo xtask bench relay`: the packet relay, measured three ways in one run.
//!
//! 1. Through pinholed: iperf3 between two lab nodes on a direct path (the baseline), then
//!    between two nodes whose firewalls drop all UDP, so WireGuard goes through the relay
//!    embedded in pinhole-control.
//! 2. The relay alone on loopback: synthetic clients (in this process) send 1,200-byte packets
//!    to each other as fast as the relay takes them; packets per second and the relay's CPU per
//!    Gbit/s forwarded. Baseline: the same senders writing into a plain TCP sink.
//! 3. Memory: 10,000 authenticated idle clients; the server's RSS growth per client.

use crate::bench::PathRun;
use crate::bench_control::{create_authkey, raise_fd_limit, rss_kib, start_server};
use crate::bench_report::{cores_per_gbit, cpu_ns, Versions};
use crate::{build_release_binaries, packages, require_root, root};
use anyhow::{bail, Context, Result};
use pinhole_control_client::ControlClient;
use pinhole_netlab::mesh::{self, start_node, status_json, Control};
use pinhole_netlab::Lab;
use pinhole_proto::control::NodeInfo;
use pinhole_proto::key::{Key, PrivateKey};
use pinhole_proto::relay::Frame;
use pinhole_relay::test_client::RawClient;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Packet size of the synthetic clients (a typical WireGuard datagram).
const PACKET: usize = 1200;
/// Synthetic sender/receiver pairs for the rate test.
const PAIRS: usize = 2;

pub fn relay(args: &[&str]) -> Result<()> {
    let mut seconds = 5u32;
    let mut idle = 10_000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--seconds" => seconds = it.next().context("--seconds takes N")?.parse()?,
            "--idle-clients" => idle = it.next().context("--idle-clients takes N")?.parse()?,
            _ => bail!("usage: cargo xtask bench relay [--seconds N] [--idle-clients N]"),
        }
    }
    require_root("cargo xtask bench relay")?;
    packages::ensure(packages::LAB)?;
    packages::ensure(packages::BENCH)?;
    build_release_binaries()?;
    // This process holds one socket per client, the server (which inherits the limit) the other.
    raise_fd_limit(idle as u64 + 1024)?;

    eprintln!("\n== iperf3 through pinholed: direct, then relayed ==");
    let direct = through_pinholed(false, seconds)?;
    let relayed = through_pinholed(true, seconds)?;
    let wireguard_go = crate::counterparts::wireguard_go_current()
        .context("the current wireguard-go is this bench's anchor for the direct path")?;
    eprintln!("\n== iperf3 through the current wireguard-go, direct ==");
    let anchor = crate::bench::wireguard_go_tcp1(&wireguard_go, seconds)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    eprintln!("\n== the relay alone, loopback ==");
    let rate = rt.block_on(relay_rate(seconds))?;
    eprintln!("\n== {idle} idle clients ==");
    let memory = rt.block_on(idle_memory(idle))?;

    let report = render(seconds, &direct, &relayed, &anchor, &rate, &memory);
    let per_client = memory.rss_after_kib.saturating_sub(memory.rss_before_kib) as f64
        / memory.clients.max(1) as f64;
    let figures = serde_json::json!({
        "seconds_per_path": seconds,
        "direct": {"bps": direct.gbps * 1e9, "cores_per_gbit": direct.cores_per_gbit},
        "relayed": {"bps": relayed.gbps * 1e9, "cores_per_gbit": relayed.cores_per_gbit},
        "wireguard_go_direct": {"bps": anchor.gbps * 1e9, "cores_per_gbit": anchor.cores_per_gbit},
        "relay_alone": {
            "forwarded_bps": rate.forwarded_gbps * 1e9,
            "forwarded_pps": rate.forwarded_pps,
            "offered_pps": rate.sent_pps,
            "tcp_sink_bps": rate.baseline_gbps * 1e9,
            "cores_per_gbit": rate.cpu_per_gbit,
            "queue_full_drops": rate.drops,
        },
        "idle_clients": {
            "clients": memory.clients,
            "kib_per_client": per_client,
            "connect_s": memory.connect_s,
        },
    });
    let mut versions = Versions::new();
    versions.add_from("iperf3", &["--version"]);
    versions.add("wireguard-go (current)", &wireguard_go.version);
    crate::bench_report::write("relay", &report, figures, &versions)?;
    Ok(())
}

/// iperf3 TCP (one stream) from n1 to n2 through pinholed.
fn through_pinholed(block_udp: bool, seconds: u32) -> Result<PathRun> {
    let mut lab = mesh::star(&["n1", "n2"]);
    if block_udp {
        mesh::block_udp(&lab, "n1");
        mesh::block_udp(&lab, "n2");
    }
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let _n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);
    let dst = control.address_of(&lab, "n2");
    // The path: direct at once, or relayed once netcheck gave up on UDP and chose a home.
    let want = if block_udp { "relayed" } else { "direct" };
    let ready = Lab::wait_for(Duration::from_secs(30), || {
        let _ = lab.run(
            "n1",
            &["ping", "-c", "1", "-W", "1", &dst],
            Duration::from_secs(3),
        );
        status_json(&lab, "n1")["peers"]
            .as_array()
            .and_then(|p| p.first())
            .is_some_and(|p| p["connection"] == want)
    });
    if !ready {
        bail!(
            "the path never became {want}: {:#}",
            status_json(&lab, "n1")
        );
    }
    let server = lab.spawn("n2", &["iperf3", "-s", "--forceflush", "-B", &dst])?;
    if !Lab::wait_for(Duration::from_secs(5), || {
        server.log_text().contains("Server listening")
    }) {
        bail!("iperf3 server did not start");
    }
    let secs = seconds.to_string();
    let mut argv = vec!["iperf3", "-J", "-c", &dst, "-t", &secs];
    argv.push("-Z");
    let lab_dir = lab.dir().to_string_lossy().into_owned();
    if crate::bench::pinholed_pids(&lab_dir).len() != 2 {
        bail!("expected the lab's two pinholed processes in /proc");
    }
    let cpu0 = crate::bench::pinholed_cpu_ns(&lab_dir);
    let started = std::time::Instant::now();
    let out = lab.run("n1", &argv, Duration::from_secs(u64::from(seconds) + 30))?;
    let cpu = crate::bench::pinholed_cpu_ns(&lab_dir).saturating_sub(cpu0);
    let elapsed = started.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 failed: {}", v["error"]))?;
    let gbps = bps / 1e9;
    let cores_per_gbit = crate::bench_report::cores_per_gbit(cpu, elapsed, bps).unwrap_or(0.0);
    eprintln!("{want}: {gbps:.2} Gbit/s, pinholed {cores_per_gbit:.2} cores per Gbit/s");
    Ok(PathRun {
        gbps,
        cores_per_gbit,
    })
}

/// A synthetic relay client: upgraded, authenticated; its socket and public key.
async fn connect(addr: SocketAddr, private: &PrivateKey) -> Result<(TcpStream, Key)> {
    let c = RawClient::connect(addr, private).await?;
    Ok((c.io, private.public_key()))
}

/// Idle clients per loopback source address: under the relay's limit on connection attempts
/// per address (60 a minute), as many clients come from many hosts.
const CLIENTS_PER_ADDRESS: usize = 50;

/// The loopback address idle client `i` connects from: 127.1.x.y, a new one every
/// [`CLIENTS_PER_ADDRESS`] clients.
fn idle_source(i: usize) -> std::net::IpAddr {
    let k = i / CLIENTS_PER_ADDRESS;
    std::net::Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8).into()
}

/// A fresh control server with `n` registered nodes; the server, its address and the keys.
async fn server_with_nodes(
    name: &str,
    n: usize,
) -> Result<(
    crate::bench_control::ServerProc,
    SocketAddr,
    Vec<PrivateKey>,
)> {
    let dir = root().join(format!("target/bench/relay-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("control.db").display());
    let authkey = create_authkey(&db)?;
    let (server, addr) = start_server(&dir, &db)?;
    let client = ControlClient::new(&format!("http://{addr}"), None)?;
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        let (client, authkey) = (client.clone(), authkey.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let private = PrivateKey::from_bytes(rand::random());
            let info = NodeInfo {
                disco_key: Key(rand::random()),
                hostname: format!("r{i}"),
                os: "linux".into(),
                tags: Vec::new(),
                advertised_routes: Vec::new(),
            };
            client
                .register(&authkey, &private, &info)
                .await
                .map(|_| private)
        }));
    }
    let mut keys = Vec::with_capacity(n);
    for t in tasks {
        keys.push(t.await?.context("registering a node")?);
    }
    Ok((server, addr, keys))
}

struct Rate {
    baseline_gbps: f64,
    sent_pps: f64,
    forwarded_pps: f64,
    forwarded_gbps: f64,
    cpu_per_gbit: f64,
    drops: u64,
}

/// Senders write packet frames as fast as they can for `seconds`; receivers drain.
async fn blast(senders: Vec<(TcpStream, Option<Key>)>, seconds: u32) -> Result<u64> {
    let stop = Instant::now() + Duration::from_secs(u64::from(seconds));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (mut io, dst) in senders {
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let payload = vec![0x5a; PACKET];
            let one = match dst {
                Some(dst) => Frame::packet_bytes(true, &dst, &payload),
                None => Frame::packet_bytes(true, &Key([0; 32]), &payload),
            };
            let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 32).collect();
            while Instant::now() < stop {
                if io.write_all(&batch).await.is_err() {
                    break;
                }
                sent.fetch_add(32, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(sent.load(Ordering::Relaxed))
}

async fn metric(addr: SocketAddr, name: &str) -> Result<u64> {
    let mut io = TcpStream::connect(addr).await?;
    io.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    io.read_to_string(&mut text).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("{name} not in /metrics"))
}

async fn relay_rate(seconds: u32) -> Result<Rate> {
    // Baseline: the same senders into a TCP sink on loopback (no relay in between).
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    let sink_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = sink.accept().await else {
                return;
            };
            let r = r2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    r.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let mut senders = Vec::new();
    for _ in 0..PAIRS {
        senders.push((TcpStream::connect(sink_addr).await?, None));
    }
    let t = Instant::now();
    blast(senders, seconds).await?;
    let baseline_gbps =
        received.load(Ordering::Relaxed) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9;
    sink_task.abort();
    eprintln!("baseline TCP sink: {baseline_gbps:.2} Gbit/s");

    let (server, addr, keys) = server_with_nodes("rate", PAIRS * 2).await?;
    let pid = server.child.id();
    let mut senders = Vec::new();
    let mut drains = Vec::new();
    for pair in keys.chunks(2) {
        let (a, _) = connect(addr, &pair[0]).await?;
        let (mut rx, b_public) = connect(addr, &pair[1]).await?;
        senders.push((a, Some(b_public)));
        drains.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }));
    }
    let fwd0 = metric(server.metrics, "pinhole_relay_forwarded_packets_total ").await?;
    let cpu0 = cpu_ns(pid);
    let t = Instant::now();
    let sent = blast(senders, seconds).await?;
    let wall = t.elapsed();
    let elapsed = wall.as_secs_f64();
    let cpu = cpu_ns(pid).saturating_sub(cpu0);
    let fwd = metric(server.metrics, "pinhole_relay_forwarded_packets_total ").await? - fwd0;
    let drops = metric(
        server.metrics,
        "pinhole_relay_dropped_packets_total{reason=\"queue_full\"} ",
    )
    .await?;
    for d in drains {
        d.abort();
    }
    let forwarded_gbps = fwd as f64 * PACKET as f64 * 8.0 / elapsed / 1e9;
    let r = Rate {
        baseline_gbps,
        sent_pps: sent as f64 / elapsed,
        forwarded_pps: fwd as f64 / elapsed,
        forwarded_gbps,
        cpu_per_gbit: cores_per_gbit(cpu, wall, forwarded_gbps * 1e9).unwrap_or(0.0),
        drops,
    };
    eprintln!(
        "relay: {:.0} packets/s forwarded ({:.2} Gbit/s), {:.2} CPU per Gbit/s",
        r.forwarded_pps, r.forwarded_gbps, r.cpu_per_gbit
    );
    Ok(r)
}

struct Memory {
    clients: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    connect_s: f64,
}

async fn idle_memory(n: usize) -> Result<Memory> {
    let (server, addr, keys) = server_with_nodes("idle", n).await?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_kib = rss_kib(pid);
    let t = Instant::now();
    let sem = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(n);
    for (i, k) in keys.into_iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            RawClient::connect_from(addr, &k, Some(idle_source(i)))
                .await
                .map(|c| c.io)
        }));
    }
    let mut held = Vec::with_capacity(n);
    for t in tasks {
        held.push(t.await??);
    }
    let connect_s = t.elapsed().as_secs_f64();
    let clients = metric(server.metrics, "pinhole_relay_clients ").await? as usize;
    if clients != n {
        bail!("{clients} of {n} clients connected");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = rss_kib(pid);
    drop(held);
    eprintln!("{n} idle clients: RSS {rss_before_kib} → {rss_after_kib} KiB in {connect_s:.1} s");
    Ok(Memory {
        clients: n,
        rss_before_kib,
        rss_after_kib,
        connect_s,
    })
}

fn render(
    seconds: u32,
    direct: &PathRun,
    relayed: &PathRun,
    anchor: &PathRun,
    rate: &Rate,
    m: &Memory,
) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "pinhole relay, one run, {cores} cores shared by every process; iperf3 {seconds} s per path"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| measure | value | baseline | ratio |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    // A row comparing a figure with its baseline, and their ratio.
    let mut versus = |measure: &str, value: f64, baseline: f64, unit: &str| {
        let _ = writeln!(
            s,
            "| {measure} | {value:.2} {unit} | {baseline:.2} {unit} | {:.2}× |",
            value / baseline.max(1e-9)
        );
    };
    versus(
        "iperf3 TCP through pinholed, relayed (UDP dropped) vs direct",
        relayed.gbps,
        direct.gbps,
        "Gbit/s",
    );
    versus(
        "pinholed CPU per Gbit/s (both nodes), relayed vs direct",
        relayed.cores_per_gbit,
        direct.cores_per_gbit,
        "cores",
    );
    versus(
        "iperf3 TCP, pinholed relayed vs the current wireguard-go direct (same two-host lab shape)",
        relayed.gbps,
        anchor.gbps,
        "Gbit/s",
    );
    versus(
        "iperf3 TCP, pinholed direct vs the current wireguard-go direct",
        direct.gbps,
        anchor.gbps,
        "Gbit/s",
    );
    let _ = writeln!(
        s,
        "| relay alone: {PAIRS} senders of {PACKET}-byte packets, forwarded vs the same senders into a TCP sink | {:.2} Gbit/s ({:.0} packets/s) | {:.2} Gbit/s | {:.2}× |",
        rate.forwarded_gbps,
        rate.forwarded_pps,
        rate.baseline_gbps,
        rate.forwarded_gbps / rate.baseline_gbps.max(1e-9)
    );
    let _ = writeln!(
        s,
        "| relay CPU per Gbit/s forwarded (nanosecond CPU time of its threads) | {:.2} cores | | |",
        rate.cpu_per_gbit
    );
    let per = (m.rss_after_kib.saturating_sub(m.rss_before_kib)) as f64 / m.clients as f64;
    let _ = writeln!(
        s,
        "| server memory per idle client ({} clients) | {per:.1} KiB | RSS {:.1} → {:.1} MiB | |",
        m.clients,
        m.rss_before_kib as f64 / 1024.0,
        m.rss_after_kib as f64 / 1024.0
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "- relay alone: senders offered {:.0} packets/s; {} dropped because a receiver's queue was full",
        rate.sent_pps, rate.drops
    );
    let _ = writeln!(
        s,
        "- {} clients connected and authenticated (key proof + control's authorisation) in {:.1} s",
        m.clients, m.connect_s
    );
    let _ = writeln!(
        s,
        "\nTargets: relayed ≥ 0.5× direct; ≤ 16 KiB per idle client. The relay runs inside pinhole-control (the embedded default)."
    );
    s
}
