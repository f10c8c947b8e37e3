//! Every NAT profile of the lab behaves as its name says: from behind each router, RFC 5780
//! behaviour discovery against pinhole-relay's STUN service (alternate address and port)
//! finds the named mapping and filtering, and the port behaviour; coturn's
//! `turnutils_natdiscovery` agrees on the classic four. A profile that does not behave as
//! named fails here.

mod common;

use pinhole_netlab::mesh::pinhole_relay;
use pinhole_netlab::nat::{Filtering, Kind, Mapping, Profile};
use pinhole_netlab::nat_probe::Behaviour;
use pinhole_netlab::natlab::{Plan, PUBLIC, SERVER_ALT_IP, SERVER_IP};
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

const PROBE_PORT: &str = "5000";

fn start_stun(lab: &mut Lab) {
    let bin = pinhole_relay();
    let primary = format!("{SERVER_IP}:3478");
    let p = lab
        .spawn(
            PUBLIC,
            &[
                bin.to_str().unwrap(),
                "--stun-listen",
                &primary,
                "--stun-alternate-ip",
                SERVER_ALT_IP,
                "--stun-alternate-port",
                "3479",
            ],
        )
        .expect("starting pinhole-relay");
    let up = Lab::wait_for(Duration::from_secs(10), || {
        p.log_text().contains("STUN service listening")
    });
    assert!(up, "pinhole-relay did not start:\n{}", p.log_text());
}

/// coturn on both server addresses (port 3480, alternate 3481): the independent check.
fn start_coturn(lab: &mut Lab) {
    pinhole_netlab::mesh::start_coturn(lab, PUBLIC, &[SERVER_IP, SERVER_ALT_IP], 3480, Some(3481));
}

/// coturn's `turnutils_natdiscovery` from `host`: (mapping, filtering) as it names them,
/// each test from a socket of its own.
fn coturn_says(lab: &Lab, host: &str) -> (String, String) {
    let verdict = |flag: &str, what: &str| {
        let out = lab
            .run(
                host,
                &["turnutils_natdiscovery", flag, "-p", "3480", SERVER_IP],
                Duration::from_secs(60),
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .find(|l| l.contains(what) && (l.contains("Dependent") || l.contains("Independent")))
            .map(|l| {
                if l.contains("Endpoint Independent") {
                    "independent"
                } else if l.contains("Address and Port Dependent") {
                    "address and port dependent"
                } else {
                    "address dependent"
                }
            })
            .unwrap_or("no verdict")
            .to_string()
    };
    (verdict("-m", "Mapping"), verdict("-f", "Filtering"))
}

fn coturn_name(m: Mapping, f: Filtering) -> (String, String) {
    let name = |s: &str| {
        match s {
            "eim" | "eif" => "independent",
            "adm" | "adf" => "address dependent",
            _ => "address and port dependent",
        }
        .to_string()
    };
    (name(&m.to_string()), name(&f.to_string()))
}

/// nat-type from `host`: the behaviour, or the tool's error.
fn probe(lab: &Lab, host: &str) -> Result<Behaviour, String> {
    let server = format!("{SERVER_IP}:3478");
    let out = lab
        .run(
            host,
            &[common::tool(), "nat-type", &server, PROBE_PORT],
            Duration::from_secs(60),
        )
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().next().unwrap_or_default().to_string());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))?;
    Behaviour::from_json(&v).ok_or_else(|| format!("unexpected JSON: {v}"))
}

#[test]
fn every_profile_behaves_as_named() {
    if skip_without_root("every_profile_behaves_as_named") {
        return;
    }
    let mut profiles = Profile::all_nine();
    for extra in [
        "eim-eif+hash",
        "eim-adpf+hash",
        "adpm-adpf+random",
        "public",
        "udp-blocked",
    ] {
        profiles.push(extra.parse().unwrap());
    }
    let mut plan = Plan::new();
    let hosts: Vec<String> = (0..profiles.len()).map(|i| format!("n{i}")).collect();
    for (p, h) in profiles.iter().zip(&hosts) {
        plan = plan.site(p.clone(), &[h.as_str()]);
    }
    let mut lab = plan.build().expect("building the NAT lab");
    start_stun(&mut lab);
    start_coturn(&mut lab);
    let lab = &lab;
    type Found = (Profile, Result<Behaviour, String>, (String, String));
    let found: Vec<Found> = std::thread::scope(|s| {
        let handles: Vec<_> = profiles
            .iter()
            .zip(&hosts)
            .map(|(p, h)| s.spawn(move || (p.clone(), probe(lab, h), coturn_says(lab, h))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut wrong = Vec::new();
    for (p, got, coturn) in &found {
        if let Some((m, f)) = p.behaviour() {
            if *coturn != coturn_name(m, f) {
                wrong.push(format!("{p}: coturn says {coturn:?}"));
            }
        }
        let ok = match (p.kind, got) {
            (Kind::UdpBlocked, Err(e)) => e.contains("no answer"),
            (Kind::UdpBlocked, Ok(_)) => false,
            (Kind::Public, Ok(b)) => b.is(Mapping::Eim, Filtering::Eif) && b.port_preserved,
            (
                Kind::Nat {
                    mapping,
                    filtering,
                    ports,
                },
                Ok(b),
            ) => {
                b.is(mapping, filtering)
                    && b.port_preserved == (ports == pinhole_netlab::nat::Ports::Preserve)
            }
            (_, Err(_)) => false,
        };
        println!("{p:<22} {got:?} coturn: {coturn:?}");
        if !ok {
            wrong.push(format!("{p}: {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "profiles not behaving as named:\n{}",
        wrong.join("\n")
    );
}

/// The mapping lifetime: with `+timeout=3` a mapping lives while used and is gone (from
/// conntrack and from the inbound map) three seconds after its last packet.
#[test]
fn a_short_mapping_timeout_expires_idle_mappings() {
    if skip_without_root("a_short_mapping_timeout_expires_idle_mappings") {
        return;
    }
    let profile: Profile = "eim-eif+timeout=3".parse().unwrap();
    let mut lab = Plan::new()
        .site(profile, &["n"])
        .build()
        .expect("building the NAT lab");
    start_stun(&mut lab);
    let router = Plan::router(0);
    let mapped = |lab: &Lab| {
        let map = lab
            .run_ok(
                &router,
                &["nft", "list", "map", "ip", "natlab", "inbound"],
                Duration::from_secs(5),
            )
            .expect("listing the map");
        let tracked = lab
            .run_ok(
                &router,
                &["conntrack", "-L", "-p", "udp"],
                Duration::from_secs(5),
            )
            .unwrap_or_default();
        (
            map.contains(": 10.0.0.2 . 5000"),
            tracked.contains("sport=5000"),
        )
    };
    let b = probe(&lab, "n").expect("probing");
    assert!(b.is(Mapping::Eim, Filtering::Eif), "{b:?}");
    assert_eq!(
        mapped(&lab),
        (true, true),
        "the mapping is there right after use"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(mapped(&lab), (false, false), "gone after 3 s idle");
}

/// Hairpinning: behind a `+hairpin` router, a packet to the router's public address and a
/// mapped port comes back in (coturn's hairpinning discovery sees its own request); behind
/// the same profile without it, it does not.
#[test]
fn hairpinning_is_there_only_when_asked_for() {
    if skip_without_root("hairpinning_is_there_only_when_asked_for") {
        return;
    }
    let mut lab = Plan::new()
        .site("eim-adpf+hairpin".parse().unwrap(), &["with"])
        .site("eim-adpf".parse().unwrap(), &["without"])
        .build()
        .expect("building the NAT lab");
    start_coturn(&mut lab);
    let hairpins = |host: &str| {
        let out = lab
            .run(
                host,
                &["turnutils_natdiscovery", "-H", "-p", "3480", SERVER_IP],
                Duration::from_secs(60),
            )
            .expect("running turnutils_natdiscovery");
        String::from_utf8_lossy(&out.stdout).contains("successful hairpinning")
    };
    assert!(hairpins("with"), "the +hairpin router does not hairpin");
    assert!(!hairpins("without"), "a router without +hairpin hairpins");
}
