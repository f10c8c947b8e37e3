//! The service definitions that no package test installs: the systemd unit for the
//! coordination server (checked by systemd itself) and the macOS launchd daemon (its plist
//! read back, and pointing at the paths pinholed and the app use on macOS).

use pinhole_install_tests::{run, run_ok, text};
use std::path::Path;

fn installer(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../installer")
        .join(path)
}

#[test]
fn the_coordination_servers_unit_passes_systemd_analyze_verify_without_a_word() {
    let test = "the_coordination_servers_unit_passes_systemd_analyze_verify_without_a_word";
    let binary = pinhole_netlab::mesh::pinhole_control();
    if !binary.is_file() {
        assert!(pinhole_testkit::skip(
            test,
            "pinhole-control is not built (PINHOLE_CONTROL_BIN)"
        ));
        return;
    }
    let unit = std::fs::read_to_string(installer("linux/pinhole-control.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/pinhole-control serve"));
    // verify wants the program to exist: the built one stands in for /usr/bin's.
    let dir = std::env::temp_dir().join(format!("pinhole-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("pinhole-control.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/pinhole-control", &binary.to_string_lossy()),
    )
    .unwrap();
    let out = run("systemd-analyze", &["verify", &copy.to_string_lossy()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
    let sysusers = std::fs::read_to_string(installer("linux/pinhole-control.sysusers")).unwrap();
    assert!(sysusers
        .lines()
        .any(|l| l.starts_with("u pinhole-control ")));
}

#[test]
fn the_launchd_daemon_runs_pinholed_with_the_paths_the_app_and_cli_use() {
    let plist = installer("macos/dev.pinhole.pinholed.plist");
    // Python's plistlib reads it as launchd would (and fails on malformed XML).
    let read = run_ok(
        "python3",
        &[
            "-c",
            "import plistlib, sys, json; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
            &plist.to_string_lossy(),
        ],
    );
    for needed in [
        r#""Label": "dev.pinhole.pinholed""#,
        r#""ProgramArguments": ["/usr/local/bin/pinholed", "--state-dir", "/Library/Application Support/Pinhole", "--socket", "/var/run/pinholed.sock"]"#,
        r#""RunAtLoad": true"#,
        r#""KeepAlive": {"SuccessfulExit": false}"#,
    ] {
        assert!(read.contains(needed), "the plist lacks {needed}: {read}");
    }
    let scripts = [
        "macos/scripts/postinstall",
        "macos/scripts/preinstall",
        "macos/uninstall.sh",
    ];
    for script in scripts {
        let out = run("sh", &["-n", &installer(script).to_string_lossy()]);
        assert!(out.status.success(), "{script}: {}", text(&out));
    }
    let post = std::fs::read_to_string(installer("macos/scripts/postinstall")).unwrap();
    assert!(post
        .contains("launchctl bootstrap system /Library/LaunchDaemons/dev.pinhole.pinholed.plist"));
    assert!(post.contains("dseditgroup -o edit -a \"$user\" -t user pinhole"));
}
