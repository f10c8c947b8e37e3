//! Bad input: junk and truncated WireGuard messages on the UDP port are dropped and counted while
//! the tunnel keeps working; a bad config file is refused with a message naming the line.

mod common;

use common::*;
use pinhole_netlab::skip_without_root;
use std::process::Command;
use std::time::Duration;

#[test]
fn junk_datagrams_are_counted_and_the_tunnel_keeps_working() {
    if skip_without_root("junk_datagrams_are_counted_and_the_tunnel_keeps_working") {
        return;
    }
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    let pa = start_pinholed(&mut lab, "a", &config(&a, &b, false));
    let _pb = start_pinholed(&mut lab, "b", &config(&b, &a, true));
    assert!(ping(&lab, "b", a.v4));
    let count = 3000u32;
    let out = lab
        .run_ok(
            "b",
            &[tool(), "junk", &a.endpoint(), &count.to_string(), "11"],
            Duration::from_secs(30),
        )
        .expect("sending junk");
    assert_eq!(out.trim(), format!("sent={count}"));
    // IPv6 junk too, on the same socket.
    lab.run_ok(
        "b",
        &[
            tool(),
            "junk",
            &format!("[2001:db8::1]:{PORT}"),
            "300",
            "12",
        ],
        Duration::from_secs(30),
    )
    .expect("sending IPv6 junk");
    assert!(lab.is_running(&pa), "pinholed survived the junk");
    assert!(ping(&lab, "b", a.v4), "the tunnel still works after junk");
    assert!(ping(&lab, "a", b.v6));

    let status = lab.stop(&pa, Duration::from_secs(5)).expect("clean stop");
    assert!(status.success());
    let log = pa.log_text();
    let dropped =
        counter(&log, "rx_invalid").unwrap_or(0) + counter(&log, "rx_unknown_peer").unwrap_or(0);
    // Every junk datagram is counted (a few may be lost on the way before reaching the socket).
    assert!(
        dropped >= u64::from(count + 300) * 95 / 100 && dropped <= u64::from(count + 300),
        "counted {dropped} of {} junk datagrams:\n{log}",
        count + 300
    );
}

fn run_with_config(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("pinhole-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join(format!("{:x}.conf", text.len()));
    std::fs::write(&conf, text).unwrap();
    let out = Command::new(pinholed())
        .args(["--config", conf.to_str().unwrap(), "--state-dir"])
        .arg(dir.join("state"))
        .args(["--tun-name", "phbad0"])
        .output()
        .expect("running pinholed");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_file_is_refused_naming_the_line() {
    let (ok, err) = run_with_config(
        "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\n[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nAllowedIPs = 10.0.0.300/32\n",
    );
    assert!(!ok);
    assert!(
        err.contains("line 6: invalid AllowedIPs \"10.0.0.300/32\""),
        "{err}"
    );

    let (ok, err) = run_with_config("[Interface]\nPrivatKey = abc\n");
    assert!(!ok);
    assert!(err.contains("line 2: unknown key \"PrivatKey\""), "{err}");

    let (ok, err) = run_with_config("[Interface]\nPrivateKey = tooshort\n");
    assert!(!ok);
    assert!(err.contains("line 2: invalid key in PrivateKey"), "{err}");
}

#[test]
fn missing_config_file_is_refused_with_its_path() {
    let out = Command::new(pinholed())
        .args(["--config", "/nonexistent/pinhole.conf", "--state-dir"])
        .arg(std::env::temp_dir().join("pinhole-missing-conf"))
        .output()
        .expect("running pinholed");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/pinhole.conf"),
        "{err}"
    );
}
