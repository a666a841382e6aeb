//! File-system probes: given a partition, say which file system it holds, its UUID and
//! label, and which byte ranges are in use. Only those ranges go into the image.
//!
//! - [`ext`]: ext2/3/4 from the group descriptors and block bitmaps (`BLOCK_UNINIT`,
//!   flex_bg, meta_bg, 64-bit descriptors);
//! - [`fat`]: FAT12/16/32 from the boot sector and the allocation table;
//! - [`swap`]: the header page only (restore rewrites it for the partition's size);
//! - anything else: the non-zero 64 KiB blocks, and restore zeroes the rest.

pub mod ext;
pub mod fat;
pub mod swap;

use crate::disk::BlockIo;
use serde::{Deserialize, Serialize};
use std::io;

/// A view of one partition of a disk.
pub struct PartView<'a> {
    pub disk: &'a dyn BlockIo,
    pub start: u64,
    pub size: u64,
}

impl PartView<'_> {
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        let at = self.start.checked_add(offset);
        match (end, at) {
            (Some(end), Some(at)) if end <= self.size => self.disk.read_exact_at(buf, at),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the partition end ({})",
                    buf.len(),
                    self.size
                ),
            )),
        }
    }
}

/// What restore must do with the bytes the image does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// Unused by the file system: leave whatever the target holds.
    Keep,
    /// Must read back as zeros (unknown contents captured as non-zero blocks).
    Zero,
}

/// The result of probing a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub kind: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Bytes the file system spans (≤ partition size).
    pub fs_size: u64,
    /// Used byte ranges `(offset, length)`, sorted, non-overlapping, within the partition.
    pub used: Vec<(u64, u64)>,
    pub fill: Fill,
}

/// Block size of the unknown-file-system scan.
pub const SCAN_BLOCK: u64 = 64 << 10;

/// Probes the partition; unknown contents yield the non-zero blocks. `raw` stores all.
pub fn probe(part: &PartView, raw: bool) -> io::Result<FsInfo> {
    if raw {
        return Ok(FsInfo {
            kind: "raw".into(),
            uuid: None,
            label: None,
            fs_size: part.size,
            used: vec![(0, part.size)],
            fill: Fill::Zero,
        });
    }
    if let Some(i) = ext::probe(part)? {
        return Ok(i);
    }
    if let Some(i) = fat::probe(part)? {
        return Ok(i);
    }
    if let Some(i) = swap::probe(part)? {
        return Ok(i);
    }
    nonzero(part)
}

fn nonzero(part: &PartView) -> io::Result<FsInfo> {
    let mut used = vec![];
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < part.size {
        let n = (part.size - off).min(buf.len() as u64) as usize;
        part.read(&mut buf[..n], off)?;
        for (i, blk) in buf[..n].chunks(SCAN_BLOCK as usize).enumerate() {
            if blk.iter().any(|b| *b != 0) {
                push_range(&mut used, off + i as u64 * SCAN_BLOCK, blk.len() as u64);
            }
        }
        off += n as u64;
    }
    Ok(FsInfo {
        kind: "unknown".into(),
        uuid: None,
        label: None,
        fs_size: part.size,
        used,
        fill: Fill::Zero,
    })
}

/// Appends a range, merging it with the last one when they touch.
pub fn push_range(v: &mut Vec<(u64, u64)>, off: u64, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(last) = v.last_mut() {
        if last.0 + last.1 == off {
            last.1 += len;
            return;
        }
    }
    v.push((off, len));
}

/// Formats 16 bytes as a lower-case RFC 4122 UUID string.
pub fn uuid_string(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A NUL/space-padded label, `None` when empty.
pub fn label_string(b: &[u8]) -> Option<String> {
    let s: Vec<u8> = b.iter().copied().take_while(|c| *c != 0).collect();
    let s = String::from_utf8_lossy(&s).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}
