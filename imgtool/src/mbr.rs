//! MBR codec: the four primary entries, the extended partition and its chain of EBRs
//! (logical partitions 5, 6, ...), read and written byte for byte.

use crate::bytes::le32;
use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::table::{Layout, MbrRole, Partition, TableKind};

/// Logical partitions (5, 6, ...) read from one EBR chain at most. Linux names at most
/// 60 logical partitions of a disk (minors of the extended range); more means a damaged
/// or hostile chain.
pub const MAX_LOGICAL: u32 = 60;

/// EBRs followed in one chain at most, empty ones included (a deleted logical partition
/// leaves an empty EBR linking to the next). Twice [`MAX_LOGICAL`]: room for every
/// logical partition and as many empty links, and the chain still ends after reading
/// 120 sectors whatever the disk holds.
pub const MAX_EBRS: usize = 2 * MAX_LOGICAL as usize;

/// An extended partition's `(start, size)` in sectors: where its EBR chain lives.
type Extended = (u64, u64);

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Parses a type string `0x83` into its byte.
pub fn type_byte(s: &str) -> Option<u8> {
    u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Reads the MBR in `lba0` and the EBR chain of `disk`: the four primary entries
/// (`primary_entries`), then the logical partitions of the extended one
/// (`read_ebr_chain`).
pub fn read(disk: &dyn BlockIo, lba0: &[u8]) -> Result<Option<Layout>> {
    let ss = disk.sector_size() as u64;
    let (mut parts, ext) = primary_entries(lba0);
    if let Some(ext) = ext {
        parts.extend(read_ebr_chain(disk, ss, ext)?);
    }
    Ok(Some(Layout {
        table: TableKind::Mbr,
        sector_size: ss as u32,
        disk_size: disk.size(),
        disk_guid: None,
        first_usable: None,
        entries: None,
        disk_signature: Some(format!("0x{:08x}", le32(lba0, 440))),
        grow: None,
        partitions: parts,
    }))
}

/// The non-empty entries of sector 0 (partitions 1..=4), and the extended partition's
/// `(start, size)` in sectors when there is one.
fn primary_entries(lba0: &[u8]) -> (Vec<Partition>, Option<Extended>) {
    let mut parts = vec![];
    let mut ext: Option<Extended> = None;
    for i in 0..4 {
        let e = &lba0[446 + i * 16..462 + i * 16];
        if e[4] == 0 || le32(e, 12) == 0 {
            continue;
        }
        let (start, size) = (le32(e, 8) as u64, le32(e, 12) as u64);
        let role = if is_extended(e[4]) {
            ext = Some((start, size));
            MbrRole::Extended
        } else {
            MbrRole::Primary
        };
        parts.push(Partition {
            number: i as u32 + 1,
            start,
            size,
            type_: format!("0x{:02x}", e[4]),
            guid: None,
            name: None,
            attributes: 0,
            role: Some(role),
            bootable: e[0] == 0x80,
            ebr: None,
            filesystem: None,
        });
    }
    (parts, ext)
}

/// The logical partitions (5, 6, …) of the EBR chain that starts at the extended
/// partition `(ext_start, ext_size)`. Bounded: a chain that loops, runs longer than
/// [`MAX_EBRS`], holds more than [`MAX_LOGICAL`] partitions or leaves the extended
/// partition is refused with the EBR's sector.
fn read_ebr_chain(
    disk: &dyn BlockIo,
    ss: u64,
    (ext_start, ext_size): Extended,
) -> Result<Vec<Partition>> {
    let mut parts = vec![];
    // Both are u32 on disk: the sums below cannot overflow a u64.
    let ext_end = ext_start + ext_size;
    let mut ebr = ext_start;
    let mut number = 5;
    let mut visited: Vec<u64> = vec![];
    let mut sector = vec![0u8; ss as usize];
    loop {
        // Every EBR visited counts, empty ones included: a self-linked or cyclic chain
        // of empty EBRs would otherwise never end.
        if visited.contains(&ebr) {
            return Err(Error::DamagedTable(format!(
                "EBR chain loops: the EBR at sector {} links back to sector {ebr}",
                visited.last().copied().unwrap_or(ebr)
            )));
        }
        if visited.len() >= MAX_EBRS {
            return Err(Error::DamagedTable(format!(
                "EBR chain longer than {MAX_EBRS} EBRs (the last read at sector {})",
                visited.last().copied().unwrap_or(ebr)
            )));
        }
        if number > MAX_LOGICAL + 4 {
            return Err(Error::DamagedTable(format!(
                "more than {MAX_LOGICAL} logical partitions (EBR at sector {ebr})"
            )));
        }
        if ebr < ext_start || ebr >= ext_end {
            return Err(Error::DamagedTable(format!(
                "EBR at sector {ebr} lies outside the extended partition \
                 (sectors {ext_start}..{ext_end})"
            )));
        }
        visited.push(ebr);
        let at = ebr
            .checked_mul(ss)
            .ok_or_else(|| Error::DamagedTable(format!("EBR at sector {ebr}: offset overflows")))?;
        disk.read_exact_at(&mut sector, at)
            .map_err(|err| Error::TableIo {
                what: format!("reading EBR at sector {ebr}"),
                err,
            })?;
        if sector[510] != 0x55 || sector[511] != 0xaa {
            return Err(Error::DamagedTable(format!(
                "EBR at sector {ebr} has no 0x55AA signature"
            )));
        }
        let e = &sector[446..462];
        if e[4] != 0 && le32(e, 12) != 0 {
            parts.push(Partition {
                number,
                start: ebr + le32(e, 8) as u64,
                size: le32(e, 12) as u64,
                type_: format!("0x{:02x}", e[4]),
                guid: None,
                name: None,
                attributes: 0,
                role: Some(MbrRole::Logical),
                bootable: e[0] == 0x80,
                ebr: Some(ebr),
                filesystem: None,
            });
            number += 1;
        }
        let link = &sector[462..478];
        if !is_extended(link[4]) || le32(link, 8) == 0 {
            return Ok(parts);
        }
        ebr = ext_start + le32(link, 8) as u64;
    }
}

/// CHS address for LBA with the conventional 255 heads / 63 sectors geometry.
fn chs(lba: u64) -> [u8; 3] {
    let (h, s) = (255u64, 63u64);
    let c = lba / (h * s);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / s) % h;
    let sec = lba % s + 1;
    [head as u8, (sec as u8) | (((c >> 8) as u8) << 6), c as u8]
}

fn entry(e: &mut [u8], bootable: bool, t: u8, start: u64, size: u64) -> Result<()> {
    let fit =
        |v: u64| u32::try_from(v).map_err(|_| unencodable(format!("cannot address sector {v}")));
    e[0] = if bootable { 0x80 } else { 0 };
    e[1..4].copy_from_slice(&chs(start));
    e[4] = t;
    e[5..8].copy_from_slice(&chs(start.saturating_add(size).saturating_sub(1)));
    e[8..12].copy_from_slice(&fit(start)?.to_le_bytes());
    e[12..16].copy_from_slice(&fit(size)?.to_le_bytes());
    Ok(())
}

/// Writes the MBR (with `boot_code`) and the EBR chain: the EBRs first
/// (`write_ebr_chain`), sector 0 (`sector0`) last.
pub fn write(disk: &dyn BlockIo, layout: &Layout, boot_code: &[u8]) -> Result<()> {
    let ss = disk.sector_size() as u64;
    let (lba0, ext) = sector0(layout, ss, boot_code)?;
    let mut logicals: Vec<&Partition> = layout
        .partitions
        .iter()
        .filter(|p| p.role == Some(MbrRole::Logical))
        .collect();
    logicals.sort_by_key(|p| p.number);
    if !logicals.is_empty() {
        let ext = ext.ok_or_else(|| {
            unencodable("logical partitions without an extended partition".into())
        })?;
        write_ebr_chain(disk, ss, ext, &logicals)?;
    }
    disk.write_all_at(&lba0, 0).map_err(|err| Error::TableIo {
        what: "MBR: writing sector 0".into(),
        err,
    })?;
    Ok(())
}

fn unencodable(msg: String) -> Error {
    Error::Unencodable {
        table: "MBR".into(),
        msg,
    }
}

/// The partition's type byte.
fn type_of(p: &Partition) -> Result<u8> {
    type_byte(&p.type_)
        .ok_or_else(|| unencodable(format!("partition {}: bad type {}", p.number, p.type_)))
}

/// Sector 0: boot code, disk signature, the primary and extended entries (numbers
/// 1..=4), `55 AA`. Returns it with the extended partition's `(start, size)`.
fn sector0(layout: &Layout, ss: u64, boot_code: &[u8]) -> Result<(Vec<u8>, Option<Extended>)> {
    let mut lba0 = vec![0u8; ss as usize];
    let bc = boot_code.len().min(440);
    lba0[..bc].copy_from_slice(&boot_code[..bc]);
    let sig = layout
        .disk_signature
        .as_deref()
        .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    lba0[440..444].copy_from_slice(&sig.to_le_bytes());
    let mut ext = None;
    for p in layout
        .partitions
        .iter()
        .filter(|p| p.role != Some(MbrRole::Logical))
    {
        if !(1..=4).contains(&p.number) {
            return Err(unencodable(format!(
                "primary partition number {} outside 1..=4",
                p.number
            )));
        }
        let i = p.number as usize - 1;
        entry(
            &mut lba0[446 + i * 16..462 + i * 16],
            p.bootable,
            type_of(p)?,
            p.start,
            p.size,
        )?;
        if p.is_extended() {
            ext = Some((p.start, p.size));
        }
    }
    lba0[510] = 0x55;
    lba0[511] = 0xaa;
    Ok((lba0, ext))
}

/// One EBR per logical partition (sorted by number), each inside the extended partition
/// `(ext_start, ext_size)`, linking to the next.
fn write_ebr_chain(
    disk: &dyn BlockIo,
    ss: u64,
    (ext_start, ext_size): Extended,
    logicals: &[&Partition],
) -> Result<()> {
    let ebrs: Vec<u64> = logicals
        .iter()
        .map(|p| p.ebr.unwrap_or(p.start.saturating_sub(1)))
        .collect();
    let ext_end = ext_start.saturating_add(ext_size);
    let end = |p: &Partition| p.start.saturating_add(p.size);
    for (i, p) in logicals.iter().enumerate() {
        let ebr = ebrs[i];
        if ebr < ext_start || end(p) > ext_end || p.start <= ebr {
            return Err(unencodable(format!(
                "logical partition {} (EBR {ebr}, {}..{}) outside the extended partition",
                p.number,
                p.start,
                end(p)
            )));
        }
        let mut s = vec![0u8; ss as usize];
        entry(
            &mut s[446..462],
            p.bootable,
            type_of(p)?,
            p.start - ebr,
            p.size,
        )?;
        if let Some(next) = logicals.get(i + 1) {
            let nebr = ebrs[i + 1];
            let (Some(link_start), Some(link_size)) =
                (nebr.checked_sub(ext_start), end(next).checked_sub(nebr))
            else {
                return Err(unencodable(format!(
                    "logical partition {} (EBR {nebr}) outside the extended partition",
                    next.number
                )));
            };
            entry(&mut s[462..478], false, 0x05, link_start, link_size)?;
        }
        s[510] = 0x55;
        s[511] = 0xaa;
        let at = ebr
            .checked_mul(ss)
            .ok_or_else(|| unencodable(format!("EBR at sector {ebr}: offset overflows")))?;
        disk.write_all_at(&s, at).map_err(|err| Error::TableIo {
            what: format!("MBR: writing EBR at sector {ebr}"),
            err,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::layout::read_layout;

    #[test]
    fn primary_extended_logical_round_trip() {
        let disk = MemDisk::new(64 << 20, 512);
        let p = |n, start, size, t: &str, role, ebr| Partition {
            bootable: n == 1,
            ..Partition::mbr(n, start, size, t, role, ebr)
        };
        let layout = Layout {
            table: TableKind::Mbr,
            sector_size: 512,
            disk_size: 64 << 20,
            disk_guid: None,
            first_usable: None,
            entries: None,
            disk_signature: Some("0x1234abcd".into()),
            grow: None,
            partitions: vec![
                p(1, 2048, 20480, "0x83", MbrRole::Primary, None),
                p(2, 22528, 108544, "0x05", MbrRole::Extended, None),
                p(5, 24576, 40960, "0x83", MbrRole::Logical, Some(22528)),
                p(6, 67584, 63488, "0x82", MbrRole::Logical, Some(65536)),
            ],
        };
        write(&disk, &layout, &[0xfa; 440]).unwrap();
        let back = read_layout(&disk).unwrap().unwrap();
        assert_eq!(back, layout);
    }

    /// One EBR: its sector, its logical entry (start offset, size) or none, the sector
    /// it links to or none.
    type Ebr = (u64, Option<(u32, u32)>, Option<u64>);

    /// A disk with one extended partition (sectors 2048..4096) and the given EBRs.
    fn ebr_disk(ebrs: &[Ebr]) -> MemDisk {
        let disk = MemDisk::new(4 << 20, 512);
        let mut lba0 = vec![0u8; 512];
        lba0[446 + 4] = 0x05;
        lba0[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        lba0[446 + 12..446 + 16].copy_from_slice(&2048u32.to_le_bytes());
        lba0[510] = 0x55;
        lba0[511] = 0xaa;
        disk.write_all_at(&lba0, 0).unwrap();
        for &(at, logical, link) in ebrs {
            let mut s = vec![0u8; 512];
            if let Some((start, size)) = logical {
                s[446 + 4] = 0x83;
                s[446 + 8..446 + 12].copy_from_slice(&start.to_le_bytes());
                s[446 + 12..446 + 16].copy_from_slice(&size.to_le_bytes());
            }
            if let Some(next) = link {
                s[462 + 4] = 0x05;
                s[462 + 8..462 + 12].copy_from_slice(&((next - 2048) as u32).to_le_bytes());
                s[462 + 12..462 + 16].copy_from_slice(&1u32.to_le_bytes());
            }
            s[510] = 0x55;
            s[511] = 0xaa;
            disk.write_all_at(&s, at * 512).unwrap();
        }
        disk
    }

    #[test]
    fn self_linked_empty_ebr_is_refused_not_followed_forever() {
        // D5: the second EBR is empty and links to itself. Counting only non-empty EBRs,
        // the reader looped forever (restore --dry-run, capture, diff and the agent hung).
        let disk = ebr_disk(&[(2048, Some((1, 100)), Some(2200)), (2200, None, Some(2200))]);
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains("loops") && e.contains("sector 2200"), "{e}");
    }

    #[test]
    fn cycle_of_empty_ebrs_is_refused() {
        let disk = ebr_disk(&[
            (2048, None, Some(2100)),
            (2100, None, Some(2200)),
            (2200, None, Some(2100)),
        ]);
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains("EBR chain loops"), "{e}");
        assert!(e.contains("sector 2200 links back to sector 2100"), "{e}");
    }

    #[test]
    fn long_chain_of_empty_ebrs_is_bounded() {
        // Distinct EBRs, all empty: no revisit, but the chain is cut at MAX_EBRS.
        let ebrs: Vec<_> = (0..200u64)
            .map(|i| (2048 + i * 2, None, Some(2048 + (i + 1) * 2)))
            .collect();
        let disk = ebr_disk(&ebrs);
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains(&format!("longer than {MAX_EBRS} EBRs")), "{e}");
    }

    #[test]
    fn empty_ebr_between_logicals_still_reads() {
        // A deleted logical partition leaves an empty EBR: the chain goes on past it.
        let disk = ebr_disk(&[
            (2048, Some((1, 100)), Some(2200)),
            (2200, None, Some(2400)),
            (2400, Some((1, 100)), None),
        ]);
        let l = read_layout(&disk).unwrap().unwrap();
        let logical: Vec<_> = l.partitions.iter().filter(|p| p.number >= 5).collect();
        assert_eq!(logical.len(), 2);
        assert_eq!((logical[0].number, logical[0].start), (5, 2049));
        assert_eq!((logical[1].number, logical[1].start), (6, 2401));
    }

    /// An extended partition at 2048 holding `n` logical partitions of 63 sectors, each
    /// after its EBR, 64 sectors apart.
    fn logicals_layout(n: u32) -> Layout {
        let p = Partition::mbr;
        let mut partitions = vec![p(1, 2048, 64 * n as u64, "0x05", MbrRole::Extended, None)];
        for k in 0..n as u64 {
            let ebr = 2048 + 64 * k;
            partitions.push(p(
                5 + k as u32,
                ebr + 1,
                63,
                "0x83",
                MbrRole::Logical,
                Some(ebr),
            ));
        }
        Layout {
            table: TableKind::Mbr,
            sector_size: 512,
            disk_size: 8 << 20,
            disk_guid: None,
            first_usable: None,
            entries: None,
            disk_signature: Some("0x0000abcd".into()),
            grow: None,
            partitions,
        }
    }

    #[test]
    fn validation_allows_exactly_the_logicals_the_reader_reads() {
        // Validation allowed 64 logical partitions while this reader stops at 60: restore
        // wrote a 61..64-logical layout, and every later read of the disk refused it.
        let max = logicals_layout(MAX_LOGICAL);
        max.validate().unwrap();
        let disk = MemDisk::new(8 << 20, 512);
        write(&disk, &max, &[0; 440]).unwrap();
        assert_eq!(read_layout(&disk).unwrap().unwrap(), max);

        let over = logicals_layout(MAX_LOGICAL + 1);
        let e = over.validate().unwrap_err().to_string();
        assert!(e.contains("partition 65") && e.contains("5..=64"), "{e}");
        // And the reader indeed refuses what validation now refuses.
        let disk = MemDisk::new(8 << 20, 512);
        write(&disk, &over, &[0; 440]).unwrap();
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains("more than 60 logical partitions"), "{e}");
    }
}
