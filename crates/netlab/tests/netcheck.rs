//! `pinhole netcheck` against a third-party STUN server (coturn) in two relay regions: a node
//! with UDP learns its public address, that its mapping does not vary by destination and which
//! region is nearest; a node whose firewall drops STUN learns that UDP is blocked. The status
//! carries what netcheck found.

use pinhole_netlab::mesh::{self, pinhole, start_node, status_json, Control, PUBLIC};
use pinhole_netlab::skip_without_root;
use std::time::Duration;

#[test]
fn netcheck_finds_udp_the_public_address_and_the_nearest_region() {
    if skip_without_root("netcheck_finds_udp_the_public_address_and_the_nearest_region") {
        return;
    }
    let names = ["n1", "n2"];
    let mut lab = mesh::star(&names);
    // Two regions, each a STUN server on one of the router's addresses.
    let _stun1 = mesh::start_stun_server(&mut lab, PUBLIC, "198.18.1.1");
    let _stun2 = mesh::start_stun_server(&mut lab, PUBLIC, "198.18.2.1");
    let relay_map = serde_json::json!({ "regions": [
        { "code": "one", "name": "Region one",
          "relays": [{ "url": "http://198.18.1.1:8080/relay", "stun": "198.18.1.1:3478" }] },
        { "code": "two", "name": "Region two",
          "relays": [{ "url": "http://198.18.2.1:8080/relay", "stun": "198.18.2.1:3478" }] },
    ]});
    let map_file = lab.dir().join("relays.json");
    std::fs::write(&map_file, relay_map.to_string()).expect("writing the relay map");
    let control = Control::new(&lab);
    let _server = control.start_with(
        &mut lab,
        &["--relay-map", map_file.to_str().unwrap(), "--no-stun"],
    );
    let key = control.authkey_file(&lab);
    let _n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);
    // n2's firewall drops STUN.
    lab.run_ok(
        "n2",
        &[
            "nft",
            "add table inet nostun; add chain inet nostun out { type filter hook output priority 0; }; add rule inet nostun out udp dport 3478 drop",
        ],
        Duration::from_secs(5),
    )
    .expect("blocking STUN in n2");
    // The map (with the relay map) has to have arrived.
    let arrived = pinhole_netlab::Lab::wait_for(Duration::from_secs(10), || {
        status_json(&lab, "n1")["state"] == "connected"
    });
    assert!(arrived);

    let (ok, out, err) = pinhole(&lab, "n1", &["netcheck", "--json"]);
    assert!(ok, "{err}");
    let nc: serde_json::Value = serde_json::from_str(&out).expect("netcheck --json");
    assert_eq!(nc["udp"], true, "{nc:#}");
    // No NAT between n1 and the router: the public address is n1's own, the same for both.
    assert_eq!(
        nc["public_endpoints"],
        serde_json::json!(["198.18.1.2:41641"]),
        "{nc:#}"
    );
    assert_eq!(nc["mapping_varies_by_dest"], false, "{nc:#}");
    assert_eq!(nc["ipv4"], true, "{nc:#}");
    assert!(nc["ipv6"].is_null(), "no IPv6 STUN server: unknown {nc:#}");
    // No NAT: a packet to its own public address reaches it.
    assert_eq!(nc["hairpinning"], true, "{nc:#}");
    assert!(nc["port_mapping"]["protocol"].is_null(), "{nc:#}");
    let regions = nc["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 2, "{nc:#}");
    for r in regions {
        assert!(
            r["latency_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0 && ms < 1000.0),
            "{r:#}"
        );
        assert_eq!(r["public_endpoint"], "198.18.1.2:41641");
    }
    assert!(nc["preferred_relay"].is_string(), "{nc:#}");
    // The status now says what netcheck found.
    let st = status_json(&lab, "n1");
    assert_eq!(st["self"]["nat"]["udp"], true, "{st:#}");
    assert_eq!(st["self"]["nat"]["mapping_varies_by_dest"], false, "{st:#}");
    let (ok, text, _) = pinhole(&lab, "n1", &["netcheck"]);
    eprintln!("$ pinhole netcheck (n1)\n{text}");
    assert!(
        ok && text.contains("UDP: yes") && text.contains("one (Region one): "),
        "{text}"
    );

    let (ok, out, err) = pinhole(&lab, "n2", &["netcheck", "--json"]);
    assert!(ok, "{err}");
    let nc: serde_json::Value = serde_json::from_str(&out).expect("netcheck --json");
    assert_eq!(nc["udp"], false, "{nc:#}");
    assert_eq!(nc["public_endpoints"], serde_json::json!([]));
    assert!(
        nc["regions"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no STUN answer from 198.18.1.1:3478")),
        "{nc:#}"
    );
    let (ok, text, _) = pinhole(&lab, "n2", &["netcheck"]);
    eprintln!("$ pinhole netcheck (n2, STUN dropped)\n{text}");
    assert!(ok && text.contains("UDP: no"), "{text}");
}
