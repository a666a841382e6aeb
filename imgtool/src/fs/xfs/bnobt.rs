//! One allocation group's free extents: its AGF (`XAGF`, sector 1 of the AG) and the
//! by-block-number free-space B+tree it roots (`AB3B` on v5 with CRC, owner, block
//! number and UUID checked; `ABTB` on v4). The walk is bounded: depth by the AGF's level
//! count (at most [`MAX_LEVELS`]), blocks by [`MAX_NODES`] over the whole file system,
//! and no block is visited twice (a cycle or a shared child is damage). Leaf records must
//! be sorted, disjoint, inside the AG, sum to the AGF's `freeblks` and spare the tree's
//! own blocks; anything else is an [`Unparsed`] error, never a guess.

use super::{crc_ok, overlapping, Super, Unparsed};
use crate::bytes::{be16, be32, be64};
use crate::fs::PartView;
use std::collections::HashSet;

/// Deepest free-space tree read (`XFS_BTREE_MAXLEVELS` of older kernels; the free-space
/// trees of the largest possible AG, 2^31 blocks of 512 bytes, need fewer).
pub const MAX_LEVELS: u64 = 9;
/// Most tree blocks read over the whole file system (4 GiB of 4 KiB blocks: far beyond
/// any real free-space tree; a hostile one is refused instead of read on).
pub const MAX_NODES: usize = 1 << 20;
/// Most free extents kept (64 MiB of pairs); a file system with more is stored as its
/// non-zero blocks.
pub const MAX_FREE_EXTENTS: usize = 1 << 22;

const AGF_MAGIC: &[u8; 4] = b"XAGF";
const BNO_V5: &[u8; 4] = b"AB3B";
const BNO_V4: &[u8; 4] = b"ABTB";
/// `agf_crc` (v5).
const AGF_CRC: usize = 216;
/// Short-form B+tree block header: 16 bytes on v4; v5 adds block number, LSN, UUID,
/// owner and CRC (56 bytes).
const HDR_V4: usize = 16;
const HDR_V5: usize = 56;
/// `bb_crc` in a v5 short-form block.
const NODE_CRC: usize = 52;

/// What the AGF says about the free-space tree.
struct Agf {
    root: u64,
    levels: u64,
    freeblks: u64,
}

/// Free extents of AG `ag` as `(agbno, blocks)`, sorted and disjoint. `nodes` counts
/// tree blocks read so far (bounded by [`MAX_NODES`]).
pub(super) fn ag_free(
    part: &PartView,
    sb: &Super,
    ag: u64,
    nodes: &mut usize,
) -> Result<Vec<(u64, u64)>, Unparsed> {
    let agf = read_agf(part, sb, ag)?;
    let mut w = Walk {
        part,
        sb,
        ag,
        len: sb.ag_len(ag),
        nodes,
        visited: HashSet::new(),
        free: Vec::new(),
        end: 0,
    };
    w.node(agf.root, agf.levels - 1, true)?;
    let tree: u64 = w.free.iter().map(|e| e.1).sum();
    if tree != agf.freeblks {
        return Err(Unparsed::FreeCount {
            ag,
            tree,
            agf: agf.freeblks,
        });
    }
    for &b in &w.visited {
        if let Some(&(s, l)) = overlapping(&w.free, b, 1) {
            return Err(Unparsed::Extent {
                ag,
                start: s,
                len: l,
                why: format!("covers the tree's own block {b}"),
            });
        }
    }
    Ok(w.free)
}

fn read_agf(part: &PartView, sb: &Super, ag: u64) -> Result<Agf, Unparsed> {
    let bad = |why: String| Unparsed::Agf { ag, why };
    let mut a = vec![0u8; sb.sect as usize];
    part.read(&mut a, sb.byte(ag, 0) + sb.sect)?;
    if &a[0..4] != AGF_MAGIC {
        return Err(bad("no XAGF magic".into()));
    }
    if sb.v5 && !crc_ok(&mut a, AGF_CRC) {
        return Err(bad("CRC mismatch".into()));
    }
    if sb.v5 && a[64..80] != sb.meta_uuid {
        return Err(bad("UUID is not the file system's".into()));
    }
    let (version, seqno, length) = (
        u64::from(be32(&a, 4)),
        u64::from(be32(&a, 8)),
        u64::from(be32(&a, 12)),
    );
    if version != 1 || seqno != ag || length != sb.ag_len(ag) {
        return Err(bad(format!(
            "version {version}, AG number {seqno}, {length} blocks (expected 1, {ag}, {})",
            sb.ag_len(ag)
        )));
    }
    let (root, levels, freeblks) = (
        u64::from(be32(&a, 16)),
        u64::from(be32(&a, 28)),
        u64::from(be32(&a, 52)),
    );
    if !(1..=MAX_LEVELS).contains(&levels) || root == 0 || root >= length || freeblks > length {
        return Err(bad(format!(
            "free-space tree root {root}, {levels} levels, {freeblks} free blocks"
        )));
    }
    Ok(Agf {
        root,
        levels,
        freeblks,
    })
}

/// A depth-first walk of one AG's tree, left to right, so leaf records come in order.
struct Walk<'a, 'p> {
    part: &'a PartView<'p>,
    sb: &'a Super,
    ag: u64,
    /// Blocks in the AG.
    len: u64,
    nodes: &'a mut usize,
    visited: HashSet<u64>,
    free: Vec<(u64, u64)>,
    /// End of the last free extent seen (the next must start at or after it).
    end: u64,
}

impl Walk<'_, '_> {
    fn bad(&self, agbno: u64, why: String) -> Unparsed {
        Unparsed::Node {
            ag: self.ag,
            agbno,
            why,
        }
    }

    /// Reads tree block `agbno`, expected at `level`, and everything under it.
    fn node(&mut self, agbno: u64, level: u64, root: bool) -> Result<(), Unparsed> {
        if agbno == 0 || agbno >= self.len {
            return Err(self.bad(agbno, format!("outside the AG ({} blocks)", self.len)));
        }
        if !self.visited.insert(agbno) {
            return Err(self.bad(agbno, "reached twice (a cycle or a shared block)".into()));
        }
        *self.nodes += 1;
        if *self.nodes > super::MAX_NODES {
            return Err(self.bad(agbno, format!("more than {} tree blocks", super::MAX_NODES)));
        }
        let mut b = vec![0u8; self.sb.block as usize];
        self.part.read(&mut b, self.sb.byte(self.ag, agbno))?;
        let hdr = self.check_header(&mut b, agbno, level)?;
        let n = usize::from(be16(&b, 6));
        let cap = (b.len() - hdr) / if level == 0 { 8 } else { 12 };
        if n > cap || (n == 0 && !(root && level == 0)) {
            return Err(self.bad(agbno, format!("{n} records (at most {cap})")));
        }
        if level == 0 {
            return self.leaf(&b[hdr..hdr + 8 * n]);
        }
        let ptrs = hdr + cap * 8;
        for i in 0..n {
            self.node(u64::from(be32(&b, ptrs + 4 * i)), level - 1, false)?;
        }
        Ok(())
    }

    /// Magic, level and, on v5, CRC, block number, owner and UUID; returns the header
    /// length.
    fn check_header(&self, b: &mut [u8], agbno: u64, level: u64) -> Result<usize, Unparsed> {
        let (magic, hdr) = if self.sb.v5 {
            (BNO_V5, HDR_V5)
        } else {
            (BNO_V4, HDR_V4)
        };
        if &b[0..4] != magic {
            return Err(self.bad(
                agbno,
                format!("magic {:02x?} is not {magic:02x?}", &b[0..4]),
            ));
        }
        if u64::from(be16(b, 4)) != level {
            return Err(self.bad(agbno, format!("level {} (expected {level})", be16(b, 4))));
        }
        if self.sb.v5 {
            let daddr = self.sb.byte(self.ag, agbno) / 512;
            if !crc_ok(b, NODE_CRC) {
                return Err(self.bad(agbno, "CRC mismatch".into()));
            }
            if be64(b, 16) != daddr
                || u64::from(be32(b, 48)) != self.ag
                || b[32..48] != self.sb.meta_uuid
            {
                return Err(self.bad(
                    agbno,
                    "not this AG's block (block number, owner or UUID)".into(),
                ));
            }
        }
        Ok(hdr)
    }

    fn leaf(&mut self, recs: &[u8]) -> Result<(), Unparsed> {
        for r in recs.chunks_exact(8) {
            let (start, len) = (u64::from(be32(r, 0)), u64::from(be32(r, 4)));
            let why = if len == 0 {
                "is empty"
            } else if start < self.end {
                "is out of order or overlaps the one before"
            } else if start + len > self.len {
                "passes the end of the AG"
            } else {
                self.free.push((start, len));
                self.end = start + len;
                continue;
            };
            return Err(Unparsed::Extent {
                ag: self.ag,
                start,
                len,
                why: why.into(),
            });
        }
        if self.free.len() > super::MAX_FREE_EXTENTS {
            return Err(Unparsed::Extent {
                ag: self.ag,
                start: self.end,
                len: 0,
                why: format!("more than {} free extents", super::MAX_FREE_EXTENTS),
            });
        }
        Ok(())
    }
}
