//! The local API's whole flow with the real binaries: pinholed starts signed out, `pinhole login`
//! signs in (auth key; interactive with the session kept in the kernel keyring), `up`, `status
//! --json`, `ping`, `netcheck`, `down`, `up` again, `logout`; bad servers, keys and peers get
//! clear errors and change nothing.

use pinhole_netlab::mesh::{self, pinhole, pinhole_env, status_json, Control, PUBLIC};
use pinhole_netlab::pinhole::ping;
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

/// Polls `host`'s status until `check` holds; the last status either way.
fn wait_status(
    lab: &Lab,
    host: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> (bool, serde_json::Value) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let st = status_json(lab, host);
        if check(&st) {
            return (true, st);
        }
        if std::time::Instant::now() >= deadline {
            return (false, st);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn peer<'a>(st: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    st["peers"].as_array()?.iter().find(|p| p["name"] == name)
}

fn device_exists(lab: &Lab, host: &str) -> bool {
    lab.run(host, &["ip", "link", "show", "ph0"], Duration::from_secs(5))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn login_up_status_ping_down_up_logout() {
    if skip_without_root("login_up_status_ping_down_up_logout") {
        return;
    }
    let names = ["n1", "n2", "n3"];
    let mut lab = mesh::star(&names);
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.cli(&lab, &["authkey", "create", "--reusable", "--expiry", "1d"]);
    let key = key.trim();
    let url = mesh::control_url();
    let procs: Vec<_> = names
        .iter()
        .map(|n| mesh::start_signed_out(&mut lab, n))
        .collect();

    // Signed out: the status says so and what to do; no device yet.
    let st = status_json(&lab, "n1");
    assert_eq!(st["state"], "needs-login", "{st:#}");
    assert!(
        st["reason"]
            .as_str()
            .unwrap_or("")
            .contains("pinhole login"),
        "{st:#}"
    );
    assert!(!device_exists(&lab, "n1"));

    // A dead server, a wrong key, an unknown command: clear errors, nothing changes.
    let (ok, _, err) = pinhole(
        &lab,
        "n1",
        &["login", "--server", "http://198.18.1.1:9", "--authkey", key],
    );
    assert!(
        !ok && err.contains("cannot reach the coordination server"),
        "{err}"
    );
    let (ok, _, err) = pinhole(
        &lab,
        "n1",
        &["login", "--server", &url, "--authkey", "phk_wrong"],
    );
    assert!(!ok && err.contains("refused"), "{err}");
    assert!(
        err.contains("can be read by every user"),
        "a key on the command line is warned about: {err}"
    );
    let (ok, _, err) = pinhole(&lab, "n1", &["up"]);
    assert!(!ok && err.contains("pinhole login"), "{err}");
    assert_eq!(status_json(&lab, "n1")["state"], "needs-login");
    let usage = lab
        .run(
            "n1",
            &[mesh::pinhole_cli().to_str().unwrap(), "frobnicate"],
            Duration::from_secs(5),
        )
        .expect("running pinhole");
    assert_eq!(usage.status.code(), Some(2), "usage errors exit with 2");

    // Sign in with the auth key (from a file, as it should be given) and connect.
    let key_file = lab.dir().join("authkey");
    std::fs::write(&key_file, format!("{key}\n")).expect("writing the auth key file");
    for n in names {
        let (ok, out, err) = pinhole(
            &lab,
            n,
            &[
                "login",
                "--server",
                &url,
                "--authkey-file",
                key_file.to_str().unwrap(),
            ],
        );
        assert!(ok && out.contains("signed in to"), "{n}: {out}{err}");
        assert!(!err.contains("warning"), "{n}: {err}");
        let (ok, out, err) = pinhole(&lab, n, &["up"]);
        assert!(ok, "{n}: {out}{err}");
    }
    let (ok, st) = wait_status(&lab, "n1", Duration::from_secs(10), |st| {
        st["state"] == "connected"
            && ["n2", "n3"]
                .iter()
                .all(|n| peer(st, n).is_some_and(|p| p["online"] == true))
    });
    assert!(
        ok,
        "n1 never saw both peers online: {st:#}\n{}",
        procs[0].log_text()
    );
    // On its own, pinholed measured the embedded STUN service and made region "local" its home,
    // and told control, which lists it.
    let (ok, home) = wait_status(&lab, "n1", Duration::from_secs(10), |st| {
        st["self"]["home_relay"] == "local" && st["self"]["nat"]["udp"] == true
    });
    assert!(ok, "no home relay: {home:#}\n{}", procs[0].log_text());
    let listed = Lab::wait_for(Duration::from_secs(5), || {
        control
            .cli(&lab, &["node", "list", "--json"])
            .contains("\"home_relay\": \"local\"")
    });
    assert!(listed, "control does not list n1's home relay");
    assert_eq!(st["self"]["addresses"][0], "100.64.0.1", "{st:#}");
    assert_eq!(peer(&st, "n2").unwrap()["addresses"][0], "100.64.0.2");
    assert_eq!(peer(&st, "n3").unwrap()["addresses"][0], "100.64.0.3");
    assert!(device_exists(&lab, "n1"));

    // pinhole ping: every reply with its RTT and path.
    let (ok, out, err) = pinhole(&lab, "n1", &["ping", "n2", "--count", "3"]);
    assert!(ok, "{out}{err}\n{}", procs[0].log_text());
    assert!(
        out.contains("pong from n2 (100.64.0.2) via direct 198.18.2.2:41641 in"),
        "{out}"
    );
    assert!(out.contains("3 sent, 3 answered"), "{out}");
    let st = status_json(&lab, "n1");
    assert!(
        peer(&st, "n2").unwrap()["rtt_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "the status carries the round trip just measured: {st:#}"
    );
    let (ok, out, _) = pinhole(&lab, "n3", &["ping", "100.64.0.1", "-c", "1"]);
    assert!(ok && out.contains("pong from n1"), "by address: {out}");
    let (ok, _, err) = pinhole(&lab, "n1", &["ping", "nosuch", "-c", "1"]);
    assert!(!ok && err.contains("no peer called"), "{err}");

    // pinhole netcheck: the server is reachable, the local endpoint is listed.
    let (ok, out, err) = pinhole(&lab, "n1", &["netcheck", "--json"]);
    assert!(ok, "{err}");
    let nc: serde_json::Value = serde_json::from_str(&out).expect("netcheck --json");
    assert_eq!(nc["control"]["reachable"], true, "{nc:#}");
    // The embedded STUN service of pinhole-control answers (region "local").
    assert_eq!(nc["udp"], true, "{nc:#}");
    assert_eq!(nc["preferred_relay"], "local", "{nc:#}");
    assert_eq!(nc["public_endpoints"][0], "198.18.1.2:41641", "{nc:#}");
    assert_eq!(nc["port"], 41641);
    assert!(
        nc["local_endpoints"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e == "198.18.1.2:41641")),
        "{nc:#}"
    );
    let (ok, out, _) = pinhole(&lab, "n1", &["netcheck"]);
    assert!(
        ok && out.contains("coordination server: http://198.18.1.1:8080 reachable"),
        "{out}"
    );

    // down: the device goes, the status says stopped, ping says what to do.
    let (ok, out, err) = pinhole(&lab, "n2", &["down"]);
    assert!(ok, "{out}{err}");
    assert!(
        !device_exists(&lab, "n2"),
        "the TUN device is gone after down"
    );
    assert_eq!(status_json(&lab, "n2")["state"], "stopped");
    let (ok, _, err) = pinhole(&lab, "n2", &["ping", "n1", "-c", "1"]);
    assert!(!ok && err.contains("pinhole up"), "{err}");
    // up again: pings both ways.
    let (ok, out, err) = pinhole(&lab, "n2", &["up"]);
    assert!(ok, "{out}{err}");
    assert_eq!(status_json(&lab, "n2")["state"], "connected");
    let (ok, out, err) = pinhole(&lab, "n2", &["ping", "n1", "-c", "2"]);
    assert!(ok && out.contains("pong from n1"), "{out}{err}");
    assert!(
        ping(&lab, "n1", "100.64.0.2"),
        "kernel ping n1 → n2 after up"
    );

    // logout on n3: it leaves the others' maps, its device goes, and it needs a login again.
    let (ok, out, err) = pinhole(&lab, "n3", &["logout"]);
    assert!(ok && out.contains("logged out"), "{out}{err}");
    assert_eq!(status_json(&lab, "n3")["state"], "needs-login");
    assert!(!device_exists(&lab, "n3"));
    let (ok, st) = wait_status(&lab, "n1", Duration::from_secs(5), |st| {
        peer(st, "n3").is_none()
    });
    assert!(ok, "n3 still in n1's map after its logout: {st:#}");
    // The daemons kept running through all of it.
    for (n, p) in names.iter().zip(&procs) {
        assert!(
            lab.is_running(p),
            "pinholed in {n} stopped:\n{}",
            p.log_text()
        );
    }
}

/// Reads the kernel keyring entry the CLI wrote (as root, like the CLI in the lab).
fn keyring_entry(name: &str) -> Option<String> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    let ring = KeyRing::from_special_id(KeyRingIdentifier::User, false).ok()?;
    let key = ring.search(&format!("pinhole:{name}")).ok()?;
    String::from_utf8(key.read_to_vec().ok()?).ok()
}

/// Removes the test's keyring entry even when the test fails.
struct ForgetEntry(String);

impl Drop for ForgetEntry {
    fn drop(&mut self) {
        use linux_keyutils::{KeyRing, KeyRingIdentifier};
        if let Ok(ring) = KeyRing::from_special_id(KeyRingIdentifier::User, false) {
            if let Ok(key) = ring.search(&format!("pinhole:{}", self.0)) {
                let _ = key.invalidate();
            }
        }
    }
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).contains(needle))
            .unwrap_or(false)
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn interactive_login_keeps_the_session_in_the_kernel_keyring() {
    if skip_without_root("interactive_login_keeps_the_session_in_the_kernel_keyring") {
        return;
    }
    let mut lab = mesh::star(&["n1"]);
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let bin = mesh::pinhole_control();
    let add_user = format!(
        "echo 'correct horse battery' | {} --db {} user add alice",
        bin.display(),
        control.db
    );
    lab.run_ok(PUBLIC, &["sh", "-c", &add_user], Duration::from_secs(30))
        .expect("adding a user");
    let daemon = mesh::start_signed_out(&mut lab, "n1");
    let entry = format!("netlab-{}", std::process::id());
    let _forget = ForgetEntry(entry.clone());
    let env = [
        ("PINHOLE_CREDENTIAL_NAME", entry.as_str()),
        ("PINHOLE_KEYRING", "kernel"),
    ];

    // `pinhole login` from a plain root shell in a namespace: it prints a URL and a code and
    // waits; a person approves the code in the browser (here: the form, posted with curl).
    let cli = mesh::pinhole_cli();
    let sock = lab.dir().join("n1.sock");
    let url = mesh::control_url();
    let login = lab
        .spawn_env(
            "n1",
            &[
                cli.to_str().unwrap(),
                "--socket",
                sock.to_str().unwrap(),
                "login",
                "--server",
                &url,
            ],
            &env,
        )
        .expect("starting pinhole login");
    let shown = Lab::wait_for(Duration::from_secs(10), || {
        login.log_text().contains("enter the code")
    });
    assert!(
        shown,
        "no code shown:\n{}\n{}",
        login.log_text(),
        daemon.log_text()
    );
    let text = login.log_text();
    let code = text
        .split("enter the code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a code")
        .to_string();
    assert!(text.contains(&format!("open {url}/device")), "{text}");
    let st = status_json(&lab, "n1");
    assert_eq!(st["state"], "needs-login");
    assert_eq!(st["login"]["code"], code.as_str(), "{st:#}");
    let approved = lab
        .run_ok(
            PUBLIC,
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--data-urlencode",
                &format!("user_code={code}"),
                "--data-urlencode",
                "username=alice",
                "--data-urlencode",
                "password=correct horse battery",
                &format!("{url}/device"),
            ],
            Duration::from_secs(10),
        )
        .expect("approving the code");
    assert_eq!(approved.trim(), "200", "approval page");
    let done = lab.wait(&login, Duration::from_secs(20));
    assert!(
        done.is_some_and(|s| s.success()),
        "pinhole login did not finish:\n{}\n{}",
        login.log_text(),
        daemon.log_text()
    );
    assert!(
        login.log_text().contains("signed in to"),
        "{}",
        login.log_text()
    );
    let (ok, st) = wait_status(&lab, "n1", Duration::from_secs(10), |st| {
        st["state"] == "connected"
    });
    assert!(ok, "{st:#}");

    // The session is in the kernel keyring, and in no file.
    let stored = keyring_entry(&entry).expect("the session is in the kernel keyring");
    let cred: serde_json::Value = serde_json::from_str(&stored).expect("stored as JSON");
    let token = cred["session_token"].as_str().expect("a session token");
    assert!(
        token.starts_with("phs_"),
        "a session token, not some other secret"
    );
    assert_eq!(cred["server"], url.as_str());
    let leaks = files_containing(lab.dir(), token);
    assert!(
        leaks.is_empty(),
        "the session token is in plain files: {leaks:?}"
    );

    // The node is removed by an admin: the session expired; `pinhole up` signs in again with
    // the stored session, with no code to approve.
    control.cli(&lab, &["node", "remove", "n1"]);
    let (ok, st) = wait_status(&lab, "n1", Duration::from_secs(10), |st| {
        st["state"] == "session-expired"
    });
    assert!(ok, "{st:#}");
    let (ok, out, err) = pinhole_env(&lab, "n1", &env, &["up"]);
    assert!(ok, "{out}{err}\n{}", daemon.log_text());
    let (ok, st) = wait_status(&lab, "n1", Duration::from_secs(10), |st| {
        st["state"] == "connected"
    });
    assert!(ok, "{st:#}");

    // logout revokes the session and removes it from the keyring: up no longer signs in.
    let (ok, out, err) = pinhole_env(&lab, "n1", &env, &["logout"]);
    assert!(ok && out.contains("logged out"), "{out}{err}");
    assert!(keyring_entry(&entry).is_none(), "the keyring entry is gone");
    assert_eq!(status_json(&lab, "n1")["state"], "needs-login");
    let (ok, _, err) = pinhole_env(&lab, "n1", &env, &["up"]);
    assert!(!ok && err.contains("pinhole login"), "{err}");
    assert!(lab.is_running(&daemon), "{}", daemon.log_text());
}
