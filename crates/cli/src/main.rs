//! `pinhole`: the command line over pinholed's local API. Exit codes: 0 ok, 1 the operation
//! failed, 2 usage.

#[cfg(unix)]
mod client;
mod table;

use clap::{Parser, Subcommand};
use pinhole_proto::ipc::{Op, Status};
use std::path::PathBuf;

/// Pinhole: the mesh VPN's command line.
#[derive(Debug, Parser)]
#[command(name = "pinhole", version, about)]
struct Cli {
    /// pinholed's local API socket.
    #[arg(long, default_value = pinhole_proto::ipc::default_socket_path())]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Shows this node and every peer: address, online, path (direct or relayed), traffic.
    Status {
        /// The status as JSON (the format in DESIGN.md).
        #[arg(long)]
        json: bool,
    },
    /// Connects: brings the tunnel up (and keeps it up across restarts).
    Up,
    /// Disconnects: takes the tunnel down and keeps it down; stays signed in.
    Down,
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

/// One request to pinholed; its result.
async fn request(socket: &std::path::Path, op: Op) -> anyhow::Result<serde_json::Value> {
    #[cfg(unix)]
    {
        client::Client::connect(socket).await?.request(op).await
    }
    #[cfg(not(unix))]
    {
        let _ = op;
        anyhow::bail!(
            "pinhole cannot reach pinholed at {} on this OS yet: its local API is served on Unix only so far",
            socket.display()
        )
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
        Command::Up => {
            request(&cli.socket, Op::Up).await?;
            println!("pinhole is up");
            Ok(())
        }
        Command::Down => {
            request(&cli.socket, Op::Down).await?;
            println!("pinhole is down");
            Ok(())
        }
    }
}
