//! `cargo xtask bench throughput`: iperf3 between two namespaces through raw veth (the limit),
//! pinholed, Debian's wireguard-go and boringtun-cli, all in one run on the same topology.

use crate::{build_release_binaries, cmd, packages, require_root, root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::pinhole::{config, node_a, node_b, start_pinholed, two_hosts};
use pinhole_netlab::stock::{self, Implementation};
use pinhole_netlab::Lab;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::Duration;

const BORINGTUN_VERSION: &str = "0.7.1";

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Raw,
    Pinholed,
    /// Another pinholed build (PINHOLE_BENCH_BASELINE=path), measured in the same run.
    Baseline,
    WireguardGo,
    BoringtunCli,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Raw => "raw veth (limit)",
            Setup::Pinholed => "pinholed",
            Setup::Baseline => "pinholed (baseline build)",
            Setup::WireguardGo => "wireguard-go",
            Setup::BoringtunCli => "boringtun-cli",
        }
    }

    /// The name `--only` takes.
    fn key(self) -> &'static str {
        match self {
            Setup::Raw => "raw",
            Setup::Pinholed => "pinholed",
            Setup::Baseline => "baseline",
            Setup::WireguardGo => "wireguard-go",
            Setup::BoringtunCli => "boringtun-cli",
        }
    }
}

const SETUPS: [Setup; 5] = [
    Setup::Raw,
    Setup::Pinholed,
    Setup::Baseline,
    Setup::WireguardGo,
    Setup::BoringtunCli,
];

struct Row {
    setup: Setup,
    /// CPU seconds both pinholed processes used per second of the 1-stream TCP test, per
    /// Gbit/s it carried.
    cores_per_gbit: Option<f64>,
    tcp1: Option<f64>,
    tcp4: Option<f64>,
    udp: Option<f64>,
    udp_loss: Option<f64>,
}

pub fn throughput(args: &[&str]) -> Result<()> {
    const USAGE: &str = "usage: cargo xtask bench throughput [--seconds N] [--only raw,pinholed,baseline,wireguard-go,boringtun-cli]";
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
    let boringtun = boringtun_cli();
    let baseline = std::env::var_os("PINHOLE_BENCH_BASELINE");

    let mut rows = Vec::new();
    for setup in SETUPS {
        if only.as_ref().is_some_and(|o| !o.contains(&setup)) {
            continue;
        }
        if setup == Setup::BoringtunCli && boringtun.is_none() {
            eprintln!("!!! boringtun-cli unavailable: its row is left out !!!");
            continue;
        }
        let ours = std::env::var_os("PINHOLED_BIN");
        if setup == Setup::Baseline {
            let Some(b) = &baseline else { continue };
            std::env::set_var("PINHOLED_BIN", b);
        }
        eprintln!("\n== {} ==", setup.label());
        let row = measure(setup, boringtun.as_deref(), seconds);
        if let Some(ours) = ours {
            std::env::set_var("PINHOLED_BIN", ours);
        }
        rows.push(row?);
    }
    let table = render(&rows, seconds);
    println!("\n{table}");
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("throughput.md"), &table)?;
    eprintln!("(also written to target/bench/throughput.md)");
    Ok(())
}

/// boringtun-cli from crates.io, installed into target/bench-tools on first use.
fn boringtun_cli() -> Option<String> {
    let tools = root().join("target/bench-tools");
    let bin = tools.join("bin/boringtun-cli");
    if !bin.exists() {
        let root_arg = tools.to_string_lossy().into_owned();
        if let Err(e) = cmd(
            "cargo",
            &[
                "install",
                "boringtun-cli",
                "--version",
                BORINGTUN_VERSION,
                "--locked",
                "--root",
                &root_arg,
            ],
        ) {
            eprintln!("!!! cannot install boringtun-cli {BORINGTUN_VERSION}: {e:#} !!!");
            return None;
        }
    }
    Some(bin.to_string_lossy().into_owned())
}

fn measure(setup: Setup, boringtun: Option<&str>, seconds: u32) -> Result<Row> {
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    let dst = match setup {
        Setup::Raw => b.underlay,
        Setup::Pinholed | Setup::Baseline => {
            start_pinholed(&mut lab, "a", &config(&a, &b, true));
            start_pinholed(&mut lab, "b", &config(&b, &a, true));
            b.v4
        }
        Setup::WireguardGo | Setup::BoringtunCli => {
            let imp = match (setup, boringtun) {
                (Setup::BoringtunCli, Some(path)) => Implementation::BoringtunCli(path.into()),
                _ => Implementation::WireguardGo,
            };
            stock::start(&mut lab, "a", &imp, &a, &b, true)?;
            stock::start(&mut lab, "b", &imp, &b, &a, true)?;
            b.v4
        }
    };
    // Warm up the path (and the handshake) before measuring.
    lab.run_ok(
        "a",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst],
        Duration::from_secs(15),
    )
    .with_context(|| format!("{}: no connectivity", setup.label()))?;
    let server = lab.spawn("b", &["iperf3", "-s", "--forceflush", "-B", dst])?;
    let listening = Lab::wait_for(Duration::from_secs(5), || {
        server.log_text().contains("Server listening")
    });
    if !listening {
        bail!("iperf3 server did not start: {}", server.log_text());
    }
    let secs = seconds.to_string();
    let lab_dir = lab.dir().to_string_lossy().into_owned();
    let cpu_before = pinholed_cpu_seconds(&lab_dir);
    let tcp1 = iperf(&lab, &["-c", dst, "-t", &secs], seconds);
    let cpu = pinholed_cpu_seconds(&lab_dir) - cpu_before;
    let tcp4 = iperf(&lab, &["-c", dst, "-t", &secs, "-P", "4"], seconds);
    // UDP at full speed; 1372-byte datagrams fit the tunnel MTU of 1420.
    let udp = iperf(
        &lab,
        &["-c", dst, "-t", &secs, "-u", "-b", "0", "-l", "1372"],
        seconds,
    );
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
        (Setup::Pinholed | Setup::Baseline, Some(bps)) if bps > 0.0 => {
            Some(cpu / f64::from(seconds) / (bps / 1e9))
        }
        _ => None,
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

/// CPU seconds (user + system) used so far by the pinholed processes of the lab in `lab_dir`.
pub(crate) fn pinholed_cpu_seconds(lab_dir: &str) -> f64 {
    pinholed_pids(lab_dir)
        .into_iter()
        .map(crate::bench_relay::cpu_seconds)
        .sum()
}

/// The pinholed processes whose command line names `lab_dir` (that lab's), from /proc.
pub(crate) fn pinholed_pids(lab_dir: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            let program = std::path::Path::new(cmdline.split('\0').next()?).file_name()?;
            // pinholed, or a baseline build under another name (pinholed-base, …).
            let ours =
                program.to_string_lossy().starts_with("pinholed") && cmdline.contains(lab_dir);
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

fn render(rows: &[Row], seconds: u32) -> String {
    let raw = rows.iter().find(|r| r.setup == Setup::Raw);
    let fmt = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2} ({:.3}×)", v / 1e9, v / b),
        (Some(v), _) => format!("{:.2}", v / 1e9),
        (None, _) => "–".to_string(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "iperf3, {seconds} s per test, Gbit/s received (ratio to raw veth); two namespaces over veth, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| path | TCP 1 stream | TCP 4 streams | UDP (loss) | pinholed cores per Gbit/s (TCP 1) |"
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
    if let Some(p) = by(Setup::Pinholed) {
        for other in [Setup::Baseline, Setup::WireguardGo, Setup::BoringtunCli] {
            if let Some(o) = by(other) {
                let _ = writeln!(
                    s,
                    "\npinholed / {} (TCP 1 stream): {:.2}×",
                    other.label(),
                    p / o
                );
            }
        }
    }
    s
}
