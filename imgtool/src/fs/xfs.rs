//! XFS: which bytes of the data section are in use, from each allocation group's
//! by-block-number free-space B+tree (`bnobt`). Everything in `[0, dblocks × blocksize)`
//! that the trees do not list as free is used: AG headers, the AGFL, inode chunks, every
//! B+tree, the internal log and file data are kept whole — a safe superset.
//!
//! The superblock is checked before anything else is read (block and sector size,
//! `agblocks`/`agcount`/`dblocks` consistent and inside the partition, CRC and
//! incompatible features on v5). What this reader does not trust yields the
//! **fallback**: an XFS with an external log or a realtime section, a damaged
//! superblock, one flagged NEEDSREPAIR or with an incompatible feature this reader does
//! not know, an AGF or tree block that fails its checks ([`bnobt`]), free space that
//! would cover a block that must be used, or a log that is not provably clean ([`log`]:
//! after a crash the trees on disk are only the last checkpoint). The partition is then stored as its non-zero blocks with `Fill::Zero`,
//! as `xfs-unparsed` (restored byte-exact, never mounted or grown). [`free_space`] says
//! why. Layouts: "XFS Algorithms & Data Structures" (xfs-documentation), xfsprogs'
//! `xfs_format.h`; all fields big-endian.

mod bnobt;
mod log;

use super::{label_string, uuid_string, Fill, FsInfo, PartView, UsedRanges};
use crate::bytes::{be16, be32, be64};
use std::io;

pub use bnobt::{MAX_FREE_EXTENTS, MAX_LEVELS, MAX_NODES};

/// `XFSB`, at byte 0 of the data section.
const SB_MAGIC: &[u8; 4] = b"XFSB";
/// The `kind` of an XFS whose free space was read.
pub const KIND: &str = "xfs";
/// The `kind` of an XFS stored as its non-zero blocks (see the module doc).
pub const KIND_UNPARSED: &str = "xfs-unparsed";

/// The checked superblock fields this reader uses.
#[derive(Debug, Clone)]
pub struct Super {
    pub block: u64,
    pub sect: u64,
    pub agblocks: u64,
    pub agcount: u64,
    pub agblklog: u32,
    pub dblocks: u64,
    /// Version 5: CRCs and self-describing metadata (`AB3B` trees).
    pub v5: bool,
    pub uuid: [u8; 16],
    /// The UUID stamped in metadata (`sb_meta_uuid` when the `META_UUID` feature is set).
    pub meta_uuid: [u8; 16],
    pub label: Option<String>,
    /// The internal log as file-system blocks: AG, AG block, length.
    pub log: (u64, u64, u64),
}

impl Super {
    /// Bytes of the data section.
    pub fn fs_size(&self) -> u64 {
        self.dblocks * self.block
    }

    /// Blocks of allocation group `ag` (the last one may be shorter).
    pub fn ag_len(&self, ag: u64) -> u64 {
        if ag + 1 == self.agcount {
            self.dblocks - ag * self.agblocks
        } else {
            self.agblocks
        }
    }

    /// Byte offset of block `agbno` of AG `ag` in the partition.
    pub fn byte(&self, ag: u64, agbno: u64) -> u64 {
        (ag * self.agblocks + agbno) * self.block
    }
}

/// Why an XFS is stored as its non-zero blocks instead of its used blocks.
#[derive(Debug, thiserror::Error)]
pub enum Unparsed {
    #[error("the log is on another device")]
    ExternalLog,
    #[error("it has a realtime section")]
    Realtime,
    #[error("superblock: {0}")]
    Super(String),
    #[error("AG {ag}: AGF: {why}")]
    Agf { ag: u64, why: String },
    #[error("AG {ag}: free-space tree block {agbno}: {why}")]
    Node { ag: u64, agbno: u64, why: String },
    #[error("AG {ag}: free extent {start}+{len}: {why}")]
    Extent {
        ag: u64,
        start: u64,
        len: u64,
        why: String,
    },
    #[error("AG {ag}: the tree lists {tree} free blocks, the AGF {agf}")]
    FreeCount { ag: u64, tree: u64, agf: u64 },
    #[error("the log is not clean: {0}")]
    DirtyLog(String),
    #[error("reading")]
    Io(#[from] io::Error),
}

/// Probes for XFS; `None` when the superblock magic is absent.
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    let mut s = [0u8; 512];
    if part.size < 512 {
        return Ok(None);
    }
    part.read(&mut s, 0)?;
    if &s[0..4] != SB_MAGIC {
        return Ok(None);
    }
    match free_space(part) {
        Ok((sb, free)) => Ok(Some(used_info(&sb, &free))),
        // A read past the partition's end is damage (every read is meant to be inside
        // the checked geometry); other read errors are the disk's and end the capture.
        Err(Unparsed::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => Err(e),
        Err(_) => fallback(part, &s).map(Some),
    }
}

/// The superblock and every AG's free extents as partition byte ranges (sorted,
/// disjoint), or why they cannot be trusted.
pub fn free_space(part: &PartView) -> Result<(Super, Vec<(u64, u64)>), Unparsed> {
    let sb = read_super(part)?;
    log::check_clean(part, &sb)?;
    let mut free = Vec::new();
    let mut nodes = 0usize;
    for ag in 0..sb.agcount {
        let ext = bnobt::ag_free(part, &sb, ag, &mut nodes)?;
        if free.len().saturating_add(ext.len()) > MAX_FREE_EXTENTS {
            return Err(Unparsed::Extent {
                ag,
                start: 0,
                len: 0,
                why: format!("more than {MAX_FREE_EXTENTS} free extents"),
            });
        }
        free.extend(ext.into_iter().map(|(b, n)| (sb.byte(ag, b), n * sb.block)));
    }
    must_be_used(&sb, &free)?;
    Ok((sb, free))
}

/// The used ranges: the data section minus the free extents.
fn used_info(sb: &Super, free: &[(u64, u64)]) -> FsInfo {
    let mut used = UsedRanges::default();
    let mut at = 0u64;
    for &(off, len) in free {
        used.push(at, off - at);
        at = off + len;
    }
    used.push(at, sb.fs_size() - at);
    FsInfo {
        kind: KIND.into(),
        uuid: Some(uuid_string(&sb.uuid)),
        label: sb.label.clone(),
        fs_size: sb.fs_size(),
        used: used.into_vec(),
        fill: Fill::Keep,
    }
}

/// The whole partition's non-zero blocks, named from the superblock as far as it reads.
fn fallback(part: &PartView, s: &[u8; 512]) -> io::Result<FsInfo> {
    let mut info = super::nonzero(part)?;
    info.kind = KIND_UNPARSED.into();
    info.uuid = Some(uuid_string(&s[32..48]));
    info.label = label_string(&s[108..120]);
    Ok(info)
}

/// A power of two in `[lo, hi]`.
fn pow2_in(v: u64, lo: u64, hi: u64) -> bool {
    v.is_power_of_two() && (lo..=hi).contains(&v)
}

/// `XFS_SB_VERSION_NUMBITS`: the version is the low 4 bits of `sb_versionnum`.
const VERSION_MASK: u64 = 0xf;
/// Where `sb_features_incompat` is (v5).
const SB_INCOMPAT: usize = 216;
/// `XFS_SB_FEAT_INCOMPAT_META_UUID`.
const INCOMPAT_META_UUID: u64 = 1 << 2;
/// `XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR`: `xfs_repair` did not finish; the kernel refuses to
/// mount such a file system.
const INCOMPAT_NEEDSREPAIR: u64 = 1 << 4;
/// The incompatible features this reader knows leave the AG headers, the free-space
/// trees and the log as it reads them: FTYPE (0), SPINODES (1), META_UUID (2), BIGTIME
/// (3), NREXT64 (5), EXCHRANGE (6), PARENT (7). Anything else (METADIR, 8, changes the
/// superblock's layout; later bits are unknown) and NEEDSREPAIR mean the fallback.
const INCOMPAT_KNOWN: u64 = 0b1110_1111;
/// Where `sb_crc` is (v5).
const SB_CRC: usize = 224;

/// Reads and checks the primary superblock.
pub fn read_super(part: &PartView) -> Result<Super, Unparsed> {
    let bad = |m: String| Unparsed::Super(m);
    let mut s = [0u8; 512];
    part.read(&mut s, 0)?;
    if &s[0..4] != SB_MAGIC {
        return Err(bad("no XFSB magic".into()));
    }
    let (block, sect) = (u64::from(be32(&s, 4)), u64::from(be16(&s, 102)));
    if !pow2_in(block, 512, 65536) || u64::from(s[120]) != u64::from(block.trailing_zeros()) {
        return Err(bad(format!("block size {block}")));
    }
    if !pow2_in(sect, 512, 32768)
        || sect > block
        || u64::from(s[121]) != u64::from(sect.trailing_zeros())
    {
        return Err(bad(format!("sector size {sect}")));
    }
    // Before the CRC check reads a whole sector: a stale superblock on a partition
    // shorter than its sector is the fallback, not a read past the end.
    if sect > part.size {
        return Err(bad(format!(
            "sector size {sect} is more than the partition ({} bytes)",
            part.size
        )));
    }
    let version = u64::from(be16(&s, 100)) & VERSION_MASK;
    if version != 4 && version != 5 {
        return Err(bad(format!("version {version}")));
    }
    let v5 = version == 5;
    if v5 {
        check_super_crc(part, sect)?;
    }
    if v5 {
        check_incompat(u64::from(be32(&s, SB_INCOMPAT)))?;
    }
    let sb = geometry(&s, part, block, sect, v5)?;
    if s[126] != 0 {
        return Err(bad("mkfs did not finish (sb_inprogress)".into()));
    }
    if be64(&s, 16) != 0 || be64(&s, 24) != 0 {
        return Err(Unparsed::Realtime);
    }
    Ok(sb)
}

/// A v5 `sb_features_incompat` this reader can trust.
fn check_incompat(incompat: u64) -> Result<(), Unparsed> {
    if incompat & INCOMPAT_NEEDSREPAIR != 0 {
        return Err(Unparsed::Super("flagged as needing xfs_repair".into()));
    }
    let unknown = incompat & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(Unparsed::Super(format!(
            "unknown incompatible features {unknown:#x}"
        )));
    }
    Ok(())
}

fn check_super_crc(part: &PartView, sect: u64) -> Result<(), Unparsed> {
    let mut s = vec![0u8; sect as usize];
    part.read(&mut s, 0)?;
    if !crc_ok(&mut s, SB_CRC) {
        return Err(Unparsed::Super("CRC mismatch".into()));
    }
    Ok(())
}

/// Checks the v5 CRC at `at` of a metadata buffer (CRC-32C of the buffer with the field
/// zeroed, stored little-endian as the kernel does).
pub(crate) fn crc_ok(buf: &mut [u8], at: usize) -> bool {
    let Some(field) = buf.get_mut(at..at + 4) else {
        return false;
    };
    let mut stored = [0u8; 4];
    stored.copy_from_slice(field);
    field.fill(0);
    let crc = super::crc32c::checksum(buf);
    buf[at..at + 4].copy_from_slice(&stored);
    crc == u32::from_le_bytes(stored)
}

/// The AG geometry and log position, checked against each other and the partition.
fn geometry(s: &[u8], part: &PartView, block: u64, sect: u64, v5: bool) -> Result<Super, Unparsed> {
    let bad = |m: String| Unparsed::Super(m);
    let (dblocks, agblocks, agcount) = (be64(s, 8), u64::from(be32(s, 84)), u64::from(be32(s, 88)));
    let agblklog = u32::from(s[124]);
    if agblocks < 16 || agcount == 0 {
        return Err(bad(format!("{agcount} AGs of {agblocks} blocks")));
    }
    if agblklog >= 32
        || 1u64 << agblklog < agblocks
        || (agblklog > 0 && 1u64 << (agblklog - 1) >= agblocks)
    {
        return Err(bad(format!("agblklog {agblklog} for {agblocks} blocks")));
    }
    let full = (agcount - 1).checked_mul(agblocks);
    if !full.is_some_and(|f| f < dblocks && dblocks - f <= agblocks) {
        return Err(bad(format!(
            "{dblocks} blocks in {agcount} AGs of {agblocks}"
        )));
    }
    if dblocks.checked_mul(block).is_none_or(|b| b > part.size) {
        return Err(bad(format!(
            "{dblocks} blocks of {block} bytes are more than the partition ({} bytes)",
            part.size
        )));
    }
    let (logstart, logblocks) = (be64(s, 48), u64::from(be32(s, 96)));
    if logstart == 0 {
        return Err(Unparsed::ExternalLog);
    }
    let (log_ag, log_bno) = (logstart >> agblklog, logstart & ((1u64 << agblklog) - 1));
    let sb = Super {
        block,
        sect,
        agblocks,
        agcount,
        agblklog,
        dblocks,
        v5,
        uuid: s[32..48].try_into().unwrap_or_default(),
        meta_uuid: if v5 && u64::from(be32(s, SB_INCOMPAT)) & INCOMPAT_META_UUID != 0 {
            s[248..264].try_into().unwrap_or_default()
        } else {
            s[32..48].try_into().unwrap_or_default()
        },
        label: label_string(&s[108..120]),
        log: (log_ag, log_bno, logblocks),
    };
    if log_ag >= agcount
        || log_bno
            .checked_add(logblocks)
            .is_none_or(|e| e > sb.ag_len(log_ag))
        || logblocks == 0
    {
        return Err(bad(format!(
            "log at {logstart} ({logblocks} blocks) is outside its AG"
        )));
    }
    Ok(sb)
}

/// Free space must not cover what is certainly used: each AG's header sectors (the
/// superblock, AGF, AGI and AGFL) and the internal log. (The trees' own blocks are
/// checked per AG by [`bnobt`].)
fn must_be_used(sb: &Super, free: &[(u64, u64)]) -> Result<(), Unparsed> {
    let (log_ag, log_bno, log_len) = sb.log;
    let log = (sb.byte(log_ag, log_bno), log_len * sb.block);
    let headers = (0..sb.agcount).map(|ag| (sb.byte(ag, 0), 4 * sb.sect));
    for (off, len) in headers.chain(std::iter::once(log)) {
        if let Some(&(s, l)) = overlapping(free, off, len) {
            return Err(Unparsed::Extent {
                ag: s / sb.block / sb.agblocks,
                start: s,
                len: l,
                why: format!("covers used bytes {off}+{len} (AG header or log)"),
            });
        }
    }
    Ok(())
}

/// A range of the sorted, disjoint `free` that overlaps `[off, off+len)`.
pub(crate) fn overlapping(free: &[(u64, u64)], off: u64, len: u64) -> Option<&(u64, u64)> {
    let i = free.partition_point(|&(s, l)| s + l <= off);
    free.get(i).filter(|&&(s, _)| s < off + len)
}

#[cfg(test)]
mod tests;
