#![no_main]
//! See `imgtool::fuzzing::ext_probe` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::ext_probe(data));
