//! `pinhole status` as a table, like `tailscale status`: this node, then one line per peer with
//! its address, whether it is online, its path (`direct 198.51.100.7:41641 (stun)` with the
//! kind of the candidate / `relayed via REGION`), RTT, traffic and last handshake; then the
//! names peers answer to (`NAME.SUFFIX` through the node's DNS server).

use pinhole_proto::ipc::{Connection, PeerStatus, State, Status};
use std::fmt::Write as _;

fn state_word(s: State) -> &'static str {
    match s {
        State::NeedsLogin => "needs login",
        State::Stopped => "stopped",
        State::Connecting => "connecting",
        State::Connected => "connected",
        State::SessionExpired => "session expired",
    }
}

/// `1.2 KiB`, `3.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn path(p: &PeerStatus) -> String {
    match p.connection {
        Connection::Direct => match p.endpoint_kind {
            Some(k) => format!("direct {} ({k})", p.endpoint.as_deref().unwrap_or("?")),
            None => format!("direct {}", p.endpoint.as_deref().unwrap_or("?")),
        },
        Connection::Relayed => format!("relayed via {}", p.relay.as_deref().unwrap_or("?")),
        Connection::Connecting => "connecting".to_string(),
        Connection::Idle => match p.relay.as_deref() {
            Some(r) => format!("idle (last via {r})"),
            None => "idle".to_string(),
        },
        Connection::Offline => "offline".to_string(),
    }
}

pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let _ = write!(out, "state: {}", state_word(s.state));
    if let Some(r) = &s.reason {
        let _ = write!(out, " ({r})");
    }
    out.push('\n');
    if let Some(l) = &s.login {
        let _ = writeln!(
            out,
            "to sign in, open {} and enter the code {}",
            l.url, l.code
        );
    }
    if let Some(me) = &s.self_node {
        let _ = writeln!(
            out,
            "this node: {}{} {}{}",
            me.name,
            if me.dns_name.is_empty() {
                String::new()
            } else {
                format!(" ({})", me.dns_name)
            },
            me.addresses.join(" "),
            if me.endpoints.is_empty() {
                String::new()
            } else {
                format!("  endpoints {}", me.endpoints.join(" "))
            }
        );
    }
    if s.peers.is_empty() {
        out.push_str("no peers\n");
        return out;
    }
    let rows: Vec<[String; 8]> = s
        .peers
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.addresses.first().cloned().unwrap_or_default(),
                if p.online { "yes" } else { "no" }.to_string(),
                path(p),
                p.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes),
                p.last_handshake.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "ADDRESS",
        "ONLINE",
        "PATH",
        "RTT",
        "RX",
        "TX",
        "LAST HANDSHAKE",
    ];
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(head.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    for p in s.peers.iter().filter(|p| p.path_reason.is_some()) {
        let _ = writeln!(
            out,
            "{}: {}",
            p.name,
            p.path_reason.as_deref().unwrap_or("")
        );
    }
    policy_lines(s, &mut out);
    route_lines(s, &mut out);
    if let Some(dns) = &s.dns {
        let _ = writeln!(
            out,
            "names: NAME.{} (or NAME), answered by {}{}\nsystem resolver: {}",
            dns.suffix,
            dns.servers.join(" and "),
            if dns.upstreams.is_empty() {
                String::new()
            } else {
                format!("; other names go to {}", dns.upstreams.join(" "))
            },
            dns.os
        );
    }
    out
}

/// What the account's policy allows, peer by peer: what this node may reach on each, and the
/// packets each sent that the policy refused.
fn policy_lines(s: &Status, out: &mut String) {
    if !s.self_node.as_ref().is_some_and(|m| m.policy) {
        return;
    }
    let _ = writeln!(out, "access policy:");
    for p in &s.peers {
        let reach = p.may_reach.as_deref().unwrap_or("nothing");
        let _ = write!(out, "  {}: you may reach {reach}", p.name);
        if !p.tags.is_empty() {
            let _ = write!(out, " ({})", p.tags.join(", "));
        }
        match p.filtered_packets {
            0 => {}
            1 => out.push_str("; 1 packet from it refused by the policy"),
            n => {
                let _ = write!(out, "; {n} packets from it refused by the policy");
            }
        }
        out.push('\n');
    }
}

/// Routes: what this node offers and control approved, the networks peers forward (and
/// which of them this node uses), and the exit node in use.
fn route_lines(s: &Status, out: &mut String) {
    let me = s.self_node.as_ref();
    let routers: Vec<&PeerStatus> = s.peers.iter().filter(|p| !p.routes.is_empty()).collect();
    let offers = me.is_some_and(|m| !m.advertised_routes.is_empty());
    let exit = me.and_then(|m| m.exit_node.as_ref());
    if routers.is_empty() && !offers && exit.is_none() {
        return;
    }
    let _ = writeln!(out, "routes:");
    if let Some(m) = me.filter(|_| offers) {
        let each: Vec<String> = m
            .advertised_routes
            .iter()
            .map(|r| {
                let state = if m.approved_routes.contains(r) {
                    "approved"
                } else {
                    "waiting for approval"
                };
                format!("{r} ({state})")
            })
            .collect();
        let _ = writeln!(out, "  this node offers {}", each.join(", "));
    }
    let accept = me.is_some_and(|m| m.accept_routes);
    for p in routers {
        let subnets: Vec<String> = p
            .routes
            .iter()
            .filter(|r| !r.ends_with("/0"))
            .map(|r| {
                if p.routes_in_use.contains(r) {
                    format!("{r} (in use)")
                } else {
                    r.clone()
                }
            })
            .collect();
        let _ = write!(out, "  {}:", p.name);
        if !subnets.is_empty() {
            let _ = write!(out, " forwards {}", subnets.join(", "));
        }
        if p.exit_node {
            out.push_str(if subnets.is_empty() {
                " exit node"
            } else {
                "; exit node"
            });
        }
        if !subnets.is_empty() && !accept {
            out.push_str(" (not used: pinhole up --accept-routes)");
        }
        out.push('\n');
    }
    if let Some(e) = exit {
        match &e.problem {
            None => {
                let lan = if e.allow_lan {
                    "; the local network directly"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  exit node: {}: all internet traffic goes through it{lan}",
                    e.name
                );
            }
            Some(p) => {
                let _ = writeln!(out, "  exit node: {}: {p}", e.name);
            }
        }
    }
    if let Some(err) = me.and_then(|m| m.routing_error.as_deref()) {
        let _ = writeln!(out, "  problem: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, c: Connection) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            dns_name: format!("{name}.pinhole.internal"),
            node_key: "k".into(),
            addresses: vec!["100.64.0.2".into()],
            online: c != Connection::Offline,
            connection: c,
            endpoint: Some("198.51.100.7:41641".into()),
            relay: Some("fra".into()),
            rtt_ms: Some(1.25),
            path_reason: (c == Connection::Offline).then(|| "not connected".to_string()),
            last_handshake: Some("2026-11-22T17:00:00Z".into()),
            last_seen: None,
            rx_bytes: 1536,
            tx_bytes: 12,
            endpoint_kind: None,
            candidates: vec![],
            disco_pings_sent: 0,
            tags: vec![],
            filtered_packets: 0,
            may_reach: None,
            routes: Vec::new(),
            exit_node: false,
            routes_in_use: Vec::new(),
        }
    }

    #[test]
    fn the_policy_is_said_in_words() {
        let me = pinhole_proto::ipc::SelfStatus {
            name: "laptop".into(),
            dns_name: String::new(),
            node_key: "k".into(),
            addresses: vec![],
            endpoints: vec![],
            nat: Default::default(),
            home_relay: None,
            expires: None,
            tags: vec![],
            policy: true,
            advertised_routes: vec!["10.9.0.0/16".into(), "10.10.0.0/16".into()],
            approved_routes: vec!["10.9.0.0/16".into()],
            accept_routes: true,
            exit_node: Some(pinhole_proto::ipc::ExitNodeStatus {
                name: "db".into(),
                in_use: true,
                allow_lan: true,
                problem: None,
            }),
            routing_error: None,
        };
        let s = Status {
            state: State::Connected,
            reason: None,
            login: None,
            self_node: Some(me),
            dns: None,
            peers: vec![
                PeerStatus {
                    tags: vec!["tag:server".into()],
                    filtered_packets: 3,
                    may_reach: Some("ports 22 and 443".into()),
                    routes: vec!["192.168.1.0/24".into(), "0.0.0.0/0".into(), "::/0".into()],
                    exit_node: true,
                    routes_in_use: vec!["192.168.1.0/24".into(), "0.0.0.0/0".into(), "::/0".into()],
                    ..peer("db", Connection::Direct)
                },
                peer("phone", Connection::Idle),
            ],
        };
        let t = render(&s);
        assert!(
            t.contains("  db: you may reach ports 22 and 443 (tag:server); 3 packets from it refused by the policy\n"),
            "{t}"
        );
        assert!(t.contains("  phone: you may reach nothing\n"), "{t}");
        assert!(
            t.contains(
                "routes:\n  this node offers 10.9.0.0/16 (approved), 10.10.0.0/16 (waiting for approval)\n  db: forwards 192.168.1.0/24 (in use); exit node\n  exit node: db: all internet traffic goes through it; the local network directly\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn table_shows_path_and_traffic() {
        let s = Status {
            state: State::Connected,
            reason: None,
            login: None,
            self_node: None,
            dns: Some(pinhole_proto::ipc::DnsStatus {
                suffix: "pinhole.internal".into(),
                servers: vec!["100.100.100.100".into()],
                upstreams: vec!["127.0.0.53:53".into()],
                os: "/etc/resolv.conf (managed by pinholed)".into(),
                answered: 3,
                forwarded: 1,
            }),
            peers: vec![
                PeerStatus {
                    endpoint_kind: Some(pinhole_proto::ipc::EndpointKind::PeerReflexive),
                    ..peer("server", Connection::Direct)
                },
                peer("phone", Connection::Relayed),
                peer("old", Connection::Offline),
                peer("nas", Connection::Idle),
            ],
        };
        let t = render(&s);
        assert!(t.contains("idle (last via fra)"), "{t}");
        assert!(t.starts_with("state: connected\n"), "{t}");
        assert!(
            t.contains("direct 198.51.100.7:41641 (peer-reflexive)"),
            "{t}"
        );
        assert!(t.contains("relayed via fra"));
        assert!(t.contains("1.5 KiB"));
        assert!(t.contains("12 B"));
        assert!(t.contains("old: not connected"));
        assert!(
            t.ends_with("names: NAME.pinhole.internal (or NAME), answered by 100.100.100.100; other names go to 127.0.0.53:53\nsystem resolver: /etc/resolv.conf (managed by pinholed)\n"),
            "{t}"
        );
        let header = t.lines().nth(1).unwrap();
        assert!(
            header.starts_with("NAME") && header.ends_with("LAST HANDSHAKE"),
            "{header}"
        );
    }

    #[test]
    fn empty_and_not_connected_say_so() {
        let s = Status {
            state: State::SessionExpired,
            reason: Some("signed out".into()),
            login: None,
            self_node: None,
            peers: vec![],
            dns: None,
        };
        assert_eq!(
            render(&s),
            "state: session expired (signed out)\nno peers\n"
        );
    }
}
