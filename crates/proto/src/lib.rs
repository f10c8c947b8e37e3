//! Pinhole's wire and file formats: pure functions over bytes and text, no I/O, safe on any input.

#[cfg(feature = "serde")]
pub mod control;
pub mod disco;
pub mod endpoint;
#[cfg(feature = "serde")]
pub mod filter;
pub mod fuzzing;
pub mod ip;
#[cfg(feature = "serde")]
pub mod ipc;
pub mod key;
pub mod key_proof;
pub mod relay;
pub mod stun;
pub mod wgconf;
