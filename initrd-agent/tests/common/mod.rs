//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `initrd-agent clone --server SERVER --group compute --target TARGET EXTRA…`, run to
/// the end.
pub fn agent(server: &str, target: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_initrd-agent"))
        .args([
            "clone", "--server", server, "--group", "compute", "--target",
        ])
        .arg(target)
        .args(extra)
        .output()
        .unwrap()
}
pub mod rackboot;
