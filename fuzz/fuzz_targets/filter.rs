//! Fuzz target `filter`: runs [`pinhole_engine::filter::fuzz`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_engine::filter::fuzz(data));
