//! pinhole-relay: runs the STUN service on its own (pinhole-control embeds the same by default).

use anyhow::Result;
use clap::Parser;
use pinhole_relay::{StunConfig, StunServer};
use std::net::{IpAddr, SocketAddr};
use tracing_subscriber::EnvFilter;

/// The Pinhole relay server: STUN (RFC 8489, and RFC 5780 with an alternate address or port).
#[derive(Debug, Parser)]
#[command(name = "pinhole-relay", version, about)]
struct Args {
    /// UDP address of the STUN service.
    #[arg(long, default_value = "0.0.0.0:3478")]
    stun_listen: SocketAddr,
    /// A second IP address of this host, for RFC 5780 NAT behaviour discovery.
    #[arg(long, value_name = "IP")]
    stun_alternate_ip: Option<IpAddr>,
    /// A second UDP port, for RFC 5780 NAT behaviour discovery.
    #[arg(long, value_name = "PORT")]
    stun_alternate_port: Option<u16>,
    /// Log filter (tracing's syntax), overridden by PINHOLE_LOG.
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() {
    if let Err(e) = run() {
        tracing::error!("{e:#}");
        eprintln!("pinhole-relay: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PINHOLE_LOG").unwrap_or_else(|_| EnvFilter::new(&args.log)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = StunServer::bind(StunConfig {
            primary: args.stun_listen,
            alternate_ip: args.stun_alternate_ip,
            alternate_port: args.stun_alternate_port,
        })
        .await?;
        tracing::info!(stun = %server.local_addr()?, "pinhole-relay is listening");
        tokio::select! {
            _ = server.run() => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        }
        Ok(())
    })
}
