//! Restore's grow step for an LVM2 PV restored onto a larger partition: what `pvresize`
//! does, written directly into the restored bytes before the partition table exists.
//!
//! When the partition holds at least one more extent: a new copy of the metadata text
//! with this PV's `dev_size` (the partition, in sectors) and `pe_count` updated and the
//! VG's `seqno` + 1 — every other byte of the text as it was — is written after the
//! current one in the circular metadata buffer, then the mda_header's `raw_locn` and
//! CRC, then the pv_header's device size and the label CRC. LVs are untouched; the new
//! extents are free.
//!
//! Not grown ([`Outcome::Kept`]: the PV keeps its size, which is valid; restore's
//! [`crate::grow::grow_lvm`] says why and that `pvresize` on the node finishes the job): a
//! PV with a second metadata area (at its old end: moving it is pvresize's business), a
//! VG of several PVs (their metadata copies would disagree), a metadata area too small
//! for two copies of the text. This module knows nothing of images or regions: it edits
//! a PV on a disk.

use super::label::{label_with_size, write_text, RawLocn, SECTOR};
use super::text::Span;
use super::{read_pv, LvmError, Pv};
use crate::disk::BlockIo;
use crate::fs::PartView;

/// What growing a PV did or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `(old, new)` byte ends of the PV's extent area.
    Grown(u64, u64),
    /// Nothing to do: the partition holds no further extent.
    Same,
    /// Kept its size, for this reason.
    Kept(String),
}

/// The resize itself, on the PV at byte `base` of `disk`, for a partition of `size`.
pub fn resize(disk: &dyn BlockIo, base: u64, size: u64) -> Result<Outcome, LvmError> {
    let part = PartView {
        disk,
        start: base,
        size,
    };
    let pv = read_pv(&part)?.ok_or(LvmError::Label("no LVM label where the PV was restored"))?;
    let Some(map) = pv.map(size)? else {
        return Ok(Outcome::Kept("it belongs to no volume group".into()));
    };
    let new_count =
        (size / SECTOR).saturating_sub(map.pe_start / SECTOR) / (map.extent_bytes / SECTOR);
    if new_count <= map.pe_count {
        return Ok(Outcome::Same);
    }
    if pv.label.metadata_areas.len() != 1 {
        return Ok(Outcome::Kept(
            "it has a second metadata area at its old end".into(),
        ));
    }
    let Some((text, vg)) = &pv.vg else {
        return Ok(Outcome::Kept("it belongs to no volume group".into()));
    };
    if vg.pvs.len() != 1 {
        return Ok(Outcome::Kept(format!(
            "volume group {} has {} PVs",
            vg.name,
            vg.pvs.len()
        )));
    }
    let new_text = resized_text(text, &pv, new_count, size / SECTOR)?;
    let Some(at) = pv.mda.next_offset(new_text.len() as u64) else {
        return Ok(Outcome::Kept(
            "its metadata area has no room for a second copy of the text".into(),
        ));
    };
    commit(disk, base, &pv, at, &new_text, size)?;
    let new_end = map.pe_start + new_count * map.extent_bytes;
    Ok(Outcome::Grown(map.data_end(), new_end))
}

/// The text with this PV's `pe_count` and `dev_size` and the VG's `seqno` replaced.
fn resized_text(
    text: &[u8],
    pv: &Pv,
    pe_count: u64,
    dev_sectors: u64,
) -> Result<Vec<u8>, LvmError> {
    let Some((_, vg)) = &pv.vg else {
        return Err(LvmError::Meta("no volume group".into()));
    };
    let me = vg
        .pv(&pv.label.uuid)
        .ok_or_else(|| LvmError::Meta("the VG does not list this PV".into()))?;
    let seqno = vg
        .seqno
        .0
        .checked_add(1)
        .ok_or_else(|| LvmError::Meta("seqno overflows".into()))?;
    let mut edits: Vec<(Span, String)> = vec![
        (vg.seqno.1, seqno.to_string()),
        (me.pe_count_span, pe_count.to_string()),
    ];
    if let Some((_, span)) = me.dev_size {
        edits.push((span, dev_sectors.to_string()));
    }
    edits.sort_by_key(|(s, _)| std::cmp::Reverse(s.start));
    let mut out = text.to_vec();
    for (s, v) in edits {
        if s.start > s.end || s.end > out.len() {
            return Err(LvmError::Meta("a value's span is outside the text".into()));
        }
        out.splice(s.start..s.end, v.into_bytes());
    }
    Ok(out)
}

/// Writes the new text at `at` of the metadata area, then the header pointing at it,
/// then the label with the new device size (LVM's own order: text, then commit).
fn commit(
    disk: &dyn BlockIo,
    base: u64,
    pv: &Pv,
    at: u64,
    text: &[u8],
    size: u64,
) -> Result<(), LvmError> {
    let area = pv.mda.area;
    write_text(disk, base, area, at, text)?;
    let mut hdr = pv.mda.clone();
    let locn = RawLocn {
        offset: at,
        size: text.len() as u64,
        checksum: super::label::calc_crc(super::label::INITIAL_CRC, text),
        flags: 0,
    };
    match hdr.locns.first_mut() {
        Some(l) => *l = locn,
        None => hdr.locns.push(locn),
    }
    disk.write_all_at(&hdr.to_bytes(), base + area.offset)?;
    let mut sector = [0u8; 512];
    let lab_at = base + pv.label.sector * SECTOR;
    disk.read_exact_at(&mut sector, lab_at)?;
    disk.write_all_at(&label_with_size(&sector, size), lab_at)?;
    Ok(())
}
