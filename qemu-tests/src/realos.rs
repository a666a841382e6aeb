//! The real-OS tier (issue 12): a real Debian, debootstrapped by `scripts/make-realos.sh`
//! (cached under `target/realos/`), cloned over PXE by the agent and then booted from the
//! node's own disk. This module owns the pieces the tier's tests share:
//!
//! - [`master`]: the cached master disk of a variant (`bios-ext4`, `xfs`, `lvm`), built
//!   once by the script under a lock;
//! - [`dirty_disk`]: a node disk that held other file systems before — LVM2, LUKS, btrfs
//!   and XFS signatures exactly where the clone's partitions will go, under an old GPT;
//! - [`clone_node`]: the PXE clone (BIOS or UEFI firmware) through [`crate::Vm`];
//! - [`DiskVm`]: a second QEMU run that boots the cloned disk itself (`-boot c`, no NIC),
//!   waits for the master's marker line, and is killed by its PID on every exit path;
//! - [`signatures`]: what `blkid -p` finds on a partition (one type, none, or ambivalent).
//!
//! It does not build images or trees (test-fixtures and pxe-builder do).

use crate::{ovmf_drives, tail, Boot, Firmware, Qemu, Vm, IMAGE_SERVER};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use test_fixtures::disk::{repo_root, run, stdout, Loop};
use test_fixtures::lvm::OffsetLoop;
use test_fixtures::root::tool;
use test_fixtures::signatures::{plant, Foreign};

/// The line the master's `netboot-marker.service` prints on ttyS0 before powering off.
pub const MARKER: &str = "NETBOOT-REALOS-MARKER";

/// `NETBOOT_SLOW_TESTS=1`: the slow half of the tier (UEFI, the `xfs` and `lvm` variants).
pub fn slow_tests() -> bool {
    std::env::var("NETBOOT_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// Where the tier keeps its cache and serial logs: `target/realos/` (the script's default).
pub fn cache_dir() -> PathBuf {
    let dir = repo_root().join("target/realos");
    dir.canonicalize().unwrap_or(dir)
}

/// The master disk of `variant`, built by `scripts/make-realos.sh` on first use (minutes:
/// debootstrap) and cached per script version; one build at a time across test processes.
pub fn master(variant: &str) -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("target/realos");
    let lock = File::create(dir.join("build.lock")).expect("lock file");
    lock.lock().expect("locking target/realos/build.lock");
    let out = stdout(
        Command::new("bash")
            .arg(repo_root().join("scripts/make-realos.sh"))
            .arg(variant),
    );
    let disk = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(disk.is_file(), "make-realos.sh printed no disk: {out}");
    disk
}

/// One partition of a disk file, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub number: u32,
    pub start: u64,
    pub size: u64,
}

/// The partitions of a disk file (512-byte sectors), read by `partx` from the file.
pub fn partitions(disk: &Path) -> Vec<Extent> {
    let text = stdout(
        tool("partx")
            .args(["-g", "-o", "NR,START,SECTORS"])
            .arg(disk),
    );
    text.lines()
        .filter_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            match v[..] {
                [n, start, sectors] => Some(Extent {
                    number: n as u32,
                    start: start * 512,
                    size: sectors * 512,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Makes `disk` (`size` bytes) a disk that held other file systems: for the partitions of
/// `master` (1 BIOS boot, 2 ESP, 3 swap, 4 root), an LVM2 PV label at partition 1's start,
/// LUKS2 over the ESP's range, btrfs over the swap's and XFS over the root's, under an old
/// GPT of those three (left in place: the agent sees a foreign layout and repartitions).
/// Returns what it wrote, for messages.
pub fn dirty_disk(disk: &Path, master: &Path, size: u64) -> String {
    let p = partitions(master);
    let by = |n: u32| {
        *p.iter()
            .find(|e| e.number == n)
            .unwrap_or_else(|| panic!("master {} has no partition {n}", master.display()))
    };
    let (bios, esp, swap, root) = (by(1), by(2), by(3), by(4));
    File::create(disk)
        .and_then(|f| f.set_len(size))
        .expect("node disk");
    // The PV runs from partition 1's start into the ESP's range; LUKS then takes the ESP's
    // range, so the PV label (sector 1) stays where the BIOS boot partition will be.
    // Each planted by its own tool and checked to be seen (`plant`): a disk whose old
    // signatures did not land would test nothing.
    plant(
        Foreign::Lvm,
        &OffsetLoop::attach(disk, bios.start, 4 << 20, false).dev,
    );
    let range =
        |n: u32, e: Extent| format!("{n}:{}:{}", e.start / 512, (e.start + e.size) / 512 - 1);
    run(tool("sgdisk")
        .args(["-o", "-n", &range(1, esp), "-t", "1:8309"])
        .args(["-n", &range(2, swap), "-t", "2:8300"])
        .args(["-n", &range(3, root), "-t", "3:8300"])
        .arg(disk));
    let l = Loop::attach(disk, false);
    plant(Foreign::Luks, &l.part(1));
    plant(Foreign::Btrfs, &l.part(2));
    plant(Foreign::Xfs, &l.part(3));
    let found: Vec<String> = [(1, "ESP"), (2, "swap"), (3, "root")]
        .iter()
        .map(|(n, what)| format!("{what}: {:?}", signatures(&l.part(*n))))
        .collect();
    format!("LVM2 PV at the BIOS boot partition; {}", found.join("; "))
}

/// What `blkid -p` finds on a device: `Ok(types)` (empty when nothing), or `Err` with
/// `wipefs -n`'s listing when it finds several ("ambivalent result").
pub fn signatures(dev: &Path) -> Result<Vec<String>, String> {
    let out = tool("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .output()
        .expect("blkid");
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix("TYPE="))
            .map(str::to_string)
            .collect()),
        Some(2) => Ok(vec![]),
        _ => {
            let w = tool("wipefs").arg("-n").arg(dev).output().expect("wipefs");
            Err(format!(
                "blkid -p: {} {}; wipefs -n:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&w.stdout)
            ))
        }
    }
}

/// PXE-boots a node (`firmware`, MAC `mac`, 172.20.0.9) with `disk` as its NVMe disk from
/// `tree`, reaching the image server on the host's `port`; returns its console once the
/// agent powered it off (or panics after `timeout`).
pub fn clone_node(
    firmware: Firmware,
    work: &Path,
    tree: &Path,
    port: u16,
    disk: &Path,
    mac: &str,
    timeout: Duration,
) -> String {
    let mut vm = Vm::start(&Boot {
        firmware,
        tree,
        mac,
        ip: "172.20.0.9",
        netdev_extra: format!(
            ",guestfwd=tcp:{}-cmd:/bin/busybox nc 127.0.0.1 {port}",
            IMAGE_SERVER.trim_start_matches("http://")
        ),
        extra: nvme(disk, false),
        work,
    });
    vm.wait_exit(timeout)
}

/// The node's NVMe disk; `boot`: the firmware's first boot device (a `bootindex` beats
/// `-boot n`, so the PXE run must not have one).
fn nvme(disk: &Path, boot: bool) -> Vec<String> {
    let index = if boot { ",bootindex=0" } else { "" };
    vec![
        "-drive".into(),
        format!("file={},if=none,id=d0,format=raw", disk.display()),
        "-device".into(),
        format!("nvme,drive=d0,serial=realos1{index}"),
    ]
}

/// A QEMU run that boots a disk by itself (`-boot c`, no network), BIOS (SeaBIOS) or UEFI
/// (OVMF); killed by its PID in `Drop`.
pub struct DiskVm {
    qemu: Qemu,
}

impl DiskVm {
    pub fn start(firmware: Firmware, disk: &Path, work: &Path) -> DiskVm {
        let mut args: Vec<String> = ["-m", "1024", "-nic", "none", "-boot", "c"]
            .map(String::from)
            .to_vec();
        if firmware == Firmware::Uefi {
            args.extend(ovmf_drives(&work.join("OVMF_VARS-disk.fd")));
        }
        args.extend(nvme(disk, true));
        let cmd = Command::new("qemu-system-x86_64");
        DiskVm {
            qemu: Qemu::spawn(cmd, &args, work.join("console-disk.log")),
        }
    }

    /// The console output so far.
    pub fn console(&self) -> String {
        self.qemu.console()
    }

    /// Waits until the guest powers off (QEMU exits) or `timeout` passes; returns the
    /// console. A guest that printed the marker but does not go down within a grace is
    /// stopped (the marker is what the test checks); on timeout the console is returned
    /// as it is and the caller's assertion on the marker fails with it.
    pub fn wait(&mut self, timeout: Duration) -> String {
        let start = Instant::now();
        let mut marked: Option<Instant> = None;
        loop {
            if let Ok(Some(_)) = self.qemu.child.try_wait() {
                return self.console();
            }
            if marked.is_none() && self.console().contains(MARKER) {
                marked = Some(Instant::now());
            }
            let overdue = marked.is_some_and(|t| t.elapsed() > crate::POWER_OFF_GRACE);
            if overdue || start.elapsed() > timeout {
                self.qemu.stop();
                let c = self.console();
                if !overdue {
                    eprintln!(
                        "disk boot: no power-off within {timeout:?}; tail:\n{}",
                        tail(&c, 3000)
                    );
                }
                return c;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The marker line's fields after [`MARKER`] (`swap=1 root=ext4`), if the guest printed it.
pub fn marker(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        l.split_once(MARKER)
            .map(|(_, rest)| rest.trim().to_string())
    })
}

/// Keeps a serial log under `target/realos/logs/NAME.log` (kept after the test's temp
/// directory is gone, for failures); returns its path.
pub fn keep_log(name: &str, console: &str) -> PathBuf {
    let dir = cache_dir().join("logs");
    std::fs::create_dir_all(&dir).expect("target/realos/logs");
    let p = dir.join(format!("{name}.log"));
    std::fs::write(&p, console).expect("writing the serial log");
    p
}
