//! Pinhole's wire and file formats: pure functions over bytes and text, no I/O, safe on any input.

#[cfg(feature = "serde")]
pub mod control;
pub mod ip;
pub mod key;
pub mod wgconf;
