//! GPT codec: reads the primary header (or the backup when the primary is damaged), checks
//! both CRCs, and writes protective MBR + primary + backup at the real end of the disk.
//!
//! Written here rather than with the `gpt` crate because restore must reproduce every
//! captured field byte for byte (disk and partition GUIDs, attributes, names, the entry
//! count, the first usable LBA) on files, block devices and 4 KiB-sector disks alike, and
//! the format is small enough to audit in one screen (UEFI 2.10, section 5.3).

use crate::bytes::{le16, le32, le64};
use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::table::{Layout, Partition, TableKind};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const ENTRY_SIZE: u64 = 128;

/// Sectors holding `entries` partition entries.
pub fn entry_sectors(entries: u32, sector_size: u64) -> u64 {
    (entries as u64 * ENTRY_SIZE).div_ceil(sector_size)
}

/// Where a GPT of `entries` entries puts its structures, in sectors: the protective MBR,
/// the primary header and its entry array at the start; the backup entry array and
/// backup header at the end; the usable area in between. The one place this arithmetic
/// lives (layout validation, planning, the writer and the kept-table ranges use it).
#[derive(Debug, Clone, Copy)]
pub struct GptGeometry {
    entries: u32,
    sector_size: u64,
}

impl GptGeometry {
    pub fn new(entries: u32, sector_size: u64) -> Self {
        GptGeometry {
            entries,
            sector_size,
        }
    }

    /// Sectors of one entry array.
    pub fn entry_sectors(&self) -> u64 {
        entry_sectors(self.entries, self.sector_size)
    }

    /// Sectors `0..head_sectors()` hold the protective MBR, the primary header and the
    /// primary entries: the lowest possible first usable sector.
    pub fn head_sectors(&self) -> u64 {
        2 + self.entry_sectors()
    }

    /// Sectors the backup entries and the backup header take at the end of the disk.
    pub fn tail_sectors(&self) -> u64 {
        1 + self.entry_sectors()
    }

    /// The last usable sector (inclusive) of a disk of `sectors` sectors; `None` when the
    /// backup structures and sector 0 alone do not fit.
    pub fn last_usable(&self, sectors: u64) -> Option<u64> {
        sectors.checked_sub(self.tail_sectors() + 1)
    }
}

/// Formats a GPT mixed-endian GUID as `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
pub fn guid_to_string(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(b, 0),
        le16(b, 4),
        le16(b, 6),
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

/// Partition entries in one table at most: the shared limit ([`crate::table::MAX_GPT_ENTRIES`];
/// with [`MAX_ENTRY_SIZE`] it bounds the entry array read into memory to 4 MiB).
pub use crate::table::MAX_GPT_ENTRIES as MAX_ENTRIES;

/// Largest partition entry size accepted. UEFI requires 128 × 2^n bytes; every known
/// tool writes 128 (Linux refuses anything else) and this reader only uses the first 128.
pub const MAX_ENTRY_SIZE: u32 = 1024;

/// A header that carries the signature and a valid CRC, with its entry array.
type HeaderCopy = (Vec<u8>, Vec<u8>);

/// Reads the header at `lba`: `Ok(None)` when it is absent or fails its CRC (not a
/// header, or a torn write: the other copy may be good), `Err(why)` when its CRC is valid
/// but its contents are impossible (damaged by software, or hostile).
fn read_header(disk: &dyn BlockIo, lba: u64) -> std::result::Result<Option<HeaderCopy>, String> {
    let ss = disk.sector_size() as u64;
    let sectors = disk.size() / ss;
    let mut h = vec![0u8; ss as usize];
    let Some(at) = lba.checked_mul(ss) else {
        return Ok(None);
    };
    if disk.read_exact_at(&mut h, at).is_err() || h.len() < 92 || &h[0..8] != SIGNATURE {
        return Ok(None);
    }
    let hsize = le32(&h, 12) as usize;
    if !(92..=ss as usize).contains(&hsize) {
        return Ok(None);
    }
    let want = le32(&h, 16);
    let mut hc = h[..hsize].to_vec();
    hc[16..20].fill(0);
    if crc32fast::hash(&hc) != want {
        return Ok(None);
    }
    let my = le64(&h, 24);
    if my != lba {
        return Err(format!("it says it lies at LBA {my}"));
    }
    let (first, last) = (le64(&h, 40), le64(&h, 48));
    if first > last || last >= sectors {
        return Err(format!(
            "usable sectors {first}..={last} do not fit the disk ({sectors} sectors)"
        ));
    }
    let n = le32(&h, 80);
    let esize = le32(&h, 84);
    if n == 0 || n > MAX_ENTRIES {
        return Err(format!(
            "{n} partition entries (at most {MAX_ENTRIES} accepted)"
        ));
    }
    if esize < ENTRY_SIZE as u32 || esize > MAX_ENTRY_SIZE || !esize.is_power_of_two() {
        return Err(format!(
            "partition entry size {esize} (must be 128 × 2^n, at most {MAX_ENTRY_SIZE})"
        ));
    }
    // Both bounded above: at most 4 MiB.
    let bytes = n as u64 * esize as u64;
    let entries_lba = le64(&h, 72);
    let entries_end = entries_lba
        .checked_mul(ss)
        .and_then(|o| o.checked_add(bytes))
        .filter(|e| *e <= disk.size());
    let Some(_) = entries_end else {
        return Err(format!(
            "its entry array at LBA {entries_lba} ({bytes} bytes) lies past the disk end"
        ));
    };
    let mut entries = vec![0u8; bytes as usize];
    disk.read_exact_at(&mut entries, entries_lba * ss)
        .map_err(|e| format!("reading its entry array at LBA {entries_lba}: {e}"))?;
    if crc32fast::hash(&entries) != le32(&h, 88) {
        return Ok(None);
    }
    Ok(Some((h, entries)))
}

/// Reads the GPT of `disk`; `Ok(None)` when neither header is valid, an error when a
/// header with a valid CRC holds impossible values and the other copy does not help.
pub fn read(disk: &dyn BlockIo) -> Result<Option<Layout>> {
    let ss = disk.sector_size() as u64;
    let sectors = disk.size() / ss;
    let last = sectors.saturating_sub(1);
    let primary = read_header(disk, 1);
    let found = match primary {
        Ok(Some(p)) => Some(p),
        _ => match read_header(disk, last) {
            Ok(Some(b)) => Some(b),
            backup => {
                let mut why = vec![];
                if let Err(e) = &primary {
                    why.push(format!("primary GPT header (LBA 1): {e}"));
                }
                if let Err(e) = &backup {
                    why.push(format!("backup GPT header (LBA {last}): {e}"));
                }
                if !why.is_empty() {
                    return Err(Error::DamagedTable(why.join("; ")));
                }
                None
            }
        },
    };
    let Some((h, entries)) = found else {
        return Ok(None);
    };
    let n = le32(&h, 80);
    let esize = le32(&h, 84) as usize;
    let (first_usable, last_usable) = (le64(&h, 40), le64(&h, 48));
    let mut parts = vec![];
    for (i, e) in entries.chunks_exact(esize).enumerate() {
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let first = le64(e, 32);
        let last_lba = le64(e, 40);
        if last_lba < first {
            return Err(Error::DamagedTable(format!(
                "GPT entry {} ends ({last_lba}) before it starts ({first})",
                i + 1
            )));
        }
        if first < first_usable || last_lba > last_usable {
            return Err(Error::DamagedTable(format!(
                "GPT entry {}: sectors {first}..={last_lba} lie outside the usable area \
                 {first_usable}..={last_usable} of the disk ({sectors} sectors)",
                i + 1
            )));
        }
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| le16(c, 0))
            .take_while(|c| *c != 0)
            .collect();
        parts.push(Partition {
            number: i as u32 + 1,
            start: first,
            // last_lba <= last_usable < sectors: no overflow.
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
        first_usable: Some(first_usable),
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

/// Writes protective MBR, primary GPT, and backup GPT at the end of `disk`: the entry
/// array (`entry_array`), the two header copies (`header`) and the protective MBR
/// (`protective_mbr`), backup first and primary last.
pub fn write(disk: &dyn BlockIo, layout: &Layout, boot_code: &[u8]) -> Result<()> {
    let ss = disk.sector_size() as u64;
    let sectors = disk.size() / ss;
    let n = layout.entries.unwrap_or(128);
    let bad = |msg: String| Error::Unencodable {
        table: format!("GPT for {sectors} sectors"),
        msg,
    };
    if n == 0 || n > MAX_ENTRIES {
        return Err(bad(format!(
            "{n} partition entries (1..={MAX_ENTRIES} supported)"
        )));
    }
    let geometry = GptGeometry::new(n, ss);
    let (es, min_first) = (geometry.entry_sectors(), geometry.head_sectors());
    let first_usable = layout.first_usable.unwrap_or(min_first).max(min_first);
    // Protective MBR, two headers, two entry arrays and at least one usable sector.
    let last_usable = geometry
        .last_usable(sectors)
        .filter(|l| *l >= first_usable && *l > min_first)
        .ok_or_else(|| bad(format!("no room for {n} entries and a partition")))?;
    let entries = entry_array(layout, n, es * ss, (first_usable, last_usable)).map_err(bad)?;
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
    let mbr = protective_mbr(ss, sectors, boot_code);

    let w = |buf: &[u8], lba: u64, what: &str| {
        disk.write_all_at(buf, lba * ss)
            .map_err(|err| Error::TableIo {
                what: format!("writing {what} at sector {lba}"),
                err,
            })
    };
    // Backup first, primary last: a half-written table is never the one firmware trusts.
    w(&entries, last - es, "backup GPT entries")?;
    w(&backup, last, "backup GPT header")?;
    w(&entries, 2, "GPT entries")?;
    w(&primary, 1, "GPT header")?;
    w(&mbr, 0, "protective MBR")?;
    Ok(())
}

/// The entry array (`bytes` long, whole sectors) of `layout`'s partitions: each numbered
/// `1..=n`, inside the usable sectors `first..=last`, with GUIDs that parse. The message
/// names the partition.
fn entry_array(
    layout: &Layout,
    n: u32,
    bytes: u64,
    (first_usable, last_usable): (u64, u64),
) -> std::result::Result<Vec<u8>, String> {
    let mut entries = vec![0u8; bytes as usize];
    for p in &layout.partitions {
        if p.number == 0 || p.number > n {
            return Err(format!("partition number {} outside 1..={n}", p.number));
        }
        let last_lba = p
            .start
            .checked_add(p.size)
            .and_then(|e| e.checked_sub(1))
            .filter(|_| p.size > 0);
        let Some(last_lba) = last_lba.filter(|l| p.start >= first_usable && *l <= last_usable)
        else {
            return Err(format!(
                "partition {} (start {}, {} sectors) outside usable {first_usable}..={last_usable}",
                p.number, p.start, p.size
            ));
        };
        let e = &mut entries[(p.number as usize - 1) * 128..p.number as usize * 128];
        let t = guid_from_str(&p.type_)
            .ok_or_else(|| format!("partition {}: bad type GUID {}", p.number, p.type_))?;
        let g = match &p.guid {
            Some(g) => {
                guid_from_str(g).ok_or_else(|| format!("partition {}: bad GUID {g}", p.number))?
            }
            None => [0u8; 16],
        };
        e[0..16].copy_from_slice(&t);
        e[16..32].copy_from_slice(&g);
        e[32..40].copy_from_slice(&p.start.to_le_bytes());
        e[40..48].copy_from_slice(&last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        if let Some(name) = &p.name {
            for (i, c) in name.encode_utf16().take(36).enumerate() {
                e[56 + i * 2..58 + i * 2].copy_from_slice(&c.to_le_bytes());
            }
        }
    }
    Ok(entries)
}

/// Sector 0 of a GPT disk: the captured boot code and one `0xEE` entry covering the disk
/// (as far as 32 bits reach).
fn protective_mbr(ss: u64, sectors: u64, boot_code: &[u8]) -> Vec<u8> {
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
    mbr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::layout::read_layout;

    #[test]
    fn geometry_reserves_the_tables_at_both_ends() {
        // 128 entries: 32 sectors of 512 bytes, 4 of 4096.
        let g = GptGeometry::new(128, 512);
        assert_eq!(
            (g.entry_sectors(), g.head_sectors(), g.tail_sectors()),
            (32, 34, 33)
        );
        assert_eq!(g.last_usable(131072), Some(131072 - 34));
        let g = GptGeometry::new(128, 4096);
        assert_eq!((g.head_sectors(), g.tail_sectors()), (6, 5));
        // A disk holding only the backup structures and sector 0 has no usable sector.
        assert_eq!(GptGeometry::new(128, 512).last_usable(33), None);
        assert_eq!(GptGeometry::new(128, 512).last_usable(34), Some(0));
    }

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

    fn small_layout() -> Layout {
        Layout {
            table: TableKind::Gpt,
            sector_size: 512,
            disk_size: 4 << 20,
            disk_guid: Some("11111111-2222-3333-4444-555555555555".into()),
            first_usable: Some(34),
            entries: Some(128),
            disk_signature: None,
            grow: None,
            partitions: vec![Partition {
                number: 1,
                start: 2048,
                size: 2048,
                type_: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
                guid: Some("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE".into()),
                name: Some("p1".into()),
                attributes: 0,
                role: None,
                bootable: false,
                ebr: None,
                filesystem: None,
            }],
        }
    }

    /// Rewrites the header at `lba` with `f` applied and its CRC made valid again.
    fn patch_header(disk: &MemDisk, lba: u64, f: impl Fn(&mut [u8])) {
        let mut h = vec![0u8; 512];
        disk.read_exact_at(&mut h, lba * 512).unwrap();
        f(&mut h);
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        disk.write_all_at(&h, lba * 512).unwrap();
    }

    /// Rewrites entry 1 of the primary table with `f` applied; both CRCs valid again.
    fn patch_entry1(disk: &MemDisk, f: impl Fn(&mut [u8])) {
        let mut entries = vec![0u8; 128 * 128];
        disk.read_exact_at(&mut entries, 2 * 512).unwrap();
        f(&mut entries[..128]);
        disk.write_all_at(&entries, 2 * 512).unwrap();
        let crc = crc32fast::hash(&entries);
        patch_header(disk, 1, |h| h[88..92].copy_from_slice(&crc.to_le_bytes()));
    }

    fn hostile_disk() -> (MemDisk, u64) {
        let disk = MemDisk::new(4 << 20, 512);
        write(&disk, &small_layout(), &[]).unwrap();
        let last = (4 << 20) / 512 - 1;
        // Only the primary is hostile: the backup is gone, so it cannot step in.
        disk.write_all_at(&[0u8; 512], last * 512).unwrap();
        (disk, last)
    }

    #[test]
    fn huge_entry_array_is_refused_before_allocating() {
        // D6: a valid CRC over 4096 entries of 0xFFFFFFFF bytes made the reader allocate
        // 17.6 TB and abort (PID 1 reads the node's own disk: a kernel panic).
        let (disk, last) = hostile_disk();
        patch_header(&disk, 1, |h| {
            h[80..84].copy_from_slice(&4096u32.to_le_bytes());
            h[84..88].copy_from_slice(&u32::MAX.to_le_bytes());
        });
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(
            e.contains("primary GPT header (LBA 1)") && e.contains("entry size 4294967295"),
            "{e}"
        );
        for (n, size, why) in [
            (100_000u32, 128u32, "100000 partition entries"),
            (0, 128, "0 partition entries"),
            (128, 384, "entry size 384"),
            (128, 2048, "entry size 2048"),
            (128, 64, "entry size 64"),
        ] {
            patch_header(&disk, 1, |h| {
                h[80..84].copy_from_slice(&n.to_le_bytes());
                h[84..88].copy_from_slice(&size.to_le_bytes());
            });
            let e = read_layout(&disk).unwrap_err().to_string();
            assert!(e.contains(why), "{n} × {size}: {e}");
        }
        // An entry array placed past the end of the disk.
        patch_header(&disk, 1, |h| {
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[72..80].copy_from_slice(&(last - 1).to_le_bytes());
        });
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains("past the disk end"), "{e}");
    }

    #[test]
    fn entry_spanning_all_of_u64_is_refused_not_wrapped() {
        // D12: first=0, last=2^64-1 made `last - first + 1` wrap to a size of 0.
        let (disk, _) = hostile_disk();
        patch_entry1(&disk, |e| {
            e[32..40].copy_from_slice(&0u64.to_le_bytes());
            e[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        });
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(
            e.contains("GPT entry 1: sectors 0..=18446744073709551615")
                && e.contains("usable area 34..=8158"),
            "{e}"
        );
        // Past the usable area, by one sector.
        patch_entry1(&disk, |e| {
            e[32..40].copy_from_slice(&2048u64.to_le_bytes());
            e[40..48].copy_from_slice(&8159u64.to_le_bytes());
        });
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains("GPT entry 1: sectors 2048..=8159"), "{e}");
    }

    #[test]
    fn usable_area_past_the_disk_is_refused() {
        let (disk, _) = hostile_disk();
        patch_header(&disk, 1, |h| {
            h[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
        });
        let e = read_layout(&disk).unwrap_err().to_string();
        assert!(e.contains("do not fit the disk (8192 sectors)"), "{e}");
    }

    #[test]
    fn hostile_primary_with_a_good_backup_reads_the_backup() {
        let disk = MemDisk::new(4 << 20, 512);
        write(&disk, &small_layout(), &[]).unwrap();
        patch_header(&disk, 1, |h| {
            h[84..88].copy_from_slice(&u32::MAX.to_le_bytes());
        });
        let back = read_layout(&disk).unwrap().unwrap();
        assert_eq!(back.partitions, small_layout().partitions);
    }

    #[test]
    fn write_refuses_what_it_cannot_place() {
        let disk = MemDisk::new(4 << 20, 512);
        let mut l = small_layout();
        l.partitions[0].size = u64::MAX;
        let e = write(&disk, &l, &[]).unwrap_err().to_string();
        assert!(e.contains("partition 1 (start 2048"), "{e}");
        let mut l = small_layout();
        l.entries = Some(u32::MAX);
        let e = write(&disk, &l, &[]).unwrap_err().to_string();
        assert!(e.contains("4294967295 partition entries"), "{e}");
        let tiny = MemDisk::new(8 * 512, 512);
        let e = write(&tiny, &small_layout(), &[]).unwrap_err().to_string();
        assert!(e.contains("no room"), "{e}");
    }
}
