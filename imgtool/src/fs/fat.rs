//! FAT12/16/32: the reserved area, the FATs, the FAT12/16 root directory and every
//! allocated cluster (non-zero FAT entry other than "bad") are in use.

use super::{Fill, FsInfo, PartView, UsedRanges};
use crate::bytes::{le16, le32};
use std::io;

/// Bytes of a FAT16/32 table held in memory at once: the table is read a window at a
/// time, so a FAT32 table of up to 1 GiB (2^28 clusters) never sits in memory whole.
pub const FAT_WINDOW: u64 = 1 << 20;

/// Probes for FAT; `None` when the boot sector is not a FAT BPB.
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    if part.size < 4096 {
        return Ok(None);
    }
    let mut bs = vec![0u8; 512];
    part.read(&mut bs, 0)?;
    let bps = le16(&bs, 11) as u64;
    let spc = bs[13] as u64;
    let reserved = le16(&bs, 14) as u64;
    let nfats = bs[16] as u64;
    let root_entries = le16(&bs, 17) as u64;
    let total16 = le16(&bs, 19) as u64;
    let fatsz16 = le16(&bs, 22) as u64;
    let total32 = le32(&bs, 32) as u64;
    let fatsz32 = le32(&bs, 36) as u64;
    let sig_ok = bs[510] == 0x55 && bs[511] == 0xaa;
    let jump_ok = bs[0] == 0xeb || bs[0] == 0xe9;
    if !sig_ok
        || !jump_ok
        || !(512..=4096).contains(&bps)
        || !bps.is_power_of_two()
        || spc == 0
        || !spc.is_power_of_two()
        || reserved == 0
        || nfats == 0
    {
        return Ok(None);
    }
    let fat_size = if fatsz16 != 0 { fatsz16 } else { fatsz32 };
    let total = if total16 != 0 { total16 } else { total32 };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + nfats * fat_size + root_sectors;
    if fat_size == 0 || total <= data_start || total * bps > part.size {
        return Ok(None);
    }
    let clusters = (total - data_start) / spc;
    let (kind, bits) = if clusters < 4085 {
        ("vfat", 12)
    } else if clusters < 65525 {
        ("vfat", 16)
    } else {
        ("vfat", 32)
    };
    let (id_off, label_off) = if bits == 32 { (67, 71) } else { (39, 43) };
    let bad = match bits {
        12 => 0xff7,
        16 => 0xfff7,
        _ => 0x0fff_fff7,
    };
    let mut used = UsedRanges::default();
    used.push(0, data_start * bps);
    let csize = spc * bps;
    // Only the entries of existing clusters (2..clusters+2) are read, and only from the
    // first FAT: `clusters` is bounded by the partition size checked above.
    let fat_bytes = fat_size * bps;
    let need = ((clusters + 2) * bits).div_ceil(8).min(fat_bytes);
    let fat_at = reserved * bps;
    let mut on_cluster = |c: u64, v: u32| {
        if (2..clusters + 2).contains(&c) && v != 0 && v != bad {
            used.push(data_start * bps + (c - 2) * csize, csize);
        }
    };
    if bits == 12 {
        // At most 4085 clusters: about 6 KiB, read whole (entries straddle bytes).
        let mut fat = vec![0u8; need as usize];
        part.read(&mut fat, fat_at)?;
        for c in 2..clusters + 2 {
            let o = (c * 3 / 2) as usize;
            if o + 1 >= fat.len() {
                break;
            }
            let v = le16(&fat, o) as u32;
            on_cluster(
                c,
                if c.is_multiple_of(2) {
                    v & 0xfff
                } else {
                    v >> 4
                },
            );
        }
    } else {
        // FAT16/32 entries are 2 or 4 bytes, aligned: read the table a window at a time.
        let width = bits / 8;
        let mut window = vec![0u8; FAT_WINDOW.min(need) as usize];
        let mut done = 0u64;
        while done + width <= need {
            let n = (need - done).min(window.len() as u64) as usize;
            let n = n - n % width as usize;
            part.read(&mut window[..n], fat_at + done)?;
            for (i, e) in window[..n].chunks_exact(width as usize).enumerate() {
                let c = done / width + i as u64;
                let v = if width == 2 {
                    le16(e, 0) as u32
                } else {
                    le32(e, 0) & 0x0fff_ffff
                };
                on_cluster(c, v);
            }
            done += n as u64;
        }
    }
    let id = le32(&bs, id_off);
    let label = super::label_string(&bs[label_off..label_off + 11]).filter(|l| l != "NO NAME");
    Ok(Some(FsInfo {
        kind: kind.into(),
        uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
        label,
        fs_size: total * bps,
        used: used.into_vec(),
        fill: Fill::Keep,
    }))
}
