//! The programs the benches measure pinholed against, fetched where they are not installed, each
//! with the version a report names: the current wireguard-go (Debian 13's package, unpacked
//! under target/ without touching the machine's apt configuration), Debian 12's older build, and
//! boringtun-cli from crates.io.

use crate::{cmd, root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A program to run and the version to print beside its figures.
#[derive(Debug, Clone)]
pub struct Counterpart {
    pub path: PathBuf,
    pub version: String,
}

/// The suite the current wireguard-go comes from: Debian 13 (trixie) builds 0.0.20231211 with
/// TUN offloads and UDP GSO/GRO; Debian 12's 2022 build has neither.
const CURRENT_SUITE: &str = "trixie";

/// Debian 13's wireguard-go, downloaded once with apt from that suite alone (a private source
/// list, package lists and cache under target/bench-tools/; nothing else from that suite, and
/// the machine's own apt state untouched) and unpacked with dpkg-deb.
pub fn wireguard_go_current() -> Result<Counterpart> {
    let dir = root().join("target/bench-tools/wireguard-go-debian13");
    let bin = dir.join("root/usr/bin/wireguard-go");
    let version_file = dir.join("version");
    if let (true, Ok(version)) = (bin.exists(), std::fs::read_to_string(&version_file)) {
        return Ok(Counterpart {
            path: bin,
            version: version.trim().to_string(),
        });
    }
    for sub in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let sources = dir.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian {CURRENT_SUITE} main\n"
        ),
    )?;
    let opts = apt_options(&dir, &sources);
    let mut update: Vec<&str> = opts.iter().map(String::as_str).collect();
    update.push("update");
    cmd("apt-get", &update).context("apt-get update for Debian 13's wireguard-go")?;
    let mut download: Vec<&str> = opts.iter().map(String::as_str).collect();
    download.extend(["download", "wireguard-go"]);
    crate::cmd_in(&dir.join("debs"), "apt-get", &download)
        .context("apt-get download wireguard-go (Debian 13)")?;
    let deb = std::fs::read_dir(dir.join("debs"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let deb_arg = deb.to_string_lossy().into_owned();
    let out = Command::new("dpkg-deb")
        .args(["-f", &deb_arg, "Version"])
        .output()?;
    if !out.status.success() {
        bail!("dpkg-deb cannot read {}", deb.display());
    }
    let version = format!(
        "{} (Debian 13)",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let unpacked = dir.join("root");
    cmd("dpkg-deb", &["-x", &deb_arg, &unpacked.to_string_lossy()])?;
    if !bin.exists() {
        bail!("{} has no usr/bin/wireguard-go", deb.display());
    }
    std::fs::write(&version_file, &version)?;
    Ok(Counterpart { path: bin, version })
}

/// apt options that read only `sources` and keep lists, cache and status under `dir`.
fn apt_options(dir: &Path, sources: &Path) -> Vec<String> {
    let d = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
    [
        format!("Dir::Etc::SourceList={}", sources.display()),
        "Dir::Etc::SourceParts=/dev/null".to_string(),
        format!("Dir::State::Lists={}", d("lists")),
        format!("Dir::Cache={}", d("cache")),
        "Dir::State::Status=/dev/null".to_string(),
        // The download lands in a folder root owns; apt's sandbox user could not write it.
        "APT::Sandbox::User=root".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

/// The wireguard-go installed from this machine's own suite (Debian 12's 2022 build), if any.
pub fn wireguard_go_installed() -> Option<Counterpart> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "wireguard-go"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from("/usr/bin/wireguard-go");
    path.exists().then(|| Counterpart {
        path,
        version: format!("{version} (Debian 12)"),
    })
}

const BORINGTUN_VERSION: &str = "0.7.1";

/// boringtun-cli from crates.io, installed into target/bench-tools on first use.
pub fn boringtun_cli() -> Result<Counterpart> {
    let tools = root().join("target/bench-tools");
    let bin = tools.join("bin/boringtun-cli");
    if !bin.exists() {
        let root_arg = tools.to_string_lossy().into_owned();
        cmd(
            "cargo",
            &[
                "install",
                "boringtun-cli",
                "--version",
                BORINGTUN_VERSION,
                "--locked",
                "--root",
                &root_arg,
            ],
        )
        .with_context(|| format!("cannot install boringtun-cli {BORINGTUN_VERSION}"))?;
    }
    Ok(Counterpart {
        path: bin,
        version: format!("{BORINGTUN_VERSION} (crates.io)"),
    })
}
