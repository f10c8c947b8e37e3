//! pinhole-relay as a library (embedded in pinhole-control): the STUN service nodes use to learn
//! their public address and classify their NAT, and the packet relay that carries WireGuard
//! between nodes that have no direct path.

mod attempts;
pub mod authorize;
mod connection;
pub mod http;
pub mod http_server;
pub mod metrics;
mod relay;
pub mod stun_server;
pub mod test_client;

pub use authorize::{AuthError, AuthFuture, Authorizer, Grant, StaticAuthorizer};
pub use connection::ConnectionEnd;
pub use relay::{Relay, RelayConfig};
pub use stun_server::{StunConfig, StunServer, StunStats};
