//! LVM2 on disk files, for tests that run as root: a GPT disk with one LVM partition
//! ([`lvm_master`]: a VG with an ext4 root LV holding a tree with owners, modes and
//! xattrs, a swap LV, and free extents full of a removed LV's garbage), loop devices at
//! byte offsets ([`OffsetLoop`], detached in `Drop`), and the host's lvm2 run against one
//! device only ([`lvm`]: `--devices DEV`, so a master and its clone, which share UUIDs,
//! are never both visible).
//!
//! The host kernel here has no device-mapper: LVs are never activated. LVM's commands
//! run with `--driverloaded n`, and an LV is reached through a loop device over its
//! extents, which [`lv_extents`] reads from `lvs`.

use crate::disk::{run, stdout};
use crate::files::garbage;
use crate::root::tool;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;

/// A loop device over `size` bytes at `offset` of a file; detached in `Drop`.
pub struct OffsetLoop {
    pub dev: PathBuf,
    mount: Option<PathBuf>,
}

impl OffsetLoop {
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> OffsetLoop {
        let mut c = tool("losetup");
        c.args(["-f", "--show", "-o", &offset.to_string()])
            .args(["--sizelimit", &size.to_string()]);
        if read_only {
            c.arg("-r");
        }
        OffsetLoop {
            dev: PathBuf::from(stdout(c.arg(file)).trim()),
            mount: None,
        }
    }

    /// Mounts the device with `options` on a fresh directory (unmounted in `Drop`).
    pub fn mount(&mut self, options: &str) -> PathBuf {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", options])
            .arg(&self.dev)
            .arg(&dir));
        self.mount = Some(dir.clone());
        dir
    }

    pub fn umount(&mut self) {
        if let Some(m) = self.mount.take() {
            run(Command::new("umount").arg(&m));
            let _ = std::fs::remove_dir(&m);
        }
    }
}

impl Drop for OffsetLoop {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if !Command::new("umount")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success())
            {
                let _ = Command::new("umount").arg("-l").arg(&m).output();
            }
            let _ = std::fs::remove_dir(&m);
        }
        let _ = tool("losetup").arg("-d").arg(&self.dev).output();
    }
}

/// An lvm2 command (`pvs`, `vgck`, …) that sees `dev` only and never talks to
/// device-mapper; its output, whatever its status.
pub fn lvm(cmd: &str, dev: &Path, args: &[&str]) -> Output {
    tool(cmd)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .arg("--devices")
        .arg(dev)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// As [`lvm`], panicking with its output when it fails; its stdout.
pub fn lvm_ok(cmd: &str, dev: &Path, args: &[&str]) -> String {
    let out = lvm(cmd, dev, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} on {} failed: {}{}",
        dev.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

/// `(byte offset in the PV, byte length)` of each extent range of LV `lv`, from `lvs`.
pub fn lv_extents(pv: &Path, vg: &str, lv: &str) -> Vec<(u64, u64)> {
    let num = |cmd: &str, field: &str, name: &str| -> u64 {
        let s = lvm_ok(
            cmd,
            pv,
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                field,
                name,
            ],
        );
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{field}: {s:?}"))
    };
    let pe_start = num("pvs", "pe_start", &pv.display().to_string());
    let extent = num("vgs", "vg_extent_size", vg);
    let ranges = lvm_ok(
        "lvs",
        pv,
        &["--noheadings", "-o", "seg_pe_ranges", &format!("{vg}/{lv}")],
    );
    // `/dev/loop3:0-15` per segment (one per line; several in one line when striped).
    ranges
        .split_whitespace()
        .map(|r| {
            let (_, pes) = r.rsplit_once(':').expect("PV:first-last");
            let (a, b) = pes.split_once('-').expect("first-last");
            let (a, b): (u64, u64) = (a.parse().expect("pe"), b.parse().expect("pe"));
            (pe_start + a * extent, (b - a + 1) * extent)
        })
        .collect()
}

/// The LVM master of [`lvm_master`].
pub struct LvmMaster {
    pub path: PathBuf,
    /// The LVM partition's byte offset and size on the disk.
    pub part: (u64, u64),
    pub vg: String,
    /// The root LV's tree as `disk::snapshot` reads it from the mounted file system.
    pub root_tree: std::collections::BTreeMap<String, String>,
    /// The root ext4's used bytes ((blocks − free blocks) × block size, from dumpe2fs).
    pub root_used: u64,
    pub swap_uuid: String,
}

/// Builds `dir/master.img`: GPT, partition 1 (type 8e00, `part_mib` MiB at 1 MiB) a PV
/// of VG `vg` (4 MiB extents) with `root` (64 MiB ext4: `files::sample_tree` plus a
/// foreign owner, modes and xattrs; 20 MiB of garbage written then deleted inside it)
/// and `swap` (16 MiB); a 48 MiB LV `tmp` filled with garbage and removed, so its
/// extents are free but not zero. Root only.
pub fn lvm_master(dir: &Path, vg: &str, part_mib: u64) -> LvmMaster {
    let path = dir.join("master.img");
    let size = (part_mib + 2) * MIB;
    run(Command::new("truncate")
        .args(["-s", &size.to_string()])
        .arg(&path));
    run(tool("sgdisk")
        .args(["-o", "-n", &format!("1:2048:+{part_mib}M"), "-t", "1:8e00"])
        .arg(&path));
    let part = (MIB, part_mib * MIB);
    let pv = OffsetLoop::attach(&path, part.0, part.1, false);
    let d = &pv.dev;
    lvm_ok("pvcreate", d, &[&d.display().to_string()]);
    lvm_ok("vgcreate", d, &["-s", "4m", vg, &d.display().to_string()]);
    for (lv, mib) in [("root", 64), ("swap", 16), ("tmp", 48)] {
        let size = format!("{mib}m");
        lvm_ok(
            "lvcreate",
            d,
            &[
                "--driverloaded",
                "n",
                "-an",
                "-Zn",
                "-L",
                &size,
                "-n",
                lv,
                vg,
            ],
        );
    }
    let lv = |name: &str| -> OffsetLoop {
        let e = lv_extents(d, vg, name);
        assert_eq!(e.len(), 1, "{name} is one segment");
        OffsetLoop::attach(&path, part.0 + e[0].0, e[0].1, false)
    };
    {
        let tmp = lv("tmp");
        let junk = dir.join("junk");
        garbage(&junk, 48 * MIB);
        run(Command::new("dd")
            .arg(format!("if={}", junk.display()))
            .arg(format!("of={}", tmp.dev.display()))
            .args(["bs=1M", "oflag=direct", "status=none"]));
        std::fs::remove_file(&junk).expect("rm junk");
    }
    lvm_ok(
        "lvremove",
        d,
        &["--driverloaded", "n", "-f", &format!("{vg}/tmp")],
    );
    let swap_uuid = "5a1e2c3d-0000-4000-8000-00000000beef".to_string();
    {
        let swap = lv("swap");
        run(tool("mkswap")
            .args(["-L", "lvswap", "-U", &swap_uuid])
            .arg(&swap.dev));
    }
    let (root_tree, root_used) = make_root(dir, lv("root"));
    drop(pv);
    LvmMaster {
        path,
        part,
        vg: vg.into(),
        root_tree,
        root_used,
        swap_uuid,
    }
}

/// ext4 on the root LV (its free blocks first filled with garbage), the tree copied in,
/// a garbage file written and deleted; returns the tree and the used bytes.
fn make_root(
    dir: &Path,
    mut root: OffsetLoop,
) -> (std::collections::BTreeMap<String, String>, u64) {
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", root.dev.display()))
        .args(["bs=1M", "count=64", "status=none"]));
    run(tool("mkfs.ext4")
        .args(["-q", "-F", "-E", "nodiscard", "-L", "lvroot"])
        .arg(&root.dev));
    let tree = dir.join("tree");
    crate::files::sample_tree(&tree);
    let m = root.mount("rw");
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", tree.display()))
        .arg(&m));
    run(Command::new("chown")
        .args(["-R", "1234:5678"])
        .arg(m.join("home/alice")));
    run(Command::new("chmod").arg("4755").arg(m.join("srv/empty")));
    run(Command::new("setfattr")
        .args(["-n", "user.role", "-v", "master"])
        .arg(m.join("srv/big.log")));
    run(Command::new("setfattr")
        .args(["-n", "trusted.fixture", "-v", "yes"])
        .arg(m.join("home/alice/note.txt")));
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", m.join("deleted.bin").display()))
        .args(["bs=1M", "count=20", "status=none"]));
    run(&mut Command::new("sync"));
    std::fs::remove_file(m.join("deleted.bin")).expect("rm deleted.bin");
    root.umount();
    // The tree as a read-only mount shows it (what the clone's check sees too).
    let mm = root.mount("ro,noload");
    let snap = crate::disk::snapshot(&mm);
    root.umount();
    let used = ext_used(&root.dev);
    (snap, used)
}

/// Used bytes of the ext file system on `dev`: (blocks − free blocks) × block size.
pub fn ext_used(dev: &Path) -> u64 {
    let out = stdout(tool("dumpe2fs").arg("-h").arg(dev));
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("dumpe2fs: no {name}"))
    };
    (field("Block count:") - field("Free blocks:")) * field("Block size:")
}
