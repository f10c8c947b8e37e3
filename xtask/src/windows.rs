//! Windows builds from this machine: the MinGW target, and the environment that runs its
//! executables under Wine with the stand-in DLL Wine 8 lacks.

use crate::{cmd, packages};
use anyhow::Result;

/// The Rust target Windows executables are built for here.
pub const WINDOWS: &str = "x86_64-pc-windows-gnu";

/// The environment that builds Windows executables and runs them under Wine: warnings fail
/// the Windows build (for that target only, so the host's builds are untouched), cargo's runner
/// for the target, a prefix in target/, quiet, the stand-in DLL preferred
/// (`PINHOLE_WINE_STUB` names it). Every Windows build and run of the suite uses it, so they
/// share one set of compiled dependencies.
pub fn wine_env() -> Result<Vec<(&'static str, String)>> {
    const WINE: &str = "/usr/lib/wine/wine64";
    packages::ensure(&[(WINE, "wine64")])?;
    let target = crate::root().join("target");
    Ok(vec![
        (
            "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS",
            "-Dwarnings".to_string(),
        ),
        (
            "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER",
            WINE.to_string(),
        ),
        (
            "WINEPREFIX",
            target.join("wineprefix").to_string_lossy().into_owned(),
        ),
        ("WINEDEBUG", "-all".to_string()),
        ("WINEDLLOVERRIDES", "bcryptprimitives=n,b".to_string()),
        (
            "PINHOLE_WINE_STUB",
            wine_stub()?.to_string_lossy().into_owned(),
        ),
    ])
}

/// Wine 8 lacks `ProcessPrng`, which Rust's std needs: a small stand-in DLL, built with MinGW,
/// to put beside Windows executables run under Wine (never into a package).
pub fn wine_stub() -> Result<std::path::PathBuf> {
    let stub_dir = crate::root().join("target").join("wine-stub");
    std::fs::create_dir_all(&stub_dir)?;
    let source = stub_dir.join("bcryptprimitives.c");
    std::fs::write(&source, include_str!("bcryptprimitives_stub.c"))?;
    let dll = stub_dir.join("bcryptprimitives.dll");
    cmd(
        "x86_64-w64-mingw32-gcc",
        &[
            "-shared",
            "-O2",
            "-o",
            dll.to_str().unwrap_or_default(),
            source.to_str().unwrap_or_default(),
            "-ladvapi32",
        ],
    )?;
    Ok(dll)
}
