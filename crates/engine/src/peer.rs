//! One WireGuard peer: its settings, its boringtun session and what it has done.

use crate::discovery::{CandidateStatus, Discovery, PathReason};
use boringtun::noise::{Tunn, TunnResult};
use ipnet::IpNet;
use pinhole_proto::disco::DiscoBox;
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use pinhole_proto::key::Key;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the engine is told about a peer (from a config file or, later, the network map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<SocketAddr>,
    /// Every address the peer may be reached at (its local and public endpoints, from the
    /// map, with their kinds): disco pings go to each of them (or, for a peer without a disco
    /// key, handshakes and keepalives), and the best that answers becomes the endpoint.
    pub candidates: Vec<Endpoint>,
    /// The peer's disco key: with it (and the engine's own, [`crate::Engine::set_disco_key`])
    /// the direct path is found with disco pings; without it the peer is plain WireGuard.
    pub disco_key: Option<Key>,
    pub persistent_keepalive: Option<u16>,
    /// The relay region the peer is connected to (its home relay), if it has one.
    pub relay: Option<String>,
}

/// At most this many candidates are tried per peer.
pub const MAX_CANDIDATES: usize = 8;

/// How packets to a peer travel right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// Over UDP to this endpoint, which answered recently.
    Direct(SocketAddr),
    /// Through the relay of this region (the peer's home relay).
    Relayed(Arc<str>),
    /// Neither a working endpoint nor a relay is known.
    None,
}

/// What the engine can say about a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    /// The path packets take now.
    pub path: Path,
    /// The peer's home relay region.
    pub relay: Option<Arc<str>>,
    /// Whether the direct path is found with disco (both sides have disco keys).
    pub disco: bool,
    /// The round-trip time of the direct path in use (its last pong).
    pub rtt: Option<Duration>,
    /// The kind of the candidate the direct path uses.
    pub endpoint_kind: Option<EndpointKind>,
    /// Why the path is not direct, when it is not and something was tried.
    pub reason: Option<PathReason>,
    /// The candidates and what each has shown (disco peers).
    pub candidates: Vec<CandidateStatus>,
    /// Disco pings sent to the peer so far (every candidate and predicted port).
    pub pings_sent: u32,
    pub allowed_ips: Vec<IpNet>,
    /// When the last handshake completed (in the caller's clock).
    pub last_handshake: Option<Instant>,
    /// When a packet for the peer last came from the TUN device (traffic wanting a path).
    pub last_sent: Option<Instant>,
    /// Handshakes completed since the peer was added.
    pub handshakes: u64,
    /// Bytes of IP packets received from and sent to the peer (payload, not counting WireGuard overhead).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Packets from the peer that the policy's filter refused.
    pub filtered_packets: u64,
}

/// How long a direct path is trusted after the last packet that came over it. Longer than
/// WireGuard's passive keepalive (10 s), so one-way traffic keeps a working path.
pub const DIRECT_TRUST: Duration = Duration::from_secs(15);

/// How long after the last packet a peer's timers still run: WireGuard forgets a session's keys
/// at three times REJECT_AFTER_TIME (540 s); after that a quiet peer has no timer at all.
pub const QUIET_AFTER: Duration = Duration::from_secs(600);

/// A disco peer's discovery: the box shared with its disco key, and the path state.
pub(crate) struct PeerDisco {
    pub(crate) key: Key,
    pub(crate) boxed: DiscoBox,
    pub(crate) state: Discovery,
}

pub(crate) struct Peer {
    /// The engine's index for the peer (boringtun's session index is built from it).
    pub(crate) index: u32,
    /// The WireGuard state (handshake, sessions, timers): made at the first packet for or from
    /// the peer and dropped once it has been quiet for [`QUIET_AFTER`] (its keys are gone by
    /// then). boringtun keeps eight session slots inline, 11 KiB a peer: a peer that does not
    /// talk costs none of it, which is what keeps a map of 10,000 peers small.
    pub(crate) tunn: Option<Box<Tunn>>,
    pub(crate) disco: Option<PeerDisco>,
    pub(crate) settings: PeerSettings,
    pub(crate) endpoint: Option<SocketAddr>,
    /// The local socket the endpoint is reached from (the main one unless birthday probing
    /// found the path on an extra socket).
    pub(crate) endpoint_socket: crate::transmit::SocketId,
    pub(crate) relay: Option<Arc<str>>,
    /// The relay region the peer's last authentic relayed packet came through: the way back
    /// while the map names no home relay for it (the map can lag behind a peer that just came
    /// up, and replies sent to its endpoint instead were lost where UDP is blocked).
    pub(crate) relay_seen: Option<Arc<str>>,
    /// When an authentic packet last arrived over UDP (the direct path works while recent).
    pub(crate) udp_rx_at: Option<Instant>,
    /// When a packet was last sent over UDP.
    pub(crate) udp_tx_at: Option<Instant>,
    /// When the direct path was last probed while relayed.
    pub(crate) probe_at: Option<Instant>,
    /// When anything was last sent to the peer (probing stops for idle peers).
    pub(crate) active_at: Option<Instant>,
    /// When anything last happened with the peer: a packet for it, an authentic message from
    /// it. WireGuard's timers run for it until [`QUIET_AFTER`] past this.
    pub(crate) touched_at: Option<Instant>,
    pub(crate) last_handshake: Option<Instant>,
    /// The handshake initiation last sent and when, until a handshake completes: sent again at
    /// once on a path that appears meanwhile (a relay learnt from the map), instead of waiting
    /// for WireGuard's retry five seconds later.
    pub(crate) pending_init: Option<(Instant, Vec<u8>)>,
    /// When the waiting initiation was last sent again, and when the first initiation of this
    /// attempt went out (a new one is sent every second for a while: see the engine).
    pub(crate) init_resent_at: Option<Instant>,
    pub(crate) init_first_at: Option<Instant>,
    /// Whether the peer last had a proven direct path (to notice the moment it no longer has).
    pub(crate) was_direct: bool,
    /// This side answered a handshake initiation and its queue waits for the initiator's first
    /// packet to confirm the session.
    pub(crate) awaiting_confirmation: bool,
    pub(crate) handshakes: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) filtered_packets: u64,
    pub(crate) tx_packets: u64,
}

impl Peer {
    /// How long ago the current WireGuard session was made; none without one.
    pub(crate) fn since_handshake(&self) -> Option<Duration> {
        self.tunn
            .as_ref()
            .and_then(|t| t.time_since_last_handshake())
    }

    /// The next packet boringtun queued while a handshake was in flight, encrypted into `buf`
    /// (`Done` when there is none).
    pub(crate) fn next_queued<'b>(&mut self, buf: &'b mut [u8]) -> TunnResult<'b> {
        match self.tunn.as_deref_mut() {
            Some(t) => t.decapsulate(None, &[], buf),
            None => TunnResult::Done,
        }
    }

    /// The relay to reach the peer through: its home relay from the map, else the one its
    /// packets last came through.
    pub(crate) fn set_relay(&mut self, from_map: Option<&str>) {
        self.relay = from_map.map(Arc::from).or_else(|| self.relay_seen.clone());
    }

    /// An authentic packet from the peer came through `region`'s relay (which vouched for the
    /// sender's key): remembered, and used while the map names no home relay.
    pub(crate) fn relay_seen(&mut self, region: &Arc<str>) {
        if self.relay_seen.as_ref() != Some(region) {
            self.relay_seen = Some(region.clone());
        }
        if self.relay.is_none() {
            self.relay = Some(region.clone());
        }
    }

    pub(crate) fn new(index: u32, tunn: Option<Box<Tunn>>, settings: PeerSettings) -> Self {
        Peer {
            index,
            tunn,
            disco: None,
            endpoint: settings.endpoint,
            endpoint_socket: crate::transmit::MAIN_SOCKET,
            relay: settings.relay.as_deref().map(Arc::from),
            relay_seen: None,
            udp_rx_at: None,
            udp_tx_at: None,
            probe_at: None,
            active_at: None,
            touched_at: None,
            settings,
            last_handshake: None,
            pending_init: None,
            init_resent_at: None,
            init_first_at: None,
            was_direct: false,
            awaiting_confirmation: false,
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            filtered_packets: 0,
            tx_packets: 0,
        }
    }

    /// Returns true once per completed handshake (initiator or responder side).
    ///
    /// boringtun only tells how long ago the current session was established; the instant that
    /// gives (`now - elapsed`) moves forward only when a new session is established. Jitter
    /// between the caller's `now` and boringtun's own clock read is far below the margin, and
    /// handshakes are seconds apart (REKEY_TIMEOUT is 5 s).
    pub(crate) fn check_new_handshake(&mut self, now: Instant) -> bool {
        const MARGIN: Duration = Duration::from_millis(100);
        let Some(since) = self.since_handshake() else {
            return false;
        };
        let established = now.checked_sub(since).unwrap_or(now);
        let new = self
            .last_handshake
            .is_none_or(|last| established > last + MARGIN);
        if new {
            self.handshakes += 1;
            self.last_handshake = Some(established);
            self.pending_init = None;
            self.init_first_at = None;
        }
        new
    }

    /// Whether WireGuard's timers have anything to do for this peer: a persistent keepalive, or
    /// anything within [`QUIET_AFTER`] (handshake retries, rekeys, keepalives, and the clean-up
    /// of a session's keys all happen inside that window).
    pub(crate) fn needs_timers(&self, now: Instant) -> bool {
        self.settings.persistent_keepalive.is_some_and(|k| k > 0)
            || self
                .touched_at
                .is_some_and(|t| now.saturating_duration_since(t) < QUIET_AFTER)
    }

    /// Whether the direct path answered recently enough to be used: for a disco peer, its best
    /// path within disco's trust; otherwise authentic WireGuard packets from the endpoint.
    pub(crate) fn direct(&self, now: Instant) -> Option<SocketAddr> {
        if let Some(d) = &self.disco {
            return d.state.trusted_best(now);
        }
        let fresh = self
            .udp_rx_at
            .is_some_and(|t| now.saturating_duration_since(t) < DIRECT_TRUST);
        self.endpoint.filter(|_| fresh)
    }

    /// The path to send on now.
    pub(crate) fn path(&self, now: Instant) -> Path {
        match (self.direct(now), &self.relay, self.endpoint) {
            (Some(ep), _, _) => Path::Direct(ep),
            (None, Some(r), _) => Path::Relayed(r.clone()),
            // No relay: UDP to the endpoint is the only hope.
            (None, None, Some(ep)) => Path::Direct(ep),
            (None, None, None) => Path::None,
        }
    }

    pub(crate) fn status(&self, now: Instant) -> PeerStatus {
        let answered = self.udp_rx_at.is_some() && self.disco.is_none();
        let path = match (self.direct(now), &self.relay, self.endpoint) {
            (Some(ep), _, _) => Path::Direct(ep),
            (None, Some(r), _) => Path::Relayed(r.clone()),
            // No relay (a static configuration): the endpoint, once it has answered.
            (None, None, Some(ep)) if answered => Path::Direct(ep),
            _ => Path::None,
        };
        let pings_sent = self.disco.as_ref().map_or(0, |d| d.state.pings_sent);
        let (rtt, endpoint_kind, reason, candidates) = match &self.disco {
            Some(d) => {
                let info = d
                    .state
                    .best_info()
                    .filter(|_| matches!(path, Path::Direct(_)));
                (
                    info.and_then(|(_, rtt)| rtt),
                    info.map(|(k, _)| k),
                    d.state.reason(now),
                    d.state.candidates(now),
                )
            }
            None => {
                let reason = (self.relay.is_some() && !matches!(path, Path::Direct(_)))
                    .then_some(PathReason::NoDisco);
                (None, None, reason, Vec::new())
            }
        };
        PeerStatus {
            public_key: self.settings.public_key,
            endpoint: self.endpoint,
            path,
            relay: self.relay.clone(),
            disco: self.disco.is_some(),
            rtt,
            endpoint_kind,
            reason,
            candidates,
            pings_sent,
            allowed_ips: self.settings.allowed_ips.clone(),
            last_handshake: self.last_handshake,
            last_sent: self.active_at,
            handshakes: self.handshakes,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            filtered_packets: self.filtered_packets,
            tx_packets: self.tx_packets,
        }
    }
}
