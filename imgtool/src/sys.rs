//! The block-device ioctls no crate wraps, each in one safe function: `BLKGETSIZE64`,
//! `BLKFLSBUF`, `BLKRRPART`, `BLKZEROOUT` and `BLKPG` (with the two kernel structs it
//! takes, declared here because neither `rustix` nor `nix` has them). Opcodes are built
//! with `rustix::ioctl::opcode` from the kernel's `_IO`/`_IOR` definitions in
//! `<linux/fs.h>` (group `0x12`), not typed in as numbers. What `rustix` does offer
//! (`BLKSSZGET`, `fallocate`, `fadvise`) [`crate::disk`] calls directly. Nothing here
//! knows about disks or images; [`crate::disk::Disk`] is the only caller.

use rustix::fd::AsFd;
use rustix::ioctl::{ioctl, opcode, Getter, NoArg, Setter, Updater};
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
