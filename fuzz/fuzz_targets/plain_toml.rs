#![no_main]
//! See `pxe_builder::fuzzing::plain_toml` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pxe_builder::fuzzing::plain_toml(data);
});
