//! Capture → restore round trips on real fixture disks and loop devices: GPT onto a blank
//! disk of the same size, a 1.5× larger disk, and a disk whose table is already equal;
//! MBR with logical partitions the same way; export to a sparse VM disk.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn restore_json(image: &Path, target: &Path) -> serde_json::Value {
    let out = stdout(imgtool().args(["restore", "--json"]).arg(image).arg(target));
    serde_json::from_str(&out).expect("restore --json output")
}

/// A blank disk file `name` of `size` bytes in `dir`.
fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create target");
    f.set_len(size).expect("size target");
    path
}

#[test]
fn gpt_onto_a_blank_disk_of_the_same_size_through_a_loop_device() {
    skip_unless_root!("loop devices");
    let Captured {
        dir,
        image,
        master,
        size,
        ..
    } = &captured("gpt");
    run(imgtool().arg("verify").arg(image));
    // Restored through a loop device as an admin would.
    let same = blank(dir, "same.img", *size);
    {
        let l = Loop::attach(&same, false);
        let rep = restore_json(image, &l.dev);
        assert_eq!(rep["plan"]["keep_table"], false);
    }
    assert_restored(master, &same, &[1, 2, 3, 4]);
    // Same size and layout: the disk head (boot code + table) is the master's, byte for byte.
    let head = |p: &Path| std::fs::read(p).unwrap()[..1 << 20].to_vec();
    assert!(
        head(master) == head(&same),
        "first MiB differs from the master"
    );
    let d = Command::new(env!("CARGO_BIN_EXE_imgtool"))
        .args(["diff", "--json"])
        .arg(image)
        .arg(&same)
        .output()
        .unwrap();
    assert_eq!(
        d.status.code(),
        Some(0),
        "diff after restore: {}",
        String::from_utf8_lossy(&d.stdout)
    );
}

/// The block count `dumpe2fs -h` reads from partition `n` of disk file `disk`.
fn ext_block_count(disk: &Path, n: u32) -> u64 {
    let l = Loop::attach(disk, true);
    let info = stdout(Command::new("dumpe2fs").arg("-h").arg(l.part(n)));
    info.lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("block count")
}

#[test]
fn gpt_onto_a_larger_disk_grows_the_last_partition_and_a_reclone_keeps_the_table() {
    skip_unless_root!("loop devices");
    let Captured {
        dir,
        image,
        master,
        size,
        ..
    } = &captured("gpt");
    // A 1.5x larger disk: partition 4 and its ext4 grow to the end.
    let big = blank(dir, "big.img", size * 3 / 2);
    let rep = restore_json(image, &big);
    assert_eq!(rep["plan"]["keep_table"], false);
    let p4 = rep["plan"]["layout"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == 4)
        .unwrap()
        .clone();
    let end = p4["start"].as_u64().unwrap() + p4["size"].as_u64().unwrap();
    assert_eq!(
        end,
        size * 3 / 2 / 512 - 33,
        "partition 4 does not reach the end of the disk"
    );
    assert_restored(master, &big, &[1, 2, 3, 4]);
    let blocks = ext_block_count(&big, 4);
    let part_bytes = p4["size"].as_u64().unwrap() * 512;
    assert!(
        blocks * 4096 > part_bytes - (1 << 20),
        "ext4 not grown: {blocks} blocks for {part_bytes} bytes"
    );

    // Cloning the grown disk again: its table is what we would write, so it is kept,
    // and the data partition is grown again after its contents are rewritten.
    let before = std::fs::read(&big).unwrap()[512..17408].to_vec();
    let rep = restore_json(image, &big);
    assert_eq!(
        rep["plan"]["keep_table"], true,
        "re-clone rewrote the table: {rep}"
    );
    assert_eq!(
        before,
        std::fs::read(&big).unwrap()[512..17408].to_vec(),
        "GPT header/entries changed"
    );
    assert_restored(master, &big, &[1, 2, 3, 4]);
}

#[test]
fn gpt_onto_a_disk_whose_table_is_already_equal_keeps_it() {
    skip_unless_root!("loop devices");
    let Captured {
        dir,
        image,
        master,
        size,
        ..
    } = &captured("gpt");
    // A disk whose table is already equal but whose disk GUID differs (table fields the
    // comparison ignores): the table is kept, proven by the GUID surviving the restore.
    let eq = blank(dir, "equal.img", *size);
    let bak = dir.join("table.bak");
    run(Command::new("sgdisk").arg("-b").arg(&bak).arg(master));
    run(Command::new("sgdisk").arg("-l").arg(&bak).arg(&eq));
    run(Command::new("sgdisk")
        .args(["-U", "01234567-89AB-CDEF-0123-456789ABCDEF"])
        .arg(&eq));
    let rep = restore_json(image, &eq);
    assert_eq!(
        rep["plan"]["keep_table"], true,
        "equal table was not kept: {rep}"
    );
    let p = stdout(Command::new("sgdisk").arg("-p").arg(&eq));
    assert!(
        p.contains("01234567-89AB-CDEF-0123-456789ABCDEF"),
        "disk GUID changed, table was rewritten: {p}"
    );
    assert_restored(master, &eq, &[1, 2, 3, 4]);
}

#[test]
fn mbr_round_trip_with_logical_partitions() {
    skip_unless_root!("loop devices");
    let Captured {
        dir,
        image,
        master,
        size,
        ..
    } = &captured("mbr");
    let layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(image.join("layout")).unwrap()).unwrap();
    let roles: Vec<_> = layout["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["primary", "extended", "logical", "logical"]);

    let same = blank(dir, "same.img", *size);
    restore_json(image, &same);
    assert_restored(master, &same, &[1, 5, 6]);

    let big = blank(dir, "big.img", size * 3 / 2);
    let rep = restore_json(image, &big);
    let parts = rep["plan"]["layout"]["partitions"]
        .as_array()
        .unwrap()
        .clone();
    let end = |n: u64| {
        let p = parts.iter().find(|p| p["number"] == n).unwrap();
        p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap()
    };
    assert_eq!(
        end(6),
        size * 3 / 2 / 512,
        "logical 6 does not reach the disk end"
    );
    assert_eq!(
        end(2),
        end(6),
        "extended container not grown with its last logical"
    );
    assert_restored(master, &big, &[1, 5, 6]);
    let l = sfdisk_dump(&big);
    assert!(
        l.contains("label-id: 0x5eed1234"),
        "disk signature not restored: {l}"
    );
}

fn sfdisk_dump(p: &Path) -> String {
    stdout(Command::new("sfdisk").arg("-d").arg(p))
}

#[test]
fn export_writes_a_sparse_disk_that_verifies() {
    skip_unless_root!("loop devices");
    let c = captured("gpt");
    let (master, image) = (&c.master, &c.image);
    let out = c.dir.join("vm.raw");
    run(imgtool()
        .args(["export", "-q"])
        .arg(image)
        .arg(&out)
        .args(["--size", "512M"]));
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), 512 << 20);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 200 << 20,
        "export is not sparse: {} bytes allocated",
        meta.blocks() * 512
    );
    assert_restored(master, &out, &[1, 2, 3, 4]);
    // Refuses to overwrite an existing file.
    let again = imgtool()
        .arg("export")
        .arg(image)
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
}
