//! Foreign signatures: where other file systems, volume managers and RAID formats keep
//! their magic in a partition, and which of those bytes restore must clear when it does
//! not write a partition's free space ([`crate::fs::Fill::Keep`]).
//!
//! A parsed file system (ext, FAT, swap, …) is restored as its used blocks only; the
//! rest of the target partition keeps what was there. When that was another file system,
//! its superblock survives next to ours and `blkid` calls the partition "ambivalent"
//! (a swap partition over old btrfs is then not activated at boot). `wipefs` and `mkswap`
//! clear the other signatures; [`wipe_ranges`] computes the same for restore, as a pure
//! function: the signature areas of a partition of the *target's* size, minus the ranges
//! the image writes anyway.
//!
//! The areas ([`signature_areas`]):
//! - the first MiB: XFS (0), LUKS 1/2 (0), LVM2 label (sectors 0–3), MD-RAID 1.1/1.2
//!   (0, 4 KiB), bcache (4 KiB), swap (the last bytes of the first page, up to 64 KiB
//!   pages), ISO9660 (32 KiB), btrfs (64 KiB), ZFS labels L0/L1 (0, 256 KiB), ext, FAT,
//!   NTFS, ReiserFS (64 KiB), LUKS2's second header for metadata areas of 16–512 KiB
//!   (it sits at the metadata size), …;
//! - the last MiB: MD-RAID 0.90/1.0 (64 KiB-aligned, the last 128 KiB), ZFS labels L2/L3
//!   (the last 512 KiB of the 256 KiB-aligned size), the GPT backup of a nested table,
//!   DDF/Intel IMSM RAID metadata (the last sectors);
//! - LUKS2's second header for the larger metadata areas `cryptsetup
//!   --luks2-metadata-size` allows (1, 2 and 4 MiB): 4 KiB at each of those offsets. With
//!   the primary gone, `blkid` still reports `crypto_LUKS` from any of them (libblkid
//!   probes every offset from 16 KiB to 4 MiB);
//! - btrfs superblock mirrors at 64 MiB, 256 GiB and 1 PiB (4 KiB each).
//!
//! The spots past the first MiB are cleared only where they fall wholly inside the
//! partition.
//!
//! Nothing here writes; [`crate::restore`] writes the ranges in its stream phase, before
//! the chunks and long before the table.

/// Bytes cleared at each end of a partition.
pub const EDGE: u64 = 1 << 20;

/// Offsets of btrfs' superblock mirrors (the primary, at 64 KiB, is in the first MiB).
pub const BTRFS_MIRRORS: [u64; 3] = [64 << 20, 256 << 30, 1 << 50];

/// Size of a btrfs superblock (what is cleared at each mirror).
pub const BTRFS_SUPER: u64 = 4096;

/// Offsets of LUKS2's second header past the first MiB: it sits at the metadata area's
/// size, and the sizes above 512 KiB are 1, 2 and 4 MiB.
pub const LUKS2_HDR2: [u64; 3] = [1 << 20, 2 << 20, 4 << 20];

/// Size of LUKS2's binary header (its magic and checksum; the JSON area follows).
pub const LUKS2_HDR: u64 = 4096;

/// The signature areas of a partition of `size` bytes: `(partition byte offset, length)`,
/// sorted, non-overlapping, every byte inside `[0, size)`.
pub fn signature_areas(size: u64) -> Vec<(u64, u64)> {
    let edge = EDGE.min(size);
    let mut areas = vec![(0, edge)];
    let spots = LUKS2_HDR2
        .map(|o| (o, LUKS2_HDR))
        .into_iter()
        .chain(BTRFS_MIRRORS.map(|o| (o, BTRFS_SUPER)));
    for (o, l) in spots {
        if o.checked_add(l).is_some_and(|e| e <= size) {
            areas.push((o, l));
        }
    }
    // `size - edge` cannot underflow: edge ≤ size.
    areas.push((size - edge, edge));
    merge(areas)
}

/// The ranges of a partition of `target_size` bytes that restore clears: its
/// [`signature_areas`] minus the `stored` ranges (partition byte offsets, any order; those
/// bytes are written with the image's). Sorted, non-overlapping, inside the partition; a
/// stored range reaching past the end (a hostile manifest) excludes only what is inside.
pub fn wipe_ranges(target_size: u64, stored: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    // Only the stored ranges that meet an area matter: at most a few MiB of them, so the
    // copy is bounded by the areas, not by the image.
    let areas = signature_areas(target_size);
    let meets = |o: u64, l: u64| {
        let e = o.saturating_add(l);
        areas.iter().any(|&(a, al)| o < a + al && a < e)
    };
    let mut covered: Vec<(u64, u64)> = stored
        .filter(|&(o, l)| l > 0 && o < target_size && meets(o, l))
        .map(|(o, l)| (o, o.saturating_add(l).min(target_size) - o))
        .collect();
    covered.sort_unstable();
    let covered = merge(covered);
    subtract(&areas, &covered)
}

/// Total bytes of `ranges`.
pub fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|r| r.1).fold(0, u64::saturating_add)
}

/// Sorted ranges merged where they overlap or touch; empty ones dropped.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (o, l) in ranges.into_iter().filter(|r| r.1 > 0) {
        let e = o.saturating_add(l);
        match out.last_mut() {
            Some((po, pl)) if o <= *po + *pl => *pl = (*pl).max(e - *po),
            _ => out.push((o, e - o)),
        }
    }
    out
}

/// `areas` without the bytes of `covered` (both sorted, merged, with no end past u64).
fn subtract(areas: &[(u64, u64)], covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = vec![];
    for &(a, al) in areas {
        let mut pos = a;
        let end = a + al;
        for &(c, cl) in covered {
            let ce = c + cl;
            if ce <= pos || c >= end {
                continue;
            }
            if c > pos {
                out.push((pos, c - pos));
            }
            pos = pos.max(ce);
            if pos >= end {
                break;
            }
        }
        if pos < end {
            out.push((pos, end - pos));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{BlockIo, MemDisk};

    const MIB: u64 = 1 << 20;

    #[test]
    fn areas_are_both_ends_and_the_spots_inside() {
        // The LUKS2 header at 1 MiB touches the first MiB: merged with it.
        let head = (0, MIB + 4096);
        let luks = [(2 * MIB, 4096), (4 * MIB, 4096)];
        assert_eq!(
            signature_areas(16 * MIB),
            vec![head, luks[0], luks[1], (15 * MIB, MIB)]
        );
        // 64 MiB + 4 KiB exactly holds the first mirror; one byte less does not.
        let s = 64 * MIB + 4096;
        assert_eq!(
            signature_areas(s),
            vec![head, luks[0], luks[1], (s - MIB, MIB)],
            "the mirror lies in the last MiB: merged"
        );
        let s = 300 * MIB;
        assert_eq!(
            signature_areas(s),
            vec![head, luks[0], luks[1], (64 * MIB, 4096), (s - MIB, MIB)]
        );
        let s = 1 << 40;
        assert_eq!(
            signature_areas(s),
            vec![
                head,
                luks[0],
                luks[1],
                (64 * MIB, 4096),
                (256 << 30, 4096),
                (s - MIB, MIB)
            ]
        );
        // A LUKS2 spot only where it fits whole: 4 MiB + 4 KiB holds the one at 4 MiB
        // (inside the last MiB then), 4 MiB + 4095 bytes does not reach past its end.
        assert_eq!(
            signature_areas(4 * MIB + 4096),
            vec![head, (2 * MIB, 4096), (3 * MIB + 4096, MIB)]
        );
        assert_eq!(
            signature_areas(4 * MIB + 4095),
            vec![head, (2 * MIB, 4096), (3 * MIB + 4095, MIB)]
        );
        // Smaller than two MiB: the whole partition, once.
        assert_eq!(signature_areas(1536 << 10), vec![(0, 1536 << 10)]);
        assert_eq!(signature_areas(4096), vec![(0, 4096)]);
        assert!(signature_areas(0).is_empty());
        // The largest partition: nothing overflows, nothing leaves it.
        let a = signature_areas(u64::MAX);
        assert!(a.iter().all(|&(o, l)| o.checked_add(l).is_some()));
        assert_eq!(a.len(), 7);
    }

    /// Where libblkid looks for LUKS2's second header (`secondary_offsets` in
    /// libblkid/src/superblocks/luks.c): the metadata sizes cryptsetup allows, 16 KiB to
    /// 4 MiB. Each header's 4 KiB must be in an area of a partition that holds it; before,
    /// the ones at 1, 2 and 4 MiB were left and `blkid` still said `crypto_LUKS`.
    #[test]
    fn every_luks2_second_header_offset_is_an_area() {
        let offsets = (14..=22).map(|b| 1u64 << b);
        for size in [5 * MIB, 16 * MIB, 300 * MIB, 1 << 40] {
            let areas = signature_areas(size);
            for o in offsets.clone() {
                assert!(
                    areas.iter().any(|&(a, l)| a <= o && o + 4096 <= a + l),
                    "{size}: LUKS2 header at {o} not cleared: {areas:?}"
                );
            }
        }
    }

    #[test]
    fn stored_ranges_are_not_wiped() {
        let s = 300 * MIB;
        // A swap header page and an ext-like spread of used blocks in the first MiB, a
        // range over the mirror, and one in the last MiB; given out of order.
        let stored = [
            (s - 4096, 4096),
            (8192, 8192),
            (0, 4096),
            (64 * MIB - 4096, 8192),
            (10 * MIB, 4 * MIB),
        ];
        let w = wipe_ranges(s, stored.into_iter());
        assert_eq!(
            w,
            vec![
                (4096, 4096),
                (16384, MIB + 4096 - 16384),
                (2 * MIB, 4096),
                (4 * MIB, 4096),
                (s - MIB, MIB - 4096)
            ]
        );
        assert_eq!(
            total(&w),
            4096 + (MIB + 4096 - 16384) + 2 * 4096 + (MIB - 4096)
        );
    }

    #[test]
    fn hostile_stored_ranges_never_widen_the_wipe() {
        let s = 4 * MIB;
        // Past the end, overflowing, empty: only what is inside counts.
        let stored = [
            (s - 512, u64::MAX),
            (u64::MAX, 10),
            (100, 0),
            (s + 4096, 4096),
        ];
        let w = wipe_ranges(s, stored.into_iter());
        assert_eq!(
            w,
            vec![(0, MIB + 4096), (2 * MIB, 4096), (s - MIB, MIB - 512)]
        );
        // Everything stored: nothing to wipe.
        assert!(wipe_ranges(s, [(0, s)].into_iter()).is_empty());
    }

    /// Invariants over many pseudo-random partitions and stored-range lists (hostile
    /// ones too): every byte of the result is inside the partition and in an area, none is
    /// stored, and every area byte that is not stored is in the result.
    #[test]
    fn wipe_ranges_is_exactly_areas_minus_stored() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let size = match next() % 4 {
                0 => next() % (4 * MIB),
                1 => next() % (200 * MIB),
                2 => (64 * MIB) + next() % 8192,
                _ => next(),
            };
            let n = (next() % 12) as usize;
            let stored: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let o = match next() % 3 {
                        0 => next() % (2 * MIB),
                        1 => size.saturating_sub(next() % (2 * MIB)),
                        _ => next(),
                    };
                    let l = match next() % 3 {
                        0 => next() % 65536,
                        1 => next() % (2 * MIB),
                        _ => next(),
                    };
                    (o, l)
                })
                .collect();
            let w = wipe_ranges(size, stored.iter().copied());
            let areas = signature_areas(size);
            let in_any = |v: &[(u64, u64)], p: u64| v.iter().any(|&(o, l)| p >= o && p - o < l);
            let is_stored = |p: u64| stored.iter().any(|&(o, l)| p >= o && p - o < l);
            for pair in w.windows(2) {
                assert!(
                    pair[0].0 + pair[0].1 <= pair[1].0,
                    "sorted, disjoint: {w:?}"
                );
            }
            // Probe points: every range edge and a few inside.
            let mut probes = vec![];
            for &(o, l) in w.iter().chain(&areas).chain(&stored) {
                for p in [
                    o,
                    o.saturating_add(l / 2),
                    o.saturating_add(l).saturating_sub(1),
                    o.saturating_add(l),
                ] {
                    probes.push(p);
                }
            }
            for p in probes {
                let wiped = in_any(&w, p);
                if wiped {
                    assert!(
                        p < size && in_any(&areas, p) && !is_stored(p),
                        "{size} {stored:?} {p}"
                    );
                } else if p < size && in_any(&areas, p) {
                    assert!(
                        is_stored(p),
                        "area byte {p} neither stored nor wiped: {size} {stored:?} {w:?}"
                    );
                }
            }
        }
    }

    /// What restore does with the ranges, on a disk: a partition at 1 MiB of 8 MiB whose
    /// image stores two ranges in its first MiB; before and after it another partition's
    /// bytes (0xee).
    #[test]
    fn wiping_a_memdisk_clears_the_areas_and_nothing_else() {
        let (base, size) = (MIB, 8 * MIB);
        let disk = MemDisk::from_vec(vec![0xeeu8; (10 * MIB) as usize], 512);
        let stored = [(0u64, 4096u64), (65536, 4096)];
        for &(o, l) in &stored {
            disk.write_all_at(&vec![0x5au8; l as usize], base + o)
                .unwrap();
        }
        let w = wipe_ranges(size, stored.into_iter());
        for &(o, l) in &w {
            assert!(o + l <= size, "{o}+{l} leaves the partition");
            disk.zero_range(base + o, l).unwrap();
        }
        let b = disk.bytes();
        let at = |o: u64| b[(base + o) as usize];
        assert!(b[..base as usize].iter().all(|x| *x == 0xee), "before");
        assert!(
            b[(base + size) as usize..].iter().all(|x| *x == 0xee),
            "after"
        );
        for &(o, l) in &stored {
            assert!((o..o + l).all(|i| at(i) == 0x5a), "stored {o} kept");
        }
        assert!((4096..65536).chain(69632..MIB).all(|i| at(i) == 0));
        assert!((size - MIB..size).all(|i| at(i) == 0), "last MiB");
        let luks = [MIB, 2 * MIB, 4 * MIB];
        for o in luks {
            assert!((o..o + 4096).all(|i| at(i) == 0), "LUKS2 header at {o}");
        }
        let free =
            (MIB + 4096..size - MIB).filter(|i| !luks.iter().any(|o| (*o..o + 4096).contains(i)));
        assert!(free.into_iter().all(|i| at(i) == 0xee), "free space kept");
    }
}
