//! What the package tests share: where `cargo xtask test` (or `cargo xtask package`) put the
//! packages, and running a command for its output. The tests are in `tests/`; they need the
//! packages built first, so `cargo xtask test` runs them after packaging, not with the
//! workspace's other tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Names the directory with the built packages.
pub const PACKAGES_DIR: &str = "PINHOLE_PACKAGES_DIR";

/// The one file in the packages directory whose name starts with `prefix` and ends with
/// `suffix`, or why there is none.
pub fn package(prefix: &str, suffix: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os(PACKAGES_DIR).ok_or_else(|| {
        format!("{PACKAGES_DIR} is not set: build the packages with cargo xtask test or cargo xtask package")
    })?;
    let dir = Path::new(&dir);
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no {prefix}*{suffix} in {}", dir.display())),
        _ => Err(format!(
            "more than one {prefix}*{suffix} in {}",
            dir.display()
        )),
    }
}

/// Runs `program args`, returning its output (whatever its exit status).
pub fn run(program: &str, args: &[&str]) -> Output {
    run_env(program, args, &[])
}

/// Like [`run`], with extra environment variables.
pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs `program args` and returns its standard output; a failure panics with its output.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard output and error together, for messages and searches.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
