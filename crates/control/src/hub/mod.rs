//! The live network map in memory: per account, every node's current record (serialised once per
//! change), the account's policy applied to them ([`view`]), and the map streams open on this
//! instance. A change is turned into one line of JSON and handed to every stream of the account
//! whose node may see it; a stream that cannot keep up is closed, and its node reconnects and
//! starts again from a full map.

mod view;

use bytes::{BufMut, Bytes, BytesMut};
use pinhole_policy::Policy;
use pinhole_proto::control::{MapMessage, Node, Presence, RelayMap};
use pinhole_proto::key::Key;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use view::{same_identity, sees, PolicyView};

/// Lines queued for one stream before it counts as too slow and is closed.
pub const STREAM_QUEUE: usize = 512;

/// The map of every account with a stream open here.
pub struct Hub {
    inner: Mutex<Inner>,
    relay_map_json: Bytes,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    next_stream: u64,
}

#[derive(Default)]
struct Account {
    nodes: HashMap<String, Entry>,
    streams: HashMap<String, Vec<Stream>>,
    /// Nodes whose presence changed since the last flush.
    presence_changed: std::collections::HashSet<String>,
    /// The account's policy (none: everyone sees and reaches everyone) and what it means for
    /// the nodes here.
    policy: Option<Arc<Policy>>,
    view: Option<PolicyView>,
}

impl Account {
    /// Applies the policy to the nodes afresh and tells every stream what that changed for
    /// it: peers that appeared or went out of sight, and its own share of the policy.
    fn rebuild_view(&mut self) {
        let old = self.view.take();
        self.view = self
            .policy
            .as_ref()
            .map(|p| PolicyView::new(p, self.nodes.values().map(|e| &e.node)));
        let mut lines: Vec<(String, Vec<Bytes>)> = Vec::new();
        for viewer in self.streams.keys() {
            let mut out = Vec::new();
            for (id, e) in &self.nodes {
                if id == viewer {
                    continue;
                }
                let (before, now) = (
                    sees(old.as_ref(), viewer, id),
                    sees(self.view.as_ref(), viewer, id),
                );
                if before && !now {
                    out.push(to_line(&MapMessage::PeerRemoved {
                        id: id.clone(),
                        node_key: e.node.node_key,
                    }));
                } else if now && !before {
                    out.push(line_with(br#"{"type":"peer_changed","peer":"#, &e.json));
                }
            }
            let share = |v: Option<&PolicyView>| v.and_then(|v| v.share(viewer)).cloned();
            let new_share = share(self.view.as_ref());
            if share(old.as_ref()) != new_share || old.is_some() != self.view.is_some() {
                out.push(to_line(&MapMessage::Policy { policy: new_share }));
            }
            if !out.is_empty() {
                lines.push((viewer.clone(), out));
            }
        }
        for (viewer, out) in lines {
            for line in out {
                send_to(self, &viewer, line);
            }
        }
    }
}

struct Entry {
    node: Node,
    /// The record as JSON, and the same bytes after a comma (for joining into lists).
    json: Bytes,
    comma_json: Bytes,
}

/// A full map being sent: parts still to go out.
pub struct FullMap {
    parts: std::vec::IntoIter<Bytes>,
}

impl FullMap {
    /// The next chunk of at most about `max` bytes; none when the whole map has gone out.
    pub fn next_chunk(&mut self, max: usize) -> Option<Bytes> {
        let Some(first) = self.parts.next() else {
            // Let go of the list itself (a pointer per node) once the map has gone out.
            if self.parts.as_slice().is_empty() && self.parts.size_hint().0 == 0 {
                self.parts = Vec::new().into_iter();
            }
            return None;
        };
        if first.len() >= max {
            return Some(first);
        }
        let mut chunk = BytesMut::with_capacity(max.min(first.len() * 8).max(first.len()));
        chunk.put_slice(&first);
        while chunk.len() < max {
            match self.parts.as_slice().first() {
                Some(p) if chunk.len() + p.len() <= max => {
                    chunk.put_slice(p);
                    self.parts.next();
                }
                _ => break,
            }
        }
        Some(chunk.freeze())
    }

    /// The whole map as one line (tests).
    pub fn concat(mut self) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(c) = self.next_chunk(usize::MAX) {
            v.extend_from_slice(&c);
        }
        v
    }
}

struct Stream {
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

/// A stream just opened: its id, the full map to send first, and the queue of later lines.
pub struct Subscription {
    pub id: u64,
    pub full_map: FullMap,
    pub rx: mpsc::Receiver<Bytes>,
}

impl Hub {
    pub fn new(relay_map: &RelayMap) -> Hub {
        Hub {
            inner: Mutex::new(Inner::default()),
            relay_map_json: Bytes::from(serde_json::to_vec(relay_map).unwrap_or_default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_loaded(&self, account: &str) -> bool {
        self.lock().accounts.contains_key(account)
    }

    /// Fills an account's nodes and policy from the database (no-op if another stream loaded
    /// it first).
    pub fn load(&self, account: &str, nodes: Vec<Node>, policy: Option<Arc<Policy>>) {
        let mut inner = self.lock();
        if inner.accounts.contains_key(account) {
            return;
        }
        let mut a = Account {
            policy,
            ..Account::default()
        };
        for node in nodes {
            a.nodes.insert(node.id.clone(), entry(node));
        }
        a.rebuild_view();
        inner.accounts.insert(account.to_string(), a);
    }

    /// The account's policy changed (none: removed): every node's map and filter follow.
    pub fn set_policy(&self, account: &str, policy: Option<Arc<Policy>>) {
        let mut inner = self.lock();
        if let Some(a) = inner.accounts.get_mut(account) {
            a.policy = policy;
            a.rebuild_view();
        }
    }

    /// Opens a stream for `node_id`; none if the node is not in the account.
    pub fn subscribe(&self, account: &str, node_id: &str) -> Option<Subscription> {
        let mut inner = self.lock();
        inner.next_stream += 1;
        let id = inner.next_stream;
        let a = inner.accounts.get_mut(account)?;
        let me = a.nodes.get(node_id)?;
        // The full map as parts that share the cached records: no copy of the whole map is
        // made per stream (it is copied out in bounded chunks as the socket takes it).
        let mut parts = Vec::with_capacity(a.nodes.len() + 2);
        let mut head = BytesMut::with_capacity(48 + me.json.len());
        head.put_slice(br#"{"type":"full","self":"#);
        head.put_slice(&me.json);
        head.put_slice(br#","peers":["#);
        parts.push(head.freeze());
        let mut first = true;
        for (id, e) in &a.nodes {
            if id == node_id || !sees(a.view.as_ref(), node_id, id) {
                continue;
            }
            parts.push(if first {
                e.json.clone()
            } else {
                e.comma_json.clone()
            });
            first = false;
        }
        let mut tail = BytesMut::with_capacity(32 + self.relay_map_json.len());
        tail.put_slice(br#"],"relay_map":"#);
        tail.put_slice(&self.relay_map_json);
        if let Some(share) = a.view.as_ref().and_then(|v| v.share(node_id)) {
            tail.put_slice(br#","policy":"#);
            tail.put_slice(&serde_json::to_vec(share).unwrap_or_else(|_| b"null".to_vec()));
        }
        tail.put_slice(b"}\n");
        parts.push(tail.freeze());
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        a.streams
            .entry(node_id.to_string())
            .or_default()
            .push(Stream { id, tx });
        Some(Subscription {
            id,
            full_map: FullMap {
                parts: parts.into_iter(),
            },
            rx,
        })
    }

    /// Closes stream `id` of `node_id`; true if the node has no stream left here.
    pub fn unsubscribe(&self, account: &str, node_id: &str, id: u64) -> bool {
        let mut inner = self.lock();
        let Some(a) = inner.accounts.get_mut(account) else {
            return true;
        };
        let Some(list) = a.streams.get_mut(node_id) else {
            return true;
        };
        list.retain(|s| s.id != id);
        if list.is_empty() {
            a.streams.remove(node_id);
            true
        } else {
            false
        }
    }

    /// A node's record changed (or it is new): peers get `peer_changed`, the node `self_changed`.
    pub fn upsert(&self, account: &str, node: Node) {
        let mut inner = self.lock();
        let Some(a) = inner.accounts.get_mut(account) else {
            return;
        };
        let identity_changed = a
            .nodes
            .get(&node.id)
            .is_none_or(|old| !same_identity(&old.node, &node));
        let presence_only = match a.nodes.get(&node.id) {
            Some(old) if old.node == node => return,
            Some(old) => {
                let mut with_new_presence = old.node.clone();
                with_new_presence.online = node.online;
                with_new_presence.last_seen = node.last_seen;
                with_new_presence == node
            }
            None => false,
        };
        let e = entry(node);
        if presence_only {
            // Gathered and sent by `flush_presence`: a connect storm costs one line per flush.
            let id = e.node.id.clone();
            a.nodes.insert(id.clone(), e);
            a.presence_changed.insert(id);
            return;
        }
        let peer_line = line_with(br#"{"type":"peer_changed","peer":"#, &e.json);
        let self_line = line_with(br#"{"type":"self_changed","node":"#, &e.json);
        let id = e.node.id.clone();
        a.nodes.insert(id.clone(), e);
        // Who may see it (and what each node's filter lets in) may change with its identity:
        // nodes that see it only from now on get it from the rebuild, the rest below.
        let before: Option<std::collections::HashSet<String>> =
            (identity_changed && a.policy.is_some()).then(|| {
                let b = a
                    .streams
                    .keys()
                    .filter(|v| sees(a.view.as_ref(), v, &id))
                    .cloned()
                    .collect();
                a.rebuild_view();
                b
            });
        let view = a.view.take();
        broadcast(a, |to| {
            if to == id {
                Some(self_line.clone())
            } else {
                let saw = before.as_ref().is_none_or(|b| b.contains(to));
                (saw && sees(view.as_ref(), to, &id)).then(|| peer_line.clone())
            }
        });
        a.view = view;
    }

    /// Sends the presence changes gathered since the last call, one line per account.
    pub fn flush_presence(&self) {
        let mut inner = self.lock();
        for a in inner.accounts.values_mut() {
            if a.presence_changed.is_empty() {
                continue;
            }
            let peers: Vec<Presence> = a
                .presence_changed
                .drain()
                .filter_map(|id| {
                    let n = &a.nodes.get(&id)?.node;
                    Some(Presence {
                        id,
                        online: n.online,
                        last_seen: n.last_seen,
                    })
                })
                .collect();
            if peers.is_empty() {
                continue;
            }
            let view = a.view.take();
            match &view {
                None => {
                    let line = to_line(&MapMessage::PeersOnline { peers });
                    broadcast(a, |_| Some(line.clone()));
                }
                // Each node hears only of the peers it may see.
                Some(v) => broadcast(a, |to| {
                    let mine: Vec<Presence> = peers
                        .iter()
                        .filter(|p| p.id != to && v.sees(to, &p.id))
                        .cloned()
                        .collect();
                    (!mine.is_empty()).then(|| to_line(&MapMessage::PeersOnline { peers: mine }))
                }),
            }
            a.view = view;
        }
    }

    /// A node is gone: peers get `peer_removed`, its own streams a goodbye and then the end.
    /// Returns the node's key if the node was known here.
    pub fn remove(&self, account: &str, node_id: &str, reason: &str) -> Option<Key> {
        let mut inner = self.lock();
        let a = inner.accounts.get_mut(account)?;
        let e = a.nodes.remove(node_id)?;
        let removed = to_line(&MapMessage::PeerRemoved {
            id: e.node.id.clone(),
            node_key: e.node.node_key,
        });
        let goodbye = to_line(&MapMessage::Goodbye {
            reason: reason.to_string(),
        });
        if let Some(own) = a.streams.remove(node_id) {
            for s in own {
                let _ = s.tx.try_send(goodbye.clone());
            }
        }
        let view = a.view.take();
        broadcast(a, |to| {
            sees(view.as_ref(), to, node_id).then(|| removed.clone())
        });
        a.view = view;
        if a.policy.is_some() {
            // Its addresses leave the others' filters.
            a.rebuild_view();
        }
        Some(e.node.node_key)
    }

    /// Whether the node has a stream open here.
    pub fn has_stream(&self, account: &str, node_id: &str) -> bool {
        let inner = self.lock();
        inner
            .accounts
            .get(account)
            .is_some_and(|a| a.streams.contains_key(node_id))
    }

    /// (account, node id) of every node with a stream open here.
    pub fn streaming_nodes(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .accounts
            .iter()
            .flat_map(|(acc, a)| a.streams.keys().map(move |n| (acc.clone(), n.clone())))
            .collect()
    }

    /// Whether the account holds `node_id` in memory.
    pub fn contains(&self, account: &str, node_id: &str) -> bool {
        let inner = self.lock();
        inner
            .accounts
            .get(account)
            .is_some_and(|a| a.nodes.contains_key(node_id))
    }
}

fn entry(node: Node) -> Entry {
    let mut v = Vec::with_capacity(512);
    v.push(b',');
    if serde_json::to_writer(&mut v, &node).is_err() {
        v.truncate(1);
    }
    let comma_json = Bytes::from(v);
    let json = comma_json.slice(1..);
    Entry {
        node,
        json,
        comma_json,
    }
}

fn line_with(head: &[u8], json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(head.len() + json.len() + 2);
    b.put_slice(head);
    b.put_slice(json);
    b.put_slice(b"}\n");
    b.freeze()
}

/// One message as one line.
pub fn to_line(m: &MapMessage) -> Bytes {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Queues a line on every stream of the account that gets one; streams that are full or gone
/// are dropped.
fn broadcast(a: &mut Account, line_for: impl Fn(&str) -> Option<Bytes>) {
    let mut dead: Vec<(String, u64)> = Vec::new();
    for (node_id, list) in &a.streams {
        let Some(line) = line_for(node_id) else {
            continue;
        };
        for s in list {
            if s.tx.try_send(line.clone()).is_err() {
                dead.push((node_id.clone(), s.id));
            }
        }
    }
    for (node_id, id) in dead {
        if let Some(list) = a.streams.get_mut(&node_id) {
            tracing::debug!(node = %node_id, "map stream too slow or gone: closed");
            list.retain(|s| s.id != id);
            if list.is_empty() {
                a.streams.remove(&node_id);
            }
        }
    }
}

/// Queues a line on the streams of one node; those that are full or gone are dropped.
fn send_to(a: &mut Account, node_id: &str, line: Bytes) {
    let Some(list) = a.streams.get_mut(node_id) else {
        return;
    };
    list.retain(|s| {
        let ok = s.tx.try_send(line.clone()).is_ok();
        if !ok {
            tracing::debug!(node = %node_id, "map stream too slow or gone: closed");
        }
        ok
    });
    if list.is_empty() {
        a.streams.remove(node_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::control::parse_map_line;

    fn node(id: &str, k: u8) -> Node {
        Node {
            id: id.into(),
            name: id.into(),
            dns_name: String::new(),
            node_key: Key([k; 32]),
            disco_key: Key([k; 32]),
            addresses: vec![],
            endpoints: vec![],
            home_relay: None,
            online: false,
            last_seen: None,
            os: "linux".into(),
            user: None,
            expires_at: None,
            tags: Vec::new(),
            routes: Vec::new(),
        }
    }

    fn recv(rx: &mut mpsc::Receiver<Bytes>) -> MapMessage {
        let b = rx.try_recv().expect("a line queued");
        assert!(b.ends_with(b"\n"));
        parse_map_line(&b[..b.len() - 1]).unwrap()
    }

    #[test]
    fn full_map_then_deltas() {
        let hub = Hub::new(&RelayMap::default());
        hub.load("acc", vec![node("a", 1), node("b", 2)], None);
        let mut sa = hub.subscribe("acc", "a").unwrap();
        let full = sa.full_map.concat();
        let full = parse_map_line(full.strip_suffix(b"\n").unwrap()).unwrap();
        match full {
            MapMessage::Full {
                self_node, peers, ..
            } => {
                assert_eq!(self_node.id, "a");
                assert_eq!(peers, vec![node("b", 2)]);
            }
            m => panic!("{m:?}"),
        }
        let mut sb = hub.subscribe("acc", "b").unwrap();
        // Presence alone goes out in its short form, gathered until the next flush.
        let mut online = node("b", 2);
        online.online = true;
        online.last_seen = Some(5);
        hub.upsert("acc", online);
        assert!(sa.rx.try_recv().is_err(), "presence waits for the flush");
        hub.flush_presence();
        let presence = MapMessage::PeersOnline {
            peers: vec![Presence {
                id: "b".into(),
                online: true,
                last_seen: Some(5),
            }],
        };
        assert_eq!(recv(&mut sa.rx), presence);
        assert_eq!(recv(&mut sb.rx), presence);
        hub.flush_presence();
        assert!(sa.rx.try_recv().is_err(), "nothing new, nothing sent");
        let mut b2 = node("b", 2);
        b2.online = true;
        b2.last_seen = Some(5);
        b2.endpoints = vec!["192.0.2.2:1".parse().unwrap()];
        hub.upsert("acc", b2.clone());
        assert_eq!(
            recv(&mut sa.rx),
            MapMessage::PeerChanged { peer: b2.clone() }
        );
        assert_eq!(
            recv(&mut sb.rx),
            MapMessage::SelfChanged { node: b2.clone() }
        );
        // An unchanged record sends nothing.
        hub.upsert("acc", b2);
        assert!(sa.rx.try_recv().is_err());
        hub.remove("acc", "b", "removed");
        assert_eq!(
            recv(&mut sa.rx),
            MapMessage::PeerRemoved {
                id: "b".into(),
                node_key: Key([2; 32])
            }
        );
        assert_eq!(
            recv(&mut sb.rx),
            MapMessage::Goodbye {
                reason: "removed".into()
            }
        );
        assert!(!hub.has_stream("acc", "b"));
        assert!(hub.subscribe("acc", "b").is_none());
        assert!(hub.subscribe("other", "a").is_none());
    }

    #[test]
    fn full_maps_come_out_in_bounded_chunks() {
        let hub = Hub::new(&RelayMap::default());
        let nodes: Vec<Node> = (0..50).map(|i| node(&format!("n{i}"), i)).collect();
        hub.load("acc", nodes, None);
        let mut s = hub.subscribe("acc", "n0").unwrap();
        let mut whole = Vec::new();
        let mut chunks = 0;
        while let Some(c) = s.full_map.next_chunk(1024) {
            assert!(c.len() <= 1024, "{}", c.len());
            whole.extend_from_slice(&c);
            chunks += 1;
        }
        assert!(chunks > 5);
        match parse_map_line(whole.strip_suffix(b"\n").unwrap()).unwrap() {
            MapMessage::Full { peers, .. } => assert_eq!(peers.len(), 49),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn accounts_do_not_see_each_other() {
        let hub = Hub::new(&RelayMap::default());
        hub.load("one", vec![node("a", 1)], None);
        hub.load("two", vec![node("x", 9)], None);
        let mut sx = hub.subscribe("two", "x").unwrap();
        hub.upsert("one", node("c", 3));
        assert!(sx.rx.try_recv().is_err());
        let full = String::from_utf8(sx.full_map.concat()).unwrap();
        assert!(!full.contains(&Key([1; 32]).to_base64()));
    }

    #[test]
    fn a_policy_shapes_every_streams_map_and_follows_changes() {
        const P: &str = r#"{ "groups": { "group:dev": ["ann"] }, "tagOwners": { "tag:db": ["ann"] },
            "acls": [ { "action": "accept", "src": ["group:dev"], "dst": ["tag:db:5432"] } ] }"#;
        let policy = Arc::new(pinhole_policy::load(P).unwrap());
        let mut ann = node("ann", 1);
        ann.user = Some("ann".into());
        ann.addresses = vec!["100.64.0.1".parse().unwrap()];
        let mut db = node("db", 2);
        db.tags = vec!["tag:db".into()];
        db.addresses = vec!["100.64.0.2".parse().unwrap()];
        let mut bob = node("bob", 3);
        bob.user = Some("bob".into());
        bob.addresses = vec!["100.64.0.3".parse().unwrap()];
        let hub = Hub::new(&RelayMap::default());
        hub.load(
            "acc",
            vec![ann.clone(), db.clone(), bob.clone()],
            Some(policy),
        );
        let full = |s: &mut Subscription| match parse_map_line(
            std::mem::replace(
                &mut s.full_map,
                FullMap {
                    parts: Vec::new().into_iter(),
                },
            )
            .concat()
            .strip_suffix(b"\n")
            .unwrap(),
        )
        .unwrap()
        {
            MapMessage::Full { peers, policy, .. } => {
                (peers.into_iter().map(|p| p.id).collect::<Vec<_>>(), policy)
            }
            m => panic!("{m:?}"),
        };
        let mut sb = hub.subscribe("acc", "bob").unwrap();
        let (peers, share) = full(&mut sb);
        assert!(peers.is_empty(), "bob may see nobody: {peers:?}");
        assert_eq!(share, Some(pinhole_proto::filter::NodePolicy::default()));
        let mut sd = hub.subscribe("acc", "db").unwrap();
        let (peers, share) = full(&mut sd);
        assert_eq!(peers, ["ann"]);
        assert_eq!(
            share.unwrap().filter[0].ports,
            [pinhole_proto::filter::PortRange::one(5432)]
        );
        // ann's endpoints change: db hears of it, bob does not.
        ann.endpoints = vec!["192.0.2.1:1".parse().unwrap()];
        hub.upsert("acc", ann.clone());
        assert!(matches!(recv(&mut sd.rx), MapMessage::PeerChanged { peer } if peer.id == "ann"));
        assert!(sb.rx.try_recv().is_err());
        // bob joins the group's rule through a new policy: he sees db, and db's filter lets him in.
        let looser = P.replace(r#"["ann"] },"#, r#"["ann", "bob"] },"#);
        hub.set_policy(
            "acc",
            Some(Arc::new(pinhole_policy::load(&looser).unwrap())),
        );
        assert!(matches!(recv(&mut sb.rx), MapMessage::PeerChanged { peer } if peer.id == "db"));
        assert!(matches!(
            recv(&mut sb.rx),
            MapMessage::Policy { policy: Some(_) }
        ));
        assert!(sb.rx.try_recv().is_err());
        assert!(matches!(recv(&mut sd.rx), MapMessage::PeerChanged { peer } if peer.id == "bob"));
        let MapMessage::Policy { policy: Some(p) } = recv(&mut sd.rx) else {
            panic!()
        };
        assert!(p.filter[0]
            .src
            .iter()
            .any(|n| n.contains(&"100.64.0.3".parse::<std::net::IpAddr>().unwrap())));
        // Tagging bob's node takes it out of the group's reach.
        bob.tags = vec!["tag:db".into()];
        hub.upsert("acc", bob);
        let mut got = Vec::new();
        while let Ok(b) = sb.rx.try_recv() {
            got.push(parse_map_line(&b[..b.len() - 1]).unwrap());
        }
        assert!(
            got.iter()
                .any(|m| matches!(m, MapMessage::PeerRemoved { id, .. } if id == "db")),
            "{got:?}"
        );
    }

    #[test]
    fn a_slow_stream_is_closed_not_waited_for() {
        let hub = Hub::new(&RelayMap::default());
        hub.load("acc", vec![node("a", 1), node("b", 2)], None);
        let sa = hub.subscribe("acc", "a").unwrap();
        for i in 0..=STREAM_QUEUE {
            let mut b = node("b", 2);
            b.endpoints = vec![pinhole_proto::endpoint::Endpoint::new(
                std::net::SocketAddr::from(([192, 0, 2, 1], i as u16)),
                pinhole_proto::endpoint::EndpointKind::Stun,
            )];
            hub.upsert("acc", b);
        }
        assert!(!hub.has_stream("acc", "a"));
        assert!(!hub.unsubscribe("acc", "a", sa.id) || !hub.has_stream("acc", "a"));
    }
}
