//! A minimal, valid single-device btrfs built in memory (4 KiB nodes, crc32c): the
//! hostile-probe unit tests damage it, and the `btrfs_probe` fuzz seed is made from it.
//! [`reseal`] recomputes the checksums of the superblock and of every node, so a test
//! (or the fuzzer) can change one field and still reach the check behind the checksum.
//!
//! Layout of [`image`] (4 MiB): superblock at 64 KiB; SYSTEM chunk (logical 1 MiB,
//! 16 KiB) at physical 80 KiB holding the chunk tree leaf; METADATA chunk (logical
//! 2 MiB, 16 KiB) at physical 96 KiB holding the root tree leaf (2 MiB) and the extent
//! tree leaf (2 MiB + 4 KiB); DATA chunk (logical 3 MiB, 1 MiB) at physical 1 MiB with
//! two extents: 64 KiB at its start and 8 KiB at +512 KiB. Everything else in the data
//! chunk is garbage (freed data).

use super::csum;
use crate::bytes::le32;

pub const SIZE: usize = 4 << 20;
pub const NODE: usize = 4096;
pub const SB_AT: usize = 64 << 10;
pub const CHUNK_LEAF: usize = 80 << 10;
pub const ROOT_LEAF: usize = 96 << 10;
pub const EXTENT_LEAF: usize = 100 << 10;
const MIB: u64 = 1 << 20;
const FSID: [u8; 16] = *b"synthetic-btrfs!";
const GEN: u64 = 7;
/// What [`image`] uses: the first MiB and 64 KiB of data, then 8 KiB of data.
pub const USED: [(u64, u64); 2] = [(0, MIB + (64 << 10)), (MIB + (512 << 10), 8 << 10)];

fn key(objectid: u64, kind: u8, offset: u64) -> Vec<u8> {
    let mut k = objectid.to_le_bytes().to_vec();
    k.push(kind);
    k.extend_from_slice(&offset.to_le_bytes());
    k
}

fn header(node: &mut [u8], bytenr: u64, owner: u64, nritems: u32, level: u8) {
    node[0x20..0x30].copy_from_slice(&FSID);
    node[0x30..0x38].copy_from_slice(&bytenr.to_le_bytes());
    node[0x38..0x40].copy_from_slice(&1u64.to_le_bytes());
    node[0x50..0x58].copy_from_slice(&GEN.to_le_bytes());
    node[0x58..0x60].copy_from_slice(&owner.to_le_bytes());
    node[0x60..0x64].copy_from_slice(&nritems.to_le_bytes());
    node[0x64] = level;
}

/// A leaf at logical `bytenr` holding `items` (key, data), data packed from the end.
pub fn leaf(bytenr: u64, owner: u64, items: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut n = vec![0u8; NODE];
    header(&mut n, bytenr, owner, items.len() as u32, 0);
    let mut end = NODE - 0x65;
    for (i, (k, d)) in items.iter().enumerate() {
        end -= d.len();
        let at = 0x65 + i * 25;
        n[at..at + 17].copy_from_slice(k);
        n[at + 17..at + 21].copy_from_slice(&(end as u32).to_le_bytes());
        n[at + 21..at + 25].copy_from_slice(&(d.len() as u32).to_le_bytes());
        n[0x65 + end..0x65 + end + d.len()].copy_from_slice(d);
    }
    n
}

/// An internal node at `bytenr` of `level` pointing at `(key, child)` pairs.
pub fn internal(bytenr: u64, level: u8, ptrs: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let mut n = vec![0u8; NODE];
    header(&mut n, bytenr, 1, ptrs.len() as u32, level);
    for (i, (k, child)) in ptrs.iter().enumerate() {
        let at = 0x65 + i * 33;
        n[at..at + 17].copy_from_slice(k);
        n[at + 17..at + 25].copy_from_slice(&child.to_le_bytes());
        n[at + 25..at + 33].copy_from_slice(&GEN.to_le_bytes());
    }
    n
}

/// A chunk item of `length` bytes, `flags`, one stripe per physical offset.
pub fn chunk_item(length: u64, flags: u64, stripes: &[u64]) -> Vec<u8> {
    let mut c = vec![0u8; 48];
    c[0..8].copy_from_slice(&length.to_le_bytes());
    c[8..16].copy_from_slice(&2u64.to_le_bytes());
    c[16..24].copy_from_slice(&65536u64.to_le_bytes());
    c[24..32].copy_from_slice(&flags.to_le_bytes());
    c[40..44].copy_from_slice(&4096u32.to_le_bytes());
    c[44..46].copy_from_slice(&(stripes.len() as u16).to_le_bytes());
    c[46..48].copy_from_slice(&1u16.to_le_bytes());
    for s in stripes {
        c.extend_from_slice(&1u64.to_le_bytes());
        c.extend_from_slice(&s.to_le_bytes());
        c.extend_from_slice(&[0u8; 16]);
    }
    c
}

fn root_item(bytenr: u64, level: u8) -> Vec<u8> {
    let mut r = vec![0u8; 439];
    r[176..184].copy_from_slice(&bytenr.to_le_bytes());
    r[238] = level;
    r
}

/// The chunk tree leaf's items: SYSTEM, METADATA, DATA.
pub fn chunk_items() -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (key(256, 228, MIB), chunk_item(16 << 10, 2, &[80 << 10])),
        (key(256, 228, 2 * MIB), chunk_item(16 << 10, 4, &[96 << 10])),
        (key(256, 228, 3 * MIB), chunk_item(MIB, 1, &[MIB])),
    ]
}

/// The extent tree leaf's items: the three tree nodes and the two data extents.
pub fn extent_items() -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (key(MIB, 169, 0), vec![0u8; 24]),
        (key(2 * MIB, 169, 0), vec![0u8; 24]),
        (key(2 * MIB + 4096, 169, 0), vec![0u8; 24]),
        (key(3 * MIB, 168, 64 << 10), vec![0u8; 24]),
        (key(3 * MIB + (512 << 10), 168, 8 << 10), vec![0u8; 24]),
    ]
}

fn superblock(s: &mut [u8]) {
    s[0x20..0x30].copy_from_slice(&FSID);
    s[0x30..0x38].copy_from_slice(&(SB_AT as u64).to_le_bytes());
    s[0x40..0x48].copy_from_slice(b"_BHRfS_M");
    let u64s: [(usize, u64); 7] = [
        (0x48, GEN),
        (0x50, 2 * MIB),
        (0x58, MIB),
        (0x70, SIZE as u64),
        (0x88, 1),
        (0xc9, 1),
        (0xd1, SIZE as u64),
    ];
    for (at, v) in u64s {
        s[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    for at in [0x90, 0x94, 0x98, 0x9c] {
        s[at..at + 4].copy_from_slice(&(NODE as u32).to_le_bytes());
    }
    s[0x12b..0x130].copy_from_slice(b"synth");
    let mut sys = key(256, 228, MIB);
    sys.extend(chunk_item(16 << 10, 2, &[80 << 10]));
    s[0xa0..0xa4].copy_from_slice(&(sys.len() as u32).to_le_bytes());
    s[0x32b..0x32b + sys.len()].copy_from_slice(&sys);
}

/// The whole image, sealed.
pub fn image() -> Vec<u8> {
    let mut b = vec![0u8; SIZE];
    superblock(&mut b[SB_AT..SB_AT + 4096]);
    let nodes = [
        (CHUNK_LEAF, leaf(MIB, 3, &chunk_items())),
        (
            ROOT_LEAF,
            leaf(
                2 * MIB,
                1,
                &[(key(2, 132, 0), root_item(2 * MIB + 4096, 0))],
            ),
        ),
        (EXTENT_LEAF, leaf(2 * MIB + 4096, 2, &extent_items())),
    ];
    for (at, n) in nodes {
        b[at..at + NODE].copy_from_slice(&n);
    }
    // Used data, then freed data (garbage) in the rest of the data chunk.
    b[MIB as usize..(MIB + (64 << 10)) as usize].fill(0x5a);
    b[(MIB + (64 << 10)) as usize..(MIB + (512 << 10)) as usize].fill(0xee);
    b[(MIB + (512 << 10)) as usize..(MIB + (520 << 10)) as usize].fill(0x5b);
    b[(MIB + (520 << 10)) as usize..(2 * MIB) as usize].fill(0xee);
    reseal(&mut b);
    b
}

/// Recomputes the crc32c of the superblock at 64 KiB and of every sector-aligned block
/// after it that carries the superblock's fsid at a node's fsid offset (a node). Does
/// nothing when `b` holds no crc32c superblock.
pub fn reseal(b: &mut [u8]) {
    let Some(s) = b.get(SB_AT..SB_AT + 4096) else {
        return;
    };
    if &s[0x40..0x48] != b"_BHRfS_M" || s[0xc4..0xc6] != [0, 0] {
        return;
    }
    let fsid: Vec<u8> = s[0x20..0x30].to_vec();
    let nodesize = le32(s, 0x94) as usize;
    let sector = (le32(s, 0x90) as usize).clamp(4096, 65536);
    if (4096..=65536).contains(&nodesize) {
        let mut at = SB_AT + 4096;
        while at + nodesize <= b.len() {
            if b[at + 0x20..at + 0x30] == fsid[..] {
                let c = csum::compute(csum::CRC32C, &b[at..at + nodesize]);
                b[at..at + 4].copy_from_slice(&c[..4]);
            }
            at += sector;
        }
    }
    let c = csum::compute(csum::CRC32C, &b[SB_AT..SB_AT + 4096]);
    b[SB_AT..SB_AT + 4].copy_from_slice(&c[..4]);
}
