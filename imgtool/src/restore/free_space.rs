//! What restore does with the bytes of a partition the image does not hold: a parsed
//! file system's free space is left alone but for the foreign-signature areas
//! ([`crate::wipe`]), cleared first; unknown contents get every gap zeroed.

use super::Part;
use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::fs::Fill;
use crate::manifest::Region;
use std::path::Path;

/// What happens to the bytes of partition region `r` (of `target_size` bytes here) that
/// the image does not hold: `(signature ranges to clear, bytes zeroed)`. Free space of a
/// parsed file system is left alone but for the foreign-signature areas; unknown contents
/// get every gap zeroed; the disk head neither.
pub(super) fn free_space_plan(r: &Region, target_size: u64) -> (Vec<(u64, u64)>, u64) {
    let stored = r.chunks.iter().flat_map(|c| c.ranges());
    match (r.number, r.fill) {
        (0, _) => (vec![], 0),
        (_, Fill::Keep) => (crate::wipe::wipe_ranges(target_size, stored), 0),
        (_, Fill::Zero) => (vec![], crate::wipe::total(&fill_gaps(stored, target_size))),
    }
}

/// The gaps between a partition's stored ranges, clamped to the partition's
/// `target_size`: a zero fill never reaches past its end, whatever the ranges say.
/// `(partition byte offset, length)` pairs, in order.
pub fn fill_gaps(stored: impl Iterator<Item = (u64, u64)>, target_size: u64) -> Vec<(u64, u64)> {
    let mut gaps = vec![];
    let mut pos = 0u64;
    for (o, l) in stored.chain(std::iter::once((target_size, 0))) {
        let o = o.min(target_size);
        if o > pos {
            gaps.push((pos, o - pos));
        }
        pos = pos.max(o.saturating_add(l)).min(target_size);
    }
    gaps
}

/// Zeroes the gaps of a partition whose file system is unknown ([`Fill::Zero`]): a
/// target's old bytes there would otherwise show through.
pub(super) fn zero_fill(target: &dyn BlockIo, tpath: &Path, part: &Part) -> Result<()> {
    let stored = part.r.chunks.iter().flat_map(|c| c.ranges());
    for (pos, len) in fill_gaps(stored, part.target_size) {
        target.zero_range(part.base + pos, len).map_err(|e| {
            Error::device(
                tpath,
                format!("zeroing partition {} at {pos}", part.r.number),
                e,
            )
        })?;
    }
    Ok(())
}

/// Clears the foreign-signature ranges of a partition ([`crate::wipe`]), the way
/// `wipefs`/`mkswap` do: an old btrfs, XFS, LVM or LUKS header must not survive beside
/// the restored file system in the free space restore leaves alone.
pub(super) fn wipe_signatures(target: &dyn BlockIo, tpath: &Path, part: &Part) -> Result<()> {
    for &(pos, len) in part.wipe {
        // Computed inside the partition; checked again where it is written.
        if pos.checked_add(len).is_none_or(|e| e > part.target_size) {
            return Err(Error::device(
                tpath,
                format!("wiping partition {} at {pos}", part.r.number),
                std::io::Error::other("range outside the partition"),
            ));
        }
        target.zero_range(part.base + pos, len).map_err(|e| {
            Error::device(
                tpath,
                format!(
                    "clearing old signatures of partition {} at {pos}+{len}",
                    part.r.number
                ),
                e,
            )
        })?;
    }
    Ok(())
}
