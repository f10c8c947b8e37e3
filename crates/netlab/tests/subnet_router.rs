//! A subnet router with real processes and real routing: b and c both reach a LAN host (a
//! namespace running a small HTTP server that answers with the source address it sees); a
//! fetches from the host's LAN address through the mesh only with `--accept-routes` and only
//! once the route is approved; the host sees the router's LAN address (masquerade); b going
//! down fails over to c within 5 s; a policy whose rules do not name the LAN's CIDR refuses
//! it, one that does lets it through; a's routing rules, b's nftables table and forwarding
//! switch are gone after `down`.

use pinhole_netlab::mesh::{self, start_node, status_json, Control};
use pinhole_netlab::pinhole::tool;
use pinhole_netlab::routing::{http_source, pinhole_ok, routing_state};
use pinhole_netlab::{skip_without_root, Lab};
use std::time::{Duration, Instant};

const HOST: &str = "192.168.7.10:8080";
const ROUTE: &str = "192.168.7.0/24";

/// a, b and c as in `mesh::star`; the LAN host `printer` on b's LAN (192.168.7.0/24, b at .1)
/// and reached by c through a LAN of its own (192.168.8.0/24, c at .1).
fn lab() -> Lab {
    let t = mesh::star_topology(&["a", "b", "c"], "198.18.0.0/16");
    let t = t
        .host("printer")
        .link("b", &["192.168.7.1/24"], "printer", &["192.168.7.10/24"])
        .link("c", &["192.168.8.1/24"], "printer", &["192.168.8.10/24"])
        .route("c", ROUTE, "192.168.8.10");
    Lab::build(&t).expect("building the lab")
}

/// `GET /` from the LAN host in `host`: the source address it saw, or why it failed.
fn fetch(lab: &Lab, host: &str) -> Result<String, String> {
    http_source(lab, host, HOST)
}

/// The end of a process's log.
fn tail(p: &pinhole_netlab::Proc) -> String {
    let log = p.log_text();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The routes a's status says it sends through `peer`.
fn in_use(lab: &Lab, host: &str, peer: &str) -> Vec<String> {
    let v = status_json(lab, host);
    v["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == peer))
        .and_then(|p| p["routes_in_use"].as_array())
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_lan_behind_a_router_is_reached_and_fails_over_to_a_second_router() {
    if skip_without_root("a_lan_behind_a_router_is_reached_and_fails_over_to_a_second_router") {
        return;
    }
    let mut lab = lab();
    let t = tool();
    let _server = lab
        .spawn(
            "printer",
            &[t.to_str().unwrap(), "http", "0.0.0.0:8080", "120"],
        )
        .expect("the LAN host's HTTP server");
    let control = Control::new(&lab);
    let _control = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let b_before = routing_state(&lab, "b");
    let a_before = routing_state(&lab, "a");
    let _a = start_node(&mut lab, "a", &key);
    let _b = start_node(&mut lab, "b", &key);
    let _c = start_node(&mut lab, "c", &key);
    // The host itself answers on its LAN (b is on it).
    assert_eq!(fetch(&lab, "b"), Ok("192.168.7.1".into()));

    pinhole_ok(&lab, "b", &["up", "--advertise-routes", ROUTE]);
    pinhole_ok(&lab, "c", &["up", "--advertise-routes", ROUTE]);
    // Offered, not approved, and a does not accept routes: the LAN is out of reach.
    assert!(fetch(&lab, "a").is_err());
    control.cli(&lab, &["route", "approve", "b", ROUTE]);
    Lab::wait_for(Duration::from_secs(5), || {
        status_json(&lab, "a")["peers"]
            .as_array()
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == "b" && p["routes"][0] == ROUTE)
            })
    });
    assert!(fetch(&lab, "a").is_err(), "used without --accept-routes");
    assert!(in_use(&lab, "a", "b").is_empty());

    // With --accept-routes a reaches the host through b, which masquerades it.
    pinhole_ok(&lab, "a", &["up", "--accept-routes"]);
    let through_b = Lab::wait_for(Duration::from_secs(10), || {
        fetch(&lab, "a") == Ok("192.168.7.1".into())
    });
    assert!(
        through_b,
        "a → printer through b: {:?}\na: {}\n{}\nb: {}\n{}",
        fetch(&lab, "a"),
        routing_state(&lab, "a"),
        tail(&_a),
        routing_state(&lab, "b"),
        tail(&_b)
    );
    assert_eq!(in_use(&lab, "a", "b"), [ROUTE]);
    let me = &status_json(&lab, "b")["self"];
    assert_eq!(me["approved_routes"][0], ROUTE, "{me:#}");
    assert_eq!(status_json(&lab, "a")["self"]["accept_routes"], true);

    // c is approved too: the route stays with b (its connections would break on a move).
    control.cli(&lab, &["route", "approve", "c", ROUTE]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fetch(&lab, "a"), Ok("192.168.7.1".into()));

    // b goes down: within 5 s the host is reached through c, masqueraded behind c's LAN
    // address; b's masquerading table and forwarding switch are gone.
    let (ok, _, err) = mesh::pinhole(&lab, "b", &["down"]);
    assert!(ok, "{err}");
    let down_at = Instant::now();
    let through_c = Lab::wait_for(Duration::from_secs(5), || {
        fetch(&lab, "a") == Ok("192.168.8.1".into())
    });
    let took = down_at.elapsed();
    assert!(
        through_c,
        "no failover to c within 5 s: {:?}",
        fetch(&lab, "a")
    );
    println!("failover to the second router: {:.1} s", took.as_secs_f64());
    assert_eq!(in_use(&lab, "a", "c"), [ROUTE]);
    assert_eq!(routing_state(&lab, "b"), b_before, "b's routing after down");

    // A policy whose rules reach the mesh only refuses the LAN (c's filter drops it); one
    // that names the CIDR lets it through again.
    let policy = |name: &str, dst: &str| {
        let path = lab.dir().join(name);
        let text = format!(
            r#"{{ "acls": [ {{ "action": "accept", "src": ["*"], "dst": ["{dst}"] }} ] }}"#
        );
        std::fs::write(&path, text).expect("a policy file");
        control.cli(&lab, &["policy", "set", path.to_str().unwrap()]);
    };
    policy("mesh-only.hujson", "100.64.0.0/10:*");
    let refused = Lab::wait_for(Duration::from_secs(5), || fetch(&lab, "a").is_err());
    assert!(refused, "the LAN is still reached: {:?}", fetch(&lab, "a"));
    policy("lan.hujson", "192.168.7.0/24:8080");
    let allowed = Lab::wait_for(Duration::from_secs(5), || {
        fetch(&lab, "a") == Ok("192.168.8.1".into())
    });
    assert!(allowed, "the CIDR rule: {:?}", fetch(&lab, "a"));

    // a's down puts its routing back exactly as it was.
    let (ok, _, err) = mesh::pinhole(&lab, "a", &["down"]);
    assert!(ok, "{err}");
    assert_eq!(routing_state(&lab, "a"), a_before, "a's routing after down");
}
