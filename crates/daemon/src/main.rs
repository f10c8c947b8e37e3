//! pinholed: creates the TUN device, owns the UDP socket and runs the engine in one loop.

mod args;
mod connectivity;
mod control;
mod local_api;
mod platform;
mod shell;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    if let Err(e) = run_daemon() {
        // Logged once, with its causes, on one line; the exit code tells the service manager.
        // An error before logging is set up (bad arguments, a wrong build) goes to stderr.
        if tracing::dispatcher::has_been_set() {
            tracing::error!("{e:#}");
        } else {
            eprintln!("pinholed: {e:#}");
        }
        std::process::exit(1);
    }
}

fn run_daemon() -> Result<()> {
    let args = args::Args::parse();
    real_clock()?;
    #[cfg(windows)]
    if let Some(args::ServiceArg::Service { command }) = args.service {
        return platform::win_service::command(command);
    }
    #[cfg(target_os = "linux")]
    if args.janitor {
        platform::janitor::run(&args.state_dir);
        return Ok(());
    }
    init_logging(&args.log, None);
    serve(args)
}

/// Logs at `filter` (PINHOLE_LOG overrides it) to standard error, or to `file` when there is
/// none to read (a Windows service); the last lines are also kept in memory for the app's
/// diagnostics (`logs`).
pub fn init_logging(filter: &str, file: Option<std::fs::File>) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PINHOLE_LOG").unwrap_or_else(|_| EnvFilter::new(filter)),
        )
        .with_ansi(false);
    match file {
        None => builder.with_writer(|| pinhole_logring::Tee).init(),
        Some(file) => {
            let tee = pinhole_logring::FileTee::new(file);
            builder.with_writer(move || tee.clone()).init()
        }
    }
}

/// Runs the daemon until it is told to stop.
pub fn serve(args: args::Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(shell::run(args))
}

/// Fails when this pinholed was built with the engine's simulated clock (`sim-clock`, which only
/// netsim's own workspace turns on; a build that asks for it by hand would get it): its
/// WireGuard timers would not follow real time.
fn real_clock() -> Result<()> {
    if pinhole_engine::SIM_CLOCK {
        anyhow::bail!(
            "this pinholed was built with the engine's simulated clock (the sim-clock feature, \
             for netsim only): build it without that feature, e.g. `cargo build --release` at \
             the workspace root"
        );
    }
    Ok(())
}

#[cfg(test)]
mod clock_tests {
    use pinhole_engine::{Engine, PeerSettings, PrivateKey};
    use std::time::{Duration, Instant};

    /// The daemon's build (and so its tests) has the real clock, not netsim's simulated one.
    #[test]
    fn the_daemon_runs_on_the_real_clock() {
        assert!(
            super::real_clock().is_ok(),
            "the engine was built with sim-clock, which only netsim's own workspace may turn on"
        );
        let start = Instant::now();
        let mut engine = Engine::new(&PrivateKey::from_bytes([1; 32]), start);
        let peer = PrivateKey::from_bytes([2; 32]).public_key();
        let settings = PeerSettings {
            public_key: peer,
            preshared_key: None,
            allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
            endpoint: Some("192.0.2.1:51820".parse().unwrap()),
            candidates: Vec::new(),
            disco_key: None,
            persistent_keepalive: None,
            relay: None,
        };
        engine.upsert_peer(start, settings).unwrap();
        // A packet for the peer (an IPv4 header, UDP, 100.64.0.1 → 100.64.0.2) starts a handshake.
        let mut packet = vec![0u8; 28];
        packet[0] = 0x45;
        packet[3] = 28;
        packet[8] = 64;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[100, 64, 0, 1]);
        packet[16..20].copy_from_slice(&[100, 64, 0, 2]);
        engine.handle_tun(start, &packet);
        let mut initiations = 0;
        while let Some(t) = engine.poll_transmit() {
            initiations += usize::from(t.payload.first() == Some(&1));
        }
        assert_eq!(initiations, 1, "the handshake starts at once");
        // On the real clock boringtun's timers run on std's Instant: a timeout 50 ms of real
        // time later sends nothing new (the retry waits for REKEY_TIMEOUT, 5 s of real time).
        std::thread::sleep(Duration::from_millis(50));
        engine.handle_timeout(Instant::now());
        assert!(engine.poll_transmit().is_none());
    }
}
