//! Growing restored file systems to their partition (restore's **grow** phase):
//! [`grow_fs`] picks the way by file-system kind. ext2/3/4 are checked and grown with
//! e2fsprogs (`e2fsck -fp`, `resize2fs`) through a path that reaches the partition before
//! its table exists ([`PartitionAccess`]), running those external programs with
//! [`run_tool`]; XFS grows only while mounted, so [`grow_xfs`] mounts the partition's
//! bytes ([`crate::mount::with_mounted_opts`]) and grows it with XFS's own ioctls (no
//! `xfs_growfs` binary: the agent's ramdisk has none); btrfs likewise, [`grow_btrfs`]
//! with `BTRFS_IOC_RESIZE`. Nothing here decides what to restore.

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::manifest::Region;
use std::process::Command;

/// The least growth worth a grow: a partition at least this much larger than the captured
/// file system.
const MIN_GROWTH: u64 = 1024 * 1024;

/// Grows region `r`'s file system, restored at disk byte `disk_offset`, to its partition
/// of `target_size` bytes, the way its kind needs (ext: [`grow_ext`], XFS: [`grow_xfs`],
/// an LVM2 PV: pvresize's edit, [`grow_lvm`],
/// btrfs: [`grow_btrfs`]):
/// `Some((old, new))` file-system byte sizes, `None` when nothing grew (a kind that does
/// not grow, or less than 1 MiB to gain). Runs after every chunk is written and before
/// the table is written.
pub fn grow_fs(
    target: &Disk,
    r: &Region,
    disk_offset: u64,
    target_size: u64,
) -> Result<Option<(u64, u64)>> {
    match r.filesystem.as_str() {
        k if k.starts_with("ext") => grow_ext(target, r, disk_offset, target_size),
        "xfs" => grow_xfs(target, r, disk_offset, target_size),
        "btrfs" => grow_btrfs(target, r, disk_offset, target_size),
        "lvm2" => grow_lvm(target, r, disk_offset, target_size),
        _ => Ok(None),
    }
}

/// Grows region `r` (an `lvm2` PV restored at disk byte `disk_offset`) to a partition of
/// `target_size` bytes with [`crate::fs::lvm::resize::resize`]: `Some((old, new))`
/// extent-area ends when it grew. A PV that keeps its size is reported on stderr (the
/// agent's console) and is not an error.
pub fn grow_lvm(
    target: &Disk,
    r: &Region,
    disk_offset: u64,
    target_size: u64,
) -> Result<Option<(u64, u64)>> {
    use crate::fs::lvm::resize::{resize, Outcome};
    if r.filesystem != "lvm2" {
        return Ok(None);
    }
    let tpath = target.path();
    match resize(target, disk_offset, target_size) {
        Ok(Outcome::Grown(old, new)) => Ok(Some((old, new))),
        Ok(Outcome::Same) => Ok(None),
        Ok(Outcome::Kept(why)) => {
            eprintln!(
                "imgtool: partition {} of {}: the LVM PV keeps its size ({why}); run `pvresize` on the node to use the rest",
                r.number,
                tpath.display()
            );
            Ok(None)
        }
        Err(e) => Err(Error::Device {
            device: tpath.to_path_buf(),
            what: format!("resizing the LVM PV of partition {}", r.number),
            err: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        }),
    }
}

/// Grows region `r`'s XFS (at disk byte `disk_offset`) to `target_size` bytes when that
/// is at least 1 MiB more than the captured file system: mounted (with `nouuid`, so a
/// host that has the master's file system mounted can restore its image too), then
/// `XFS_IOC_FSGROWFSDATA` to the partition's whole blocks, as `xfs_growfs -d` does.
/// Returns the old and new data-section sizes in bytes, read from the mounted geometry.
pub fn grow_xfs(
    target: &Disk,
    r: &Region,
    disk_offset: u64,
    target_size: u64,
) -> Result<Option<(u64, u64)>> {
    if r.filesystem != "xfs" || target_size < r.fs_size.saturating_add(MIN_GROWTH) {
        return Ok(None);
    }
    let what = format!("partition {} of {}", r.number, target.path().display());
    let grown = crate::mount::with_mounted_opts(
        target,
        disk_offset,
        target_size,
        "xfs",
        "nouuid",
        &what,
        |dir| grow_mounted_xfs(dir, target_size, &what),
    )?;
    Ok(Some(grown))
}

/// Grows region `r`'s btrfs (at disk byte `disk_offset`) to its partition of
/// `target_size` bytes when that is at least 1 MiB more than the captured file system:
/// mounted, then `BTRFS_IOC_RESIZE` with `"<devid>:max"` (the device id from the
/// restored superblock), as `btrfs filesystem resize` does; no `btrfs` binary (the
/// agent's ramdisk has none). Not grown (`None`, a warning) when the kernel refuses the
/// mount for a duplicate fsid ([`btrfs_mount_refused`]). Skipped (`None`) when the probe
/// cannot read the restored superblock as a single-device btrfs (a file system stored as
/// its non-zero blocks for that reason would not mount alone). Returns the old and new sizes in bytes, the new
/// one read back from the superblock after unmounting.
pub fn grow_btrfs(
    target: &Disk,
    r: &Region,
    disk_offset: u64,
    target_size: u64,
) -> Result<Option<(u64, u64)>> {
    if r.filesystem != "btrfs" || target_size < r.fs_size.saturating_add(MIN_GROWTH) {
        return Ok(None);
    }
    let what = format!("partition {} of {}", r.number, target.path().display());
    let view = crate::fs::PartView {
        disk: target,
        start: disk_offset,
        size: target_size,
    };
    let read_fail = |err: std::io::Error| Error::Device {
        device: target.path().to_path_buf(),
        what: format!("reading the btrfs superblock of {what}"),
        err,
    };
    let Some((devid, _)) = crate::fs::btrfs::device(&view).map_err(read_fail)? else {
        return Ok(None);
    };
    let mounted = std::cell::Cell::new(false);
    let grown =
        crate::mount::with_mounted(target, disk_offset, target_size, "btrfs", &what, |dir| {
            mounted.set(true);
            let fail = |step: String, err: std::io::Error| Error::Device {
                device: dir.to_path_buf(),
                what: format!("{step} of {what}"),
                err,
            };
            let d =
                std::fs::File::open(dir).map_err(|e| fail("opening the mount point".into(), e))?;
            crate::sys::btrfs_resize(&d, &format!("{devid}:max"))
                .map_err(|e| fail(format!("BTRFS_IOC_RESIZE {devid}:max"), e))
        });
    if let Err(e) = grown {
        return btrfs_mount_refused(e, mounted.get(), &what).map(|()| None);
    }
    let new = crate::fs::btrfs::device(&view)
        .map_err(read_fail)?
        .map_or(0, |(_, bytes)| bytes);
    Ok(Some((r.fs_size, new)))
}

/// Whether a failed btrfs grow is only "not grown": the kernel refused the mount itself
/// (`!mounted`) with `EEXIST` or `EBUSY`, as Linux before 6.7 does when a btrfs with the
/// same fsid is mounted already (a host that has the master's btrfs mounted restores its
/// image). Every byte is written by then and a btrfs that keeps its size is valid, so
/// that is a warning on stderr (`Ok`), like an LVM PV that keeps its size; any other
/// failure, or one after the mount succeeded, stays an error.
fn btrfs_mount_refused(e: Error, mounted: bool, what: &str) -> Result<()> {
    if let Error::Device { err, .. } = &e {
        if !mounted && matches!(err.raw_os_error(), Some(libc::EEXIST | libc::EBUSY)) {
            eprintln!(
                "imgtool: {what}: btrfs not grown: the kernel refused to mount it ({err}; a btrfs with the same fsid is mounted here?); run `btrfs filesystem resize max /` on the node"
            );
            return Ok(());
        }
    }
    Err(e)
}

/// The ioctl half of [`grow_xfs`], on the mount point `dir`.
fn grow_mounted_xfs(dir: &std::path::Path, target_size: u64, what: &str) -> Result<(u64, u64)> {
    let fail = |step: &str, err: std::io::Error| Error::Device {
        device: dir.to_path_buf(),
        what: format!("{step} of {what}"),
        err,
    };
    let d = std::fs::File::open(dir).map_err(|e| fail("opening the mount point", e))?;
    let g = crate::sys::xfs_fsgeometry(&d).map_err(|e| fail("XFS_IOC_FSGEOMETRY", e))?;
    let bs = u64::from(g.blocksize);
    if bs == 0 {
        return Err(fail("XFS geometry", std::io::Error::other("block size 0")));
    }
    let newblocks = target_size / bs;
    if newblocks > g.datablocks {
        crate::sys::xfs_growfs_data(&d, newblocks, g.imaxpct)
            .map_err(|e| fail(&format!("XFS_IOC_FSGROWFSDATA to {newblocks} blocks"), e))?;
    }
    let after = crate::sys::xfs_fsgeometry(&d).map_err(|e| fail("XFS_IOC_FSGEOMETRY", e))?;
    Ok((
        g.datablocks.saturating_mul(bs),
        after.datablocks.saturating_mul(bs),
    ))
}

/// Grows region `r`'s ext file system, restored at disk byte `disk_offset`, to its
/// partition of `target_size` bytes when that is at least 1 MiB larger than the captured
/// file system: `Some((old, new))` file-system byte sizes, `None` when nothing grew.
/// Runs after every chunk is written and before the table is written.
pub fn grow_ext(
    target: &Disk,
    r: &Region,
    disk_offset: u64,
    target_size: u64,
) -> Result<Option<(u64, u64)>> {
    if !(r.filesystem.starts_with("ext") && target_size >= r.fs_size.saturating_add(MIN_GROWTH)) {
        return Ok(None);
    }
    let what = format!("partition {} of {}", r.number, target.path().display());
    let access = PartitionAccess::new(target, disk_offset, target_size, &what)?;
    let dev = access.path();
    run_tool("e2fsck", &["-f", "-p", &dev], &[0, 1], &what)?;
    run_tool(
        "resize2fs",
        &[&dev, &format!("{}K", target_size / 1024)],
        &[0],
        &what,
    )?;
    drop(access);
    let view = crate::fs::PartView {
        disk: target,
        start: disk_offset,
        size: target_size,
    };
    let new = crate::fs::ext::geometry(&view)
        .ok()
        .flatten()
        .map(|(bs, n)| bs * n)
        .unwrap_or(0);
    Ok(Some((r.fs_size, new)))
}

/// A path e2fsprogs can open for one partition of the target, before the partition table
/// exists. On a block device: `DEV?offset=N` (e2fsprogs' own I/O option). On a disk-image
/// file: a loop device over exactly the partition's bytes, because resize2fs truncates a
/// regular file to the new file-system size and ignores `?offset=` when doing so (seen with
/// e2fsprogs 1.47.0: the tail of the grown file system was cut off).
pub enum PartitionAccess {
    Offset(String),
    Loop(String),
}

impl PartitionAccess {
    pub fn new(target: &Disk, offset: u64, size: u64, what: &str) -> Result<Self> {
        if target.is_block_device() {
            return Ok(PartitionAccess::Offset(format!(
                "{}?offset={offset}",
                target.path().display()
            )));
        }
        let out = Command::new("losetup")
            .args([
                "--find",
                "--show",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
            ])
            .arg(target.path())
            .output()
            .map_err(|e| Error::External {
                program: "losetup".into(),
                target: what.into(),
                msg: format!("cannot run it ({e})"),
            })?;
        if !out.status.success() {
            return Err(Error::External {
                program: "losetup".into(),
                target: what.into(),
                msg: format!(
                    "{}; growing ext4 inside a disk-image file needs a loop device (run as root), or keep the master's disk size",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(PartitionAccess::Loop(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }

    pub fn path(&self) -> String {
        match self {
            PartitionAccess::Offset(p) | PartitionAccess::Loop(p) => p.clone(),
        }
    }
}

impl Drop for PartitionAccess {
    fn drop(&mut self) {
        if let PartitionAccess::Loop(dev) = self {
            let _ = Command::new("losetup").arg("-d").arg(dev.as_str()).output();
        }
    }
}

/// Runs an external program, accepting the given exit codes; a failure names the
/// program, its arguments, the target and what it printed.
pub fn run_tool(program: &str, args: &[&str], ok: &[i32], target: &str) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::External {
            program: program.into(),
            target: target.into(),
            msg: format!("cannot run it ({e}); install e2fsprogs"),
        })?;
    let code = out.status.code().unwrap_or(-1);
    if !ok.contains(&code) {
        return Err(Error::External {
            program: format!("{program} {}", args.join(" ")),
            target: target.into(),
            msg: format!(
                "exit {code}: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_btrfs_whose_mount_is_refused_for_its_fsid_is_not_grown_but_restored() {
        // Review finding 6: before, any mount failure failed the whole restore after all
        // data was written (EEXIST on kernels < 6.7 with the master's btrfs mounted).
        let dev = |errno| Error::Device {
            device: "/dev/loop9".into(),
            what: "mounting partition 2 of t.img as btrfs".into(),
            err: std::io::Error::from_raw_os_error(errno),
        };
        for errno in [libc::EEXIST, libc::EBUSY] {
            assert!(btrfs_mount_refused(dev(errno), false, "p2").is_ok());
            // Once mounted, EBUSY (an unmount that fails) is a real error.
            assert!(btrfs_mount_refused(dev(errno), true, "p2").is_err());
        }
        assert!(btrfs_mount_refused(dev(libc::EIO), false, "p2").is_err());
        assert!(btrfs_mount_refused(Error::Poisoned("x"), false, "p2").is_err());
    }
}
