//! The status the local API reports: the daemon's state, this node, and every peer with its path,
//! built from the coordination server's map and the engine's view of each peer.

use crate::control::mapped_peers::MappedPeers;
use pinhole_engine::Key;
use pinhole_engine::{Engine, Path, PathReason, PeerStatus as EnginePeer};
use pinhole_proto::control::Node;
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use pinhole_proto::filter::{self, NodePolicy};
use pinhole_proto::ipc::{
    Candidate, Connection, DnsStatus, LoginPrompt, Nat, PeerStatus, SelfStatus, State, Status,
};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// A handshake older than this no longer shows the path as up (WireGuard rekeys every 2 min).
const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);

/// How long after its last packet a peer without a fresh session is still `connecting`:
/// WireGuard's REKEY_ATTEMPT_TIME, after which it stops trying until the next packet.
const CONNECTING_FOR: Duration = Duration::from_secs(90);

/// Everything a status is made of, at one moment.
pub struct Inputs<'a> {
    pub state: State,
    pub reason: Option<String>,
    pub self_node: Option<SelfStatus>,
    /// Peers from the map (none in static mode).
    pub map_peers: Vec<&'a Node>,
    /// Peers in the engine.
    pub engine_peers: Vec<EnginePeer>,
    /// The last measured round trip to each peer, in milliseconds.
    pub rtts: &'a HashMap<Key, f64>,
    /// What netcheck learned about this node's network (for the reasons a path is relayed).
    pub nat: &'a Nat,
    /// Why a relay region cannot be reached, for regions whose connection is down.
    pub relay_errors: &'a HashMap<String, String>,
    /// The DNS server's state, while there is a map.
    pub dns: Option<DnsStatus>,
    /// This node's share of the account's policy; none: the account has no policy.
    pub policy: Option<&'a NodePolicy>,
    /// The routes this node sends through each peer now.
    pub routes_in_use: &'a HashMap<Key, Vec<String>>,
    pub now: Instant,
    pub wall_now: SystemTime,
}

pub fn build(i: Inputs<'_>) -> Status {
    let mut peers = Vec::with_capacity(i.map_peers.len().max(i.engine_peers.len()));
    // The engine's peers by key: one lookup per map peer (a scan each was quadratic, a
    // noticeable share of a core every second with 10,000 peers).
    let by_key: HashMap<&Key, &EnginePeer> =
        i.engine_peers.iter().map(|e| (&e.public_key, e)).collect();
    let mut seen = std::collections::HashSet::with_capacity(i.map_peers.len());
    for n in &i.map_peers {
        let e = by_key.get(&n.node_key).copied();
        seen.insert(n.node_key);
        let mut p = peer(
            n.name.clone(),
            n.node_key.to_base64(),
            n.addresses.iter().map(|a| a.to_string()).collect(),
            (n.online, &n.endpoints),
            e,
            &i,
        );
        p.last_seen = n.last_seen.and_then(rfc3339_from_millis);
        p.dns_name = n.dns_name.clone();
        p.tags = n.tags.clone();
        p.routes = n.routes.iter().map(|r| r.to_string()).collect();
        p.exit_node = n.is_exit_node();
        p.routes_in_use = i
            .routes_in_use
            .get(&n.node_key)
            .cloned()
            .unwrap_or_default();
        p.may_reach = i.policy.map(|pol| {
            let allow = pol
                .reach
                .iter()
                .find(|r| r.id == n.id)
                .map(|r| r.allow.as_slice());
            filter::describe(allow.unwrap_or_default())
        });
        peers.push(p);
    }
    // Static mode: peers known only to the engine.
    for e in i
        .engine_peers
        .iter()
        .filter(|e| !seen.contains(&e.public_key))
    {
        peers.push(peer(
            e.public_key.short(),
            e.public_key.to_base64(),
            e.allowed_ips.iter().map(|n| n.to_string()).collect(),
            (true, &[]),
            Some(e),
            &i,
        ));
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    Status {
        state: i.state,
        reason: i.reason.clone(),
        login: None,
        self_node: i.self_node.clone(),
        peers,
        dns: i.dns.clone(),
    }
}

/// How a person reads a path that works: its `connection`, and the endpoint or relay it goes
/// over. The one mapping from the engine's path to the status's words (the status and ping
/// replies both use it).
pub fn path_fields(path: &Path) -> (Connection, Option<String>, Option<String>) {
    match path {
        Path::Direct(ep) => (Connection::Direct, Some(ep.to_string()), None),
        Path::Relayed(r) => (Connection::Relayed, None, Some(r.to_string())),
        Path::None => (Connection::Connecting, None, None),
    }
}

/// Why a peer is not direct, in words a person understands: what discovery saw, with what
/// netcheck knows of this network and what the peer's published endpoints show of its NAT.
pub fn why_not_direct(e: &EnginePeer, nat: &Nat, peer_endpoints: &[Endpoint]) -> String {
    let hard_here = nat.mapping_varies_by_dest == Some(true);
    let hard_there = mapping_varies(peer_endpoints);
    // The peer published endpoints but none a STUN server saw: its UDP does not get out.
    let peer_without_udp =
        !peer_endpoints.is_empty() && !peer_endpoints.iter().any(|p| p.kind == EndpointKind::Stun);
    match e.reason {
        Some(
            PathReason::Trying { .. }
            | PathReason::NoAnswer { .. }
            | PathReason::OneWay { .. }
            | PathReason::NoCandidates,
        ) if nat.udp == Some(false) => {
            "UDP is blocked on this network (no STUN server answered)".into()
        }
        Some(PathReason::NoAnswer { pings }) if peer_without_udp => format!(
            "the peer's network blocks UDP (no STUN server saw it, and none of its pings arrived; {pings} of ours unanswered)"
        ),
        Some(PathReason::NoDisco) => {
            "the peer is a plain WireGuard peer: only its configured endpoint is tried".into()
        }
        Some(PathReason::NoCandidates) => "the peer published no endpoints to try".into(),
        Some(PathReason::Trying { pings }) => {
            let n = e.candidates.len();
            let s = if n == 1 { "" } else { "s" };
            format!("trying {n} endpoint{s} ({pings} pings so far)")
        }
        Some(PathReason::Lost) => "the direct path stopped answering; trying again".into(),
        Some(PathReason::NoAnswer { .. } | PathReason::OneWay { .. })
            if hard_here && hard_there =>
        {
            "both sides are behind NATs that change the port for every destination".into()
        }
        Some(PathReason::NoAnswer { pings }) if hard_here => format!(
            "this network's NAT changes the port for every destination, and the peer's NAT drops what it did not send to ({pings} pings unanswered)"
        ),
        Some(PathReason::NoAnswer { pings }) if hard_there => format!(
            "the peer's NAT changes the port for every destination, and this network's NAT drops what it did not send to ({pings} pings unanswered)"
        ),
        Some(PathReason::NoAnswer { pings }) => format!(
            "peer's pings never arrived, and none of our {pings} pings was answered: a firewall or NAT on the way drops them"
        ),
        Some(PathReason::OneWay {
            pings,
            pings_received,
        }) => format!(
            "the peer's pings arrive ({pings_received}), but none of our {pings} pings was answered: its NAT or firewall drops what we send"
        ),
        None => match e.endpoint {
            Some(ep) => format!("no direct path: {ep} does not answer over UDP"),
            None => "no direct path: no endpoint known for the peer".to_string(),
        },
    }
}

/// Milliseconds since the Unix epoch (control's `last_seen`) as RFC 3339; none before 1970.
fn rfc3339_from_millis(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok()?;
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// Whether a node's published endpoints show a NAT that maps each destination to its own
/// port: STUN servers saw one address with different ports.
fn mapping_varies(endpoints: &[Endpoint]) -> bool {
    pinhole_engine::stun_port_spread(endpoints).is_some_and(|s| s > 0)
}

fn peer(
    name: String,
    node_key: String,
    addresses: Vec<String>,
    (online, peer_endpoints): (bool, &[Endpoint]),
    e: Option<&EnginePeer>,
    i: &Inputs<'_>,
) -> PeerStatus {
    let fresh = e
        .and_then(|e| e.last_handshake)
        .is_some_and(|t| i.now.saturating_duration_since(t) < HANDSHAKE_FRESH);
    let endpoint = e.and_then(|e| e.endpoint);
    let path = e.map_or(Path::None, |e| e.path.clone());
    let relay_down = |r: &str| {
        i.relay_errors
            .get(r)
            .map(|why| format!("relay {r} unreachable: {why}"))
    };
    let mut relay = None;
    let (connection, path_reason) = match (&path, fresh) {
        (Path::Direct(_), true) => (path_fields(&path).0, None),
        (Path::Relayed(_), true) => {
            let (connection, _, r) = path_fields(&path);
            relay = r;
            let why = e.map(|e| {
                let why = why_not_direct(e, i.nat, peer_endpoints);
                match &relay {
                    Some(r) => format!("{why}; relayed through {r}"),
                    None => why,
                }
            });
            (connection, why)
        }
        _ if !online => (
            Connection::Offline,
            Some("the peer is not connected to the coordination server".to_string()),
        ),
        // Nothing waiting to be sent: nothing to connect. The last path, if any, stays shown.
        _ if e
            .and_then(|e| e.last_sent)
            .is_none_or(|t| i.now.saturating_duration_since(t) >= CONNECTING_FOR) =>
        {
            let had_session = e.is_some_and(|e| e.last_handshake.is_some());
            let (_, _, r) = path_fields(&path);
            if had_session {
                relay = r;
            }
            (
                Connection::Idle,
                Some(if had_session {
                    "no traffic lately; the next packet brings the path back".to_string()
                } else {
                    "no traffic yet; the first packet starts the connection".to_string()
                }),
            )
        }
        (Path::Relayed(r), false) => (
            Connection::Connecting,
            Some(
                relay_down(r)
                    .unwrap_or_else(|| format!("waiting for a handshake through relay {r}")),
            ),
        ),
        _ if endpoint.is_none() => (
            Connection::Connecting,
            Some("no endpoint or relay known for the peer yet".to_string()),
        ),
        _ => (
            Connection::Connecting,
            Some("waiting for a handshake".to_string()),
        ),
    };
    let last_handshake = e.and_then(|e| e.last_handshake).map(|t| {
        let age = i.now.saturating_duration_since(t);
        humantime::format_rfc3339_seconds(i.wall_now - age).to_string()
    });
    let direct = connection == Connection::Direct;
    // The round trip of the path in use (disco's last pong), else the last ping through the tunnel.
    let rtt_ms = e
        .and_then(|e| e.rtt.filter(|_| direct))
        .map(|d| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0)
        .or_else(|| e.and_then(|e| i.rtts.get(&e.public_key).copied()));
    PeerStatus {
        name,
        dns_name: String::new(),
        node_key,
        addresses,
        online,
        connection,
        endpoint: endpoint.map(|e| e.to_string()),
        relay,
        rtt_ms,
        path_reason,
        last_handshake,
        last_seen: None,
        rx_bytes: e.map_or(0, |e| e.rx_bytes),
        tx_bytes: e.map_or(0, |e| e.tx_bytes),
        endpoint_kind: e.and_then(|e| e.endpoint_kind).filter(|_| direct),
        candidates: e.map_or_else(Vec::new, |e| {
            e.candidates
                .iter()
                .map(|c| Candidate {
                    addr: c.endpoint.addr.to_string(),
                    kind: c.endpoint.kind,
                    rtt_ms: c.rtt.map(|d| (d.as_secs_f64() * 100_000.0).round() / 100.0),
                    answering: c.trusted,
                    pings_sent: c.pings_sent,
                    pongs: c.pongs,
                })
                .collect()
        }),
        disco_pings_sent: e.map_or(0, |e| e.pings_sent),
        tags: Vec::new(),
        filtered_packets: e.map_or(0, |e| e.filtered_packets),
        may_reach: None,
        routes: Vec::new(),
        exit_node: false,
        routes_in_use: Vec::new(),
    }
}

/// The first lines of the status: the state, why, and a sign-in waiting for approval.
pub struct Headline {
    pub state: State,
    pub reason: Option<String>,
    pub login: Option<LoginPrompt>,
}

/// Publishes the status to the local API whenever it changes.
pub struct Reporter {
    tx: watch::Sender<Status>,
    self_node: Option<SelfStatus>,
    nat: Nat,
    home_relay: Option<String>,
    rtts: HashMap<Key, f64>,
    routes: RouteView,
}

/// What the status shows of routes, as the shell last planned and applied them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteView {
    /// What this node offers.
    pub advertised: Vec<String>,
    pub accept_routes: bool,
    pub exit_node: Option<pinhole_proto::ipc::ExitNodeStatus>,
    /// Why routes or forwarding could not be set up, if so.
    pub error: Option<String>,
    /// The routes sent through each peer.
    pub in_use: HashMap<Key, Vec<String>>,
}

impl Reporter {
    pub fn new(tx: watch::Sender<Status>) -> Self {
        Reporter {
            tx,
            self_node: None,
            nat: Nat::default(),
            home_relay: None,
            rtts: HashMap::new(),
            routes: RouteView::default(),
        }
    }

    /// The routes as planned and applied.
    pub fn set_routes(&mut self, view: RouteView) {
        self.routes = view;
    }

    /// The relay region peers reach this node through.
    pub fn set_home_relay(&mut self, region: Option<String>) {
        self.home_relay = region;
    }

    /// A round trip just measured to `peer` (a ping through the tunnel).
    pub fn set_rtt(&mut self, peer: Key, rtt_ms: f64) {
        self.rtts.insert(peer, rtt_ms);
    }

    /// What the last netcheck learned about the NAT.
    pub fn set_nat(&mut self, nat: Nat) {
        self.nat = nat;
    }

    /// Who this node is, once known (none when signed out).
    pub fn set_self(&mut self, node: Option<SelfStatus>) {
        self.self_node = node;
    }

    /// Someone may read the status: a local API client is connected (the server itself holds
    /// one receiver, each client one more). Without one, rebuilding it is wasted work; a client
    /// has it rebuilt before its first read.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 1
    }

    /// Rebuilds the status from the engine and the map; subscribers hear of real changes only.
    pub fn publish(
        &mut self,
        head: Headline,
        engine: &Engine,
        mapped: &MappedPeers,
        relay_errors: &HashMap<String, String>,
        dns: Option<DnsStatus>,
    ) {
        if let Some(me) = &mut self.self_node {
            me.nat = self.nat.clone();
            if let Some(n) = mapped.self_node() {
                me.dns_name = n.dns_name.clone();
                me.tags = n.tags.clone();
                me.approved_routes = n.routes.iter().map(|r| r.to_string()).collect();
            }
            me.advertised_routes = self.routes.advertised.clone();
            me.accept_routes = self.routes.accept_routes;
            me.exit_node = self.routes.exit_node.clone();
            me.routing_error = self.routes.error.clone();
            me.policy = mapped.policy().is_some();
            me.home_relay = self.home_relay.clone();
            if !mapped.endpoints.is_empty() {
                me.endpoints = mapped
                    .endpoints
                    .iter()
                    .map(|e| e.addr.to_string())
                    .collect();
            }
        }
        let mut status = build(Inputs {
            state: head.state,
            reason: head.reason,
            self_node: self.self_node.clone(),
            map_peers: mapped.map_peers(),
            engine_peers: engine.peers(),
            rtts: &self.rtts,
            nat: &self.nat,
            relay_errors,
            dns,
            policy: mapped.policy(),
            routes_in_use: &self.routes.in_use,
            now: Instant::now(),
            wall_now: SystemTime::now(),
        });
        status.login = head.login;
        self.tx.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }
}

/// This node as the status shows it; `expires_at` in milliseconds since the Unix epoch.
pub fn self_status(
    name: String,
    node_key: String,
    addresses: Vec<String>,
    expires_at: Option<i64>,
) -> SelfStatus {
    SelfStatus {
        name,
        dns_name: String::new(),
        node_key,
        addresses,
        endpoints: Vec::new(),
        nat: Nat::default(),
        home_relay: None,
        expires: expires_at.and_then(rfc3339_from_millis),
        tags: Vec::new(),
        policy: false,
        advertised_routes: Vec::new(),
        approved_routes: Vec::new(),
        accept_routes: false,
        exit_node: None,
        routing_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::key::Key;

    fn node(name: &str, k: u8, online: bool) -> Node {
        Node {
            id: name.into(),
            name: name.into(),
            dns_name: String::new(),
            node_key: Key([k; 32]),
            disco_key: Key([k + 1; 32]),
            addresses: vec![format!("100.64.0.{k}").parse().unwrap()],
            endpoints: vec![],
            home_relay: None,
            online,
            last_seen: None,
            os: "linux".into(),
            user: None,
            expires_at: None,
            tags: Vec::new(),
            routes: Vec::new(),
        }
    }

    fn engine_peer(k: u8, handshake: Option<Instant>) -> EnginePeer {
        EnginePeer {
            public_key: Key([k; 32]),
            endpoint: Some("192.0.2.2:41641".parse().unwrap()),
            path: Path::Direct("192.0.2.2:41641".parse().unwrap()),
            relay: None,
            allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
            last_handshake: handshake,
            last_sent: handshake,
            handshakes: u64::from(handshake.is_some()),
            rx_bytes: 10,
            tx_bytes: 20,
            rx_packets: 1,
            tx_packets: 1,
            filtered_packets: 0,
            disco: false,
            rtt: None,
            endpoint_kind: None,
            reason: None,
            candidates: vec![],
            pings_sent: 0,
        }
    }

    #[test]
    fn the_status_is_watched_while_a_client_holds_a_receiver_beside_the_servers() {
        let (tx, server) = watch::channel(build(Inputs {
            dns: None,
            policy: None,
            routes_in_use: &HashMap::new(),
            state: State::Connected,
            reason: None,
            self_node: None,
            map_peers: vec![],
            engine_peers: vec![],
            rtts: &HashMap::new(),
            nat: &Nat::default(),
            relay_errors: &HashMap::new(),
            now: Instant::now(),
            wall_now: SystemTime::now(),
        }));
        let reporter = Reporter::new(tx);
        assert!(!reporter.watched(), "only the server's receiver");
        let client = server.clone();
        assert!(reporter.watched());
        drop(client);
        assert!(!reporter.watched());
    }

    #[test]
    fn this_nodes_expiry_reads_as_rfc3339() {
        let me = self_status("a".into(), "k".into(), vec![], Some(1_795_000_000_000));
        assert_eq!(me.expires.as_deref(), Some("2026-11-18T11:06:40Z"));
        assert_eq!(
            self_status("a".into(), "k".into(), vec![], None).expires,
            None
        );
    }

    #[test]
    fn paths_follow_handshakes_and_presence() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let (a, b) = (node("a", 2, true), node("b", 3, true));
        let c = Node {
            last_seen: Some(1_795_000_000_000),
            ..node("c", 4, false)
        };
        let rtts = HashMap::from([(Key([2; 32]), 1.5)]);
        let s = build(Inputs {
            dns: None,
            policy: None,
            routes_in_use: &HashMap::new(),
            state: State::Connected,
            reason: None,
            self_node: None,
            map_peers: vec![&b, &a, &c],
            engine_peers: vec![
                engine_peer(2, Some(now - Duration::from_secs(5))),
                engine_peer(3, None),
            ],
            rtts: &rtts,
            nat: &Nat::default(),
            relay_errors: &HashMap::new(),
            now,
            wall_now: wall,
        });
        let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(s.peers[0].connection, Connection::Direct);
        assert_eq!(s.peers[0].endpoint.as_deref(), Some("192.0.2.2:41641"));
        assert_eq!(
            s.peers[0].last_handshake.as_deref(),
            Some("2026-11-18T11:06:35Z")
        );
        assert_eq!((s.peers[0].rx_bytes, s.peers[0].tx_bytes), (10, 20));
        assert_eq!(s.peers[0].rtt_ms, Some(1.5), "the last ping's round trip");
        assert_eq!(s.peers[1].rtt_ms, None);
        assert_eq!(s.peers[1].connection, Connection::Idle, "no traffic yet");
        assert_eq!(s.peers[1].last_seen, None, "never seen");
        assert_eq!(
            s.peers[2].last_seen.as_deref(),
            Some("2026-11-18T11:06:40Z")
        );
        assert!(s.peers[1]
            .path_reason
            .as_deref()
            .unwrap()
            .contains("no traffic yet"));
        assert_eq!(s.peers[2].connection, Connection::Offline);
        assert!(s.peers[2]
            .path_reason
            .as_deref()
            .unwrap()
            .contains("not connected"));
    }

    #[test]
    fn a_peer_with_nothing_to_send_is_idle_and_traffic_makes_it_connecting() {
        let now = Instant::now();
        let a = node("a", 2, true);
        let status = |e: EnginePeer| {
            build(Inputs {
                dns: None,
                policy: None,
                routes_in_use: &HashMap::new(),
                state: State::Connected,
                reason: None,
                self_node: None,
                map_peers: vec![&a],
                engine_peers: vec![e],
                rtts: &HashMap::new(),
                nat: &Nat::default(),
                relay_errors: &HashMap::new(),
                now,
                wall_now: SystemTime::now(),
            })
            .peers
            .remove(0)
        };
        // Talked through a relay ten minutes ago, quiet since: idle, the last path shown.
        let mut quiet = engine_peer(2, Some(now - Duration::from_secs(600)));
        quiet.path = Path::Relayed("fra".into());
        let p = status(quiet.clone());
        assert_eq!(p.connection, Connection::Idle);
        assert_eq!(p.relay.as_deref(), Some("fra"));
        assert!(p
            .path_reason
            .as_deref()
            .unwrap()
            .contains("no traffic lately"));
        // A packet for it a second ago and no fresh session yet: connecting.
        quiet.last_sent = Some(now - Duration::from_secs(1));
        let p = status(quiet.clone());
        assert_eq!(p.connection, Connection::Connecting);
        // Still nothing answered 90 s after the last packet: WireGuard gave up; idle again.
        quiet.last_sent = Some(now - Duration::from_secs(91));
        assert_eq!(status(quiet).connection, Connection::Idle);
    }

    #[test]
    fn relayed_peers_show_their_region_and_why() {
        let now = Instant::now();
        let (a, b) = (node("a", 2, true), node("b", 3, true));
        let mut relayed = engine_peer(2, Some(now - Duration::from_secs(5)));
        relayed.path = Path::Relayed("local".into());
        let mut waiting = engine_peer(3, None);
        waiting.path = Path::Relayed("fra".into());
        waiting.last_sent = Some(now - Duration::from_secs(1));
        let errors = HashMap::from([("fra".to_string(), "connection refused".to_string())]);
        let s = build(Inputs {
            dns: None,
            policy: None,
            routes_in_use: &HashMap::new(),
            state: State::Connected,
            reason: None,
            self_node: None,
            map_peers: vec![&a, &b],
            engine_peers: vec![relayed, waiting],
            rtts: &HashMap::new(),
            nat: &Nat::default(),
            relay_errors: &errors,
            now,
            wall_now: SystemTime::now(),
        });
        assert_eq!(s.peers[0].connection, Connection::Relayed);
        assert_eq!(s.peers[0].relay.as_deref(), Some("local"));
        assert_eq!(
            s.peers[0].path_reason.as_deref(),
            Some("no direct path: 192.0.2.2:41641 does not answer over UDP; relayed through local")
        );
        assert_eq!(s.peers[1].connection, Connection::Connecting);
        assert_eq!(
            s.peers[1].path_reason.as_deref(),
            Some("relay fra unreachable: connection refused")
        );
    }

    #[test]
    fn reasons_say_what_discovery_and_netcheck_saw() {
        let ep = |s: &str| -> Endpoint { s.parse().unwrap() };
        let with = |reason| EnginePeer {
            reason: Some(reason),
            ..engine_peer(2, None)
        };
        let easy = Nat {
            mapping_varies_by_dest: Some(false),
            udp: Some(true),
        };
        let hard = Nat {
            mapping_varies_by_dest: Some(true),
            udp: Some(true),
        };
        let blocked = Nat {
            mapping_varies_by_dest: None,
            udp: Some(false),
        };
        let peer_hard = [
            ep("10.0.0.2:41641 local"),
            ep("198.51.100.7:20001 stun"),
            ep("198.51.100.7:20002 stun"),
        ];
        let peer_easy = [ep("10.0.0.2:41641 local"), ep("198.51.100.7:41641 stun")];
        let no_answer = with(PathReason::NoAnswer { pings: 38 });
        for reason in [
            PathReason::NoAnswer { pings: 38 },
            PathReason::Trying { pings: 43 },
            PathReason::NoCandidates,
        ] {
            assert_eq!(
                why_not_direct(&with(reason), &blocked, &peer_easy),
                "UDP is blocked on this network (no STUN server answered)"
            );
        }
        let peer_blocked = [ep("10.0.0.2:41641 local")];
        assert_eq!(
            why_not_direct(&no_answer, &easy, &peer_blocked),
            "the peer's network blocks UDP (no STUN server saw it, and none of its pings \
             arrived; 38 of ours unanswered)"
        );
        assert_eq!(
            why_not_direct(&no_answer, &hard, &peer_hard),
            "both sides are behind NATs that change the port for every destination"
        );
        assert!(why_not_direct(&no_answer, &easy, &peer_hard)
            .starts_with("the peer's NAT changes the port for every destination"));
        assert!(why_not_direct(&no_answer, &hard, &peer_easy)
            .starts_with("this network's NAT changes the port for every destination"));
        assert_eq!(
            why_not_direct(&no_answer, &easy, &peer_easy),
            "peer's pings never arrived, and none of our 38 pings was answered: a firewall or \
             NAT on the way drops them"
        );
        let one_way = with(PathReason::OneWay {
            pings: 5,
            pings_received: 3,
        });
        assert!(why_not_direct(&one_way, &easy, &peer_easy).contains("pings arrive (3)"));
        assert_eq!(
            why_not_direct(&with(PathReason::Lost), &easy, &peer_easy),
            "the direct path stopped answering; trying again"
        );
        assert_eq!(
            why_not_direct(&with(PathReason::NoCandidates), &easy, &[]),
            "the peer published no endpoints to try"
        );
    }
}
