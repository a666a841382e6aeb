//! btrfs: the used-byte probe on real file systems and the round trip through an image.
//!
//! Rootless: `mkfs.btrfs --rootdir` builds the file system in a plain file whose free
//! space holds garbage; only the ranges the probe reports are copied into a zeroed file,
//! and that copy must pass `btrfs check --readonly` and give back the tree
//! (`btrfs restore`), with the garbage left out. Mixed block groups, DUP metadata and
//! single metadata are each made.
//!
//! Root: a GPT master with a mounted-and-written btrfs (modes, owners, xattrs, symlinks,
//! hard links; 120 MiB written then deleted) captured, restored onto an equal disk and a
//! 1.5× disk: checked, trees equal, grown.

mod common;
use common::*;
use imgtool::disk::Disk;
use imgtool::fs::{btrfs, Fill, FsInfo, PartView};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use test_fixtures::files::{contents, garbage, sample_tree, zeros};

const MIB: u64 = 1 << 20;
const UUID: &str = "b7f5a8e2-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

/// Probes the whole file `file` as one partition.
fn probe_file(file: &Path) -> FsInfo {
    let disk = Disk::open_ro(file).unwrap();
    let size = std::fs::metadata(file).unwrap().len();
    let view = PartView {
        disk: &disk,
        start: 0,
        size,
    };
    btrfs::probe(&view)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: not recognised", file.display()))
}

/// A zeroed file as long as `src` holding only `used` of `src`.
fn only_used(src: &Path, used: &[(u64, u64)], out: &Path) {
    let size = std::fs::metadata(src).unwrap().len();
    zeros(out, size);
    let (s, d) = (
        std::fs::File::open(src).unwrap(),
        std::fs::OpenOptions::new().write(true).open(out).unwrap(),
    );
    let mut buf = vec![0u8; 4 << 20];
    for &(o, l) in used {
        let mut at = 0;
        while at < l {
            let n = (l - at).min(buf.len() as u64) as usize;
            s.read_exact_at(&mut buf[..n], o + at).unwrap();
            d.write_all_at(&buf[..n], o + at).unwrap();
            at += n as u64;
        }
    }
}

/// `btrfs check --readonly` passes on `dev` (a file or a device).
pub fn btrfs_check(dev: &Path) {
    let out = tool("btrfs")
        .args(["check", "--readonly"])
        .arg(dev)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btrfs check {}: {}{}",
        dev.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A superblock field of `dump-super`, as a number.
fn super_field(dev: &Path, name: &str) -> u64 {
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

fn rootless_roundtrip(mkfs_args: &[&str]) {
    let dir = tempfile::tempdir_in(target_tmp()).unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree);
    std::fs::remove_file(tree.join("srv/fifo")).unwrap();
    let file = dir.path().join("fs.img");
    garbage(&file, 256 * MIB);
    run(tool("mkfs.btrfs")
        .args(["-q", "-f", "-K", "-L", "broot", "-U", UUID])
        .args(mkfs_args)
        .arg("-r")
        .arg(&tree)
        .arg(&file));
    let info = probe_file(&file);
    assert_eq!(
        (
            info.kind.as_str(),
            info.fill,
            info.uuid.as_deref(),
            info.label.as_deref()
        ),
        ("btrfs", Fill::Keep, Some(UUID), Some("broot")),
        "{mkfs_args:?}: {info:?}"
    );
    let stored: u64 = info.used.iter().map(|r| r.1).sum();
    let used = super_field(&file, "bytes_used");
    eprintln!("{mkfs_args:?}: probe {stored} bytes, superblock bytes_used {used}");
    // The garbage in free space (most of the 256 MiB) stays out.
    assert!(
        stored <= used + used / 7 + 16 * MIB,
        "{mkfs_args:?}: {stored} stored for {used} used"
    );
    let copy = dir.path().join("copy.img");
    only_used(&file, &info.used, &copy);
    btrfs_check(&copy);
    let out = dir.path().join("restored");
    std::fs::create_dir(&out).unwrap();
    run(tool("btrfs")
        .args(["restore", "-m", "-S", "-x"])
        .arg(&copy)
        .arg(&out));
    assert_eq!(contents(&out), contents(&tree), "{mkfs_args:?}");
}

#[test]
fn the_probe_of_a_mixed_btrfs_holds_its_tree_and_leaves_garbage_out() {
    rootless_roundtrip(&["--mixed"]);
}

#[test]
fn the_probe_of_a_btrfs_with_dup_metadata_holds_its_tree_and_leaves_garbage_out() {
    rootless_roundtrip(&["-m", "dup", "-d", "single"]);
}

#[test]
fn the_probe_of_a_btrfs_with_single_metadata_holds_its_tree_and_leaves_garbage_out() {
    rootless_roundtrip(&["-m", "single", "-d", "single"]);
}
