//! A btrfs master disk (root: loop device, mount): a GPT disk file with one btrfs
//! partition made by `mkfs.btrfs` (its defaults, or mixed block groups), holding the XFS
//! master's tree (modes, owners, xattrs, symlinks, hard links, a FIFO, nanosecond times)
//! and kept bulk data, after bulk data was written, synced and deleted (mounted
//! `nodiscard`, so its blocks still hold incompressible garbage a capture must skip).
//! Also what the tests read back: `btrfs check --readonly`, the superblock's fields.

use crate::disk::{run, snapshot, stdout, Loop};
use crate::root::tool;
use crate::xfs::{identities, write_bulk};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A built master and what it held before it was unmounted.
pub struct BtrfsMaster {
    pub path: PathBuf,
    /// The mounted tree, inode by inode ([`snapshot`]).
    pub tree: BTreeMap<String, String>,
    /// `btrfs filesystem usage -b`'s overall "Used" before unmount: bytes used on the
    /// device, DUP copies counted twice (data + metadata + system).
    pub used: u64,
    /// The superblock's `total_bytes`.
    pub fs_size: u64,
}

/// Builds the master at `path`: one btrfs partition of `part_mib` MiB at 1 MiB made with
/// `mkfs_args` added and mounted with `mount_opts` added to `rw,nodiscard`, `deleted_mib` MiB written, synced and deleted, then `keep_mib` MiB
/// of data (half random, half text) and the sample tree with owners, xattrs and times.
pub fn btrfs_master(
    path: &Path,
    part_mib: u64,
    mkfs_args: &[&str],
    mount_opts: &str,
    keep_mib: u64,
    deleted_mib: u64,
) -> BtrfsMaster {
    std::fs::File::create(path)
        .and_then(|f| f.set_len((part_mib + 2) * MIB))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    run(tool("sgdisk")
        .args(["-o", "-n", &format!("1:2048:+{part_mib}M")])
        .args(["-t", "1:8300", "-c", "1:root"])
        .arg(path));
    let mut l = Loop::attach(path, false);
    let part = l.part(1);
    run(tool("mkfs.btrfs")
        .args(["-q", "-f", "-K", "-L", "btrfsroot"])
        .args(mkfs_args)
        .arg(&part));
    let opts = ["rw,nodiscard", mount_opts].join(",");
    let m = l.mount_opts(1, "btrfs", opts.trim_end_matches(','));
    write_bulk(&m.join("deleted"), deleted_mib, true);
    run(Command::new("sync").arg("-f").arg(&m));
    std::fs::remove_dir_all(m.join("deleted")).expect("deleting the bulk data");
    run(tool("btrfs").args(["filesystem", "sync"]).arg(&m));
    write_bulk(&m.join("data"), keep_mib / 2, true);
    write_bulk(&m.join("text"), keep_mib - keep_mib / 2, false);
    crate::files::sample_tree(&m);
    identities(&m);
    run(tool("btrfs").args(["filesystem", "sync"]).arg(&m));
    let tree = snapshot(&m);
    let usage = stdout(tool("btrfs").args(["filesystem", "usage", "-b"]).arg(&m));
    let used = usage
        .lines()
        .find_map(|l| l.trim().strip_prefix("Used:")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Used in btrfs filesystem usage: {usage}"));
    drop(l);
    let l = Loop::attach(path, true);
    let fs_size = super_field(&l.part(1), "total_bytes");
    drop(l);
    BtrfsMaster {
        path: path.to_path_buf(),
        tree,
        used,
        fs_size,
    }
}

/// A numeric field of the superblock on `dev` (`total_bytes`, `bytes_used`, …) by
/// `btrfs inspect-internal dump-super`.
pub fn super_field(dev: &Path, name: &str) -> u64 {
    let out = stdout(
        tool("btrfs")
            .args(["inspect-internal", "dump-super"])
            .arg(dev),
    );
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in dump-super of {}", dev.display()))
}

/// Asserts `btrfs check --readonly` finds nothing on `dev` (a device or a file).
pub fn assert_check_clean(dev: &Path) {
    let out = tool("btrfs")
        .args(["check", "--readonly"])
        .arg(dev)
        .output()
        .expect("btrfs check");
    assert!(
        out.status.success(),
        "btrfs check --readonly {}: {}\n{}",
        dev.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
