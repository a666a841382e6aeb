//! btrfs checksums of the superblock and of tree nodes: the first 32 bytes of the block
//! hold the checksum of the rest. crc32c (the default) and sha256 are checked here;
//! xxhash64 and blake2b are not, and the probe falls back to the non-zero scan for them.

use sha2::{Digest, Sha256};

/// `btrfs_csum_type` values.
pub const CRC32C: u16 = 0;
pub const SHA256: u16 = 2;

/// crc32c of `data` (the shared [`crate::fs::crc32c`], as the kernel's `crc32c()`).
pub fn crc32c(data: &[u8]) -> u32 {
    crate::fs::crc32c::checksum(data)
}

/// Whether the probe can check checksums of this type.
pub fn supported(kind: u16) -> bool {
    matches!(kind, CRC32C | SHA256)
}

/// The checksum of `block[32..]` as stored in `block[..32]` (zero-padded).
pub fn compute(kind: u16, block: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let body = block.get(32..).unwrap_or_default();
    match kind {
        CRC32C => out[..4].copy_from_slice(&crc32c(body).to_le_bytes()),
        SHA256 => out.copy_from_slice(&Sha256::digest(body)),
        _ => {}
    }
    out
}

/// Whether `block` carries a valid checksum of type `kind` (which must be supported).
pub fn matches(kind: u16, block: &[u8]) -> bool {
    let size = if kind == CRC32C { 4 } else { 32 };
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
