//! Restoring over a disk that held other file systems (issue 12, item 3): parsed file
//! systems are restored as their used blocks only, so the target's old btrfs, XFS, LVM2
//! and LUKS headers must be cleared by restore (as `wipefs`/`mkswap` do), or `blkid`
//! calls the partition "ambivalent" and a cloned OS boots without its swap. After the
//! clone `blkid -p` must name exactly the image's type on each partition, and `wipefs -n`
//! find no other signature; the restored partitions stay what the master holds.

mod common;
use common::*;
use std::path::Path;
use test_fixtures::signatures::{plant, probe, Foreign};

/// The image's types on the gpt fixture's partitions (ESP, root, swap, data).
const IMAGE_TYPES: [(u32, &str); 4] = [(1, "vfat"), (2, "ext4"), (3, "swap"), (4, "ext4")];

/// Copies the master's partition table onto `target` (a file of any size ≥ the master):
/// the same partitions at the same places; with `grow_last`, the last one takes the rest
/// (as sfdisk aligns it).
fn copy_table(master: &Path, target: &Path, grow_last: bool) {
    let dump = stdout(tool("sfdisk").arg("-d").arg(master));
    let lines: Vec<&str> = dump
        .lines()
        .filter(|l| {
            !["device:", "first-lba:", "last-lba:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    let last = lines.len() - 1;
    let table: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // The last partition without its size: sfdisk gives it the rest of the disk.
            let l = if grow_last && i == last {
                l.split(", ")
                    .filter(|f| !f.trim_start().starts_with("size="))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                l.to_string()
            };
            format!("{l}\n")
        })
        .collect();
    let mut c = tool("sfdisk");
    c.args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(target)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("run sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(table.as_bytes())
        .expect("feed sfdisk");
    let out = child.wait_with_output().expect("sfdisk");
    assert!(out.status.success(), "sfdisk: {out:?}");
}

/// A target of `size` bytes holding the master's table (the last partition grown to the
/// disk when it is larger) with `foreign[i]` made on partition `i + 1`.
fn dirty_target(master: &Path, target: &Path, size: u64, foreign: [Foreign; 4]) {
    let master_size = std::fs::metadata(master).unwrap().len();
    std::fs::File::create(target)
        .unwrap()
        .set_len(size)
        .unwrap();
    copy_table(master, target, size > master_size);
    let l = Loop::attach(target, false);
    for (i, kind) in foreign.into_iter().enumerate() {
        plant(kind, &l.part(i as u32 + 1));
    }
}

/// Each partition of `target` holds the image's type and nothing else.
fn assert_one_type_each(target: &Path) {
    let l = Loop::attach(target, true);
    let mut wrong = vec![];
    for (n, ty) in IMAGE_TYPES {
        let seen = probe(&l.part(n));
        if seen.blkid.as_deref() != Ok(ty) || seen.wipefs != [ty] {
            wrong.push(format!("partition {n} (image: {ty}): {seen:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn restore_json(image: &Path, target: &Path) -> serde_json::Value {
    let out = run(imgtool()
        .args(["restore", "--json", "-q"])
        .arg(image)
        .arg(target));
    serde_json::from_slice(&out.stdout).expect("restore --json")
}

/// The foreign kinds, rotated `k` places: over `k` = 0..4 every partition (the swap one
/// too) sits once over each of them.
fn rotation(k: usize) -> [Foreign; 4] {
    const KINDS: [Foreign; 4] = [Foreign::Luks, Foreign::Xfs, Foreign::Btrfs, Foreign::Lvm];
    std::array::from_fn(|i| KINDS[(i + k) % 4])
}

#[test]
fn the_rotations_put_swap_over_every_foreign_kind() {
    let mut under_swap: Vec<_> = (0..4).map(|k| rotation(k)[2].blkid_type()).collect();
    under_swap.sort();
    assert_eq!(
        under_swap,
        ["LVM2_member", "btrfs", "crypto_LUKS", "xfs"],
        "swap is partition 3"
    );
}

/// Equal layout, restored onto the loop device itself (block device: `BLKZEROOUT`), once
/// per [`rotation`]: swap, the ESP and both ext4 over each of LUKS (a second header at
/// 4 MiB), XFS, btrfs and an LVM PV.
#[test]
fn restore_clears_foreign_signatures_on_an_equal_layout() {
    skip_unless_root!("loop devices, mkfs.btrfs/xfs, pvcreate, cryptsetup");
    let c = captured("gpt");
    for k in 0..4 {
        let foreign = rotation(k);
        eprintln!("equal layout over {foreign:?}");
        restore_over_equal_layout(&c, foreign);
    }
}

fn restore_over_equal_layout(c: &Captured, foreign: [Foreign; 4]) {
    let target = c.dir.join("node.img");
    dirty_target(&c.master, &target, c.size, foreign);
    // The partition over btrfs: the dry run must leave it btrfs.
    let btrfs = foreign.iter().position(|f| *f == Foreign::Btrfs).unwrap() as u32 + 1;
    let rep = {
        let l = Loop::attach(&target, false);
        // --dry-run names what it would clear, and clears nothing.
        let text = stdout(
            imgtool()
                .args(["restore", "--dry-run"])
                .arg(&c.image)
                .arg(&l.dev),
        );
        assert!(text.contains("old signature areas to clear"), "{text}");
        assert!(
            probe(&l.part(btrfs)).blkid == Ok("btrfs".into()),
            "dry run wrote"
        );
        restore_json(&c.image, &l.dev)
    };
    assert_eq!(rep["plan"]["keep_table"], true, "{rep}");
    // The report names what was cleared, per partition; the disk head gets nothing.
    for r in rep["regions"].as_array().unwrap() {
        let wiped = r["wiped_bytes"].as_u64().unwrap();
        if r["name"] == "head" {
            assert_eq!(wiped, 0, "{r}");
        } else {
            // Both ends and the LUKS2 spots at 2 and 4 MiB (the one at 1 MiB touches the
            // first MiB).
            assert!(wiped > 0 && wiped <= (2 << 20) + 3 * 4096, "{r}");
            assert_eq!(r["zeroed_bytes"], 0, "{r}");
        }
    }
    assert_one_type_each(&target);
    assert_restored(&c.master, &target, &[1, 2, 3, 4]);
}

/// A 1.5× disk whose last partition spans the disk (an earlier, larger layout) over other
/// signatures, restored as a file once per [`rotation`]: the table is rewritten, the last
/// partition's file system grows to it, and the old signatures under every partition,
/// the grown one's included (its last MiB is now far past the image's), are gone.
#[test]
fn restore_clears_foreign_signatures_on_a_grown_layout() {
    skip_unless_root!("loop devices, mkfs.btrfs/xfs, pvcreate, cryptsetup");
    let c = captured("gpt");
    for k in 0..4 {
        let foreign = rotation(k);
        eprintln!("grown layout over {foreign:?}");
        restore_over_grown_layout(&c, foreign);
    }
}

fn restore_over_grown_layout(c: &Captured, foreign: [Foreign; 4]) {
    let target = c.dir.join("node.img");
    dirty_target(&c.master, &target, c.size / 2 * 3, foreign);
    let rep = restore_json(&c.image, &target);
    // sfdisk ends the last partition on a MiB boundary, restore at the last usable
    // sector: the table is rewritten (the equal test keeps its table).
    assert_eq!(rep["plan"]["keep_table"], false, "{rep}");
    let p4 = &rep["regions"][4];
    assert!(p4["grown"].is_array(), "{p4}");
    assert!(p4["target_size"].as_u64().unwrap() > c.size / 2, "{p4}");
    assert_one_type_each(&target);
    // The grown data file system and the others are clean where they now live.
    let l = Loop::attach(&target, true);
    for n in [2, 4] {
        run(tool("e2fsck").arg("-fn").arg(l.part(n)));
    }
    run(tool("fsck.vfat").arg("-n").arg(l.part(1)));
}
