#![no_main]
//! See `imgtool::fuzzing::upload_manifest` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::upload_manifest(data));
