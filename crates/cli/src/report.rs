//! How `pinhole ping` and `pinhole netcheck` read on a terminal.

use pinhole_proto::ipc::{Connection, NetcheckReport, PingReply};
use std::fmt::Write as _;

/// `pong from server (100.64.0.2) via direct 198.51.100.7:41641 in 1.23 ms`.
pub fn pong(r: &PingReply) -> String {
    let path = match r.connection {
        Connection::Direct => format!("direct {}", r.endpoint.as_deref().unwrap_or("?")),
        Connection::Relayed => format!("relay {}", r.relay.as_deref().unwrap_or("?")),
        Connection::Connecting | Connection::Idle | Connection::Offline => {
            "an unknown path".to_string()
        }
    };
    format!(
        "pong from {} ({}) via {path} in {:.2} ms",
        r.peer, r.address, r.rtt_ms
    )
}

/// `4 sent, 4 answered, rtt min/avg/max 0.41/0.52/0.70 ms`.
pub fn ping_summary(sent: u32, rtts: &[f64]) -> String {
    let mut s = format!("{sent} sent, {} answered", rtts.len());
    if !rtts.is_empty() {
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        let _ = write!(s, ", rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms");
    }
    s
}

/// The items joined with commas, or `empty` when there are none.
fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}

fn yes_no(v: Option<bool>, yes: &str, no: &str) -> String {
    match v {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "unknown".to_string(),
    }
}

/// Whether the mapping varies by destination, and what that makes the NAT; a public address that
/// is one of this host's own is no NAT at all.
fn nat_kind(r: &NetcheckReport) -> String {
    let own = r
        .public_endpoints
        .iter()
        .any(|p| r.local_endpoints.contains(p));
    match r.mapping_varies_by_dest {
        Some(false) if own => "no (no NAT: the public address is this host's own)".into(),
        Some(true) => "yes (a hard NAT, the port changes with each destination: direct paths \
                       need the peer's NAT to be easy, or a port mapping)"
            .into(),
        Some(false) => "no (an easy NAT, the same public port for every destination: hole \
                        punching works)"
            .into(),
        None if own => "unknown (one STUN answer; the public address is this host's own, so \
                        likely no NAT)"
            .into(),
        None => "unknown (fewer than two STUN answers)".into(),
    }
}

/// What netcheck adds while an exit node is chosen: its probes (like the tunnel's own
/// packets) leave by the physical network, while everything else goes through the exit node.
pub fn exit_node_note(e: &pinhole_proto::ipc::ExitNodeStatus) -> String {
    match &e.problem {
        None => format!(
            "exit node: all other traffic goes through {} (the internet sees its address, not the \
             one above, which is this network's)\n",
            e.name
        ),
        Some(p) => format!("exit node: {}: {p}\n", e.name),
    }
}

pub fn netcheck(r: &NetcheckReport) -> String {
    let mut out = String::new();
    let udp = match r.udp {
        None => "unknown (no STUN server in the relay map)".to_string(),
        v => yes_no(
            v,
            "yes",
            "no (UDP seems blocked: peers will be reached through relays)",
        ),
    };
    let _ = writeln!(out, "UDP: {udp}");
    let _ = writeln!(out, "local port: {}", r.port);
    let _ = writeln!(
        out,
        "public address: {}",
        list_or(&r.public_endpoints, "unknown")
    );
    let _ = writeln!(out, "NAT mapping varies by destination: {}", nat_kind(r));
    let family = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no answer",
        None => "no server to ask",
    };
    let _ = writeln!(out, "IPv4: {}, IPv6: {}", family(r.ipv4), family(r.ipv6));
    let _ = writeln!(
        out,
        "hairpinning: {}",
        yes_no(
            r.hairpinning,
            "yes",
            "no (nodes behind this NAT reach each other only by their local addresses or a relay)"
        )
    );
    let pm = &r.port_mapping;
    let port_mapping = match (&pm.protocol, &pm.external, &pm.error) {
        (Some(p), Some(ext), _) => format!(
            "{p}, {ext} forwarded by {}",
            pm.gateway.as_deref().unwrap_or("the gateway")
        ),
        (_, _, Some(e)) => format!("none ({e})"),
        _ => "none".to_string(),
    };
    let _ = writeln!(out, "port mapping: {port_mapping}");
    let _ = writeln!(
        out,
        "local endpoints: {}",
        list_or(&r.local_endpoints, "none")
    );
    let control = match (&r.control.url, r.control.reachable, r.control.latency_ms) {
        (None, _, _) => "none configured".to_string(),
        (Some(u), true, Some(ms)) => format!("{u} reachable, {ms:.1} ms"),
        (Some(u), _, _) => format!(
            "{u} unreachable ({})",
            r.control.error.as_deref().unwrap_or("no answer")
        ),
    };
    let _ = writeln!(out, "coordination server: {control}");
    if r.regions.is_empty() {
        let _ = writeln!(out, "relay regions: none known yet");
    } else {
        let _ = writeln!(
            out,
            "relay regions (preferred: {}):",
            r.preferred_relay.as_deref().unwrap_or("none")
        );
        for g in &r.regions {
            let detail = match (g.latency_ms, &g.error) {
                (Some(ms), _) => format!("{ms:.1} ms"),
                (None, Some(e)) => e.clone(),
                (None, None) => "no answer".to_string(),
            };
            let _ = writeln!(out, "  {} ({}): {detail}", g.code, g.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::ipc::{ControlCheck, PortMapCheck, RegionLatency};

    #[test]
    fn pong_names_the_path() {
        let r = PingReply {
            peer: "server".into(),
            address: "100.64.0.2".into(),
            rtt_ms: 1.234,
            connection: Connection::Direct,
            endpoint: Some("198.51.100.7:41641".into()),
            relay: None,
        };
        assert_eq!(
            pong(&r),
            "pong from server (100.64.0.2) via direct 198.51.100.7:41641 in 1.23 ms"
        );
        assert_eq!(
            ping_summary(3, &[1.0, 2.0]),
            "3 sent, 2 answered, rtt min/avg/max 1.00/1.50/2.00 ms"
        );
        assert_eq!(ping_summary(2, &[]), "2 sent, 0 answered");
    }

    #[test]
    fn netcheck_says_what_is_unknown_and_why_a_region_failed() {
        let r = NetcheckReport {
            udp: Some(true),
            port: 41641,
            local_endpoints: vec!["192.0.2.1:41641".into()],
            public_endpoints: vec!["203.0.113.5:40000".into()],
            mapping_varies_by_dest: None,
            ipv4: Some(true),
            ipv6: None,
            hairpinning: Some(false),
            port_mapping: PortMapCheck {
                protocol: Some("pcp".into()),
                external: Some("203.0.113.5:41641".into()),
                gateway: Some("192.168.1.1".into()),
                error: None,
            },
            regions: vec![
                RegionLatency {
                    code: "fra".into(),
                    name: "Frankfurt".into(),
                    latency_ms: Some(12.5),
                    public_endpoint: Some("203.0.113.5:40000".into()),
                    error: None,
                },
                RegionLatency {
                    code: "nyc".into(),
                    name: "New York".into(),
                    latency_ms: None,
                    public_endpoint: None,
                    error: Some("no STUN answer from 198.51.100.2:3478".into()),
                },
            ],
            preferred_relay: Some("fra".into()),
            control: ControlCheck {
                url: Some("https://control.example".into()),
                reachable: true,
                latency_ms: Some(3.0),
                error: None,
            },
        };
        let text = netcheck(&r);
        let mut easy = r.clone();
        easy.mapping_varies_by_dest = Some(false);
        assert!(netcheck(&easy).contains("destination: no (an easy NAT"));
        easy.local_endpoints = easy.public_endpoints.clone();
        assert!(netcheck(&easy)
            .contains("destination: no (no NAT: the public address is this host's own)"));
        let mut hard = r.clone();
        hard.mapping_varies_by_dest = Some(true);
        assert!(netcheck(&hard).contains("destination: yes (a hard NAT"));
        assert!(text.contains("UDP: yes"));
        assert!(text.contains("public address: 203.0.113.5:40000"));
        assert!(
            text.contains("NAT mapping varies by destination: unknown (fewer than two STUN"),
            "{text}"
        );
        assert!(text.contains("fra (Frankfurt): 12.5 ms"));
        assert!(text.contains("nyc (New York): no STUN answer from 198.51.100.2:3478"));
        assert!(text.contains("https://control.example reachable, 3.0 ms"));
        assert!(text.contains("IPv4: yes, IPv6: no server to ask"));
        assert!(text.contains("hairpinning: no ("));
        assert!(
            text.contains("port mapping: pcp, 203.0.113.5:41641 forwarded by 192.168.1.1"),
            "{text}"
        );
        let none = NetcheckReport {
            port_mapping: PortMapCheck {
                error: Some("UPnP: no gateway answered".into()),
                ..Default::default()
            },
            ..r
        };
        assert!(netcheck(&none).contains("port mapping: none (UPnP: no gateway answered)"));
    }

    #[test]
    fn netcheck_says_when_traffic_goes_through_an_exit_node() {
        let e = pinhole_proto::ipc::ExitNodeStatus {
            name: "b".into(),
            in_use: true,
            allow_lan: false,
            problem: None,
        };
        assert!(exit_node_note(&e).starts_with("exit node: all other traffic goes through b"));
        let off = pinhole_proto::ipc::ExitNodeStatus {
            problem: Some("the exit node b is offline".into()),
            in_use: false,
            ..e
        };
        assert_eq!(
            exit_node_note(&off),
            "exit node: b: the exit node b is offline\n"
        );
    }
}
