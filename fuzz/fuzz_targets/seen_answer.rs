#![no_main]
//! See `netboot_proto::seen::fuzz` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    netboot_proto::seen::fuzz(data);
});
