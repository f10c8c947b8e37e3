//! Applies the coordination server's map to the engine: peers added, updated and removed as
//! the map changes, all of them dropped when control signs the node out.

use crate::control::control_link::ControlMsg;
use crate::control::netmap::{self, NetMap, PeerChange};
use crate::platform::identity;
use pinhole_engine::Engine;
use pinhole_proto::control::MapMessage;
use std::path::PathBuf;
use std::time::Instant;
use tokio::sync::mpsc;

/// The map from control and the channel it arrives on (none in static mode).
pub struct MappedPeers {
    rx: Option<mpsc::Receiver<ControlMsg>>,
    map: NetMap,
    /// Why control cannot be reached right now, if it cannot.
    pub unreachable: Option<String>,
    /// Whether a full map has arrived.
    pub has_map: bool,
    /// Why control signed this node out, if it did.
    pub signed_out: Option<String>,
    /// The endpoints last published.
    pub endpoints: Vec<pinhole_proto::endpoint::Endpoint>,
    /// Where the registration lives, to forget it when control signs the node out.
    state_dir: PathBuf,
}

impl MappedPeers {
    pub fn new(rx: Option<mpsc::Receiver<ControlMsg>>, state_dir: PathBuf) -> Self {
        MappedPeers {
            rx,
            map: NetMap::default(),
            unreachable: None,
            has_map: false,
            signed_out: None,
            endpoints: Vec::new(),
            state_dir,
        }
    }

    /// Peers as the map has them.
    pub fn map_peers(&self) -> Vec<&pinhole_proto::control::Node> {
        self.map.peers().collect()
    }

    /// This node as the map has it.
    pub fn self_node(&self) -> Option<&pinhole_proto::control::Node> {
        self.map.self_node()
    }

    /// This node's share of the account's policy, if it has one.
    pub fn policy(&self) -> Option<&pinhole_proto::filter::NodePolicy> {
        self.map.policy()
    }

    /// The relays of the last map.
    pub fn relay_map(&self) -> Option<&pinhole_proto::control::RelayMap> {
        self.map.relay_map()
    }

    /// Starts over with a new map stream (or none): every mapped peer leaves the engine.
    pub fn reset(&mut self, engine: &mut Engine, rx: Option<mpsc::Receiver<ControlMsg>>) {
        for change in self.map.clear() {
            if let PeerChange::Remove { key, .. } = change {
                engine.remove_peer(&key);
            }
        }
        self.rx = rx;
        self.unreachable = None;
        self.has_map = false;
        self.signed_out = None;
        self.endpoints.clear();
    }

    /// A peer of the map by name or DNS name (any case, a final dot allowed), overlay
    /// address, or node key (base64, or its start).
    pub fn find(&self, what: &str) -> Option<&pinhole_proto::control::Node> {
        let peers: Vec<_> = self.map.peers().collect();
        let name = what.strip_suffix('.').unwrap_or(what);
        peers
            .iter()
            .find(|n| {
                n.name.eq_ignore_ascii_case(name)
                    || (!n.dns_name.is_empty() && n.dns_name.eq_ignore_ascii_case(name))
                    || n.addresses.iter().any(|a| a.to_string() == what)
            })
            .or_else(|| {
                let mut by_key = peers
                    .iter()
                    .filter(|n| what.len() >= 4 && n.node_key.to_base64().starts_with(what));
                match (by_key.next(), by_key.next()) {
                    (Some(n), None) => Some(n),
                    _ => None,
                }
            })
            .copied()
    }

    /// The next message from control; never resolves in static mode or after a sign-out.
    pub async fn recv(&mut self) -> Option<ControlMsg> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Applies one message from control to the map and the engine.
    pub fn apply(&mut self, engine: &mut Engine, msg: ControlMsg) {
        let now = Instant::now();
        let applied = match msg {
            ControlMsg::Unreachable(why) => {
                self.unreachable = Some(why);
                return;
            }
            ControlMsg::Endpoints(eps) => {
                // Call-me-maybes tell peers to ping these.
                engine.set_own_endpoints(eps.clone());
                self.endpoints = eps;
                return;
            }
            ControlMsg::Map(m) => {
                self.unreachable = None;
                let full = matches!(*m, MapMessage::Full { .. });
                self.has_map |= full;
                let a = self.map.apply(*m);
                if full {
                    tracing::info!(peers = self.map.peers().count(), "network map received");
                }
                a
            }
            ControlMsg::SignedOut(reason) => {
                self.rx = None;
                netmap::Applied {
                    changes: self.map.clear(),
                    goodbye: Some(reason),
                    policy_changed: true,
                }
            }
        };
        if applied.policy_changed {
            let policy = self.map.policy();
            engine.set_filter(policy.map(|p| p.filter.as_slice()), now);
            match policy {
                Some(p) => tracing::info!(
                    rules = p.filter.len(),
                    "the account's policy applies: packet filter set"
                ),
                None => tracing::info!("no policy: every peer may reach this node"),
            }
        }
        for change in applied.changes {
            match change {
                PeerChange::Upsert { name, settings } => {
                    let key = settings.public_key;
                    let endpoint = settings.endpoint;
                    let addrs: Vec<String> = settings
                        .allowed_ips
                        .iter()
                        .map(|n| n.addr().to_string())
                        .collect();
                    let new = engine.peer(&key).is_none();
                    match engine.upsert_peer(now, settings) {
                        Ok(()) if new => {
                            tracing::info!(peer = %name, key = %key.short(), addresses = ?addrs, endpoint = ?endpoint, "peer added")
                        }
                        Ok(()) => {
                            tracing::info!(peer = %name, endpoint = ?endpoint, "peer updated")
                        }
                        Err(e) => tracing::warn!(peer = %name, "cannot configure peer: {e}"),
                    }
                }
                PeerChange::Remove { name, key } => {
                    engine.remove_peer(&key);
                    tracing::info!(peer = %name, "peer removed");
                }
            }
        }
        if let Some(reason) = applied.goodbye {
            identity::forget_registration(&self.state_dir);
            self.signed_out = Some(reason.clone());
            tracing::error!("signed out by the coordination server ({reason}): every peer removed; sign in again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_engine::PrivateKey;
    use pinhole_proto::control::{Node, RelayMap};
    use pinhole_proto::key::Key;

    fn node(id: &str, private: &PrivateKey) -> Node {
        Node {
            id: id.into(),
            name: id.into(),
            dns_name: String::new(),
            node_key: private.public_key(),
            disco_key: Key([9; 32]),
            addresses: vec!["100.64.0.2".parse().unwrap()],
            endpoints: vec!["192.0.2.2:41641".parse().unwrap()],
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

    #[test]
    fn map_configures_the_engine_and_goodbye_clears_it() {
        let dir = std::env::temp_dir().join(format!("pinholed-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("control.json"), "{}").unwrap();
        let me = pinhole_engine::private_key_from_bytes([1; 32]);
        let peer = pinhole_engine::private_key_from_bytes([2; 32]);
        let mut engine = Engine::new(&me, Instant::now());
        let mut mp = MappedPeers::new(None, dir.clone());
        let mut me_node = node("me", &me);
        me_node.addresses = vec!["100.64.0.1".parse().unwrap()];
        mp.apply(
            &mut engine,
            ControlMsg::Map(Box::new(MapMessage::Full {
                self_node: me_node,
                peers: vec![node("b", &peer)],
                relay_map: RelayMap::default(),
                policy: None,
            })),
        );
        let status = engine
            .peer(&pinhole_engine::public_key(&peer))
            .expect("peer configured");
        assert_eq!(status.endpoint, Some("192.0.2.2:41641".parse().unwrap()));
        // `pinhole ping` finds the peer by name, DNS name (any case, a final dot) or address.
        mp.apply(
            &mut engine,
            ControlMsg::Map(Box::new(MapMessage::PeerChanged {
                peer: Node {
                    name: "nas".into(),
                    dns_name: "nas.pinhole.internal".into(),
                    ..node("b", &peer)
                },
            })),
        );
        for what in [
            "nas",
            "NAS",
            "nas.pinhole.internal",
            "Nas.Pinhole.Internal.",
            "100.64.0.2",
        ] {
            assert_eq!(mp.find(what).map(|n| n.id.as_str()), Some("b"), "{what}");
        }
        assert!(mp.find("nas.other.example").is_none());
        assert_eq!(mp.self_node().map(|n| n.id.as_str()), Some("me"));
        mp.apply(
            &mut engine,
            ControlMsg::Map(Box::new(MapMessage::Goodbye {
                reason: "node removed".into(),
            })),
        );
        assert!(engine.peers().is_empty());
        assert!(!dir.join("control.json").exists(), "registration forgotten");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_policy_share_becomes_the_engines_filter_and_goes_with_it() {
        use pinhole_proto::filter::{FilterRule, NodePolicy, PortRange};
        let dir = std::env::temp_dir().join(format!("pinholed-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = pinhole_engine::private_key_from_bytes([1; 32]);
        let mut engine = Engine::new(&me, Instant::now());
        let mut mp = MappedPeers::new(None, dir.clone());
        let share = NodePolicy {
            filter: vec![FilterRule {
                src: vec!["100.64.0.2/32".parse().unwrap()],
                dst: vec!["100.64.0.1/32".parse().unwrap()],
                ports: vec![PortRange::one(22)],
                protos: vec![],
            }],
            reach: vec![],
        };
        let full = |policy| {
            ControlMsg::Map(Box::new(MapMessage::Full {
                self_node: node("me", &me),
                peers: vec![],
                relay_map: RelayMap::default(),
                policy,
            }))
        };
        mp.apply(&mut engine, full(None));
        assert!(engine.filter().is_none(), "no policy, no filter");
        mp.apply(&mut engine, full(Some(share.clone())));
        assert_eq!(engine.filter().map(|f| f.rules()), Some(1));
        assert_eq!(mp.policy(), Some(&share));
        let mut looser = share.clone();
        looser.filter.push(looser.filter[0].clone());
        mp.apply(
            &mut engine,
            ControlMsg::Map(Box::new(MapMessage::Policy {
                policy: Some(looser),
            })),
        );
        assert_eq!(engine.filter().map(|f| f.rules()), Some(2));
        mp.apply(
            &mut engine,
            ControlMsg::Map(Box::new(MapMessage::Policy { policy: None })),
        );
        assert!(engine.filter().is_none(), "the policy was removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
