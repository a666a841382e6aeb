//! CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), the checksum of XFS v5 and
//! btrfs metadata. Table-driven, the table built at compile time; no crate in the
//! workspace has it (`crc32fast` is the IEEE polynomial).

const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Continues a raw CRC-32C register `crc` over `data` (no pre- or post-inversion).
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The standard CRC-32C of `data` (initial `!0`, final inversion).
pub fn checksum(data: &[u8]) -> u32 {
    !update(!0, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_values_are_the_standards() {
        // RFC 3720 (iSCSI) B.4 and the usual "123456789" check value.
        assert_eq!(super::checksum(b"123456789"), 0xE306_9283);
        assert_eq!(super::checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(super::checksum(&[0xffu8; 32]), 0x62A8_AB43);
    }
}
