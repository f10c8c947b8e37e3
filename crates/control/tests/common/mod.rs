//! Shared test fixtures.

pub mod pg;
