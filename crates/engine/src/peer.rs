//! One WireGuard peer: its settings, its boringtun session and what it has done.

use boringtun::noise::Tunn;
use ipnet::IpNet;
use pinhole_proto::key::Key;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the engine is told about a peer (from a config file or, later, the network map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// What the engine can say about a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// When the last handshake completed (in the caller's clock).
    pub last_handshake: Option<Instant>,
    /// Handshakes completed since the peer was added.
    pub handshakes: u64,
    /// Bytes of IP packets received from and sent to the peer (payload, not counting WireGuard overhead).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

pub(crate) struct Peer {
    pub(crate) tunn: Tunn,
    pub(crate) settings: PeerSettings,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) last_handshake: Option<Instant>,
    pub(crate) handshakes: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
}

impl Peer {
    pub(crate) fn new(tunn: Tunn, settings: PeerSettings) -> Self {
        Peer {
            tunn,
            endpoint: settings.endpoint,
            settings,
            last_handshake: None,
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
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
        let Some(since) = self.tunn.time_since_last_handshake() else {
            return false;
        };
        let established = now.checked_sub(since).unwrap_or(now);
        let new = self
            .last_handshake
            .is_none_or(|last| established > last + MARGIN);
        if new {
            self.handshakes += 1;
            self.last_handshake = Some(established);
        }
        new
    }

    pub(crate) fn status(&self) -> PeerStatus {
        PeerStatus {
            public_key: self.settings.public_key,
            endpoint: self.endpoint,
            allowed_ips: self.settings.allowed_ips.clone(),
            last_handshake: self.last_handshake,
            handshakes: self.handshakes,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
        }
    }
}
