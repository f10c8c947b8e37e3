//! `pinhole`: the command line over pinholed's local API. Exit codes: 0 ok, 1 the operation
//! failed, 2 usage.

#[cfg(any(unix, windows))]
mod auth_key;
mod report;
mod table;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pinhole_client::credentials;
#[cfg(any(unix, windows))]
use pinhole_client::LocalApi;
use pinhole_proto::ipc::{
    Credential, LoginResult, LogoutResult, NetcheckReport, Op, PingReply, Secret, Status,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pinhole: the mesh VPN's command line.
#[derive(Debug, Parser)]
#[command(name = "pinhole", version, about)]
struct Cli {
    /// pinholed's local API socket (a pipe name on Windows).
    #[arg(long, default_value = pinhole_proto::ipc::default_socket_path())]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Signs this device in: with an auth key, or interactively (prints a URL and a code to
    /// approve in a browser, and waits). The session is kept in the OS credential store.
    Login {
        /// The coordination server (e.g. https://control.example.com); the last one if omitted.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// An auth key made with `pinhole-control authkey create` (for machines without a
        /// person); `-` reads it from standard input. Prefer --authkey-file or `-`: a key on the
        /// command line is visible to every user of the machine.
        #[arg(long, value_name = "KEY")]
        authkey: Option<String>,
        /// Reads the auth key from the first line of FILE.
        #[arg(long, value_name = "FILE", conflicts_with = "authkey")]
        authkey_file: Option<PathBuf>,
        /// The name to register under (default: the host name).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Connects: brings the tunnel up (and keeps it up across restarts).
    Up {
        /// Point this machine's resolver at pinholed's DNS server, so peers answer by name
        /// (`ssh nas`); `--accept-dns=false` leaves the system's DNS alone. Remembered.
        #[arg(long, value_name = "BOOL")]
        accept_dns: Option<bool>,
        /// Ask for tags (comma-separated, e.g. tag:server; "" for none): the node then belongs
        /// to its tags, not to you. Refused unless the account's policy lists you as an owner
        /// of each tag. Remembered.
        #[arg(long, value_name = "TAGS", value_delimiter = ',')]
        advertise_tags: Option<Vec<String>>,
        /// Offer to forward these networks for your peers (comma-separated CIDRs, e.g.
        /// 192.168.1.0/24,fd00:1::/64; "" for none). Used once the server's operator (or the
        /// policy's autoApprovers) approves them. Remembered.
        #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
        advertise_routes: Option<Vec<String>>,
        /// Offer to be an exit node: peers may send all their traffic through this one, once
        /// approved. Remembered.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        advertise_exit_node: Option<bool>,
        /// Reach the networks your peers forward (their approved routes) through them.
        /// Remembered.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        accept_routes: Option<bool>,
        /// Send all internet traffic through this peer (name or address; "" for none): an
        /// approved exit node. Your own tunnel's packets and the local network's stay outside.
        /// Remembered.
        #[arg(long, value_name = "PEER")]
        exit_node: Option<String>,
        /// While an exit node is used, keep reaching the local network (printers, the router)
        /// directly. Remembered.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        exit_node_allow_lan: Option<bool>,
    },
    /// Disconnects: takes the tunnel down and keeps it down; stays signed in.
    Down,
    /// Signs out: this device leaves the network and the stored session is revoked and removed.
    Logout,
    /// Shows this node and every peer: address, online, path (direct or relayed), traffic.
    Status {
        /// The status as JSON (the format in DESIGN.md).
        #[arg(long)]
        json: bool,
    },
    /// Pings a peer through the tunnel (by name, address or node key): round-trip time and path.
    Ping {
        peer: String,
        /// How many pings (one per second).
        #[arg(long, short = 'c', default_value_t = 4)]
        count: u32,
        /// How long to wait for each reply, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Examines the local network: UDP, public address, NAT behaviour, relay and server latency.
    Netcheck {
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pinhole: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("pinhole: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(any(unix, windows))]
async fn connect(socket: &Path) -> Result<LocalApi> {
    Ok(LocalApi::connect(socket).await?)
}

#[cfg(not(any(unix, windows)))]
async fn connect(socket: &Path) -> Result<std::convert::Infallible> {
    bail!(
        "pinhole cannot reach pinholed at {} on this OS",
        socket.display()
    )
}

/// One request to pinholed; its result.
async fn request(socket: &Path, op: Op) -> Result<serde_json::Value> {
    Ok(connect(socket).await?.request(op).await?)
}

/// The credential store, off the async thread (its backends may block).
async fn stored_credential() -> Option<Credential> {
    match tokio::task::spawn_blocking(credentials::load).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("pinhole: note: {e:#}");
            None
        }
        Err(_) => None,
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Login {
            server,
            authkey,
            authkey_file,
            hostname,
        } => {
            let source = match (&authkey, &authkey_file) {
                (Some(k), _) => Some(auth_key::Source::Arg(k)),
                (None, Some(f)) => Some(auth_key::Source::File(f)),
                (None, None) => None,
            };
            let key = source
                .map(|s| auth_key::read(s, std::io::stdin().lock()))
                .transpose()?;
            login(&cli.socket, server, key, hostname).await
        }
        Command::Up {
            accept_dns,
            advertise_tags,
            advertise_routes,
            advertise_exit_node,
            accept_routes,
            exit_node,
            exit_node_allow_lan,
        } => {
            let credential = stored_credential().await;
            let advertise_tags =
                advertise_tags.map(|t| t.into_iter().filter(|t| !t.is_empty()).collect());
            request(
                &cli.socket,
                Op::Up {
                    credential,
                    accept_dns,
                    advertise_tags,
                    advertise_routes,
                    advertise_exit_node,
                    accept_routes,
                    exit_node,
                    exit_node_allow_lan,
                },
            )
            .await?;
            println!("pinhole is up");
            Ok(())
        }
        Command::Down => {
            request(&cli.socket, Op::Down).await?;
            println!("pinhole is down");
            Ok(())
        }
        Command::Logout => {
            let credential = stored_credential().await;
            let value = request(&cli.socket, Op::Logout { credential }).await?;
            let result: LogoutResult = serde_json::from_value(value)?;
            let forgotten = tokio::task::spawn_blocking(credentials::forget).await?;
            if let Some(w) = result.warning {
                eprintln!("pinhole: warning: {w}");
            }
            if let Err(e) = forgotten {
                eprintln!("pinhole: warning: {e:#}");
            }
            println!("logged out");
            Ok(())
        }
        Command::Status { json } => {
            let value = request(&cli.socket, Op::Status).await?;
            let status: Status = serde_json::from_value(value)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", table::render(&status));
            }
            Ok(())
        }
        Command::Ping {
            peer,
            count,
            timeout_ms,
        } => ping(&cli.socket, &peer, count, timeout_ms).await,
        Command::Netcheck { json } => {
            let value = request(&cli.socket, Op::Netcheck).await?;
            let report: NetcheckReport = serde_json::from_value(value)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report::netcheck(&report));
                // The probes leave by the physical network, not the exit node: say so.
                let status = request(&cli.socket, Op::Status).await.ok();
                let exit = status
                    .and_then(|v| serde_json::from_value::<Status>(v).ok())
                    .and_then(|s| s.self_node?.exit_node);
                if let Some(e) = exit {
                    print!("{}", report::exit_node_note(&e));
                }
            }
            Ok(())
        }
    }
}

async fn login(
    socket: &Path,
    server: Option<String>,
    auth_key: Option<String>,
    hostname: Option<String>,
) -> Result<()> {
    let stored = if auth_key.is_none() {
        stored_credential().await
    } else {
        None
    };
    let mut c = connect(socket).await?;
    c.request(Op::Subscribe).await?;
    let mut shown = None;
    let op = Op::Login {
        server,
        auth_key: auth_key.map(Secret),
        credential: stored,
        hostname,
    };
    let value = c
        .request_watching(op, |status| {
            if let Some(p) = &status.login {
                if shown.as_ref() != Some(p) {
                    println!(
                        "To sign in, open {} and enter the code {}\nWaiting for approval…",
                        p.url, p.code
                    );
                    shown = Some(p.clone());
                }
            }
        })
        .await?;
    let result: LoginResult =
        serde_json::from_value(value).context("pinholed answered the login strangely")?;
    if let Some(cred) = &result.credential {
        let cred = cred.clone();
        match tokio::task::spawn_blocking(move || credentials::save(&cred)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "pinhole: warning: signed in, but the session was not stored ({e}); `pinhole up` may ask you to log in again"
            ),
            Err(e) => eprintln!("pinhole: warning: the session was not stored: {e}"),
        }
    }
    println!(
        "signed in to {} as {} ({})",
        result.server,
        result.name,
        result.addresses.join(", ")
    );
    Ok(())
}

async fn ping(socket: &Path, peer: &str, count: u32, timeout_ms: u64) -> Result<()> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let mut c = connect(socket).await?;
    let mut answered = 0u32;
    let mut rtts = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        let op = Op::Ping {
            peer: peer.to_string(),
            timeout_ms: Some(timeout_ms),
        };
        match c.request(op).await {
            Ok(v) => {
                let r: PingReply = serde_json::from_value(v)?;
                println!("{}", report::pong(&r));
                answered += 1;
                rtts.push(r.rtt_ms);
            }
            // A lost reply is worth trying again; other errors will not go away.
            Err(e) if e.code() == Some("ping-timeout") => println!("{e}"),
            Err(e) => return Err(e.into()),
        }
        if i + 1 < count {
            let wait = Duration::from_secs(1).saturating_sub(started.elapsed());
            tokio::time::sleep(wait).await;
        }
    }
    let summary = report::ping_summary(count, &rtts);
    println!("{summary}");
    if answered == 0 {
        bail!("{peer} did not answer");
    }
    Ok(())
}
