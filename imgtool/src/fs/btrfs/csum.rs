//! btrfs checksums of the superblock and of tree nodes: the first 32 bytes of the block
//! hold the checksum of the rest. crc32c (the default), xxhash64 and sha256 are checked
//! here; blake2b is not, and the probe falls back to the non-zero scan for it.

use sha2::{Digest, Sha256};

/// `btrfs_csum_type` values.
pub const CRC32C: u16 = 0;
pub const XXHASH64: u16 = 1;
pub const SHA256: u16 = 2;

/// crc32c of `data` (the shared [`crate::fs::crc32c`], as the kernel's `crc32c()`).
pub fn crc32c(data: &[u8]) -> u32 {
    crate::fs::crc32c::checksum(data)
}

const P1: u64 = 0x9e37_79b1_85eb_ca87;
const P2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const P3: u64 = 0x1656_67b1_9e37_79f9;
const P4: u64 = 0x85eb_ca77_c2b2_ae63;
const P5: u64 = 0x27d4_eb2f_1656_67c5;

fn xxh_round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn xxh_merge(acc: u64, v: u64) -> u64 {
    (acc ^ xxh_round(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `data` with seed 0 (btrfs's `xxhash64` checksum, stored little-endian).
pub fn xxh64(data: &[u8]) -> u64 {
    let word = |b: &[u8]| crate::bytes::le64(b, 0);
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        while rest.len() >= 32 {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = xxh_round(*acc, word(&rest[i * 8..]));
            }
            rest = &rest[32..];
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for acc in v {
            h = xxh_merge(h, acc);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(data.len() as u64);
    while rest.len() >= 8 {
        h ^= xxh_round(0, word(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        h ^= u64::from(crate::bytes::le32(rest, 0)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// Whether the probe can check checksums of this type.
pub fn supported(kind: u16) -> bool {
    matches!(kind, CRC32C | XXHASH64 | SHA256)
}

/// The checksum of `block[32..]` as stored in `block[..32]` (zero-padded).
pub fn compute(kind: u16, block: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let body = block.get(32..).unwrap_or_default();
    match kind {
        CRC32C => out[..4].copy_from_slice(&crc32c(body).to_le_bytes()),
        XXHASH64 => out[..8].copy_from_slice(&xxh64(body).to_le_bytes()),
        SHA256 => out.copy_from_slice(&Sha256::digest(body)),
        _ => {}
    }
    out
}

/// Whether `block` carries a valid checksum of type `kind` (which must be supported).
pub fn matches(kind: u16, block: &[u8]) -> bool {
    let size = match kind {
        CRC32C => 4,
        XXHASH64 => 8,
        _ => 32,
    };
    block.len() > 32 && compute(kind, block)[..size] == block[..size]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720 B.4 / the usual "123456789" check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn xxh64_matches_the_reference_values() {
        // xxHash's own test values (seed 0).
        assert_eq!(xxh64(b""), 0xef46_db37_51d8_e999);
        assert_eq!(xxh64(b"a"), 0xd24e_c4f1_a98c_6e5b);
        assert_eq!(xxh64(b"abc"), 0x44bc_2cf5_ad77_0999);
    }

    #[test]
    fn a_flipped_bit_fails_the_check() {
        let mut b = vec![7u8; 4096];
        let c = compute(CRC32C, &b);
        b[..32].copy_from_slice(&c);
        assert!(matches(CRC32C, &b));
        b[100] ^= 1;
        assert!(!matches(CRC32C, &b));
        let c = compute(SHA256, &b);
        b[..32].copy_from_slice(&c);
        assert!(matches(SHA256, &b));
    }
}
