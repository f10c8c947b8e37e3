//! Fuzz target `datagram`: runs [`pinhole_engine::fuzzing::datagram`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_engine::fuzzing::datagram(data));
