//! How this node is reached and reaches out beyond the engine's sans-IO core: the endpoints it
//! publishes (`endpoints`), `pinhole netcheck` (`netcheck`), `pinhole ping` (`pinger`), and the
//! relay links with their dialing (`relay_link`, `tcp_race`).

pub mod endpoints;
pub mod netcheck;
pub mod pinger;
pub mod relay_link;
pub mod tcp_race;
