//! Chunking: turns the used byte ranges of a region into chunks. A chunk never crosses a
//! `chunk_size`-aligned boundary (so the same disk always yields the same chunks and a
//! diff compares like with like), and gaps shorter than [`MERGE_GAP`] between used
//! ranges are stored rather than split into many tiny frames.

/// Gaps up to this many bytes between used ranges are stored.
pub const MERGE_GAP: u64 = 32 << 10;

/// Default maximum raw chunk length.
pub const DEFAULT_CHUNK: u64 = 4 << 20;

/// Splits sorted used ranges into `(offset, length)` chunks.
pub fn chunk_ranges(used: &[(u64, u64)], chunk_size: u64) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = vec![];
    for &(o, l) in used {
        if l == 0 {
            continue;
        }
        match merged.last_mut() {
            Some(last) if o <= last.0 + last.1 + MERGE_GAP && o / chunk_size == (last.0 + last.1 - 1) / chunk_size => {
                last.1 = (o + l).max(last.0 + last.1) - last.0;
            }
            _ => merged.push((o, l)),
        }
    }
    let mut out = vec![];
    for (o, l) in merged {
        let mut pos = o;
        let end = o + l;
        while pos < end {
            let boundary = (pos / chunk_size + 1) * chunk_size;
            let n = boundary.min(end) - pos;
            match out.last_mut() {
                // A range that merged across a boundary was cut above; rejoin pieces that
                // share a window.
                Some((po, pl)) if *po + *pl == pos && *po / chunk_size == pos / chunk_size => *pl += n,
                _ => out.push((pos, n)),
            }
            pos += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_cover_every_used_byte() {
        let cs = 1 << 20;
        let used = vec![(0, 4096), (8192, 4096), (900_000, 300_000), (5 << 20, 10), (7 << 20, 3 << 20)];
        let chunks = chunk_ranges(&used, cs);
        for &(o, l) in &chunks {
            assert!(l > 0 && l <= cs);
            assert_eq!(o / cs, (o + l - 1) / cs, "chunk {o}+{l} crosses a boundary");
        }
        for &(o, l) in &used {
            for b in [o, o + l - 1] {
                assert!(chunks.iter().any(|&(co, cl)| b >= co && b < co + cl), "byte {b} not covered");
            }
        }
        // Small gap merged, large gap not.
        assert_eq!(chunks[0], (0, 12288));
        assert!(!chunks.iter().any(|&(o, l)| o <= (6 << 20) && o + l > (6 << 20)));
    }
}
