//! The btrfs superblock (4 KiB at 64 KiB): its fields the probe needs, checked against the
//! partition, and the features it understands. Nothing here reads past the superblock.

use super::{csum, Bad};
use crate::bytes::{le16, le32, le64};

/// Where the primary superblock lives, and its size.
pub const OFFSET: u64 = 64 << 10;
pub const SIZE: usize = 4096;
/// The superblock copies btrfs writes (64 KiB, 64 MiB, 256 GiB, 1 PiB) when inside the device.
pub const MIRRORS: [u64; 4] = [OFFSET, 64 << 20, 256 << 30, 1 << 50];
const MAGIC: &[u8; 8] = b"_BHRfS_M";
/// Deepest tree level btrfs builds (`BTRFS_MAX_LEVEL` is 8: levels 0..=7).
pub const MAX_LEVEL: u8 = 7;
/// Size of the `sys_chunk_array`.
pub const SYS_ARRAY_MAX: usize = 2048;
const SYS_ARRAY_AT: usize = 0x32b;

/// Incompat features whose on-disk layout the probe understands: mixed backrefs,
/// default subvolume, mixed groups, lzo, zstd, big metadata, extended irefs, raid56 (the
/// flag only: such chunks are refused one by one), skinny metadata, no holes, metadata
/// uuid, raid1c34 (flag only). Others (zoned, extent tree v2, raid stripe tree, …) move
/// data in ways the extent tree alone does not describe: fallback.
const INCOMPAT_KNOWN: u64 = 0xfff;
const INCOMPAT_METADATA_UUID: u64 = 0x400;
/// compat_ro: free space tree (+ valid), verity, block group tree.
const COMPAT_RO_KNOWN: u64 = 0xf;
/// Superblock flags allowed: WRITTEN, RELOC. Seeding, metadump, an fsid change in
/// progress or an error flag mean fallback.
const FLAGS_KNOWN: u64 = 0x3;

/// The checked superblock.
#[derive(Debug, Clone)]
pub struct Super {
    pub generation: u64,
    /// Logical address and level of the root tree, the chunk tree.
    pub root: u64,
    pub root_level: u8,
    pub chunk_root: u64,
    pub chunk_root_level: u8,
    pub log_root: u64,
    pub total_bytes: u64,
    pub sectorsize: u64,
    pub nodesize: u64,
    pub csum_type: u16,
    /// The fsid tree nodes carry (the metadata uuid when that feature is on).
    pub node_fsid: [u8; 16],
    /// This device: its id and size.
    pub devid: u64,
    pub dev_bytes: u64,
    pub sys_array: Vec<u8>,
}

/// What names the file system, read from any superblock with a valid checksum.
#[derive(Debug, Clone)]
pub struct Ident {
    pub fsid: [u8; 16],
    pub label: Vec<u8>,
    pub total_bytes: u64,
}

/// Reads the primary superblock: `None` when there is none (no magic, a bad checksum, a
/// partition too small); else its identity and, checked, the superblock or why the probe
/// cannot read that file system.
pub fn read(part: &crate::fs::PartView) -> std::io::Result<Option<(Ident, Result<Super, Bad>)>> {
    if part.size < OFFSET + SIZE as u64 {
        return Ok(None);
    }
    let mut s = vec![0u8; SIZE];
    part.read(&mut s, OFFSET)?;
    if &s[0x40..0x48] != MAGIC {
        return Ok(None);
    }
    let mut fsid = [0u8; 16];
    fsid.copy_from_slice(&s[0x20..0x30]);
    let ident = Ident {
        fsid,
        label: s[0x12b..0x22b].to_vec(),
        total_bytes: le64(&s, 0x70),
    };
    let csum_type = le16(&s, 0xc4);
    if !csum::supported(csum_type) {
        let why = format!("checksum type {csum_type} (crc32c, xxhash64 and sha256 are checked)");
        return Ok(Some((ident, Err(Bad::Unsupported(why)))));
    }
    if !csum::matches(csum_type, &s) {
        // A stale or damaged signature: not a file system to trust.
        return Ok(None);
    }
    Ok(Some((ident, parse(&s, part.size))))
}

fn parse(s: &[u8], part_size: u64) -> Result<Super, Bad> {
    let uns = |m: String| Err(Bad::Unsupported(m));
    let bad = |m: String| Err(Bad::Inconsistent(format!("superblock: {m}")));
    let num_devices = le64(s, 0x88);
    if num_devices != 1 {
        return uns(format!(
            "{num_devices} devices (only single-device file systems are read)"
        ));
    }
    let flags = le64(s, 0x38);
    if flags & !FLAGS_KNOWN != 0 {
        return uns(format!("superblock flags {flags:#x}"));
    }
    let incompat = le64(s, 0xbc);
    if incompat & !INCOMPAT_KNOWN != 0 {
        return uns(format!(
            "incompat features {:#x}",
            incompat & !INCOMPAT_KNOWN
        ));
    }
    let compat_ro = le64(s, 0xb4);
    if compat_ro & !COMPAT_RO_KNOWN != 0 {
        return uns(format!(
            "compat_ro features {:#x}",
            compat_ro & !COMPAT_RO_KNOWN
        ));
    }
    let (sectorsize, nodesize) = (le32(s, 0x90) as u64, le32(s, 0x94) as u64);
    let pow2_in = |v: u64, lo: u64| v.is_power_of_two() && (lo..=65536).contains(&v);
    if !pow2_in(sectorsize, 4096) || !pow2_in(nodesize, sectorsize) {
        return bad(format!("sector size {sectorsize}, node size {nodesize}"));
    }
    let total_bytes = le64(s, 0x70);
    let dev_bytes = le64(s, 0xc9 + 8);
    if le64(s, 0x30) != OFFSET
        || total_bytes < 1 << 20
        || total_bytes > part_size
        || dev_bytes > part_size
        || dev_bytes < total_bytes
    {
        return bad(format!(
            "{total_bytes} bytes on a device of {dev_bytes} in a partition of {part_size}"
        ));
    }
    let (root_level, chunk_root_level) = (s[0xc6], s[0xc7]);
    if root_level > MAX_LEVEL || chunk_root_level > MAX_LEVEL {
        return bad(format!("tree levels {root_level}/{chunk_root_level}"));
    }
    let sys_len = le32(s, 0xa0) as usize;
    if sys_len > SYS_ARRAY_MAX {
        return bad(format!("sys_chunk_array of {sys_len} bytes"));
    }
    let mut node_fsid = [0u8; 16];
    node_fsid.copy_from_slice(&s[0x20..0x30]);
    if incompat & INCOMPAT_METADATA_UUID != 0 {
        node_fsid.copy_from_slice(&s[0x23b..0x24b]);
    }
    Ok(Super {
        generation: le64(s, 0x48),
        root: le64(s, 0x50),
        root_level,
        chunk_root: le64(s, 0x58),
        chunk_root_level,
        log_root: le64(s, 0x60),
        total_bytes,
        sectorsize,
        nodesize,
        csum_type: le16(s, 0xc4),
        node_fsid,
        devid: le64(s, 0xc9),
        dev_bytes,
        sys_array: s[SYS_ARRAY_AT..SYS_ARRAY_AT + sys_len].to_vec(),
    })
}
