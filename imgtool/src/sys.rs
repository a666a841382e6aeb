//! The block-device ioctls no crate wraps, each in one safe function: `BLKGETSIZE64`,
//! `BLKFLSBUF`, `BLKRRPART`, `BLKZEROOUT` and `BLKPG` (with the two kernel structs it
//! takes, declared here because neither `rustix` nor `nix` has them); the loop-device
//! ioctls (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`, `LOOP_CLR_FD`, `<linux/loop.h>`) that
//! [`crate::mount`] attaches a partition with; and XFS's geometry and grow ioctls
//! (`XFS_IOC_FSGEOMETRY`, `XFS_IOC_FSGROWFSDATA`, `<xfs/xfs_fs.h>`) that
//! [`crate::grow`] grows a mounted XFS with; btrfs's resize (`BTRFS_IOC_RESIZE`,
//! `<linux/btrfs.h>`) for a mounted btrfs. Opcodes are built
//! with `rustix::ioctl::opcode` from the kernel's `_IO`/`_IOR` definitions in
//! `<linux/fs.h>` (group `0x12`), not typed in as numbers. What `rustix` does offer
//! (`BLKSSZGET`, `fallocate`, `fadvise`) [`crate::disk`] calls directly. Nothing here
//! knows about disks or images.

use rustix::fd::AsFd;
use rustix::ioctl::{ioctl, opcode, Getter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, Updater};
use std::io;

/// The ioctl group of block devices (`<linux/fs.h>`: `_IO(0x12, …)`).
const BLOCK: u8 = 0x12;

/// `BLKGETSIZE64` (`_IOR(0x12, 114, size_t)`): the device's size in bytes.
pub fn blkgetsize64(fd: impl AsFd) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 is a getter that writes one size_t (u64 on Linux' 64-bit ABIs,
    // and the kernel writes a u64 on every ABI) through the pointer.
    let size = unsafe {
        ioctl(
            fd,
            Getter::<{ opcode::read::<usize>(BLOCK, 114) }, u64>::new(),
        )
    }?;
    Ok(size)
}

/// `BLKFLSBUF` (`_IO(0x12, 97)`): drop the device's cached pages.
pub fn blkflsbuf(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { ioctl(fd, NoArg::<{ opcode::none(BLOCK, 97) }>::new()) }?;
    Ok(())
}

/// `BLKRRPART` (`_IO(0x12, 95)`): ask the kernel to re-read the partition table (fails
/// while any partition of the disk is open).
pub fn blkrrpart(fd: impl AsFd) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    unsafe { ioctl(fd, NoArg::<{ opcode::none(BLOCK, 95) }>::new()) }?;
    Ok(())
}

/// `BLKZEROOUT` (`_IO(0x12, 127)`): make `len` bytes at `offset` read as zeros
/// (discard-zeroing or write-zeroes where the device can).
pub fn blkzeroout(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: BLKZEROOUT reads two u64 (start, length) through the pointer; Setter passes
    // a pointer to its owned array.
    unsafe {
        ioctl(
            fd,
            Setter::<{ opcode::none(BLOCK, 127) }, [u64; 2]>::new([offset, len]),
        )
    }?;
    Ok(())
}

/// `BLKPG` operations (`<linux/blkpg.h>`).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum BlkpgOp {
    /// `BLKPG_ADD_PARTITION`
    Add = 1,
    /// `BLKPG_DEL_PARTITION`
    Delete = 2,
}

/// `struct blkpg_partition` (`<linux/blkpg.h>`): one partition for `BLKPG`. Declared
/// here because no crate has it; byte offsets, not sectors. `devname` and `volname` are
/// unused by the kernel and stay zero.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` (`<linux/blkpg.h>`): the `BLKPG` argument, pointing at a
/// [`BlkpgPartition`]. Declared here because no crate has it.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `BLKPG` (`_IO(0x12, 105)`): add or delete partition `pno` (`start`, `len` in bytes)
/// of the disk `fd`, the way `partx` does, without re-reading the whole table.
pub fn blkpg(fd: impl AsFd, op: BlkpgOp, pno: u32, start: u64, len: u64) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: len as libc::c_longlong,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: op as libc::c_int,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: &mut part as *mut BlkpgPartition as *mut libc::c_void,
    };
    // SAFETY: arg is a valid blkpg_ioctl_arg whose data points to a blkpg_partition that
    // lives for the duration of the call; the kernel only reads both.
    unsafe {
        ioctl(
            fd,
            Updater::<{ opcode::none(BLOCK, 105) }, BlkpgIoctlArg>::new(&mut arg),
        )
    }?;
    Ok(())
}

/// The ioctl group of loop devices (`<linux/loop.h>`: `0x4C`, `'L'`).
const LOOP: u8 = 0x4C;

/// An ioctl without argument whose result is its return value (`LOOP_CTL_GET_FREE`).
struct ReturnsInt<const OPCODE: Opcode>;

// SAFETY: no argument is passed, nothing in user space is written; the output is the
// ioctl's return value only.
unsafe impl<const OPCODE: Opcode> Ioctl for ReturnsInt<OPCODE> {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> Opcode {
        OPCODE
    }
    fn as_ptr(&mut self) -> *mut libc::c_void {
        std::ptr::null_mut()
    }
    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut libc::c_void,
    ) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// `LOOP_CTL_GET_FREE` (`0x4C82`) on `/dev/loop-control`: the number of a free loop
/// device (the kernel creates one when none is free).
pub fn loop_ctl_get_free(control: impl AsFd) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the device number.
    let n = unsafe { ioctl(control, ReturnsInt::<{ opcode::none(LOOP, 0x82) }>) }?;
    u32::try_from(n).map_err(|_| io::Error::other(format!("LOOP_CTL_GET_FREE returned {n}")))
}

/// `LO_FLAGS_READ_ONLY`: the loop device refuses writes.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the loop device detaches itself when its last user closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (`<linux/loop.h>`), 232 bytes. Declared here because no crate
/// has it; only offset, size limit and flags are set, the rest stays zero.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (`<linux/loop.h>`, Linux ≥ 5.8), the `LOOP_CONFIGURE` argument.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `LOOP_CONFIGURE` (`0x4C0A`): back the loop device `dev` by `backing`, exposing exactly
/// `[offset, offset + size)` of it, with `flags` (`LO_FLAGS_*`), in one step. `EBUSY`
/// means another process took the device first.
pub fn loop_configure(
    dev: impl AsFd,
    backing: impl AsFd,
    offset: u64,
    size: u64,
    flags: u32,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = backing.as_fd().as_raw_fd();
    let cfg = LoopConfig {
        fd: u32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one loop_config through the pointer; Setter passes a
    // pointer to its owned value, which lives for the call. The kernel takes its own
    // reference to the backing file.
    unsafe {
        ioctl(
            dev,
            Setter::<{ opcode::none(LOOP, 0x0A) }, LoopConfig>::new(cfg),
        )
    }?;
    Ok(())
}

/// `LOOP_CLR_FD` (`0x4C01`): detach the loop device (deferred by the kernel while it is
/// still open or mounted).
pub fn loop_clr_fd(dev: impl AsFd) -> io::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    unsafe { ioctl(dev, NoArg::<{ opcode::none(LOOP, 0x01) }>::new()) }?;
    Ok(())
}

/// The ioctl group of XFS (`<xfs/xfs_fs.h>`: `'X'`).
const XFS: u8 = b'X';

/// `struct xfs_fsop_geom` (`<xfs/xfs_fs.h>`, the v5 geometry, 256 bytes). Declared here
/// because no crate has it; fields after `logsunit` are read as reserved.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct XfsGeometry {
    pub blocksize: u32,
    pub rtextsize: u32,
    pub agblocks: u32,
    pub agcount: u32,
    pub logblocks: u32,
    pub sectsize: u32,
    pub inodesize: u32,
    pub imaxpct: u32,
    pub datablocks: u64,
    pub rtblocks: u64,
    pub rtextents: u64,
    pub logstart: u64,
    pub uuid: [u8; 16],
    pub sunit: u32,
    pub swidth: u32,
    pub version: i32,
    pub flags: u32,
    pub logsectsize: u32,
    pub rtsectsize: u32,
    pub dirblocksize: u32,
    pub logsunit: u32,
    reserved: [u32; 36],
}

/// `XFS_IOC_FSGEOMETRY` (`_IOR('X', 126, struct xfs_fsop_geom)`) on any file or
/// directory of a mounted XFS: its geometry.
pub fn xfs_fsgeometry(fd: impl AsFd) -> io::Result<XfsGeometry> {
    // SAFETY: the kernel writes one xfs_fsop_geom (256 bytes, the size in the opcode)
    // through the pointer; every bit pattern is a valid XfsGeometry.
    let g = unsafe {
        ioctl(
            fd,
            Getter::<{ opcode::read::<XfsGeometry>(XFS, 126) }, XfsGeometry>::new(),
        )
    }?;
    Ok(g)
}

/// `struct xfs_growfs_data` (`<xfs/xfs_fs.h>`): the new data-section size in blocks and
/// the inode space limit (percent).
#[repr(C)]
struct XfsGrowfsData {
    newblocks: u64,
    imaxpct: u32,
}

/// `XFS_IOC_FSGROWFSDATA` (`_IOW('X', 110, struct xfs_growfs_data)`) on a mounted XFS:
/// grow its data section to `newblocks` file-system blocks (what `xfs_growfs -d` does).
pub fn xfs_growfs_data(fd: impl AsFd, newblocks: u64, imaxpct: u32) -> io::Result<()> {
    // SAFETY: the kernel reads one xfs_growfs_data through the pointer; Setter passes a
    // pointer to its owned value.
    unsafe {
        ioctl(
            fd,
            Setter::<{ opcode::write::<XfsGrowfsData>(XFS, 110) }, XfsGrowfsData>::new(
                XfsGrowfsData { newblocks, imaxpct },
            ),
        )
    }?;
    Ok(())
}

// btrfs (the btrfs grow's block): `BTRFS_IOC_RESIZE`, `<linux/btrfs.h>`.
const BTRFS: u8 = 0x94;

/// `struct btrfs_ioctl_vol_args`: an fd (unused by resize) and a NUL-terminated name
/// (`BTRFS_PATH_NAME_MAX` 4087 + 1 bytes).
#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `BTRFS_IOC_RESIZE` (`_IOW(0x94, 3, struct btrfs_ioctl_vol_args)`) on the mount point
/// of a btrfs: resize one device as `spec` says (`"1:max"`: device 1 to its whole size),
/// what `btrfs filesystem resize` does.
pub fn btrfs_resize(fd: impl AsFd, spec: &str) -> io::Result<()> {
    let mut args = BtrfsVolArgs {
        fd: 0,
        name: [0; 4088],
    };
    if spec.len() >= args.name.len() || spec.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "resize spec too long",
        ));
    }
    args.name[..spec.len()].copy_from_slice(spec.as_bytes());
    // SAFETY: the kernel reads one btrfs_ioctl_vol_args (4096 bytes, the size in the
    // opcode) through the pointer; Setter passes a pointer to its owned value.
    unsafe {
        ioctl(
            fd,
            Setter::<{ opcode::write::<BtrfsVolArgs>(BTRFS, 3) }, BtrfsVolArgs>::new(args),
        )
    }?;
    Ok(())
}

#[cfg(test)]
mod btrfs_tests {
    use super::*;

    /// `<linux/btrfs.h>`: BTRFS_IOC_RESIZE is 0x50009403, its argument 4096 bytes.
    #[test]
    fn btrfs_resize_is_the_kernels() {
        assert_eq!(std::mem::size_of::<BtrfsVolArgs>(), 4096);
        assert_eq!(opcode::write::<BtrfsVolArgs>(BTRFS, 3) as u64, 0x5000_9403);
        let f = tempfile::tempfile().unwrap();
        assert!(btrfs_resize(&f, "1:max").is_err());
        assert!(btrfs_resize(&f, &"9".repeat(5000)).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The opcodes match the kernel's numbers (`<linux/fs.h>` on x86_64/aarch64).
    #[test]
    fn opcodes_are_the_kernels() {
        assert_eq!(opcode::read::<usize>(BLOCK, 114) as u64, 0x8008_1272);
        assert_eq!(opcode::none(BLOCK, 97) as u64, 0x1261);
        assert_eq!(opcode::none(BLOCK, 95) as u64, 0x125f);
        assert_eq!(opcode::none(BLOCK, 127) as u64, 0x127f);
        assert_eq!(opcode::none(BLOCK, 105) as u64, 0x1269);
        assert_eq!(opcode::none(LOOP, 0x82) as u64, 0x4C82);
        assert_eq!(opcode::none(LOOP, 0x0A) as u64, 0x4C0A);
        assert_eq!(opcode::none(LOOP, 0x01) as u64, 0x4C01);
        // xfsprogs' xfs_fs.h: XFS_IOC_FSGEOMETRY, XFS_IOC_FSGROWFSDATA.
        assert_eq!(opcode::read::<XfsGeometry>(XFS, 126) as u64, 0x8100_587e);
        assert_eq!(opcode::write::<XfsGrowfsData>(XFS, 110) as u64, 0x4010_586e);
    }

    /// The kernel structs have the kernel's sizes (`<linux/loop.h>`, `<xfs/xfs_fs.h>`).
    #[test]
    fn kernel_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::size_of::<XfsGeometry>(), 256);
        assert_eq!(std::mem::size_of::<XfsGrowfsData>(), 16);
    }

    /// On a regular file every block ioctl is refused (ENOTTY), not undefined.
    #[test]
    fn block_ioctls_on_a_file_are_refused() {
        let f = tempfile::tempfile().unwrap();
        assert!(blkgetsize64(&f).is_err());
        assert!(blkflsbuf(&f).is_err());
        assert!(blkzeroout(&f, 0, 512).is_err());
        assert!(blkpg(&f, BlkpgOp::Delete, 1, 0, 0).is_err());
    }
}
