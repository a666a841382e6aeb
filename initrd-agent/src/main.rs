//! initrd-agent: PID 1 of the boot ramdisk (not built yet; see the initrd-agent issue).
//!
//! Until that issue lands this binary only says so and fails, so nobody mistakes it for
//! a working agent.

fn main() -> std::process::ExitCode {
    eprintln!("initrd-agent: not implemented yet; use `imgtool restore` to clone a disk by hand");
    std::process::ExitCode::from(2)
}
