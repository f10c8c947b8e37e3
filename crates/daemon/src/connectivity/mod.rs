//! How this node is reached and reaches out beyond the engine's sans-IO core: the endpoints it
//! publishes (`endpoints`), `pinhole netcheck` (`netcheck`), `pinhole ping` (`pinger`), and the
//! relay links (`relay_link`; their dialing is the `pinhole-relay-dial` crate's).

pub mod endpoints;
pub mod netcheck;
pub mod pinger;
pub mod relay_link;
