//! Growing restored file systems to their partition (restore's **grow** phase): ext2/3/4
//! checked and grown with e2fsprogs (`e2fsck -fp`, `resize2fs`) through a path that
//! reaches the partition before its table exists ([`PartitionAccess`]), and running those
//! external programs ([`run_tool`]). Nothing here decides what to restore.

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::manifest::Region;
use std::process::Command;

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
    if !(r.filesystem.starts_with("ext") && target_size >= r.fs_size + 1024 * 1024) {
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
