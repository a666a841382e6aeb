#![no_main]
//! See `imgtool::fuzzing::xfs_probe` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::xfs_probe(data));
