//! Life as PID 1 of the boot ramdisk: mount the kernel file systems, load the modules the
//! initrd lists (in dependency order, with `finit_module`), read the kernel command line,
//! run the boot flow ([`crate::boot`]: network, bootopts, clone), reap orphans, and end
//! with sync + reboot or poweroff. Never panics and never
//! exits (PID 1 exiting panics the kernel): any error is printed with what to do, reported
//! to the server, and the node then waits, reboots or powers off as configured.

use crate::config::{After, Config};
use crate::report::Reporter;
use netboot_proto::status::Phase;
use rustix::io::Errno;
use rustix::mount::MountFlags;
use rustix::process::WaitOptions;
use rustix::system::RebootCommand;
use std::ffi::CStr;
use std::sync::Arc;
use std::time::Duration;

/// Modules to load, one path per line, in order (written by `pxe-builder initrd`).
pub const MODULE_LIST: &str = "/etc/netboot/modules";

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let r = rustix::mount::mount(src, target, fstype, MountFlags::empty(), None::<&CStr>);
    if let Err(e) = r {
        if e != Errno::BUSY {
            println!(
                "netboot: mounting {fstype} on {target}: {}",
                std::io::Error::from(e)
            );
        }
    }
}

fn load_modules(rep: &Reporter) {
    let Ok(list) = std::fs::read_to_string(MODULE_LIST) else {
        return;
    };
    for path in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Ok(f) = std::fs::File::open(path) else {
            rep.say(&format!("module {path} missing from the initrd"));
            continue;
        };
        if let Err(e) = rustix::system::finit_module(&f, c"", 0) {
            if e != Errno::EXIST {
                rep.say(&format!("loading {path}: {}", std::io::Error::from(e)));
            }
        }
    }
}

/// Reaps orphaned children (PID 1's duty).
fn reap() {
    // wait(), not waitpid(None): any child (-1), not only those of our process group.
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

fn finish(after: After, rep: &Reporter) -> ! {
    rustix::fs::sync();
    match after {
        After::Wait => {
            rep.say("waiting (netboot.onerror=wait); fix the problem and power-cycle this node, or use the console");
            loop {
                reap();
                std::thread::sleep(Duration::from_secs(5));
            }
        }
        After::Reboot | After::Poweroff => {
            let (cmd, what) = if after == After::Reboot {
                (RebootCommand::Restart, "rebooting")
            } else {
                (RebootCommand::PowerOff, "powering off")
            };
            rep.say(what);
            // Only returns on failure.
            let _ = rustix::system::reboot(cmd);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
}

/// Whether this process is PID 1 (the kernel's init).
pub fn is_pid1() -> bool {
    rustix::process::getpid().is_init()
}

/// What failed, for the console's banner: the mode's work (a diskless node clones
/// nothing, so its banner must not say CLONE).
fn failed_what(mode: &str) -> &'static str {
    match mode {
        "backup" => "BACKUP",
        "diskless" | "vsmp-diskless" => "DISKLESS BOOT",
        _ => "CLONE",
    }
}

/// The board's failure message: a diskless node's says so first (the board shows clone
/// and diskless nodes side by side); the others' is the error as before.
fn board_message(mode: &str, error: &str) -> String {
    match mode {
        "diskless" | "vsmp-diskless" => format!("diskless boot failed: {error}"),
        _ => error.to_string(),
    }
}

/// Runs as PID 1; never returns.
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        println!("netboot: internal error: {info}");
    }));
    // The kernel starts init without PATH; e2fsprogs live in /sbin. Still one thread here.
    std::env::set_var("PATH", "/sbin:/bin:/usr/sbin:/usr/bin");
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/run", "tmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    let mut rep = Arc::new(Reporter::new(None, String::new()));
    rep.say(&format!(
        "initrd-agent {} starting",
        env!("CARGO_PKG_VERSION")
    ));
    load_modules(&rep);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut cfg = match Config::from_cmdline(&cmdline) {
        Ok(c) => c,
        Err(e) => {
            rep.say(&format!("error: {e}"));
            finish(After::Wait, &rep);
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::boot::run(&mut cfg, &mut rep)
    }));
    reap();
    match outcome {
        Ok(Ok(())) => finish(cfg.on_done, &rep),
        Ok(Err(e)) => {
            let what = failed_what(&cfg.mode);
            println!("\n==================== netboot: {what} FAILED ====================");
            println!("{e:#}");
            println!("================================================================\n");
            rep.phase(Phase::Failed, &board_message(&cfg.mode, &format!("{e:#}")));
            finish(cfg.on_error, &rep)
        }
        Err(_) => {
            rep.phase(Phase::Failed, "internal error (see the console)");
            finish(cfg.on_error, &rep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_diskless_boot_says_so_on_the_console_and_the_board() {
        for mode in ["diskless", "vsmp-diskless"] {
            assert_eq!(failed_what(mode), "DISKLESS BOOT");
            assert_eq!(
                board_message(mode, "chunk 1"),
                "diskless boot failed: chunk 1"
            );
        }
        assert_eq!(failed_what("clone"), "CLONE");
        assert_eq!(failed_what("backup"), "BACKUP");
        assert_eq!(board_message("clone", "chunk 1"), "chunk 1");
    }
}
