#![no_main]
//! See `imgtool::fuzzing::range_answer` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::range_answer(data));
