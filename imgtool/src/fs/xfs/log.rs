//! Is the internal log clean? The free-space trees on disk are only the last checkpoint:
//! after a crash, the log holds allocations the trees do not show yet, so their "free"
//! blocks may hold data a replay needs. The reader trusts the trees only when it can show
//! that the last log record is an unmount record, the test `xfs_repair` and the kernel
//! make (`xlog_find_tail`): anything else — a dirty log, torn writes near the head, a log
//! that wrapped exactly at its end — is [`Unparsed::DirtyLog`], and the partition falls
//! back to its non-zero blocks.
//!
//! The log is a ring of 512-byte basic blocks (BBs), each stamped with the cycle of the
//! pass that wrote it (a record header carries it after its magic; a data BB in its first
//! word). The head is where the cycle drops: found by binary search, then checked over a
//! window on both sides ([`WINDOW`]), so only a few MiB of the log are read.

use super::{Super, Unparsed};
use crate::bytes::be32;
use crate::fs::PartView;

/// `XLOG_HEADER_MAGIC_NUM`.
const MAGIC: u64 = 0xFEED_BABE;
const BB: u64 = 512;
/// BBs checked on each side of the head: eight in-core logs of the largest size (256 KiB)
/// may be in flight at a crash.
const WINDOW: u64 = 4096;
/// `XLOG_HEADER_CYCLE_SIZE`: one header BB per 32 KiB of record (v2 logs).
const HEADER_CYCLE_SIZE: u64 = 32 << 10;
/// Most BBs a record spans (256 KiB of data, 8 header BBs): how far back from the head the
/// last record header is looked for.
const MAX_RECORD: u64 = 512 + 8;
/// `XLOG_UNMOUNT_TRANS` in an operation header's flags.
const UNMOUNT_TRANS: u8 = 0x20;

struct Log<'a, 'p> {
    part: &'a PartView<'p>,
    /// Partition byte of BB 0.
    start: u64,
    /// BBs in the log.
    len: u64,
}

impl Log<'_, '_> {
    fn bb(&self, i: u64) -> Result<[u8; BB as usize], Unparsed> {
        let mut b = [0u8; BB as usize];
        self.part.read(&mut b, self.start + i * BB)?;
        Ok(b)
    }

    /// The cycle stamped in BB `i`, and whether it is a record header.
    fn cycle(&self, i: u64) -> Result<(u64, bool), Unparsed> {
        let b = self.bb(i)?;
        Ok(if u64::from(be32(&b, 0)) == MAGIC {
            (u64::from(be32(&b, 4)), true)
        } else {
            (u64::from(be32(&b, 0)), false)
        })
    }
}

/// `Ok` when the log of `sb` provably ends with an unmount record.
pub(super) fn check_clean(part: &PartView, sb: &Super) -> Result<(), Unparsed> {
    let (ag, bno, blocks) = sb.log;
    let log = Log {
        part,
        start: sb.byte(ag, bno),
        len: blocks * sb.block / BB,
    };
    let dirty = |why: String| Unparsed::DirtyLog(why);
    let (c0, _) = log.cycle(0)?;
    let (last, _) = log.cycle(log.len - 1)?;
    if c0 == 0 || last == c0 {
        return Err(dirty(format!("no head found (cycle {c0} at both ends)")));
    }
    let head = find_head(&log, c0)?;
    verify_window(&log, head, c0)?;
    last_record_is_unmount(&log, head, c0)
}

/// The first BB whose cycle is not `c0`, by binary search (BB 0 has `c0`, the last BB
/// not).
fn find_head(log: &Log, c0: u64) -> Result<u64, Unparsed> {
    let (mut lo, mut hi) = (0, log.len - 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if log.cycle(mid)?.0 == c0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// Every BB in the window before the head has cycle `c0`, every one after it the cycle
/// before (`c0 - 1`; 0 too on the first pass, where mkfs left cycle-0 records).
fn verify_window(log: &Log, head: u64, c0: u64) -> Result<(), Unparsed> {
    for i in head.saturating_sub(WINDOW)..(head + WINDOW).min(log.len) {
        let c = log.cycle(i)?.0;
        let ok = if i < head {
            c == c0
        } else {
            c + 1 == c0 || (c0 == 1 && c == 0)
        };
        if !ok {
            return Err(Unparsed::DirtyLog(format!(
                "cycle {c} at block {i}, head at {head} (cycle {c0}): torn or mixed writes"
            )));
        }
    }
    Ok(())
}

/// The record just before the head is one operation, an unmount, ending at the head.
fn last_record_is_unmount(log: &Log, head: u64, c0: u64) -> Result<(), Unparsed> {
    let dirty = |why: String| Unparsed::DirtyLog(why);
    let mut r = head;
    let found = loop {
        if r == 0 || head - r >= MAX_RECORD {
            break false;
        }
        r -= 1;
        if log.cycle(r)? == (c0, true) {
            break true;
        }
    };
    if !found {
        return Err(dirty(format!("no record header before the head ({head})")));
    }
    let h = log.bb(r)?;
    let (version, len, ops, size) = (
        u64::from(be32(&h, 8)),
        u64::from(be32(&h, 12)),
        u64::from(be32(&h, 40)),
        u64::from(be32(&h, 320)),
    );
    let hblks = if version == 2 && size > HEADER_CYCLE_SIZE {
        size.div_ceil(HEADER_CYCLE_SIZE)
    } else {
        1
    };
    if ops != 1 || r + hblks + len.div_ceil(BB) != head {
        return Err(dirty(format!(
            "the last record (block {r}: {ops} operations, {len} bytes) is not an unmount record ending at the head ({head})"
        )));
    }
    let op = log.bb(r + hblks)?;
    if op[9] & UNMOUNT_TRANS == 0 {
        return Err(dirty(format!(
            "the last record (block {r}) is not an unmount record (flags {:#04x})",
            op[9]
        )));
    }
    Ok(())
}
