#![no_main]
//! See `imgtool::fuzzing::lvm_metadata` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::lvm_metadata(data));
