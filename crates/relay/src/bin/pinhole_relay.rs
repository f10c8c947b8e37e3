//! pinhole-relay: the STUN service and, with `--listen`, the packet relay on its own
//! (pinhole-control embeds the same by default). The relay asks the coordination server which
//! node keys may use it, with the relay secret the server was given.

use anyhow::{bail, Context, Result};
use clap::Parser;
use pinhole_control_client::ControlClient;
use pinhole_proto::key::Key;
use pinhole_relay::http_server::{accept_loop, tls_acceptor, TlsFiles};
use pinhole_relay::{AuthError, AuthFuture, Authorizer, Grant, Relay, RelayConfig};
use pinhole_relay::{StunConfig, StunServer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// The Pinhole relay server: STUN (RFC 8489, and RFC 5780 with an alternate address or port)
/// and the packet relay (HTTP upgrade on /relay; /metrics on --metrics-listen).
#[derive(Debug, Parser)]
#[command(name = "pinhole-relay", version, about)]
struct Args {
    /// TCP address of the packet relay (HTTPS, or HTTP with --insecure-http); none = STUN only.
    #[arg(long, requires = "control_url")]
    listen: Option<SocketAddr>,
    /// The coordination server that says which nodes may use the relay.
    #[arg(long, value_name = "URL", requires = "relay_secret_file")]
    control_url: Option<String>,
    /// The relay secret (the file given to `pinhole-control serve --relay-secret-file`).
    #[arg(long, value_name = "FILE")]
    relay_secret_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for the coordination server.
    #[arg(long, value_name = "FILE")]
    control_ca: Option<PathBuf>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the relay over plain HTTP: only for labs (WireGuard still encrypts the packets).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_http: bool,
    /// UDP address of the STUN service.
    #[arg(long, default_value = "0.0.0.0:3478")]
    stun_listen: SocketAddr,
    /// A second IP address of this host, for RFC 5780 NAT behaviour discovery.
    #[arg(long, value_name = "IP")]
    stun_alternate_ip: Option<IpAddr>,
    /// A second UDP port, for RFC 5780 NAT behaviour discovery.
    #[arg(long, value_name = "PORT")]
    stun_alternate_port: Option<u16>,
    /// Serve Prometheus metrics (`/metrics`, plain HTTP) on this address, e.g. 127.0.0.1:9090;
    /// they are served nowhere else.
    #[arg(long, value_name = "ADDR", requires = "listen")]
    metrics_listen: Option<SocketAddr>,
    /// Log filter (tracing's syntax), overridden by PINHOLE_LOG.
    #[arg(long, default_value = "info")]
    log: String,
}

/// Asks the coordination server over its API.
struct ControlAuthorizer {
    client: ControlClient,
    secret: String,
}

impl Authorizer for ControlAuthorizer {
    fn authorize<'a>(&'a self, key: &'a Key) -> AuthFuture<'a> {
        Box::pin(async move {
            self.client
                .relay_authorize(&self.secret, key)
                .await
                .map(|n| {
                    n.map(|network| Grant {
                        network: network.into(),
                    })
                })
                .map_err(|e| AuthError(e.to_string()))
        })
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let stun = StunServer::bind(StunConfig {
        primary: args.stun_listen,
        alternate_ip: args.stun_alternate_ip,
        alternate_port: args.stun_alternate_port,
    })
    .await?;
    tracing::info!(stun = %stun.local_addr()?, "STUN service listening");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut relay_task = None;
    if let Some(listen) = args.listen {
        let tls = match (&args.tls_cert, &args.tls_key, args.insecure_http) {
            (Some(cert), Some(key), false) => Some(tls_acceptor(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })?),
            (None, None, true) => None,
            _ => bail!("give --tls-cert and --tls-key, or --insecure-http for a lab"),
        };
        let (Some(url), Some(secret_file)) = (&args.control_url, &args.relay_secret_file) else {
            bail!("the packet relay needs --control-url and --relay-secret-file");
        };
        let secret = std::fs::read_to_string(secret_file)
            .with_context(|| format!("cannot read {}", secret_file.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let ca = match &args.control_ca {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        };
        let client = ControlClient::new(url, ca.as_deref())?;
        let relay = Relay::new(
            Arc::new(ControlAuthorizer { client, secret }),
            RelayConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), control = %url, "packet relay listening");
        if let Some(at) = args.metrics_listen {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} for metrics"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics listening");
            tokio::spawn(accept_loop(
                l,
                None,
                pinhole_relay::http::metrics_router(relay.clone()),
                stop_rx.clone(),
            ));
        }
        tokio::spawn(relay.clone().run_rechecks());
        relay_task = Some((
            relay.clone(),
            tokio::spawn(accept_loop(
                listener,
                tls,
                pinhole_relay::http::router(relay),
                stop_rx,
            )),
        ));
    }
    tracing::info!("pinhole-relay is running");
    tokio::select! {
        _ = stun.run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    let _ = stop.send(true);
    if let Some((relay, task)) = relay_task {
        relay.shutdown();
        let _ = task.await;
    }
    Ok(())
}
