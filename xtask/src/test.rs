//! `cargo xtask test`: everything CI runs — formatting, lints, the code's shape, unit, netsim,
//! netlab, interop, the desktop app (its UI's component tests and its end-to-end test), the
//! Windows and macOS cross-checks, the hosted-CI workflow's schema, and the packages.

use crate::summary::Summary;
use crate::windows::{wine_env, wine_stub, WINDOWS};
use crate::{build_release_binaries, cmd, packages, require_root, ui};
use anyhow::Result;
use std::process::Command;

pub fn run() -> Result<()> {
    let mut summary = Summary::default();
    let result = steps(&mut summary);
    // The summary closes the run whether it passed or not.
    let failed = result.as_ref().err().map(|e| format!("{e:#}"));
    summary.print(failed.as_deref());
    result?;
    eprintln!("\nall tests passed");
    Ok(())
}

fn steps(summary: &mut Summary) -> Result<()> {
    // Every test must do its real part: one that cannot (no root, no PostgreSQL, …) fails.
    std::env::set_var(pinhole_testkit::REQUIRE_ALL, "1");
    require_root("cargo xtask test")?;
    summary.step("packages");
    packages::ensure(packages::LAB)?;
    packages::ensure(packages::TEST)?;
    remove_stale_namespaces();
    summary.step("cargo fmt --check");
    cmd("cargo", &["fmt", "--all", "--", "--check"])?;
    cmd(
        "cargo",
        &["fmt", "--all", "--manifest-path", NETSIM, "--", "--check"],
    )?;
    // The app (src-tauri) embeds the built web UI: it comes first.
    summary.step("the UI's build (npm ci, type check, ui/dist; the test OpenID provider's npm ci)");
    ui::build()?;
    summary.step("cargo clippy");
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
    cmd(
        "cargo",
        &[
            "clippy",
            "--manifest-path",
            NETSIM,
            "--target-dir",
            "target",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The fuzz targets (a workspace of their own, built by nothing else here) compile and are
    // lint-clean; fuzzing itself is `cargo xtask fuzz`, outside the tests.
    summary.step("the fuzz targets compile (clippy)");
    cmd(
        "cargo",
        &["fmt", "--all", "--manifest-path", FUZZ, "--", "--check"],
    )?;
    cmd(
        "cargo",
        &[
            "clippy",
            "--manifest-path",
            FUZZ,
            "--bins",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The code's shape: no file over 800 lines of code, no function over 120, no import circle.
    summary.step("the code's shape (cargo xtask shape)");
    crate::shape::run(&["--quiet"])?;
    // The simulated clock stays out of every build of the product.
    summary.step("no sim-clock in the workspace's feature graph");
    no_simulated_clock_in_the_workspace()?;
    // The system tests run the release daemon: what users get, and fast enough for 100 MiB.
    // It is built as a contributor builds it, `cargo build --release` at the root, so every
    // system test starts that pinholed.
    summary.step("cargo build --release");
    build_release_binaries()?;
    summary.step("the contributor's pinholed starts");
    the_contributors_pinholed_starts()?;
    // The package tests need the packages: they run at the end.
    summary.step("cargo test --workspace");
    summary.cargo_test(
        "",
        &["--workspace", "--exclude", "pinhole-install-tests"],
        &[],
    )?;
    // netsim is a workspace of its own (it runs the engine on the simulated clock).
    summary.step("netsim's tests");
    summary.cargo_test(
        "",
        &["--manifest-path", NETSIM, "--target-dir", "target"],
        &[],
    )?;
    summary.step("the UI's component tests");
    ui::test(summary)?;
    summary.step("Windows cross-check");
    let windows = cross_check_windows(summary)?;
    if windows {
        summary.step("Windows unit tests under Wine");
        test_windows_under_wine(summary)?;
    }
    summary.step("macOS checks");
    cross_check_macos(summary)?;
    summary.step("hosted-CI workflow lint");
    lint_workflows()?;
    summary.step("packages: .deb, .rpm, Windows installer");
    // The .deb (installed, used, removed and purged here), the .rpm and the Windows installer
    // (under Wine), built from this run's binaries.
    crate::package::test(summary, windows)
}

/// The fuzz targets' manifest (cargo-fuzz's crate, outside the workspace).
const FUZZ: &str = "fuzz/Cargo.toml";

/// netsim's manifest: a workspace of its own, outside the main one. Its builds share the root's
/// `target/` (`--target-dir target`, run from the root; its `.cargo/config.toml` says the same for
/// a cargo run inside crates/netsim), so nothing is built into crates/netsim/target.
const NETSIM: &str = "crates/netsim/Cargo.toml";

/// Fails if any build of the main workspace would compile the engine with its simulated clock:
/// cargo's resolved features for the whole workspace (what `cargo build` at the root unifies)
/// must not include the engine's `sim-clock`.
fn no_simulated_clock_in_the_workspace() -> Result<()> {
    let out = Command::new("cargo")
        .args([
            "tree",
            "--workspace",
            "--edges",
            "features",
            "--invert",
            "pinhole-engine",
            "--prefix",
            "none",
        ])
        .current_dir(crate::root())
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    if !tree.contains("pinhole-engine") {
        anyhow::bail!("cargo tree did not list pinhole-engine:\n{tree}");
    }
    if let Some(line) = tree.lines().find(|l| l.contains("sim-clock")) {
        anyhow::bail!(
            "a workspace build turns on the engine's simulated clock ({line}): only netsim, \
             outside the workspace, may"
        );
    }
    eprintln!("the workspace's feature graph has no sim-clock");
    Ok(())
}

/// Starts the pinholed that `cargo build --release` at the root just built, in a namespace of
/// its own, and asks it for its status over its local API with the CLI from the same build: a
/// daemon that refuses to start (the simulated clock, a missing feature) fails the run here,
/// before any system test.
fn the_contributors_pinholed_starts() -> Result<()> {
    use anyhow::Context;
    use pinhole_netlab::{Lab, Topology};
    use std::time::Duration;
    let release = crate::root().join("target/release");
    let (pinholed, pinhole) = (release.join("pinholed"), release.join("pinhole"));
    let mut lab = Lab::build(&Topology::new().host("a")).context("building a one-host lab")?;
    let dir = lab.dir().to_path_buf();
    let (state, socket) = (dir.join("state"), dir.join("api.sock"));
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let argv = [
        path(&pinholed),
        "--state-dir".into(),
        path(&state),
        "--socket".into(),
        path(&socket),
        "--tun-name".into(),
        "ph0".into(),
        "--port".into(),
        "0".into(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let daemon = lab.spawn("a", &argv).context("starting pinholed")?;
    let mut status = None;
    let answered = Lab::wait_for(Duration::from_secs(15), || {
        status = lab
            .run(
                "a",
                &[
                    &path(&pinhole),
                    "--socket",
                    &path(&socket),
                    "status",
                    "--json",
                ],
                Duration::from_secs(5),
            )
            .ok()
            .filter(|o| o.status.success());
        status.is_some()
    });
    let running = lab.is_running(&daemon);
    let log = daemon.log_text();
    lab.stop(&daemon, Duration::from_secs(5));
    if !answered || !running {
        anyhow::bail!(
            "the pinholed of `cargo build --release` did not start and answer `pinhole status`:\n{log}"
        );
    }
    let out = status.map(|o| o.stdout).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&out)
        .with_context(|| format!("pinhole status --json: {}", String::from_utf8_lossy(&out)))?;
    eprintln!(
        "the contributor's build of pinholed started and answered (state: {})",
        json.get("state").unwrap_or(&serde_json::Value::Null)
    );
    Ok(())
}

/// Checks the hosted-CI workflows (.github/workflows) against GitHub's workflow schema with
/// check-jsonschema (installed from PyPI into a virtualenv in target/ when missing).
fn lint_workflows() -> Result<()> {
    let venv = crate::root().join("target/lint-venv");
    let checker = venv.join("bin/check-jsonschema");
    if !checker.exists() {
        packages::ensure(&[("/usr/lib/python3*/ensurepip/__init__.py", "python3-venv")])?;
        cmd("python3", &["-m", "venv", &venv.to_string_lossy()])?;
        cmd(
            &venv.join("bin/pip").to_string_lossy(),
            &["install", "--quiet", "check-jsonschema==0.39.0"],
        )?;
    }
    let dir = crate::root().join(".github/workflows");
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if files.is_empty() {
        anyhow::bail!("no workflow in {}", dir.display());
    }
    files.sort();
    let mut args = vec!["--builtin-schema", "vendor.github-workflows"];
    args.extend(files.iter().map(String::as_str));
    cmd(&checker.to_string_lossy(), &args)
}

/// Checks that the node's crates (daemon, CLI, client, engine, formats, relay, control client,
/// WebSocket adapter) build for macOS on Apple silicon and Intel, with warnings as errors.
/// Apple's SDK is not here: ring's C is compiled freestanding by clang against three small
/// stand-in headers (`xtask/src/macos_stub`; the objects are never linked). pinhole-control
/// (SQLite's C needs the C library's headers) and the app (Cocoa) are left to a Mac. Skips,
/// loudly and in the summary, only when a Rust target cannot be installed here.
fn cross_check_macos(summary: &mut Summary) -> Result<()> {
    const TARGETS: [&str; 2] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];
    packages::ensure(&[("clang", "clang")])?;
    let stub = crate::root().join("target").join("macos-stub");
    std::fs::create_dir_all(&stub)?;
    for (name, text) in [
        (
            "TargetConditionals.h",
            include_str!("macos_stub/TargetConditionals.h"),
        ),
        ("assert.h", include_str!("macos_stub/assert.h")),
        ("string.h", include_str!("macos_stub/string.h")),
    ] {
        std::fs::write(stub.join(name), text)?;
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for target in TARGETS {
        if !installed.contains(target) && cmd("rustup", &["target", "add", target]).is_err() {
            summary.skip(
                &format!("macOS check for {target}"),
                &format!("the Rust target {target} cannot be installed here"),
            );
            continue;
        }
        let mut args = vec!["check", "--target", target];
        for p in [
            "pinhole-daemon",
            "pinhole-dataplane",
            "pinhole-portmap",
            "pinhole-relay-dial",
            "pinhole-dns",
            "pinhole-cli",
            "pinhole-client",
            "pinhole-engine",
            "pinhole-proto",
            "pinhole-relay",
            "pinhole-control-client",
            "pinhole-wsio",
        ] {
            args.extend(["-p", p]);
        }
        let env_target = target.replace('-', "_");
        let cflags = format!("-ffreestanding -nostdlibinc -I{}", stub.display());
        eprintln!("$ RUSTFLAGS=-Dwarnings cargo {}", args.join(" "));
        let status = Command::new("cargo")
            .args(&args)
            .env("RUSTFLAGS", "-Dwarnings")
            .env(format!("CC_{env_target}"), "clang")
            .env(format!("CFLAGS_{env_target}"), &cflags)
            .current_dir(crate::root())
            .status()?;
        if !status.success() {
            anyhow::bail!("the macOS check for {target} failed ({status})");
        }
    }
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

/// The crates a node runs (pinholed, the CLI, the app's client library and what they are made
/// of): checked for Windows and their unit tests run under Wine.
const NODE_CRATES: [&str; 10] = [
    "pinhole-proto",
    "pinhole-engine",
    "pinhole-daemon",
    "pinhole-dataplane",
    "pinhole-portmap",
    "pinhole-relay-dial",
    "pinhole-dns",
    "pinhole-client",
    "pinhole-cli",
    "pinhole-wsio",
];

/// Checks that the daemon, the coordination server and the CLI build for Windows, warnings
/// failing the check (the app is built for Windows for its installer's test, after the tests).
/// Skips, loudly and in the summary, only when the Rust target cannot be installed here; a
/// missing MinGW compiler (ring builds C) or a build error fails the run. True if it ran.
fn cross_check_windows(summary: &mut Summary) -> Result<bool> {
    const TARGET: &str = WINDOWS;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(TARGET));
    if !installed && cmd("rustup", &["target", "add", TARGET]).is_err() {
        summary.skip(
            "Windows cross-check and Windows unit tests",
            &format!("the Rust target {TARGET} cannot be installed here"),
        );
        return Ok(false);
    }
    packages::ensure(&[("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64")])?;
    // Warnings fail the check too: code behind cfg(unix) leaves things unused elsewhere.
    let mut args = vec!["check", "--target", TARGET];
    for p in
        NODE_CRATES
            .iter()
            .chain(&["pinhole-control", "pinhole-control-client", "pinhole-relay"])
    {
        args.extend(["-p", p]);
    }
    eprintln!("$ RUSTFLAGS=-Dwarnings cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(args)
        .env("RUSTFLAGS", "-Dwarnings")
        .current_dir(crate::root())
        .status()?;
    if !status.success() {
        anyhow::bail!("the Windows cross-check failed ({status})");
    }
    Ok(true)
}

/// Runs the Windows unit tests of the node's crates (the named-pipe local API, the credential
/// store, the service, the engine) under Wine. Wine missing or a failing test fails the run.
fn test_windows_under_wine(summary: &mut Summary) -> Result<()> {
    let env = wine_env()?;
    let packages: Vec<&str> = NODE_CRATES.iter().flat_map(|p| ["-p", p]).collect();
    let mut build = vec!["test", "--no-run", "--target", WINDOWS];
    build.extend_from_slice(&packages);
    crate::cmd_env("cargo", &build, &env)?;
    let target = crate::root().join("target");
    std::fs::copy(
        wine_stub()?,
        target.join(WINDOWS).join("debug/deps/bcryptprimitives.dll"),
    )?;
    let mut run = vec!["--target", WINDOWS];
    run.extend_from_slice(&packages);
    summary.cargo_test("windows, under Wine", &run, &env)?;
    Ok(())
}
