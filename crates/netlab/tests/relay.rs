//! Relayed paths with the real binaries: nodes whose firewalls drop all UDP sign in over TCP,
//! pick the embedded relay as home, and reach each other through it (`pinhole ping` and the
//! kernel's ping over the tunnel; `status --json` says relayed, region local). A separate
//! `pinhole-relay` (asking control with the relay secret who may use it) carries two such nodes;
//! killed and restarted, pings resume within 5 s.

use pinhole_netlab::mesh::{self, block_udp, pinhole, start_node, status_json, Control};
use pinhole_netlab::pinhole::ping;
use pinhole_netlab::{skip_without_root, Lab};
use std::time::{Duration, Instant};

fn peer<'a>(st: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    st["peers"].as_array()?.iter().find(|p| p["name"] == name)
}

/// `pinhole ping PEER` once a second until it answers; the answer line.
fn ping_until_answered(lab: &Lab, host: &str, peer: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (ok, out, _) = pinhole(
            lab,
            host,
            &["ping", peer, "--count", "1", "--timeout-ms", "1000"],
        );
        if ok {
            return Some(out);
        }
    }
    None
}

struct Relayed {
    lab: Lab,
    control: Control,
    server: pinhole_netlab::Proc,
    addr: [String; 2],
    _nodes: Vec<pinhole_netlab::Proc>,
}

/// Two nodes with all UDP blocked, signed in, home relay chosen, talking through the relay.
/// `prepare` runs before control starts and returns control's extra `serve` options.
fn relayed_pair(home: &str, prepare: impl FnOnce(&mut Lab) -> Vec<String>) -> Relayed {
    let mut lab = mesh::star(&["n1", "n2"]);
    block_udp(&lab, "n1");
    block_udp(&lab, "n2");
    let extra = prepare(&mut lab);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let control = Control::new(&lab);
    let server = control.start_with(&mut lab, &extra);
    let key = control.authkey_file(&lab);
    let nodes = vec![
        start_node(&mut lab, "n1", &key),
        start_node(&mut lab, "n2", &key),
    ];
    // Netcheck finds no UDP (3 s) and falls back to the only region as home.
    for n in ["n1", "n2"] {
        let home = Lab::wait_for(Duration::from_secs(15), || {
            let st = status_json(&lab, n);
            st["self"]["home_relay"] == home && st["self"]["nat"]["udp"] == false
        });
        assert!(home, "{n}: {:#}", status_json(&lab, n));
    }
    let addr = [
        control.address_of(&lab, "n1"),
        control.address_of(&lab, "n2"),
    ];
    Relayed {
        lab,
        control,
        server,
        addr,
        _nodes: nodes,
    }
}

#[test]
fn nodes_without_udp_reach_each_other_through_the_relay() {
    if skip_without_root("nodes_without_udp_reach_each_other_through_the_relay") {
        return;
    }
    let r = relayed_pair("local", |_| Vec::new());
    let lab = &r.lab;
    let out = ping_until_answered(lab, "n1", "n2", Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "n2 never answered through the relay: {:#}\n{}\n{}",
            status_json(lab, "n1"),
            r._nodes[0].log_text(),
            r.server.log_text()
        )
    });
    assert!(out.contains("via relay local"), "{out}");
    // The kernel's own ping over the tunnel, both ways.
    assert!(ping(lab, "n1", &r.addr[1]), "n1 → n2 over the relay");
    assert!(ping(lab, "n2", &r.addr[0]), "n2 → n1 over the relay");
    for (me, other) in [("n1", "n2"), ("n2", "n1")] {
        // The status is refreshed on changes and every second.
        let mut st = status_json(lab, me);
        for _ in 0..30 {
            let relayed_traffic = |p: &serde_json::Value| {
                p["connection"] == "relayed" && p["rx_bytes"].as_u64().unwrap_or(0) > 0
            };
            if peer(&st, other).is_some_and(relayed_traffic) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            st = status_json(lab, me);
        }
        let p = peer(&st, other).unwrap_or_else(|| panic!("{st:#}"));
        let i = if me == "n1" { 0 } else { 1 };
        assert_eq!(
            p["connection"],
            "relayed",
            "{st:#}\n{}",
            r._nodes[i].log_text()
        );
        assert_eq!(p["relay"], "local", "{st:#}");
        // Why not direct: UDP is blocked here (the netcheck knows), or, before its answer is
        // in, still trying (the first round); and through which relay.
        let why = p["path_reason"].as_str().unwrap_or("");
        assert!(
            why.starts_with("UDP is blocked on this network") || why.starts_with("trying "),
            "{st:#}"
        );
        assert!(why.ends_with("; relayed through local"), "{st:#}");
        assert!(p["rx_bytes"].as_u64().unwrap_or(0) > 0, "{st:#}");
    }
    let (_, table, _) = pinhole(lab, "n1", &["status"]);
    assert!(table.contains("relayed via local"), "{table}");
    // The relay counted the traffic; nothing was refused.
    let metrics = lab
        .run_ok(
            mesh::PUBLIC,
            &["curl", "-s", &mesh::metrics_url()],
            Duration::from_secs(5),
        )
        .expect("GET /metrics");
    assert!(metrics.contains("pinhole_relay_clients 2"), "{metrics}");
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pinhole_relay_forwarded_packets_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(forwarded >= 6, "{metrics}");
    assert!(metrics.contains(r#"pinhole_relay_refused_total{reason="unknown_key"} 0"#));
    let _ = &r.control;
}

/// Starts `pinhole-relay` in the public namespace on 198.18.1.1:8443 (STUN on :3479).
fn start_relay(lab: &mut Lab) -> pinhole_netlab::Proc {
    let bin = mesh::pinhole_relay();
    let secret = lab.dir().join("relay.secret");
    let url = mesh::control_url();
    let p = lab
        .spawn(
            mesh::PUBLIC,
            &[
                bin.to_str().unwrap(),
                "--listen",
                "0.0.0.0:8443",
                "--insecure-http",
                "--stun-listen",
                "0.0.0.0:3479",
                "--control-url",
                &url,
                "--relay-secret-file",
                secret.to_str().unwrap(),
            ],
        )
        .expect("starting pinhole-relay");
    let up = Lab::wait_for(Duration::from_secs(10), || {
        p.log_text().contains("pinhole-relay is running")
    });
    assert!(up, "pinhole-relay did not start:\n{}", p.log_text());
    p
}

#[test]
fn pings_resume_within_5_s_after_the_relay_restarts() {
    if skip_without_root("pings_resume_within_5_s_after_the_relay_restarts") {
        return;
    }
    let mut relay = None;
    let mut r = relayed_pair("edge", |lab| {
        let secret = lab.dir().join("relay.secret");
        std::fs::write(&secret, "lab-relay-secret-0123456789\n").unwrap();
        let map = lab.dir().join("relays.json");
        std::fs::write(
            &map,
            r#"{"regions":[{"code":"edge","name":"separate relay","relays":[{"url":"http://198.18.1.1:8443/relay","stun":"198.18.1.1:3479"}]}]}"#,
        )
        .unwrap();
        relay = Some(start_relay(lab));
        vec![
            "--no-relay".into(),
            "--relay-map".into(),
            map.display().to_string(),
            "--relay-secret-file".into(),
            secret.display().to_string(),
        ]
    });
    let relay = relay.expect("relay started");
    let out =
        ping_until_answered(&r.lab, "n1", "n2", Duration::from_secs(20)).unwrap_or_else(|| {
            panic!(
                "no relayed path at first:\n{}\n{}",
                relay.log_text(),
                r._nodes[0].log_text()
            )
        });
    assert!(out.contains("via relay edge"), "{out}");
    // Killed, not stopped: the nodes see their TCP connections reset.
    r.lab.kill(&relay);
    assert!(
        !ping(&r.lab, "n1", &r.addr[1]),
        "no path while the relay is down"
    );
    let _relay = start_relay(&mut r.lab);
    let restarted = Instant::now();
    let mut answered = None;
    while restarted.elapsed() < Duration::from_secs(10) {
        let out = r.lab.run(
            "n1",
            &["ping", "-c", "1", "-W", "1", &r.addr[1]],
            Duration::from_secs(5),
        );
        if out.map(|o| o.status.success()).unwrap_or(false) {
            answered = Some(restarted.elapsed());
            break;
        }
    }
    let took = answered.expect("pings never resumed after the relay restarted");
    eprintln!(
        "pings resumed {:.2} s after the relay restarted",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    let _ = &r.server;
}
