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
    let Some((g, bs)) = Geometry::read(part)? else {
        return Ok(None);
    };
    let (id_off, label_off) = if g.bits == 32 { (67, 71) } else { (39, 43) };
    let bad = match g.bits {
        12 => 0xff7,
        16 => 0xfff7,
        _ => 0x0fff_fff7,
    };
    let mut used = UsedRanges::default();
    used.push(0, g.data_start * g.bps);
    let csize = g.spc * g.bps;
    let mut on_cluster = |c: u64, v: u32| {
        if (2..g.clusters + 2).contains(&c) && v != 0 && v != bad {
            used.push(g.data_start * g.bps + (c - 2) * csize, csize);
        }
    };
    if g.bits == 12 {
        read_fat12(part, &g, &mut on_cluster)?;
    } else {
        read_fat_windowed(part, &g, &mut on_cluster)?;
    }
    let id = le32(&bs, id_off);
    let label = super::label_string(&bs[label_off..label_off + 11]).filter(|l| l != "NO NAME");
    Ok(Some(FsInfo {
        kind: "vfat".into(),
        uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
        label,
        fs_size: g.total * g.bps,
        used: used.into_vec(),
        fill: Fill::Keep,
    }))
}

/// A FAT file system's layout from its boot sector (BPB), in sectors of `bps` bytes.
struct Geometry {
    bps: u64,
    /// Sectors per cluster.
    spc: u64,
    /// Reserved sectors: the first FAT starts after them.
    reserved: u64,
    /// Sectors of one FAT.
    fat_size: u64,
    /// Sectors of the file system.
    total: u64,
    /// First sector of cluster 2 (after the FATs and the FAT12/16 root directory).
    data_start: u64,
    clusters: u64,
    /// FAT entry width: 12, 16 or 32 bits (from the cluster count, as the spec says).
    bits: u64,
}

impl Geometry {
    /// Reads the boot sector of `part` and its BPB, with the boot sector's bytes; `None`
    /// when it is not a FAT boot sector or describes more than the partition.
    fn read(part: &PartView) -> io::Result<Option<(Geometry, Vec<u8>)>> {
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
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        let g = Geometry {
            bps,
            spc,
            reserved,
            fat_size,
            total,
            data_start,
            clusters,
            bits,
        };
        Ok(Some((g, bs)))
    }

    /// Bytes of the first FAT that hold the entries of existing clusters (2..clusters+2):
    /// `clusters` is bounded by the partition size checked in [`Geometry::read`].
    fn fat_bytes_needed(&self) -> u64 {
        ((self.clusters + 2) * self.bits)
            .div_ceil(8)
            .min(self.fat_size * self.bps)
    }
}

/// FAT12: at most 4085 clusters, about 6 KiB, read whole (entries straddle bytes).
/// Calls `on_cluster` with each cluster's entry.
fn read_fat12(
    part: &PartView,
    g: &Geometry,
    on_cluster: &mut impl FnMut(u64, u32),
) -> io::Result<()> {
    let mut fat = vec![0u8; g.fat_bytes_needed() as usize];
    part.read(&mut fat, g.reserved * g.bps)?;
    for c in 2..g.clusters + 2 {
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
    Ok(())
}

/// FAT16/32: entries are 2 or 4 bytes, aligned; the table is read [`FAT_WINDOW`] bytes
/// at a time. Calls `on_cluster` with each entry (the caller ignores those of clusters
/// that do not exist).
fn read_fat_windowed(
    part: &PartView,
    g: &Geometry,
    on_cluster: &mut impl FnMut(u64, u32),
) -> io::Result<()> {
    let need = g.fat_bytes_needed();
    let fat_at = g.reserved * g.bps;
    let width = g.bits / 8;
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
    Ok(())
}
