//! qemu-tests: a harness that boots real firmware (SeaBIOS + iPXE ROM, or OVMF), real
//! pxelinux or GRUB from a built boot tree, a real kernel and an initrd, under QEMU with
//! user networking `restrict=on` (the guest reaches nothing but QEMU's own DHCP/TFTP and
//! the doors a test opens with `guestfwd`).
//!
//! - [`Vm`] runs one QEMU process, captures its serial console, waits for a marker, and
//!   kills the process (by its PID, only ours) in `Drop`, even when a test fails.
//! - [`kernel`] finds the boot kernel; [`cmdline_initrd`] builds a tiny initrd that prints
//!   the kernel command line and powers off — proof of what the boot entry set.
//! - [`realnet`]: the other networking mode — the node's NIC on a tap in network
//!   namespaces the test creates, with real dnsmasq, ISC dhcpd + tftpd-hpa and a router
//!   running ISC dhcrelay ([`Vm::start_on_tap`]).
//!
//! TCG is the default; set `NETBOOT_QEMU_ACCEL=kvm` to opt in to KVM where it works.

pub mod realnet;
pub mod realos;

// The image server and nginx are test fixtures, not QEMU: the agent's tests use them too.
pub use test_fixtures::servers::{serve_in_background, Nginx};
// A boot takes minutes under TCG and reads the boot kernel: the QEMU tests belong to the
// root pass (scripts/test.sh) and skip in the rootless one.
pub use test_fixtures::skip_unless_root;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Marker the cmdline initrd prints before the command line.
pub const CMDLINE_MARKER: &str = "NETBOOT-CMDLINE:";

/// The boot kernel: `NETBOOT_KERNEL`, else the newest Debian cloud kernel in /boot.
pub fn kernel() -> PathBuf {
    if let Ok(k) = std::env::var("NETBOOT_KERNEL") {
        return PathBuf::from(k);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("no /boot/vmlinuz-*-cloud-amd64: install the Debian package linux-image-cloud-amd64 (scripts/setup.sh does)")
}

/// An initrd whose `/init` prints `NETBOOT-CMDLINE: <cmdline>` on the console and powers off.
pub fn cmdline_initrd() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox: install busybox-static");
    let mut c = pxe_builder::cpio::Cpio::new();
    let script = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho \"{CMDLINE_MARKER} $(/bin/busybox cat /proc/cmdline)\"\n/bin/busybox poweroff -f\n"
    );
    for d in ["bin", "dev", "proc"] {
        c.dir(d).expect("cpio dir");
    }
    c.char_device("dev/console", 0o600, 5, 1)
        .expect("cpio console");
    c.file("bin/busybox", 0o755, &busybox)
        .expect("cpio busybox");
    c.file("init", 0o755, script.as_bytes()).expect("cpio init");
    c.finish()
}

/// Firmware of a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS + the NIC's iPXE option ROM → pxelinux.0
    Bios,
    /// OVMF's own network stack → GRUB's core.efi
    Uefi,
}

/// What to boot.
pub struct Boot<'a> {
    pub firmware: Firmware,
    pub tree: &'a Path,
    pub mac: &'a str,
    /// The address QEMU's DHCP hands this (only) guest.
    pub ip: &'a str,
    /// Extra `-netdev user` options (e.g. `guestfwd=...`).
    pub netdev_extra: String,
    /// Extra QEMU arguments (disks, memory).
    pub extra: Vec<String>,
    pub work: &'a Path,
}

/// A QEMU process of ours and its console log; stopped by its PID in `Drop`. The one
/// process holder of [`Vm`] (PXE boots), [`realos::DiskVm`] (disk boots) and the tests
/// that start QEMU their own way.
pub struct Qemu {
    pub child: Child,
    log: PathBuf,
}

impl Qemu {
    /// Runs `cmd` (QEMU, or a wrapper that execs it) with the options every test VM has
    /// (accelerator from `NETBOOT_QEMU_ACCEL`, no display, no reboot) and then `args`
    /// (memory, devices); its console (stdout and stderr) goes to the file `log`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(mut cmd: Command, args: &[S], log: PathBuf) -> Qemu {
        let accel = std::env::var("NETBOOT_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let common = ["-accel", &accel, "-nographic", "-no-reboot"];
        let out = File::create(&log).expect("console log");
        let err = out.try_clone().expect("console log");
        let child = cmd
            .args(common)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("qemu-system-x86_64: install qemu-system-x86 (scripts/setup.sh does)");
        Qemu { child, log }
    }

    /// The console output so far.
    pub fn console(&self) -> String {
        let mut b = vec![];
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_end(&mut b);
        }
        String::from_utf8_lossy(&b).to_string()
    }

    /// Stops QEMU (by its PID) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Only our own process, by its PID.
            self.stop();
        }
    }
}

/// The OVMF (UEFI) firmware as two pflash drives: its code read-only, and a private copy
/// of its variables at `vars`.
pub(crate) fn ovmf_drives(vars: &Path) -> Vec<String> {
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", vars)
        .expect("/usr/share/OVMF/OVMF_VARS_4M.fd: install the Debian package ovmf");
    vec![
        "-drive".into(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

/// A running VM.
pub struct Vm {
    qemu: Qemu,
}

impl Vm {
    /// Boots `b` on QEMU user networking (`restrict=on`, QEMU's own DHCP hands out `b.ip`,
    /// its TFTP serves `b.tree`).
    pub fn start(b: &Boot) -> Vm {
        let bootfile = match b.firmware {
            Firmware::Bios => "pxelinux.0",
            Firmware::Uefi => pxe_builder::dhcp::GRUB_EFI,
        };
        let netdev = format!(
            "user,id=n0,net=172.20.0.0/24,dhcpstart={},restrict=on,tftp={},bootfile={bootfile}{}",
            b.ip,
            b.tree.display(),
            b.netdev_extra
        );
        Self::spawn(Command::new("qemu-system-x86_64"), b, netdev)
    }

    /// Boots `b` with its NIC on the existing tap `tap` of network namespace `ns` (QEMU
    /// runs inside `ns`); the servers on that network decide the address and boot files,
    /// so `b.ip`, `b.tree` and `b.netdev_extra` are not used.
    pub fn start_on_tap(b: &Boot, ns: &str, tap: &str) -> Vm {
        let mut cmd = Command::new("ip");
        // `ip netns exec` execs QEMU itself: the child's PID is QEMU's.
        cmd.args(["netns", "exec", ns, "qemu-system-x86_64"]);
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
        Self::spawn(cmd, b, netdev)
    }

    fn spawn(cmd: Command, b: &Boot, netdev: String) -> Vm {
        let mut args: Vec<String> = vec!["-m".into(), "1024".into(), "-netdev".into(), netdev];
        match b.firmware {
            Firmware::Bios => {
                args.extend([
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n0,mac={}", b.mac),
                ]);
                args.extend(["-boot".into(), "n".into()]);
            }
            Firmware::Uefi => {
                args.extend(ovmf_drives(&b.work.join("OVMF_VARS.fd")));
                args.extend([
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n0,mac={},romfile=", b.mac),
                    "-boot".into(),
                    "n".into(),
                ]);
            }
        }
        args.extend(b.extra.iter().cloned());
        let log = b
            .work
            .join(format!("console-{}.log", b.mac.replace(':', "")));
        Vm {
            qemu: Qemu::spawn(cmd, &args, log),
        }
    }

    /// The console output so far.
    pub fn console(&self) -> String {
        self.qemu.console()
    }

    /// Waits until QEMU exits or `timeout` passes; returns the console. Panics with the
    /// console's tail on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> String {
        let start = Instant::now();
        let mut last_word: Option<Instant> = None;
        loop {
            if let Ok(Some(_)) = self.qemu.child.try_wait() {
                return self.console();
            }
            // The agent's last word before `reboot(2)`: everything a test checks is done.
            // Seen under TCG: the guest kernel then soft-locks in virtio_net's poll on the
            // way down and never powers off. Not the product's doing; stop the VM (by its
            // PID) after a grace and say so, instead of failing on the timeout.
            if last_word.is_none() {
                let c = self.console();
                if c.contains("netboot: powering off") || c.contains("netboot: rebooting") {
                    last_word = Some(Instant::now());
                }
            }
            if last_word.is_some_and(|t| t.elapsed() > POWER_OFF_GRACE) {
                self.qemu.stop();
                eprintln!(
                    "note: the guest kernel did not power off within {POWER_OFF_GRACE:?} of the agent's last word; VM stopped"
                );
                return self.console();
            }
            if start.elapsed() > timeout {
                let c = self.console();
                panic!(
                    "VM did not finish within {timeout:?}; console tail:
{}",
                    tail(&c, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// How long a VM may take to go down after the agent asked the kernel to power off or
/// reboot (a TCG boot to the agent takes ~10 s; going down takes a second or two).
pub const POWER_OFF_GRACE: Duration = Duration::from_secs(45);

/// The kernel command line the cmdline initrd printed.
pub fn printed_cmdline(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        l.split_once(CMDLINE_MARKER)
            .map(|(_, c)| c.trim().to_string())
    })
}

/// The static agent: `NETBOOT_AGENT`, else built by `scripts/build-agent.sh`.
pub fn agent() -> PathBuf {
    if let Some(p) = std::env::var_os("NETBOOT_AGENT") {
        return PathBuf::from(p);
    }
    let out = Command::new(test_fixtures::disk::repo_root().join("scripts/build-agent.sh"))
        .output()
        .expect("running scripts/build-agent.sh");
    assert!(
        out.status.success(),
        "scripts/build-agent.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The boot initrd (`pxe-builder initrd` logic) for `kernel`, with the static agent.
pub fn agent_initrd(kernel: &Path) -> Vec<u8> {
    agent_initrd_trusting(kernel, &[])
}

/// [`agent_initrd`] with image-signing public keys (`pxe-builder initrd --trust`).
pub fn agent_initrd_trusting(kernel: &Path, trusted: &[PathBuf]) -> Vec<u8> {
    let release = kernel
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    // Debian's kernel needs its virtio_net module; our own kernel has it built in.
    let required = if Path::new("/lib/modules").join(&release).is_dir() {
        vec!["virtio_net".to_string()]
    } else {
        vec![]
    };
    let mut spec = pxe_builder::initrd::Spec::for_kernel(
        &agent(),
        kernel,
        Path::new("/lib/modules"),
        required,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    spec.trusted = trusted.to_vec();
    pxe_builder::initrd::build(&spec)
        .unwrap_or_else(|e| panic!("building the initrd: {e}"))
        .0
}

/// The last `n` characters of a console log.
pub fn tail(console: &str, n: usize) -> String {
    let skip = console.chars().count().saturating_sub(n);
    console.chars().skip(skip).collect()
}

/// The guest address of the host's image server in the one-node clone tests
/// ([`one_node_tree`], [`boot_bios_node`]): QEMU's `guestfwd` maps it to a local port.
pub const IMAGE_SERVER: &str = "http://172.20.0.100:8080";

/// Writes `work/cluster.toml` for one node (`node`, `mac`, 172.20.0.9) in entity `rack1`,
/// group `compute`, served from [`IMAGE_SERVER`], booting `kernel` + `initrd` with a
/// console on ttyS0 and power-off when done or failed; builds its tree into `work/tree`.
pub fn one_node_tree(work: &Path, node: &str, mac: &str, kernel: &Path, initrd: &Path) -> PathBuf {
    let toml = format!(
        r#"[cluster]
name = "{node}-test"
image_server = "{IMAGE_SERVER}"
server_ip = "172.20.0.2"
kernel = "{}"
initrd = "{}"
kernel_args = "console=ttyS0 panic=-1 netboot.done=poweroff netboot.onerror=poweroff"

[[entity]]
name = "rack1"
subnet = "172.20.0.0/27"
gateway = "172.20.0.2"
default_group = "compute"

[[group]]
name = "compute"

[[node]]
name = "{node}"
mac = "{mac}"
ip = "172.20.0.9"
entity = "rack1"
groups = ["compute"]
"#,
        kernel.display(),
        initrd.display()
    );
    tree_from_toml(work, &toml)
}

/// Writes `toml` as `work/cluster.toml` and builds its boot tree into `work/tree`, as
/// `pxe-builder build` does; returns the tree.
pub fn tree_from_toml(work: &Path, toml: &str) -> PathBuf {
    let path = work.join("cluster.toml");
    std::fs::write(&path, toml).expect("writing cluster.toml");
    let cluster = pxe_builder::model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tree = work.join("tree");
    pxe_builder::tree::build(&cluster, &tree).unwrap_or_else(|e| panic!("{e}"));
    tree
}

/// Boots one BIOS node (SeaBIOS + iPXE ROM → pxelinux from `tree`) with MAC `mac` and
/// `disk` as its NVMe disk (serial `serial`), reaching the image server on the host's
/// `port` as [`IMAGE_SERVER`]; returns its console once it powered off (or `timeout`).
pub fn boot_bios_node(
    work: &Path,
    tree: &Path,
    port: u16,
    disk: &Path,
    mac: &str,
    serial: &str,
    timeout: std::time::Duration,
) -> String {
    let mut vm = Vm::start(&Boot {
        firmware: Firmware::Bios,
        tree,
        mac,
        ip: "172.20.0.9",
        netdev_extra: format!(
            ",guestfwd=tcp:172.20.0.100:8080-cmd:/bin/busybox nc 127.0.0.1 {port}"
        ),
        extra: vec![
            "-drive".into(),
            format!("file={},if=none,id=d0,format=raw", disk.display()),
            "-device".into(),
            format!("nvme,drive=d0,serial={serial}"),
        ],
        work,
    });
    vm.wait_exit(timeout)
}
