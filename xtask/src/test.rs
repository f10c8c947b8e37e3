//! `cargo xtask test`: everything CI runs — formatting, lints, unit, netsim, netlab and interop.

use crate::{build_release_binaries, cmd, packages, require_root};
use anyhow::Result;
use std::process::Command;

pub fn run() -> Result<()> {
    require_root("cargo xtask test")?;
    packages::ensure(packages::LAB)?;
    packages::ensure(packages::TEST)?;
    remove_stale_namespaces();
    cmd("cargo", &["fmt", "--all", "--", "--check"])?;
    cmd(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The system tests run the release daemon: what users get, and fast enough for 100 MiB.
    build_release_binaries()?;
    cmd("cargo", &["test", "--workspace"])?;
    cross_check_windows()?;
    eprintln!("\nall tests passed");
    Ok(())
}

/// Namespaces left by an earlier run that was killed before its labs could clean up.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        // Lab names are ph<pid>x<n>-<host>; only those whose process is gone are stale.
        let Some(pid) = name
            .strip_prefix("ph")
            .and_then(|r| r.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Checks that the daemon and the coordination server build for Windows. Skips, loudly, when the Rust target or the MinGW
/// compiler (ring builds C) cannot be installed here; a build error fails the run.
fn cross_check_windows() -> Result<()> {
    const TARGET: &str = "x86_64-pc-windows-gnu";
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(TARGET));
    if !installed && cmd("rustup", &["target", "add", TARGET]).is_err() {
        eprintln!("\n!!! SKIPPED: Windows cross-check: the {TARGET} target cannot be installed here !!!\n");
        return Ok(());
    }
    if let Err(e) = packages::ensure(&[("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64")]) {
        eprintln!("\n!!! SKIPPED: Windows cross-check: no MinGW compiler ({e:#}) !!!\n");
        return Ok(());
    }
    // Warnings fail the check too: code behind cfg(unix) leaves things unused elsewhere.
    let args = [
        "check",
        "--target",
        TARGET,
        "-p",
        "pinhole-daemon",
        "-p",
        "pinhole-engine",
        "-p",
        "pinhole-proto",
        "-p",
        "pinhole-control",
        "-p",
        "pinhole-control-client",
        "-p",
        "pinhole-cli",
    ];
    eprintln!("$ RUSTFLAGS=-Dwarnings cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(args)
        .env("RUSTFLAGS", "-Dwarnings")
        .current_dir(crate::root())
        .status()?;
    if !status.success() {
        anyhow::bail!("the Windows cross-check failed ({status})");
    }
    Ok(())
}
