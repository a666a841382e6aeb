//! The XFS reader on small hand-built file systems (v5 with CRCs, and v4): the used
//! ranges of a well-formed one, and each kind of damage leading to the fallback (the
//! whole partition's non-zero blocks), never to a panic or an under-reported range.

use super::*;
use crate::disk::{BlockIo, MemDisk};

/// Block size, AG size and AG count of the built file system (64 KiB in all).
pub(crate) const BLOCK: usize = 1024;
const AGBLOCKS: u64 = 32;
const AGCOUNT: u64 = 2;
const UUID: [u8; 16] = *b"0123456789abcdef";

/// A hand-built XFS: per AG its free extents; AG 1's tree has two levels when `split`.
pub(crate) struct Mkfs {
    pub v5: bool,
    pub free: Vec<Vec<(u64, u64)>>,
    pub split: bool,
    /// The internal log: AG-0 block and length.
    pub log: (u64, u64),
}

impl Default for Mkfs {
    fn default() -> Self {
        Mkfs {
            v5: true,
            free: vec![vec![(4, 12), (24, 8)], vec![(5, 10), (20, 12)]],
            split: true,
            log: (16, 8),
        }
    }
}

fn put32(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes());
}

fn put16(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Sets a v5 CRC (CRC-32C, little-endian) at `at` of `buf`.
fn set_crc(buf: &mut [u8], at: usize) {
    buf[at..at + 4].fill(0);
    let crc = crate::fs::crc32c::checksum(buf);
    buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

fn byte(ag: u64, bno: u64) -> usize {
    ((ag * AGBLOCKS + bno) as usize) * BLOCK
}

impl Mkfs {
    /// The disk image; `edit` changes it before the CRCs are computed, so a test can
    /// break one rule while every checksum still holds.
    pub fn build(&self, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        // Free blocks hold garbage that must not be captured; used ones hold 0x11.
        let mut d = vec![0x11u8; (AGBLOCKS * AGCOUNT) as usize * BLOCK];
        for (ag, ext) in self.free.iter().enumerate() {
            for &(s, n) in ext {
                let (a, b) = (byte(ag as u64, s), byte(ag as u64, s + n).min(d.len()));
                if a < b {
                    d[a..b].fill(0xEE);
                }
            }
        }
        self.superblock(&mut d);
        self.clean_log(&mut d);
        for ag in 0..AGCOUNT {
            self.ag(&mut d, ag);
        }
        edit(&mut d);
        if self.v5 {
            set_crc(&mut d[..512], 224);
            for ag in 0..AGCOUNT {
                let a = byte(ag, 0) + 512;
                set_crc(&mut d[a..a + 512], 216);
                for bno in 2..5 {
                    let b = byte(ag, bno);
                    if &d[b..b + 4] == b"AB3B" {
                        set_crc(&mut d[b..b + BLOCK], 52);
                    }
                }
            }
        }
        d
    }

    fn superblock(&self, d: &mut [u8]) {
        let s = &mut d[..512];
        s.fill(0);
        s[0..4].copy_from_slice(b"XFSB");
        put32(s, 4, BLOCK as u64);
        put64(s, 8, AGBLOCKS * AGCOUNT);
        s[32..48].copy_from_slice(&UUID);
        put64(s, 48, self.log.0);
        put32(s, 84, AGBLOCKS);
        put32(s, 88, AGCOUNT);
        put32(s, 96, self.log.1);
        put16(s, 100, if self.v5 { 0xb4a5 } else { 0xb4a4 });
        put16(s, 102, 512);
        s[108..113].copy_from_slice(b"tiny!");
        s[120] = BLOCK.trailing_zeros() as u8;
        s[121] = 9;
        s[124] = AGBLOCKS.trailing_zeros() as u8;
    }

    /// A log as mkfs leaves it: an unmount record (header and one operation, cycle 1)
    /// in its first two BBs, zeros (cycle 0) after.
    fn clean_log(&self, d: &mut [u8]) {
        let at = byte(0, self.log.0);
        let log = &mut d[at..at + self.log.1 as usize * BLOCK];
        log.fill(0);
        put32(log, 0, 0xFEED_BABE);
        put32(log, 4, 1);
        put32(log, 8, 2);
        put32(log, 12, 512);
        put32(log, 40, 1);
        put32(log, 320, 32768);
        put32(log, 512, 1);
        log[512 + 8] = 0xaa;
        log[512 + 9] = 0x20;
    }

    fn ag(&self, d: &mut [u8], ag: u64) {
        let ext = &self.free[ag as usize];
        let a = byte(ag, 0) + 512;
        let agf = &mut d[a..a + 512];
        agf.fill(0);
        agf[0..4].copy_from_slice(b"XAGF");
        put32(agf, 4, 1);
        put32(agf, 8, ag);
        put32(agf, 12, AGBLOCKS);
        put32(agf, 16, 2);
        let two = self.split && ag == 1 && ext.len() >= 2;
        put32(agf, 28, if two { 2 } else { 1 });
        put32(agf, 52, ext.iter().map(|e| e.1).sum());
        agf[64..80].copy_from_slice(&UUID);
        if two {
            let keys: Vec<_> = ext.iter().map(|e| e.0).collect();
            self.block(d, ag, 2, 1, &[(keys[0], 0), (keys[1], 0)], &[3, 4]);
            self.block(d, ag, 3, 0, &ext[..1], &[]);
            self.block(d, ag, 4, 0, &ext[1..], &[]);
        } else {
            self.block(d, ag, 2, 0, ext, &[]);
        }
    }

    /// A free-space tree block: `recs` are leaf records or node keys, `ptrs` child blocks.
    fn block(
        &self,
        d: &mut [u8],
        ag: u64,
        bno: u64,
        level: u64,
        recs: &[(u64, u64)],
        ptrs: &[u64],
    ) {
        let at = byte(ag, bno);
        let b = &mut d[at..at + BLOCK];
        b.fill(0);
        let hdr = if self.v5 { 56 } else { 16 };
        b[0..4].copy_from_slice(if self.v5 { b"AB3B" } else { b"ABTB" });
        put16(b, 4, level);
        put16(b, 6, recs.len() as u64);
        put32(b, 8, 0xffff_ffff);
        put32(b, 12, 0xffff_ffff);
        if self.v5 {
            put64(b, 16, (at / 512) as u64);
            b[32..48].copy_from_slice(&UUID);
            put32(b, 48, ag);
        }
        for (i, &(s, n)) in recs.iter().enumerate() {
            put32(b, hdr + 8 * i, s);
            put32(b, hdr + 8 * i + 4, n);
        }
        let cap = (BLOCK - hdr) / 12;
        for (i, &p) in ptrs.iter().enumerate() {
            put32(b, hdr + cap * 8 + 4 * i, p);
        }
    }
}

fn view(disk: &MemDisk) -> PartView<'_> {
    PartView {
        disk,
        start: 0,
        size: disk.size(),
    }
}

/// Used ranges of a well-formed build: everything but the free extents.
fn expected_used(m: &Mkfs) -> Vec<(u64, u64)> {
    let mut u = UsedRanges::default();
    let mut at = 0;
    for (ag, ext) in m.free.iter().enumerate() {
        for &(s, n) in ext {
            let off = byte(ag as u64, s) as u64;
            u.push(at, off - at);
            at = off + n * BLOCK as u64;
        }
    }
    u.push(at, AGBLOCKS * AGCOUNT * BLOCK as u64 - at);
    u.into_vec()
}

fn probe_of(d: Vec<u8>) -> FsInfo {
    let disk = MemDisk::from_vec(d, 512);
    probe(&view(&disk)).unwrap().unwrap()
}

fn why(d: Vec<u8>) -> String {
    let disk = MemDisk::from_vec(d, 512);
    match free_space(&view(&disk)) {
        Ok(_) => "parsed".into(),
        Err(e) => e.to_string(),
    }
}

/// The fallback: the whole partition (here all non-zero), `xfs-unparsed`, zero-filled.
fn assert_fallback(d: Vec<u8>, reason: &str) {
    let len = d.len() as u64;
    assert!(
        why(d.clone()).contains(reason),
        "{} lacks {reason:?}",
        why(d.clone())
    );
    let info = probe_of(d);
    assert_eq!(info.kind, KIND_UNPARSED);
    assert_eq!(info.fill, Fill::Zero);
    assert_eq!(info.used, vec![(0, len)]);
    assert_eq!(
        info.uuid.as_deref(),
        Some("30313233-3435-3637-3839-616263646566")
    );
}

#[test]
fn a_well_formed_v5_xfs_stores_all_but_its_free_extents() {
    let m = Mkfs::default();
    let info = probe_of(m.build(|_| {}));
    assert_eq!(info.kind, KIND);
    assert_eq!(info.fill, Fill::Keep);
    assert_eq!(info.fs_size, 64 << 10);
    assert_eq!(info.label.as_deref(), Some("tiny!"));
    assert_eq!(info.used, expected_used(&m));
}

#[test]
fn a_well_formed_v4_xfs_and_a_full_ag_parse_too() {
    let m = Mkfs {
        v5: false,
        free: vec![vec![(4, 12)], vec![]],
        ..Mkfs::default()
    };
    let info = probe_of(m.build(|_| {}));
    assert_eq!(info.kind, KIND);
    assert_eq!(info.used, expected_used(&m));
}

#[test]
fn bad_magic_in_a_tree_block_falls_back() {
    let d = Mkfs::default().build(|d| d[byte(1, 3)] = b'X');
    assert_fallback(d, "AG 1: free-space tree block 3: magic");
}

#[test]
fn a_bad_crc_falls_back() {
    let mut d = Mkfs::default().build(|_| {});
    d[byte(1, 4) + 60] ^= 1;
    assert_fallback(d, "AG 1: free-space tree block 4: CRC mismatch");
    let mut d = Mkfs::default().build(|_| {});
    d[byte(0, 0) + 512 + 40] ^= 1;
    assert_fallback(d, "AG 0: AGF: CRC mismatch");
}

#[test]
fn a_free_extent_past_the_ag_falls_back() {
    let m = Mkfs {
        free: vec![vec![(4, 12), (24, 9)], vec![(5, 10), (20, 12)]],
        ..Mkfs::default()
    };
    assert_fallback(
        m.build(|_| {}),
        "AG 0: free extent 24+9: passes the end of the AG",
    );
}

#[test]
fn unsorted_or_overlapping_extents_fall_back() {
    let m = Mkfs {
        free: vec![vec![(24, 8), (4, 12)], vec![(5, 10), (20, 12)]],
        ..Mkfs::default()
    };
    assert_fallback(m.build(|_| {}), "AG 0: free extent 4+12: is out of order");
}

#[test]
fn a_cycle_in_the_tree_falls_back() {
    // AG 1's root points at itself (block 2), then at a leaf.
    let cap = (BLOCK - 56) / 12;
    let d = Mkfs::default().build(|d| put32(d, byte(1, 2) + 56 + cap * 8, 2));
    assert_fallback(d, "AG 1: free-space tree block 2: reached twice");
    // Both pointers at the same leaf: read twice.
    let d = Mkfs::default().build(|d| put32(d, byte(1, 2) + 56 + cap * 8 + 4, 3));
    assert_fallback(d, "AG 1: free-space tree block 3: reached twice");
}

#[test]
fn free_space_over_the_log_headers_or_the_tree_falls_back() {
    let m = Mkfs {
        free: vec![vec![(4, 14)], vec![(5, 10), (20, 12)]],
        ..Mkfs::default()
    };
    assert_fallback(m.build(|_| {}), "(AG header or log)");
    let m = Mkfs {
        free: vec![vec![(1, 1), (4, 12)], vec![(5, 10), (20, 12)]],
        ..Mkfs::default()
    };
    assert_fallback(m.build(|_| {}), "(AG header or log)");
    let m = Mkfs {
        free: vec![vec![(4, 12)], vec![(4, 11), (20, 12)]],
        ..Mkfs::default()
    };
    assert_fallback(m.build(|_| {}), "covers the tree's own block 4");
}

#[test]
fn a_free_count_unlike_the_agfs_falls_back() {
    let d = Mkfs::default().build(|d| put32(d, byte(0, 0) + 512 + 52, 19));
    assert_fallback(d, "AG 0: the tree lists 20 free blocks, the AGF 19");
}

#[test]
fn external_log_realtime_and_bad_geometry_fall_back() {
    let d = Mkfs::default().build(|d| put64(d, 48, 0));
    assert_fallback(d, "the log is on another device");
    let d = Mkfs::default().build(|d| put64(d, 16, 100));
    assert_fallback(d, "realtime section");
    // More blocks than the partition, AG count inconsistent with the size, wrapping.
    for (at, v) in [(8usize, 65u64), (8, 31), (8, u64::MAX / 512)] {
        let d = Mkfs::default().build(|d| put64(d, at, v));
        assert_fallback(d, "superblock");
    }
    let d = Mkfs::default().build(|d| put32(d, 88, 0));
    assert_fallback(d, "superblock: 0 AGs");
    let d = Mkfs::default().build(|d| d[124] = 40);
    assert_fallback(d, "superblock: agblklog 40");
    let mut d = Mkfs::default().build(|_| {});
    d[300] ^= 1;
    assert_fallback(d, "superblock: CRC mismatch");
}

#[test]
fn a_log_not_provably_clean_falls_back() {
    let log = byte(0, 16);
    // Two operations in the last record: a transaction, not an unmount.
    let d = Mkfs::default().build(|d| put32(d, log + 40, 2));
    assert_fallback(
        d,
        "the log is not clean: the last record (block 0: 2 operations",
    );
    // One operation, but not an unmount.
    let d = Mkfs::default().build(|d| d[log + 512 + 9] = 0x02);
    assert_fallback(d, "not an unmount record (flags 0x02)");
    // A record written after the unmount record: the head moved past it.
    let d = Mkfs::default().build(|d| put32(d, log + 1024, 1));
    assert_fallback(d, "the log is not clean");
    // Torn writes: a block of the current cycle after the head.
    let d = Mkfs::default().build(|d| put32(d, log + 5 * 512, 1));
    assert_fallback(d, "torn or mixed writes");
    // Never written (cycle 0 everywhere) or all one cycle: no head.
    let d = Mkfs::default().build(|d| d[log..log + 8 * BLOCK].fill(0));
    assert_fallback(d, "no head found");
}

#[test]
fn too_deep_a_tree_falls_back() {
    let d = Mkfs::default().build(|d| put32(d, byte(1, 0) + 512 + 28, MAX_LEVELS + 1));
    assert_fallback(d, "AG 1: AGF: free-space tree root 2, 10 levels");
}

#[test]
fn not_xfs_is_none_and_a_short_partition_is_no_panic() {
    let disk = MemDisk::from_vec(vec![0u8; 4096], 512);
    assert!(probe(&view(&disk)).unwrap().is_none());
    let d = Mkfs::default().build(|_| {});
    let disk = MemDisk::from_vec(d[..2048].to_vec(), 512);
    let info = probe(&view(&disk)).unwrap().unwrap();
    assert_eq!(info.kind, KIND_UNPARSED);
}

#[test]
fn the_fuzz_seeds_reach_the_tree_walk() {
    // As the xfs_probe target reads them: shift byte 1, a 64 KiB partition, the tail zero.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/xfs_probe");
    for name in ["synthetic-v5-two-level", "synthetic-v4"] {
        let seed = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(seed[0], 1, "{name}");
        let mut d = seed[1..].to_vec();
        d.resize(64 << 10, 0);
        assert_eq!(probe_of(d).kind, KIND, "{name}");
    }
}

/// Writes the fuzz seeds (`cargo test -p imgtool --lib write_xfs_fuzz_seeds -- --ignored`).
#[test]
#[ignore]
fn write_xfs_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/xfs_probe");
    std::fs::create_dir_all(&dir).unwrap();
    let v4 = Mkfs {
        v5: false,
        ..Mkfs::default()
    };
    for (name, m) in [
        ("synthetic-v5-two-level", Mkfs::default()),
        ("synthetic-v4", v4),
    ] {
        let mut seed = vec![0u8];
        // Shift 1: a 64 KiB partition, the input's one byte short tail read as zeros.
        seed[0] = 1;
        seed.extend(m.build(|_| {}));
        seed.truncate(crate::fuzzing::MAX_INPUT);
        std::fs::write(dir.join(name), seed).unwrap();
    }
}

/// A stale XFS superblock on a partition shorter than its sector size: before, the v5
/// CRC check read a whole sector past the partition's end, the probe returned an error
/// and the whole capture failed. It is the fallback, like any superblock that does not
/// fit.
#[test]
fn a_partition_shorter_than_the_superblocks_sector_falls_back() {
    // 64 KiB blocks, 32 KiB sectors, on a 16 KiB partition.
    let d = Mkfs::default().build(|d| {
        put32(d, 4, 65536);
        d[120] = 16;
        put16(d, 102, 32768);
        d[121] = 15;
    });
    let d = d[..16 << 10].to_vec();
    assert!(
        why(d.clone()).contains("superblock: sector size 32768"),
        "{}",
        why(d.clone())
    );
    let info = probe_of(d);
    assert_eq!(info.kind, KIND_UNPARSED);
    assert_eq!(info.fill, Fill::Zero);
    assert_eq!(info.used, vec![(0, 16 << 10)]);
}

/// `sb_features_incompat` (v5): a file system flagged NEEDSREPAIR (xfs_repair was
/// interrupted: the kernel refuses to mount it) or with a feature this reader does not
/// know is not read by its trees. Before, both were parsed as if clean.
#[test]
fn needsrepair_or_an_unknown_incompat_feature_falls_back() {
    let d = Mkfs::default().build(|d| put32(d, 216, 1 << 4));
    assert_fallback(d, "superblock: flagged as needing xfs_repair");
    for bit in [8, 9, 12, 31] {
        let d = Mkfs::default().build(|d| put32(d, 216, 1 << bit));
        assert_fallback(
            d,
            &format!(
                "superblock: unknown incompatible features {:#x}",
                1u64 << bit
            ),
        );
    }
}

#[test]
fn the_known_incompat_features_parse() {
    // FTYPE, SPINODES, META_UUID (its UUID where the trees carry it), BIGTIME, NREXT64,
    // EXCHRANGE, PARENT: none changes the AG headers, the free-space trees or the log.
    let m = Mkfs::default();
    let d = m.build(|d| {
        put32(d, 216, 0xef);
        d[248..264].copy_from_slice(&UUID);
    });
    let info = probe_of(d);
    assert_eq!(info.kind, KIND);
    assert_eq!(info.used, expected_used(&m));
    // v4 has no feature fields: whatever is there is ignored.
    let m = Mkfs {
        v5: false,
        ..Mkfs::default()
    };
    assert_eq!(probe_of(m.build(|d| put32(d, 216, 1 << 4))).kind, KIND);
}
