//! Rules with real processes: an account's policy set with `pinhole-control policy set`, three
//! nodes (a developer's, a tagged server's, an outsider's), TCP connections through the tunnel
//! to ports the policy opens and to ports it does not, the refusals counted and said in
//! `pinhole status`, the outsider's map without the server, and a looser policy reaching the
//! nodes within a second.

use pinhole_netlab::mesh::{self, start_node, status_json, wait_line, Control, PUBLIC};
use pinhole_netlab::pinhole::tool;
use pinhole_netlab::{skip_without_root, Lab};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const POLICY: &str = r#"{
  // group:dev may reach tag:server on 22 and 443; tag:server reaches nobody.
  "groups": { "group:dev": ["alice"] },
  "tagOwners": { "tag:server": ["group:dev"] },
  "acls": [
    { "action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,443"] },
  ],
  "tests": [
    { "src": "alice", "accept": ["tag:server:22"], "deny": ["tag:server:5432"] },
  ],
}"#;

/// A file in the lab's directory.
fn file(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let path = lab.dir().join(name);
    std::fs::write(&path, text).expect("writing a lab file");
    path
}

/// An auth key made with `args` (`--user alice`, `--tags tag:server`), in a file.
fn key(control: &Control, lab: &Lab, name: &str, args: &[&str]) -> PathBuf {
    let mut argv = vec!["authkey", "create", "--expiry", "1d"];
    argv.extend_from_slice(args);
    let k = control.cli(lab, &argv);
    file(lab, name, k.trim())
}

/// `netlab-tool probe` from `host` to `addr:port`.
fn probe(lab: &Lab, host: &str, addr: &str, port: u16, ms: u64) -> String {
    let t = tool();
    let dst = format!("{addr}:{port}");
    let out = lab
        .run_ok(
            host,
            &[t.to_str().unwrap(), "probe", &dst, &ms.to_string()],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("probe from {host} to {dst}: {e}"));
    out.trim().to_string()
}

fn peer<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

#[test]
fn the_policy_decides_who_reaches_what_and_changes_within_a_second() {
    if skip_without_root("the_policy_decides_who_reaches_what_and_changes_within_a_second") {
        return;
    }
    let mut lab = mesh::star(&["dev", "srv", "out"]);
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let bin = mesh::pinhole_control();
    for user in ["alice", "carol"] {
        let cmd = format!(
            "echo 'a long password' | {} --db {} user add {user}",
            bin.display(),
            control.db
        );
        lab.run_ok(PUBLIC, &["sh", "-c", &cmd], Duration::from_secs(30))
            .expect("user add");
    }
    let policy = file(&lab, "policy.hujson", POLICY);
    control.cli(&lab, &["policy", "set", policy.to_str().unwrap()]);
    let alice = key(&control, &lab, "alice.key", &["--user", "alice"]);
    let carol = key(&control, &lab, "carol.key", &["--user", "carol"]);
    let server = key(&control, &lab, "server.key", &["--tags", "tag:server"]);
    let dev = start_node(&mut lab, "dev", &alice);
    let srv = start_node(&mut lab, "srv", &server);
    let out = start_node(&mut lab, "out", &carol);
    assert!(
        wait_line(&dev, &["peer added", "peer=srv"], Duration::from_secs(10)).is_some(),
        "{}",
        dev.log_text()
    );
    assert!(
        wait_line(&srv, &["packet filter set"], Duration::from_secs(10)).is_some(),
        "{}",
        srv.log_text()
    );
    let srv_addr = control.address_of(&lab, "srv");
    let dev_addr = control.address_of(&lab, "dev");
    let t = tool();
    let _greeter = lab
        .spawn(
            "srv",
            &[
                t.to_str().unwrap(),
                "greet",
                "0.0.0.0:22,0.0.0.0:443,0.0.0.0:5432",
                "120",
            ],
        )
        .expect("greeter on srv");
    let _dev_greeter = lab
        .spawn(
            "dev",
            &[t.to_str().unwrap(), "greet", "0.0.0.0:8080", "120"],
        )
        .expect("greeter on dev");
    std::thread::sleep(Duration::from_millis(300));

    // dev → srv: 22 and 443 connect, 5432 is dropped (a timeout, not a refusal) and counted.
    assert_eq!(probe(&lab, "dev", &srv_addr, 22, 3000), "connected");
    assert_eq!(probe(&lab, "dev", &srv_addr, 443, 3000), "connected");
    assert_eq!(probe(&lab, "dev", &srv_addr, 5432, 1000), "timeout");
    // srv → dev: the server reaches nobody.
    assert_eq!(probe(&lab, "srv", &dev_addr, 8080, 1000), "timeout");
    let st = status_json(&lab, "srv");
    let from_dev = peer(&st, "dev").expect("srv sees dev");
    assert!(
        from_dev["filtered_packets"].as_u64().unwrap_or(0) >= 1,
        "{st:#}"
    );
    let st = status_json(&lab, "dev");
    assert!(
        peer(&st, "srv").unwrap()["filtered_packets"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{st:#}"
    );
    assert_eq!(
        peer(&st, "srv").unwrap()["may_reach"],
        "ports 22 and 443 and ping"
    );
    let (ok, table, _) = mesh::pinhole(&lab, "dev", &["status"]);
    assert!(
        ok && table.contains("srv: you may reach ports 22 and 443 and ping (tag:server)"),
        "{table}"
    );
    // The outsider's map has no server.
    let st = status_json(&lab, "out");
    assert!(peer(&st, "srv").is_none(), "{st:#}");
    assert!(out.log_text().contains("packet filter set"));

    // A policy that fails its own tests is refused, and the old one stays.
    let bad = file(
        &lab,
        "bad.hujson",
        &POLICY.replace("\"tag:server:5432\"", "\"tag:server:443\""),
    );
    let argv = [
        bin.to_str().unwrap(),
        "--db",
        &control.db,
        "policy",
        "set",
        bad.to_str().unwrap(),
    ];
    let o = lab
        .run(PUBLIC, &argv, Duration::from_secs(30))
        .expect("policy set runs");
    let said = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success() && said.contains("line 9, column 61") && said.contains("test failed"),
        "{said}"
    );
    assert_eq!(control.cli(&lab, &["policy", "get"]), POLICY);

    // A looser policy: 5432 connects within a second of `policy set`.
    let looser = file(
        &lab,
        "looser.hujson",
        &POLICY
            .replace("22,443", "22,443,5432")
            .replace(r#", "deny": ["tag:server:5432"]"#, ""),
    );
    let t0 = Instant::now();
    control.cli(&lab, &["policy", "set", looser.to_str().unwrap()]);
    let opened = loop {
        let tried = Instant::now();
        if probe(&lab, "dev", &srv_addr, 5432, 200) == "connected" {
            break tried.duration_since(t0);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "5432 never opened:\n{}",
            srv.log_text()
        );
    };
    eprintln!(
        "a looser policy opened port 5432 {} ms after policy set",
        opened.as_millis()
    );
    assert!(opened < Duration::from_secs(1), "{opened:?}");
    // The ports the old policy opened still connect under the new one.
    assert_eq!(probe(&lab, "dev", &srv_addr, 22, 3000), "connected");

    // No policy: everyone reaches everyone again, the outsider sees the server.
    control.cli(&lab, &["policy", "remove"]);
    let seen = Lab::wait_for(Duration::from_secs(5), || {
        peer(&status_json(&lab, "out"), "srv").is_some()
    });
    assert!(seen, "{:#}", status_json(&lab, "out"));
    assert_eq!(probe(&lab, "srv", &dev_addr, 8080, 3000), "connected");
}
