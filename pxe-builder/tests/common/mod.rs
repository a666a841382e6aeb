//! Helpers shared by pxe-builder's integration tests: the binary, the example cluster,
//! a cluster file with its boot files, tree snapshots, and the real DHCP servers' checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pxe-builder"))
}

/// `examples/cluster.toml`.
pub fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster.toml"
    ))
    .unwrap()
}

/// Writes `dir/cluster.toml` with `body`, and the boot files it names.
pub fn write_cluster(dir: &Path, body: &str) -> PathBuf {
    for f in ["vmlinuz", "initrd.img", "vsmp-loader"] {
        std::fs::write(dir.join(f), f).unwrap();
    }
    let p = dir.join("cluster.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// Every file under `dir` with its bytes (empty when `dir` does not exist).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Runs a real DHCP server's own check, `prog args…` (found in /usr/sbin too, which an
/// ordinary user's PATH may lack). `scripts/setup.sh` installs them: a missing one is a
/// failure, not a skip.
pub fn real_check(prog: &str, args: &[&std::ffi::OsStr]) -> Output {
    test_fixtures::root::tool(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{prog} not runnable ({e}); scripts/setup.sh installs dnsmasq-base and isc-dhcp-server"
            )
        })
}
