//! btrfs (single device): which bytes are in use, from the superblock, the chunk tree and
//! the extent tree.
//!
//! Used = the first MiB (btrfs never allocates it; boot loaders may live there) + the
//! superblock copies inside the device + every extent the extent tree records — data
//! extents and tree blocks alike, in DATA, METADATA, SYSTEM and mixed chunks — mapped to
//! each copy (single or DUP) + every tree node the probe read. Metadata chunks are not
//! kept whole: a fresh 512 MiB file system has 64 MiB of DUP metadata chunk for well under
//! 1 MiB of tree blocks. Instead the extent tree must account for every node the probe
//! read (chunk, root and extent trees), else nothing it says is trusted. The free-space
//! cache v1 lives in data extents and the free-space tree in tree blocks, so both are
//! kept.
//!
//! A superblock with a bad checksum is not btrfs (a stale signature): `None`. Anything
//! the probe does not read (several devices, RAID profiles, blake2b checksums, zoned,
//! extent tree v2, …) or finds inconsistent (a node checksum, a chunk past the device,
//! a loop, keys out of order, an extent outside every chunk, a node the extent tree does
//! not record) makes it fall back to the non-zero 64 KiB blocks with
//! [`Fill::Zero`] under the kind [`UNPARSED`] (never mounted or grown on restore), and
//! say why on stderr: it never reports less than the file system uses. A log tree (not cleanly unmounted: its blocks and the data it logged are not in
//! the extent tree yet) keeps every allocated chunk whole.

mod chunks;
mod csum;
mod sb;
#[doc(hidden)]
pub mod synth;
mod tree;

use super::{Fill, FsInfo, PartView, UsedRanges, MAX_RANGES};
use crate::bytes::le64;
use chunks::ChunkMap;
use sb::Super;
use std::io;
use tree::Walker;

pub use tree::MAX_NODES;

/// The kind of a btrfs the probe falls back on (stored as its non-zero blocks).
pub const UNPARSED: &str = "btrfs-unparsed";

const ROOT_ITEM: u8 = 132;
const EXTENT_ITEM: u8 = 168;
const METADATA_ITEM: u8 = 169;
const EXTENT_TREE_OBJECTID: u64 = 2;
/// Where a root item keeps its tree's root node and level.
const ROOT_ITEM_BYTENR: usize = 176;
const ROOT_ITEM_LEVEL: usize = 238;

/// A btrfs key: (objectid, type, offset), ordered as btrfs orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub objectid: u64,
    pub kind: u8,
    pub offset: u64,
}

impl Key {
    pub const LEN: usize = 17;
    /// The key at the start of `b` (at least [`Key::LEN`] bytes).
    pub fn parse(b: &[u8]) -> Key {
        Key {
            objectid: le64(b, 0),
            kind: b[8],
            offset: le64(b, 9),
        }
    }
}

/// Why the probe does not trust the file system's own account of its used bytes.
#[derive(Debug, thiserror::Error)]
pub enum Bad {
    /// not read by the probe: {0}
    #[error("not read by the probe: {0}")]
    Unsupported(String),
    /// inconsistent: {0}
    #[error("inconsistent: {0}")]
    Inconsistent(String),
    /// reading {what} at partition byte {offset}: {source}
    #[error("reading {what} at partition byte {offset}: {source}")]
    Read {
        what: String,
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl Bad {
    fn inconsistent(m: impl Into<String>) -> Bad {
        Bad::Inconsistent(m.into())
    }
}

/// What the probe found in use, and whether it had to settle for whole chunks.
#[derive(Debug)]
pub struct Used {
    pub ranges: Vec<(u64, u64)>,
    /// Set when the extent tree was not used (the reason).
    pub chunk_level: Option<String>,
}

/// Probes for btrfs; `None` when no valid superblock is at 64 KiB.
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    let Some((ident, used)) = read_all(part)? else {
        return Ok(None);
    };
    let mut info = FsInfo {
        kind: "btrfs".into(),
        uuid: Some(super::uuid_string(&ident.fsid)),
        label: super::label_string(&ident.label),
        fs_size: ident.total_bytes.min(part.size),
        used: vec![],
        fill: Fill::Keep,
    };
    match used {
        Ok(u) => {
            if let Some(why) = u.chunk_level {
                eprintln!(
                    "imgtool: btrfs at partition offset {}: {why}; keeping every allocated chunk whole",
                    part.start
                );
            }
            info.used = u.ranges;
        }
        Err(why) => {
            eprintln!(
                "imgtool: btrfs at partition offset {}: {why}; storing its non-zero {} KiB blocks",
                part.start,
                super::SCAN_BLOCK >> 10
            );
            info.used = super::nonzero(part)?.used;
            info.fill = Fill::Zero;
            // Like `xfs-unparsed`: restore zeroes its gaps and never mounts or grows it
            // (a file system the probe could not read may not mount either).
            info.kind = UNPARSED.into();
        }
    }
    Ok(Some(info))
}

/// The probe without its fallback scan: `None` when no btrfs, else the used ranges or
/// why the probe does not trust them (what the `btrfs_probe` fuzz target runs).
pub fn read(part: &PartView) -> io::Result<Option<Result<Used, Bad>>> {
    Ok(read_all(part)?.map(|(_, r)| r))
}

fn read_all(part: &PartView) -> io::Result<Option<(sb::Ident, Result<Used, Bad>)>> {
    let Some((ident, sb)) = sb::read(part)? else {
        return Ok(None);
    };
    Ok(Some((ident, sb.and_then(|sb| used(part, &sb)))))
}

/// The device id and size of the btrfs in `part` when the probe can read it (single
/// device, known features): what grow needs.
pub fn device(part: &PartView) -> io::Result<Option<(u64, u64)>> {
    Ok(match sb::read(part)? {
        Some((_, Ok(sb))) => Some((sb.devid, sb.dev_bytes)),
        _ => None,
    })
}

/// The used byte ranges of the checked file system `sb` (see the module doc).
fn used(part: &PartView, sb: &Super) -> Result<Used, Bad> {
    let sys = ChunkMap::from_sys_array(sb)?;
    let mut walker = Walker::new(part, sb);
    let mut map = ChunkMap::default();
    walker.walk(&sys, sb.chunk_root, sb.chunk_root_level, &mut |k, d| {
        if k.kind == chunks::CHUNK_ITEM {
            map.insert(sb, k.offset, d)?;
        }
        Ok(())
    })?;
    // The bootstrap chunks must be the chunk tree's own.
    for c in sys.chunks() {
        if map.find(c.start, c.length)? != c {
            return Err(Bad::inconsistent(format!(
                "the superblock's system chunk at {} differs from the chunk tree's",
                c.start
            )));
        }
    }
    let mut out = Collector::default();
    out.push(0, (1u64 << 20).min(sb.dev_bytes));
    for m in sb::MIRRORS {
        if m + sb::SIZE as u64 <= sb.dev_bytes {
            out.push(m, sb::SIZE as u64);
        }
    }
    let chunk_level = if sb.log_root != 0 {
        // The log tree's blocks and the data it logged are not in the extent tree yet.
        for c in map.chunks() {
            for &s in &c.stripes {
                out.push(s, c.length);
            }
        }
        Some("a log tree is present (not cleanly unmounted)".to_string())
    } else {
        let tree_blocks = extents(&mut walker, sb, &map, &mut out)?;
        // Every node read must be a tree block the extent tree records: else it does not
        // account for the metadata, and nothing it says can be trusted.
        for n in walker.nodes() {
            if tree_blocks.binary_search(&n).is_err() {
                return Err(Bad::inconsistent(format!(
                    "tree node at {n} is not in the extent tree"
                )));
            }
        }
        None
    };
    for n in walker.nodes() {
        for phys in map.map(n, sb.nodesize).map(|m| m.1).unwrap_or_default() {
            out.push(phys, sb.nodesize);
        }
    }
    Ok(Used {
        ranges: out.finish(),
        chunk_level,
    })
}

/// Tree blocks the extent tree may record at most (128 GiB of 16 KiB nodes; 64 MiB of
/// addresses kept to check the nodes read against): a larger file system falls back.
pub const MAX_TREE_BLOCKS: usize = 1 << 23;
/// `BTRFS_EXTENT_FLAG_TREE_BLOCK` in an extent item's flags (offset 16).
const FLAG_TREE_BLOCK: u64 = 2;

/// Walks the root tree for the extent tree, then the extent tree: every extent (data and
/// tree blocks, in any chunk) goes to `out` at each of its copies. Returns the logical
/// addresses of the tree blocks it records, ascending.
fn extents(
    walker: &mut Walker,
    sb: &Super,
    map: &ChunkMap,
    out: &mut Collector,
) -> Result<Vec<u64>, Bad> {
    let mut extent_root = None;
    walker.walk(map, sb.root, sb.root_level, &mut |k, d| {
        if k.objectid == EXTENT_TREE_OBJECTID && k.kind == ROOT_ITEM {
            if d.len() <= ROOT_ITEM_LEVEL || d[ROOT_ITEM_LEVEL] > sb::MAX_LEVEL {
                return Err(Bad::inconsistent("the extent tree's root item"));
            }
            extent_root = Some((le64(d, ROOT_ITEM_BYTENR), d[ROOT_ITEM_LEVEL]));
        }
        Ok(())
    })?;
    let (root, level) =
        extent_root.ok_or_else(|| Bad::inconsistent("the root tree names no extent tree"))?;
    let mut tree_blocks = vec![];
    walker.walk(map, root, level, &mut |k, d| {
        let (len, tree_block) = match k.kind {
            EXTENT_ITEM => (
                k.offset,
                d.len() >= 24 && le64(d, 16) & FLAG_TREE_BLOCK != 0,
            ),
            METADATA_ITEM if k.offset <= sb::MAX_LEVEL as u64 => (sb.nodesize, true),
            METADATA_ITEM => return Err(Bad::inconsistent(format!("metadata item {k:?}"))),
            _ => return Ok(()),
        };
        if len == 0 || !k.objectid.is_multiple_of(sb.sectorsize) {
            return Err(Bad::inconsistent(format!("extent item {k:?}")));
        }
        if tree_block {
            if tree_blocks.len() >= MAX_TREE_BLOCKS {
                return Err(Bad::Unsupported(format!(
                    "more than {MAX_TREE_BLOCKS} tree blocks (btrfs::MAX_TREE_BLOCKS)"
                )));
            }
            tree_blocks.push(k.objectid);
        }
        for phys in map.map(k.objectid, len)?.1 {
            out.push(phys, len);
        }
        out.compact_if_full();
        Ok(())
    })?;
    Ok(tree_blocks)
}

/// Physical ranges in any order, bounded: past `2 × MAX_RANGES` entries they are sorted
/// and merged through [`UsedRanges`] (which coarsens, never drops, a range).
#[derive(Default)]
struct Collector {
    v: Vec<(u64, u64)>,
}

impl Collector {
    fn push(&mut self, off: u64, len: u64) {
        if let Some(last) = self.v.last_mut() {
            if last.0.saturating_add(last.1) == off {
                last.1 += len;
                return;
            }
        }
        self.v.push((off, len));
    }

    fn compact_if_full(&mut self) {
        if self.v.len() > 2 * MAX_RANGES {
            self.v = std::mem::take(self).finish();
        }
    }

    fn finish(mut self) -> Vec<(u64, u64)> {
        self.v.sort_unstable();
        let mut u = UsedRanges::default();
        for (o, l) in self.v {
            u.push(o, l);
        }
        u.into_vec()
    }
}

#[cfg(test)]
mod tests;
