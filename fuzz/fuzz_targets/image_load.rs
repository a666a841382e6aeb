#![no_main]
//! See `imgtool::fuzzing::image_load` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::image_load(data));
