#![no_main]
//! See `imgtool::fuzzing::btrfs_probe` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::btrfs_probe(data));
