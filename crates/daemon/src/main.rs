//! pinholed: creates the TUN device, owns the UDP socket and runs the engine in one loop.

mod args;
mod config;
mod routes;
mod run;
mod state_dir;
mod tun_device;
mod tun_io;
mod udp;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> Result<()> {
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
    let result = runtime.block_on(run::run(args));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}
