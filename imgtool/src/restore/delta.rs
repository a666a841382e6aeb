//! Delta re-clone: which chunks a target already holds. When restore keeps the target's
//! table (its layout equals the image's, [`crate::layout::plan_layout`]), every chunk of
//! every selected partition is read from where restore would write it (`O_DIRECT` where
//! the disk can: [`crate::manifest::Chunk::read_from`]) and hashed on all cores; only the
//! chunks whose sha256 differs from the manifest's are fetched and written. `imgtool
//! diff` asks the same question through [`chunks_present`], so the two never disagree.
//!
//! Owns the check and the counts ([`ChunkCounts`]); fetching and writing stay in
//! [`super::stream_partitions`]. The disk head is always fetched (at most 1 MiB, and a
//! kept table's bytes are never its captured ones byte for byte).

use super::RegionReport;
use crate::disk::BlockIo;
use crate::error::Result;
use crate::manifest::Region;
use crate::pool::run_ordered;
use crate::progress::Progress;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a restore checked on the target and what it fetched (the head's chunks count as
/// fetched: it is always fetched).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChunkCounts {
    /// Chunks read from the target and hashed.
    pub checked: usize,
    /// Of those, chunks whose bytes were already the image's: neither fetched nor written.
    pub skipped: usize,
    /// Chunks fetched (and written).
    pub fetched: usize,
    /// Compressed bytes of the frames fetched: what the transfer carries (retries aside).
    pub fetched_bytes: u64,
    /// Raw bytes of the chunks fetched.
    pub fetched_raw: u64,
    /// Raw bytes of the chunks skipped.
    pub skipped_raw: u64,
}

/// Which chunks of each selected region to fetch (`fetch[k][i]`, region `k` of the
/// restore's list, chunk `i`) and the counts.
#[derive(Debug, Clone, Default)]
pub struct DeltaPlan {
    pub fetch: Vec<Vec<bool>>,
    pub counts: ChunkCounts,
}

impl DeltaPlan {
    /// The chunk indexes of region `k` that are fetched.
    pub fn fetched(&self, k: usize) -> Vec<usize> {
        self.fetch.get(k).map_or(vec![], |f| {
            f.iter()
                .enumerate()
                .filter(|(_, w)| **w)
                .map(|(i, _)| i)
                .collect()
        })
    }

    /// The chunk indexes of region `k` found already on the disk.
    pub fn skipped(&self, k: usize) -> Vec<usize> {
        self.fetch.get(k).map_or(vec![], |f| {
            f.iter()
                .enumerate()
                .filter(|(_, w)| !**w)
                .map(|(i, _)| i)
                .collect()
        })
    }
}

/// The delta plan of `regions` (placed as `reports` say) on `target`: with `check`, each
/// partition's chunks are hashed on the disk and only differing ones fetched; without it
/// (a full restore: `--full`, or a table that changes) everything is fetched.
pub(crate) fn plan_delta(
    regions: &[&Region],
    reports: &[RegionReport],
    target: &dyn BlockIo,
    check: bool,
    threads: usize,
    progress: &Progress,
) -> Result<DeltaPlan> {
    let checked_bytes: u64 = regions
        .iter()
        .filter(|r| check && r.number != 0)
        .fold(0u64, |a, r| a.saturating_add(r.used_bytes));
    if checked_bytes > 0 {
        progress.start(checked_bytes, "checking the disk");
    }
    let mut plan = DeltaPlan::default();
    for (r, rep) in regions.iter().zip(reports) {
        let fetch: Vec<bool> = if check && r.number != 0 {
            plan.counts.checked += r.chunks.len();
            chunks_present(r, target, rep.disk_offset, threads, progress)?
                .into_iter()
                .map(|present| !present)
                .collect()
        } else {
            vec![true; r.chunks.len()]
        };
        for (c, want) in r.chunks.iter().zip(&fetch) {
            let counts = &mut plan.counts;
            if *want {
                counts.fetched += 1;
                counts.fetched_bytes = counts.fetched_bytes.saturating_add(c.compressed_length);
                counts.fetched_raw = counts.fetched_raw.saturating_add(c.length);
            } else {
                counts.skipped += 1;
                counts.skipped_raw = counts.skipped_raw.saturating_add(c.length);
            }
        }
        plan.fetch.push(fetch);
    }
    if checked_bytes > 0 {
        progress.finish();
    }
    Ok(plan)
}

/// Whether each chunk of region `r` (starting at byte `base` of `disk`) holds the bytes
/// whose sha256 the manifest records: one answer per chunk, hashed on `threads` cores
/// (0 = all). A chunk that cannot be read (past the disk's end, a read error, extents a
/// hostile manifest made longer than the chunk) is not present: it is fetched, and the
/// write that follows reports the error if there is one.
pub fn chunks_present(
    r: &Region,
    disk: &dyn BlockIo,
    base: u64,
    threads: usize,
    progress: &Progress,
) -> Result<Vec<bool>> {
    let threads = crate::pool::threads(threads);
    let mut present = Vec::with_capacity(r.chunks.len());
    run_ordered(
        r.chunks.len(),
        threads,
        threads * 2,
        |i| -> Result<bool> {
            let c = &r.chunks[i];
            Ok(c.read_from(disk, base)
                .is_ok_and(|raw| hex::encode(Sha256::digest(&raw[..])) == c.sha256))
        },
        |i, p| {
            progress.inc(r.chunks[i].length);
            present.push(p);
            Ok(())
        },
    )?;
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::fs::Fill;
    use crate::manifest::Chunk;

    fn chunk(offset: u64, bytes: &[u8], extents: Vec<[u64; 2]>) -> Chunk {
        Chunk {
            offset,
            length: bytes.len() as u64,
            payload_offset: 0,
            compressed_length: 10,
            sha256: hex::encode(Sha256::digest(bytes)),
            frame_sha256: String::new(),
            extents,
        }
    }

    fn region(chunks: Vec<Chunk>) -> Region {
        Region {
            name: "p1".into(),
            number: 1,
            size: 1 << 16,
            filesystem: "ext4".into(),
            uuid: None,
            label: None,
            fs_size: 1 << 16,
            used_bytes: chunks.iter().map(|c| c.length).sum(),
            fill: Fill::Keep,
            payload: "p1.zst".into(),
            chunks,
        }
    }

    #[test]
    fn a_chunk_is_present_only_when_every_extent_holds_its_bytes() {
        let disk = MemDisk::new(1 << 17, 512);
        let base = 4096u64;
        let a = vec![1u8; 4096];
        let b: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        disk.write_all_at(&a, base).unwrap();
        disk.write_all_at(&b[..4096], base + 16384).unwrap();
        disk.write_all_at(&b[4096..], base + 32768).unwrap();
        let mut r = region(vec![
            chunk(0, &a, vec![]),
            chunk(16384, &b, vec![[16384, 4096], [32768, 4096]]),
            chunk(40960, &[7u8; 4096], vec![]),
        ]);
        let p = chunks_present(&r, &disk, base, 2, &Progress::hidden()).unwrap();
        assert_eq!(p, vec![true, true, false]);
        // One byte changed in the second extent.
        disk.write_all_at(&[0xee], base + 32768 + 100).unwrap();
        let p = chunks_present(&r, &disk, base, 2, &Progress::hidden()).unwrap();
        assert_eq!(p, vec![true, false, false]);
        // Past the end of the disk, or extents longer than the chunk: not present.
        r.chunks[0].offset = 1 << 40;
        r.chunks[1].extents[1][1] = 8192;
        let p = chunks_present(&r, &disk, base, 1, &Progress::hidden()).unwrap();
        assert_eq!(p, vec![false, false, false]);
    }

    #[test]
    fn counts_add_up_and_a_full_plan_fetches_everything() {
        let disk = MemDisk::new(1 << 17, 512);
        let a = vec![3u8; 4096];
        disk.write_all_at(&a, 8192).unwrap();
        let r = region(vec![
            chunk(0, &a, vec![]),
            chunk(4096, &[9u8; 4096], vec![]),
        ]);
        let rep = RegionReport {
            name: "p1".into(),
            filesystem: "ext4".into(),
            bytes: 8192,
            disk_offset: 8192,
            target_size: 1 << 16,
            grown: None,
            wipe: vec![],
            wiped_bytes: 0,
            zeroed_bytes: 0,
        };
        let reps = [rep];
        let d = plan_delta(&[&r], &reps, &disk, true, 1, &Progress::hidden()).unwrap();
        assert_eq!(d.fetch, vec![vec![false, true]]);
        assert_eq!((d.fetched(0), d.skipped(0)), (vec![1], vec![0]));
        let c = &d.counts;
        assert_eq!((c.checked, c.skipped, c.fetched), (2, 1, 1));
        assert_eq!(
            (c.fetched_bytes, c.fetched_raw, c.skipped_raw),
            (10, 4096, 4096)
        );
        let full = plan_delta(&[&r], &reps, &disk, false, 1, &Progress::hidden()).unwrap();
        assert_eq!(full.fetch, vec![vec![true, true]]);
        assert_eq!((full.counts.checked, full.counts.fetched), (0, 2));
    }
}
