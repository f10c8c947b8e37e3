//! Routes offered by a node and approved on the server, with real processes: `pinhole up
//! --advertise-routes/--advertise-exit-node` on one node, `pinhole-control route list|approve`,
//! and its peer's status showing what it forwards. (Using routes — forwarding, masquerading, the
//! exit node's routing — comes with the rest of issue 31.)

use pinhole_netlab::mesh::{self, start_node, Control};
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

fn peer_routes(lab: &Lab, host: &str, peer: &str) -> (Vec<String>, bool) {
    let (ok, out, err) = mesh::pinhole(lab, host, &["status", "--json"]);
    assert!(ok, "status --json on {host}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    let p = v["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == peer))
        .cloned()
        .unwrap_or_default();
    let routes = p["routes"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (routes, p["exit_node"] == true)
}

#[test]
fn offered_routes_reach_peers_once_approved() {
    if skip_without_root("offered_routes_reach_peers_once_approved") {
        return;
    }
    let mut lab = mesh::star(&["n1", "n2"]);
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let _n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);

    // A route with host bits is refused in words and changes nothing.
    let (ok, out, err) = mesh::pinhole(&lab, "n2", &["up", "--advertise-routes", "192.168.7.5/24"]);
    assert!(!ok, "{out}");
    assert!(err.contains("the network is 192.168.7.0/24"), "{err}");
    let listed = control.cli(&lab, &["route", "list"]);
    assert!(listed.contains("no node offers routes"), "{listed}");

    let (ok, out, err) = mesh::pinhole(
        &lab,
        "n2",
        &[
            "up",
            "--advertise-routes",
            "192.168.7.0/24",
            "--advertise-exit-node",
        ],
    );
    assert!(ok, "{out}{err}");
    let listed = control.cli(&lab, &["route", "list"]);
    assert!(
        listed.contains("192.168.7.0/24")
            && listed.contains("0.0.0.0/0")
            && listed.contains("waiting for approval"),
        "{listed}"
    );
    assert_eq!(
        peer_routes(&lab, "n1", "n2"),
        (vec![], false),
        "not approved yet"
    );

    control.cli(&lab, &["route", "approve", "n2", "192.168.7.0/24", "exit"]);
    let want = vec![
        "0.0.0.0/0".to_string(),
        "192.168.7.0/24".to_string(),
        "::/0".to_string(),
    ];
    let arrived = Lab::wait_for(Duration::from_secs(5), || {
        peer_routes(&lab, "n1", "n2") == (want.clone(), true)
    });
    assert!(arrived, "n1 sees {:?}", peer_routes(&lab, "n1", "n2"));
    let (_, table, _) = mesh::pinhole(&lab, "n1", &["status"]);
    assert!(
        table.contains("n2: forwards 192.168.7.0/24; exit node"),
        "{table}"
    );

    // Offering nothing any more takes the routes away from the peer.
    let (ok, _, err) = mesh::pinhole(
        &lab,
        "n2",
        &[
            "up",
            "--advertise-routes",
            "",
            "--advertise-exit-node=false",
        ],
    );
    assert!(ok, "{err}");
    let gone = Lab::wait_for(Duration::from_secs(5), || {
        peer_routes(&lab, "n1", "n2") == (vec![], false)
    });
    assert!(gone, "n1 still sees {:?}", peer_routes(&lab, "n1", "n2"));
}
