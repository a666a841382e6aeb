//! Hex-IP file names, as pxelinux and GRUB look them up: a client at 172.20.0.5 tries
//! `AC140005`, `AC14000`, `AC1400`, … `A`. A name of k hex digits therefore matches the
//! aligned block of 2^(32-4k) addresses that share those digits. [`hex_cover`] finds the
//! fewest such names that match exactly a range of addresses, never one outside it. The
//! name of one address and the prefixes a client tries are the protocol's
//! (`netboot_proto::hex`), as is the `01-<mac>` file name (`netboot_proto::net::mac_file`).

use netboot_proto::hex::hex_prefixes;
/// Re-exported for the tree writer.
pub use netboot_proto::net::mac_file;
use std::net::Ipv4Addr;

/// The minimal set of hex prefixes (1 to 8 digits) whose address blocks are exactly
/// `first..=last`. Greedy from the low end: at each address, the largest nibble-aligned
/// block that starts there and ends inside the range. Because nibble blocks nest, this is
/// optimal (any cover must contain a block starting at `first`, and the largest is never
/// worse).
pub fn hex_cover(first: u32, last: u32) -> Vec<String> {
    let mut out = vec![];
    if first > last {
        return out;
    }
    let mut cur = first as u64;
    let end = last as u64;
    while cur <= end {
        // digits = 1 covers 2^28 addresses; 8 covers one.
        let mut digits = 8;
        while digits > 1 {
            let size = 1u64 << (32 - 4 * (digits - 1));
            if cur.is_multiple_of(size) && cur + size - 1 <= end {
                digits -= 1;
            } else {
                break;
            }
        }
        let size = 1u64 << (32 - 4 * digits);
        out.push(format!("{cur:08X}")[..digits].to_string());
        cur += size;
    }
    out
}

/// The files pxelinux tries for a client, in order (after the UUID file, which depends on
/// the firmware): `01-<mac>` when the MAC is known, the 8 to 1 digit hex prefixes of the
/// address when known, then `default`. Paths are relative to `pxelinux.cfg/`.
pub fn pxelinux_candidates(mac: Option<[u8; 6]>, ip: Option<Ipv4Addr>) -> Vec<String> {
    let mut v = vec![];
    if let Some(m) = mac {
        v.push(mac_file(m));
    }
    if let Some(ip) = ip {
        v.extend(hex_prefixes(ip));
    }
    v.push("default".to_string());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(prefix: &str, ip: u32) -> bool {
        format!("{ip:08X}").starts_with(prefix)
    }

    /// Checks exactness (every address in range matched by exactly one name, no address
    /// outside matched) and minimality (against a brute-force count for small cases).
    fn check(first: u32, last: u32) {
        let cover = hex_cover(first, last);
        assert!(!cover.is_empty());
        // Exact: probe every address in range when small, else range ends and neighbours.
        let span = last as u64 - first as u64;
        let probes: Vec<u32> = if span <= 4096 {
            (first..=last).collect()
        } else {
            vec![first, first + 1, last - 1, last, first + (span / 2) as u32]
        };
        for ip in probes {
            let n = cover.iter().filter(|p| matches(p, ip)).count();
            assert_eq!(n, 1, "{ip:08X} matched {n} times by {cover:?}");
        }
        for outside in [first.checked_sub(1), last.checked_add(1)]
            .into_iter()
            .flatten()
        {
            assert!(
                !cover.iter().any(|p| matches(p, outside)),
                "{outside:08X} outside {first:08X}-{last:08X} matched by {cover:?}"
            );
        }
        // Each name's block lies inside the range (stronger than probing).
        for p in &cover {
            let k = p.len() as u32;
            let lo = u32::from_str_radix(&format!("{p:0<8}"), 16).unwrap() as u64;
            let hi = lo + (1u64 << (32 - 4 * k)) - 1;
            assert!(
                lo >= first as u64 && hi <= last as u64,
                "{p} leaves the range"
            );
        }
        if span <= 4096 {
            assert_eq!(cover.len(), brute_min(first, last), "{cover:?} not minimal");
        }
    }

    /// Minimal cover size by dynamic programming over all aligned blocks.
    fn brute_min(first: u32, last: u32) -> usize {
        let n = (last - first + 1) as usize;
        let mut best = vec![usize::MAX; n + 1];
        best[0] = 0;
        for i in 0..n {
            if best[i] == usize::MAX {
                continue;
            }
            let a = first as u64 + i as u64;
            for k in 1..=8u32 {
                let size = 1u64 << (32 - 4 * k);
                if a.is_multiple_of(size) && a + size - 1 <= last as u64 {
                    let j = i + size as usize;
                    best[j] = best[j].min(best[i] + 1);
                }
            }
        }
        best[n]
    }

    #[test]
    fn seed_example_and_documented_shapes() {
        // CMU's manual: AC14000 covers 172.20.0.0–15, a /28.
        assert_eq!(hex_cover(0xAC140000, 0xAC14000F), ["AC14000"]);
        assert_eq!(hex_cover(0xAC140000, 0xAC1400FF), ["AC1400"]); // /24
        assert_eq!(hex_cover(0xAC140000, 0xAC14001F), ["AC14000", "AC14001"]); // /27
        assert_eq!(
            hex_cover(0xAC140004, 0xAC140007),
            ["AC140004", "AC140005", "AC140006", "AC140007"]
        ); // /30
    }

    #[test]
    fn every_prefix_length_8_to_32_is_exact_and_minimal() {
        let base = 0xAC14_5A3C_u32; // arbitrary address; each network is base masked
        for p in 8..=32u32 {
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            let first = base & mask;
            let last = first | !mask;
            check(first, last);
            let cover = hex_cover(first, last);
            let digits = p.div_ceil(4) as usize;
            assert_eq!(cover.len(), 1 << (digits as u32 * 4 - p), "/{p}");
            assert!(cover.iter().all(|c| c.len() == digits));
        }
    }

    #[test]
    fn non_aligned_ranges_are_exact_and_minimal() {
        let mut x = 0x9E37_79B9u32;
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let first = x & 0xFFFF_F000 | (x % 997);
            let len = (x >> 7) % 3000;
            check(first, first.saturating_add(len));
        }
        check(0, 0);
        check(0xFFFF_FFF0, 0xFFFF_FFFF);
        check(0x0A00_0001, 0x0A00_00FE);
    }

    #[test]
    fn candidates_follow_pxelinux_order() {
        let c = pxelinux_candidates(
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            Some(Ipv4Addr::new(172, 20, 0, 5)),
        );
        assert_eq!(c[0], "01-52-54-00-12-34-56");
        assert_eq!(&c[1..4], ["AC140005", "AC14000", "AC1400"]);
        assert_eq!(c[8], "A");
        assert_eq!(c[9], "default");
    }
}
