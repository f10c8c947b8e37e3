//! Fuzz target `relay_frames`: runs [`pinhole_proto::fuzzing::relay_frames`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::relay_frames(data));
