//! Chunking: turns the used byte ranges of a region into chunks. Format version 2: a
//! chunk is the used bytes of one fixed window of the region, `[k·chunk_size,
//! (k+1)·chunk_size)`, so a chunk's contents depend only on the used ranges inside its
//! window: a block added or freed early in a partition changes that window's chunk and
//! no other (a delta re-clone then fetches only what changed, docs/FORMAT.md). Inside a
//! window, gaps shorter than [`MERGE_GAP`] are stored rather than recorded as separate
//! extents; a gap is never merged across a window boundary. The same used ranges always
//! give the same chunks. (Version 1 gathered ranges until a chunk was full, so one block
//! early shifted every later chunk.)

/// Gaps up to this many bytes between used ranges are stored (keeps extent lists short).
pub const MERGE_GAP: u64 = 16 << 10;

/// Default maximum raw chunk length.
pub const DEFAULT_CHUNK: u64 = 8 << 20;

/// Largest chunk a manifest may declare (bounds the memory a reader commits per chunk).
pub const MAX_CHUNK: u64 = 64 << 20;

/// The largest zstd frame `chunk_size` raw bytes can compress to: zstd's own bound
/// (`ZSTD_COMPRESSBOUND`: input + 1/256 + a small margin under 128 KiB). A manifest that
/// declares a longer frame was not written by capture; readers allocate at most this per
/// frame. `chunk_size` must be at most [`MAX_CHUNK`] (no overflow then).
pub const fn frame_bound(chunk_size: u64) -> u64 {
    let margin = if chunk_size < (128 << 10) {
        ((128 << 10) - chunk_size) >> 11
    } else {
        0
    };
    chunk_size + (chunk_size >> 8) + margin
}

/// Largest frame any manifest may declare ([`frame_bound`] of [`MAX_CHUNK`], 64.25 MiB):
/// the most a reader allocates for one frame whatever a manifest says.
pub const MAX_FRAME: u64 = frame_bound(MAX_CHUNK);

/// Groups sorted used ranges into chunks, one per `chunk_size`-aligned window of the
/// region that holds used bytes; each chunk is a list of `(offset, length)` extents, in
/// order, inside its window (so their lengths add up to at most `chunk_size`). Ranges
/// are split at window boundaries first, then gaps under [`MERGE_GAP`] are merged within
/// each window only.
pub fn chunk_ranges(used: &[(u64, u64)], chunk_size: u64) -> Vec<Vec<(u64, u64)>> {
    let cs = chunk_size.max(1);
    let mut sorted = used.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<Vec<(u64, u64)>> = vec![];
    let mut window = u64::MAX;
    // End of what is already in a chunk: overlapping ranges are stored once.
    let mut done = 0u64;
    for (o, l) in sorted {
        let end = o.saturating_add(l);
        let mut pos = o.max(done);
        while pos < end {
            let w = pos / cs;
            let wend = (w + 1).saturating_mul(cs).min(end);
            if w != window || out.is_empty() {
                out.push(vec![(pos, wend - pos)]);
                window = w;
            } else if let Some(last) = out.last_mut().and_then(|c| c.last_mut()) {
                let last_end = last.0 + last.1;
                if pos <= last_end.saturating_add(MERGE_GAP) {
                    last.1 = wend.max(last_end) - last.0;
                } else if let Some(c) = out.last_mut() {
                    c.push((pos, wend - pos));
                }
            }
            pos = wend;
        }
        done = done.max(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_bound_is_zstds_bound() {
        for n in [
            1u64,
            100,
            4096,
            65536,
            131071,
            131072,
            1 << 20,
            8 << 20,
            MAX_CHUNK,
        ] {
            assert_eq!(
                frame_bound(n),
                zstd::zstd_safe::compress_bound(n as usize) as u64,
                "{n}"
            );
        }
    }

    /// Every used byte is in exactly one chunk, each chunk's extents are in order inside
    /// one window, and the gaps stored are short ones inside a window.
    fn check(used: &[(u64, u64)], cs: u64) -> Vec<Vec<(u64, u64)>> {
        let chunks = chunk_ranges(used, cs);
        let flat: Vec<(u64, u64)> = chunks.iter().flatten().copied().collect();
        assert!(
            flat.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
            "{flat:?}"
        );
        for c in &chunks {
            let w = c[0].0 / cs;
            assert!(c
                .iter()
                .all(|&(o, l)| l > 0 && o / cs == w && (o + l - 1) / cs == w));
        }
        for &(o, l) in used.iter().filter(|r| r.1 > 0) {
            for b in [o, o + l / 2, o + l - 1] {
                assert!(flat.iter().any(|&(x, n)| x <= b && b < x + n), "{b} lost");
            }
        }
        chunks
    }

    #[test]
    fn a_chunk_is_one_windows_used_bytes() {
        let cs = 1 << 20;
        let used = vec![
            (0, 4096),
            (8192, 4096),
            (900_000, 300_000),
            (5 << 20, 10),
            (7 << 20, 3 << 20),
        ];
        let chunks = check(&used, cs);
        // The 4 KiB gap is stored; a range across a window boundary is split there.
        assert_eq!(chunks[0], vec![(0, 12288), (900_000, (1 << 20) - 900_000)]);
        assert_eq!(chunks[1], vec![(1 << 20, 1_200_000 - (1 << 20))]);
        assert_eq!(chunks[2], vec![(5 << 20, 10)]);
        assert_eq!(chunks[3..].len(), 3, "7, 8 and 9 MiB");
        let total: u64 = chunks.iter().flatten().map(|e| e.1).sum();
        assert_eq!(total, 12288 + 300_000 + 10 + (3 << 20));
    }

    #[test]
    fn a_small_gap_is_not_merged_across_a_window_boundary() {
        let cs = 1 << 20;
        let chunks = check(&[(cs - 4096, 4096), (cs + 4096, 4096)], cs);
        assert_eq!(
            chunks,
            vec![vec![(cs - 4096, 4096)], vec![(cs + 4096, 4096)]]
        );
    }

    #[test]
    fn a_block_added_early_changes_only_its_own_window() {
        let cs = 1 << 20;
        let before: Vec<(u64, u64)> = (0..64u64).map(|i| (i * 300_000, 100_000)).collect();
        let mut after = before.clone();
        after.push((200_000, 4096));
        let (a, b) = (check(&before, cs), check(&after, cs));
        assert_eq!(a.len(), b.len());
        let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(changed, vec![0]);
    }

    #[test]
    fn unsorted_and_overlapping_ranges_are_stored_once() {
        let cs = 1 << 20;
        let chunks = check(
            &[(5 << 20, 4096), (0, 3 << 20), (1 << 20, 4096), (0, 0)],
            cs,
        );
        let total: u64 = chunks.iter().flatten().map(|e| e.1).sum();
        assert_eq!(total, (3 << 20) + 4096);
    }
}
