//! GPT codec: reads the primary header (or the backup when the primary is damaged), checks
//! both CRCs, and writes protective MBR + primary + backup at the real end of the disk.
//!
//! Written here rather than with the `gpt` crate because restore must reproduce every
//! captured field byte for byte (disk and partition GUIDs, attributes, names, the entry
//! count, the first usable LBA) on files, block devices and 4 KiB-sector disks alike, and
//! the format is small enough to audit in one screen (UEFI 2.10, section 5.3).

use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::layout::{Layout, Partition, TableKind};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const ENTRY_SIZE: u64 = 128;

/// Sectors holding `entries` partition entries.
pub fn entry_sectors(entries: u32, sector_size: u64) -> u64 {
    (entries as u64 * ENTRY_SIZE).div_ceil(sector_size)
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Formats a GPT mixed-endian GUID as `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
pub fn guid_to_string(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// Parses a GUID string into its mixed-endian on-disk form.
pub fn guid_from_str(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let raw = hex::decode(hex).ok()?;
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    out[8..16].copy_from_slice(&raw[8..16]);
    Some(out)
}

fn read_header(disk: &dyn BlockIo, lba: u64) -> Option<(Vec<u8>, Vec<u8>)> {
    let ss = disk.sector_size() as u64;
    let mut h = vec![0u8; ss as usize];
    disk.read_exact_at(&mut h, lba * ss).ok()?;
    if &h[0..8] != SIGNATURE {
        return None;
    }
    let hsize = le32(&h, 12) as usize;
    if !(92..=ss as usize).contains(&hsize) {
        return None;
    }
    let want = le32(&h, 16);
    let mut hc = h[..hsize].to_vec();
    hc[16..20].fill(0);
    if crc32fast::hash(&hc) != want || le64(&h, 24) != lba {
        return None;
    }
    let n = le32(&h, 80);
    let esize = le32(&h, 84) as u64;
    if esize < ENTRY_SIZE || n == 0 || n > 4096 {
        return None;
    }
    let mut entries = vec![0u8; (n as u64 * esize) as usize];
    disk.read_exact_at(&mut entries, le64(&h, 72) * ss).ok()?;
    if crc32fast::hash(&entries) != le32(&h, 88) {
        return None;
    }
    Some((h, entries))
}

/// Reads the GPT of `disk`; `Ok(None)` when neither header is valid.
pub fn read(disk: &dyn BlockIo) -> Result<Option<Layout>> {
    let ss = disk.sector_size() as u64;
    let last = (disk.size() / ss).saturating_sub(1);
    let Some((h, entries)) = read_header(disk, 1).or_else(|| read_header(disk, last)) else {
        return Ok(None);
    };
    let n = le32(&h, 80);
    let esize = le32(&h, 84) as usize;
    let mut parts = vec![];
    for i in 0..n as usize {
        let e = &entries[i * esize..i * esize + ENTRY_SIZE as usize];
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let first = le64(e, 32);
        let last_lba = le64(e, 40);
        if last_lba < first {
            return Err(Error::Invalid(format!(
                "GPT entry {} ends ({last_lba}) before it starts ({first})",
                i + 1
            )));
        }
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|c| *c != 0)
            .collect();
        parts.push(Partition {
            number: i as u32 + 1,
            start: first,
            size: last_lba - first + 1,
            type_: guid_to_string(&e[0..16]),
            guid: Some(guid_to_string(&e[16..32])),
            name: Some(String::from_utf16_lossy(&name)),
            attributes: le64(e, 48),
            role: None,
            bootable: false,
            ebr: None,
            filesystem: None,
        });
    }
    Ok(Some(Layout {
        table: TableKind::Gpt,
        sector_size: ss as u32,
        disk_size: disk.size(),
        disk_guid: Some(guid_to_string(&h[56..72])),
        first_usable: Some(le64(&h, 40)),
        entries: Some(n),
        disk_signature: None,
        grow: None,
        partitions: parts,
    }))
}

/// The fields of one GPT header copy.
struct Header<'a> {
    my: u64,
    alt: u64,
    first: u64,
    last: u64,
    guid: &'a [u8; 16],
    entries_lba: u64,
    n: u32,
    entries_crc: u32,
}

fn header(ss: u64, f: Header) -> Vec<u8> {
    let Header {
        my,
        alt,
        first,
        last,
        guid,
        entries_lba,
        n,
        entries_crc,
    } = f;
    let mut h = vec![0u8; ss as usize];
    h[0..8].copy_from_slice(SIGNATURE);
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my.to_le_bytes());
    h[32..40].copy_from_slice(&alt.to_le_bytes());
    h[40..48].copy_from_slice(&first.to_le_bytes());
    h[48..56].copy_from_slice(&last.to_le_bytes());
    h[56..72].copy_from_slice(guid);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&n.to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Writes protective MBR, primary GPT, and backup GPT at the end of `disk`.
pub fn write(disk: &dyn BlockIo, layout: &Layout, boot_code: &[u8]) -> Result<()> {
    let ss = disk.sector_size() as u64;
    let sectors = disk.size() / ss;
    let n = layout.entries.unwrap_or(128);
    let es = entry_sectors(n, ss);
    let first_usable = layout.first_usable.unwrap_or(2 + es).max(2 + es);
    let last_usable = sectors - 2 - es;
    let bad = |m: String| Error::Invalid(format!("GPT for {} sectors: {m}", sectors));
    let mut entries = vec![0u8; (es * ss) as usize];
    for p in &layout.partitions {
        if p.number == 0 || p.number > n {
            return Err(bad(format!(
                "partition number {} outside 1..={n}",
                p.number
            )));
        }
        if p.start < first_usable || p.end() - 1 > last_usable {
            return Err(bad(format!(
                "partition {} ({}..{}) outside usable {first_usable}..{last_usable}",
                p.number,
                p.start,
                p.end() - 1
            )));
        }
        let e = &mut entries[(p.number as usize - 1) * 128..p.number as usize * 128];
        let t = guid_from_str(&p.type_)
            .ok_or_else(|| bad(format!("partition {}: bad type GUID {}", p.number, p.type_)))?;
        let g = match &p.guid {
            Some(g) => guid_from_str(g)
                .ok_or_else(|| bad(format!("partition {}: bad GUID {g}", p.number)))?,
            None => [0u8; 16],
        };
        e[0..16].copy_from_slice(&t);
        e[16..32].copy_from_slice(&g);
        e[32..40].copy_from_slice(&p.start.to_le_bytes());
        e[40..48].copy_from_slice(&(p.end() - 1).to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        if let Some(name) = &p.name {
            for (i, c) in name.encode_utf16().take(36).enumerate() {
                e[56 + i * 2..58 + i * 2].copy_from_slice(&c.to_le_bytes());
            }
        }
    }
    let table_bytes = &entries[..(n as u64 * ENTRY_SIZE) as usize];
    let ecrc = crc32fast::hash(table_bytes);
    let guid = layout
        .disk_guid
        .as_deref()
        .and_then(guid_from_str)
        .unwrap_or([0u8; 16]);
    let last = sectors - 1;
    let copy = |my, alt, entries_lba| Header {
        my,
        alt,
        first: first_usable,
        last: last_usable,
        guid: &guid,
        entries_lba,
        n,
        entries_crc: ecrc,
    };
    let primary = header(ss, copy(1, last, 2));
    let backup = header(ss, copy(last, 1, last - es));

    let mut mbr = vec![0u8; ss as usize];
    let bc = boot_code.len().min(440);
    mbr[..bc].copy_from_slice(&boot_code[..bc]);
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&((sectors - 1).min(u32::MAX as u64) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let w = |buf: &[u8], lba: u64, what: &str| {
        disk.write_all_at(buf, lba * ss)
            .map_err(|e| Error::Invalid(format!("writing {what} at sector {lba}: {e}")))
    };
    // Backup first, primary last: a half-written table is never the one firmware trusts.
    w(&entries, last - es, "backup GPT entries")?;
    w(&backup, last, "backup GPT header")?;
    w(&entries, 2, "GPT entries")?;
    w(&primary, 1, "GPT header")?;
    w(&mbr, 0, "protective MBR")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::layout::read_layout;

    #[test]
    fn guid_round_trip() {
        let s = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
        let b = guid_from_str(s).unwrap();
        assert_eq!(b[0], 0x28);
        assert_eq!(guid_to_string(&b), s);
    }

    #[test]
    fn write_then_read_back_and_backup_survives() {
        for ss in [512u32, 4096] {
            let disk = MemDisk::new(32 << 20, ss);
            let s = ss as u64;
            let layout = Layout {
                table: TableKind::Gpt,
                sector_size: ss,
                disk_size: 32 << 20,
                disk_guid: Some("11111111-2222-3333-4444-555555555555".into()),
                first_usable: Some(2 + entry_sectors(128, s)),
                entries: Some(128),
                disk_signature: None,
                grow: None,
                partitions: vec![Partition {
                    number: 2,
                    start: (1 << 20) / s,
                    size: (8 << 20) / s,
                    type_: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
                    guid: Some("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE".into()),
                    name: Some("root fs".into()),
                    attributes: 1 << 60,
                    role: None,
                    bootable: false,
                    ebr: None,
                    filesystem: None,
                }],
            };
            write(&disk, &layout, &[0x90; 440]).unwrap();
            let back = read_layout(&disk).unwrap().unwrap();
            assert_eq!(back, layout);
            // Damage the primary header: the backup still yields the same layout.
            disk.write_all_at(&[0u8; 8], s).unwrap();
            let back = read_layout(&disk).unwrap().unwrap();
            assert_eq!(back.partitions, layout.partitions);
        }
    }
}
