//! pinholed: creates the TUN device, owns the UDP socket and runs the engine in one loop.

mod args;
mod command;
mod config;
mod control_link;
mod endpoints;
mod identity;
mod ipc_server;
mod mapped_peers;
mod netcheck;
mod netmap;
mod pinger;
mod prefs;
mod relay_link;
mod routes;
mod run;
mod state_dir;
mod status;
mod tun_device;
mod tun_io;
mod udp;
mod ws_stream;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    if let Err(e) = run_daemon() {
        // Logged once, with its causes, on one line; the exit code tells the service manager.
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run_daemon() -> Result<()> {
    let args = args::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PINHOLE_LOG").unwrap_or_else(|_| EnvFilter::new(&args.log)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run::run(args))
}
