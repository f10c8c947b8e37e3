//! A node whose machine gets a new address publishes it at once (the OS's routing-socket event,
//! not the 30 s refresh), and its peer has it among the node's candidates within 5 s.

use pinhole_netlab::mesh::{self, start_node, status_json, Control};
use pinhole_netlab::{skip_without_root, Lab};
use std::time::{Duration, Instant};

fn candidates_of(lab: &Lab, host: &str, peer: &str) -> Vec<String> {
    let st = status_json(lab, host);
    st["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == peer))
        .and_then(|p| p["candidates"].as_array())
        .map(|c| {
            c.iter()
                .filter_map(|c| c["addr"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_new_address_reaches_the_peers_within_5_s() {
    if skip_without_root("a_new_address_reaches_the_peers_within_5_s") {
        return;
    }
    let mut lab = mesh::star(&["n1", "n2"]);
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let _nodes = [
        start_node(&mut lab, "n1", &key),
        start_node(&mut lab, "n2", &key),
    ];
    assert!(
        Lab::wait_for(Duration::from_secs(15), || !candidates_of(&lab, "n2", "n1")
            .is_empty()),
        "n2 never had n1's endpoints: {}",
        status_json(&lab, "n2")
    );
    // Past the first publish, so only the change can bring the new address.
    std::thread::sleep(Duration::from_secs(2));
    lab.run_ok(
        "n1",
        &["ip", "addr", "add", "192.0.2.77/32", "dev", "lo"],
        Duration::from_secs(5),
    )
    .expect("adding an address");
    let added = Instant::now();
    let seen = Lab::wait_for(Duration::from_secs(5), || {
        candidates_of(&lab, "n2", "n1")
            .iter()
            .any(|c| c.starts_with("192.0.2.77:"))
    });
    assert!(
        seen,
        "n2 does not have n1's new address 5 s later: {:?}",
        candidates_of(&lab, "n2", "n1")
    );
    println!(
        "n1's new address reached n2 {:.2} s after it was added",
        added.elapsed().as_secs_f64()
    );
    let me = status_json(&lab, "n1");
    assert!(
        me["self"]["endpoints"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("192.0.2.77:")))),
        "{me}"
    );
}
