//! Capture → restore → compare on disk FILES, without root: a GPT master like the
//! fixture's (ESP vfat | ext4 root | swap | ext4 data) built on plain files, captured,
//! restored onto a blank file of the same size (no grow, so no loop device), and checked
//! without mounting (`sgdisk -v`, `blkid -p`, `e2fsck -fn`, `debugfs rdump`, mtools).
//! The root tier (`roundtrip.rs`) does the same through loop devices and mounts, with
//! grown disks, MBR and every inode kind.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use test_fixtures::files::{
    assert_restored_files, contents, ext_tree, extents, extract, gpt_master, FileDisk,
};

fn restore(image: &Path, target: &Path) -> serde_json::Value {
    let out = run(imgtool().args(["restore", "--json"]).arg(image).arg(target));
    serde_json::from_slice(&out.stdout).expect("restore --json")
}

fn payload_bytes(image: &Path) -> u64 {
    payload_and_largest_frame(image).0
}

/// `imgtool diff IMAGE TARGET`, whatever its exit status.
fn diff(image: &Path, target: &Path) -> std::process::Output {
    imgtool()
        .arg("diff")
        .arg(image)
        .arg(target)
        .output()
        .unwrap()
}

/// A file master captured into `dir/img`, and a byte copy of the master (a clone that is
/// already there) as `dir/target.img`.
fn captured_with_a_copy(dir: &Path) -> (FileDisk, PathBuf, PathBuf) {
    let (master, _) = gpt_master(dir);
    let image = dir.join("img");
    run(imgtool()
        .args(["capture", "-q"])
        .arg(&master.path)
        .arg(&image));
    let target = dir.join("target.img");
    run(std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&master.path)
        .arg(&target));
    (master, image, target)
}

#[test]
fn a_file_disk_captures_restores_onto_a_blank_file_and_compares_equal() {
    let dir = tempfile::tempdir().unwrap();
    let (master, trees) = gpt_master(dir.path());
    let image = dir.path().join("img");
    run(imgtool()
        .args(["capture", "-q"])
        .arg(&master.path)
        .arg(&image));
    run(imgtool().arg("verify").arg(&image));

    // The ext file systems' free blocks hold ~26 MiB of incompressible garbage: the
    // image holds the files (compressible) and not the garbage.
    let stored = payload_bytes(&image);
    assert!(stored < 8 << 20, "the image stores {stored} bytes");

    let size = std::fs::metadata(&master.path).unwrap().len();
    let target = dir.path().join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(size)
        .unwrap();
    let report = restore(&image, &target);
    assert_restored_files(&master.path, &target);
    eprintln!("{report}");

    // The root file system holds the tree it was made from.
    let root = dir.path().join("root.img");
    extract(&target, extents(&target)[1], &root);
    assert_eq!(ext_tree(&root), contents(&trees["root"]));
}

#[test]
fn restoring_onto_its_own_clone_keeps_the_table_and_diff_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (master, image, target) = captured_with_a_copy(dir.path());
    let head = |p: &Path| std::fs::read(p).unwrap()[..1 << 20].to_vec();
    let before = head(&target);
    restore(&image, &target);
    assert_eq!(before, head(&target), "an equal table was rewritten");
    assert_restored_files(&master.path, &target);
    let diff = diff(&image, &target);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "diff of a fresh clone: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

#[test]
fn a_damaged_file_system_on_the_target_is_found_by_diff() {
    let dir = tempfile::tempdir().unwrap();
    let (_master, image, target) = captured_with_a_copy(dir.path());
    // One byte of the root file system's used area (its superblock's volume name).
    let root = extents(&target)[1];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"X", root.start + 1024 + 120).unwrap();
    let diff = diff(&image, &target);
    let out =
        String::from_utf8_lossy(&diff.stdout).to_string() + &String::from_utf8_lossy(&diff.stderr);
    assert_eq!(diff.status.code(), Some(1), "{out}");
    assert!(
        out.contains("p2"),
        "diff does not name the partition: {out}"
    );
}

#[test]
fn a_partition_selected_twice_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (master, _) = gpt_master(dir.path());
    let image = dir.path().join("img");
    let o = imgtool()
        .args(["capture", "-q", "--partitions", "2,1,2"])
        .arg(&master.path)
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("partition 2 is selected twice"), "{err}");
    assert!(!image.exists(), "capture left {}", image.display());
    let partial: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("img."))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}
