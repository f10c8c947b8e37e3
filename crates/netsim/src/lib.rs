//! A deterministic in-memory network for engine tests: hosts with UDP addresses, each running a
//! sans-IO [`Engine`](pinhole_engine::Engine), datagrams delivered after a latency or lost at a
//! given rate, relays that carry packets by node key, hosts whose UDP is blocked, all on a
//! simulated clock. A seeded RNG makes every run identical.

pub mod packets;
mod sim;

pub use sim::{HostId, Link, Sim};
