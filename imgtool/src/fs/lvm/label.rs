//! The binary heads of an LVM2 physical volume: the label (`LABELONE` in one of sectors
//! 0–3, its CRC, type `LVM2 001`), the pv_header it points to (PV UUID, device size, the
//! data, metadata and boot-loader area lists), each metadata area's mda_header (magic,
//! version 1, CRC, the raw locations of the metadata text) and the text itself, read from
//! the circular buffer (wrap-around handled). Also the few writes pvresize makes to them
//! ([`label_with_size`], [`MdaHeader::to_bytes`], [`write_text`]).
//!
//! Every field is checked before it is used: areas inside the partition, lists bounded
//! by the 512-byte sector that holds them, the text no larger than [`MAX_TEXT`] and than
//! its area, every CRC as LVM computes it ([`calc_crc`]).

use super::LvmError;
use crate::bytes::{le32, le64};
use crate::disk::BlockIo;
use crate::fs::PartView;

/// LVM's sector: labels and headers are one sector long, sizes in metadata count them.
pub const SECTOR: u64 = 512;
/// Sectors 0..4 may hold the label (LVM's `LABEL_SCAN_SECTORS`).
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// The mda_header's magic (`FMTT_MAGIC`).
pub const MDA_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
/// The first value of LVM's CRC (`INITIAL_CRC`).
pub const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Largest metadata text read (4 MiB). LVM's own default area is 1 MiB and a VG of a few
/// thousand LVs stays well below 1 MiB of text; this bounds what one probe allocates
/// whatever an area's header claims.
pub const MAX_TEXT: u64 = 4 << 20;
/// `RAW_LOCN_IGNORED`: this area's copy of the metadata is not kept up to date.
const RAW_LOCN_IGNORED: u32 = 1;

/// LVM's `calc_crc`: a reflected CRC-32 (polynomial 0xedb88320) started at `initial`
/// without inverting it, and not inverted at the end either; `crc32fast` computes the
/// inverted form, hence the two `!`.
pub fn calc_crc(initial: u32, buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!initial);
    h.update(buf);
    !h.finalize()
}

/// One `disk_locn`: `size` bytes at byte `offset` of the PV (size 0 for the data area:
/// up to the end of the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// The label and pv_header of a PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Sector (0–3) holding the label.
    pub sector: u64,
    /// The PV UUID as stored: 32 characters, no dashes.
    pub uuid: String,
    pub device_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
    pub bootloader_areas: Vec<Area>,
}

fn bad(what: &'static str) -> LvmError {
    LvmError::Label(what)
}

/// Reads the label: `None` when none of sectors 0–3 starts with `LABELONE` (not a PV);
/// an error when one does but its CRC, type or pv_header is wrong.
pub fn read_label(part: &PartView) -> Result<Option<PvLabel>, LvmError> {
    if part.size < LABEL_SCAN_SECTORS * SECTOR {
        return Ok(None);
    }
    let mut head = vec![0u8; (LABEL_SCAN_SECTORS * SECTOR) as usize];
    part.read(&mut head, 0)?;
    let Some(s) =
        (0..LABEL_SCAN_SECTORS as usize).find(|s| &head[s * 512..s * 512 + 8] == b"LABELONE")
    else {
        return Ok(None);
    };
    let sec = &head[s * 512..(s + 1) * 512];
    if le64(sec, 8) != s as u64 {
        return Err(bad("the label's sector number is not where it is"));
    }
    if le32(sec, 16) != calc_crc(INITIAL_CRC, &sec[20..]) {
        return Err(bad("label CRC mismatch"));
    }
    if &sec[24..32] != b"LVM2 001" {
        return Err(bad("label type is not LVM2 001"));
    }
    let off = le32(sec, 20) as usize;
    // uuid (32) + device size (8) + at least the two list terminators (2 × 16).
    if !(32..=512 - 72).contains(&off) {
        return Err(bad("pv_header offset outside the label sector"));
    }
    let h = &sec[off..];
    let uuid = &h[..32];
    if !uuid.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad("PV UUID is not 32 letters and digits"));
    }
    let mut at = 40;
    let data_areas = area_list(h, &mut at)?;
    let metadata_areas = area_list(h, &mut at)?;
    // The extension (version, flags, boot-loader areas) follows when it fits.
    let bootloader_areas = if at + 8 + 16 <= h.len() && le32(h, at) >= 1 {
        at += 8;
        area_list(h, &mut at)?
    } else {
        vec![]
    };
    let label = PvLabel {
        sector: s as u64,
        uuid: String::from_utf8_lossy(uuid).into(),
        device_size: le64(h, 32),
        data_areas,
        metadata_areas,
        bootloader_areas,
    };
    label.check(part.size)?;
    Ok(Some(label))
}

/// A zero-terminated list of `disk_locn`s starting at `*at` of `h` (the rest of the
/// label sector, which bounds the count); `*at` moves past the terminator.
fn area_list(h: &[u8], at: &mut usize) -> Result<Vec<Area>, LvmError> {
    let mut v = vec![];
    loop {
        if *at + 16 > h.len() {
            return Err(bad("area list runs past the label sector"));
        }
        let a = Area {
            offset: le64(h, *at),
            size: le64(h, *at + 8),
        };
        *at += 16;
        if a.offset == 0 {
            return Ok(v);
        }
        v.push(a);
    }
}

impl PvLabel {
    /// Every area inside the partition; one data area (LVM writes exactly one).
    fn check(&self, part_size: u64) -> Result<(), LvmError> {
        if self.data_areas.len() != 1 {
            return Err(bad("not exactly one data area"));
        }
        let inside = |a: &Area| a.offset.checked_add(a.size).is_some_and(|e| e <= part_size);
        let all = self
            .data_areas
            .iter()
            .chain(&self.metadata_areas)
            .chain(&self.bootloader_areas);
        if !all.clone().all(inside) {
            return Err(bad("an area reaches past the partition"));
        }
        if self.metadata_areas.iter().any(|a| a.size < 2 * SECTOR) {
            return Err(bad("a metadata area is smaller than two sectors"));
        }
        Ok(())
    }

    /// The UUID the way LVM prints it: 6-4-4-4-4-4-6 characters.
    pub fn uuid_dashed(&self) -> String {
        dashed(&self.uuid)
    }
}

/// `abcdef…` → `abcdef-ghij-…` (6-4-4-4-4-4-6), LVM's printed form of a 32-character id.
pub fn dashed(id: &str) -> String {
    let mut out = String::with_capacity(38);
    for (i, c) in id.chars().enumerate() {
        if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// The label sector `sector` (512 bytes) of a PV with its pv_header's device size set to
/// `size` and its CRC recomputed.
pub fn label_with_size(sector_bytes: &[u8; 512], size: u64) -> [u8; 512] {
    let mut s = *sector_bytes;
    let off = (le32(&s, 20) as usize).clamp(32, 512 - 40);
    s[off + 32..off + 40].copy_from_slice(&size.to_le_bytes());
    let crc = calc_crc(INITIAL_CRC, &s[20..]);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    s
}

/// One `raw_locn` of an mda_header: `size` bytes of text at byte `offset` of the area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocn {
    pub offset: u64,
    pub size: u64,
    pub checksum: u32,
    pub flags: u32,
}

/// What a metadata area holds for [`MdaHeader::read_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdaText {
    /// No `raw_locn`: no text was ever committed here since `pvcreate`/`vgremove`.
    Orphan,
    /// A `raw_locn` flagged `RAW_LOCN_IGNORED` (or empty): whatever text it points at is
    /// not kept up to date (`--vgmetadatacopies`, `pvchange --metadataignore y`).
    Ignored,
    /// The committed text, its trailing NUL included.
    Text(Vec<u8>),
}

/// A metadata area's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// The area: its byte offset in the PV and its size (header included).
    pub area: Area,
    pub locns: Vec<RawLocn>,
}

impl MdaHeader {
    /// Reads and checks the header of `area` (magic, version 1, CRC, start, sizes).
    pub fn read(part: &PartView, area: Area) -> Result<MdaHeader, LvmError> {
        let e = |what| LvmError::Mda {
            at: area.offset,
            what,
        };
        let mut h = [0u8; 512];
        part.read(&mut h, area.offset)?;
        if &h[4..20] != MDA_MAGIC {
            return Err(e("no mda_header magic"));
        }
        if le32(&h, 0) != calc_crc(INITIAL_CRC, &h[4..]) {
            return Err(e("mda_header CRC mismatch"));
        }
        if le32(&h, 20) != 1 {
            return Err(e("mda_header version is not 1"));
        }
        if le64(&h, 24) != area.offset || le64(&h, 32) != area.size {
            return Err(e("mda_header start or size differs from the pv_header's"));
        }
        let mut locns = vec![];
        let mut at = 40;
        while at + 24 <= 512 {
            let l = RawLocn {
                offset: le64(&h, at),
                size: le64(&h, at + 8),
                checksum: le32(&h, at + 16),
                flags: le32(&h, at + 20),
            };
            if l.offset == 0 {
                break;
            }
            locns.push(l);
            at += 24;
        }
        Ok(MdaHeader { area, locns })
    }

    /// The header sector as LVM writes it (checksum over bytes 4..512).
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&self.area.offset.to_le_bytes());
        h[32..40].copy_from_slice(&self.area.size.to_le_bytes());
        // At most 19 locations fit the sector (and a terminator when fewer).
        for (i, l) in self.locns.iter().take(19).enumerate() {
            let at = 40 + i * 24;
            h[at..at + 8].copy_from_slice(&l.offset.to_le_bytes());
            h[at + 8..at + 16].copy_from_slice(&l.size.to_le_bytes());
            h[at + 16..at + 20].copy_from_slice(&l.checksum.to_le_bytes());
            h[at + 20..at + 24].copy_from_slice(&l.flags.to_le_bytes());
        }
        let crc = calc_crc(INITIAL_CRC, &h[4..]);
        h[..4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The committed metadata text (`raw_locn` 0), CRC checked: [`MdaText::Orphan`] when
    /// the header lists no text at all (a PV in no VG), [`MdaText::Ignored`] when its copy
    /// is flagged ignored or empty (stale: lvm2 keeps the VG's text elsewhere).
    pub fn read_text(&self, part: &PartView) -> Result<MdaText, LvmError> {
        let e = |what| LvmError::Mda {
            at: self.area.offset,
            what,
        };
        let Some(l) = self.locns.first() else {
            return Ok(MdaText::Orphan);
        };
        if l.flags & RAW_LOCN_IGNORED != 0 || l.size == 0 {
            return Ok(MdaText::Ignored);
        }
        let buffer = self.area.size - SECTOR;
        if l.offset < SECTOR || l.offset >= self.area.size {
            return Err(e("metadata text starts outside its area"));
        }
        if l.size > buffer || l.size > MAX_TEXT {
            return Err(e("metadata text larger than its area or MAX_TEXT"));
        }
        // The buffer is circular: what passes the area's end continues after the header.
        let first = (self.area.size - l.offset).min(l.size);
        let mut text = vec![0u8; l.size as usize];
        let (a, b) = text.split_at_mut(first as usize);
        part.read(a, self.area.offset + l.offset)?;
        part.read(b, self.area.offset + SECTOR)?;
        if calc_crc(INITIAL_CRC, &text) != l.checksum {
            return Err(e("metadata text CRC mismatch"));
        }
        Ok(MdaText::Text(text))
    }

    /// Where LVM puts the next copy of the text after `raw_locn` 0: right after it,
    /// 512-byte aligned, wrapping to just after the header. `None` when a text of
    /// `size` bytes would overlap the current one (the area is too small).
    pub fn next_offset(&self, size: u64) -> Option<u64> {
        let l = self.locns.first()?;
        let buffer = self.area.size.checked_sub(SECTOR)?;
        if l.size.checked_add(size)? > buffer {
            return None;
        }
        let mut end = l.offset.checked_add(l.size)?;
        if end > self.area.size {
            end = end - self.area.size + SECTOR;
        }
        let next = end.checked_next_multiple_of(SECTOR)?;
        Some(if next >= self.area.size { SECTOR } else { next })
    }
}

/// Writes `text` into the circular buffer of `area` at `offset` (wrapping after the
/// header), on `disk` where the PV starts at byte `base`.
pub fn write_text(
    disk: &dyn BlockIo,
    base: u64,
    area: Area,
    offset: u64,
    text: &[u8],
) -> std::io::Result<()> {
    let room = area.size.saturating_sub(offset).min(text.len() as u64) as usize;
    disk.write_all_at(&text[..room], base + area.offset + offset)?;
    if room < text.len() {
        disk.write_all_at(&text[room..], base + area.offset + SECTOR)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calc_crc_matches_lvm() {
        // LVM's own test vector (lib/misc/crc.c's check: calc_crc(INITIAL_CRC, "") is the
        // initial value) and the checksum pvck printed for a real 1327-byte text is
        // checked in tests/lvm.rs on a real PV; here the algebra: chaining two halves
        // gives the CRC of the whole, as LVM's wrapped-text CRC needs.
        assert_eq!(calc_crc(INITIAL_CRC, b""), INITIAL_CRC);
        let data = b"vg0 {\nseqno = 1\n}\n";
        let whole = calc_crc(INITIAL_CRC, data);
        assert_eq!(
            calc_crc(calc_crc(INITIAL_CRC, &data[..7]), &data[7..]),
            whole
        );
    }

    #[test]
    fn dashed_uuids_are_6_4_4_4_4_4_6() {
        assert_eq!(
            dashed("L7TGP04qC0q4sS2tqHXNFXK4LIIGsMs3"),
            "L7TGP0-4qC0-q4sS-2tqH-XNFX-K4LI-IGsMs3"
        );
    }

    #[test]
    fn next_offset_follows_aligns_and_wraps() {
        let h = |offset, size| MdaHeader {
            area: Area {
                offset: 4096,
                size: 8192,
            },
            locns: vec![RawLocn {
                offset,
                size,
                checksum: 0,
                flags: 0,
            }],
        };
        assert_eq!(h(3072, 1327).next_offset(1300), Some(4608));
        // Ends exactly at the area's end: wraps to just after the header.
        assert_eq!(h(7168, 1024).next_offset(100), Some(512));
        // The current text wraps itself: the next one follows its wrapped tail.
        assert_eq!(h(7680, 1000).next_offset(100), Some(1024));
        // No room for both.
        assert_eq!(h(512, 4000).next_offset(4000), None);
    }
}
