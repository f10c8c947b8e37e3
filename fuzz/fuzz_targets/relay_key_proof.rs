//! Fuzz target `relay_key_proof`: runs [`pinhole_proto::fuzzing::relay_key_proof`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::relay_key_proof(data));
