//! Routes for peers' allowed IPs through the TUN device, added at start and removed at shutdown.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::process::Command;

/// The routes the device needs: every allowed IP not already covered by one of the device's own
/// address prefixes (the kernel adds those itself). Default routes are left out: sending all
/// traffic through the tunnel needs policy routing that pinholed does not do yet.
pub fn needed(own: &[IpNet], allowed: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for net in allowed {
        let net = net.trunc();
        if net.prefix_len() == 0 {
            tracing::warn!(
                "not routing {net} through the tunnel: full-tunnel mode is not supported"
            );
            continue;
        }
        if own.iter().any(|o| o.trunc().contains(&net)) || out.contains(&net) {
            continue;
        }
        out.push(net);
    }
    out
}

/// Routes `net` through the device `dev`.
pub fn add(dev: &str, net: &IpNet) -> Result<()> {
    run(&add_command(dev, net))
}

/// Removes the route for `net` through `dev` (errors are logged: the device may be gone already).
pub fn remove(dev: &str, net: &IpNet) {
    if let Err(e) = run(&remove_command(dev, net)) {
        tracing::debug!("removing route {net}: {e:#}");
    }
}

/// Runs a routing command; its stderr is the error when it fails.
pub(crate) fn run<S: AsRef<str>>(argv: &[S]) -> Result<()> {
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let (prog, args) = argv.split_first().context("empty command")?;
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn add_command(dev: &str, net: &IpNet) -> Vec<String> {
    command(dev, net, true)
}

fn remove_command(dev: &str, net: &IpNet) -> Vec<String> {
    command(dev, net, false)
}

#[cfg(target_os = "linux")]
fn command(dev: &str, net: &IpNet, add: bool) -> Vec<String> {
    let family = if net.addr().is_ipv6() { "-6" } else { "-4" };
    let verb = if add { "replace" } else { "del" };
    ["ip", family, "route", verb, &net.to_string(), "dev", dev]
        .map(String::from)
        .to_vec()
}

#[cfg(any(target_os = "macos", target_os = "freebsd"))]
fn command(dev: &str, net: &IpNet, add: bool) -> Vec<String> {
    let family = if net.addr().is_ipv6() {
        "-inet6"
    } else {
        "-inet"
    };
    let verb = if add { "add" } else { "delete" };
    [
        "route",
        "-n",
        verb,
        family,
        &net.to_string(),
        "-interface",
        dev,
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(windows)]
fn command(dev: &str, net: &IpNet, add: bool) -> Vec<String> {
    let family = if net.addr().is_ipv6() { "ipv6" } else { "ipv4" };
    let verb = if add { "add" } else { "delete" };
    let interface = format!("interface={dev}");
    let prefix = format!("prefix={net}");
    let mut argv: Vec<String> = [
        "netsh",
        "interface",
        family,
        verb,
        "route",
        &prefix,
        &interface,
    ]
    .map(String::from)
    .to_vec();
    if add {
        argv.push("store=active".into());
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_commands() {
        let net: IpNet = "fd01::/64".parse().unwrap();
        assert_eq!(
            add_command("ph0", &net).join(" "),
            "ip -6 route replace fd01::/64 dev ph0"
        );
        assert_eq!(
            remove_command("ph0", &net).join(" "),
            "ip -6 route del fd01::/64 dev ph0"
        );
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn skips_covered_duplicate_and_default_routes() {
        let own = nets(&["10.0.0.1/24", "fd00::1/64"]);
        let allowed = nets(&[
            "10.0.0.2/32",
            "10.1.0.0/16",
            "10.1.0.7/16",
            "fd00::2/128",
            "fd01::/64",
            "0.0.0.0/0",
        ]);
        assert_eq!(needed(&own, allowed), nets(&["10.1.0.0/16", "fd01::/64"]));
    }
}
