//! An account's access policy in the format people write for Tailscale and Headscale: HuJSON
//! with `groups`, `tagOwners`, `hosts`, `acls`, `tests` (and `autoApprovers`). [`Policy::parse`]
//! reads and checks the names, [`Policy::check`] runs the policy's own tests, and
//! [`Policy::view`] gives each node its share: the peers it may see, its inbound filter, and
//! what it may reach. Pure code, no I/O.

pub mod check;
pub mod compile;
pub mod hujson;
pub mod model;
pub mod target;

pub use compile::{Member, NodeSet, View};
pub use hujson::Pos;
pub use model::Policy;

/// A policy that cannot be taken, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {reason}")]
pub struct PolicyError {
    pub pos: Pos,
    pub reason: String,
}

/// Reads a policy and runs its tests: what `policy set` and `policy check` take.
pub fn load(text: &str) -> Result<Policy, PolicyError> {
    let p = Policy::parse(text)?;
    p.check()?;
    Ok(p)
}
