//! imgtool's integration tests use the shared disk helpers of the qemu-tests harness.
#![allow(dead_code, unused_imports)]

pub use qemu_tests::disk::*;

pub fn imgtool() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_imgtool"))
}
