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
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use test_fixtures::btrfs::{assert_check_clean, btrfs_master, super_field};
use test_fixtures::files::{contents, garbage, sample_tree, zeros};
use test_fixtures::image::region_used;

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
    assert_check_clean(&copy);
    let out = dir.path().join("restored");
    std::fs::create_dir(&out).unwrap();
    // `btrfs restore -m` sets owners, modes and times, which an ordinary user cannot
    // (chown fails); without root only the files, their kinds and contents are compared
    // (root compares permissions too; the root tests below compare whole inodes).
    let root = test_fixtures::root::is_root();
    let metadata: &[&str] = if root { &["-m"] } else { &[] };
    run(tool("btrfs")
        .arg("restore")
        .args(metadata)
        .args(["-S", "-x"])
        .arg(&copy)
        .arg(&out));
    let view = |t: &Path| -> BTreeMap<String, String> {
        contents(t)
            .into_iter()
            .map(|(k, v)| match v.split(" perm=").next() {
                Some(kind) if !root => (k, kind.to_string()),
                _ => (k, v),
            })
            .collect()
    };
    assert_eq!(view(&out), view(&tree), "{mkfs_args:?}");
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

#[test]
fn xxhash64_and_sha256_checksums_are_read() {
    rootless_roundtrip(&["--csum", "xxhash"]);
    rootless_roundtrip(&["--csum", "sha256"]);
}

#[test]
fn a_blake2b_btrfs_falls_back_to_its_non_zero_blocks() {
    let dir = tempfile::tempdir_in(target_tmp()).unwrap();
    let file = dir.path().join("fs.img");
    zeros(&file, 128 * MIB);
    run(tool("mkfs.btrfs")
        .args(["-q", "-f", "-K", "--csum", "blake2", "-U", UUID])
        .arg(&file));
    let info = probe_file(&file);
    assert_eq!(
        (info.kind.as_str(), info.fill),
        ("btrfs-unparsed", Fill::Zero)
    );
    assert_eq!(info.uuid.as_deref(), Some(UUID));
    assert!(!info.used.is_empty());
}

/// The issue's acceptance on a master made with `mkfs_args`: capture within
/// 1.15 × used plus 16 MiB; restore onto an equal and a 1.5× disk, `btrfs check` clean, trees equal
/// inode by inode, the larger one grown to its partition.
fn master_roundtrip(part_mib: u64, mkfs_args: &[&str], mount_opts: &str) -> Vec<String> {
    let work = tempfile::tempdir_in(target_tmp()).unwrap();
    let master = btrfs_master(
        &work.path().join("master.img"),
        part_mib,
        mkfs_args,
        mount_opts,
        80,
        120,
    );
    let root_tree = {
        let l = Loop::attach(&master.path, true);
        stdout(
            tool("btrfs")
                .args(["inspect-internal", "dump-tree", "-t", "1"])
                .arg(l.part(1)),
        )
    };
    let image = work.path().join("img");
    let out = imgtool()
        .args(["capture", "-q"])
        .arg(&master.path)
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "capture: {stderr}");
    // The probe read the file system: no fallback, no whole chunks.
    assert!(!stderr.contains("btrfs at"), "{mkfs_args:?}: {stderr}");
    let (stored, fs) = region_used(&image, "p1");
    assert_eq!(fs, "btrfs");
    let (payload, _) = payload_and_largest_frame(&image);
    eprintln!(
        "btrfs master {mkfs_args:?}: usage Used {} MiB, image used_bytes {} MiB, payloads {} MiB",
        master.used / MIB,
        stored / MIB,
        payload / MIB
    );
    let bound = master.used + master.used * 15 / 100 + 16 * MIB;
    assert!(
        stored <= bound,
        "image stores {stored} bytes, bound {bound}"
    );
    assert!(stored >= 80 * MIB, "{stored}: less than the data kept");

    let size = std::fs::metadata(&master.path).unwrap().len();
    for (name, target_size) in [("equal", size), ("larger", size / 2 * 3)] {
        let target = work.path().join(format!("{name}.img"));
        std::fs::File::create(&target)
            .unwrap()
            .set_len(target_size)
            .unwrap();
        run(imgtool().args(["restore", "-q"]).arg(&image).arg(&target));
        let mut l = Loop::attach(&target, false);
        let part = l.part(1);
        assert_check_clean(&part);
        let fs_size = super_field(&part, "total_bytes");
        let part_size: u64 = stdout(tool("blockdev").arg("--getsize64").arg(&part))
            .trim()
            .parse()
            .unwrap();
        if name == "equal" {
            assert_eq!(fs_size, master.fs_size, "{name}");
        } else {
            assert!(fs_size > master.fs_size, "{name}: not grown ({fs_size})");
            assert!(
                fs_size + MIB > part_size,
                "{name}: {fs_size} of {part_size}"
            );
            let show = stdout(
                tool("btrfs")
                    .args(["filesystem", "show", "--raw"])
                    .arg(&part),
            );
            assert!(show.contains(&format!("size {fs_size}")), "{show}");
        }
        let m = l.mount_opts(1, "btrfs", "ro");
        assert_eq!(snapshot(&m), master.tree, "{name}: trees differ");
        drop(l);
    }
    root_tree.lines().map(str::to_string).collect()
}

#[test]
fn a_mixed_btrfs_master_captures_its_used_bytes_restores_clean_and_grows() {
    skip_unless_root!("loop devices, mount");
    master_roundtrip(512, &["--mixed"], "");
}

#[test]
fn a_btrfs_master_with_dup_metadata_captures_its_used_bytes_restores_clean_and_grows() {
    skip_unless_root!("loop devices, mount");
    master_roundtrip(512, &[], "");
}

#[test]
fn a_btrfs_master_with_single_metadata_captures_its_used_bytes_restores_clean_and_grows() {
    skip_unless_root!("loop devices, mount");
    master_roundtrip(512, &["--data", "single", "--metadata", "single"], "");
}

/// The free-space cache v1 lives in data extents of hidden inodes in the root tree:
/// kept, and `btrfs check` reads it on the restored copies. The kernel writes no cache
/// for block groups under 100 MiB, so this master is 1.2 GiB (sparse; 1 GiB chunks).
#[test]
fn a_btrfs_master_with_the_v1_space_cache_captures_restores_clean_and_grows() {
    skip_unless_root!("loop devices, mount");
    let root_tree = master_roundtrip(1200, &["-R", "^free-space-tree"], "space_cache=v1");
    assert!(
        root_tree
            .iter()
            .any(|l| l.contains("key (FREE_SPACE UNTYPED")),
        "the master has no v1 space cache"
    );
}

/// A file system copied while mounted right after an fsync has a log tree: the blocks it
/// logged are not in the extent tree yet. The probe keeps every allocated chunk whole,
/// and the copy of only its ranges replays the log on mount and holds the fsynced file.
#[test]
fn a_btrfs_with_a_log_tree_keeps_whole_chunks_and_the_logged_file() {
    skip_unless_root!("loop devices, mount");
    let dir = tempfile::tempdir_in(target_tmp()).unwrap();
    let live = dir.path().join("live.img");
    garbage(&live, 300 * MIB);
    run(tool("mkfs.btrfs").args(["-q", "-f", "-K"]).arg(&live));
    let crashed = dir.path().join("crashed.img");
    let logged: Vec<u8> = (0..5 * MIB as u32)
        .map(|i| (i * 7 + i / 4093) as u8)
        .collect();
    let disk = Disk::open_rw(&live).unwrap();
    // No full commit for 300 s: the fsync below goes to the log tree only.
    imgtool::mount::with_mounted_opts(
        &disk,
        0,
        300 * MIB,
        "btrfs",
        "nodiscard,commit=300",
        "live",
        |m| {
            std::fs::write(m.join("base"), b"committed before the log\n").unwrap();
            run(tool("btrfs").args(["filesystem", "sync"]).arg(m));
            let mut f = std::fs::File::create(m.join("logged")).unwrap();
            std::io::Write::write_all(&mut f, &logged).unwrap();
            f.sync_all().unwrap();
            std::fs::copy(&live, &crashed).unwrap();
            Ok(())
        },
    )
    .unwrap();
    assert_ne!(
        super_field(&crashed, "log_root"),
        0,
        "no log tree in the copy"
    );
    let info = probe_file(&crashed);
    assert_eq!((info.kind.as_str(), info.fill), ("btrfs", Fill::Keep));
    let copy = dir.path().join("copy.img");
    only_used(&crashed, &info.used, &copy);
    let disk = Disk::open_rw(&copy).unwrap();
    let (a, b) = imgtool::mount::with_mounted(&disk, 0, 300 * MIB, "btrfs", "copy", |m| {
        Ok((
            std::fs::read(m.join("logged")).unwrap(),
            std::fs::read(m.join("base")).unwrap(),
        ))
    })
    .unwrap();
    assert!(a == logged, "the fsynced file differs after log replay");
    assert_eq!(b, b"committed before the log\n");
    drop(disk);
    assert_check_clean(&copy);
}
