//! `cargo xtask`: the project's entry points — `demo`, `test`, `bench …`, `fuzz`, `natlab`,
//! `package`.

mod bench;
mod bench_connect;
mod bench_control;
mod bench_dns;
mod bench_idle;
mod bench_policy;
mod bench_policy_fanout;
mod bench_relay;
mod bench_report;
mod bench_routes;
mod counterparts;
mod demo;
mod fuzz;
mod natlab;
mod package;
mod packages;
mod shape;
mod summary;
mod test;
mod ui;
mod windows;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = dispatch() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["demo"] => demo::run(),
        ["test"] => test::run(),
        ["bench", "throughput", rest @ ..] => bench::throughput(rest),
        ["bench", "control", rest @ ..] => bench_control::control(rest),
        ["bench", "relay", rest @ ..] => bench_relay::relay(rest),
        ["bench", "connect", rest @ ..] => bench_connect::connect(rest),
        ["bench", "idle", rest @ ..] => bench_idle::idle(rest),
        ["bench", "dns", rest @ ..] => bench_dns::dns(rest),
        ["bench", "policy", rest @ ..] => bench_policy_fanout::policy(rest),
        ["fuzz", rest @ ..] => fuzz::run(rest),
        ["natlab", rest @ ..] => natlab::run(rest),
        ["shape", rest @ ..] => shape::run(rest),
        ["package", rest @ ..] => package::run(rest),
        _ => bail!(
            "usage: cargo xtask <command>\n\n  demo                 pinhole-control and three pinholed nodes in a namespace lab, pinging each other\n  test                 everything: fmt, clippy, unit, netsim, netlab, interop\n  bench throughput [--seconds N] [--only raw,pinholed,policy,baseline,wireguard-go,wireguard-go-2022,boringtun-cli]\n                       iperf3 through raw veth, pinholed, the current wireguard-go (Debian 13's), Debian 12's and boringtun-cli\n  bench control [--nodes 1000,10000] [--probes 20]\n                       simulated nodes on one pinhole-control: fan-out latency, memory per node\n  bench relay [--seconds N] [--idle-clients N]\n                       relayed vs direct iperf3 through pinholed; relay packets/s, CPU, memory per idle client\n  bench connect [--runs N] [--pairs A:B,…] [--loss PCT] [--delay MS]\n                       NAT lab: time to the first packet and to a direct path, p50/p95 per pair\n  bench idle [--peers 100,10000] [--seconds 60]\n                       pinholed with N online peers and no traffic: wake-ups/s, CPU, memory per peer\n  bench dns [--queries 10000]\n                       a peer's name from pinholed's DNS server, and a forwarded one: p50/p99 beside dnsmasq\n  bench policy [--nodes 100] [--changes 10]\n                       a policy change reaching every node's map stream: p50/p95/max\n  fuzz [--seconds N] [TARGET…]\n                       coverage-guided fuzzing of every parser (cargo fuzz), N s per target (default 60)\n  natlab [--profiles P,…] [--loss PCT] [--delay MS] [--jitter MS] [--full] [--strict]\n                       two nodes behind each pair of NAT profiles: path expected vs observed\n  natlab --shell A B   one NAT lab left running to explore by hand\n  shape [--quiet] [--root DIR]\n                       no file over 800 lines of code, no function over 120, no import circle\n  package              the .deb, the .rpm and the Windows installer (target/packages/); says what it skipped"
        ),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn cmd(program: &str, args: &[&str]) -> Result<()> {
    cmd_in(&root(), program, args)
}

/// Runs a command in `dir`, failing on a non-zero exit.
pub fn cmd_in(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    run_in(dir, program, args, &[])
}

/// Runs a command in the workspace root with extra environment variables, failing on a
/// non-zero exit.
pub fn cmd_env(program: &str, args: &[&str], envs: &[(&str, String)]) -> Result<()> {
    run_in(&root(), program, args, envs)
}

fn run_in(dir: &Path, program: &str, args: &[&str], envs: &[(&str, String)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the workspace's default members in release mode, as a contributor does with
/// `cargo build --release` at the root (pinholed, pinhole-control, pinhole-relay, pinhole,
/// netlab-tool and the tools; not the app), and points the lab helpers at those binaries.
pub fn build_release_binaries() -> Result<()> {
    cmd("cargo", &["build", "--release"])?;
    let target = root().join("target/release");
    std::env::set_var("PINHOLED_BIN", target.join("pinholed"));
    std::env::set_var("NETLAB_TOOL_BIN", target.join("netlab-tool"));
    std::env::set_var("PINHOLE_CONTROL_BIN", target.join("pinhole-control"));
    std::env::set_var("PINHOLE_BIN", target.join("pinhole"));
    std::env::set_var("PINHOLE_RELAY_BIN", target.join("pinhole-relay"));
    Ok(())
}

/// Fails unless running as root (namespaces need it).
pub fn require_root(what: &str) -> Result<()> {
    if !pinhole_netlab::have_root() {
        bail!("{what} builds network namespaces and needs root: run it as root (or with sudo -E)");
    }
    Ok(())
}
