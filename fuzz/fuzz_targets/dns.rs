//! Fuzz target `dns`: runs [`pinhole_dns::fuzzing::dns`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_dns::fuzzing::dns(data));
