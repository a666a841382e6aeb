//! Chunking: turns the used byte ranges of a region into chunks. A chunk gathers used
//! ranges, in disk order, until it holds `chunk_size` raw bytes, so frames are full-size
//! (better compression, fewer frames) however fragmented the file system is. Gaps shorter
//! than [`MERGE_GAP`] are stored rather than recorded as separate extents. The same used
//! ranges always give the same chunks.

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

/// Groups sorted used ranges into chunks; each chunk is a list of `(offset, length)`
/// extents whose lengths add up to at most `chunk_size`.
pub fn chunk_ranges(used: &[(u64, u64)], chunk_size: u64) -> Vec<Vec<(u64, u64)>> {
    let mut merged: Vec<(u64, u64)> = vec![];
    for &(o, l) in used {
        if l == 0 {
            continue;
        }
        match merged.last_mut() {
            Some(last) if o <= last.0 + last.1 + MERGE_GAP => {
                last.1 = (o + l).max(last.0 + last.1) - last.0;
            }
            _ => merged.push((o, l)),
        }
    }
    let mut out = vec![];
    let mut cur: Vec<(u64, u64)> = vec![];
    let mut fill = 0u64;
    for (o, l) in merged {
        let mut pos = o;
        let end = o + l;
        while pos < end {
            let n = (chunk_size - fill).min(end - pos);
            cur.push((pos, n));
            fill += n;
            pos += n;
            if fill == chunk_size {
                out.push(std::mem::take(&mut cur));
                fill = 0;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
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

    #[test]
    fn chunks_are_full_and_cover_every_used_byte_once() {
        let cs = 1 << 20;
        let used = vec![
            (0, 4096),
            (8192, 4096),
            (900_000, 300_000),
            (5 << 20, 10),
            (7 << 20, 3 << 20),
        ];
        let chunks = chunk_ranges(&used, cs);
        let total: u64 = chunks.iter().flatten().map(|e| e.1).sum();
        // The 4 KiB gap is stored; the rest is exactly the used bytes.
        assert_eq!(total, 12288 + 300_000 + 10 + (3 << 20));
        for (i, c) in chunks.iter().enumerate() {
            let len: u64 = c.iter().map(|e| e.1).sum();
            assert!(len <= cs);
            if i + 1 < chunks.len() {
                assert_eq!(len, cs, "chunk {i} is not full");
            }
            assert!(
                c.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
                "extents out of order"
            );
        }
        assert_eq!(chunks[0][0], (0, 12288));
        assert!(!chunks
            .iter()
            .flatten()
            .any(|&(o, l)| o < (6 << 20) && o + l > (5 << 20) + 10));
    }
}
