//! pinholed's command line, with each OS's default paths.

use clap::Parser;
use std::path::PathBuf;

/// The Pinhole helper daemon.
#[derive(Debug, Parser)]
#[command(name = "pinholed", version, about)]
pub struct Args {
    /// Where the node key and the daemon's state live (created with mode 0700).
    #[arg(long, default_value_os_t = default_state_dir())]
    pub state_dir: PathBuf,
    /// The local IPC socket the app and the CLI will talk to (accepted now, served once the IPC lands).
    #[arg(long, default_value_os_t = default_socket())]
    pub socket: PathBuf,
    /// Name of the TUN device.
    #[arg(long, default_value = default_tun_name())]
    pub tun_name: String,
    /// Run from a WireGuard configuration file (PrivateKey, Address, ListenPort, [Peer] …) instead
    /// of a coordination server.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter (tracing's syntax), overridden by PINHOLE_LOG.
    #[arg(long, default_value = "info")]
    pub log: String,
}

fn default_state_dir() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/var/lib/pinhole")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Pinhole")
    } else if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("Pinhole")
    } else {
        directories::ProjectDirs::from("", "", "pinhole")
            .map(|d| d.data_local_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/var/lib/pinhole"))
    }
}

fn default_socket() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(r"\\.\pipe\pinholed")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/var/run/pinholed.sock")
    } else {
        PathBuf::from("/run/pinhole/pinholed.sock")
    }
}

fn default_tun_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "utun"
    } else if cfg!(windows) {
        "Pinhole"
    } else {
        "pinhole0"
    }
}
