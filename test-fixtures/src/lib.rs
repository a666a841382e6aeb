//! test-fixtures: what the workspace's integration tests stand on (imgtool's, the agent's
//! and the QEMU harness's), so that none of them depends on another program's test crate.
//!
//! - [`root`]: [`skip_unless_root!`] for tests that need root, and [`root::tool`] to find
//!   `/usr/sbin` tools from an ordinary user's `PATH`;
//! - [`disk`]: fixture disks from `scripts/make-fixture.sh` (root), loop devices and
//!   mounts cleaned up in `Drop`, trees compared inode by inode, [`disk::assert_restored`];
//! - [`files`]: disks built on plain files without root (`mke2fs -d`, `mkfs.vfat` +
//!   mtools, `mkswap`, `sgdisk` on a file) and checked without mounting (`e2fsck -fn`,
//!   `debugfs rdump`, `mcopy`);
//! - [`image`]: capture into an image root, damage a chunk, tamper with a manifest;
//! - [`servers`]: `imgtool serve` in a thread, a stock nginx;
//! - [`netns`]: a bridge and hosts in network namespaces a test creates (root);
//! - [`signatures`]: btrfs, XFS, LVM2 and LUKS headers planted on a partition by their
//!   own tools, and what `blkid -p`/`wipefs -n` see there (root).
//!
//! The QEMU harness (firmware, boot trees, VMs) stays in `qemu-tests`.

pub mod disk;
pub mod files;
pub mod image;
pub mod netns;
pub mod root;
pub mod servers;
pub mod signatures;
