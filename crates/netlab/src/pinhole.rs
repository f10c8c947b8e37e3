//! Running pinholed in a lab: finding the binary, keys, WireGuard-format configs, start, ping.

use crate::{Lab, Proc, Topology};
use pinhole_engine::{Key, PrivateKey};
use std::path::PathBuf;
use std::time::Duration;

pub const TUN: &str = "ph0";
/// The UDP port every WireGuard node in the lab listens on.
pub const PORT: u16 = 51820;

/// A workspace binary: `$env_var` if set (`cargo xtask test` sets it to what it just built),
/// else the release or debug build in the workspace's target directory, but only one newer than
/// every source file it was built from (cargo's dep-info file beside it lists them): a system
/// test never runs a binary left over from older sources. Panics with what to do otherwise.
/// The workspace's target directory (downloaded counterparts are kept there too).
pub fn workspace_target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

pub(crate) fn workspace_binary(env_var: &str, name: &str, package: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let built: Vec<PathBuf> = ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join(name))
        .filter(|p| p.exists())
        .collect();
    if let Some(p) = built.iter().find(|p| is_fresh(p)) {
        return p.clone();
    }
    if built.is_empty() {
        panic!("{name} is not built: run `cargo xtask test`, or `cargo build --release -p {package}` (or set {env_var})");
    }
    panic!(
        "{name} in target/ is older than its sources: run `cargo xtask test`, or `cargo build --release -p {package}` first (or set {env_var})"
    )
}

/// Whether `bin` is newer than every file in its dep-info (`bin.d`, written by cargo).
fn is_fresh(bin: &std::path::Path) -> bool {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(built), Ok(deps)) = (
        modified(bin),
        std::fs::read_to_string(bin.with_extension("d")),
    ) else {
        return false;
    };
    // `target: dep dep …`, spaces inside paths escaped as `\ `.
    let Some((_, list)) = deps.split_once(": ") else {
        return false;
    };
    let list = list.replace("\\ ", "\u{0}");
    list.split_whitespace()
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
        .all(|d| modified(&d).is_some_and(|t| t <= built))
}

/// The pinholed binary ($PINHOLED_BIN, else the workspace's build).
pub fn pinholed() -> PathBuf {
    workspace_binary("PINHOLED_BIN", "pinholed", "pinhole-daemon")
}

/// The netlab-tool binary ($NETLAB_TOOL_BIN, else the workspace's build).
pub fn tool() -> PathBuf {
    workspace_binary("NETLAB_TOOL_BIN", "netlab-tool", "pinhole-netlab")
}

/// A fresh private key and its public key.
pub fn keypair() -> (PrivateKey, Key) {
    let private = pinhole_engine::private_key_from_bytes(rand::random());
    let public = private.public_key();
    (private, public)
}

/// Two hosts on one link: a = 192.0.2.1 / 2001:db8::1, b = 192.0.2.2 / 2001:db8::2.
pub fn two_hosts() -> Lab {
    let t = Topology::new().host("a").host("b").link(
        "a",
        &["192.0.2.1/24", "2001:db8::1/64"],
        "b",
        &["192.0.2.2/24", "2001:db8::2/64"],
    );
    Lab::build(&t).expect("building the lab")
}

pub struct Node {
    pub private: PrivateKey,
    pub public: Key,
    pub v4: &'static str,
    pub v6: &'static str,
    pub underlay: &'static str,
}

impl Node {
    /// The node's WireGuard endpoint on the underlay (`IP:PORT`).
    pub fn endpoint(&self) -> String {
        format!("{}:{PORT}", self.underlay)
    }
}

pub fn node_a() -> Node {
    let (private, public) = keypair();
    Node {
        private,
        public,
        v4: "100.64.0.1",
        v6: "fd7a:115c:a1e0::1",
        underlay: "192.0.2.1",
    }
}

pub fn node_b() -> Node {
    let (private, public) = keypair();
    Node {
        private,
        public,
        v4: "100.64.0.2",
        v6: "fd7a:115c:a1e0::2",
        underlay: "192.0.2.2",
    }
}

/// pinholed's config for `me` with one peer; with `knows_peer` it has the peer's Endpoint,
/// without it pinholed learns the endpoint from the peer's first handshake.
pub fn config(me: &Node, peer: &Node, knows_peer: bool) -> String {
    wg_text(me, peer, knows_peer, true)
}

/// The same for stock WireGuard's `wg setconf`, which takes no Address line.
pub fn setconf(me: &Node, peer: &Node, knows_peer: bool) -> String {
    wg_text(me, peer, knows_peer, false)
}

fn wg_text(me: &Node, peer: &Node, knows_peer: bool, with_address: bool) -> String {
    let mut s = format!("[Interface]\nPrivateKey = {}\n", *me.private.to_base64());
    if with_address {
        s.push_str(&format!("Address = {}/32, {}/128\n", me.v4, me.v6));
    }
    s.push_str(&format!(
        "ListenPort = {PORT}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}/128\n",
        peer.public.to_base64(),
        peer.v4,
        peer.v6
    ));
    if knows_peer {
        s.push_str(&format!("Endpoint = {}\n", peer.endpoint()));
    }
    s
}

/// Starts pinholed in `host` with `config`, and waits until it says it is up.
pub fn start_pinholed(lab: &mut Lab, host: &str, config: &str) -> Proc {
    let conf = lab.dir().join(format!("{host}.conf"));
    std::fs::write(&conf, config).expect("writing config");
    start_pinholed_with(lab, host, &["--config", conf.to_str().unwrap()])
}

/// Starts pinholed in `host` with `args` plus a state directory, socket and TUN name of the lab's,
/// and waits until it says it is up.
pub fn start_pinholed_with(lab: &mut Lab, host: &str, args: &[&str]) -> Proc {
    let p = spawn_pinholed(lab, host, args);
    let up = Lab::wait_for(Duration::from_secs(15), || {
        p.log_text().contains("pinholed is up")
    });
    assert!(up, "pinholed in {host} did not come up:\n{}", p.log_text());
    p
}

/// Starts pinholed in `host` with `args` plus a state directory, socket and TUN name of the lab's.
pub fn spawn_pinholed(lab: &mut Lab, host: &str, args: &[&str]) -> Proc {
    let dir = lab.dir().to_path_buf();
    let state = dir.join(format!("{host}-state"));
    let sock = dir.join(format!("{host}.sock"));
    let bin = pinholed();
    let mut argv = vec![bin.to_str().unwrap()];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&[
        "--state-dir",
        state.to_str().unwrap(),
        "--socket",
        sock.to_str().unwrap(),
        "--tun-name",
        TUN,
    ]);
    lab.spawn(host, &argv).expect("starting pinholed")
}

/// Pings `dst` from `host`; true if replies came back.
pub fn ping(lab: &Lab, host: &str, dst: &str) -> bool {
    let out = lab
        .run(
            host,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst],
            Duration::from_secs(15),
        )
        .expect("running ping");
    if !out.status.success() {
        eprintln!(
            "ping {dst} from {host} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Reads `name=N` from a log line.
pub fn counter(log: &str, name: &str) -> Option<u64> {
    let key = format!("{name}=");
    let start = log.rfind(&key)? + key.len();
    log[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}
