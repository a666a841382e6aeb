//! Reading btrfs B-trees from the disk, bounded and checked: every node's checksum,
//! `bytenr`, fsid, level (each child exactly one below its parent, so a walk is at most
//! 8 deep and a pointer cycle is caught as a level mismatch or a node seen twice), the
//! generation the parent expects, the first key the parent names, keys in ascending
//! order across the whole tree, items inside the node. A walk reads each node once and
//! at most [`MAX_NODES`] nodes over all trees of one probe.

use super::chunks::ChunkMap;
use super::sb::Super;
use super::{csum, Bad, Key};
use crate::bytes::{le32, le64};
use crate::fs::PartView;
use std::collections::HashSet;

/// Node header length; leaf items and key pointers follow it.
const HEADER: usize = 0x65;
const ITEM: usize = 25;
const KEY_PTR: usize = 33;
/// Tree nodes one probe reads at most (32 GiB of 16 KiB nodes, ~64 MiB of bookkeeping):
/// a larger tree (or a hostile one that claims to be) is not walked, and the probe falls
/// back to storing the non-zero blocks.
pub const MAX_NODES: u64 = 1 << 21;

/// Called with each leaf item's key and data.
pub type LeafFn<'f> = dyn FnMut(Key, &[u8]) -> Result<(), Bad> + 'f;

/// Reads trees of one file system; remembers every node it read.
pub struct Walker<'a> {
    part: &'a PartView<'a>,
    sb: &'a Super,
    seen: HashSet<u64>,
    budget: u64,
    last: Option<Key>,
}

struct Node {
    bytes: Vec<u8>,
    nritems: usize,
}

impl<'a> Walker<'a> {
    pub fn new(part: &'a PartView<'a>, sb: &'a Super) -> Self {
        Walker {
            part,
            sb,
            seen: HashSet::new(),
            budget: MAX_NODES.min(sb.total_bytes / sb.nodesize),
            last: None,
        }
    }

    /// Logical addresses of every node read so far.
    pub fn nodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.seen.iter().copied()
    }

    /// Calls `f(key, data)` for every item of every leaf of the tree rooted at logical
    /// `root` (a node of `level`), in key order; `map` places the nodes.
    pub fn walk(
        &mut self,
        map: &ChunkMap,
        root: u64,
        level: u8,
        f: &mut LeafFn,
    ) -> Result<(), Bad> {
        self.last = None;
        self.visit(map, root, level, None, f)
    }

    fn visit(
        &mut self,
        map: &ChunkMap,
        at: u64,
        level: u8,
        parent: Option<(u64, Key)>,
        f: &mut LeafFn,
    ) -> Result<(), Bad> {
        let node = self.read(map, at, level, parent.map(|p| p.0))?;
        if parent.is_some() && node.nritems == 0 {
            return Err(Bad::inconsistent(format!("tree node at {at} is empty")));
        }
        let mut prev: Option<Key> = None;
        for i in 0..node.nritems {
            let (key, rest) = if level == 0 {
                let o = HEADER + i * ITEM;
                (Key::parse(&node.bytes[o..]), &node.bytes[o + Key::LEN..])
            } else {
                let o = HEADER + i * KEY_PTR;
                (Key::parse(&node.bytes[o..]), &node.bytes[o + Key::LEN..])
            };
            if prev.is_some_and(|p| p >= key) {
                return Err(Bad::inconsistent(format!("keys out of order in node {at}")));
            }
            if i == 0 {
                if let Some((_, want)) = parent {
                    if want != key {
                        return Err(Bad::inconsistent(format!(
                            "node {at} starts at {key:?}, its parent says {want:?}"
                        )));
                    }
                }
            }
            prev = Some(key);
            if level == 0 {
                if self.last.is_some_and(|l| l >= key) {
                    return Err(Bad::inconsistent(format!("leaf {at} out of key order")));
                }
                self.last = Some(key);
                let (off, size) = (le32(rest, 0) as usize, le32(rest, 4) as usize);
                let data = HEADER
                    .checked_add(off)
                    .and_then(|s| Some(s..s.checked_add(size)?))
                    .and_then(|r| node.bytes.get(r))
                    .ok_or_else(|| {
                        Bad::inconsistent(format!("leaf {at}: item {i} outside the node"))
                    })?;
                f(key, data)?;
            } else {
                let (child, gen) = (le64(rest, 0), le64(rest, 8));
                self.visit(map, child, level - 1, Some((gen, key)), f)?;
            }
        }
        Ok(())
    }

    /// Reads and checks the node at logical `at`: the first copy whose checksum holds.
    fn read(&mut self, map: &ChunkMap, at: u64, level: u8, gen: Option<u64>) -> Result<Node, Bad> {
        let sb = self.sb;
        if !at.is_multiple_of(sb.sectorsize) {
            return Err(Bad::inconsistent(format!("tree node at {at} not aligned")));
        }
        if !self.seen.insert(at) {
            return Err(Bad::inconsistent(format!(
                "tree node at {at} reached twice (a loop)"
            )));
        }
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            Bad::Unsupported(format!(
                "trees larger than {MAX_NODES} nodes (tree::MAX_NODES)"
            ))
        })?;
        let (_, copies) = map.map(at, sb.nodesize)?;
        let mut bytes = vec![0u8; sb.nodesize as usize];
        let mut good = false;
        for phys in copies {
            self.part.read(&mut bytes, phys).map_err(|e| Bad::Read {
                what: format!("tree node {at}"),
                offset: phys,
                source: e,
            })?;
            if csum::matches(sb.csum_type, &bytes) {
                good = true;
                break;
            }
        }
        if !good {
            return Err(Bad::inconsistent(format!(
                "tree node at {at}: checksum mismatch"
            )));
        }
        let nritems = le32(&bytes, 0x60) as usize;
        let per = if level == 0 { ITEM } else { KEY_PTR };
        let node_gen = le64(&bytes, 0x50);
        if le64(&bytes, 0x30) != at
            || bytes[0x20..0x30] != sb.node_fsid
            || bytes[0x64] != level
            || node_gen > sb.generation
            || gen.is_some_and(|g| g != node_gen)
            || nritems > (bytes.len() - HEADER) / per
        {
            return Err(Bad::inconsistent(format!(
                "tree node at {at}: header (bytenr, fsid, level {level}, generation {node_gen}, \
                 {nritems} items) does not match"
            )));
        }
        Ok(Node { bytes, nritems })
    }
}
