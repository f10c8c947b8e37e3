//! Which peer carries which route: the subnet routes peers forward (with `--accept-routes`) and
//! the default routes of the exit node chosen with `--exit-node`. Pure: the map's peers, their
//! round-trip times and the user's choices in, the plan out.
//!
//! A route offered by several online routers goes to the one with the lowest round-trip time
//! when it is first chosen, and stays with it while it is online and offers the route (moving
//! established connections to another router would break them: each router masquerades with
//! its own address); when it goes offline or withdraws the route, the best remaining router
//! takes over at the next plan. Overlapping routes all stay: the more specific one wins in the
//! engine's and the OS's longest-prefix match. The exit node fails closed: while the chosen
//! one is offline or no longer an exit node, internet traffic is dropped, not sent outside the
//! tunnel, and the plan says why.

use ipnet::IpNet;
use pinhole_proto::control::Node;
use pinhole_proto::key::Key;
use std::collections::BTreeMap;
use std::time::Duration;

/// A peer as the plan sees it.
#[derive(Debug, Clone)]
pub struct Router<'a> {
    pub node: &'a Node,
    /// The round trip measured to it, if any.
    pub rtt: Option<Duration>,
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct Wanted<'a> {
    pub accept_routes: bool,
    /// The exit node as the user named it.
    pub exit_node: Option<&'a str>,
    /// The routes this node offers itself (never taken from a peer).
    pub own_routes: &'a [IpNet],
}

/// The exit node in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitUse {
    /// As the user named it.
    pub asked: String,
    /// The peer, when the map has it.
    pub name: Option<String>,
    pub key: Option<Key>,
    /// Why traffic cannot go through it right now (it is dropped instead).
    pub problem: Option<String>,
}

/// Which routes each peer carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Per router, the routes it carries (beyond its own addresses), in a stable order.
    pub assigned: BTreeMap<Key, Vec<IpNet>>,
    pub exit: Option<ExitUse>,
}

impl RoutePlan {
    /// The routes this router carries.
    pub fn routes_of(&self, key: &Key) -> &[IpNet] {
        self.assigned.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every route the OS must send into the tunnel: the subnet routes in use and, with an
    /// exit node chosen (reachable or not: it fails closed), both default routes.
    pub fn os_routes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .assigned
            .values()
            .flatten()
            .filter(|n| n.prefix_len() != 0)
            .copied()
            .collect();
        if self.exit.is_some() {
            out.extend(defaults());
        }
        out.sort();
        out.dedup();
        out
    }

    /// The router carrying `net`, if one does.
    pub fn router_of(&self, net: &IpNet) -> Option<Key> {
        self.assigned
            .iter()
            .find(|(_, nets)| nets.contains(net))
            .map(|(k, _)| *k)
    }
}

/// Both default routes.
pub fn defaults() -> [IpNet; 2] {
    [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]
}

/// Whether `node` is the peer the user named (name or DNS name in any case, a final dot
/// allowed, or an overlay address).
pub fn names(node: &Node, asked: &str) -> bool {
    let name = asked.strip_suffix('.').unwrap_or(asked);
    node.name.eq_ignore_ascii_case(name)
        || (!node.dns_name.is_empty()
            && node
                .dns_name
                .trim_end_matches('.')
                .eq_ignore_ascii_case(name))
        || node.addresses.iter().any(|a| a.to_string() == asked)
}

/// The plan for these peers and choices, keeping `previous` routers where they still serve.
pub fn plan(routers: &[Router<'_>], wanted: &Wanted<'_>, previous: &RoutePlan) -> RoutePlan {
    let mut out = RoutePlan::default();
    if wanted.accept_routes {
        let mut offered: Vec<IpNet> = routers
            .iter()
            .filter(|r| r.node.online)
            .flat_map(|r| r.node.routes.iter().copied())
            .filter(|n| n.prefix_len() != 0 && !wanted.own_routes.contains(n))
            .collect();
        offered.sort();
        offered.dedup();
        for net in offered {
            let serving: Vec<&Router> = routers
                .iter()
                .filter(|r| r.node.online && r.node.routes.contains(&net))
                .collect();
            let kept = previous
                .router_of(&net)
                .filter(|k| serving.iter().any(|r| r.node.node_key == *k));
            let chosen = kept.or_else(|| {
                serving
                    .iter()
                    .min_by(|a, b| {
                        (a.rtt.is_none(), a.rtt, &a.node.name).cmp(&(
                            b.rtt.is_none(),
                            b.rtt,
                            &b.node.name,
                        ))
                    })
                    .map(|r| r.node.node_key)
            });
            if let Some(k) = chosen {
                out.assigned.entry(k).or_default().push(net);
            }
        }
    }
    if let Some(asked) = wanted.exit_node {
        let found = routers.iter().find(|r| names(r.node, asked));
        let problem = match found {
            None => Some(format!(
                "no peer is named {asked}: internet traffic is dropped until it is back or another exit node (or none) is chosen"
            )),
            Some(r) if !r.node.is_exit_node() => Some(format!(
                "{} is not an approved exit node (it must offer one with --advertise-exit-node and the server approve it): internet traffic is dropped",
                r.node.name
            )),
            Some(r) if !r.node.online => Some(format!(
                "the exit node {} is offline: internet traffic is dropped until it is back or another exit node (or none) is chosen",
                r.node.name
            )),
            Some(_) => None,
        };
        if let Some(r) = found.filter(|_| problem.is_none()) {
            out.assigned
                .entry(r.node.node_key)
                .or_default()
                .extend(defaults());
        }
        out.exit = Some(ExitUse {
            asked: asked.to_string(),
            name: found.map(|r| r.node.name.clone()),
            key: found.map(|r| r.node.node_key),
            problem,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, k: u8, routes: &[&str], online: bool) -> Node {
        Node {
            id: name.into(),
            name: name.into(),
            dns_name: format!("{name}.pinhole.internal"),
            node_key: Key([k; 32]),
            disco_key: Key([0; 32]),
            addresses: vec![format!("100.64.0.{k}").parse().unwrap()],
            endpoints: Vec::new(),
            home_relay: None,
            online,
            last_seen: None,
            os: "linux".into(),
            user: None,
            expires_at: None,
            tags: Vec::new(),
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn r(node: &Node, rtt_ms: Option<u64>) -> Router<'_> {
        Router {
            node,
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    const ACCEPT: Wanted<'static> = Wanted {
        accept_routes: true,
        exit_node: None,
        own_routes: &[],
    };

    #[test]
    fn routes_need_accept_routes_and_an_online_router() {
        let b = node("b", 2, &["192.168.7.0/24", "0.0.0.0/0", "::/0"], true);
        let off = node("c", 3, &["10.9.0.0/16"], false);
        let peers = [r(&b, None), r(&off, None)];
        assert_eq!(
            plan(&peers, &Wanted::default(), &RoutePlan::default()),
            RoutePlan::default()
        );
        let p = plan(&peers, &ACCEPT, &RoutePlan::default());
        // The exit node's defaults are not a subnet route: only --exit-node uses them.
        assert_eq!(p.routes_of(&b.node_key), nets(&["192.168.7.0/24"]));
        assert_eq!(p.routes_of(&off.node_key), &[] as &[IpNet]);
        assert_eq!(p.os_routes(), nets(&["192.168.7.0/24"]));
    }

    #[test]
    fn the_lower_rtt_wins_then_sticks_until_its_router_goes() {
        let b = node("b", 2, &["192.168.7.0/24"], true);
        let c = node("c", 3, &["192.168.7.0/24", "192.168.7.128/25"], true);
        let first = plan(
            &[r(&b, Some(30)), r(&c, Some(5))],
            &ACCEPT,
            &RoutePlan::default(),
        );
        assert_eq!(
            first.router_of(&nets(&["192.168.7.0/24"])[0]),
            Some(c.node_key)
        );
        // Overlapping: both kept, the /25 is more specific in any longest-prefix match.
        assert_eq!(
            first.routes_of(&c.node_key),
            nets(&["192.168.7.0/24", "192.168.7.128/25"])
        );
        // b becomes faster: the route stays with c (its connections would break on a move).
        let again = plan(&[r(&b, Some(1)), r(&c, Some(50))], &ACCEPT, &first);
        assert_eq!(again, first);
        // c goes offline: b takes over.
        let c_off = node("c", 3, &["192.168.7.0/24"], false);
        let failed_over = plan(&[r(&b, Some(1)), r(&c_off, None)], &ACCEPT, &again);
        assert_eq!(
            failed_over.routes_of(&b.node_key),
            nets(&["192.168.7.0/24"])
        );
        assert!(failed_over.routes_of(&c.node_key).is_empty());
        // Without RTTs, a measured router beats an unmeasured one, then the name decides.
        let d = node("a-router", 4, &["192.168.7.0/24"], true);
        let p = plan(&[r(&b, None), r(&d, None)], &ACCEPT, &RoutePlan::default());
        assert_eq!(p.router_of(&nets(&["192.168.7.0/24"])[0]), Some(d.node_key));
        let p = plan(
            &[r(&b, Some(9)), r(&d, None)],
            &ACCEPT,
            &RoutePlan::default(),
        );
        assert_eq!(p.router_of(&nets(&["192.168.7.0/24"])[0]), Some(b.node_key));
    }

    #[test]
    fn own_routes_are_never_taken_from_a_peer() {
        let b = node("b", 2, &["192.168.7.0/24"], true);
        let own = nets(&["192.168.7.0/24"]);
        let w = Wanted {
            own_routes: &own,
            ..ACCEPT
        };
        assert!(plan(&[r(&b, None)], &w, &RoutePlan::default())
            .assigned
            .is_empty());
    }

    #[test]
    fn the_exit_node_carries_both_defaults_and_fails_closed() {
        let b = node("b", 2, &["0.0.0.0/0", "::/0"], true);
        let c = node("c", 3, &["192.168.7.0/24"], true);
        let w = Wanted {
            exit_node: Some("B.pinhole.internal."),
            ..Wanted::default()
        };
        let p = plan(&[r(&b, None), r(&c, None)], &w, &RoutePlan::default());
        assert_eq!(p.routes_of(&b.node_key), nets(&["0.0.0.0/0", "::/0"]));
        assert!(p.routes_of(&c.node_key).is_empty(), "no --accept-routes");
        assert_eq!(p.os_routes(), nets(&["0.0.0.0/0", "::/0"]));
        let exit = p.exit.unwrap();
        assert_eq!((exit.name.as_deref(), exit.problem), (Some("b"), None));

        // Offline, not an exit node, unknown: nobody carries the defaults, but the OS still
        // sends internet traffic into the tunnel (dropped there), and the plan says why.
        let b_off = node("b", 2, &["0.0.0.0/0", "::/0"], false);
        for (peers, asked, why) in [
            (vec![r(&b_off, None)], "b", "offline"),
            (vec![r(&c, None)], "c", "not an approved exit node"),
            (
                vec![r(&c, None)],
                "100.64.0.9",
                "no peer is named 100.64.0.9",
            ),
        ] {
            let w = Wanted {
                exit_node: Some(asked),
                ..Wanted::default()
            };
            let p = plan(&peers, &w, &RoutePlan::default());
            assert!(p.assigned.is_empty(), "{asked}");
            assert_eq!(p.os_routes(), nets(&["0.0.0.0/0", "::/0"]));
            let problem = p.exit.unwrap().problem.unwrap();
            assert!(problem.contains(why), "{problem}");
        }
        // By overlay address.
        let w = Wanted {
            exit_node: Some("100.64.0.2"),
            ..Wanted::default()
        };
        let p = plan(&[r(&b, None)], &w, &RoutePlan::default());
        assert_eq!(p.routes_of(&b.node_key).len(), 2);
    }
}
