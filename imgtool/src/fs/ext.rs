//! ext2/3/4: which blocks are in use, from the superblock, the group descriptors (32- or
//! 64-byte, classic or meta_bg placement) and the block bitmaps.
//!
//! The set is a safe superset: every group's superblock backup, descriptor and reserved
//! descriptor blocks, block and inode bitmaps and inode table are always included, and a
//! group's bitmap is read unless the group is flagged `BLOCK_UNINIT` (then its only used
//! blocks are that metadata, possibly of other groups under flex_bg).

use super::{push_range, Fill, FsInfo, PartView};
use std::io;

const MAGIC: u16 = 0xef53;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_EXTENTS: u32 = 0x40;
const BG_BLOCK_UNINIT: u16 = 0x2;

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

struct Sb {
    blocks: u64,
    first_data_block: u64,
    block_size: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inode_size: u64,
    groups: u64,
    desc_size: u64,
    reserved_gdt: u64,
    first_meta_bg: u64,
    compat: u32,
    incompat: u32,
    ro_compat: u32,
    backup_bgs: [u32; 2],
}

impl Sb {
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] as u64 || g == self.backup_bgs[1] as u64;
        }
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || g == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&b| {
            let mut x = b;
            while x < g {
                x *= b;
            }
            x == g
        })
    }
    fn group_first(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }
    fn descs_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }
    fn gdt_blocks(&self) -> u64 {
        self.groups.div_ceil(self.descs_per_block())
    }
    fn meta_bg(&self) -> bool {
        self.incompat & INCOMPAT_META_BG != 0
    }
    /// Block holding descriptor block `i`.
    fn desc_block(&self, i: u64) -> u64 {
        if !self.meta_bg() || i < self.first_meta_bg {
            return self.first_data_block + 1 + i;
        }
        let g = i * self.descs_per_block();
        self.group_first(g) + u64::from(self.has_super(g))
    }
}

/// Probes for ext2/3/4; `None` when the superblock magic is absent.
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    if part.size < 2048 {
        return Ok(None);
    }
    let mut s = vec![0u8; 1024];
    part.read(&mut s, 1024)?;
    if u16le(&s, 56) != MAGIC {
        return Ok(None);
    }
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ext superblock: {m}"));
    let log = u32le(&s, 24);
    if log > 6 {
        return Err(bad("block size above 64 KiB"));
    }
    let incompat = u32le(&s, 96);
    let ro_compat = u32le(&s, 100);
    let compat = u32le(&s, 92);
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let blocks = u32le(&s, 4) as u64
        | if is64 {
            (u32le(&s, 0x150) as u64) << 32
        } else {
            0
        };
    let block_size = 1024u64 << log;
    let bpg = u32le(&s, 32) as u64;
    let first_data_block = u32le(&s, 20) as u64;
    if bpg == 0 || bpg > block_size * 8 || blocks <= first_data_block {
        return Err(bad("inconsistent block counts"));
    }
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        // Bitmaps count clusters, not blocks: not handled; store the non-zero blocks.
        return Ok(None);
    }
    let rev = u32le(&s, 76);
    let sb = Sb {
        blocks,
        first_data_block,
        block_size,
        blocks_per_group: bpg,
        inodes_per_group: u32le(&s, 40) as u64,
        inode_size: if rev == 0 { 128 } else { u16le(&s, 88) as u64 },
        groups: (blocks - first_data_block).div_ceil(bpg),
        desc_size: if is64 {
            (u16le(&s, 254) as u64).max(32)
        } else {
            32
        },
        reserved_gdt: u16le(&s, 206) as u64,
        first_meta_bg: u32le(&s, 260) as u64,
        compat,
        incompat,
        ro_compat,
        backup_bgs: [u32le(&s, 0x24c), u32le(&s, 0x250)],
    };
    if sb.desc_size > sb.block_size || !sb.desc_size.is_power_of_two() {
        return Err(bad("descriptor size"));
    }
    if sb.blocks * sb.block_size > part.size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "ext file system of {} bytes is larger than its partition ({} bytes)",
                sb.blocks * sb.block_size,
                part.size
            ),
        ));
    }
    let kind =
        if incompat & INCOMPAT_EXTENTS != 0 || is64 || ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            "ext4"
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
    let uninit_meaningful = ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;

    // Descriptors.
    let mut descs = vec![0u8; (sb.gdt_blocks() * sb.block_size) as usize];
    for i in 0..sb.gdt_blocks() {
        let b = sb.desc_block(i);
        let lo = (i * sb.block_size) as usize;
        part.read(
            &mut descs[lo..lo + sb.block_size as usize],
            b * sb.block_size,
        )?;
    }

    let mut used = vec![false; sb.blocks as usize];
    let mark = |b: u64, n: u64, used: &mut Vec<bool>| {
        let end = (b + n).min(sb.blocks);
        for x in b.min(end)..end {
            used[x as usize] = true;
        }
    };
    // Boot block(s) and the primary superblock.
    mark(0, first_data_block + 1, &mut used);
    let itable_blocks = (sb.inodes_per_group * sb.inode_size).div_ceil(sb.block_size);
    let mut bitmap = vec![0u8; sb.block_size as usize];
    for g in 0..sb.groups {
        let d = &descs[(g * sb.desc_size) as usize..((g + 1) * sb.desc_size) as usize];
        let hi = |o: usize| if is64 { (u32le(d, o) as u64) << 32 } else { 0 };
        let bbm = u32le(d, 0) as u64 | hi(0x20);
        let ibm = u32le(d, 4) as u64 | hi(0x24);
        let itab = u32le(d, 8) as u64 | hi(0x28);
        let flags = u16le(d, 18);
        mark(bbm, 1, &mut used);
        mark(ibm, 1, &mut used);
        mark(itab, itable_blocks, &mut used);
        let first = sb.group_first(g);
        if sb.has_super(g) {
            let n = if sb.meta_bg() {
                1 + sb.first_meta_bg.min(sb.gdt_blocks()) + sb.reserved_gdt
            } else {
                1 + sb.gdt_blocks() + sb.reserved_gdt
            };
            mark(first, n, &mut used);
        }
        if sb.meta_bg() {
            // Descriptor blocks of a meta group sit in its first, second and last group.
            let dpb = sb.descs_per_block();
            let gi = g % dpb;
            if g / dpb >= sb.first_meta_bg && (gi == 0 || gi == 1 || gi == dpb - 1) {
                mark(first + u64::from(sb.has_super(g)), 1, &mut used);
            }
        }
        if uninit_meaningful && flags & BG_BLOCK_UNINIT != 0 {
            continue;
        }
        if bbm == 0 || bbm >= sb.blocks {
            return Err(bad(&format!("group {g}: block bitmap at block {bbm}")));
        }
        part.read(&mut bitmap, bbm * sb.block_size)?;
        let n = bpg.min(sb.blocks - first);
        for i in 0..n {
            if bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                used[(first + i) as usize] = true;
            }
        }
    }
    let mut ranges = vec![];
    let mut b = 0u64;
    while b < sb.blocks {
        if used[b as usize] {
            let s = b;
            while b < sb.blocks && used[b as usize] {
                b += 1;
            }
            push_range(&mut ranges, s * sb.block_size, (b - s) * sb.block_size);
        } else {
            b += 1;
        }
    }
    Ok(Some(FsInfo {
        kind: kind.into(),
        uuid: Some(super::uuid_string(&s[104..120])),
        label: super::label_string(&s[120..136]),
        fs_size: sb.blocks * sb.block_size,
        used: ranges,
        fill: Fill::Keep,
    }))
}

/// Block size and block count of an ext file system at the start of `part`.
pub fn geometry(part: &PartView) -> io::Result<Option<(u64, u64)>> {
    let mut s = vec![0u8; 1024];
    part.read(&mut s, 1024)?;
    if u16le(&s, 56) != MAGIC {
        return Ok(None);
    }
    let is64 = u32le(&s, 96) & INCOMPAT_64BIT != 0;
    let blocks = u32le(&s, 4) as u64
        | if is64 {
            (u32le(&s, 0x150) as u64) << 32
        } else {
            0
        };
    Ok(Some((1024u64 << u32le(&s, 24).min(6), blocks)))
}
