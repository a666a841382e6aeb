//! Who may run what: tests that need root (loop devices, mounts, network namespaces, the
//! QEMU boots) start with [`skip_unless_root!`](crate::skip_unless_root), which returns
//! early with a line on stderr when the test runs as an ordinary user, so that
//! `cargo test --workspace` passes without root and says what it did not run.

use std::path::PathBuf;
use std::process::Command;

/// True when the effective user is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The line a skipped test prints on stderr (`cargo test` shows it with `--nocapture`;
/// `scripts/test-rootless.sh` counts the tests that skipped).
pub fn skip_message(why: &str) -> String {
    format!("skipped: needs root ({why})")
}

/// Returns from the calling test (after a line on stderr naming what it needs) unless it
/// runs as root: `skip_unless_root!("loop devices");`.
#[macro_export]
macro_rules! skip_unless_root {
    ($why:expr) => {
        if !$crate::root::is_root() {
            eprintln!("{}", $crate::root::skip_message($why));
            return;
        }
    };
}

/// A command for an administration tool (`sgdisk`, `mke2fs`, `blkid`, …): found on `PATH`,
/// else in `/usr/sbin` or `/sbin`, which an ordinary user's `PATH` often lacks (Debian).
pub fn tool(program: &str) -> Command {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if on_path {
        return Command::new(program);
    }
    let found = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file());
    Command::new(found.unwrap_or_else(|| PathBuf::from(program)))
}
