//! A mesh joined through pinhole-control: the coordination server in a "public" router namespace,
//! nodes in their own namespaces each linked to it, and helpers to start, watch and query them.

use crate::pinhole::start_pinholed_with;
use crate::{Lab, Proc, Topology};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The namespace the coordination server runs in.
pub const PUBLIC: &str = "public";
/// Where the server listens, on the public router.
pub const CONTROL_PORT: u16 = 8080;
/// Where the embedded relay's metrics are served, on loopback in the public namespace.
pub const METRICS_PORT: u16 = 9090;

/// The metrics URL, from inside the public namespace.
pub fn metrics_url() -> String {
    format!("http://127.0.0.1:{METRICS_PORT}/metrics")
}
/// UDP port of every node.
pub const NODE_PORT: u16 = 41641;

/// The pinhole-control binary ($PINHOLE_CONTROL_BIN, else the workspace's build).
pub fn pinhole_control() -> PathBuf {
    crate::pinhole::workspace_binary("PINHOLE_CONTROL_BIN", "pinhole-control", "pinhole-control")
}

/// The pinhole-relay binary ($PINHOLE_RELAY_BIN, else the workspace's build).
pub fn pinhole_relay() -> PathBuf {
    crate::pinhole::workspace_binary("PINHOLE_RELAY_BIN", "pinhole-relay", "pinhole-relay")
}

/// The pinhole CLI ($PINHOLE_BIN, else the workspace's build).
pub fn pinhole_cli() -> PathBuf {
    crate::pinhole::workspace_binary("PINHOLE_BIN", "pinhole", "pinhole-cli")
}

/// Runs `pinhole --socket <host's socket> ARGS` in `host`: (success, stdout, stderr).
pub fn pinhole(lab: &Lab, host: &str, args: &[&str]) -> (bool, String, String) {
    pinhole_env(lab, host, &[], args)
}

/// Like [`pinhole`], with environment variables set for the CLI.
pub fn pinhole_env(
    lab: &Lab,
    host: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String, String) {
    let bin = pinhole_cli();
    let sock = lab.dir().join(format!("{host}.sock"));
    // The lab's own credential-store entry, unless the caller names one (later wins in env(1)).
    let mut vars = hermetic_cli_env(lab, host);
    vars.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut argv = vec!["env"];
    argv.extend(vars.iter().map(String::as_str));
    argv.extend_from_slice(&[bin.to_str().unwrap(), "--socket", sock.to_str().unwrap()]);
    argv.extend_from_slice(args);
    let out = lab
        .run(host, &argv, Duration::from_secs(60))
        .expect("running pinhole");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What keeps a lab's CLI off the machine's real credential store: the kernel keyring (no
/// desktop Secret Service) and an entry of the lab's own for each host.
pub fn hermetic_cli_env(lab: &Lab, host: &str) -> Vec<String> {
    vec![
        "PINHOLE_KEYRING=kernel".to_string(),
        format!("PINHOLE_CREDENTIAL_NAME={}", lab.credential_name(host)),
    ]
}

/// `pinhole status --json` in `host`, parsed.
pub fn status_json(lab: &Lab, host: &str) -> serde_json::Value {
    let (ok, out, err) = pinhole(lab, host, &["status", "--json"]);
    assert!(ok, "pinhole status --json in {host} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
}

/// The router and `nodes`, node i on 198.18.i.2/24 behind the router's 198.18.i.1.
pub fn star(nodes: &[&str]) -> Lab {
    Lab::build(&star_topology(nodes, "198.18.0.0/16")).expect("building the lab")
}

/// The topology of [`star`], each node routing `via_router` (a prefix, or `default` for
/// nodes that reach everything through the router), to extend before building.
pub fn star_topology(nodes: &[&str], via_router: &str) -> Topology {
    let mut t = Topology::new().router(PUBLIC);
    for (i, n) in nodes.iter().enumerate() {
        let i = i + 1;
        let host_addr = format!("198.18.{i}.2/24");
        let router_addr = format!("198.18.{i}.1/24");
        t = t
            .host(n)
            .link(n, &[host_addr.as_str()], PUBLIC, &[router_addr.as_str()])
            .route(n, via_router, &format!("198.18.{i}.1"));
    }
    t
}

/// Drops every UDP datagram in and out of `host` (nftables), as a UDP-hostile firewall does:
/// only TCP gets through, so the node can reach its peers through a relay only.
pub fn block_udp(lab: &Lab, host: &str) {
    lab.run_ok(
        host,
        &[
            "nft",
            "add table inet noudp; \
             add chain inet noudp out { type filter hook output priority 0; }; \
             add chain inet noudp in { type filter hook input priority 0; }; \
             add rule inet noudp out meta l4proto udp drop; \
             add rule inet noudp in meta l4proto udp drop",
        ],
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("blocking UDP in {host}: {e}"));
}

/// The server's URL as the nodes use it.
pub fn control_url() -> String {
    format!("http://198.18.1.1:{CONTROL_PORT}")
}

/// The coordination server of a lab, on its SQLite file.
pub struct Control {
    pub db: String,
}

impl Control {
    pub fn new(lab: &Lab) -> Control {
        Control {
            db: format!("sqlite://{}", lab.dir().join("control.db").display()),
        }
    }

    /// Starts `pinhole-control serve` in the public namespace and waits until it listens.
    pub fn start(&self, lab: &mut Lab) -> Proc {
        self.start_with(lab, &[])
    }

    /// Like [`Control::start`], with more `serve` options.
    pub fn start_with(&self, lab: &mut Lab, extra: &[&str]) -> Proc {
        let bin = pinhole_control();
        let listen = format!("0.0.0.0:{CONTROL_PORT}");
        let mut argv = vec![
            bin.to_str().unwrap(),
            "--db",
            &self.db,
            "serve",
            "--listen",
            &listen,
            "--insecure-http",
        ];
        // The embedded relay's metrics on loopback in the public namespace (METRICS_URL).
        let metrics = format!("127.0.0.1:{METRICS_PORT}");
        if !extra.contains(&"--no-relay") {
            argv.extend_from_slice(&["--metrics-listen", &metrics]);
        }
        argv.extend_from_slice(extra);
        let p = lab.spawn(PUBLIC, &argv).expect("starting pinhole-control");
        let up = Lab::wait_for(Duration::from_secs(10), || {
            p.log_text().contains("pinhole-control is listening")
        });
        assert!(up, "pinhole-control did not start:\n{}", p.log_text());
        p
    }

    /// Runs an operator command (`authkey create`, `node list --json`, …); its stdout.
    pub fn cli(&self, lab: &Lab, args: &[&str]) -> String {
        let bin = pinhole_control();
        let mut argv = vec![bin.to_str().unwrap(), "--db", &self.db];
        argv.extend_from_slice(args);
        lab.run_ok(PUBLIC, &argv, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("pinhole-control {args:?}: {e}"))
    }

    /// A new reusable auth key, written to a 0600 file; the file's path.
    pub fn authkey_file(&self, lab: &Lab) -> PathBuf {
        self.authkey_file_in(lab, "default")
    }

    /// Like [`Control::authkey_file`], for nodes of `account`.
    pub fn authkey_file_in(&self, lab: &Lab, account: &str) -> PathBuf {
        let key = self.cli(
            lab,
            &[
                "authkey",
                "create",
                "--reusable",
                "--expiry",
                "1d",
                "--account",
                account,
            ],
        );
        let path = lab.dir().join("authkey");
        std::fs::write(&path, key.trim()).expect("writing the auth key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        path
    }

    /// The overlay IPv4 address of the node called `name`.
    pub fn address_of(&self, lab: &Lab, name: &str) -> String {
        let json = self.cli(lab, &["node", "list", "--json"]);
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&json).expect("node list --json");
        nodes
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["ipv4"].as_str())
            .unwrap_or_else(|| panic!("no node {name} in {json}"))
            .to_string()
    }
}

/// Starts pinholed in `host`, joining through control with the auth key in `authkey`, and waits
/// until it is up.
pub fn start_node(lab: &mut Lab, host: &str, authkey: &std::path::Path) -> Proc {
    let url = control_url();
    let port = NODE_PORT.to_string();
    start_pinholed_with(
        lab,
        host,
        &[
            "--control-url",
            &url,
            "--authkey-file",
            authkey.to_str().unwrap(),
            "--hostname",
            host,
            "--port",
            &port,
        ],
    )
}

/// Starts pinholed in `host` with no sign-in (it waits for `pinhole login`), and waits until
/// its local API listens.
pub fn start_signed_out(lab: &mut Lab, host: &str) -> Proc {
    let port = NODE_PORT.to_string();
    let p = crate::pinhole::spawn_pinholed(lab, host, &["--hostname", host, "--port", &port]);
    let up = Lab::wait_for(Duration::from_secs(10), || {
        p.log_text().contains("local API listening")
    });
    assert!(
        up,
        "pinholed in {host} did not start:
{}",
        p.log_text()
    );
    p
}

/// Starts coturn (a third-party STUN server) in STUN-only mode on `ip`:3478 in `host`.
pub fn start_stun_server(lab: &mut Lab, host: &str, ip: &str) -> Proc {
    start_coturn(lab, host, &[ip], 3478, None)
}

/// Starts coturn in STUN-only mode in `host` on every one of `ips` at `port`; with two
/// addresses and `alt_port` it also answers RFC 5780 behaviour discovery.
pub fn start_coturn(
    lab: &mut Lab,
    host: &str,
    ips: &[&str],
    port: u16,
    alt_port: Option<u16>,
) -> Proc {
    let port = port.to_string();
    let alt = alt_port.map(|p| p.to_string());
    let mut argv = vec!["turnserver", "--stun-only"];
    for ip in ips {
        argv.extend_from_slice(&["--listening-ip", ip]);
    }
    argv.extend_from_slice(&["--listening-port", &port]);
    if let Some(alt) = &alt {
        argv.extend_from_slice(&["--alt-listening-port", alt]);
    }
    argv.extend_from_slice(&[
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--log-file",
        "stdout",
        "--simple-log",
        "-c",
        "/dev/null",
    ]);
    let p = lab
        .spawn(host, &argv)
        .expect("starting turnserver (coturn; `cargo xtask test` installs it)");
    let up = Lab::wait_for(Duration::from_secs(10), || {
        p.log_text().contains("Total General servers")
            || p.log_text().contains("IPv4. UDP listener opened on")
    });
    assert!(up, "coturn did not start:\n{}", p.log_text());
    p
}

/// How many log lines contain every one of `parts`.
pub fn count_lines(p: &Proc, parts: &[&str]) -> usize {
    p.log_text()
        .lines()
        .filter(|l| parts.iter().all(|x| l.contains(x)))
        .count()
}

/// Waits until `p`'s log has a line with every one of `parts`; when it was first seen.
pub fn wait_line(p: &Proc, parts: &[&str], timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if count_lines(p, parts) > 0 {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds since midnight UTC of a tracing log line's timestamp (`2026-11-23T15:40:01.123456Z`).
pub fn line_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let time = t.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The time of the first log line of `p` containing every one of `parts`.
pub fn first_line_time(p: &Proc, parts: &[&str]) -> Option<f64> {
    p.log_text()
        .lines()
        .find(|l| parts.iter().all(|x| l.contains(x)))
        .and_then(line_time)
}

/// Starts dnsmasq in `host` as a lab resolver on `listen:port`: no upstream, no hosts file,
/// no cache, answering only `addresses` (dnsmasq's `/NAME/ADDRESS`; an empty address is
/// NXDOMAIN), each query logged to its output.
pub fn start_dnsmasq(
    lab: &mut Lab,
    host: &str,
    listen: &str,
    port: u16,
    addresses: &[&str],
) -> Proc {
    let mut argv: Vec<String> = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--cache-size=0",
        "--log-queries",
        "--log-facility=-",
        "--user=root",
        "--pid-file=",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(format!("--listen-address={listen}"));
    argv.push(format!("--port={port}"));
    argv.extend(addresses.iter().map(|a| format!("--address={a}")));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.spawn(host, &argv)
        .expect("starting dnsmasq (`cargo xtask test` installs dnsmasq-base)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tracing_timestamps() {
        let t = line_time("2026-11-23T15:40:01.250000Z  INFO pinholed: peer added").unwrap();
        assert!((t - (15.0 * 3600.0 + 40.0 * 60.0 + 1.25)).abs() < 1e-6);
        assert_eq!(line_time("garbage"), None);
    }
}
