//! Fuzz target `control_api`: runs [`pinhole_proto::fuzzing::control_api`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::control_api(data));
