//! One WireGuard peer: its settings, its boringtun session and what it has done.

use boringtun::noise::Tunn;
use ipnet::IpNet;
use pinhole_proto::key::Key;
use std::net::SocketAddr;
use std::time::Instant;

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
    /// boringtun's "time since last handshake" at the previous check, to spot a new one.
    pub(crate) prev_since_handshake: Option<std::time::Duration>,
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
            prev_since_handshake: None,
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
        }
    }

    /// Returns true once per completed handshake (initiator or responder side).
    pub(crate) fn check_new_handshake(&mut self, now: Instant) -> bool {
        let since = self.tunn.time_since_last_handshake();
        let new = match (self.prev_since_handshake, since) {
            (_, None) => false,
            (None, Some(_)) => true,
            // The elapsed time only shrinks when a new session was established.
            (Some(prev), Some(cur)) => cur < prev,
        };
        self.prev_since_handshake = since;
        if new {
            self.handshakes += 1;
            self.last_handshake = Some(now.checked_sub(since.unwrap_or_default()).unwrap_or(now));
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
