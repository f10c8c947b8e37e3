//! The sans-IO core of pinholed: takes `now` and bytes, returns datagrams to send, packets for the
//! TUN device, events and the next deadline. No sockets, no clock reads, no threads.

mod allowed_ips;
mod clock;
mod discovery;
mod engine;
pub mod filter;
pub mod fuzzing;
mod home_relay;
mod netcheck;
mod peer;
mod relay_client;
mod transmit;

pub use allowed_ips::AllowedIps;
pub use discovery::{stun_port_spread, CandidateStatus, PathReason};
pub use engine::{Engine, EngineError, EngineStats, Event, TIMER_TICK};
pub use home_relay::choose_home;
pub use netcheck::{Netcheck, Probe, Report as NetcheckReport, StunServer, NETCHECK_TIMEOUT};
pub use peer::{Path, PeerSettings, PeerStatus, DIRECT_TRUST};
pub use pinhole_proto::endpoint::{Endpoint, EndpointKind};
pub use pinhole_proto::key::{Key, PrivateKey};
pub use relay_client::{RelayClient, RelayEvent};
pub use transmit::{RelayTransmit, SocketId, SocketRequest, Transmit, MAIN_SOCKET};

/// Whether this build runs WireGuard on the simulated clock (the `sim-clock` feature, for netsim).
/// The daemon refuses to run on it: only the real clock keeps real tunnels alive.
pub const SIM_CLOCK: bool = cfg!(feature = "sim-clock");

/// Derives the public key of a private key (X25519).
pub fn public_key(private: &PrivateKey) -> Key {
    private.public_key()
}

/// Makes a private key from 32 random bytes (clamping is done by X25519 itself).
pub fn private_key_from_bytes(bytes: [u8; 32]) -> PrivateKey {
    PrivateKey::from_bytes(bytes)
}
