//! File-system probes: given a partition, say which file system it holds, its UUID and
//! label, and which byte ranges are in use. Only those ranges go into the image.
//!
//! - [`ext`]: ext2/3/4 from the group descriptors and block bitmaps (`BLOCK_UNINIT`,
//!   flex_bg, meta_bg, 64-bit descriptors);
//! - [`fat`]: FAT12/16/32 from the boot sector and the allocation table;
//! - [`swap`]: the header page only (restore rewrites it for the partition's size);
//! - [`xfs`]: XFS from each allocation group's free-space B+tree (everything not free is
//!   kept); one it cannot trust (external log, realtime section, damage) is stored as
//!   `xfs-unparsed`, its non-zero blocks;
//! - [`btrfs`]: single-device btrfs from the chunk tree and the extent tree;
//! - [`lvm`]: an LVM2 PV: its label and metadata areas, and inside each plain LV the
//!   used ranges of the file systems above ([`probe_known`]: ext, XFS, FAT, swap, btrfs;
//!   free extents are not stored);
//! - anything else: the non-zero 64 KiB blocks, and restore zeroes the rest.
//!
//! A whole partition is tried as ext, XFS, FAT, swap, then LVM, then btrfs (the order
//! before btrfs could sit in an LV: a partition is never read as btrfs before LVM had
//! its say). [`crc32c`] is the metadata checksum of XFS v5 and of btrfs (its default).

pub mod btrfs;
pub mod crc32c;
pub mod ext;
pub mod fat;
pub mod lvm;
pub mod swap;
pub mod xfs;

use crate::disk::BlockIo;
use serde::{Deserialize, Serialize};
use std::io;

/// A view of one partition of a disk.
pub struct PartView<'a> {
    pub disk: &'a dyn BlockIo,
    pub start: u64,
    pub size: u64,
}

impl PartView<'_> {
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        let at = self.start.checked_add(offset);
        match (end, at) {
            (Some(end), Some(at)) if end <= self.size => self.disk.read_exact_at(buf, at),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the partition end ({})",
                    buf.len(),
                    self.size
                ),
            )),
        }
    }
}

/// What restore must do with the bytes the image does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Unused by the file system: leave whatever the target holds.
    Keep,
    /// Must read back as zeros (unknown contents captured as non-zero blocks).
    Zero,
}

/// The result of probing a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Bytes the file system spans (≤ partition size).
    pub fs_size: u64,
    /// Used byte ranges `(offset, length)`, sorted, non-overlapping, within the partition.
    pub used: Vec<(u64, u64)>,
    pub fill: Fill,
}

/// Block size of the unknown-file-system scan.
pub const SCAN_BLOCK: u64 = 64 << 10;

/// Probes the partition; unknown contents yield the non-zero blocks. `raw` stores all.
pub fn probe(part: &PartView, raw: bool) -> io::Result<FsInfo> {
    if raw {
        return Ok(FsInfo {
            kind: "raw".into(),
            uuid: None,
            label: None,
            fs_size: part.size,
            used: vec![(0, part.size)],
            fill: Fill::Zero,
        });
    }
    if let Some(i) = probe_plain(part)? {
        return Ok(i);
    }
    if let Some(i) = lvm::probe(part)? {
        return Ok(i);
    }
    if let Some(i) = btrfs::probe(part)? {
        return Ok(i);
    }
    nonzero(part)
}

/// The file-system probes (not LVM, not the non-zero scan): what [`lvm`] runs inside
/// each logical volume. Every one needs only the [`PartView`], so an LV's view (its
/// extents mapped, [`lvm::view`]) serves as well as a partition.
pub fn probe_known(part: &PartView) -> io::Result<Option<FsInfo>> {
    if let Some(i) = probe_plain(part)? {
        return Ok(Some(i));
    }
    btrfs::probe(part)
}

/// ext, XFS, FAT and swap: what [`probe`] tries before LVM.
fn probe_plain(part: &PartView) -> io::Result<Option<FsInfo>> {
    if let Some(i) = ext::probe(part)? {
        return Ok(Some(i));
    }
    if let Some(i) = xfs::probe(part)? {
        return Ok(Some(i));
    }
    if let Some(i) = fat::probe(part)? {
        return Ok(Some(i));
    }
    swap::probe(part)
}

/// The non-zero [`SCAN_BLOCK`]s of the partition, to be restored with [`Fill::Zero`]
/// (also the fallback of a probe that cannot trust what it read).
pub(crate) fn nonzero(part: &PartView) -> io::Result<FsInfo> {
    Ok(FsInfo {
        kind: "unknown".into(),
        uuid: None,
        label: None,
        fs_size: part.size,
        used: nonzero_range(part, 0, part.size)?,
        fill: Fill::Zero,
    })
}

/// The non-zero [`SCAN_BLOCK`]s (counted from `off`) of partition bytes
/// `[off, off + len)`, clipped to the partition: [`nonzero`]'s scan of a part of it (an
/// LVM extent range, [`lvm`]). Reads 4 MiB at a time whatever `len` is.
pub(crate) fn nonzero_range(part: &PartView, off: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut used = UsedRanges::default();
    let end = off.saturating_add(len).min(part.size);
    let mut buf = vec![0u8; end.saturating_sub(off).min(4 << 20) as usize];
    let mut pos = off;
    while pos < end {
        let n = (end - pos).min(buf.len() as u64) as usize;
        part.read(&mut buf[..n], pos)?;
        for (i, blk) in buf[..n].chunks(SCAN_BLOCK as usize).enumerate() {
            if blk.iter().any(|b| *b != 0) {
                used.push(pos + i as u64 * SCAN_BLOCK, blk.len() as u64);
            }
        }
        pos += n as u64;
    }
    Ok(used.into_vec())
}

/// The most used ranges a probe keeps (16 MiB of `(offset, length)` pairs). A real file
/// system's used blocks, with gaps up to [`crate::chunk::MERGE_GAP`] merged as chunking
/// merges them anyway, stay far below it; a hostile master whose bitmap alternates used
/// and free blocks would otherwise make capture hold one entry per block (32 GiB for
/// 16 TiB) and write a manifest no reader accepts.
pub const MAX_RANGES: usize = 1 << 20;

/// Used byte ranges in ascending order, bounded by [`MAX_RANGES`]: touching ranges are
/// merged; when the list is full, ranges closer than a gap (starting at
/// [`crate::chunk::MERGE_GAP`], where chunking merges anyway, then doubling) are merged
/// and the gap between them is stored too. That only stores some free bytes more; the
/// result depends only on the ranges pushed, so capture stays deterministic.
#[derive(Debug, Default)]
pub struct UsedRanges {
    v: Vec<(u64, u64)>,
    /// Gaps up to this many bytes are merged (0 until the list first fills up).
    gap: u64,
}

impl UsedRanges {
    /// Appends a range at or after the end of the last one.
    pub fn push(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        loop {
            if let Some(last) = self.v.last_mut() {
                let end = last.0.saturating_add(last.1);
                if off <= end.saturating_add(self.gap) {
                    last.1 = off.saturating_add(len).max(end) - last.0;
                    return;
                }
            }
            if self.v.len() < MAX_RANGES {
                self.v.push((off, len));
                return;
            }
            self.coarsen();
        }
    }

    /// Doubles the merge gap (first: `MERGE_GAP`) and merges the list with it.
    fn coarsen(&mut self) {
        self.gap = if self.gap == 0 {
            crate::chunk::MERGE_GAP
        } else {
            self.gap.saturating_mul(2)
        };
        let gap = self.gap;
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.v.len());
        for &(o, l) in &self.v {
            match out.last_mut() {
                Some(last) if o <= last.0.saturating_add(last.1).saturating_add(gap) => {
                    last.1 = o.saturating_add(l).max(last.0 + last.1) - last.0;
                }
                _ => out.push((o, l)),
            }
        }
        self.v = out;
    }

    pub fn into_vec(self) -> Vec<(u64, u64)> {
        self.v
    }
}

/// Formats 16 bytes as a lower-case RFC 4122 UUID string.
pub fn uuid_string(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A NUL/space-padded label, `None` when empty.
pub fn label_string(b: &[u8]) -> Option<String> {
    let s: Vec<u8> = b.iter().copied().take_while(|c| *c != 0).collect();
    let s = String::from_utf8_lossy(&s).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::MERGE_GAP;

    #[test]
    fn used_ranges_merge_touching_ranges_and_keep_the_rest_exact() {
        let mut u = UsedRanges::default();
        u.push(0, 4096);
        u.push(4096, 4096);
        u.push(65536, 4096);
        u.push(65536 + 4096, 0);
        assert_eq!(u.into_vec(), vec![(0, 8192), (65536, 4096)]);
    }

    #[test]
    fn a_bitmap_of_alternating_blocks_stays_bounded_and_covers_every_used_block() {
        // One used 4 KiB block every 24 KiB (gaps wider than MERGE_GAP): before, one entry
        // per used block (32 GiB for a hostile 16 TiB file system).
        let (step, n) = (24u64 << 10, 3 * MAX_RANGES as u64);
        let mut u = UsedRanges::default();
        for i in 0..n {
            u.push(i * step, 4096);
        }
        let v = u.into_vec();
        assert!(v.len() <= MAX_RANGES, "{} ranges", v.len());
        // Sorted, disjoint, and every used block inside a range.
        assert!(v.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0));
        let mut k = 0;
        for i in 0..n {
            let (o, e) = (i * step, i * step + 4096);
            while v[k].0 + v[k].1 < e {
                k += 1;
            }
            assert!(v[k].0 <= o, "block at {o} not covered");
        }
    }

    /// An LV holding btrfs (SUSE's layout on LVM): before, [`probe_known`] did not try
    /// btrfs, so the LVM probe stored the LV as its non-zero blocks and zero-filled the PV.
    #[test]
    fn probe_known_reads_btrfs_too() {
        let disk = crate::disk::MemDisk::from_vec(btrfs::synth::image(), 512);
        let part = PartView {
            disk: &disk,
            start: 0,
            size: crate::disk::BlockIo::size(&disk),
        };
        let info = probe_known(&part).unwrap().expect("btrfs found");
        assert_eq!(info.kind, "btrfs");
        assert_eq!(info.fill, Fill::Keep);
        assert_eq!(info.used, btrfs::synth::USED.to_vec());
    }

    #[test]
    fn below_the_bound_the_list_is_exact() {
        // Real file systems never reach MAX_RANGES: their used list, so their chunks and
        // image ids, are what they were.
        let exact: Vec<(u64, u64)> = (0..1000u64).map(|i| (i * 3 * MERGE_GAP, 4096)).collect();
        let mut u = UsedRanges::default();
        for &(o, l) in &exact {
            u.push(o, l);
        }
        assert_eq!(u.into_vec(), exact);
    }
}
