//! An exit node with real processes and real routing: a "public" web host in the lab's public
//! namespace answers with the source address it sees. a reaches it from its own address; with
//! `--exit-node b`, from b's (b forwards and masquerades), while a's own tunnel keeps working
//! (its UDP is not looped into the tunnel) and a's LAN is out of reach unless
//! `--exit-node-allow-lan`; names a's DNS server forwards are asked by b (the resolver sees
//! b's address); switching to c goes out at c's address; choosing none, `down`, and
//! `kill -9` (the janitor) leave a's rules, routes and nftables exactly as before.

use pinhole_netlab::mesh::{self, start_node, status_json, Control, PUBLIC};
use pinhole_netlab::pinhole::tool;
use pinhole_netlab::routing::{http_source, pinhole_ok, routing_state};
use pinhole_netlab::Proc;
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

/// The web host's address, on the public namespace's loopback (not the control server's).
const WEB: &str = "198.19.0.80";
const LAN_HOST: &str = "192.168.50.10:8080";
/// The resolver every node's system uses, on the public namespace's loopback.
const RESOLVER: &str = "198.19.0.53";

/// a, b and c behind the public router (default route through it), the web host on the public
/// namespace, and a's LAN with a host on it.
fn lab() -> Lab {
    let t = mesh::star_topology(&["a", "b", "c"], "default");
    let t = t
        .host("lanbox")
        .link("a", &["192.168.50.1/24"], "lanbox", &["192.168.50.10/24"]);
    let lab = Lab::build(&t).expect("building the lab");
    for addr in [WEB, RESOLVER] {
        lab.run_ok(
            PUBLIC,
            &["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"],
            Duration::from_secs(5),
        )
        .expect("the public hosts' addresses");
    }
    for n in ["a", "b", "c"] {
        lab.set_resolv_conf(n, &format!("nameserver {RESOLVER}\n"))
            .expect("resolv.conf");
    }
    lab
}

/// Asks a's DNS server for web.example; the address the resolver saw the query come from
/// (its log's last `query[A] web.example from …`).
fn resolved_from(lab: &Lab, resolver: &Proc) -> Result<String, String> {
    let argv = [
        "dig",
        "@100.100.100.100",
        "+time=2",
        "+tries=1",
        "+short",
        "web.example",
    ];
    let out = lab
        .run("a", &argv, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if answer != WEB {
        return Err(format!("web.example: {answer:?}"));
    }
    resolver
        .log_text()
        .lines()
        .rev()
        .find_map(|l| l.split("query[A] web.example from ").nth(1))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| "the resolver saw no query".into())
}

fn fetch(lab: &Lab, host: &str, dst: &str) -> Result<String, String> {
    http_source(lab, host, dst)
}

fn web(lab: &Lab) -> Result<String, String> {
    fetch(lab, "a", &format!("{WEB}:80"))
}

#[test]
fn all_traffic_goes_through_the_exit_node_and_routing_is_restored() {
    if skip_without_root("all_traffic_goes_through_the_exit_node_and_routing_is_restored") {
        return;
    }
    let mut lab = lab();
    let t = tool();
    let _web = lab
        .spawn(
            PUBLIC,
            &[t.to_str().unwrap(), "http", &format!("{WEB}:80"), "180"],
        )
        .expect("the web host");
    let _lanbox = lab
        .spawn(
            "lanbox",
            &[t.to_str().unwrap(), "http", "0.0.0.0:8080", "180"],
        )
        .expect("the LAN host");
    let resolver = mesh::start_dnsmasq(
        &mut lab,
        PUBLIC,
        RESOLVER,
        53,
        &[&format!("/web.example/{WEB}")],
    );
    let control = Control::new(&lab);
    let _control = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let before = routing_state(&lab, "a");
    let a = start_node(&mut lab, "a", &key);
    let _b = start_node(&mut lab, "b", &key);
    let _c = start_node(&mut lab, "c", &key);
    assert_eq!(web(&lab), Ok("198.18.1.2".into()), "a goes out directly");
    assert_eq!(fetch(&lab, "a", LAN_HOST), Ok("192.168.50.1".into()));
    assert_eq!(resolved_from(&lab, &resolver), Ok("198.18.1.2".into()));

    pinhole_ok(&lab, "b", &["up", "--advertise-exit-node"]);
    pinhole_ok(&lab, "c", &["up", "--advertise-exit-node"]);
    // Not approved yet: refused in words, nothing changed.
    let (ok, _, err) = mesh::pinhole(&lab, "a", &["up", "--exit-node", "b"]);
    assert!(!ok && err.contains("b is not an exit node"), "{err}");
    let (ok, _, err) = mesh::pinhole(&lab, "a", &["up", "--exit-node", "nobody"]);
    assert!(!ok && err.contains("no peer is named nobody"), "{err}");
    assert_eq!(web(&lab), Ok("198.18.1.2".into()));

    control.cli(&lab, &["route", "approve", "b", "exit"]);
    control.cli(&lab, &["route", "approve", "c", "exit"]);
    let approved = Lab::wait_for(Duration::from_secs(5), || {
        mesh::pinhole(&lab, "a", &["up", "--exit-node", "b"]).0
    });
    assert!(
        approved,
        "{:?}",
        mesh::pinhole(&lab, "a", &["up", "--exit-node", "b"])
    );
    let via_b = Lab::wait_for(Duration::from_secs(5), || {
        web(&lab) == Ok("198.18.2.2".into())
    });
    assert!(via_b, "a's request leaves through b: {:?}", web(&lab));
    let me = &status_json(&lab, "a")["self"];
    assert_eq!(me["exit_node"]["name"], "b", "{me:#}");
    assert_eq!(me["exit_node"]["in_use"], true, "{me:#}");
    // a's tunnel itself still works: its UDP to b is not looped into the tunnel.
    let (ok, out, err) = mesh::pinhole(&lab, "a", &["ping", "-c", "2", "b"]);
    assert!(ok, "{out}{err}");
    // Names go to the exit node's DNS server, which asks its own resolver.
    assert_eq!(resolved_from(&lab, &resolver), Ok("198.18.2.2".into()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(web(&lab), Ok("198.18.2.2".into()), "still through b");
    // The LAN goes through the exit node too (out of reach there) unless asked.
    assert!(fetch(&lab, "a", LAN_HOST).is_err());
    pinhole_ok(&lab, "a", &["up", "--exit-node-allow-lan"]);
    assert_eq!(fetch(&lab, "a", LAN_HOST), Ok("192.168.50.1".into()));
    assert_eq!(web(&lab), Ok("198.18.2.2".into()));

    // Switching exit nodes.
    pinhole_ok(&lab, "a", &["up", "--exit-node", "c"]);
    let via_c = Lab::wait_for(Duration::from_secs(5), || {
        web(&lab) == Ok("198.18.3.2".into())
    });
    assert!(via_c, "through c: {:?}", web(&lab));

    // None: directly again; down: routing exactly as before.
    pinhole_ok(&lab, "a", &["up", "--exit-node", ""]);
    assert_eq!(web(&lab), Ok("198.18.1.2".into()));
    pinhole_ok(&lab, "a", &["up", "--exit-node", "b"]);
    assert!(Lab::wait_for(Duration::from_secs(5), || web(&lab)
        == Ok("198.18.2.2".into())));
    pinhole_ok(&lab, "a", &["down"]);
    assert_eq!(routing_state(&lab, "a"), before, "a's routing after down");
    assert_eq!(web(&lab), Ok("198.18.1.2".into()));

    // kill -9 while all traffic goes through b: the janitor removes the rules.
    pinhole_ok(&lab, "a", &["up"]);
    assert!(Lab::wait_for(Duration::from_secs(5), || web(&lab)
        == Ok("198.18.2.2".into())));
    lab.kill(&a);
    let restored = Lab::wait_for(Duration::from_secs(5), || {
        routing_state(&lab, "a") == before
    });
    assert!(
        restored,
        "a's routing after kill -9:\n{}",
        routing_state(&lab, "a")
    );
    assert_eq!(web(&lab), Ok("198.18.1.2".into()));
}
