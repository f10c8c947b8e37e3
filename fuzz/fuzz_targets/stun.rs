//! Fuzz target `stun`: runs [`pinhole_proto::fuzzing::stun`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::stun(data));
