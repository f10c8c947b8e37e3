//! `cargo xtask bench throughput`: iperf3 between two namespaces through raw veth (the limit),
//! pinholed, the current wireguard-go (Debian 13's), Debian 12's older wireguard-go and
//! boringtun-cli, all in one run on the same topology; every tunnel's CPU per Gbit/s counted
//! the same way (both ends' processes, nanosecond CPU time). Then signed-in nodes
//! ([`crate::bench_routes`]): the direct peer, through a subnet router, through an exit node.

use crate::bench_report::{self, Versions};
use crate::bench_routes::Routed;
use crate::counterparts::{self, Counterpart};
use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::pinhole::{config, node_a, node_b, start_pinholed, two_hosts};
use pinhole_netlab::stock::{self, Implementation};
use pinhole_netlab::Lab;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Raw,
    Pinholed,
    /// pinholed enforcing a 1,000-rule policy at both ends ([`crate::bench_policy`]).
    PinholedPolicy,
    /// Another pinholed build (PINHOLE_BENCH_BASELINE=path), measured in the same run.
    Baseline,
    /// The current wireguard-go: the anchor.
    WireguardGo,
    /// Debian 12's 2022 wireguard-go (no offloads): an extra row, not the anchor.
    WireguardGo2022,
    BoringtunCli,
    /// Signed-in nodes (control in the lab): a → b directly, then through b as a subnet
    /// router and as an exit node.
    Routed(crate::bench_routes::Routed),
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Raw => "raw veth (limit)",
            Setup::Pinholed => "pinholed",
            Setup::PinholedPolicy => "pinholed, 1,000-rule policy",
            Setup::Baseline => "pinholed (baseline build)",
            Setup::WireguardGo => "wireguard-go (current)",
            Setup::WireguardGo2022 => "wireguard-go (Debian 12, 2022)",
            Setup::BoringtunCli => "boringtun-cli",
            Setup::Routed(Routed::Peer) => "pinholed signed in, direct peer",
            Setup::Routed(Routed::SubnetRouter) => "through a subnet router",
            Setup::Routed(Routed::ExitNode) => "through an exit node",
        }
    }

    /// The name `--only` takes.
    fn key(self) -> &'static str {
        match self {
            Setup::Raw => "raw",
            Setup::Pinholed => "pinholed",
            Setup::PinholedPolicy => "policy",
            Setup::Baseline => "baseline",
            Setup::WireguardGo => "wireguard-go",
            Setup::WireguardGo2022 => "wireguard-go-2022",
            Setup::BoringtunCli => "boringtun-cli",
            Setup::Routed(Routed::Peer) => "signed-in",
            Setup::Routed(Routed::SubnetRouter) => "subnet-router",
            Setup::Routed(Routed::ExitNode) => "exit-node",
        }
    }
}

const SETUPS: [Setup; 10] = [
    Setup::Raw,
    Setup::Pinholed,
    Setup::PinholedPolicy,
    Setup::Baseline,
    Setup::WireguardGo,
    Setup::WireguardGo2022,
    Setup::BoringtunCli,
    Setup::Routed(Routed::Peer),
    Setup::Routed(Routed::SubnetRouter),
    Setup::Routed(Routed::ExitNode),
];

struct Row {
    setup: Setup,
    /// CPU both ends' tunnel processes used during the 1-stream TCP test, as cores busy per
    /// Gbit/s it carried.
    cores_per_gbit: Option<f64>,
    tcp1: Option<f64>,
    tcp4: Option<f64>,
    udp: Option<f64>,
    udp_loss: Option<f64>,
}

/// What each setup runs, found before the first measurement so that a missing counterpart
/// stops the run at once (the anchor) or leaves its row out, loudly (the others).
struct Programs {
    wireguard_go: Counterpart,
    wireguard_go_2022: Option<Counterpart>,
    boringtun: Option<Counterpart>,
    baseline: Option<std::ffi::OsString>,
}

pub fn throughput(args: &[&str]) -> Result<()> {
    const USAGE: &str = "usage: cargo xtask bench throughput [--seconds N] [--only raw,pinholed,policy,baseline,wireguard-go,wireguard-go-2022,boringtun-cli,signed-in,subnet-router,exit-node]";
    let mut seconds: u32 = 5;
    let mut only: Option<Vec<Setup>> = None;
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        match *flag {
            "--seconds" => seconds = value.parse().context("--seconds takes a number")?,
            "--only" => {
                let mut picked = Vec::new();
                for name in value.split(',') {
                    match SETUPS.iter().find(|s| s.key() == name) {
                        Some(s) => picked.push(*s),
                        None => bail!("--only: no setup named {name:?}\n{USAGE}"),
                    }
                }
                only = Some(picked);
            }
            _ => bail!("{USAGE}"),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        bail!("{USAGE}");
    }
    require_root("cargo xtask bench")?;
    packages::ensure(packages::LAB)?;
    packages::ensure(packages::BENCH)?;
    build_release_binaries()?;
    let programs = Programs {
        wireguard_go: counterparts::wireguard_go_current()
            .context("the current wireguard-go is the anchor of this bench")?,
        wireguard_go_2022: counterparts::wireguard_go_installed(),
        boringtun: counterparts::boringtun_cli()
            .map_err(|e| eprintln!("!!! {e:#}: its row is left out !!!"))
            .ok(),
        baseline: std::env::var_os("PINHOLE_BENCH_BASELINE"),
    };
    let mut versions = Versions::new();
    versions.add_from("iperf3", &["--version"]);
    versions.add("wireguard-go (current)", &programs.wireguard_go.version);
    if let Some(c) = &programs.wireguard_go_2022 {
        versions.add("wireguard-go (Debian 12)", &c.version);
    }
    if let Some(c) = &programs.boringtun {
        versions.add("boringtun-cli", &c.version);
    }
    if let Some(b) = &programs.baseline {
        versions.add("pinholed (baseline build)", &b.to_string_lossy());
    }

    let mut rows = Vec::new();
    for setup in SETUPS {
        if only.as_ref().is_some_and(|o| !o.contains(&setup)) {
            continue;
        }
        let imp = match setup {
            Setup::WireguardGo => Some(&programs.wireguard_go),
            Setup::WireguardGo2022 => programs.wireguard_go_2022.as_ref(),
            Setup::BoringtunCli => programs.boringtun.as_ref(),
            _ => None,
        };
        if matches!(setup, Setup::WireguardGo2022 | Setup::BoringtunCli) && imp.is_none() {
            eprintln!("!!! {} unavailable: its row is left out !!!", setup.label());
            continue;
        }
        let ours = std::env::var_os("PINHOLED_BIN");
        if setup == Setup::Baseline {
            let Some(b) = &programs.baseline else {
                continue;
            };
            std::env::set_var("PINHOLED_BIN", b);
        }
        eprintln!("\n== {} ==", setup.label());
        let row = measure(setup, imp, seconds, true);
        if let Some(ours) = ours {
            std::env::set_var("PINHOLED_BIN", ours);
        }
        rows.push(row?);
    }
    let (table, figures) = render(&rows, seconds);
    bench_report::write("throughput", &table, figures, &versions)?;
    Ok(())
}

/// One path through a tunnel: what iperf3 carried and what both ends' processes spent on it.
pub(crate) struct PathRun {
    pub(crate) gbps: f64,
    /// Both ends' CPU, as cores busy per Gbit/s carried.
    pub(crate) cores_per_gbit: f64,
}

/// iperf3 TCP, one stream, through `wireguard_go` on the throughput bench's two hosts: the
/// anchor other benches put beside their own paths.
pub(crate) fn wireguard_go_tcp1(wireguard_go: &Counterpart, seconds: u32) -> Result<PathRun> {
    let row = measure(Setup::WireguardGo, Some(wireguard_go), seconds, false)?;
    let bps = row.tcp1.context("iperf3 through wireguard-go failed")?;
    Ok(PathRun {
        gbps: bps / 1e9,
        cores_per_gbit: row.cores_per_gbit.unwrap_or(0.0),
    })
}

/// One row; `full` adds the 4-stream and UDP tests to the 1-stream one.
fn measure(setup: Setup, program: Option<&Counterpart>, seconds: u32, full: bool) -> Result<Row> {
    let (mut lab, routed_dst, server_host, _procs) = match setup {
        Setup::Routed(which) => {
            let (lab, dst, host, procs) = crate::bench_routes::start(which)?;
            (lab, Some(dst), host, procs)
        }
        _ => (two_hosts(), None, "b", Vec::new()),
    };
    let (dst, tunnel) = start_tunnel(setup, program, &mut lab, routed_dst)?;
    let dst = dst.as_str();
    // Warm up the path (and the handshake) before measuring.
    lab.run_ok(
        "a",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst],
        Duration::from_secs(15),
    )
    .with_context(|| format!("{}: no connectivity", setup.label()))?;
    let server = lab.spawn(server_host, &["iperf3", "-s", "--forceflush", "-B", dst])?;
    let listening = Lab::wait_for(Duration::from_secs(5), || {
        server.log_text().contains("Server listening")
    });
    if !listening {
        bail!("iperf3 server did not start: {}", server.log_text());
    }
    let pids: Vec<u32> = tunnel
        .iter()
        .flat_map(|(program, needle)| pids_matching(program, needle))
        .collect();
    if setup != Setup::Raw && pids.len() < 2 {
        bail!(
            "{}: found {} of the tunnel's processes in /proc",
            setup.label(),
            pids.len()
        );
    }
    let secs = seconds.to_string();
    let cpu_before = bench_report::cpu_ns_of(&pids);
    let started = Instant::now();
    let tcp1 = iperf(&lab, &["-c", dst, "-t", &secs], seconds);
    let wall = started.elapsed();
    let cpu = bench_report::cpu_ns_of(&pids).saturating_sub(cpu_before);
    let tcp4 = full
        .then(|| iperf(&lab, &["-c", dst, "-t", &secs, "-P", "4"], seconds))
        .flatten();
    // UDP at full speed; 1372-byte datagrams fit the tunnel MTU of 1420.
    let udp = full
        .then(|| {
            iperf(
                &lab,
                &["-c", dst, "-t", &secs, "-u", "-b", "0", "-l", "1372"],
                seconds,
            )
        })
        .flatten();
    let (udp, udp_loss) = match udp {
        Some(v) => {
            let sum = &v["end"]["sum"];
            let loss = sum["lost_percent"].as_f64();
            let received = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .or_else(|| {
                    sum["bits_per_second"]
                        .as_f64()
                        .zip(loss)
                        .map(|(b, l)| b * (1.0 - l / 100.0))
                });
            (received, loss)
        }
        None => (None, None),
    };
    let tcp1 = tcp1.and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64());
    let cores_per_gbit = match (setup, tcp1) {
        (Setup::Raw, _) | (_, None) => None,
        (_, Some(bps)) => bench_report::cores_per_gbit(cpu, wall, bps),
    };
    Ok(Row {
        setup,
        cores_per_gbit,
        tcp1,
        tcp4: tcp4.and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64()),
        udp,
        udp_loss,
    })
}

/// Starts the tunnel of `setup` in `lab` (a routed row's is running already, to
/// `routed_dst`): the address to measure to, and the tunnel's processes at both ends to count
/// their CPU (program name, a word of their command line that is theirs alone).
fn start_tunnel(
    setup: Setup,
    program: Option<&Counterpart>,
    lab: &mut Lab,
    routed_dst: Option<String>,
) -> Result<(String, Vec<(String, String)>)> {
    let (a, b) = (node_a(), node_b());
    let lab_dir = lab.dir().to_string_lossy().into_owned();
    // The tunnel's processes at both ends, to count their CPU: (program name, a word of their
    // command line that is theirs alone).
    let mut tunnel: Vec<(String, String)> = Vec::new();
    let dst = match setup {
        Setup::Raw => b.underlay.to_string(),
        Setup::Routed(_) => {
            tunnel.push(("pinholed".into(), lab_dir.clone()));
            routed_dst.context("no address for a routed row")?
        }
        Setup::Pinholed | Setup::Baseline => {
            start_pinholed(lab, "a", &config(&a, &b, true));
            start_pinholed(lab, "b", &config(&b, &a, true));
            tunnel.push(("pinholed".into(), lab_dir.clone()));
            b.v4.to_string()
        }
        Setup::PinholedPolicy => {
            crate::bench_policy::start(lab, &a, &b)?;
            tunnel.push(("pinholed".into(), lab_dir.clone()));
            b.v4.to_string()
        }
        Setup::WireguardGo | Setup::WireguardGo2022 | Setup::BoringtunCli => {
            let path = program
                .map(|p| p.path.to_string_lossy().into_owned())
                .context("no program for this row")?;
            let imp = match setup {
                Setup::BoringtunCli => Implementation::BoringtunCli(path.clone()),
                _ => Implementation::WireguardGo(path.clone()),
            };
            let name = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (host, me, peer) in [("a", &a, &b), ("b", &b, &a)] {
                let ifname = stock::start(lab, host, &imp, me, peer, true)?;
                tunnel.push((name.clone(), ifname));
            }
            b.v4.to_string()
        }
    };
    Ok((dst, tunnel))
}

/// CPU nanoseconds used so far by the pinholed processes of the lab in `lab_dir`.
pub(crate) fn pinholed_cpu_ns(lab_dir: &str) -> u64 {
    bench_report::cpu_ns_of(&pinholed_pids(lab_dir))
}

/// The pinholed processes whose command line names `lab_dir` (that lab's), from /proc.
pub(crate) fn pinholed_pids(lab_dir: &str) -> Vec<u32> {
    // pinholed, or a baseline build under another name (pinholed-base, …).
    pids_matching("pinholed", lab_dir)
}

/// The processes whose program's file name starts with `program` and whose command line
/// contains `needle`, from /proc.
fn pids_matching(program: &str, needle: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            let name = std::path::Path::new(cmdline.split('\0').next()?).file_name()?;
            let ours = name.to_string_lossy().starts_with(program) && cmdline.contains(needle);
            ours.then_some(pid)
        })
        .collect()
}

pub(crate) fn iperf(lab: &Lab, args: &[&str], seconds: u32) -> Option<Value> {
    let mut argv = vec!["iperf3", "-J"];
    argv.extend_from_slice(args);
    let out = lab
        .run("a", &argv, Duration::from_secs(u64::from(seconds) + 20))
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    if let Some(e) = v["error"].as_str() {
        eprintln!("iperf3 {}: {e}", args.join(" "));
        return None;
    }
    Some(v)
}

fn render(rows: &[Row], seconds: u32) -> (String, Value) {
    let raw = rows.iter().find(|r| r.setup == Setup::Raw);
    let fmt = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2} ({:.3}×)", v / 1e9, v / b),
        (Some(v), _) => format!("{:.2}", v / 1e9),
        (None, _) => "–".to_string(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "iperf3, {seconds} s per test, Gbit/s received (ratio to raw veth); two namespaces over veth. \
         CPU: both ends' tunnel processes during the 1-stream test (nanosecond CPU time of all \
         their threads), as cores busy per Gbit/s carried."
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| path | TCP 1 stream | TCP 4 streams | UDP (loss) | cores per Gbit/s (TCP 1) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for r in rows {
        let udp = match r.udp_loss {
            Some(l) => format!("{} ({l:.1}% lost)", fmt(r.udp, raw.and_then(|x| x.udp))),
            None => fmt(r.udp, raw.and_then(|x| x.udp)),
        };
        let cpu = r
            .cores_per_gbit
            .map_or("–".to_string(), |c| format!("{c:.2}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {cpu} |",
            r.setup.label(),
            fmt(r.tcp1, raw.and_then(|x| x.tcp1)),
            fmt(r.tcp4, raw.and_then(|x| x.tcp4)),
            udp
        );
    }
    let by = |label: Setup| rows.iter().find(|r| r.setup == label).and_then(|r| r.tcp1);
    let mut ratios = serde_json::Map::new();
    if let Some(p) = by(Setup::Pinholed) {
        for other in [
            Setup::PinholedPolicy,
            Setup::WireguardGo,
            Setup::Baseline,
            Setup::WireguardGo2022,
            Setup::BoringtunCli,
        ] {
            if let Some(o) = by(other) {
                let _ = writeln!(
                    s,
                    "\npinholed / {} (TCP 1 stream): {:.2}×",
                    other.label(),
                    p / o
                );
                ratios.insert(format!("pinholed/{}", other.key()), json!(p / o));
            }
        }
    }
    // The routed rows against the signed-in direct peer of the same lab.
    if let Some(p) = by(Setup::Routed(Routed::Peer)) {
        for other in [Routed::SubnetRouter, Routed::ExitNode] {
            if let Some(o) = by(Setup::Routed(other)) {
                let label = Setup::Routed(other).label();
                let _ = writeln!(s, "\n{label} / direct peer (TCP 1 stream): {:.2}×", o / p);
                ratios.insert(
                    format!("{}/signed-in", Setup::Routed(other).key()),
                    json!(o / p),
                );
            }
        }
    }
    if rows.iter().any(|r| r.setup == Setup::PinholedPolicy) {
        let _ = writeln!(
            s,
            "\nThe policy row: {} rules in the receiver's filter, a new flow checked against all of them; \
             {} bytes of memory per tracked flow (at most {} flows).",
            crate::bench_policy::RULES,
            pinhole_engine::filter::Filter::bytes_per_flow(),
            pinhole_engine::filter::MAX_FLOWS
        );
    }
    let figures = json!({
        "seconds_per_test": seconds,
        "filter_bytes_per_flow": pinhole_engine::filter::Filter::bytes_per_flow(),
        "rows": rows.iter().map(|r| json!({
            "path": r.setup.key(),
            "label": r.setup.label(),
            "tcp1_bps": r.tcp1,
            "tcp4_bps": r.tcp4,
            "udp_bps": r.udp,
            "udp_loss_percent": r.udp_loss,
            "cores_per_gbit_tcp1": r.cores_per_gbit,
        })).collect::<Vec<_>>(),
        "tcp1_ratios": ratios,
    });
    (s, figures)
}
