//! A node that forwards for its peers (approved subnet routes, an exit node), on Linux: IP
//! forwarding on, and what it forwards from the mesh into its LAN or the internet masqueraded
//! behind its own address, with nftables rules in a table of its own (`inet pinhole`). Hosts
//! on the LAN then answer the router, whatever the mesh's addresses are.
//!
//! Turned on while the tunnel is up with approved routes; `down`, logout and exit turn it off:
//! the table is deleted, and a forwarding switch pinholed turned on is turned off again (the
//! switches it found on stay on). What it changed is written to the state directory first, so
//! the next start puts back what a crash left.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use std::path::{Path, PathBuf};

/// The nftables table (family inet).
pub const NFT_TABLE: &str = "pinhole";
/// The record of the switches turned on, in the state directory.
const RECORD: &str = "forwarding.json";

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Forwarding as turned on.
#[derive(Debug)]
pub struct Forwarding {
    record: PathBuf,
    /// The switches this turned on.
    switched: Vec<String>,
}

/// The nftables script: the table replaced as a whole (one transaction), masquerading what
/// comes from the mesh's ranges and leaves by another interface than the tunnel's.
pub fn nft_script(dev: &str, mesh: &[IpNet]) -> String {
    let mut rules = String::new();
    for net in mesh {
        let family = if net.addr().is_ipv6() { "ip6" } else { "ip" };
        rules.push_str(&format!(
            "    {family} saddr {} oifname != \"{dev}\" masquerade\n",
            net.trunc()
        ));
    }
    format!(
        "table inet {NFT_TABLE}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         {rules}\
         \x20 }}\n\
         }}\n"
    )
}

impl Forwarding {
    /// Turns forwarding on for `dev`, masquerading `mesh` (the overlay's ranges); IPv6
    /// forwarding only when `v6` (it makes Linux ignore router advertisements).
    pub fn enable(state_dir: &Path, dev: &str, mesh: &[IpNet], v6: bool) -> Result<Forwarding> {
        if !cfg!(target_os = "linux") {
            bail!("forwarding for peers is supported on Linux only for now");
        }
        let record = state_dir.join(RECORD);
        let mut switched = Vec::new();
        let knobs: &[&str] = if v6 {
            &[IPV4_FORWARD, IPV6_FORWARD]
        } else {
            &[IPV4_FORWARD]
        };
        for knob in knobs {
            let now =
                std::fs::read_to_string(knob).with_context(|| format!("cannot read {knob}"))?;
            if now.trim() == "0" {
                switched.push(knob.to_string());
                save(&record, &switched)?;
                if let Err(e) = std::fs::write(knob, "1") {
                    undo(&record, &switched);
                    return Err(e).with_context(|| format!("cannot turn on {knob}"));
                }
            }
        }
        if let Err(e) = nft(&nft_script(dev, mesh)) {
            undo(&record, &switched);
            return Err(e)
                .context("the masquerading rules could not be added (is nftables installed?)");
        }
        tracing::info!(device = dev, "forwarding for peers: on");
        Ok(Forwarding { record, switched })
    }

    /// Turns it all off again.
    pub fn disable(self) {
        undo(&self.record, &self.switched);
        tracing::info!("forwarding for peers: off");
    }
}

/// Puts back what a pinholed that did not stop cleanly left on.
#[cfg(target_os = "linux")]
pub fn clean_leftovers(state_dir: &Path) {
    let record = state_dir.join(RECORD);
    let switched: Vec<String> = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    undo(&record, &switched);
}

fn undo(record: &Path, switched: &[String]) {
    if cfg!(target_os = "linux") {
        if let Err(e) = nft(&format!(
            "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        )) {
            tracing::debug!("deleting the nftables table: {e:#}");
        }
    }
    for knob in switched
        .iter()
        .filter(|k| [IPV4_FORWARD, IPV6_FORWARD].contains(&k.as_str()))
    {
        if let Err(e) = std::fs::write(knob, "0") {
            tracing::warn!("cannot turn {knob} off again: {e}");
        }
    }
    let _ = std::fs::remove_file(record);
}

fn save(record: &Path, switched: &[String]) -> Result<()> {
    let bytes = serde_json::to_vec(switched)?;
    std::fs::write(record, bytes).with_context(|| format!("cannot write {}", record.display()))
}

fn nft(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_replaces_the_table_and_masquerades_the_mesh_leaving_elsewhere() {
        let mesh: Vec<IpNet> = vec![
            "100.64.0.7/10".parse().unwrap(),
            "fd7a:115c:a1e0::7/48".parse().unwrap(),
        ];
        let s = nft_script("ph0", &mesh);
        assert!(
            s.starts_with("table inet pinhole\ndelete table inet pinhole\n"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr 100.64.0.0/10 oifname != \"ph0\" masquerade"),
            "{s}"
        );
        assert!(
            s.contains("ip6 saddr fd7a:115c:a1e0::/48 oifname != \"ph0\" masquerade"),
            "{s}"
        );
        assert!(
            s.contains("type nat hook postrouting priority srcnat"),
            "{s}"
        );
    }
}
