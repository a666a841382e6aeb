//! XFS on real file systems (root: loop devices, mounts): the shared mount helper, and a
//! master with deleted data captured to its used blocks, restored onto an equal and a
//! 1.5× disk (`xfs_repair -n` clean, trees equal inode by inode, grown on the larger).

mod common;
use common::*;
use imgtool::disk::Disk;
use std::path::Path;
use std::process::Command;
use test_fixtures::xfs::{assert_repair_clean, geometry, xfs_master};

const MIB: u64 = 1 << 20;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A disk file of `disk` bytes with an XFS of `fs` bytes at 1 MiB (made in its own file,
/// then copied in: no loop device).
fn xfs_disk_file(dir: &Path, disk: u64, fs: u64) -> std::path::PathBuf {
    let part = dir.join("part.img");
    let f = std::fs::File::create(&part).unwrap();
    f.set_len(fs).unwrap();
    sh(test_fixtures::root::tool("mkfs.xfs")
        .args(["-q", "-f"])
        .arg(&part));
    let path = dir.join("disk.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(disk).unwrap();
    sh(Command::new("dd")
        .arg(format!("if={}", part.display()))
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));
    std::fs::remove_file(&part).unwrap();
    path
}

#[test]
fn with_mounted_mounts_a_byte_range_of_a_file_and_cleans_up() {
    skip_unless_root!("loop devices, mount");
    let dir = tempfile::tempdir().unwrap();
    let path = xfs_disk_file(dir.path(), 400 * MIB, 300 * MIB);
    let disk = Disk::open_rw(&path).unwrap();
    let mut seen = None;
    let n = imgtool::mount::with_mounted(&disk, MIB, 300 * MIB, "xfs", "partition 1", |m| {
        std::fs::write(m.join("hello"), b"world").unwrap();
        seen = Some(m.to_path_buf());
        Ok(42)
    })
    .unwrap();
    assert_eq!(n, 42);
    let m = seen.unwrap();
    assert!(!m.exists(), "mount point {} left behind", m.display());
    // Mounted again: the file written through the loop device is on the disk file.
    let back = imgtool::mount::with_mounted(&disk, MIB, 300 * MIB, "xfs", "partition 1", |m| {
        Ok(std::fs::read(m.join("hello")).unwrap())
    })
    .unwrap();
    assert_eq!(back, b"world");
    // An error from the closure still unmounts and detaches.
    let e = imgtool::mount::with_mounted(&disk, MIB, 300 * MIB, "xfs", "partition 1", |_| {
        Err::<(), _>(imgtool::Error::Selection("closure failed".into()))
    });
    assert!(e.is_err());
    let losetup = sh(test_fixtures::root::tool("losetup").args(["-j"]).arg(&path));
    assert!(losetup.trim().is_empty(), "loop devices left: {losetup}");
}

/// `used_bytes` and `filesystem` of region `p1` in the image's manifest.
fn region_p1(image: &Path) -> (u64, String) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest")).unwrap()).unwrap();
    let r = m["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "p1")
        .unwrap()
        .clone();
    (
        r["used_bytes"].as_u64().unwrap(),
        r["filesystem"].as_str().unwrap().to_string(),
    )
}

#[test]
fn xfs_master_captures_used_blocks_restores_clean_and_grows_on_a_larger_disk() {
    skip_unless_root!("loop devices, mount");
    let work = tempfile::tempdir_in(target_tmp()).unwrap();
    let master = xfs_master(&work.path().join("master.img"), 512, 80, 120);
    let image = work.path().join("img");
    run(imgtool()
        .args(["capture", "-q"])
        .arg(&master.path)
        .arg(&image));
    let (used, fs) = region_p1(&image);
    assert_eq!(fs, "xfs");
    eprintln!(
        "xfs master: df used {} MiB, XFS used (with the log) {} MiB, image used_bytes {} MiB",
        master.df_used / MIB,
        master.xfs_used / MIB,
        used / MIB
    );
    // A superset of what XFS holds, within the bound (used bytes by XFS's own
    // count, which includes the internal log that df leaves out).
    assert!(used >= master.xfs_used, "{used} < {}", master.xfs_used);
    let bound = master.xfs_used + master.xfs_used * 15 / 100 + 16 * MIB;
    assert!(used <= bound, "image stores {used} bytes, bound {bound}");

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
        assert_repair_clean(&part);
        let g = geometry(&part);
        let fs_size = g["dblocks"] * g["blocksize"];
        let part_size = std::fs::metadata(&part)
            .map(|_| sh(tool("blockdev").arg("--getsize64").arg(&part)))
            .unwrap();
        let part_size: u64 = part_size.trim().parse().unwrap();
        if name == "equal" {
            assert_eq!(fs_size, master.fs_size, "{name}");
        } else {
            assert!(fs_size > master.fs_size, "{name}: not grown ({fs_size})");
            assert!(
                fs_size + MIB > part_size,
                "{name}: {fs_size} of {part_size}"
            );
        }
        let m = l.mount_opts(1, "xfs", "ro,nouuid");
        assert_eq!(snapshot(&m), master.tree, "{name}: trees differ");
        drop(l);
    }
}
