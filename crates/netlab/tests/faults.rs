//! Faults of real processes: pinholed killed with SIGKILL and started again comes back as the
//! same node on the same path within seconds, with nothing of the dead process left in the way.

mod common;

use pinhole_netlab::mesh::{self, start_node, wait_line, Control};
use pinhole_netlab::pinhole::ping;
use pinhole_netlab::{skip_without_root, Lab};
use std::time::{Duration, Instant};

fn node_ids(control: &Control, lab: &Lab) -> Vec<(String, String)> {
    let json = control.cli(lab, &["node", "list", "--json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&json).expect("node list --json");
    let mut v: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_string(),
                n["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Control with n1 and n2 signed in, n1 seeing n2 and pinging it.
struct Pair {
    control: Control,
    _server: pinhole_netlab::Proc,
    key: std::path::PathBuf,
    n1: pinhole_netlab::Proc,
    _n2: pinhole_netlab::Proc,
    n2_addr: String,
}

fn pair(lab: &mut Lab) -> Pair {
    let control = Control::new(lab);
    let _server = control.start(lab);
    let key = control.authkey_file(lab);
    let n1 = start_node(lab, "n1", &key);
    let _n2 = start_node(lab, "n2", &key);
    assert!(
        wait_line(&n1, &["peer added", "peer=n2"], Duration::from_secs(10)).is_some(),
        "{}",
        n1.log_text()
    );
    let n2_addr = control.address_of(lab, "n2");
    assert!(ping(lab, "n1", &n2_addr), "{}", n1.log_text());
    Pair {
        control,
        _server,
        key,
        n1,
        _n2,
        n2_addr,
    }
}

fn peer(st: &serde_json::Value, name: &str) -> serde_json::Value {
    st["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_killed_pinholed_restarts_as_the_same_node_on_the_same_path() {
    if skip_without_root("a_killed_pinholed_restarts_as_the_same_node_on_the_same_path") {
        return;
    }
    let mut lab = mesh::star(&["n1", "n2"]);
    let Pair {
        control,
        _server,
        key,
        n1,
        n2_addr,
        ..
    } = pair(&mut lab);
    let before = peer(&mesh::status_json(&lab, "n1"), "n2");
    assert_eq!(before["connection"], "direct", "{before:#}");
    let ids = node_ids(&control, &lab);
    assert_eq!(ids.len(), 2, "{ids:?}");

    // SIGKILL: no clean-up at all. The kernel removes the TUN device with its last descriptor.
    lab.kill(&n1);
    let gone = Lab::wait_for(Duration::from_secs(5), || {
        lab.run("n1", &["ip", "link", "show", "ph0"], Duration::from_secs(5))
            .map(|o| !o.status.success())
            .unwrap_or(false)
    });
    assert!(gone, "the dead process's TUN device is gone");

    // Started again on the same state directory and socket path.
    let restarted = Instant::now();
    let n1 = start_node(&mut lab, "n1", &key);
    let mut back = None;
    while restarted.elapsed() < Duration::from_secs(10) {
        if ping(&lab, "n1", &n2_addr) {
            back = Some(restarted.elapsed());
            break;
        }
    }
    let back = back.unwrap_or_else(|| panic!("no ping within 10 s:\n{}", n1.log_text()));
    eprintln!("pings back {:.1} s after the restart", back.as_secs_f64());
    // The first packets go through the relay at once; disco (with the new run's disco key, once
    // the map has brought it to n2) makes the path direct right after.
    Lab::wait_for(Duration::from_secs(5), || {
        ping(&lab, "n1", &n2_addr);
        peer(&mesh::status_json(&lab, "n1"), "n2")["connection"] == "direct"
    });
    eprintln!(
        "direct {:.1} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    let st = mesh::status_json(&lab, "n1");
    let after = peer(&st, "n2");
    assert_eq!(after["connection"], "direct", "{st:#}");
    assert_eq!(after["endpoint"], before["endpoint"], "the same path");
    assert_eq!(st["self"]["addresses"][0].as_str(), Some("100.64.0.1"));
    // The same node: no new registration at control.
    assert_eq!(node_ids(&control, &lab), ids);
    let log = n1.log_text();
    assert!(
        !log.contains("new node key"),
        "the node key was kept:\n{log}"
    );
    assert!(
        !log.contains("control_link: registered"),
        "no new registration:\n{log}"
    );
}

/// 1,000 simulated nodes register and open their map streams at once (64 in flight) while two
/// real nodes ping each other every 100 ms through the tunnel: not one ping is lost.
#[test]
fn a_thousand_nodes_connecting_at_once_do_not_disturb_two_that_ping() {
    if skip_without_root("a_thousand_nodes_connecting_at_once_do_not_disturb_two_that_ping") {
        return;
    }
    let mut lab = mesh::star(&["n1", "n2", "sim"]);
    let Pair { key, n2_addr, .. } = pair(&mut lab);

    let pings = lab
        .spawn(
            "n1",
            &["ping", "-c", "250", "-i", "0.1", "-W", "2", &n2_addr],
        )
        .expect("starting ping");
    let url = mesh::control_url();
    let sims = lab
        .spawn(
            "sim",
            &[
                common::tool(),
                "sim-nodes",
                &url,
                key.to_str().unwrap(),
                "1000",
                "3",
            ],
        )
        .expect("starting the simulated nodes");
    let connected = Lab::wait_for(Duration::from_secs(60), || {
        sims.log_text().contains("registered=1000 streams=1000")
    });
    assert!(connected, "the simulated nodes:\n{}", sims.log_text());
    let finished = Lab::wait_for(Duration::from_secs(60), || {
        pings.log_text().contains("packet loss")
    });
    let out = pings.log_text();
    assert!(finished, "{out}");
    assert!(
        !out.contains("rtt min/avg/max") || out.contains(" 0% packet loss"),
        "pings lost while 1,000 nodes connected:\n{out}\n{}",
        sims.log_text()
    );
    assert!(out.contains("250 received"), "{out}");
    eprintln!(
        "{}",
        sims.log_text()
            .lines()
            .find(|l| l.starts_with("registered="))
            .unwrap_or("")
    );
}
