//! pinhole-control, the coordination server: accounts and sign-in, node registration and
//! addresses, and the live network map every node follows. Also a library, so that tests and
//! benchmarks can run it in-process.

pub mod addresses;
pub mod admin;
pub mod api;
pub mod clock;
pub mod device;
pub mod device_oidc;
pub mod duration;
pub mod hub;
pub mod names;
pub mod oidc;
pub mod policy;
pub mod ratelimit;
pub mod register_proof;
pub mod relay_auth;
pub mod routes;
pub mod secret;
pub mod server;
pub mod state;
pub mod store;

pub use server::{Server, TlsFiles};
pub use state::Settings;
pub use store::Store;
