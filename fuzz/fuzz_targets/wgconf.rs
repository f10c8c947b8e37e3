//! Fuzz target `wgconf`: runs [`pinhole_proto::fuzzing::wgconf`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::wgconf(data));
