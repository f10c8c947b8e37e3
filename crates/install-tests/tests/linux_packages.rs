//! The Linux packages as a user gets them. The .deb is installed on this machine with dpkg
//! (there is no systemd running here: the unit is checked with `systemd-analyze verify` and
//! pinholed is started exactly as its `ExecStart=` says, in a network namespace of the test's
//! own, with `$NOTIFY_SOCKET` as systemd would set it), used through the installed socket by a
//! member of the group pinhole and refused to a non-member, then removed and purged: nothing
//! is left. The .rpm's contents and scripts are listed and checked.

use pinhole_install_tests::{package, run, run_env, run_ok, text};
use pinhole_netlab::{Lab, Topology};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

const UNIT: &str = "/usr/lib/systemd/system/pinholed.service";

/// (path, mode) of every file the packages install.
const FILES: &[(&str, u32)] = &[
    ("/usr/bin/pinhole", 0o755),
    ("/usr/bin/pinholed", 0o755),
    ("/usr/bin/pinhole-app", 0o755),
    (UNIT, 0o644),
    ("/usr/lib/sysusers.d/pinhole.conf", 0o644),
    ("/usr/share/applications/pinhole.desktop", 0o644),
    ("/usr/share/icons/hicolor/32x32/apps/pinhole.png", 0o644),
    ("/usr/share/icons/hicolor/64x64/apps/pinhole.png", 0o644),
    ("/usr/share/icons/hicolor/128x128/apps/pinhole.png", 0o644),
    ("/usr/share/icons/hicolor/256x256/apps/pinhole.png", 0o644),
    ("/usr/share/doc/pinhole/README", 0o644),
    ("/usr/share/doc/pinhole/copyright", 0o644),
];

fn group_exists() -> bool {
    run("getent", &["group", "pinhole"]).status.success()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "pinhole"]).status.success()
}

fn groups_of(user: &str) -> Vec<String> {
    run_ok("id", &["-nG", user])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Undoes whatever the test did to the machine, also when it fails halfway.
struct Cleanup {
    users: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("pkill", &["-KILL", "-f", "^/usr/bin/pinholed( |$)"]);
        if installed() {
            let _ = run("dpkg", &["--purge", "pinhole"]);
        }
        for user in &self.users {
            let _ = run("userdel", &[user]);
        }
        if Path::new("/sys/class/net/pinhole0").exists() {
            let _ = run("ip", &["link", "delete", "pinhole0"]);
        }
        let _ = std::fs::remove_dir_all("/run/pinhole");
        let _ = std::fs::remove_dir_all("/var/lib/pinhole");
        if group_exists() {
            let _ = run("groupdel", &["pinhole"]);
        }
    }
}

#[test]
fn the_deb_installs_serves_its_group_and_is_removed_and_purged_without_a_trace() {
    let test = "the_deb_installs_serves_its_group_and_is_removed_and_purged_without_a_trace";
    if pinhole_netlab::skip_without_root(test) {
        return;
    }
    let deb = match package("pinhole_", ".deb") {
        Ok(p) => p,
        Err(why) => {
            assert!(pinhole_testkit::skip(test, &why));
            return;
        }
    };
    // This machine's own Pinhole, if it had one, is not the test's to replace.
    assert!(
        !installed(),
        "a pinhole package is installed here: the test would replace it"
    );
    for (what, taken) in [
        ("the group pinhole", group_exists()),
        ("/var/lib/pinhole", Path::new("/var/lib/pinhole").exists()),
        (
            "/run/pinhole with something in it",
            std::fs::read_dir("/run/pinhole").is_ok_and(|mut d| d.next().is_some()),
        ),
        (
            "a device pinhole0",
            Path::new("/sys/class/net/pinhole0").exists(),
        ),
    ] {
        assert!(
            !taken,
            "{what} exists here already: the test would take it over"
        );
    }
    let member = format!("phm{}", std::process::id());
    let other = format!("pho{}", std::process::id());
    let mut cleanup = Cleanup { users: vec![] };
    for user in [&member, &other] {
        run_ok(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ],
        );
        cleanup.users.push(user.clone());
    }

    // Installed with sudo by `member`: the group is made and `member` is put in it, told when
    // that takes effect.
    let out = run_env(
        "dpkg",
        &["--install", &deb.to_string_lossy()],
        &[("SUDO_USER", member.as_str())],
    );
    let said = text(&out);
    assert!(out.status.success(), "dpkg --install failed:\n{said}");
    assert!(
        said.contains(&format!("added {member} to the group pinhole"))
            && said.contains("next login"),
        "the install does not tell the user about the group:\n{said}"
    );
    assert!(
        said.contains("/usr/bin/pinholed --state-dir /var/lib/pinhole"),
        "without systemd the install says how to start pinholed:\n{said}"
    );
    for (path, mode) in FILES {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "mode of {path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "owner of {path}");
    }
    let listed = run_ok("dpkg", &["--listfiles", "pinhole"]);
    for (path, _) in FILES {
        assert!(
            listed.lines().any(|l| l == *path),
            "dpkg does not list {path}"
        );
    }
    assert!(group_exists(), "the group pinhole was not made");
    let gid: u32 = run_ok("getent", &["group", "pinhole"])
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .expect("the group's id");
    assert!(gid < 1000, "pinhole is a system group (gid {gid})");
    assert!(groups_of(&member).contains(&"pinhole".to_string()));
    assert!(!groups_of(&other).contains(&"pinhole".to_string()));

    // The unit as systemd would read it.
    let verify = run("systemd-analyze", &["verify", UNIT]);
    assert!(
        verify.status.success(),
        "systemd-analyze verify {UNIT}:\n{}",
        text(&verify)
    );
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    assert!(unit.contains("Type=notify"));

    // Started as systemd starts it: its directories made as RuntimeDirectory= and
    // StateDirectory= make them, readiness expected on $NOTIFY_SOCKET.
    std::fs::create_dir_all("/run/pinhole").unwrap();
    std::fs::set_permissions("/run/pinhole", std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all("/var/lib/pinhole").unwrap();
    std::fs::set_permissions("/var/lib/pinhole", std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut lab = Lab::build(&Topology::new().host("svc")).expect("a namespace for pinholed");
    let notify_path = lab.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    let daemon = lab
        .spawn_env(
            "svc",
            &argv,
            &[("NOTIFY_SOCKET", &notify_path.to_string_lossy())],
        )
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("pinholed never said READY=1 ({e}):\n{}", daemon.log_text()));
    assert_eq!(&buf[..n], b"READY=1");
    let socket = std::fs::metadata("/run/pinhole/pinholed.sock").expect("the local API socket");
    assert_eq!(socket.permissions().mode() & 0o777, 0o660);
    assert_eq!(socket.gid(), gid, "the socket belongs to the group pinhole");

    // A member of the group is answered; anyone else is refused, in words.
    let out = run(
        "runuser",
        &["-u", &member, "--", "/usr/bin/pinhole", "status"],
    );
    assert!(
        out.status.success(),
        "pinhole status as a member:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("not signed in"), "{}", text(&out));
    let out = run(
        "runuser",
        &["-u", &other, "--", "/usr/bin/pinhole", "status"],
    );
    assert!(
        !out.status.success(),
        "a non-member was answered:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("join the group pinhole"),
        "the refusal says what to do:\n{}",
        text(&out)
    );

    // A TUN device left by a pinholed that crashed: removal takes it away.
    run_ok("ip", &["tuntap", "add", "dev", "pinhole0", "mode", "tun"]);
    let out = run("dpkg", &["--remove", "pinhole"]);
    assert!(out.status.success(), "dpkg --remove:\n{}", text(&out));
    let stopped = lab.wait(&daemon, Duration::from_secs(15));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "removal did not stop pinholed cleanly ({stopped:?}):\n{}",
        daemon.log_text()
    );
    assert!(daemon.log_text().contains("SIGTERM: shutting down"));
    for (path, _) in FILES {
        assert!(!Path::new(path).exists(), "{path} is left after removal");
    }
    assert!(
        !Path::new("/sys/class/net/pinhole0").exists(),
        "pinhole0 is left"
    );
    assert!(
        Path::new("/var/lib/pinhole").exists() && group_exists(),
        "removal (not purge) keeps the state and the group"
    );

    let out = run("dpkg", &["--purge", "pinhole"]);
    assert!(out.status.success(), "dpkg --purge:\n{}", text(&out));
    assert!(!installed(), "dpkg still knows the package");
    for left in ["/var/lib/pinhole", "/run/pinhole", "/usr/share/doc/pinhole"] {
        assert!(!Path::new(left).exists(), "{left} is left after purge");
    }
    assert!(!group_exists(), "the group pinhole is left after purge");
    drop(lab);
    drop(cleanup);
}

#[test]
fn the_rpm_holds_the_same_files_and_scripts_that_set_up_and_take_down_the_service() {
    let test = "the_rpm_holds_the_same_files_and_scripts_that_set_up_and_take_down_the_service";
    let rpm = match package("pinhole-", ".rpm") {
        Ok(p) => p,
        Err(why) => {
            assert!(pinhole_testkit::skip(test, &why));
            return;
        }
    };
    let rpm = rpm.to_string_lossy();
    let listing = run_ok(
        "rpm",
        &["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]", &rpm],
    );
    for (path, mode) in FILES {
        let perms = if *mode == 0o755 {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert!(
            listing.lines().any(|l| l == format!("{perms} {path}")),
            "the rpm lacks {perms} {path}:\n{listing}"
        );
    }
    let scripts = run_ok("rpm", &["-qp", "--scripts", &rpm]);
    for needed in [
        "groupadd --system pinhole",
        "usermod -a -G pinhole",
        "systemctl enable pinholed.service",
        "systemctl disable --now pinholed.service",
        "ip link delete pinhole0",
    ] {
        assert!(
            scripts.contains(needed),
            "the rpm's scripts lack {needed}:\n{scripts}"
        );
    }
    let requires = run_ok("rpm", &["-qp", "--requires", &rpm]);
    assert!(
        requires.contains("libwebkit2gtk-4.1.so.0"),
        "the app's libraries are required:\n{requires}"
    );
}
