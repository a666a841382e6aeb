#![no_main]
//! See `initrd_agent::fuzzing::boot_files` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    initrd_agent::fuzzing::boot_files(data);
});
