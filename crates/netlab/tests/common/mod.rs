//! Shared pieces of the system tests.

#![allow(dead_code)]

#[allow(unused_imports)]
pub use pinhole_netlab::pinhole::*;

/// The netlab-tool that cargo built for this test run.
pub fn tool() -> &'static str {
    env!("CARGO_BIN_EXE_netlab-tool")
}
