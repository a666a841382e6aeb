//! LVM2 end to end with the host's lvm2 as the referee (root: loop devices): a GPT master
//! whose one partition is a PV (VG with an ext4 root LV holding a tree with owners, modes
//! and xattrs, a swap LV, and free extents full of a removed LV's garbage) is captured
//! with only its used blocks, and restored onto a disk of the same size and onto one
//! 1.5× larger, where the PV gets the new extents as free space (pvresize semantics).
//!
//! The restores write onto targets that look used (0xa5, an old btrfs where the swap LV
//! lies). Also: a VG of two PVs whose second metadata copy lvm2 flags ignored.
//!
//! No device-mapper in this kernel: LVs are read through loop devices over their
//! extents (`test_fixtures::lvm`), and every lvm2 command sees one device only.

mod common;
use common::*;
use std::path::Path;
use test_fixtures::files::extents;
use test_fixtures::lvm::{lv_extents, lvm, lvm_master, lvm_ok, LvmMaster, OffsetLoop};
use test_fixtures::signatures::{plant, Foreign};

const MIB: u64 = 1 << 20;

/// `pvs`/`vgs` fields of the PV on `dev`, in bytes where they are sizes.
fn fields(cmd: &str, dev: &Path, fields: &str, name: &str) -> Vec<u64> {
    lvm_ok(
        cmd,
        dev,
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
            name,
        ],
    )
    .split_whitespace()
    .map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{cmd} {fields}: {v:?}"))
    })
    .collect()
}

/// What the master's PV says about itself: pv_size, pv_free, pv_pe_count, vg_free.
struct PvFacts {
    pv_size: u64,
    pv_free: u64,
    pe_count: u64,
    vg_free: u64,
    seqno: u64,
    extent: u64,
}

fn facts(dev: &Path, vg: &str) -> PvFacts {
    let name = dev.display().to_string();
    let p = fields("pvs", dev, "pv_size,pv_free,pv_pe_count", &name);
    let v = fields("vgs", dev, "vg_free,vg_seqno,vg_extent_size", vg);
    PvFacts {
        pv_size: p[0],
        pv_free: p[1],
        pe_count: p[2],
        vg_free: v[0],
        seqno: v[1],
        extent: v[2],
    }
}

fn clean(cmd: &str, dev: &Path, args: &[&str]) {
    let out = lvm(cmd, dev, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.to_lowercase().contains("checksum"),
        "{cmd} {args:?}: {}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Checks a restored disk: lvm2 accepts the PV and VG, the root LV is `e2fsck -fn` clean
/// with the master's tree, the swap LV is swap with the master's UUID. Returns the PV's
/// facts as lvm2 reads them.
fn check_clone(target: &Path, m: &LvmMaster) -> PvFacts {
    let parts = extents(target);
    let p = parts[0];
    let pv = OffsetLoop::attach(target, p.start, p.size, true);
    let d = &pv.dev;
    clean("pvck", d, &[&d.display().to_string()]);
    clean("vgck", d, &[&m.vg]);
    let lvs = lvm_ok("lvs", d, &["--noheadings", "-o", "lv_name", &m.vg]);
    let mut names: Vec<&str> = lvs.split_whitespace().collect();
    names.sort();
    assert_eq!(names, ["root", "swap"]);
    let root = lv_extents(d, &m.vg, "root");
    let mut rl = OffsetLoop::attach(target, p.start + root[0].0, root[0].1, true);
    run(tool("e2fsck").arg("-fn").arg(&rl.dev));
    let mnt = rl.mount("ro,noload");
    assert_eq!(snapshot(&mnt), m.root_tree, "root LV tree differs");
    rl.umount();
    let swap = lv_extents(d, &m.vg, "swap");
    let sl = OffsetLoop::attach(target, p.start + swap[0].0, swap[0].1, true);
    let id = blkid(&sl.dev);
    assert_eq!(id.get("TYPE").map(String::as_str), Some("swap"), "{id:?}");
    assert_eq!(id.get("UUID"), Some(&m.swap_uuid));
    // The old btrfs the target held there ([`used_target`]) is gone: one type only.
    let seen = test_fixtures::signatures::probe(&sl.dev);
    assert_eq!(seen.blkid, Ok("swap".to_string()), "{seen:?}");
    assert_eq!(seen.wipefs, ["swap"], "{seen:?}");
    facts(d, &m.vg)
}

/// The report's `grown` of partition 1.
fn grown(rep: &serde_json::Value) -> &serde_json::Value {
    let regions = rep["regions"].as_array().expect("regions");
    &regions.iter().find(|r| r["name"] == "p1").expect("p1")["grown"]
}

/// Restores `image` onto a new `size`-byte `target` that looks used ([`used_target`]).
fn restore(image: &Path, target: &Path, size: u64, old_btrfs: (u64, u64)) -> serde_json::Value {
    used_target(target, size, old_btrfs);
    let out = stdout(imgtool().args(["restore", "--json"]).arg(image).arg(target));
    serde_json::from_str(&out).expect("restore --json")
}

/// A `size`-byte disk file as a used disk leaves it: every byte 0xa5 (so a byte the
/// restore forgets does not read as the zero it happens to need), and an old btrfs made
/// by mkfs.btrfs on the disk bytes `(offset, length)` where the master's swap LV lies (an
/// LV's own signature areas must be cleared: review finding 2).
fn used_target(target: &Path, size: u64, old_btrfs: (u64, u64)) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(target).unwrap();
    f.set_len(size).unwrap();
    let block = vec![0xa5u8; (4 * MIB) as usize];
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(block.len() as u64) as usize;
        f.write_all_at(&block[..n], pos).unwrap();
        pos += n as u64;
    }
    drop(f);
    let l = OffsetLoop::attach(target, old_btrfs.0, old_btrfs.1, false);
    plant(Foreign::Btrfs, &l.dev);
}

#[test]
fn an_lvm_master_is_captured_by_its_used_blocks_and_restored_with_pvresize() {
    skip_unless_root!("loop devices, lvm2");
    let work = tempfile::tempdir_in(test_fixtures::disk::target_tmp()).unwrap_or_else(|_| {
        std::fs::create_dir_all(test_fixtures::disk::target_tmp()).unwrap();
        tempfile::tempdir_in(test_fixtures::disk::target_tmp()).unwrap()
    });
    let dir = work.path();
    let m = lvm_master(dir, "vgclone", 160);
    let (master, pv_uuid, swap) = {
        let pv = OffsetLoop::attach(&m.path, m.part.0, m.part.1, true);
        let uuid = lvm_ok("pvs", &pv.dev, &["--noheadings", "-o", "pv_uuid"]);
        let swap = lv_extents(&pv.dev, &m.vg, "swap")[0];
        (
            facts(&pv.dev, &m.vg),
            uuid.trim().to_string(),
            (m.part.0 + swap.0, swap.1),
        )
    };
    // 160 MiB, 4 MiB extents, 1 MiB before the first: 39 extents, 20 of them allocated
    // (root 16 + swap 4) and 12 free ones holding the removed LV's garbage.
    assert_eq!((master.pe_count, master.extent), (39, 4 * MIB));

    let image = dir.join("img");
    run(imgtool().args(["capture", "-q"]).arg(&m.path).arg(&image));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest")).unwrap()).unwrap();
    let r = manifest["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "p1")
        .expect("region p1");
    assert_eq!(r["filesystem"], "lvm2");
    assert_eq!(r["uuid"].as_str(), Some(pv_uuid.as_str()));
    assert_eq!(r["label"].as_str(), Some("vgclone"));
    assert_eq!(r["fill"], "keep");
    // "Used": the root ext4's used blocks, the swap header page, and everything before
    // the first extent (label and metadata area).
    let used = m.root_used + 4096 + MIB;
    let bound = used + used * 15 / 100 + 16 * MIB;
    let stored = r["used_bytes"].as_u64().unwrap();
    let payload = std::fs::metadata(image.join(r["payload"].as_str().unwrap()))
        .unwrap()
        .len();
    eprintln!(
        "lvm master: used {used} B (ext4 {}), stored {stored} B, payload {payload} B, bound {bound} B",
        m.root_used
    );
    assert!(
        stored <= bound && payload <= bound,
        "{stored} / {payload} > {bound}"
    );
    // The 48 MiB of garbage in the free extents and 20 MiB deleted inside ext4 stay out.
    assert!(stored < 40 * MIB, "stored {stored}");

    // Equal disk: byte-exact PV, same facts.
    let same = dir.join("same.img");
    let rep = restore(
        &image,
        &same,
        std::fs::metadata(&m.path).unwrap().len(),
        swap,
    );
    assert!(grown(&rep).is_null(), "{rep}");
    let got = check_clone(&same, &m);
    assert_eq!(
        (
            got.pv_size,
            got.pv_free,
            got.pe_count,
            got.vg_free,
            got.seqno
        ),
        (
            master.pv_size,
            master.pv_free,
            master.pe_count,
            master.vg_free,
            master.seqno
        )
    );
    std::fs::remove_file(&same).unwrap();

    // 1.5× disk: the partition grows to the disk's end, the PV gets the new extents free.
    let big = dir.join("big.img");
    let size = std::fs::metadata(&m.path).unwrap().len() * 3 / 2;
    let rep = restore(&image, &big, size, swap);
    let part = extents(&big)[0];
    let new_count = (part.size - MIB) / (4 * MIB);
    assert!(new_count > master.pe_count + 10, "{new_count}");
    let got = check_clone(&big, &m);
    assert_eq!(got.pe_count, new_count);
    assert_eq!(got.pv_size, new_count * 4 * MIB);
    let added = (new_count - master.pe_count) * 4 * MIB;
    assert_eq!(
        got.pv_free,
        master.pv_free + added,
        "PFree grew by the new extents"
    );
    assert_eq!(got.vg_free, master.vg_free + added);
    assert_eq!(got.seqno, master.seqno + 1);
    eprintln!("restore report: {}", rep["regions"]);
    assert!(!grown(&rep).is_null(), "{rep}");
    // lvm2's own pvresize finds nothing left to do, and writes a metadata copy after ours.
    let pv = OffsetLoop::attach(&big, part.start, part.size, false);
    lvm_ok("pvresize", &pv.dev, &[&pv.dev.display().to_string()]);
    let after = facts(&pv.dev, &m.vg);
    assert_eq!((after.pe_count, after.seqno), (new_count, got.seqno + 1));
    clean("vgck", &pv.dev, &[&m.vg]);
}

/// A PV head made by the host's lvm2 (`fuzz/corpus/lvm_metadata/`: the shift byte, then
/// the first 64 KiB of a 64 MiB PV) on an in-memory disk of `size` bytes.
fn real_pv(seed: &str, size: usize) -> imgtool::disk::MemDisk {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/lvm_metadata")
        .join(seed);
    let mut d = std::fs::read(p).unwrap().split_off(1);
    d.resize(size, 0);
    imgtool::disk::MemDisk::from_vec(d, 512)
}

#[test]
fn a_pv_made_by_lvm2_reads_with_its_crcs_and_maps_its_lvs() {
    // pvcreate --metadatasize 32k --dataalignment 16k; vgcreate -s 1m vgseed; an 8 MiB
    // LV `swap` (mkswap) at extent 0 and a 4 MiB LV `data` (empty) at extent 8.
    let disk = real_pv("pv-swap-lv-64m", 64 << 20);
    let part = imgtool::fs::PartView {
        disk: &disk,
        start: 0,
        size: 64 << 20,
    };
    let pv = imgtool::fs::lvm::read_pv(&part).unwrap().expect("a PV");
    let (_, vg) = pv.vg.as_ref().expect("in a VG");
    assert_eq!(vg.name, "vgseed");
    let info = imgtool::fs::lvm::probe(&part).unwrap().expect("lvm2");
    assert_eq!(info.kind, "lvm2");
    // The head up to pe_start (48 KiB), the swap LV's header page and first MiB right
    // after it (one range, with LUKS2's second-header spot at 1 MiB into the LV), the
    // spots at 2 and 4 MiB and its last MiB (its signature areas), and nothing of the
    // empty LV; that LV was scanned, so restore zero-fills.
    let (head, k4) = (49152, 4096);
    assert_eq!(
        info.used,
        vec![
            (0, head + MIB + k4),
            (head + 2 * MIB, k4),
            (head + 4 * MIB, k4),
            (head + 7 * MIB, MIB)
        ]
    );
    assert_eq!(info.fill, imgtool::fs::Fill::Zero);
}

#[test]
fn pvresize_on_a_pv_made_by_lvm2_and_a_pv_with_two_metadata_areas() {
    use imgtool::fs::lvm::resize::{resize, Outcome};
    let disk = real_pv("pv-swap-lv-64m", 96 << 20);
    // 63 extents of 1 MiB from 48 KiB; 95 on 96 MiB.
    let out = resize(&disk, 0, 96 << 20).unwrap();
    assert_eq!(out, Outcome::Grown(49152 + (63 << 20), 49152 + (95 << 20)));
    let part = imgtool::fs::PartView {
        disk: &disk,
        start: 0,
        size: 96 << 20,
    };
    let pv = imgtool::fs::lvm::read_pv(&part).unwrap().unwrap();
    let (_, vg) = pv.vg.as_ref().unwrap();
    assert_eq!(vg.pv(&pv.label.uuid).unwrap().pe_count, 95);
    // The second metadata area sits at the PV's old end: not moved, the size is kept.
    let two = real_pv("pv-two-mdas-64m", 96 << 20);
    let before = two.bytes();
    assert!(
        matches!(resize(&two, 0, 96 << 20).unwrap(), Outcome::Kept(m) if m.contains("second metadata area"))
    );
    assert_eq!(two.bytes(), before);
}

/// `len` bytes at `offset` of `file`.
fn bytes_at(file: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len as usize];
    std::fs::File::open(file)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    b
}

#[test]
fn an_lv_without_a_known_file_system_is_restored_exactly_and_two_metadata_areas_keep_the_size() {
    skip_unless_root!("loop devices, lvm2");
    let work = tempfile::tempdir_in(test_fixtures::disk::target_tmp()).unwrap();
    let dir = work.path();
    let master = dir.join("master.img");
    run(std::process::Command::new("truncate")
        .args(["-s", "66M"])
        .arg(&master));
    run(tool("sgdisk")
        .args(["-o", "-n", "1:2048:+64M", "-t", "1:8e00"])
        .arg(&master));
    let (raw_at, raw_len) = {
        let pv = OffsetLoop::attach(&master, MIB, 64 * MIB, false);
        let d = &pv.dev;
        let name = d.display().to_string();
        lvm_ok("pvcreate", d, &["--metadatacopies", "2", &name]);
        lvm_ok("vgcreate", d, &["-s", "4m", "vgraw", &name]);
        lvm_ok(
            "lvcreate",
            d,
            &[
                "--driverloaded",
                "n",
                "-an",
                "-Zn",
                "-L",
                "16m",
                "-n",
                "raw",
                "vgraw",
            ],
        );
        let e = lv_extents(d, "vgraw", "raw");
        (MIB + e[0].0, e[0].1)
    };
    // The LV: zeros, with non-zero 1 MiB stretches at 0 and 9 MiB and one byte at 13 MiB.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&master)
            .unwrap();
        f.write_all_at(&vec![0u8; raw_len as usize], raw_at)
            .unwrap();
        let junk: Vec<u8> = (0..MIB as u32).map(|i| (i * 31 % 251 + 1) as u8).collect();
        f.write_all_at(&junk, raw_at).unwrap();
        f.write_all_at(&junk, raw_at + 9 * MIB).unwrap();
        f.write_all_at(&[7], raw_at + 13 * MIB + 5).unwrap();
    }
    let image = dir.join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest")).unwrap()).unwrap();
    let r = &manifest["regions"][1];
    assert_eq!(
        (r["name"].as_str(), r["filesystem"].as_str()),
        (Some("p1"), Some("lvm2"))
    );
    // The LV was scanned: only non-zero blocks stored, and the gaps must read as zeros.
    assert_eq!(r["fill"], "zero");
    assert!(r["used_bytes"].as_u64().unwrap() < 8 * MIB, "{r}");

    // A 1.5× target full of old bytes.
    let target = dir.join("target.img");
    std::fs::write(&target, vec![0xa5u8; 99 * MIB as usize]).unwrap();
    let out = imgtool()
        .args(["restore", "--json"])
        .arg(&image)
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("keeps its size") && err.contains("second metadata area"),
        "{err}"
    );
    assert_eq!(
        bytes_at(&target, raw_at, raw_len),
        bytes_at(&master, raw_at, raw_len),
        "the LV's bytes"
    );
    let p = extents(&target)[0];
    let pv = OffsetLoop::attach(&target, p.start, p.size, true);
    clean("pvck", &pv.dev, &[&pv.dev.display().to_string()]);
    clean("vgck", &pv.dev, &["vgraw"]);
    let f = facts(&pv.dev, "vgraw");
    assert_eq!(f.pe_count, 15, "not grown");
}

/// An lvm2 command that sees exactly the devices `devs`; panics with its output on failure.
fn lvm_on(cmd: &str, devs: &[&Path], args: &[&str]) -> String {
    let mut c = tool(cmd);
    c.env("LVM_SUPPRESS_FD_WARNINGS", "1");
    for d in devs {
        c.arg("--devices").arg(d);
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

#[test]
fn a_vg_member_whose_metadata_copy_lvm2_ignores_keeps_its_lvs() {
    // Review finding 1 with lvm2 itself: `vgcreate --vgmetadatacopies 1` over two PVs
    // flags one PV's copy ignored (a stale text stays there). That PV was probed as an
    // orphan: its head stored, `fill: keep`, its LV's bytes lost.
    skip_unless_root!("loop devices, lvm2");
    let work = tempfile::tempdir_in(test_fixtures::disk::target_tmp()).unwrap();
    let files = [work.path().join("a.pv"), work.path().join("b.pv")];
    for f in &files {
        std::fs::File::create(f).unwrap().set_len(64 * MIB).unwrap();
    }
    let pe_start = {
        let a = OffsetLoop::attach(&files[0], 0, 64 * MIB, false);
        let b = OffsetLoop::attach(&files[1], 0, 64 * MIB, false);
        let devs = [a.dev.as_path(), b.dev.as_path()];
        let names: Vec<String> = devs.iter().map(|d| d.display().to_string()).collect();
        lvm_on("pvcreate", &devs, &[&names[0], &names[1]]);
        lvm_on(
            "vgcreate",
            &devs,
            &[
                "--vgmetadatacopies",
                "1",
                "-s",
                "4m",
                "vgm",
                &names[0],
                &names[1],
            ],
        );
        for (lv, dev) in [("la", &names[0]), ("lb", &names[1])] {
            let on = format!("{dev}:0-1");
            lvm_on(
                "lvcreate",
                &devs,
                &[
                    "--driverloaded",
                    "n",
                    "-an",
                    "-Zn",
                    "-l",
                    "2",
                    "-n",
                    lv,
                    "vgm",
                    &on,
                ],
            );
        }
        let used = lvm_on(
            "pvs",
            &devs,
            &[
                "--noheadings",
                "-o",
                "pv_mda_used_count",
                &names[0],
                &names[1],
            ],
        );
        let mut used: Vec<&str> = used.split_whitespace().collect();
        used.sort();
        assert_eq!(used, ["0", "1"], "one PV's copy is ignored");
        let s = lvm_on(
            "pvs",
            &devs,
            &[
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "pe_start",
                &names[0],
            ],
        );
        s.trim().parse::<u64>().unwrap()
    };
    // Each LV (extents 0-1 of its PV) holds data: 1 MiB of junk 2 MiB in.
    let junk: Vec<u8> = (0..MIB as u32).map(|i| (i * 7 % 251 + 1) as u8).collect();
    let at = pe_start + 2 * MIB;
    for f in &files {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
        file.write_all_at(&junk, at).unwrap();
    }
    let mut kinds = vec![];
    for f in &files {
        let disk = imgtool::disk::MemDisk::from_vec(std::fs::read(f).unwrap(), 512);
        let part = imgtool::fs::PartView {
            disk: &disk,
            start: 0,
            size: 64 * MIB,
        };
        let info = imgtool::fs::probe(&part, false).unwrap();
        let covered = info.used.iter().any(|&(o, l)| o <= at && at + MIB <= o + l);
        assert!(
            covered,
            "{}: the LV's data is not stored: {info:?}",
            f.display()
        );
        assert_eq!(info.fill, imgtool::fs::Fill::Zero, "{info:?}");
        kinds.push(info.kind);
    }
    // The PV with the current copy is read as LVM (its LV scanned: no file system); the
    // other one, with no current copy of its own, is not understood: non-zero blocks.
    kinds.sort();
    assert_eq!(kinds, ["lvm2", "unknown"]);
}
