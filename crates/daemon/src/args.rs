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
    /// The local API socket the app and the CLI talk to (root:pinhole, mode 0660).
    #[arg(long, default_value_os_t = default_socket())]
    pub socket: PathBuf,
    /// Name of the TUN device.
    #[arg(long, default_value = default_tun_name())]
    pub tun_name: String,
    /// Run from a WireGuard configuration file (PrivateKey, Address, ListenPort, [Peer] …) instead
    /// of a coordination server.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With --config: what may come in through the tunnel, as a JSON list of packet filter
    /// rules (the form control sends a node for its account's policy; `src`, `dst`, `ports`,
    /// `protos`). Replies to what this node sent always come in.
    #[arg(long, value_name = "FILE", requires = "config")]
    pub filter: Option<PathBuf>,
    /// The coordination server to join through (e.g. https://control.example.com). Remembered
    /// in the state directory after the first registration.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    pub control_url: Option<String>,
    /// A file holding an auth key for joining without a person (also PINHOLE_AUTHKEY). Without
    /// one, pinholed logs a sign-in link and code to approve in a browser.
    #[arg(long, value_name = "FILE")]
    pub authkey_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for the coordination server (a self-hosted private CA).
    #[arg(long, value_name = "FILE")]
    pub control_ca: Option<PathBuf>,
    /// An HTTP proxy for relay connections (http://[user:pass@]host:port, used with CONNECT and
    /// Basic credentials), for networks where only a proxy reaches the outside. PINHOLE_PROXY
    /// instead keeps a password out of the process list.
    #[arg(long, value_name = "URL", env = "PINHOLE_PROXY")]
    pub proxy: Option<String>,
    /// Reach relays as WebSockets from the start (also PINHOLE_RELAY_WEBSOCKET=true), for
    /// networks that pass nothing else; without it, a WebSocket is tried when the plain upgrade
    /// is refused on the way.
    #[arg(long, env = "PINHOLE_RELAY_WEBSOCKET")]
    pub relay_websocket: bool,
    /// Do not ask the gateway for a port mapping (PCP, NAT-PMP, UPnP IGD); also
    /// PINHOLE_NO_PORT_MAPPING=true. Without one, peers behind NATs that change the port for
    /// every destination may have to use a relay.
    #[arg(long, env = "PINHOLE_NO_PORT_MAPPING")]
    pub no_port_mapping: bool,
    /// Internal: run as the janitor of the pinholed that started this one (waits for its end
    /// on standard input, then removes its routing rules and forwarding).
    #[arg(long, hide = true)]
    pub janitor: bool,
    /// The name this node registers under (default: the OS hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// UDP port for WireGuard and discovery; 0 picks any (taken ports fall back to any).
    #[arg(long, default_value_t = 41641)]
    pub port: u16,
    /// Log filter (tracing's syntax), overridden by PINHOLE_LOG.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Manage pinholed's Windows service.
    #[cfg(windows)]
    #[command(subcommand)]
    pub service: Option<ServiceArg>,
}

/// `pinholed service <install|uninstall|start|stop|run>` (Windows).
#[cfg(windows)]
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum ServiceArg {
    /// Manage pinholed's Windows service.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
}

/// `pinholed service …`: what the installer and an administrator do with the service.
#[cfg(windows)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ServiceCommand {
    /// Register pinholed (this executable) as an automatic LocalSystem service, restarted on
    /// failure. Re-registering updates the executable's path.
    Install,
    /// Stop the service (waiting for it) and remove its registration. The state stays.
    Uninstall,
    /// Start the registered service and wait until it runs.
    Start,
    /// Stop the running service and wait until it has stopped.
    Stop,
    /// What the service control manager runs: not for a terminal.
    Run,
}

#[cfg(windows)]
fn default_state_dir() -> PathBuf {
    program_data().join("Pinhole")
}

#[cfg(not(windows))]
fn default_state_dir() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/var/lib/pinhole")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Pinhole")
    } else {
        directories::ProjectDirs::from("", "", "pinhole")
            .map(|d| d.data_local_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/var/lib/pinhole"))
    }
}

/// Windows' folder for machine-wide data (C:\\ProgramData), asked of the shell: a service's
/// environment need not have %ProgramData% (Wine's does not), and the installer removes the
/// state from the same folder.
#[cfg(windows)]
fn program_data() -> PathBuf {
    use windows_sys::Win32::System::Com::CoTaskMemFree;
    use windows_sys::Win32::UI::Shell::{FOLDERID_ProgramData, SHGetKnownFolderPath};
    let mut raw: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the returned string is NUL-terminated and freed below.
    let hr =
        unsafe { SHGetKnownFolderPath(&FOLDERID_ProgramData, 0, std::ptr::null_mut(), &mut raw) };
    let path = if hr >= 0 && !raw.is_null() {
        // SAFETY: `raw` is a NUL-terminated wide string from the shell.
        let len = (0..).take_while(|&i| unsafe { *raw.add(i) } != 0).count();
        // SAFETY: `len` wide characters were just read from `raw`.
        let wide = unsafe { std::slice::from_raw_parts(raw, len) };
        Some(PathBuf::from(String::from_utf16_lossy(wide)))
    } else {
        None
    };
    // SAFETY: freeing what SHGetKnownFolderPath allocated (null is allowed).
    unsafe { CoTaskMemFree(raw.cast()) };
    path.or_else(|| std::env::var_os("ProgramData").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("C:\\ProgramData"))
}

fn default_socket() -> PathBuf {
    PathBuf::from(pinhole_proto::ipc::default_socket_path())
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

/// The OS's name for this machine.
pub fn os_hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
            if !name.is_empty() {
                return name;
            }
        }
    }
    #[cfg(windows)]
    {
        if let Ok(n) = std::env::var("COMPUTERNAME") {
            return n;
        }
    }
    "node".to_string()
}

#[cfg(all(test, windows))]
mod tests {
    use super::*;

    #[test]
    fn the_state_lives_in_the_machines_programdata_where_the_uninstaller_looks() {
        let dir = default_state_dir();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(dir.ends_with("Pinhole"));
        let parent = dir.parent().unwrap();
        assert!(parent.is_dir(), "{} exists", parent.display());
        assert!(
            parent
                .to_string_lossy()
                .to_lowercase()
                .ends_with("programdata"),
            "{}",
            parent.display()
        );
    }
}
