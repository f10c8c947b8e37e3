//! The packet relay: the table of connected clients by node key, and forwarding between them.
//!
//! Each client has a bounded queue of frames waiting to be written to it; forwarding never
//! waits on a destination: when its queue is full the packet is dropped and counted, so a slow
//! client never stalls the others. Packets travel in batches: what one read of a sender's
//! connection held for one destination is one message on that destination's queue (one
//! allocation and one wake-up for all of them), counted against the queue's bound frame by frame.

use crate::authorize::{AuthCache, Authorizer};
use crate::metrics::{self, Metrics};
use pinhole_proto::key::{Key, PrivateKey};
use pinhole_proto::relay::{frames_len, Frame, PACKET_OVERHEAD};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// How the relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often each side sends a keepalive; a client silent for 2.5 times this is dropped.
    pub keepalive: Duration,
    /// Frames waiting to be written to one client before more are dropped.
    pub queue_frames: usize,
    /// How long control's answer about a key is trusted.
    pub auth_ttl: Duration,
    /// How often the keys of connected clients are checked with control again.
    pub recheck: Duration,
    /// How long a client has to prove its key after connecting.
    pub handshake_timeout: Duration,
    /// Connection attempts one client address may make per [`RelayConfig::handshake_window`]
    /// (each may cost a question to control); more are refused until the window ends.
    pub handshakes_per_address: u32,
    pub handshake_window: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            keepalive: Duration::from_secs(30),
            queue_frames: 256,
            auth_ttl: Duration::from_secs(30),
            recheck: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            handshakes_per_address: 60,
            handshake_window: Duration::from_secs(10),
        }
    }
}

/// Frames on their way to one client: whole encoded frames back to back, and how many of them
/// are packets (counted against the client's queue bound; notices count nothing).
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    pub(crate) bytes: Vec<u8>,
    pub(crate) packets: usize,
}

impl Outgoing {
    /// A notice (peer gone), outside the packet bound.
    fn notice(bytes: Vec<u8>) -> Outgoing {
        Outgoing { bytes, packets: 0 }
    }

    /// Keeps the first `n` packets only.
    fn keep_first(&mut self, n: usize) {
        let end = frames_len(&self.bytes, n);
        self.bytes.truncate(end);
        self.packets = n;
    }

    /// The packets' own bytes (without frame headers and keys).
    fn packet_bytes(&self) -> u64 {
        self.bytes
            .len()
            .saturating_sub(self.packets * PACKET_OVERHEAD) as u64
    }
}

/// What a connection gets when it registers.
pub(crate) struct Registration {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Outgoing>,
    /// Packets queued for this client and not yet taken off the queue; the connection subtracts
    /// what it takes.
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) close: Arc<Notify>,
}

/// A connected client as the others see it.
pub(crate) struct Client {
    pub(crate) id: u64,
    pub(crate) network: Arc<str>,
    pub(crate) tx: mpsc::Sender<Outgoing>,
    queued: Arc<AtomicUsize>,
    /// Wakes the client's connection to close it (revoked, or replaced by a newer connection).
    pub(crate) close: Arc<Notify>,
}

/// The sizes of the relay's tables, see [`Relay::table_sizes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    pub noted_destinations: usize,
    pub auth_cache: usize,
    pub handshake_addresses: usize,
}

/// What happened to a batch handed to [`Shared::deliver`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Forwarded {
    Queued,
    QueueFull,
    NoPeer,
}

pub(crate) struct Shared {
    pub(crate) private: PrivateKey,
    pub(crate) public: Key,
    pub(crate) auth: AuthCache,
    pub(crate) config: RelayConfig,
    pub(crate) metrics: Metrics,
    clients: RwLock<HashMap<Key, Client>>,
    /// Who sent to whom, so that senders hear when their destination leaves. Keys are
    /// connected destinations only, values connected senders only: it is as large as the
    /// traffic between clients that are here, whatever keys a client names.
    senders: RwLock<HashMap<Key, Vec<Key>>>,
    /// Connection attempts per client address in the current window.
    pub(crate) handshakes: crate::attempts::Attempts,
    next_id: AtomicU64,
    pub(crate) stop: watch::Sender<bool>,
}

/// The relay; cheap to clone, every clone is the same relay.
#[derive(Clone)]
pub struct Relay {
    pub(crate) shared: Arc<Shared>,
}

/// Senders remembered per destination (for peer-gone notices); more are not noted.
const MAX_SENDERS: usize = 1024;

impl Relay {
    /// A relay that asks `auth` which node keys may use it.
    pub fn new(auth: Arc<dyn Authorizer>, config: RelayConfig) -> Relay {
        let private = PrivateKey::from_bytes(rand::random());
        let public = private.public_key();
        let (stop, _) = watch::channel(false);
        Relay {
            shared: Arc::new(Shared {
                private,
                public,
                auth: AuthCache::new(auth, config.auth_ttl),
                config: config.clone(),
                metrics: Metrics::default(),
                clients: RwLock::new(HashMap::new()),
                senders: RwLock::new(HashMap::new()),
                handshakes: crate::attempts::Attempts::new(
                    config.handshakes_per_address,
                    config.handshake_window,
                ),
                next_id: AtomicU64::new(1),
                stop,
            }),
        }
    }

    /// The relay's X25519 key (fresh per process).
    pub fn public_key(&self) -> Key {
        self.shared.public
    }

    /// The metrics in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// Clients connected right now.
    pub fn client_count(&self) -> usize {
        self.shared.read_clients().len()
    }

    /// What the relay keeps per client and per key it heard of: destinations with senders
    /// noted, answers in the authorisation cache, addresses counted for connection attempts.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            noted_destinations: self.shared.noted_destinations(),
            auth_cache: self.shared.auth.len(),
            handshake_addresses: self.shared.handshakes.len(),
        }
    }

    /// Control revoked `key`: forget its grant and close its connection.
    pub fn revoke(&self, key: &Key) {
        self.shared.auth.forget(key);
        if let Some(c) = self.shared.read_clients().get(key) {
            c.close.notify_one();
        }
    }

    /// Closes every connection; new ones are refused.
    pub fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
    }

    /// Checks every connected client with control again and closes those no longer authorised.
    pub async fn recheck_clients(&self) {
        let keys: Vec<(Key, Arc<str>)> = self
            .shared
            .read_clients()
            .iter()
            .map(|(k, c)| (*k, c.network.clone()))
            .collect();
        for (key, network) in keys {
            match self.shared.auth.recheck(&key).await {
                Ok(Some(g)) if g.network == network => {}
                Ok(_) => {
                    tracing::info!(key = %key.short(), "relay client no longer authorised: closing");
                    self.revoke(&key);
                }
                // Control unreachable: keep serving whom it authorised.
                Err(e) => tracing::debug!("recheck: {e}"),
            }
        }
    }

    /// Runs [`Relay::recheck_clients`] every `recheck` until shutdown.
    pub async fn run_rechecks(self) {
        let mut stop = self.shared.stop.subscribe();
        let mut tick = tokio::time::interval(self.shared.config.recheck);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => self.recheck_clients().await,
            }
        }
    }
}

impl Shared {
    pub(crate) fn read_clients(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Client>> {
        self.clients.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_clients(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Client>> {
        self.clients.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a client; a connection already there for the same key is closed (the newest wins).
    pub(crate) fn register(&self, key: Key, network: Arc<str>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Every message holds at least one packet or a notice, so the channel never fills
        // before the packet bound (counted in `queued`) does, but for notices.
        let (tx, rx) = mpsc::channel(self.config.queue_frames.max(1));
        let close = Arc::new(Notify::new());
        let queued = Arc::new(AtomicUsize::new(0));
        let old = self.write_clients().insert(
            key,
            Client {
                id,
                network,
                tx,
                queued: queued.clone(),
                close: close.clone(),
            },
        );
        match old {
            Some(old) => old.close.notify_one(),
            None => {
                self.metrics.clients.fetch_add(1, Ordering::Relaxed);
            }
        }
        Registration {
            id,
            rx,
            queued,
            close,
        }
    }

    /// Removes a client (if this connection is still the one registered), forgets it as a
    /// sender to the destinations in `sent_to`, and tells those who sent to it that it is gone.
    pub(crate) fn unregister(&self, key: &Key, id: u64, sent_to: &HashSet<Key>) {
        {
            let mut clients = self.write_clients();
            if clients.get(key).is_none_or(|c| c.id != id) {
                return;
            }
            clients.remove(key);
        }
        self.metrics.clients.fetch_sub(1, Ordering::Relaxed);
        let senders = {
            let mut senders = self.senders.write().unwrap_or_else(|p| p.into_inner());
            for dst in sent_to {
                if let Some(list) = senders.get_mut(dst) {
                    list.retain(|s| s != key);
                    if list.is_empty() {
                        senders.remove(dst);
                    }
                }
            }
            senders.remove(key).unwrap_or_default()
        };
        let gone = Frame::PeerGone { key: *key }.to_bytes();
        let clients = self.read_clients();
        for s in senders {
            if let Some(c) = clients.get(&s) {
                let _ = c.tx.try_send(Outgoing::notice(gone.clone()));
            }
        }
    }

    /// Notes that `src` sends to `dst` (called once per destination by each connection, after
    /// a packet reached `dst`); a destination that left meanwhile is not noted.
    pub(crate) fn note_sender(&self, dst: Key, src: Key) {
        let mut senders = self.senders.write().unwrap_or_else(|p| p.into_inner());
        if !self.read_clients().contains_key(&dst) {
            return;
        }
        let list = senders.entry(dst).or_default();
        if list.len() < MAX_SENDERS && !list.contains(&src) {
            list.push(src);
        }
    }

    /// Destinations with senders noted (for tests of the bounds).
    pub(crate) fn noted_destinations(&self) -> usize {
        self.senders.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Where packets for `dst` go if it is connected in `network`: looked up once per
    /// destination for all the packets of one read.
    pub(crate) fn target(&self, network: &str, dst: &Key) -> Option<Target> {
        let clients = self.read_clients();
        let c = clients.get(dst).filter(|c| &*c.network == network)?;
        Some(Target {
            tx: c.tx.clone(),
            queued: c.queued.clone(),
        })
    }

    /// Packets `target`'s queue has room for now (a packet beyond it would be dropped, so it
    /// is not even copied).
    pub(crate) fn room(&self, target: &Target) -> usize {
        self.config
            .queue_frames
            .max(1)
            .saturating_sub(target.queued.load(Ordering::Relaxed))
    }

    /// Queues `batch` (packets framed for `target`); what does not fit in its queue any more
    /// is dropped, the oldest packets kept.
    pub(crate) fn deliver(&self, target: &Target, mut batch: Outgoing) -> Forwarded {
        let m = &self.metrics;
        let n = batch.packets;
        let limit = self.config.queue_frames.max(1);
        let before = target.queued.fetch_add(n, Ordering::Relaxed);
        let room = limit.saturating_sub(before).min(n);
        if room < n {
            target.queued.fetch_sub(n - room, Ordering::Relaxed);
            metrics::add(&m.drops_queue_full, (n - room) as u64);
            if room == 0 {
                return Forwarded::QueueFull;
            }
            batch.keep_first(room);
        }
        let bytes = batch.packet_bytes();
        match target.tx.try_send(batch) {
            Ok(()) => {
                metrics::add(&m.packets_forwarded, room as u64);
                metrics::add(&m.bytes_forwarded, bytes);
                Forwarded::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                target.queued.fetch_sub(room, Ordering::Relaxed);
                metrics::add(&m.drops_queue_full, room as u64);
                Forwarded::QueueFull
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                target.queued.fetch_sub(room, Ordering::Relaxed);
                metrics::add(&m.drops_no_peer, room as u64);
                Forwarded::NoPeer
            }
        }
    }
}

/// A connected destination's queue, as a sender's connection holds it while it forwards one
/// read's packets.
pub(crate) struct Target {
    tx: mpsc::Sender<Outgoing>,
    queued: Arc<AtomicUsize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticAuthorizer;

    fn batch(src: &Key, sizes: &[usize]) -> Outgoing {
        let mut b = Outgoing::default();
        for &n in sizes {
            Frame::append_packet(false, src, &vec![n as u8; n], &mut b.bytes);
            b.packets += 1;
        }
        b
    }

    #[tokio::test]
    async fn a_batch_past_the_queue_bound_keeps_its_first_packets_whole() {
        let relay = Relay::new(
            Arc::new(StaticAuthorizer::default()),
            RelayConfig {
                queue_frames: 5,
                ..RelayConfig::default()
            },
        );
        let shared = &relay.shared;
        let (src, dst) = (Key([1; 32]), Key([2; 32]));
        let mut reg = shared.register(dst, "acme".into());
        assert!(shared.target("other", &dst).is_none());
        assert!(shared.target("acme", &src).is_none());
        let t = shared.target("acme", &dst).unwrap();
        assert_eq!(shared.room(&t), 5);
        assert_eq!(
            shared.deliver(&t, batch(&src, &[10, 20, 30])),
            Forwarded::Queued
        );
        assert_eq!(shared.room(&t), 2);
        // Two of these fit; the third is dropped, the two are whole frames.
        assert_eq!(
            shared.deliver(&t, batch(&src, &[40, 50, 60])),
            Forwarded::Queued
        );
        assert_eq!(shared.deliver(&t, batch(&src, &[70])), Forwarded::QueueFull);
        assert_eq!(shared.room(&t), 0);
        assert_eq!(reg.queued.load(Ordering::Relaxed), 5);
        let first = reg.rx.try_recv().unwrap();
        let second = reg.rx.try_recv().unwrap();
        assert_eq!((first.packets, second.packets), (3, 2));
        let mut d = pinhole_proto::relay::Decoder::default();
        d.push(&second.bytes);
        for n in [40, 50] {
            assert_eq!(
                d.next_frame(),
                Ok(Some(Frame::RecvPacket {
                    src,
                    packet: vec![n as u8; n]
                }))
            );
        }
        assert_eq!(d.pending(), 0);
        let m = &shared.metrics;
        assert_eq!(m.packets_forwarded.load(Ordering::Relaxed), 5);
        assert_eq!(m.bytes_forwarded.load(Ordering::Relaxed), 150);
        assert_eq!(m.drops_queue_full.load(Ordering::Relaxed), 2);
        // Taken off the queue (as the connection does), there is room again.
        reg.queued.fetch_sub(5, Ordering::Relaxed);
        assert_eq!(shared.room(&t), 5);
        assert_eq!(shared.deliver(&t, batch(&src, &[80])), Forwarded::Queued);
        // A destination gone since it was looked up: its packets count as no peer.
        shared.unregister(&dst, reg.id, &HashSet::new());
        drop(reg);
        assert_eq!(shared.deliver(&t, batch(&src, &[90])), Forwarded::NoPeer);
        assert_eq!(m.drops_no_peer.load(Ordering::Relaxed), 1);
    }
}
