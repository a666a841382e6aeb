//! XFS on real file systems (root: loop devices, mounts): the shared mount helper, and a
//! master with deleted data captured to its used blocks, restored onto an equal and a
//! 1.5× disk (`xfs_repair -n` clean, trees equal inode by inode, grown on the larger).
//! Every restore target is full of old bytes (0xa5) first: a zeroed target would hide
//! bytes the image should hold but restore leaves unwritten.

mod common;
use common::*;
use imgtool::disk::Disk;
use std::path::Path;
use std::process::Command;
use test_fixtures::image::region_used;
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

/// A target disk file of `size` bytes full of old bytes (0xa5), not zeros: what a
/// restore leaves unwritten must not read as the zeros a fresh file would give.
fn old_disk(path: &Path, size: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let block = vec![0xa5u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&block[..n as usize]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
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
    let (used, fs) = region_used(&image, "p1");
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
        old_disk(&target, target_size);
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

#[test]
fn with_mounted_refuses_a_range_past_the_disk_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let disk = Disk::open_rw(&path).unwrap();
    for (off, size) in [(MIB, 4 * MIB), (u64::MAX, 2), (0, 0)] {
        let mut ran = false;
        let e = imgtool::mount::with_mounted(&disk, off, size, "xfs", "partition 1", |_| {
            ran = true;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(!ran);
        assert!(e.contains("are not on the disk"), "{e}");
    }
}

#[test]
fn xfs_restored_onto_a_larger_block_device_is_grown_and_clean() {
    // The agent's case: the target is a whole block device, not a file; the grow's loop
    // device sits over a byte range of it.
    skip_unless_root!("loop devices, mount");
    let work = tempfile::tempdir_in(target_tmp()).unwrap();
    let master = xfs_master(&work.path().join("master.img"), 320, 8, 16);
    let image = work.path().join("img");
    run(imgtool()
        .args(["capture", "-q"])
        .arg(&master.path)
        .arg(&image));
    let size = std::fs::metadata(&master.path).unwrap().len();
    let file = work.path().join("node.img");
    old_disk(&file, size * 2);
    let mut node = Loop::attach(&file, false);
    run(imgtool().args(["restore", "-q"]).arg(&image).arg(&node.dev));
    let part = node.part(1);
    assert_repair_clean(&part);
    let g = geometry(&part);
    assert!(
        g["dblocks"] * g["blocksize"] > size + size / 2,
        "not grown: {g:?}"
    );
    let m = node.mount_opts(1, "xfs", "ro,nouuid");
    assert_eq!(snapshot(&m), master.tree);
}

#[test]
fn an_xfs_with_a_dirty_log_is_stored_whole_and_restored_byte_exact() {
    // After a crash the free-space trees are only the last checkpoint: the log holds
    // allocations they do not show. Such an XFS must not be read by its trees.
    skip_unless_root!("loop devices, mount");
    let work = tempfile::tempdir_in(target_tmp()).unwrap();
    let path = work.path().join("dirty.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(322 * MIB)
        .unwrap();
    run(tool("sgdisk").args(["-o", "-n", "1:2048:+320M"]).arg(&path));
    {
        let mut l = Loop::attach(&path, false);
        run(tool("mkfs.xfs").args(["-q", "-f"]).arg(l.part(1)));
        let m = l.mount_opts(1, "xfs", "rw");
        std::fs::write(m.join("a"), vec![7u8; 3 << 20]).unwrap();
        run(Command::new("sync").arg("-f").arg(&m));
        std::fs::write(m.join("b"), vec![9u8; 1 << 20]).unwrap();
        // Down without flushing the log (what a power cut leaves).
        run(tool("xfs_io").args(["-x", "-c", "shutdown"]).arg(&m));
    }
    let image = work.path().join("img");
    run(imgtool().args(["capture", "-q"]).arg(&path).arg(&image));
    let (_, fs) = region_used(&image, "p1");
    assert_eq!(fs, "xfs-unparsed");
    let target = work.path().join("target.img");
    old_disk(&target, 322 * MIB);
    run(imgtool().args(["restore", "-q"]).arg(&image).arg(&target));
    let part = |p: &Path| {
        let mut b = vec![0u8; 320 * MIB as usize];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(p).unwrap(), &mut b, MIB)
            .unwrap();
        b
    };
    assert!(part(&path) == part(&target), "partition bytes differ");
}
