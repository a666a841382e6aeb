//! Diff: compares an image with a disk. Layouts first (equal or not, and why); for a
//! layout restore would keep (equal, or the image's grown to a larger disk by an earlier
//! clone), which chunks of each partition hold different bytes on the disk (the
//! set a delta re-clone would fetch).

use crate::disk::BlockIo;
use crate::error::Result;
use crate::layout::{differences, plan_layout, read_layout};
use crate::manifest::{Image, Region};
use crate::pool::run_ordered;
use crate::progress::Progress;
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The disk's table equals the image's (kind, sector size, partitions).
    pub layout_equal: bool,
    /// Restore would keep the disk's table: it is equal, or it is the image's layout with
    /// the grow partition taking the rest of a larger disk. The chunks are compared then.
    pub layout_kept: bool,
    pub layout_differences: Vec<String>,
    pub regions: Vec<RegionDiff>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionDiff {
    pub name: String,
    pub chunks: usize,
    /// Indexes of chunks whose bytes differ on the disk.
    pub differing: Vec<usize>,
    pub differing_bytes: u64,
}

/// Indexes of the chunks of region `r` whose bytes on `disk` (region starting at byte
/// `base`) do not hash to the manifest's sha256.
pub fn region_differences(
    r: &Region,
    disk: &dyn BlockIo,
    base: u64,
    threads: usize,
    progress: &Progress,
) -> Result<Vec<usize>> {
    let mut differing = vec![];
    run_ordered(
        r.chunks.len(),
        crate::pool::threads(threads),
        crate::pool::threads(threads) * 4,
        |i| -> Result<bool> {
            let c = &r.chunks[i];
            let mut h = Sha256::new();
            if c.length > crate::chunk::MAX_CHUNK {
                return Ok(true);
            }
            for (o, l) in c.ranges() {
                let (Some(pos), true) = (base.checked_add(o), l <= c.length) else {
                    return Ok(true);
                };
                let mut buf = vec![0u8; l as usize];
                if disk.read_exact_at(&mut buf, pos).is_err() {
                    return Ok(true);
                }
                h.update(&buf);
            }
            Ok(hex::encode(h.finalize()) != c.sha256)
        },
        |i, d| {
            progress.inc(r.chunks[i].length);
            if d {
                differing.push(i);
            }
            Ok(())
        },
    )?;
    Ok(differing)
}

pub fn diff(
    image: &Image,
    disk: &dyn BlockIo,
    threads: usize,
    progress: &Progress,
) -> Result<DiffReport> {
    let current = read_layout(disk).unwrap_or(None);
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
    if let (true, Some(cur)) = (layout_kept, current) {
        let ss = cur.sector_size as u64;
        let total: u64 = image.manifest.regions.iter().map(|r| r.used_bytes).sum();
        progress.start(total, "comparing");
        for r in &image.manifest.regions {
            let base = if r.number == 0 {
                0
            } else {
                match cur.partition(r.number).map(|p| p.start.checked_mul(ss)) {
                    Some(Some(b)) => b,
                    // The disk's own table (possibly hostile) puts it past 2^64 bytes.
                    Some(None) => u64::MAX,
                    None => 0,
                }
            };
            let differing = region_differences(r, disk, base, threads, progress)?;
            regions.push(RegionDiff {
                name: r.name.clone(),
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
    })
}
