//! Diff: compares an image with a disk. Layouts first (equal or not, and why; whether
//! restore would keep the disk's table); then, for every partition the disk holds where
//! restore places it (same number, start and type; the same size, or larger: grown by a
//! clone onto a bigger disk), which chunks hold different bytes on the disk (the set a
//! delta re-clone would fetch). A partition moved, retyped, shrunk or missing is named,
//! with why, and not compared. Nothing here writes.

use crate::disk::BlockIo;
use crate::error::Result;
use crate::layout::{differences, plan_layout, read_layout, Layout};
use crate::manifest::{Image, Region};
use crate::progress::Progress;
use crate::restore::delta::{chunks_present, ChunkCounts};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The disk's table equals the image's (kind, sector size, partitions).
    pub layout_equal: bool,
    /// Restore would keep the disk's table: it is equal, or it is the image's layout with
    /// the grow partition taking the rest of a larger disk. The chunks are compared then.
    pub layout_kept: bool,
    pub layout_differences: Vec<String>,
    pub regions: Vec<RegionDiff>,
    /// The disk's table is hidden by the in-progress mark of an interrupted restore
    /// ([`crate::mark`]): compared as that table, but the disk is not the image's (it
    /// would not boot) until a restore finishes.
    pub interrupted: bool,
    /// The counts a delta restore reports, over the compared regions: chunks checked,
    /// the same on the disk (`skipped`), differing (`fetched`) and their bytes.
    pub chunks: ChunkCounts,
}

impl DiffReport {
    /// The disk holds the image: a table restore keeps, every region compared, no chunk
    /// differing.
    pub fn same(&self) -> bool {
        !self.interrupted
            && self.layout_kept
            && self
                .regions
                .iter()
                .all(|r| r.placement != Placement::NotCompared && r.differing.is_empty())
    }
}

/// How a region of the image sits on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The disk's partition has the image's start, size and type (the disk head: the
    /// same table kind and sector size).
    Equal,
    /// The same start and type, larger: grown by a clone onto a bigger disk. Its chunks
    /// are compared where the image put them; a grown file system's rewritten metadata
    /// shows as differing chunks.
    Grown,
    /// Not where restore would put it (see `reason`); its chunks were not compared.
    NotCompared,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionDiff {
    pub name: String,
    pub placement: Placement,
    /// Why the region was not compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub chunks: usize,
    /// Indexes of chunks whose bytes differ on the disk.
    pub differing: Vec<usize>,
    pub differing_bytes: u64,
}

/// Indexes of the chunks of region `r` whose bytes on `disk` (region starting at byte
/// `base`) do not hash to the manifest's sha256: the chunks a delta restore would fetch
/// (the same check, [`crate::restore::delta::chunks_present`]).
pub fn region_differences(
    r: &Region,
    disk: &dyn BlockIo,
    base: u64,
    threads: usize,
    progress: &Progress,
) -> Result<Vec<usize>> {
    let present = chunks_present(r, disk, base, threads, progress)?;
    Ok(present
        .iter()
        .enumerate()
        .filter(|(_, p)| !**p)
        .map(|(i, _)| i)
        .collect())
}

/// Where region `r` of `image` lies on a disk whose table is `disk`: `(byte offset,
/// placement)`, or why it is not compared. The placement rule of restore for a kept or
/// grown table: the partition keeps its number, start and type; it may only be larger.
pub fn place(
    r: &Region,
    image: &Layout,
    disk: &Layout,
) -> std::result::Result<(u64, Placement), String> {
    if image.sector_size != disk.sector_size {
        return Err(format!(
            "logical sector size: image {} vs disk {}",
            image.sector_size, disk.sector_size
        ));
    }
    if r.number == 0 {
        if image.table != disk.table {
            return Err(format!(
                "table kind: image {} vs disk {}",
                image.table, disk.table
            ));
        }
        return Ok((0, Placement::Equal));
    }
    let (Some(p), Some(q)) = (image.partition(r.number), disk.partition(r.number)) else {
        return Err(format!("partition {} is not on the disk", r.number));
    };
    if p.start != q.start {
        return Err(format!(
            "partition {} starts at sector {} on the disk, {} in the image",
            r.number, q.start, p.start
        ));
    }
    if !p.type_.eq_ignore_ascii_case(&q.type_) {
        return Err(format!(
            "partition {} has type {} on the disk, {} in the image",
            r.number, q.type_, p.type_
        ));
    }
    let placement = match q.size.cmp(&p.size) {
        std::cmp::Ordering::Less => {
            return Err(format!(
                "partition {} is {} sectors on the disk, smaller than the image's {}",
                r.number, q.size, p.size
            ))
        }
        std::cmp::Ordering::Equal => Placement::Equal,
        std::cmp::Ordering::Greater => Placement::Grown,
    };
    // The disk's own table (possibly hostile) may put it past 2^64 bytes.
    let base = q
        .start
        .checked_mul(disk.sector_size as u64)
        .ok_or_else(|| format!("partition {} starts past 2^64 bytes", r.number))?;
    Ok((base, placement))
}

pub fn diff(
    image: &Image,
    disk: &dyn BlockIo,
    threads: usize,
    progress: &Progress,
) -> Result<DiffReport> {
    let mut current = read_layout(disk).unwrap_or(None);
    let interrupted = current.is_none();
    if interrupted {
        current = crate::mark::InProgress::find(disk)
            .ok()
            .flatten()
            .map(|(l, _)| l);
    }
    let interrupted = interrupted && current.is_some();
    let layout_differences = match &current {
        None => vec!["the disk has no readable partition table".to_string()],
        Some(cur) => {
            let mut d = differences(&image.layout, cur);
            if cur.sector_size != image.layout.sector_size {
                d.push("sector size differs".into());
            }
            d
        }
    };
    let layout_equal = layout_differences.is_empty();
    let layout_kept = layout_equal
        || plan_layout(
            &image.layout,
            current.as_ref(),
            disk.size(),
            disk.sector_size(),
        )
        .is_ok_and(|p| p.keep_table);
    let mut regions = vec![];
    let mut chunks = ChunkCounts::default();
    if let Some(cur) = current {
        let placed: Vec<_> = image
            .manifest
            .regions
            .iter()
            .map(|r| (r, place(r, &image.layout, &cur)))
            .collect();
        let total: u64 = placed
            .iter()
            .filter(|(_, p)| p.is_ok())
            .map(|(r, _)| r.used_bytes)
            .sum();
        progress.start(total, "comparing");
        for (r, p) in placed {
            let (placement, reason, differing) = match p {
                Ok((base, placement)) => (
                    placement,
                    None,
                    region_differences(r, disk, base, threads, progress)?,
                ),
                Err(why) => (Placement::NotCompared, Some(why), vec![]),
            };
            count(&mut chunks, r, &differing, placement);
            regions.push(RegionDiff {
                name: r.name.clone(),
                placement,
                reason,
                chunks: r.chunks.len(),
                differing_bytes: differing.iter().map(|&i| r.chunks[i].length).sum(),
                differing,
            });
        }
        progress.finish();
    }
    Ok(DiffReport {
        layout_equal,
        layout_kept,
        layout_differences,
        regions,
        chunks,
        interrupted,
    })
}

/// Adds region `r`'s chunks to the counts (a region not compared adds nothing).
fn count(c: &mut ChunkCounts, r: &Region, differing: &[usize], placement: Placement) {
    if placement == Placement::NotCompared {
        return;
    }
    c.checked += r.chunks.len();
    c.fetched += differing.len();
    c.skipped += r.chunks.len() - differing.len().min(r.chunks.len());
    for ch in differing.iter().filter_map(|&i| r.chunks.get(i)) {
        c.fetched_bytes = c.fetched_bytes.saturating_add(ch.compressed_length);
        c.fetched_raw = c.fetched_raw.saturating_add(ch.length);
    }
    c.skipped_raw = c.skipped_raw.saturating_add(
        r.used_bytes.saturating_sub(
            differing
                .iter()
                .filter_map(|&i| r.chunks.get(i))
                .fold(0u64, |a, ch| a.saturating_add(ch.length)),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Fill;
    use crate::layout::{Partition, TableKind};

    fn layout(parts: &[(u32, u64, u64, &str)]) -> Layout {
        let parts = parts.iter();
        let parts = parts.map(|&(number, start, size, t)| Partition::plain(number, start, size, t));
        Layout::gpt(64 << 20, parts.collect())
    }

    fn region(number: u32) -> Region {
        Region {
            name: if number == 0 {
                "head".into()
            } else {
                format!("p{number}")
            },
            number,
            size: 4096,
            filesystem: "ext4".into(),
            uuid: None,
            label: None,
            fs_size: 4096,
            used_bytes: 0,
            fill: Fill::Keep,
            payload: String::new(),
            chunks: vec![],
        }
    }

    const L: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    const S: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

    #[test]
    fn partitions_are_placed_as_restore_places_them() {
        let img = layout(&[(1, 2048, 4096, L), (2, 6144, 4096, S), (3, 10240, 8192, L)]);
        // p1 equal, p2 retyped, p3 grown; p4 only on the disk.
        let disk = layout(&[
            (1, 2048, 4096, L),
            (2, 6144, 4096, L),
            (3, 10240, 50000, L),
            (4, 60240, 100, L),
        ]);
        assert_eq!(place(&region(0), &img, &disk), Ok((0, Placement::Equal)));
        assert_eq!(
            place(&region(1), &img, &disk),
            Ok((2048 * 512, Placement::Equal))
        );
        assert!(place(&region(2), &img, &disk).unwrap_err().contains("type"));
        assert_eq!(
            place(&region(3), &img, &disk),
            Ok((10240 * 512, Placement::Grown))
        );
        // Moved, shrunk, missing, another sector size or table kind: not compared.
        let moved = layout(&[(1, 4096, 4096, L), (3, 10240, 4096, L)]);
        assert!(place(&region(1), &img, &moved)
            .unwrap_err()
            .contains("starts at sector 4096"));
        assert!(place(&region(3), &img, &moved)
            .unwrap_err()
            .contains("smaller"));
        assert!(place(&region(2), &img, &moved)
            .unwrap_err()
            .contains("not on the disk"));
        let mut big = disk.clone();
        big.sector_size = 4096;
        assert!(place(&region(1), &img, &big).is_err());
        let mut mbr = disk.clone();
        mbr.table = TableKind::Mbr;
        assert!(place(&region(0), &img, &mbr)
            .unwrap_err()
            .contains("table kind"));
        // A hostile disk table putting a partition past 2^64 bytes.
        let far = layout(&[(1, 2048, 4096, L)]);
        let mut hostile = far.clone();
        hostile.partitions[0].start = u64::MAX;
        let mut img_far = far.clone();
        img_far.partitions[0].start = u64::MAX;
        assert!(place(&region(1), &img_far, &hostile).is_err());
    }
}
