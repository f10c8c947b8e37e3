//! The coordination side: the sign-in and registration state machine (`machine`, with the
//! pure decisions of `decide`), the control link that keeps the node registered and streams the
//! map (`control_link`), the map itself and how it changes the engine's peers (`netmap`,
//! `mapped_peers`), which peer carries which route (`route_plan`), and the static WireGuard-format configuration used instead of control
//! (`config`).

pub mod config;
pub mod control_link;
pub mod decide;
pub mod machine;
pub mod mapped_peers;
pub mod netmap;
pub mod route_plan;
