//! A lab of network namespaces for system tests and benchmarks.
//!
//! A [`Topology`] names hosts, the veth links between them (with addresses) and extra routes;
//! [`Lab::build`] creates it with names unique to this process and lab, so tests run in parallel,
//! and dropping the [`Lab`] stops every process it started and deletes every namespace, also
//! when a test panics. Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2.

pub mod impair;
mod lab;
pub mod mesh;
pub mod nat;
pub mod nat_matrix;
pub mod nat_probe;
pub mod natlab;
pub mod pinhole;
pub mod resolved;
pub mod routing;
pub mod sim_nodes;
pub mod stock;
pub mod tools;
mod topology;

pub use lab::{Lab, LabError, Proc};
pub use topology::Topology;

/// True when the process can create namespaces (runs as root).
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when a test that needs root must be skipped (said out loud); under `cargo xtask test`
/// a test without root fails instead (see [`pinhole_testkit::skip`]).
pub fn skip_without_root(test: &str) -> bool {
    if have_root() {
        return false;
    }
    pinhole_testkit::skip(
        test,
        "network-namespace tests need root (CI runs them as root)",
    )
}
