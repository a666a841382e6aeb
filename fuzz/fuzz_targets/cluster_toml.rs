#![no_main]
//! See `pxe_builder::fuzzing::cluster_toml` and docs/FUZZING.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pxe_builder::fuzzing::cluster_toml(data);
});
