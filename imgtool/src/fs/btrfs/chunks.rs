//! The logical → physical map of a single-device btrfs: chunk items (from the superblock's
//! `sys_chunk_array`, then from the chunk tree), each checked (profile single or DUP,
//! stripes on this device and inside it, no two chunks overlapping) before it is used.

use super::sb::Super;
use super::{Bad, Key};
use crate::bytes::{le16, le64};
use std::collections::BTreeMap;

pub const CHUNK_ITEM: u8 = 228;
const FIRST_CHUNK_TREE_OBJECTID: u64 = 256;
pub const DATA: u64 = 1;
pub const SYSTEM: u64 = 2;
pub const METADATA: u64 = 4;
const DUP: u64 = 32;
/// Every profile bit (RAID0 … RAID1C4).
const PROFILES: u64 = 0x7f8;
const ITEM_HEAD: usize = 48;
const STRIPE: usize = 32;

/// One chunk: `length` logical bytes at `start`, stored whole at each stripe's offset
/// (single: one stripe; DUP: two copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub start: u64,
    pub length: u64,
    pub flags: u64,
    pub stripes: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct ChunkMap {
    by_start: BTreeMap<u64, Chunk>,
}

impl ChunkMap {
    /// The bootstrap map: the chunks of the superblock's `sys_chunk_array`.
    pub fn from_sys_array(sb: &Super) -> Result<ChunkMap, Bad> {
        let mut map = ChunkMap::default();
        let a = &sb.sys_array;
        let mut at = 0usize;
        while at < a.len() {
            let key = a
                .get(at..at + Key::LEN)
                .map(Key::parse)
                .ok_or_else(|| Bad::inconsistent("sys_chunk_array: a key cut short"))?;
            if key.kind != CHUNK_ITEM || key.objectid != FIRST_CHUNK_TREE_OBJECTID {
                return Err(Bad::inconsistent(format!(
                    "sys_chunk_array: key {key:?} is not a chunk item"
                )));
            }
            at += Key::LEN;
            let n = a
                .get(at + 44..at + 46)
                .map(|b| le16(b, 0) as usize)
                .ok_or_else(|| Bad::inconsistent("sys_chunk_array: a chunk item cut short"))?;
            let len = ITEM_HEAD + n * STRIPE;
            let item = a
                .get(at..at + len)
                .ok_or_else(|| Bad::inconsistent("sys_chunk_array: stripes cut short"))?;
            map.insert(sb, key.offset, item)?;
            at += len;
        }
        if map.by_start.is_empty() {
            return Err(Bad::inconsistent("sys_chunk_array holds no chunk"));
        }
        Ok(map)
    }

    /// Checks the chunk item `item` at logical `start` and adds it.
    pub fn insert(&mut self, sb: &Super, start: u64, item: &[u8]) -> Result<(), Bad> {
        let c = parse_chunk(sb, start, item)?;
        let end = start + c.length;
        if let Some((_, prev)) = self.by_start.range(..end).next_back() {
            if prev.start + prev.length > start {
                return Err(Bad::inconsistent(format!(
                    "chunks at {} and {start} overlap",
                    prev.start
                )));
            }
        }
        self.by_start.insert(start, c);
        Ok(())
    }

    /// The chunk holding all of `[logical, logical + len)`.
    pub fn find(&self, logical: u64, len: u64) -> Result<&Chunk, Bad> {
        let end = logical
            .checked_add(len)
            .ok_or_else(|| Bad::inconsistent(format!("range at {logical} wraps")))?;
        match self.by_start.range(..=logical).next_back() {
            Some((_, c)) if end <= c.start + c.length => Ok(c),
            _ => Err(Bad::inconsistent(format!(
                "logical range {logical}+{len} is in no chunk"
            ))),
        }
    }

    /// Physical offsets of each copy of `[logical, logical + len)`.
    pub fn map(&self, logical: u64, len: u64) -> Result<(&Chunk, Vec<u64>), Bad> {
        let c = self.find(logical, len)?;
        let rel = logical - c.start;
        Ok((c, c.stripes.iter().map(|s| s + rel).collect()))
    }

    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.by_start.values()
    }
}

fn parse_chunk(sb: &Super, start: u64, item: &[u8]) -> Result<Chunk, Bad> {
    if item.len() < ITEM_HEAD {
        return Err(Bad::inconsistent(format!(
            "chunk item at {start} cut short"
        )));
    }
    let length = le64(item, 0);
    let flags = le64(item, 24);
    let n = le16(item, 44) as usize;
    if item.len() < ITEM_HEAD + n * STRIPE {
        return Err(Bad::inconsistent(format!(
            "chunk item at {start}: {n} stripes in {} bytes",
            item.len()
        )));
    }
    let ss = sb.sectorsize;
    if length == 0
        || !length.is_multiple_of(ss)
        || !start.is_multiple_of(ss)
        || start.checked_add(length).is_none()
        || flags & (DATA | SYSTEM | METADATA) == 0
    {
        return Err(Bad::inconsistent(format!(
            "chunk at {start}: length {length}, type {flags:#x}"
        )));
    }
    let profile = flags & PROFILES;
    if !(profile == 0 && n == 1 || profile == DUP && n == 2) {
        return Err(Bad::Unsupported(format!(
            "chunk at {start}: profile {profile:#x} with {n} stripes (single and DUP are read)"
        )));
    }
    let mut stripes = Vec::with_capacity(n);
    for i in 0..n {
        let s = &item[ITEM_HEAD + i * STRIPE..];
        let (devid, off) = (le64(s, 0), le64(s, 8));
        if devid != sb.devid {
            return Err(Bad::inconsistent(format!(
                "chunk at {start}: a stripe on device {devid}, the file system's only device is {}",
                sb.devid
            )));
        }
        if off.checked_add(length).is_none_or(|e| e > sb.dev_bytes) || !off.is_multiple_of(ss) {
            return Err(Bad::inconsistent(format!(
                "chunk at {start}: stripe {off}+{length} past the device ({} bytes)",
                sb.dev_bytes
            )));
        }
        stripes.push(off);
    }
    Ok(Chunk {
        start,
        length,
        flags,
        stripes,
    })
}
