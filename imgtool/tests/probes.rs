//! The file-system probes on real file systems made on plain files (no root): the used
//! ranges an ext or FAT probe reports must hold every file. Proof: copy only those ranges
//! into a zeroed file of the same size; the reference checker finds it clean and the tree
//! read from it (`debugfs rdump`, mtools) is the tree the file system was made from. Free
//! space (garbage, a deleted file's clusters) must stay out of the ranges.

mod common;
use common::tool;
use imgtool::disk::MemDisk;
use imgtool::fs::{ext, fat, swap, FsInfo, PartView};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use test_fixtures::disk::{fat_files, run};
use test_fixtures::files::{
    contents, e2fsck_clean, esp_tree, ext_tree, fsck_vfat_clean, garbage, make_fs, sample_tree,
    zeros, Fs,
};

const MIB: u64 = 1 << 20;

/// Runs `probe` over the file system in `file`, seen as a whole partition.
fn probe_file(
    file: &Path,
    probe: fn(&PartView) -> std::io::Result<Option<FsInfo>>,
) -> (FsInfo, Vec<u8>) {
    let bytes = std::fs::read(file).unwrap();
    let disk = MemDisk::from_vec(bytes.clone(), 512);
    let view = PartView {
        disk: &disk,
        start: 0,
        size: bytes.len() as u64,
    };
    let info = probe(&view)
        .unwrap_or_else(|e| panic!("probing {}: {e}", file.display()))
        .unwrap_or_else(|| panic!("{}: the probe did not recognise it", file.display()));
    (info, bytes)
}

/// A zeroed file of `bytes`' length holding only the `used` ranges of `bytes`.
fn only_used(bytes: &[u8], used: &[(u64, u64)], out: &Path) {
    zeros(out, bytes.len() as u64);
    let f = std::fs::OpenOptions::new().write(true).open(out).unwrap();
    for &(o, l) in used {
        let (o, e) = (o as usize, (o + l) as usize);
        f.write_all_at(&bytes[o..e], o as u64).unwrap();
    }
}

/// The ranges are sorted, do not overlap, and stay inside the file system.
fn assert_well_formed(info: &FsInfo, size: u64) {
    let mut end = 0;
    for &(o, l) in &info.used {
        assert!(
            o >= end && l > 0,
            "ranges overlap or are empty: {:?}",
            info.used
        );
        end = o + l;
    }
    assert!(end <= info.fs_size && info.fs_size <= size, "{info:?}");
}

fn used_bytes(info: &FsInfo) -> u64 {
    info.used.iter().map(|r| r.1).sum()
}

fn ext4(dir: &Path, size: u64, extra: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let tree = dir.join("tree");
    sample_tree(&tree);
    let file = dir.join("ext.img");
    if extra.is_empty() {
        make_fs(
            &file,
            size,
            &Fs::Ext4 {
                label: "root".into(),
                uuid: "0c7e4f00-1111-4222-8333-444455556666".into(),
                tree: tree.clone(),
            },
        );
    } else {
        garbage(&file, size);
        run(tool("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-E", "nodiscard"])
            .args(["-L", "root", "-U", "0c7e4f00-1111-4222-8333-444455556666"])
            .args(extra)
            .arg("-d")
            .arg(&tree)
            .arg(&file));
    }
    (file, tree)
}

/// The ext probe's used ranges hold every file of the file system and nothing of the
/// garbage in its free blocks.
fn ext_used_ranges_hold_every_file(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let (file, tree) = ext4(dir.path(), size, extra);
    let (info, bytes) = probe_file(&file, ext::probe);
    assert_eq!(info.kind, "ext4");
    assert_eq!(
        info.uuid.as_deref(),
        Some("0c7e4f00-1111-4222-8333-444455556666")
    );
    assert_eq!(info.label.as_deref(), Some("root"));
    assert_eq!(info.fs_size, size);
    assert_well_formed(&info, size);
    // The tree is ~4 MiB; the rest of the 32 MiB is garbage that must stay out.
    let used = used_bytes(&info);
    assert!(
        used < size / 2 && used > 3 * MIB,
        "{used} bytes used of {size}"
    );

    let copy = dir.path().join("used-only.img");
    only_used(&bytes, &info.used, &copy);
    e2fsck_clean(&copy);
    let restored = ext_tree(&copy);
    assert_eq!(restored, ext_tree(&file), "the used ranges lose data");
    assert_eq!(
        restored,
        contents(&tree),
        "rdump of the copy differs from the source tree"
    );
}

#[test]
fn ext4_used_ranges_hold_every_file_and_no_garbage() {
    ext_used_ranges_hold_every_file(&[]);
}

#[test]
fn ext4_with_4k_blocks_and_no_flex_bg_used_ranges_hold_every_file() {
    ext_used_ranges_hold_every_file(&["-b", "4096", "-O", "^flex_bg"]);
}

#[test]
fn ext4_with_64bit_descriptors_and_meta_bg_used_ranges_hold_every_file() {
    ext_used_ranges_hold_every_file(&["-O", "64bit,meta_bg,^resize_inode"]);
}

#[test]
fn ext_probe_ignores_what_is_not_ext() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("garbage.img");
    garbage(&f, 4 * MIB);
    let bytes = std::fs::read(&f).unwrap();
    let disk = MemDisk::from_vec(bytes, 512);
    let view = PartView {
        disk: &disk,
        start: 0,
        size: 4 * MIB,
    };
    assert!(ext::probe(&view).unwrap().is_none());
    assert!(fat::probe(&view).unwrap().is_none());
    assert!(swap::probe(&view).unwrap().is_none());
}

/// A FAT16 file system with the ESP tree, more files, and one deleted file whose
/// clusters still hold its (recognisable) bytes.
fn fat16(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let tree = dir.join("esp");
    esp_tree(&tree);
    for i in 0..30u32 {
        let body: Vec<u8> = (0..(i * 1531 % 9000)).map(|j| (j ^ i) as u8).collect();
        let p = tree.join(format!("EFI/many/F{i}.BIN"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let file = dir.join("fat.img");
    make_fs(
        &file,
        16 * MIB,
        &Fs::Vfat {
            label: "ESP".into(),
            id: "1234ABCD".into(),
            tree,
        },
    );
    let marker: Vec<u8> = b"DELETED-FILE-BYTES"
        .iter()
        .copied()
        .cycle()
        .take(200_000)
        .collect();
    let gone = dir.join("GONE.BIN");
    std::fs::write(&gone, &marker).unwrap();
    let mtools = |program: &str, args: &[&std::ffi::OsStr]| {
        run(Command::new(program)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&file)
            .args(args));
    };
    mtools("mcopy", &[gone.as_os_str(), "::/GONE.BIN".as_ref()]);
    mtools("mdel", &["::/GONE.BIN".as_ref()]);
    (file, marker[..64].to_vec())
}

#[test]
fn fat16_used_ranges_hold_every_file_and_no_freed_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (file, deleted) = fat16(dir.path());
    let (info, bytes) = probe_file(&file, fat::probe);
    assert_eq!(info.kind, "vfat");
    assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
    assert_eq!(info.label.as_deref(), Some("ESP"));
    assert_well_formed(&info, bytes.len() as u64);
    let in_image = |needle: &[u8]| {
        info.used.iter().any(|&(o, l)| {
            bytes[o as usize..(o + l) as usize]
                .windows(needle.len())
                .any(|w| w == needle)
        })
    };
    assert!(
        bytes.windows(deleted.len()).any(|w| w == deleted),
        "the deleted file's bytes should still be on the file system"
    );
    assert!(
        !in_image(&deleted),
        "a freed cluster is inside the used ranges"
    );

    let copy = dir.path().join("used-only.img");
    only_used(&bytes, &info.used, &copy);
    fsck_vfat_clean(&copy);
    let (a, b) = (fat_files(&file), fat_files(&copy));
    assert!(a.len() > 30, "{a:?}");
    assert_eq!(a, b, "the used ranges lose FAT data");
}

#[test]
fn swap_probe_keeps_only_the_header_and_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swap.img");
    make_fs(
        &file,
        4 * MIB,
        &Fs::Swap {
            label: "swap0".into(),
            uuid: "5a5a5a5a-1234-4321-abcd-0123456789ab".into(),
        },
    );
    let (info, _) = probe_file(&file, swap::probe);
    assert_eq!(info.kind, "swap");
    assert_eq!(
        info.uuid.as_deref(),
        Some("5a5a5a5a-1234-4321-abcd-0123456789ab")
    );
    assert_eq!(info.label.as_deref(), Some("swap0"));
    assert!(used_bytes(&info) <= 64 << 10, "{info:?}");
}
