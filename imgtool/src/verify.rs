//! Integrity of a whole image: checking every frame against its recorded frame sha256
//! (fast: no decompression, [`check_frames`]) and the full [`verify`] that decompresses
//! and hashes every chunk. Reading and decoding one frame is [`crate::frame`]'s.

use crate::error::Result;
use crate::manifest::{Image, Region};
use crate::pool::run_ordered;
use crate::progress::Progress;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The frame codec moved to [`crate::frame`]; these paths keep working.
pub use crate::frame::{
    decode_frame, read_chunk, read_frame, FrameStream, FRAME_GRACE, MIN_FRAME_RATE,
};

/// Checks every frame's sha256 (compressed bytes) of `regions`.
pub fn check_frames(
    image: &Image,
    regions: &[&Region],
    threads: usize,
    progress: &Progress,
) -> Result<()> {
    let all: Vec<(&Region, Vec<usize>)> = regions
        .iter()
        .map(|r| (*r, (0..r.chunks.len()).collect()))
        .collect();
    check_some_frames(image, &all, threads, progress)
}

/// Checks the sha256 of the listed frames (region, chunk indexes): what a delta restore
/// will write.
pub fn check_some_frames(
    image: &Image,
    regions: &[(&Region, Vec<usize>)],
    threads: usize,
    progress: &Progress,
) -> Result<()> {
    let total: u64 = regions
        .iter()
        .flat_map(|(r, list)| list.iter().filter_map(|&i| r.chunks.get(i)))
        .fold(0u64, |a, c| a.saturating_add(c.compressed_length));
    progress.start(total, "checking");
    let threads = crate::pool::threads(threads);
    for (r, list) in regions {
        let list: Vec<usize> = list
            .iter()
            .copied()
            .filter(|&i| i < r.chunks.len())
            .collect();
        run_ordered(
            list.len(),
            threads,
            threads * 4,
            |j| -> Result<u64> {
                let i = list[j];
                let frame = read_frame(image, r, i)?;
                let sum = hex::encode(Sha256::digest(&frame));
                if sum != r.chunks[i].frame_sha256 {
                    return Err(r.chunk_error(i, "compressed frame's sha256 does not match the manifest: the payload is damaged".into()));
                }
                Ok(frame.len() as u64)
            },
            |_, n| {
                progress.inc(n);
                Ok(())
            },
        )?;
    }
    progress.finish();
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub image_id: String,
    pub regions: usize,
    pub chunks: usize,
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
}

/// Decompresses and hashes every chunk of the image.
pub fn verify(image: &Image, threads: usize, progress: &Progress) -> Result<VerifyReport> {
    let m = &image.manifest;
    let total: u64 = m
        .regions
        .iter()
        .fold(0u64, |a, r| a.saturating_add(r.used_bytes));
    progress.start(total, "verifying");
    let threads = crate::pool::threads(threads);
    for r in &m.regions {
        run_ordered(
            r.chunks.len(),
            threads,
            threads * 4,
            |i| read_chunk(image, r, i).map(|raw| raw.len() as u64),
            |_, n| {
                progress.inc(n);
                Ok(())
            },
        )?;
    }
    progress.finish();
    Ok(VerifyReport {
        image_id: m.image_id.clone(),
        regions: m.regions.len(),
        chunks: m.regions.iter().map(|r| r.chunks.len()).sum(),
        raw_bytes: total,
        compressed_bytes: m
            .regions
            .iter()
            .fold(0u64, |a, r| a.saturating_add(r.compressed_bytes())),
    })
}
