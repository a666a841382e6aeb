#![no_main]
//! See `imgtool::fuzzing::gpt_mbr` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| imgtool::fuzzing::gpt_mbr(data));
