#![no_main]
//! See `imgtool::fuzzing::fat_probe` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::fat_probe(data));
