//! Life as PID 1 of the boot ramdisk: mount the kernel file systems, load the modules the
//! initrd lists (in dependency order, with `finit_module`), read the configuration, bring
//! up the network, clone, and end with sync + reboot or poweroff. Never panics and never
//! exits (PID 1 exiting panics the kernel): any error is printed with what to do, reported
//! to the server, and the node then waits, reboots or powers off as configured.

use crate::config::{After, Config};
use crate::report::Reporter;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

/// Modules to load, one path per line, in order (written by `pxe-builder initrd`).
pub const MODULE_LIST: &str = "/etc/netboot/modules";

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(src),
        CString::new(target),
        CString::new(fstype),
    );
    if let (Ok(s), Ok(t), Ok(f)) = (s, t, f) {
        // SAFETY: valid NUL-terminated strings; no data argument.
        let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                println!("netboot: mounting {fstype} on {target}: {e}");
            }
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
        use std::os::unix::io::AsRawFd;
        let params = c"";
        // SAFETY: finit_module(fd, params, flags) with a valid fd and NUL-terminated params.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                rep.say(&format!("loading {path}: {e}"));
            }
        }
    }
}

/// Reaps orphaned children (PID 1's duty).
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: plain syscall.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

fn finish(after: After, rep: &Reporter) -> ! {
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
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
                (libc::RB_AUTOBOOT, "rebooting")
            } else {
                (libc::RB_POWER_OFF, "powering off")
            };
            rep.say(what);
            // SAFETY: plain syscall; only returns on failure.
            unsafe { libc::reboot(cmd) };
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
}

/// The initrd's trusted image-signing keys (`pxe-builder initrd --trust`). A key that
/// cannot be read stops the clone: dropping it silently would turn the check off.
fn trusted_keys(rep: &Reporter) -> anyhow::Result<Vec<imgtool::sign::PublicKey>> {
    let dir = std::path::Path::new(netboot_proto::initrd::TRUSTED_DIR);
    if !dir.is_dir() {
        rep.say("no trusted keys in this initrd: images are checked for integrity, not origin");
        return Ok(vec![]);
    }
    let keys = imgtool::sign::load_trusted(&[dir.to_path_buf()])?;
    if keys.is_empty() {
        rep.say(&format!(
            "{} holds no key: images are checked for integrity, not origin",
            dir.display()
        ));
        return Ok(keys);
    }
    rep.say(&format!(
        "trusted image-signing keys: {}",
        keys.iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(keys)
}

fn work(cfg: &mut Config, rep: &mut Arc<Reporter>) -> anyhow::Result<()> {
    crate::bring_up_network(cfg, rep)?;
    crate::resolve_config(cfg, rep)?;
    if let Some(r) = Arc::get_mut(rep) {
        r.set_server(
            cfg.server.clone(),
            cfg.node
                .clone()
                .unwrap_or_else(|| cfg.mac.clone().unwrap_or_default()),
        );
    }
    match cfg.mode.as_str() {
        "clone" => {
            let server = cfg.server.clone().ok_or_else(|| anyhow::anyhow!("no image server"))?;
            let image = cfg.image_name().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no group or image for this node"))?;
            let cands = crate::target::list_disks(std::path::Path::new("/sys/block"));
            let t = crate::target::select(&cands, cfg.target.as_deref()).map_err(anyhow::Error::msg)?;
            rep.say(&format!("target disk: {t}"));
            let mut route = crate::plan_route(cfg, &server)?;
            route.trusted = trusted_keys(rep)?;
            route.image_id = cfg.image_id.clone();
            crate::clone::clone(&route, &image, &t.path, rep)?;
            Ok(())
        }
        other => anyhow::bail!(
            "netboot.mode={other} is not handled by this agent version (it clones disk-based groups); boot this node with a clone entry"
        ),
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
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut cfg, &mut rep)));
    reap();
    match outcome {
        Ok(Ok(())) => finish(cfg.on_done, &rep),
        Ok(Err(e)) => {
            println!("\n==================== netboot: CLONE FAILED ====================");
            println!("{e:#}");
            println!("================================================================\n");
            rep.phase("failed", &format!("{e:#}"));
            finish(cfg.on_error, &rep)
        }
        Err(_) => {
            rep.phase("failed", "internal error (see the console)");
            finish(cfg.on_error, &rep)
        }
    }
}
