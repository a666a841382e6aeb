//! ext2/3/4: which blocks are in use, from the superblock, the group descriptors (32- or
//! 64-byte, classic or meta_bg placement) and the block bitmaps.
//!
//! The set is a safe superset: every group's superblock backup, descriptor and reserved
//! descriptor blocks, block and inode bitmaps and inode table are always included, and a
//! group's bitmap is read unless the group is flagged `BLOCK_UNINIT` (then its only used
//! blocks are that metadata, possibly of other groups under flex_bg).

use super::{Fill, FsInfo, PartView, UsedRanges};
use crate::bytes::{le16, le32};
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

/// Largest group descriptor accepted on a 64-bit file system (the kernel's
/// `EXT4_MAX_DESC_SIZE`); the smallest is 64 (`EXT4_MIN_DESC_SIZE_64BIT`).
pub const MAX_DESC_SIZE: u64 = 1024;

/// Block groups of one file system at most: ext4 counts them in 32 bits.
pub const MAX_GROUPS: u64 = u32::MAX as u64;

/// Blocks of a file system the probe reads at most: 2^32, the largest ext file system
/// without the `64bit` feature (16 TiB at 4 KiB blocks, 4 TiB at 1 KiB). The probe keeps
/// one bit per block in memory, so this bounds that bitmap to 512 MiB whatever the
/// superblock and the partition claim (a hostile superblock on a large partition made
/// it a GiB per 8 TiB). A larger file system is refused with this limit named: capture
/// it with `--raw`, or split it.
pub const MAX_BLOCKS: u64 = 1 << 32;

fn invalid(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

/// Probes for ext2/3/4; `None` when the superblock magic is absent.
///
/// Every count the superblock gives is checked against the partition before anything is
/// allocated (`Sb::read`): the file system must fit the partition and have at most
/// [`MAX_BLOCKS`] blocks, which bounds the block bitmap kept here (one bit per block,
/// 512 MiB at most); the group descriptors are read one block at a time
/// (`used_blocks`).
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    let Some((sb, s)) = Sb::read(part)? else {
        return Ok(None);
    };
    let used = used_blocks(part, &sb)?;
    let mut ranges = UsedRanges::default();
    let mut b = 0u64;
    while b < sb.blocks {
        if used.get(b) {
            let s = b;
            while b < sb.blocks && used.get(b) {
                b += 1;
            }
            ranges.push(s * sb.block_size, (b - s) * sb.block_size);
        } else {
            b += 1;
        }
    }
    Ok(Some(FsInfo {
        kind: sb.kind().into(),
        uuid: Some(super::uuid_string(&s[104..120])),
        label: super::label_string(&s[120..136]),
        fs_size: sb.blocks * sb.block_size,
        used: ranges.into_vec(),
        fill: Fill::Keep,
    }))
}

fn bad(m: &str) -> io::Error {
    invalid(format!("ext superblock: {m}"))
}

impl Sb {
    /// Reads and checks the primary superblock of `part`: `None` when it is not ext (no
    /// magic, a partition under 2 KiB) or uses bigalloc (bitmaps count clusters; the
    /// caller then stores the non-zero blocks). Returns the superblock's bytes too.
    fn read(part: &PartView) -> io::Result<Option<(Sb, Vec<u8>)>> {
        if part.size < 2048 {
            return Ok(None);
        }
        let mut s = vec![0u8; 1024];
        part.read(&mut s, 1024)?;
        if le16(&s, 56) != MAGIC {
            return Ok(None);
        }
        let log = le32(&s, 24);
        if log > 6 {
            return Err(bad("block size above 64 KiB"));
        }
        let incompat = le32(&s, 96);
        let ro_compat = le32(&s, 100);
        let compat = le32(&s, 92);
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks = le32(&s, 4) as u64
            | if is64 {
                (le32(&s, 0x150) as u64) << 32
            } else {
                0
            };
        let block_size = 1024u64 << log;
        let bpg = le32(&s, 32) as u64;
        let first_data_block = le32(&s, 20) as u64;
        // mke2fs's own range for blocks per group; the kernel's for inodes per group and
        // the inode size. They bound the work per group (an inode table has at most
        // 8 × block size blocks) and the group count (at most one per 256 blocks).
        if !(256..=block_size * 8).contains(&bpg) || blocks <= first_data_block {
            return Err(bad(&format!(
                "inconsistent block counts ({blocks} blocks, {bpg} per group, first data \
                 block {first_data_block})"
            )));
        }
        let ipg = le32(&s, 40) as u64;
        let rev = le32(&s, 76);
        let inode_size = if rev == 0 { 128 } else { le16(&s, 88) as u64 };
        if ipg > block_size * 8
            || !(128..=block_size).contains(&inode_size)
            || !inode_size.is_power_of_two()
        {
            return Err(bad(&format!(
                "{ipg} inodes per group of {inode_size} bytes with {block_size}-byte blocks"
            )));
        }
        if blocks.checked_mul(block_size).is_none_or(|b| b > part.size) {
            return Err(invalid(format!(
                "ext file system of {blocks} blocks of {block_size} bytes is larger than its \
                 partition ({} bytes)",
                part.size
            )));
        }
        if blocks > MAX_BLOCKS {
            return Err(invalid(format!(
                "ext file system of {blocks} blocks is larger than the {MAX_BLOCKS} blocks the \
                 probe reads (fs::ext::MAX_BLOCKS: one bit per block held in memory)"
            )));
        }
        if ro_compat & RO_COMPAT_BIGALLOC != 0 {
            return Ok(None);
        }
        let desc_size = if is64 { le16(&s, 254) as u64 } else { 32 };
        if is64 && (!(64..=MAX_DESC_SIZE).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return Err(bad(&format!(
                "64-bit group descriptor size {desc_size} (must be a power of two in \
                 64..={MAX_DESC_SIZE})"
            )));
        }
        if desc_size > block_size {
            return Err(bad(&format!(
                "group descriptor size {desc_size} above the block size {block_size}"
            )));
        }
        let sb = Sb {
            blocks,
            first_data_block,
            block_size,
            blocks_per_group: bpg,
            inodes_per_group: ipg,
            inode_size,
            groups: (blocks - first_data_block).div_ceil(bpg),
            desc_size,
            reserved_gdt: le16(&s, 206) as u64,
            first_meta_bg: le32(&s, 260) as u64,
            compat,
            incompat,
            ro_compat,
            backup_bgs: [le32(&s, 0x24c), le32(&s, 0x250)],
        };
        // The descriptor table is part of the file system: it cannot have more blocks
        // than the file system (this also bounds the group count by the partition's size).
        if sb.groups > MAX_GROUPS || sb.gdt_blocks() > sb.blocks {
            return Err(bad(&format!(
                "{} block groups of {bpg} blocks do not fit {blocks} blocks",
                sb.groups
            )));
        }
        Ok(Some((sb, s)))
    }

    fn is64(&self) -> bool {
        self.incompat & INCOMPAT_64BIT != 0
    }

    /// `ext4` (extents, 64-bit or metadata checksums), `ext3` (a journal) or `ext2`.
    fn kind(&self) -> &'static str {
        if self.incompat & INCOMPAT_EXTENTS != 0
            || self.is64()
            || self.ro_compat & RO_COMPAT_METADATA_CSUM != 0
        {
            "ext4"
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        }
    }
}

/// Every block in use: the boot block(s) and primary superblock, each group's metadata
/// (superblock backup, descriptor and reserved descriptor blocks, bitmaps, inode table)
/// and the blocks its bitmap marks, unless the group is `BLOCK_UNINIT` (and checksums
/// make that flag meaningful).
fn used_blocks(part: &PartView, sb: &Sb) -> io::Result<Bits> {
    let is64 = sb.is64();
    let uninit_meaningful = sb.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0;
    // Descriptors, one block at a time (groups are visited in order, so each descriptor
    // block is read once): only a block is held, however large the table claims to be.
    let mut desc_buf = vec![0u8; sb.block_size as usize];
    let mut desc_loaded: Option<u64> = None;
    let dpb = sb.descs_per_block();

    // One bit per block: an eighth of a byte per block of a file system that fits.
    let mut used = Bits::new(sb.blocks);
    // Boot block(s) and the primary superblock.
    used.mark(0, sb.first_data_block + 1);
    let itable_blocks = (sb.inodes_per_group * sb.inode_size).div_ceil(sb.block_size);
    let mut bitmap = vec![0u8; sb.block_size as usize];
    for g in 0..sb.groups {
        let i = g / dpb;
        if desc_loaded != Some(i) {
            let b = sb.desc_block(i);
            if b >= sb.blocks {
                return Err(bad(&format!(
                    "group descriptor block {i} at block {b}, past the end ({} blocks)",
                    sb.blocks
                )));
            }
            part.read(&mut desc_buf, b * sb.block_size)?;
            desc_loaded = Some(i);
        }
        let lo = ((g % dpb) * sb.desc_size) as usize;
        let d = &desc_buf[lo..lo + sb.desc_size as usize];
        let hi = |o: usize| if is64 { (le32(d, o) as u64) << 32 } else { 0 };
        let bbm = le32(d, 0) as u64 | hi(0x20);
        let ibm = le32(d, 4) as u64 | hi(0x24);
        let itab = le32(d, 8) as u64 | hi(0x28);
        let flags = le16(d, 18);
        used.mark(bbm, 1);
        used.mark(ibm, 1);
        used.mark(itab, itable_blocks);
        let first = sb.group_first(g);
        if sb.has_super(g) {
            let n = if sb.meta_bg() {
                1 + sb.first_meta_bg.min(sb.gdt_blocks()) + sb.reserved_gdt
            } else {
                1 + sb.gdt_blocks() + sb.reserved_gdt
            };
            used.mark(first, n);
        }
        if sb.meta_bg() {
            // Descriptor blocks of a meta group sit in its first, second and last group.
            let gi = g % dpb;
            if g / dpb >= sb.first_meta_bg && (gi == 0 || gi == 1 || gi == dpb - 1) {
                used.mark(first + u64::from(sb.has_super(g)), 1);
            }
        }
        if uninit_meaningful && flags & BG_BLOCK_UNINIT != 0 {
            continue;
        }
        if bbm == 0 || bbm >= sb.blocks {
            return Err(bad(&format!("group {g}: block bitmap at block {bbm}")));
        }
        part.read(&mut bitmap, bbm * sb.block_size)?;
        let n = sb.blocks_per_group.min(sb.blocks - first);
        for i in 0..n {
            if bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                used.mark(first + i, 1);
            }
        }
    }
    Ok(used)
}

/// Block size and block count of an ext file system at the start of `part`; an error
/// when the file system claims more bytes than the partition holds.
pub fn geometry(part: &PartView) -> io::Result<Option<(u64, u64)>> {
    let mut s = vec![0u8; 1024];
    part.read(&mut s, 1024)?;
    if le16(&s, 56) != MAGIC {
        return Ok(None);
    }
    let is64 = le32(&s, 96) & INCOMPAT_64BIT != 0;
    let blocks = le32(&s, 4) as u64
        | if is64 {
            (le32(&s, 0x150) as u64) << 32
        } else {
            0
        };
    let block_size = 1024u64 << le32(&s, 24).min(6);
    if blocks.checked_mul(block_size).is_none_or(|b| b > part.size) {
        return Err(invalid(format!(
            "ext file system of {blocks} blocks of {block_size} bytes is larger than its \
             partition ({} bytes)",
            part.size
        )));
    }
    Ok(Some((block_size, blocks)))
}

/// A bit per block.
struct Bits {
    words: Vec<u64>,
    len: u64,
}

impl Bits {
    fn new(len: u64) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }
    /// Marks blocks `b..b+n`, clipped to the file system; a word at a time.
    fn mark(&mut self, b: u64, n: u64) {
        let end = b.saturating_add(n).min(self.len);
        let mut x = b.min(end);
        while x < end {
            let bit = x % 64;
            let take = (64 - bit).min(end - x);
            let ones = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << bit
            };
            self.words[(x / 64) as usize] |= ones;
            x += take;
        }
    }
    fn get(&self, b: u64) -> bool {
        b < self.len && self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{BlockIo, MemDisk};

    /// A 64 KiB partition holding a 64-block (1 KiB blocks) ext4 superblock with the
    /// 64-bit feature; `f` adjusts the superblock.
    fn ext64(f: impl Fn(&mut [u8])) -> MemDisk {
        let disk = MemDisk::new(64 << 10, 512);
        let mut s = vec![0u8; 1024];
        s[4..8].copy_from_slice(&64u32.to_le_bytes()); // blocks (low)
        s[20..24].copy_from_slice(&1u32.to_le_bytes()); // first data block
        s[32..36].copy_from_slice(&8192u32.to_le_bytes()); // blocks per group
        s[40..44].copy_from_slice(&16u32.to_le_bytes()); // inodes per group
        s[56..58].copy_from_slice(&MAGIC.to_le_bytes());
        s[76..80].copy_from_slice(&1u32.to_le_bytes()); // revision
        s[88..90].copy_from_slice(&256u16.to_le_bytes()); // inode size
        s[96..100].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
        s[254..256].copy_from_slice(&64u16.to_le_bytes()); // descriptor size
        f(&mut s);
        disk.write_all_at(&s, 1024).unwrap();
        // Group 0's descriptor (block 2): bitmaps at 3 and 4, inode table at 5.
        let mut d = vec![0u8; 64];
        d[0..4].copy_from_slice(&3u32.to_le_bytes());
        d[4..8].copy_from_slice(&4u32.to_le_bytes());
        d[8..12].copy_from_slice(&5u32.to_le_bytes());
        disk.write_all_at(&d, 2048).unwrap();
        disk.write_all_at(&[0xff], 3 * 1024).unwrap(); // blocks 1..=8 in use
        disk
    }

    fn probe_of(disk: &MemDisk) -> io::Result<Option<FsInfo>> {
        probe(&PartView {
            disk,
            start: 0,
            size: disk.size(),
        })
    }

    #[test]
    fn well_formed_ext64_head_probes() {
        let info = probe_of(&ext64(|_| {})).unwrap().unwrap();
        assert_eq!(info.kind, "ext4");
        assert_eq!(info.fs_size, 64 << 10);
        // Boot block, superblock, descriptor, bitmaps, 4 inode-table blocks, bitmap bits.
        assert_eq!(info.used, vec![(0, 9 << 10)]);
    }

    #[test]
    fn zero_descriptor_size_on_64bit_is_refused_not_a_panic() {
        // D12: s_desc_size 0 was taken as 32, then the 64-bit fields at 0x20.. were read
        // past the 32-byte descriptor: index out of bounds.
        for size in [0u16, 32, 48, 2048] {
            let disk = ext64(|s| s[254..256].copy_from_slice(&size.to_le_bytes()));
            let e = probe_of(&disk).unwrap_err().to_string();
            assert!(
                e.contains(&format!("64-bit group descriptor size {size}")),
                "{size}: {e}"
            );
        }
    }

    #[test]
    fn wrapping_block_count_is_refused_before_allocating() {
        // D12: 2^54 + 64 blocks of 1 KiB wrap to 64 KiB, which "fits" the partition; the
        // reader then allocated a descriptor table of 140 TB and aborted.
        let disk = ext64(|s| s[0x150..0x154].copy_from_slice(&(1u32 << 22).to_le_bytes()));
        let e = probe_of(&disk).unwrap_err().to_string();
        assert!(
            e.contains("18014398509482048 blocks of 1024 bytes is larger than its partition"),
            "{e}"
        );
        let e = geometry(&PartView {
            disk: &disk,
            start: 0,
            size: disk.size(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("larger than its partition (65536 bytes)"), "{e}");
    }

    #[test]
    fn implausible_group_geometry_is_refused() {
        for (what, f) in [
            (
                "blocks per group",
                Box::new(|s: &mut [u8]| s[32..36].copy_from_slice(&8u32.to_le_bytes()))
                    as Box<dyn Fn(&mut [u8])>,
            ),
            (
                "inodes per group",
                Box::new(|s: &mut [u8]| s[40..44].copy_from_slice(&u32::MAX.to_le_bytes())),
            ),
            (
                "inode size",
                Box::new(|s: &mut [u8]| s[88..90].copy_from_slice(&0u16.to_le_bytes())),
            ),
        ] {
            let e = probe_of(&ext64(f)).unwrap_err().to_string();
            assert!(e.contains("ext superblock"), "{what}: {e}");
        }
    }

    /// A partition of `size` bytes that holds `sb` at byte 1024 and zeros everywhere
    /// else, without allocating the partition.
    struct Huge {
        size: u64,
        sb: Vec<u8>,
    }

    impl BlockIo for Huge {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            buf.fill(0);
            for (k, b) in buf.iter_mut().enumerate() {
                let at = offset + k as u64;
                if (1024..2048).contains(&at) {
                    *b = self.sb[(at - 1024) as usize];
                }
            }
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("read-only"))
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn sector_size(&self) -> u32 {
            512
        }
    }

    /// 64-bit ext4 of `blocks` 1 KiB blocks filling its partition, 256 blocks per group,
    /// 1024-byte group descriptors: the largest descriptor table per byte of partition.
    fn huge(blocks: u64) -> Huge {
        let mut sb = vec![0u8; 1024];
        sb[4..8].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        sb[20..24].copy_from_slice(&1u32.to_le_bytes()); // first data block
        sb[32..36].copy_from_slice(&256u32.to_le_bytes()); // blocks per group
        sb[40..44].copy_from_slice(&16u32.to_le_bytes()); // inodes per group
        sb[56..58].copy_from_slice(&MAGIC.to_le_bytes());
        sb[76..80].copy_from_slice(&1u32.to_le_bytes());
        sb[88..90].copy_from_slice(&256u16.to_le_bytes());
        sb[96..100].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
        sb[254..256].copy_from_slice(&1024u16.to_le_bytes());
        Huge {
            size: blocks << 10,
            sb,
        }
    }

    #[test]
    fn hostile_superblock_on_a_huge_partition_is_refused_not_an_abort() {
        // 8 TiB: 2^25 groups of 1024-byte descriptors. The probe allocated the whole
        // descriptor table (32 GiB, bounded only by the partition's size) and capture
        // aborted; the block bitmap alone would be 1 GiB. Now refused by MAX_BLOCKS.
        let disk = huge(1 << 33);
        let part = PartView {
            disk: &disk,
            start: 0,
            size: disk.size,
        };
        let e = probe(&part).unwrap_err().to_string();
        assert!(
            e.contains("8589934592 blocks") && e.contains("MAX_BLOCKS"),
            "{e}"
        );
        // 4 TiB, at the limit: the descriptors are read a block at a time (the table
        // claims 16 GiB); group 0's all-zero descriptor is refused by name.
        let disk = huge(MAX_BLOCKS);
        let part = PartView {
            disk: &disk,
            start: 0,
            size: disk.size,
        };
        let e = probe(&part).unwrap_err().to_string();
        assert!(e.contains("group 0: block bitmap at block 0"), "{e}");
    }

    #[test]
    fn bits_mark_ranges_across_words() {
        let mut b = Bits::new(200);
        b.mark(60, 10);
        b.mark(190, u64::MAX);
        let set: Vec<u64> = (0..200).filter(|x| b.get(*x)).collect();
        let want: Vec<u64> = (60..70).chain(190..200).collect();
        assert_eq!(set, want);
        assert!(!b.get(200));
    }
}
