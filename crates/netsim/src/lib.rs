//! A deterministic in-memory network for engine tests: hosts with UDP addresses, each running a
//! sans-IO [`Engine`](pinhole_engine::Engine), datagrams delivered after a latency or lost at a
//! given rate, relays that carry packets by node key, hosts whose UDP is blocked, NAT routers
//! of every RFC 4787 kind in front of hosts, all on a simulated clock. A seeded RNG makes
//! every run identical.

pub mod nat;
pub mod packets;
mod sim;

pub use nat::{Filtering, Mapping, NatConfig, PortAlloc};
pub use sim::{HostId, Link, NatId, Sim};
