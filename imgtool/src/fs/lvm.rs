//! LVM2 physical volumes: which bytes of a PV are in use, from its label, metadata area
//! and the file systems inside its logical volumes; and pvresize on restore.
//!
//! - [`label`]: the label, pv_header, mda_header and the metadata text (CRCs checked);
//! - [`text`]: LVM's text configuration format (bounded parser);
//! - [`meta`]: the VG's extent size, this PV, each LV's extents on it;
//! - [`view`]: an LV as a [`crate::disk::BlockIo`], so the ordinary probes run inside it;
//! - [`resize`]: restore's grow step for a PV (pvresize semantics).
//!
//! Stored ([`probe`]): everything from byte 0 to `pe_start` (label, first metadata area,
//! boot-loader area), every metadata area (a second one at the end), and the used ranges
//! of the file systems of plain LVs (ext, FAT, swap … whatever [`super::probe_known`]
//! recognises) with each such LV's signature areas ([`crate::wipe::signature_areas`]:
//! its first and last MiB, btrfs mirrors), mapped back to PV offsets; restore writes
//! those, so no foreign signature of the target's past survives inside an LV. Extents of
//! LVs not understood (thin, RAID, mirror, snapshot, cache, striped over several PVs,
//! hidden sub-LVs, an LV without a known file system) are stored as their non-zero
//! 64 KiB blocks, and then the region is [`Fill::Zero`] so restore zeroes what was not
//! stored; otherwise [`Fill::Keep`]. Free extents are not stored. Damaged or hostile
//! metadata makes the probe answer "not LVM", and capture falls back to the non-zero
//! scan of the whole partition. A PV whose metadata copies are all flagged ignored (its
//! VG keeps the text on other PVs) is such a fallback too ([`read_pv`]).

pub mod label;
pub mod meta;
pub mod resize;
pub mod text;
pub mod view;

use super::{Fill, FsInfo, PartView, UsedRanges, MAX_RANGES};
use label::{MdaHeader, MdaText, PvLabel};
use meta::{PvMap, Vg};
use std::io;
use thiserror::Error;

/// Why a PV's heads or metadata were not accepted.
#[derive(Debug, Error)]
pub enum LvmError {
    /// Reading the PV failed.
    #[error("reading the LVM PV: {0}")]
    Io(#[from] io::Error),
    /// The label or pv_header is damaged.
    #[error("LVM label: {0}")]
    Label(&'static str),
    /// A metadata area's header or text is damaged.
    #[error("LVM metadata area at byte {at}: {what}")]
    Mda { at: u64, what: &'static str },
    /// The metadata text does not parse.
    #[error(transparent)]
    Text(#[from] text::TextError),
    /// The metadata parses but does not describe this PV consistently.
    #[error("LVM metadata: {0}")]
    Meta(String),
}

/// A PV as read from its partition.
pub struct Pv {
    pub label: PvLabel,
    /// The metadata area the text was read from.
    pub mda: MdaHeader,
    /// The text (with its trailing NUL) and what it says; `None` for a PV in no VG.
    pub vg: Option<(Vec<u8>, Vg)>,
}

/// Reads a PV: `None` when there is no LVM label; an error when something is damaged.
///
/// Of the metadata areas that hold a current text (not flagged ignored), the one with the
/// highest `seqno` is used, as lvm2 does. An orphan PV (in no VG) is one whose every area
/// is readable and lists no text at all; an ignored copy is not that (its VG keeps the
/// text on other PVs), so a PV with no current copy is an error and capture falls back
/// to the non-zero scan rather than dropping its LVs.
pub fn read_pv(part: &PartView) -> Result<Option<Pv>, LvmError> {
    let Some(label) = label::read_label(part)? else {
        return Ok(None);
    };
    let mut best: Option<(MdaHeader, Vec<u8>, Vg)> = None;
    let mut orphan = None;
    let mut ignored = false;
    let mut first_err = None;
    for area in &label.metadata_areas {
        match read_area(part, *area) {
            Ok(Copy::Text(mda, text, vg)) => {
                let newer = match &best {
                    Some(b) => vg.seqno.0 > b.2.seqno.0,
                    None => true,
                };
                if newer {
                    best = Some((mda, text, vg));
                }
            }
            Ok(Copy::Orphan(mda)) => {
                orphan.get_or_insert(mda);
            }
            Ok(Copy::Ignored) => ignored = true,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some((mda, text, vg)) = best {
        return Ok(Some(Pv {
            label,
            mda,
            vg: Some((text, vg)),
        }));
    }
    match (orphan, first_err) {
        (_, Some(e)) => Err(e),
        (Some(mda), None) if !ignored => Ok(Some(Pv {
            label,
            mda,
            vg: None,
        })),
        (Some(_), None) => Err(LvmError::Meta(
            "no metadata area holds a current copy of the text".into(),
        )),
        (None, None) if ignored => Err(LvmError::Meta(
            "every metadata copy on this PV is flagged ignored".into(),
        )),
        (None, None) => Err(LvmError::Label("no metadata area")),
    }
}

/// One metadata area as [`read_pv`] sees it.
enum Copy {
    Text(MdaHeader, Vec<u8>, Vg),
    Orphan(MdaHeader),
    Ignored,
}

fn read_area(part: &PartView, area: label::Area) -> Result<Copy, LvmError> {
    let mda = MdaHeader::read(part, area)?;
    Ok(match mda.read_text(part)? {
        MdaText::Text(t) => {
            let vg = Vg::from_root(&text::parse(&t)?)?;
            Copy::Text(mda, t, vg)
        }
        MdaText::Orphan => Copy::Orphan(mda),
        MdaText::Ignored => Copy::Ignored,
    })
}

impl Pv {
    /// This PV's extent map; `None` for a PV in no VG.
    pub fn map(&self, part_size: u64) -> Result<Option<PvMap>, LvmError> {
        let Some((_, vg)) = &self.vg else {
            return Ok(None);
        };
        let pv = vg
            .pv(&self.label.uuid)
            .ok_or_else(|| LvmError::Meta("the VG does not list this PV".into()))?;
        meta::map_pv(vg, pv, part_size).map(Some)
    }
}

/// Probes for an LVM2 PV; `None` when there is no label or the PV is damaged (the caller
/// then scans for non-zero blocks). Only I/O errors of the disk itself are errors.
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    let read = read_pv(part).and_then(|pv| match pv {
        Some(pv) => {
            let map = pv.map(part.size)?;
            Ok(Some((pv, map)))
        }
        None => Ok(None),
    });
    let (pv, map) = match read {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(None),
        Err(LvmError::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => return Err(e),
        Err(_) => return Ok(None),
    };
    let mut used = Collected::default();
    let head_end = pv.label.data_areas[0]
        .offset
        .max(map.as_ref().map_or(0, |m| m.pe_start))
        .min(part.size);
    used.add([(0, head_end)]);
    let areas = pv
        .label
        .metadata_areas
        .iter()
        .chain(&pv.label.bootloader_areas);
    used.add(areas.map(|a| (a.offset, a.size)));
    let mut fill = Fill::Keep;
    let mut fs_size = head_end;
    if let Some(map) = &map {
        fill = lv_ranges(part, map, &mut used)?;
        fs_size = fs_size.max(map.data_end());
    }
    for a in &pv.label.metadata_areas {
        fs_size = fs_size.max(a.offset + a.size);
    }
    Ok(Some(FsInfo {
        kind: "lvm2".into(),
        uuid: Some(pv.label.uuid_dashed()),
        label: pv.vg.as_ref().map(|(_, vg)| vg.name.clone()),
        fs_size: fs_size.min(part.size),
        used: used.finish(),
        fill,
    }))
}

/// Adds the used ranges of every LV on the PV: probed file systems' used blocks and the
/// LV's [`crate::wipe::signature_areas`], the non-zero blocks of everything else. Returns the fill the region needs.
fn lv_ranges(part: &PartView, map: &PvMap, used: &mut Collected) -> io::Result<Fill> {
    let mut fill = Fill::Keep;
    for lv in &map.lvs {
        let view = view::LvView::new(part, lv);
        let lv_part = PartView {
            disk: &view,
            start: 0,
            size: crate::disk::BlockIo::size(&view),
        };
        match super::probe_known(&lv_part) {
            Ok(Some(info)) if info.fill == Fill::Keep => {
                // Restore clears old signatures only at the PV partition's edges; an LV's
                // free space is kept too, so its own signature areas are stored (mostly
                // zeros, compressing to nothing) and an old btrfs or XFS inside never
                // survives beside the LV's file system.
                let mut v = vec![];
                let wipe = crate::wipe::signature_areas(lv_part.size);
                for (o, l) in info.used.into_iter().chain(wipe) {
                    view.to_pv(o, l, &mut v);
                }
                used.add(v);
            }
            // No file system known here, or a damaged one: its bytes as they are.
            _ => {
                fill = Fill::Zero;
                for &(_, po, l) in &lv.segs {
                    used.add(super::nonzero_range(part, po, l)?);
                }
            }
        }
    }
    for &(o, l) in &map.scan {
        fill = Fill::Zero;
        used.add(super::nonzero_range(part, o, l)?);
    }
    Ok(fill)
}

/// Used ranges gathered from several sources in any order, kept bounded: merged through
/// [`UsedRanges`] whenever more than twice [`MAX_RANGES`] are pending.
#[derive(Default)]
struct Collected {
    v: Vec<(u64, u64)>,
}

impl Collected {
    fn add(&mut self, r: impl IntoIterator<Item = (u64, u64)>) {
        self.v.extend(r.into_iter().filter(|(_, l)| *l > 0));
        if self.v.len() > 2 * MAX_RANGES {
            self.merge();
        }
    }
    fn merge(&mut self) {
        self.v = merged(std::mem::take(&mut self.v));
    }
    fn finish(mut self) -> Vec<(u64, u64)> {
        self.merge();
        self.v
    }
}

/// `ranges` in any order, sorted and merged where they overlap or touch, through
/// [`UsedRanges`] (so bounded by [`MAX_RANGES`] like every probe's list): the one merge
/// of this module and [`meta`].
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut u = UsedRanges::default();
    for (o, l) in ranges {
        u.push(o, l);
    }
    u.into_vec()
}

#[cfg(test)]
pub(crate) mod tests;
