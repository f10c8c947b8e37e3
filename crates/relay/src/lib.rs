//! pinhole-relay as a library (embedded in pinhole-control): the STUN service nodes use to learn
//! their public address and classify their NAT.

pub mod stun_server;

pub use stun_server::{StunConfig, StunServer, StunStats};
