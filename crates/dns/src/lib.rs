//! Names inside the tunnel, sans-IO: node names as DNS labels ([`label`]), the account's zone
//! built from the map ([`zone`]), and the server that answers it and forwards every other
//! query to the system's resolvers ([`server`]). The daemon moves the bytes and keeps the time.

pub mod fuzzing;
pub mod label;
pub mod server;
pub mod zone;

pub use server::{Server, Stats};

/// The address a node's DNS server answers on inside the tunnel: in the overlay's
/// 100.64.0.0/10, the one Tailscale uses, so people's habits carry over.
pub const SERVER_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(100, 100, 100, 100);
pub use zone::{check_suffix, Lookup, Zone, ZoneError, ZoneNode, DEFAULT_SUFFIX};
