//! Mounting one partition of a target before its partition table exists: a loop device
//! over exactly `[offset, offset + size)` of the target (a disk-image file or a block
//! device), mounted into a private temporary directory, for file systems that only grow
//! while mounted (XFS, btrfs). [`with_mounted`] runs a closure with the mount point and
//! always unmounts, detaches the loop device and removes the directory, also when the
//! closure or a step fails.
//!
//! Everything goes through system calls ([`crate::sys`]'s loop ioctls, `rustix`'s
//! `mount`/`umount2`): the node agent's ramdisk has no `losetup` or `mount` binary. The
//! kernel needs the `loop` module and the file system's own. Nothing here knows what the
//! closure does with the mount.

use crate::disk::{BlockIo, Disk};
use crate::error::{Error, Result};
use crate::sys;
use rustix::mount::{MountFlags, UnmountFlags};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a free loop device is asked for again when another process took the one
/// `LOOP_CTL_GET_FREE` named before this one configured it (`EBUSY`).
const LOOP_RETRIES: u32 = 16;

/// How many mount-point names are tried before giving up (each taken one was made by
/// someone else since: a name holds this process's id and the time).
const MKDIR_ATTEMPTS: u32 = 64;

/// How often a busy unmount is retried (100 ms apart) before it is detached lazily.
const UNMOUNT_RETRIES: u32 = 20;

/// Mounts `[offset, offset + size)` of `target` as `fstype` (read-write, `nosuid`,
/// `nodev`, `noexec`) in a private temporary directory, runs `f` with that directory and
/// unmounts. `what` names the partition in errors (`partition 2 of /dev/sda`).
pub fn with_mounted<T>(
    target: &Disk,
    offset: u64,
    size: u64,
    fstype: &str,
    what: &str,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    with_mounted_opts(target, offset, size, fstype, "", what, f)
}

/// [`with_mounted`] with file-system mount options (`data`, e.g. `nouuid` for XFS; empty
/// for none).
pub fn with_mounted_opts<T>(
    target: &Disk,
    offset: u64,
    size: u64,
    fstype: &str,
    data: &str,
    what: &str,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let end = offset.checked_add(size).filter(|e| *e <= target.size());
    if end.is_none() || size == 0 {
        return Err(Error::Device {
            device: target.path().to_path_buf(),
            what: format!("mounting {what}: {size} bytes at {offset} are not on the disk"),
            err: io::Error::from(io::ErrorKind::InvalidInput),
        });
    }
    let lo = LoopDevice::attach(target.path(), offset, size, what)?;
    let mut mnt = MountPoint::create(what)?;
    mnt.mount(&lo.path, fstype, data, what)?;
    let out = f(&mnt.dir);
    let unmounted = mnt.unmount(what);
    drop(mnt);
    drop(lo);
    let out = out?;
    unmounted?;
    Ok(out)
}

/// A loop device over a byte range of a file or block device, with `LO_FLAGS_AUTOCLEAR`:
/// the kernel detaches it when the last user (the mount, then this handle) lets go; the
/// drop also asks for the detach explicitly (deferred while mounted: a diskless node's
/// root stays attached for as long as it is mounted).
pub struct LoopDevice {
    file: File,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `[offset, offset + size)` of `backing`; `what` names it in errors.
    pub fn attach(backing: &Path, offset: u64, size: u64, what: &str) -> Result<LoopDevice> {
        let fail = |step: String, err: io::Error| Error::Device {
            device: backing.to_path_buf(),
            what: format!("{step} for {what}"),
            err,
        };
        let control = rw_open(Path::new("/dev/loop-control")).map_err(|e| {
            fail(
                "opening /dev/loop-control (is the loop module loaded?)".into(),
                e,
            )
        })?;
        let file = rw_open(backing).map_err(|e| fail("opening the backing disk".into(), e))?;
        let mut last = io::Error::from_raw_os_error(libc::EBUSY);
        for _ in 0..LOOP_RETRIES {
            let n = sys::loop_ctl_get_free(&control)
                .map_err(|e| fail("LOOP_CTL_GET_FREE".into(), e))?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = rw_open(&path).map_err(|e| fail(format!("opening {}", path.display()), e))?;
            match sys::loop_configure(&dev, &file, offset, size, sys::LO_FLAGS_AUTOCLEAR) {
                Ok(()) => return Ok(LoopDevice { file: dev, path }),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(fail(format!("LOOP_CONFIGURE of {}", path.display()), e)),
            }
        }
        Err(fail(
            format!("finding a free loop device ({LOOP_RETRIES} were taken by others)"),
            last,
        ))
    }
}

impl LoopDevice {
    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Autoclear detaches it when this handle closes; an explicit request is harmless
        // (deferred while still in use) and covers a kernel that lost the flag.
        let _ = sys::loop_clr_fd(&self.file);
    }
}

fn rw_open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// A private (0700) temporary directory and, once [`MountPoint::mount`] succeeded, the
/// file system mounted on it. Dropping it unmounts (lazily when busy) and removes it.
struct MountPoint {
    dir: PathBuf,
    mounted: bool,
}

impl MountPoint {
    /// A new directory under the temp dir, named by process, time and attempt, created
    /// with `mkdir` (which fails on any existing name, a planted symlink included: the
    /// next name is tried). Not from `getrandom`: in the node agent (PID 1 of a ramdisk)
    /// the kernel's random pool may not be initialised yet, and `getrandom` would block
    /// the clone forever (seen under QEMU TCG: no `crng init done` in minutes).
    fn create(what: &str) -> Result<MountPoint> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut last = None;
        for attempt in 0..MKDIR_ATTEMPTS {
            let dir = base.join(format!(
                "imgtool-mount-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    return Ok(MountPoint {
                        dir,
                        mounted: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(Error::io("creating the mount point", &dir, e)),
            }
        }
        Err(Error::Device {
            device: base,
            what: format!("choosing a mount point for {what}: {MKDIR_ATTEMPTS} names taken"),
            err: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        })
    }

    fn mount(&mut self, dev: &Path, fstype: &str, data: &str, what: &str) -> Result<()> {
        let data = CString::new(data).map_err(|_| Error::Device {
            device: dev.to_path_buf(),
            what: format!("mounting {what}: mount options hold a NUL byte"),
            err: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        rustix::mount::mount(dev, &self.dir, fstype, flags, data.as_c_str()).map_err(|e| {
            Error::Device {
                device: dev.to_path_buf(),
                what: format!(
                    "mounting {what} as {fstype} on {} (is the {fstype} module loaded?)",
                    self.dir.display()
                ),
                err: e.into(),
            }
        })?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts, retrying while busy; an error when it stays mounted.
    fn unmount(&mut self, what: &str) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            match rustix::mount::unmount(&self.dir, UnmountFlags::empty()) {
                Ok(()) => {
                    self.mounted = false;
                    return Ok(());
                }
                Err(e) if e == rustix::io::Errno::BUSY && tries < UNMOUNT_RETRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(Error::Device {
                        device: self.dir.clone(),
                        what: format!("unmounting {what}"),
                        err: e.into(),
                    })
                }
            }
        }
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if self.mounted && rustix::mount::unmount(&self.dir, UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
