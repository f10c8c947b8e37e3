//! Fuzz target `ipc`: runs [`pinhole_proto::fuzzing::ipc`] on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinhole_proto::fuzzing::ipc(data));
