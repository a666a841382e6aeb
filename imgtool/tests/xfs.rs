//! XFS: the used-block reader, mounted grow, capture → restore (root).

use imgtool::disk::Disk;
use std::path::Path;
use std::process::Command;
use test_fixtures::skip_unless_root;

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
