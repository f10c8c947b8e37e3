//! Fuzz target `disco`: runs [`pinhole_proto::fuzzing::disco`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::disco(data));
