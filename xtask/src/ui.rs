//! The app's web UI in the xtask: its npm packages (`npm ci`), the type check and build that
//! src-tauri embeds (ui/dist), and its component tests (Vitest), counted in the run's summary.

use crate::summary::{Suite, Summary};
use crate::{cmd_in, packages};
use anyhow::{bail, Context, Result};

fn ui_dir() -> std::path::PathBuf {
    crate::root().join("ui")
}

/// The tauri-driver release the end-to-end test is written against.
const TAURI_DRIVER: &str = "2.1.0";

/// Installs the UI's packages as locked and builds ui/dist; installs what the app's build and
/// its end-to-end test need, and the test OpenID provider's packages.
pub fn build() -> Result<()> {
    packages::ensure(packages::APP)?;
    let have_driver = std::process::Command::new("tauri-driver")
        .arg("--help")
        .output()
        .is_ok();
    if !have_driver {
        crate::cmd(
            "cargo",
            &[
                "install",
                "tauri-driver",
                "--version",
                TAURI_DRIVER,
                "--locked",
            ],
        )?;
    }
    // The OpenID provider the control tests and the app's e2e test sign in through.
    let idp = crate::root().join("crates/control/tests/oidc-provider");
    cmd_in(&idp, "npm", &["ci", "--no-audit", "--no-fund"])?;
    let ui = ui_dir();
    cmd_in(&ui, "npm", &["ci", "--no-audit", "--no-fund"])?;
    cmd_in(&ui, "npm", &["run", "build"])
}

/// Runs the component tests and adds them to the summary.
pub fn test(summary: &mut Summary) -> Result<()> {
    let report = crate::root().join("target").join("ui-tests.json");
    let _ = std::fs::remove_file(&report);
    let out = format!("--outputFile.json={}", report.display());
    let ran = cmd_in(
        &ui_dir(),
        "npx",
        &[
            "vitest",
            "run",
            "--reporter=default",
            "--reporter=json",
            &out,
        ],
    );
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("the UI tests wrote no report at {}", report.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).context("the UI tests' report")?;
    let count = |k: &str| v.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
    summary.add(Suite {
        name: "ui (vitest)".into(),
        passed: count("numPassedTests"),
        failed: count("numFailedTests"),
        ignored: count("numPendingTests") + count("numTodoTests"),
    });
    ran?;
    if count("numTotalTests") == 0 {
        bail!("the UI tests found no tests");
    }
    Ok(())
}
