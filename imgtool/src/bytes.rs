//! Fields of on-disk structures (partition tables, superblocks, boot sectors, B+tree
//! blocks): the one set of readers every codec and probe uses, little-endian (`le*`: GPT,
//! MBR, ext, FAT, btrfs, LVM2's label) and big-endian (`be*`: XFS). Each reads at byte `o`
//! of `b` and panics when the field does not fit, like slice indexing: callers read fixed
//! offsets inside a buffer whose length they checked (a sector, a superblock, an entry).

/// The little-endian `u16` at byte `o`.
pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

/// The little-endian `u32` at byte `o`.
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// The little-endian `u64` at byte `o`.
pub fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// The big-endian `u16` at byte `o`.
pub fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

/// The big-endian `u32` at byte `o`.
pub fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// The big-endian `u64` at byte `o`.
pub fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_little_endian_at_their_offset() {
        let b = [0xffu8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        assert_eq!(le16(&b, 1), 0x0201);
        assert_eq!(le32(&b, 1), 0x0403_0201);
        assert_eq!(le64(&b, 1), 0x0807_0605_0403_0201);
    }

    #[test]
    fn fields_read_big_endian_at_their_offset() {
        let b = [0xffu8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        assert_eq!(be16(&b, 1), 0x0102);
        assert_eq!(be32(&b, 1), 0x0102_0304);
        assert_eq!(be64(&b, 1), 0x0102_0304_0506_0708);
    }
}
