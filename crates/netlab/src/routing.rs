//! What route tests read in a lab: which source address a host's HTTP server saw (a router's
//! masquerade, an exit node's), and a host's whole routing state to compare before and after.

use crate::pinhole::tool;
use crate::Lab;
use std::time::Duration;

/// `GET /` from the `netlab-tool http` server at `dst`, asked in `host`: the source address
/// the server saw, or why it failed.
pub fn http_source(lab: &Lab, host: &str, dst: &str) -> Result<String, String> {
    let t = tool();
    let out = lab
        .run(
            host,
            &[t.to_str().unwrap_or("netlab-tool"), "get", dst, "1500"],
            Duration::from_secs(5),
        )
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.strip_prefix("you are ") {
        Some(ip) if out.status.success() => Ok(ip.to_string()),
        _ => Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// `host`'s rules, every routing table, the nftables ruleset and the IPv4 forwarding switch
/// (link-local addresses left out: the kernel's, in their own time).
pub fn routing_state(lab: &Lab, host: &str) -> String {
    let mut out = String::new();
    for argv in [
        &["ip", "-4", "rule"][..],
        &["ip", "-6", "rule"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["nft", "list", "ruleset"],
        &["sysctl", "-n", "net.ipv4.ip_forward"],
    ] {
        out.push_str(
            &lab.run_ok(host, argv, Duration::from_secs(5))
                .unwrap_or_default(),
        );
    }
    out.lines()
        .filter(|l| !l.contains("fe80:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `pinhole ARGS` in `host`; panics with its output if it fails.
pub fn pinhole_ok(lab: &Lab, host: &str, args: &[&str]) {
    let (ok, out, err) = crate::mesh::pinhole(lab, host, args);
    assert!(ok, "pinhole {args:?} on {host}: {out}{err}");
}
