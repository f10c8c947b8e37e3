//! The network map as this node last heard it from control, and what each message changes for
//! the engine: which peers to add or update, which to remove, and this node's share of the
//! account's policy (its packet filter). Pure: no I/O.

use ipnet::IpNet;
use pinhole_engine::PeerSettings;
use pinhole_proto::control::{MapMessage, Node, RelayMap};
use pinhole_proto::filter::NodePolicy;
use pinhole_proto::key::Key;
use std::collections::HashMap;

/// One change for the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerChange {
    Upsert {
        name: String,
        settings: PeerSettings,
    },
    Remove {
        name: String,
        key: Key,
    },
}

/// The last map; kept while control is unreachable so that tunnels go on working.
#[derive(Debug, Default)]
pub struct NetMap {
    self_node: Option<Node>,
    peers: HashMap<String, Node>,
    relay_map: Option<RelayMap>,
    /// This node's share of the policy; none: the account has none (everything allowed).
    policy: Option<NodePolicy>,
}

/// What applying a message did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub changes: Vec<PeerChange>,
    /// The policy's share changed: the engine's filter follows.
    pub policy_changed: bool,
    /// The server ended this node's membership, with its reason.
    pub goodbye: Option<String>,
}

impl NetMap {
    /// This node as the map has it.
    pub fn self_node(&self) -> Option<&Node> {
        self.self_node.as_ref()
    }

    pub fn peers(&self) -> impl Iterator<Item = &Node> {
        self.peers.values()
    }

    /// This node's share of the account's policy, if the account has one.
    pub fn policy(&self) -> Option<&NodePolicy> {
        self.policy.as_ref()
    }

    /// The relays as the server last described them.
    pub fn relay_map(&self) -> Option<&RelayMap> {
        self.relay_map.as_ref()
    }

    pub fn apply(&mut self, msg: MapMessage) -> Applied {
        let mut out = Applied::default();
        match msg {
            MapMessage::Full {
                self_node,
                peers,
                relay_map,
                policy,
            } => {
                self.relay_map = Some(relay_map);
                out.policy_changed = self.policy != policy;
                self.policy = policy;
                let own_key = self_node.node_key;
                self.self_node = Some(self_node);
                let incoming: HashMap<String, Node> = peers
                    .into_iter()
                    .filter(|p| p.node_key != own_key)
                    .map(|p| (p.id.clone(), p))
                    .collect();
                let gone: Vec<String> = self
                    .peers
                    .keys()
                    .filter(|id| !incoming.contains_key(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    self.remove(&id, &mut out.changes);
                }
                for (_, p) in incoming {
                    self.upsert(p, &mut out.changes);
                }
            }
            MapMessage::PeerChanged { peer } => {
                if self
                    .self_node
                    .as_ref()
                    .is_some_and(|s| s.node_key == peer.node_key)
                {
                    return out;
                }
                self.upsert(peer, &mut out.changes);
            }
            MapMessage::PeersOnline { peers } => {
                for u in peers {
                    if let Some(p) = self.peers.get_mut(&u.id) {
                        p.online = u.online;
                        p.last_seen = u.last_seen;
                    }
                }
            }
            MapMessage::PeerRemoved { id, .. } => self.remove(&id, &mut out.changes),
            MapMessage::SelfChanged { node } => self.self_node = Some(node),
            MapMessage::RelayMap { relay_map } => self.relay_map = Some(relay_map),
            MapMessage::Policy { policy } => {
                out.policy_changed = self.policy != policy;
                self.policy = policy;
            }
            MapMessage::Keepalive => {}
            MapMessage::Goodbye { reason } => {
                out.changes = self.clear();
                out.goodbye = Some(reason);
            }
        }
        out
    }

    /// Forgets every peer (signed out); returns the removals.
    pub fn clear(&mut self) -> Vec<PeerChange> {
        let ids: Vec<String> = self.peers.keys().cloned().collect();
        let mut changes = Vec::new();
        for id in ids {
            self.remove(&id, &mut changes);
        }
        self.self_node = None;
        self.relay_map = None;
        self.policy = None;
        changes
    }

    fn remove(&mut self, id: &str, changes: &mut Vec<PeerChange>) {
        if let Some(old) = self.peers.remove(id) {
            changes.push(PeerChange::Remove {
                name: old.name,
                key: old.node_key,
            });
        }
    }

    fn upsert(&mut self, peer: Node, changes: &mut Vec<PeerChange>) {
        let old = self.peers.insert(peer.id.clone(), peer.clone());
        if let Some(old) = &old {
            let same = old.node_key == peer.node_key
                && old.addresses == peer.addresses
                && old.endpoints == peer.endpoints
                && old.home_relay == peer.home_relay
                // A restarted peer has a new disco key: its pings are sealed with it.
                && old.disco_key == peer.disco_key;
            if same {
                return;
            }
            if old.node_key != peer.node_key {
                changes.push(PeerChange::Remove {
                    name: old.name.clone(),
                    key: old.node_key,
                });
            }
        }
        changes.push(PeerChange::Upsert {
            name: peer.name.clone(),
            settings: settings(&peer),
        });
    }
}

/// Engine settings for a peer: its overlay addresses, reached through its home relay until
/// disco pings to the endpoints it published (with its disco key) find a direct path.
fn settings(peer: &Node) -> PeerSettings {
    PeerSettings {
        public_key: peer.node_key,
        preshared_key: None,
        allowed_ips: peer.addresses.iter().map(|a| IpNet::from(*a)).collect(),
        endpoint: peer.endpoints.first().map(|e| e.addr),
        candidates: peer.endpoints.clone(),
        disco_key: Some(peer.disco_key),
        persistent_keepalive: None,
        relay: peer.home_relay.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::control::RelayMap;

    fn node(id: &str, k: u8, ep: &str) -> Node {
        Node {
            id: id.into(),
            name: id.into(),
            dns_name: String::new(),
            node_key: Key([k; 32]),
            disco_key: Key([k + 1; 32]),
            addresses: vec![format!("100.64.0.{k}").parse().unwrap()],
            endpoints: vec![ep.parse().unwrap()],
            home_relay: None,
            online: true,
            last_seen: None,
            os: "linux".into(),
            user: None,
            expires_at: None,
            tags: Vec::new(),
            routes: Vec::new(),
        }
    }

    fn full(me: Node, peers: Vec<Node>) -> MapMessage {
        MapMessage::Full {
            self_node: me,
            peers,
            relay_map: RelayMap::default(),
            policy: None,
        }
    }

    fn kinds(a: &Applied) -> Vec<String> {
        a.changes
            .iter()
            .map(|c| match c {
                PeerChange::Upsert { name, .. } => format!("+{name}"),
                PeerChange::Remove { name, .. } => format!("-{name}"),
            })
            .collect()
    }

    #[test]
    fn full_maps_diff_against_the_last() {
        let mut m = NetMap::default();
        let me = node("me", 1, "192.0.2.1:1");
        let a = m.apply(full(
            me.clone(),
            vec![node("b", 2, "192.0.2.2:1"), me.clone()],
        ));
        assert_eq!(kinds(&a), vec!["+b"], "self is never a peer");
        match &a.changes[0] {
            PeerChange::Upsert { settings, .. } => {
                assert_eq!(settings.endpoint, Some("192.0.2.2:1".parse().unwrap()));
                assert_eq!(
                    settings.allowed_ips,
                    vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
                );
            }
            c => panic!("{c:?}"),
        }
        // Same map again (a reconnect): nothing to do.
        let a = m.apply(full(me.clone(), vec![node("b", 2, "192.0.2.2:1")]));
        assert!(a.changes.is_empty());
        // b gone, c new.
        let a = m.apply(full(me, vec![node("c", 3, "192.0.2.3:1")]));
        let mut k = kinds(&a);
        k.sort();
        assert_eq!(k, vec!["+c", "-b"]);
    }

    #[test]
    fn deltas_update_only_what_changed() {
        let mut m = NetMap::default();
        m.apply(full(
            node("me", 1, "192.0.2.1:1"),
            vec![node("b", 2, "192.0.2.2:1")],
        ));
        let mut b = node("b", 2, "192.0.2.2:1");
        b.online = false;
        assert!(m
            .apply(MapMessage::PeerChanged { peer: b.clone() })
            .changes
            .is_empty());
        b.endpoints = vec!["198.51.100.2:9".parse().unwrap()];
        assert_eq!(
            kinds(&m.apply(MapMessage::PeerChanged { peer: b.clone() })),
            vec!["+b"]
        );
        // The peer restarted: only its disco key is new, and the engine must have it.
        b.disco_key = Key([7; 32]);
        let a = m.apply(MapMessage::PeerChanged { peer: b.clone() });
        assert_eq!(kinds(&a), vec!["+b"]);
        assert!(matches!(
            &a.changes[0],
            PeerChange::Upsert { settings, .. } if settings.disco_key == Some(Key([7; 32]))
        ));
        b.node_key = Key([9; 32]);
        assert_eq!(
            kinds(&m.apply(MapMessage::PeerChanged { peer: b })),
            vec!["-b", "+b"]
        );
        let a = m.apply(MapMessage::PeerRemoved {
            id: "b".into(),
            node_key: Key([9; 32]),
        });
        assert_eq!(kinds(&a), vec!["-b"]);
        assert!(m.apply(MapMessage::Keepalive).changes.is_empty());
        m.apply(full(
            node("me", 1, "192.0.2.1:1"),
            vec![node("b", 2, "192.0.2.2:1")],
        ));
        let a = m.apply(MapMessage::PeersOnline {
            peers: vec![pinhole_proto::control::Presence {
                id: "b".into(),
                online: false,
                last_seen: Some(9),
            }],
        });
        assert!(a.changes.is_empty());
        assert!(m.peers().all(|p| !p.online && p.last_seen == Some(9)));
    }

    #[test]
    fn goodbye_removes_every_peer() {
        let mut m = NetMap::default();
        m.apply(full(
            node("me", 1, "192.0.2.1:1"),
            vec![node("b", 2, "192.0.2.2:1")],
        ));
        let a = m.apply(MapMessage::Goodbye {
            reason: "node removed".into(),
        });
        assert_eq!(kinds(&a), vec!["-b"]);
        assert_eq!(a.goodbye.as_deref(), Some("node removed"));
        assert_eq!(m.peers().count(), 0);
    }
}
