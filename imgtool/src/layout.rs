//! The layout rules: validating a [`Layout`] (every rule of docs/FORMAT.md, "Validation
//! and limits"), reading a disk's table, comparing two layouts, and planning the layout
//! for a target disk (fixed partitions as captured, the grow partition takes the rest).
//! The types live in [`crate::table`]; the byte-level codecs in [`crate::gpt`] and
//! [`crate::mbr`]; this module decides, they encode.

use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::gpt::GptGeometry;
use serde::Serialize;

/// The types moved to [`crate::table`]; these paths keep working.
pub use crate::table::{
    Layout, MbrRole, Partition, TableKind, MAX_DISK_BYTES, MAX_GPT_ENTRIES, SECTOR_SIZES,
};

/// Why a layout breaks a rule ([`Layout::validate`]) or cannot be laid out on a disk
/// ([`plan_layout`]). The layout itself is the cause, so there is no source; the message
/// names the partition and the field, as docs/FORMAT.md's rules do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A rule of one partition's own fields (number, size, position, type, GUID, EBR).
    #[error("partition {number}: {msg}")]
    Partition { number: u32, msg: String },
    /// The target disk's logical sector size is not the image's.
    #[error("its logical sector size is {disk} bytes but the image was captured with {image} bytes; partition offsets would not match")]
    SectorSize { disk: u32, image: u32 },
    /// The target disk cannot hold the image's partitions.
    #[error(
        "the disk is too small: {disk} bytes, the image's partitions need at least {needed} bytes"
    )]
    TooSmall { disk: u64, needed: u64 },
    /// Any other rule: geometry, entry count, logical chain, overlaps, the grow partition.
    #[error("{0}")]
    Rule(String),
}

/// A partition's sectors `start..end` and what to call it in a message, for the overlap
/// check.
type Span = (u64, u64, String);

impl Layout {
    /// Checks that this layout describes a table restore can write without touching
    /// anything outside its partitions: sector size 512 or 4096; a disk size that is a
    /// positive multiple of it; partition numbers in range for the table kind and unique;
    /// every partition non-empty and inside the usable area (GPT: after the header and
    /// entries, before the backup entries; MBR: after sector 0, within 32-bit LBAs;
    /// logical partitions and their EBRs inside the one extended partition); no two data
    /// partitions (or EBRs) overlapping; type and GUID strings the codecs can encode; the
    /// grow partition present. Every sum is checked. The message names the partition and
    /// the field. Limits and reasons: docs/FORMAT.md, "Validation and limits".
    ///
    /// The rule groups run in this order, each its own function: the disk's geometry and
    /// usable area, each partition's own fields, the MBR's logical chain, overlaps, the
    /// grow partition.
    pub fn validate(&self) -> std::result::Result<(), LayoutError> {
        let (lo, hi) = self.check_geometry().map_err(LayoutError::Rule)?;
        let mut seen = std::collections::BTreeSet::new();
        let mut extended: Option<&Partition> = None;
        for p in &self.partitions {
            if !seen.insert(p.number) {
                return Err(LayoutError::Rule(format!(
                    "partition number {} appears twice",
                    p.number
                )));
            }
            self.check_partition(p, lo, hi)
                .map_err(|msg| LayoutError::Partition {
                    number: p.number,
                    msg,
                })?;
            if p.is_extended() {
                if extended.is_some() {
                    return Err(LayoutError::Partition {
                        number: p.number,
                        msg: "a second extended partition".into(),
                    });
                }
                extended = Some(p);
            }
        }
        let inner = self.check_logicals(extended).map_err(LayoutError::Rule)?;
        self.check_overlaps(inner).map_err(LayoutError::Rule)?;
        self.check_grow().map_err(LayoutError::Rule)
    }

    /// Sector size, disk size and the usable area `lo..hi` (sectors, `hi` exclusive) of
    /// the table kind, with the disk-wide identifiers (GPT disk GUID, MBR signature).
    fn check_geometry(&self) -> std::result::Result<(u64, u64), String> {
        if !SECTOR_SIZES.contains(&self.sector_size) {
            return Err(format!(
                "sector_size {} is not one of {SECTOR_SIZES:?}",
                self.sector_size
            ));
        }
        let ss = self.sector_size as u64;
        if self.disk_size == 0
            || !self.disk_size.is_multiple_of(ss)
            || self.disk_size > MAX_DISK_BYTES
        {
            return Err(format!(
                "disk_size {} is not a positive multiple of the sector size {ss} (at most {MAX_DISK_BYTES})",
                self.disk_size
            ));
        }
        let sectors = self.disk_sectors();
        match self.table {
            TableKind::Gpt => {
                let n = self.entries.unwrap_or(128);
                if n == 0 || n > MAX_GPT_ENTRIES {
                    return Err(format!("entries {n} outside 1..={MAX_GPT_ENTRIES}"));
                }
                let geometry = GptGeometry::new(n, ss);
                let min_first = geometry.head_sectors();
                let first = self.first_usable.unwrap_or(min_first);
                if first < min_first {
                    return Err(format!(
                        "first_usable {first} lies inside the GPT header and its {n} entries (sectors 0..{min_first})"
                    ));
                }
                // The backup entries and header take the last entry_sectors + 1 sectors.
                let hi = geometry
                    .last_usable(sectors)
                    .map(|l| l + 1)
                    .filter(|h| *h > first)
                    .ok_or_else(|| {
                        format!(
                            "disk_size {} ({sectors} sectors) leaves no usable sector between first_usable {first} and the backup GPT",
                            self.disk_size
                        )
                    })?;
                if let Some(g) = &self.disk_guid {
                    if crate::gpt::guid_from_str(g).is_none() {
                        return Err(format!("disk_guid {g:?} is not a GUID"));
                    }
                }
                Ok((first, hi))
            }
            TableKind::Mbr => {
                if let Some(sig) = &self.disk_signature {
                    if u32::from_str_radix(sig.trim_start_matches("0x"), 16).is_err() {
                        return Err(format!("disk_signature {sig:?} is not a 32-bit hex number"));
                    }
                }
                Ok((1, sectors))
            }
        }
    }

    /// One partition's own fields: non-empty, inside the usable area `lo..hi`, and what
    /// its table kind can encode. The caller prefixes the partition number.
    fn check_partition(&self, p: &Partition, lo: u64, hi: u64) -> std::result::Result<(), String> {
        if p.size == 0 {
            return Err("size is 0".into());
        }
        let Some(end) = p.start.checked_add(p.size) else {
            return Err(format!("start {} + size {} overflows", p.start, p.size));
        };
        if p.start < lo || end > hi {
            return Err(format!(
                "sectors {}..{end} (start {}, size {}) are outside the usable area {lo}..{hi} of this {} disk of {} bytes",
                p.start, p.start, p.size, self.table, self.disk_size
            ));
        }
        match self.table {
            TableKind::Gpt => self.check_gpt_entry(p),
            TableKind::Mbr => check_mbr_entry(p),
        }
    }

    /// A GPT entry: its number fits the entry array, no MBR fields, GUIDs that parse.
    fn check_gpt_entry(&self, p: &Partition) -> std::result::Result<(), String> {
        let entries = self.entries.unwrap_or(128);
        if p.number == 0 || p.number > entries {
            return Err(format!("number outside 1..={entries} (the GPT's entries)"));
        }
        if p.role.is_some() || p.ebr.is_some() || p.bootable {
            return Err("MBR fields (role, ebr, bootable) in a GPT layout".into());
        }
        if crate::gpt::guid_from_str(&p.type_).is_none() {
            return Err(format!("type {:?} is not a GUID", p.type_));
        }
        if let Some(g) = &p.guid {
            if crate::gpt::guid_from_str(g).is_none() {
                return Err(format!("guid {g:?} is not a GUID"));
            }
        }
        Ok(())
    }

    /// Logical partitions: numbered 5, 6, … without gaps (as the MBR reader numbers
    /// them), inside the extended partition, each after its EBR, the first EBR at the
    /// extended partition's start (where the chain begins). Returns the spans inside the
    /// extended container (each EBR and logical partition) for the overlap check.
    fn check_logicals(
        &self,
        extended: Option<&Partition>,
    ) -> std::result::Result<Vec<Span>, String> {
        let mut logicals: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.role == Some(MbrRole::Logical))
            .collect();
        logicals.sort_by_key(|p| p.number);
        let mut inner: Vec<Span> = vec![];
        for (i, p) in logicals.iter().enumerate() {
            let Some(ext) = extended else {
                return Err(format!(
                    "partition {}: a logical partition without an extended partition",
                    p.number
                ));
            };
            if p.number as usize != 5 + i {
                return Err(format!(
                    "partition {}: logical partitions must be numbered 5, 6, … without gaps",
                    p.number
                ));
            }
            let ebr = p.ebr.unwrap_or(p.start.saturating_sub(1));
            if i == 0 && ebr != ext.start {
                return Err(format!(
                    "partition {}: the first EBR is at sector {ebr}, not at the extended partition's start {}",
                    p.number, ext.start
                ));
            }
            if ebr < ext.start || ebr >= p.start || p.start < ext.start || p.end() > ext.end() {
                return Err(format!(
                    "partition {} (EBR at {ebr}, sectors {}..{}) is not inside the extended partition {} ({}..{})",
                    p.number,
                    p.start,
                    p.end(),
                    ext.number,
                    ext.start,
                    ext.end()
                ));
            }
            inner.push((ebr, ebr + 1, format!("the EBR of partition {}", p.number)));
            inner.push((p.start, p.end(), format!("partition {}", p.number)));
        }
        Ok(inner)
    }

    /// No overlaps: top level (GPT partitions; MBR primaries and the extended container),
    /// and inside the extended container (`inner`: logical partitions and their EBRs).
    fn check_overlaps(&self, inner: Vec<Span>) -> std::result::Result<(), String> {
        let outer: Vec<Span> = self
            .partitions
            .iter()
            .filter(|p| p.role != Some(MbrRole::Logical))
            .map(|p| (p.start, p.end(), format!("partition {}", p.number)))
            .collect();
        for mut set in [outer, inner] {
            set.sort();
            for w in set.windows(2) {
                if w[0].1 > w[1].0 {
                    return Err(format!(
                        "{} (sectors {}..{}) overlaps {} (sectors {}..{})",
                        w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
                    ));
                }
            }
        }
        Ok(())
    }

    /// The grow partition exists and holds data (not the extended container).
    fn check_grow(&self) -> std::result::Result<(), String> {
        if let Some(g) = self.grow {
            match self.partition(g) {
                None => return Err(format!("grow names partition {g}, which the layout lacks")),
                Some(p) if p.is_extended() => {
                    return Err(format!("grow names partition {g}, the extended container"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// An MBR entry: a type byte, 32-bit fields, a number in the range of its role.
fn check_mbr_entry(p: &Partition) -> std::result::Result<(), String> {
    let n = p.number;
    if crate::mbr::type_byte(&p.type_).is_none() {
        return Err(format!("type {:?} is not an MBR type byte", p.type_));
    }
    if p.start > u32::MAX as u64 || p.size > u32::MAX as u64 {
        return Err(format!(
            "start {} or size {} does not fit an MBR's 32-bit fields",
            p.start, p.size
        ));
    }
    match p.role {
        Some(MbrRole::Logical) => {
            // The MBR reader's own bound: a layout with more logical partitions would be
            // written, then refused by every later read of the disk ("no table").
            if !(5..=4 + crate::mbr::MAX_LOGICAL).contains(&n) {
                return Err(format!(
                    "logical partition number outside 5..={} (at most {} logical partitions, mbr::MAX_LOGICAL)",
                    4 + crate::mbr::MAX_LOGICAL,
                    crate::mbr::MAX_LOGICAL
                ));
            }
        }
        _ => {
            if !(1..=4).contains(&n) {
                return Err("primary or extended partition number outside 1..=4".into());
            }
            if p.ebr.is_some() {
                return Err("an EBR on a primary or extended partition".into());
            }
        }
    }
    Ok(())
}

/// Reads the partition table of `disk`. `Ok(None)` when the disk has no valid table.
pub fn read_layout(disk: &dyn BlockIo) -> Result<Option<Layout>> {
    let ss = disk.sector_size();
    let mut lba0 = vec![0u8; ss as usize];
    disk.read_exact_at(&mut lba0, 0)
        .map_err(|err| Error::TableIo {
            what: "reading sector 0".into(),
            err,
        })?;
    if lba0[510] != 0x55 || lba0[511] != 0xaa {
        // No MBR signature; a GPT without a protective MBR is still read.
        return crate::gpt::read(disk);
    }
    let protective = (0..4).any(|i| lba0[446 + i * 16 + 4] == 0xee);
    if protective {
        return crate::gpt::read(disk);
    }
    crate::mbr::read(disk, &lba0)
}

/// Why two layouts are not equal, or `None` when they are (same table kind, sector size,
/// partition numbers, starts, sizes and types; GUIDs, names and the disk size do not count).
pub fn differences(image: &Layout, disk: &Layout) -> Vec<String> {
    let mut why = vec![];
    if image.table != disk.table {
        why.push(format!(
            "table kind: image {} vs disk {}",
            image.table, disk.table
        ));
    }
    if image.sector_size != disk.sector_size {
        why.push(format!(
            "logical sector size: image {} vs disk {}",
            image.sector_size, disk.sector_size
        ));
    }
    for p in &image.partitions {
        match disk.partition(p.number) {
            None => why.push(format!("partition {} missing on disk", p.number)),
            Some(q) => {
                if p.start != q.start || p.size != q.size {
                    why.push(format!(
                        "partition {}: image start {} size {} vs disk start {} size {} (sectors)",
                        p.number, p.start, p.size, q.start, q.size
                    ));
                }
                if !p.type_.eq_ignore_ascii_case(&q.type_) {
                    why.push(format!(
                        "partition {}: type image {} vs disk {}",
                        p.number, p.type_, q.type_
                    ));
                }
            }
        }
    }
    for q in &disk.partitions {
        if image.partition(q.number).is_none() {
            why.push(format!(
                "partition {} on disk is not in the image",
                q.number
            ));
        }
    }
    why
}

/// What restore will do with the partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `true` when the disk's table is equal to the image's and is left alone.
    pub keep_table: bool,
    /// Why the table is rewritten (empty when kept).
    pub reasons: Vec<String>,
    /// The layout the disk ends with.
    pub layout: Layout,
    /// An MBR table cannot address this whole disk (more than 2^32 sectors: 2 TiB at 512
    /// bytes): `Some(bytes past the last addressable sector)`, and the grow partition ends
    /// there. Restore refuses to write such a table unless asked to accept the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbr_capped: Option<u64>,
}

/// Plans the target layout. Refuses (before anything is written) a sector-size mismatch
/// and a disk too small for the fixed partitions plus the grow partition's captured size.
pub fn plan_layout(
    image: &Layout,
    current: Option<&Layout>,
    target_size: u64,
    target_sector: u32,
) -> std::result::Result<Plan, LayoutError> {
    if target_sector != image.sector_size {
        return Err(LayoutError::SectorSize {
            disk: target_sector,
            image: image.sector_size,
        });
    }
    if let Some(cur) = current {
        let why = differences(image, cur);
        if why.is_empty() {
            return Ok(Plan {
                keep_table: true,
                reasons: vec![],
                layout: cur.clone(),
                mbr_capped: None,
            });
        }
    }
    let last_usable = last_usable_sector(image, target_size)?;
    let mut layout = image.clone();
    layout.disk_size = target_size;
    for p in &mut layout.partitions {
        p.filesystem = image.partition(p.number).and_then(|q| q.filesystem.clone());
    }
    let mbr_capped = grow_to_disk(image, &mut layout, last_usable, target_size)?;
    let reasons = match current {
        None => vec!["the disk has no partition table".to_string()],
        Some(cur) => {
            // A disk cloned before, larger than the master: its grow partition already
            // spans the disk. That is the table we would write, so keep it.
            let why = differences(&layout, cur);
            if why.is_empty() {
                return Ok(Plan {
                    keep_table: true,
                    reasons: vec![],
                    layout: cur.clone(),
                    mbr_capped,
                });
            }
            why
        }
    };
    Ok(Plan {
        keep_table: false,
        reasons,
        layout,
        mbr_capped,
    })
}

/// The last sector of a `target_size`-byte disk a partition of `image`'s table kind may
/// use (GPT: before the backup table; MBR: the last sector, at most 2^32 − 1). Refuses a
/// disk too small for where the image's partitions end.
fn last_usable_sector(image: &Layout, target_size: u64) -> std::result::Result<u64, LayoutError> {
    let ss = image.sector_size as u64;
    if ss == 0 {
        return Err(LayoutError::Rule("the image's sector size is 0".into()));
    }
    let sectors = target_size / ss;
    let last_usable = match image.table {
        TableKind::Gpt => GptGeometry::new(image.entries.unwrap_or(128), ss)
            .last_usable(sectors)
            .unwrap_or(0),
        TableKind::Mbr => sectors.saturating_sub(1).min(u32::MAX as u64),
    };
    let needed_end = image.partitions.iter().map(|p| p.end()).max().unwrap_or(0);
    if needed_end > last_usable.saturating_add(1) {
        let needed_sectors = match image.table {
            TableKind::Gpt => needed_end
                .saturating_add(GptGeometry::new(image.entries.unwrap_or(128), ss).tail_sectors()),
            TableKind::Mbr => needed_end,
        };
        return Err(LayoutError::TooSmall {
            disk: target_size,
            needed: needed_sectors.saturating_mul(ss),
        });
    }
    Ok(last_usable)
}

/// Extends `layout`'s grow partition (and, for a logical one, its extended partition) to
/// `last_usable`, when it is the partition that ends last (otherwise it would overlap its
/// neighbour). Returns [`Plan::mbr_capped`]: the bytes of the disk an MBR table cannot
/// reach.
fn grow_to_disk(
    image: &Layout,
    layout: &mut Layout,
    last_usable: u64,
    target_size: u64,
) -> std::result::Result<Option<u64>, LayoutError> {
    let Some(g) = image.grow.or_else(|| image.default_grow()) else {
        return Ok(None);
    };
    let gp = image.partition(g).ok_or_else(|| {
        LayoutError::Rule(format!("the image's grow partition {g} does not exist"))
    })?;
    if !image.data_partitions().all(|p| p.end() <= gp.end()) {
        return Ok(None);
    }
    let new_end = last_usable.saturating_add(1);
    let reach = new_end.saturating_mul(image.sector_size as u64);
    let mut mbr_capped = None;
    if image.table == TableKind::Mbr && target_size > reach {
        mbr_capped = Some(target_size - reach);
    }
    let ebr_region = gp.role == Some(MbrRole::Logical);
    for p in &mut layout.partitions {
        if p.number == g || (ebr_region && p.is_extended()) {
            p.size = new_end.checked_sub(p.start).filter(|s| *s > 0).ok_or_else(|| {
                LayoutError::Rule(format!(
                    "partition {} starts at sector {}, past the disk's last usable sector {last_usable}",
                    p.number, p.start
                ))
            })?;
        }
    }
    Ok(mbr_capped)
}

/// Writes `layout` as the disk's partition table (GPT: protective MBR, primary and backup
/// at the real end of the disk; MBR: primary table and the EBR chain). `boot_code` is the
/// captured first 440 bytes of sector 0.
pub fn write_table(disk: &dyn BlockIo, layout: &Layout, boot_code: &[u8]) -> Result<()> {
    match layout.table {
        TableKind::Gpt => crate::gpt::write(disk, layout, boot_code),
        TableKind::Mbr => crate::mbr::write(disk, layout, boot_code),
    }
}

/// Byte ranges of the disk head (before the first partition) that belong to the table
/// structures and must not be overwritten when the table is kept.
pub fn table_ranges(layout: &Layout) -> Vec<(u64, u64)> {
    let ss = layout.sector_size as u64;
    if ss == 0 {
        // Not a real disk: protect everything a head could cover after the boot code.
        return vec![(440, crate::table::MAX_HEAD)];
    }
    match layout.table {
        TableKind::Gpt => vec![(
            440,
            GptGeometry::new(layout.entries.unwrap_or(128), ss)
                .head_sectors()
                .saturating_mul(ss)
                .saturating_sub(440),
        )],
        TableKind::Mbr => vec![(440, 72)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt_layout() -> Layout {
        let p = |n, start, size| Partition {
            number: n,
            start,
            size,
            type_: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
            guid: Some(format!("00000000-0000-0000-0000-00000000000{n}")),
            name: Some(format!("p{n}")),
            attributes: 0,
            role: None,
            bootable: false,
            ebr: None,
            filesystem: None,
        };
        Layout {
            table: TableKind::Gpt,
            sector_size: 512,
            disk_size: 64 << 20,
            disk_guid: Some("11111111-2222-3333-4444-555555555555".into()),
            first_usable: Some(34),
            entries: Some(128),
            disk_signature: None,
            grow: None,
            partitions: vec![p(1, 2048, 20480), p(2, 22528, 40960)],
        }
    }

    #[test]
    fn equal_layouts_keep_table() {
        let l = gpt_layout();
        let plan = plan_layout(&l, Some(&l), 64 << 20, 512).unwrap();
        assert!(plan.keep_table);
    }

    #[test]
    fn larger_disk_grows_last_partition() {
        let l = gpt_layout();
        let plan = plan_layout(&l, None, 96 << 20, 512).unwrap();
        assert!(!plan.keep_table);
        let p2 = plan.layout.partition(2).unwrap();
        assert_eq!(p2.end(), (96 << 20) / 512 - 33);
        assert_eq!(plan.layout.partition(1).unwrap().size, 20480);
    }

    #[test]
    fn a_disk_grown_by_an_earlier_clone_keeps_its_table() {
        let l = gpt_layout();
        let first = plan_layout(&l, None, 96 << 20, 512).unwrap();
        let again = plan_layout(&l, Some(&first.layout), 96 << 20, 512).unwrap();
        assert!(again.keep_table, "{:?}", again.reasons);
        // But a grow partition that does not reach the end is not what we would write.
        let mut short = first.layout.clone();
        short.partitions[1].size -= 2048;
        assert!(
            !plan_layout(&l, Some(&short), 96 << 20, 512)
                .unwrap()
                .keep_table
        );
    }

    #[test]
    fn refuses_small_disk_and_sector_mismatch() {
        let l = gpt_layout();
        assert!(matches!(
            plan_layout(&l, None, 30 << 20, 512),
            Err(LayoutError::TooSmall { disk, .. }) if disk == 30 << 20
        ));
        assert_eq!(
            plan_layout(&l, None, 64 << 20, 4096),
            Err(LayoutError::SectorSize {
                disk: 4096,
                image: 512
            })
        );
        let e = plan_layout(&l, None, 30 << 20, 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too small"), "{e}");
        let e = plan_layout(&l, None, 64 << 20, 4096)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sector size"), "{e}");
    }

    fn mbr_layout() -> Layout {
        let p = |n, start, size, role, ebr| {
            let t = if role == MbrRole::Extended {
                "0x05"
            } else {
                "0x83"
            };
            Partition::mbr(n, start, size, t, role, ebr)
        };
        Layout {
            table: TableKind::Mbr,
            sector_size: 512,
            disk_size: 64 << 20,
            disk_guid: None,
            first_usable: None,
            entries: None,
            disk_signature: Some("0x5eed1234".into()),
            grow: Some(6),
            partitions: vec![
                p(1, 2048, 20480, MbrRole::Primary, None),
                p(2, 22528, 100000, MbrRole::Extended, None),
                p(5, 24576, 39984, MbrRole::Logical, Some(22528)),
                p(6, 66560, 50000, MbrRole::Logical, Some(64560)),
            ],
        }
    }

    /// `validate` of `l` after `edit` fails with a message holding every needle.
    fn refused(mut l: Layout, edit: impl FnOnce(&mut Layout), needles: &[&str]) {
        edit(&mut l);
        let e = l.validate().expect_err("should be refused").to_string();
        for n in needles {
            assert!(e.contains(n), "{n:?} not in {e:?}");
        }
    }

    #[test]
    fn captured_layouts_validate() {
        gpt_layout().validate().unwrap();
        mbr_layout().validate().unwrap();
    }

    #[test]
    fn validate_refuses_bad_geometry() {
        refused(
            gpt_layout(),
            |l| l.sector_size = 1000,
            &["sector_size 1000"],
        );
        refused(gpt_layout(), |l| l.sector_size = 0, &["sector_size 0"]);
        refused(gpt_layout(), |l| l.disk_size = 0, &["disk_size 0"]);
        refused(gpt_layout(), |l| l.disk_size += 100, &["multiple"]);
        refused(gpt_layout(), |l| l.entries = Some(0), &["entries 0"]);
        refused(
            gpt_layout(),
            |l| l.entries = Some(100_000),
            &["entries 100000"],
        );
        refused(
            gpt_layout(),
            |l| l.first_usable = Some(10),
            &["first_usable 10"],
        );
        refused(gpt_layout(), |l| l.disk_size = 8192, &["no usable sector"]);
    }

    #[test]
    fn validate_refuses_gpt_partitions_outside_or_overlapping() {
        let mut l = gpt_layout();
        l.partitions[1].size = 0;
        assert_eq!(
            l.validate(),
            Err(LayoutError::Partition {
                number: 2,
                msg: "size is 0".into()
            })
        );
        refused(
            gpt_layout(),
            |l| l.partitions[0].start = 10,
            &["partition 1", "usable area 34.."],
        );
        // Past the disk end, into the backup entries.
        refused(
            gpt_layout(),
            |l| l.partitions[1].size = 131072 - 33 - 22528 + 1,
            &[
                "partition 2",
                "outside the usable area",
                "of 67108864 bytes",
            ],
        );
        refused(
            gpt_layout(),
            |l| l.partitions[1].start = u64::MAX - 5,
            &["partition 2", "overflows"],
        );
        refused(
            gpt_layout(),
            |l| l.partitions[1].size = 0,
            &["partition 2", "size is 0"],
        );
        refused(
            gpt_layout(),
            |l| l.partitions[1].number = 200,
            &["partition 200", "1..=128"],
        );
        refused(
            gpt_layout(),
            |l| l.partitions[1].number = 1,
            &["number 1 appears twice"],
        );
        refused(
            gpt_layout(),
            |l| l.partitions[1].start = 20000,
            &["partition 1", "overlaps partition 2"],
        );
        refused(
            gpt_layout(),
            |l| l.partitions[0].type_ = "x".into(),
            &["partition 1", "type"],
        );
        refused(gpt_layout(), |l| l.grow = Some(9), &["grow", "9"]);
    }

    #[test]
    fn validate_refuses_bad_mbr_chains() {
        refused(
            mbr_layout(),
            |l| l.partitions[0].number = 7,
            &["partition 7", "1..=4"],
        );
        refused(
            mbr_layout(),
            |l| l.partitions[3].number = 70,
            &["partition 70", "5..=64"],
        );
        refused(
            mbr_layout(),
            |l| l.partitions[3].number = 7,
            &["partition 7", "without gaps"],
        );
        // A logical partition reaching past its extended container.
        refused(
            mbr_layout(),
            |l| l.partitions[3].size = 60000,
            &["partition 6", "not inside the extended partition 2"],
        );
        // An EBR inside the previous logical partition.
        refused(
            mbr_layout(),
            |l| l.partitions[3].ebr = Some(30000),
            &["the EBR of partition 6", "overlaps"],
        );
        refused(
            mbr_layout(),
            |l| l.partitions[2].ebr = Some(22600),
            &["first EBR"],
        );
        refused(
            mbr_layout(),
            |l| l.partitions[1].role = Some(MbrRole::Primary),
            &["without an extended partition"],
        );
        refused(
            mbr_layout(),
            |l| l.partitions[0].start = 30000,
            &["partition 1", "partition 2", "overlaps"],
        );
        refused(
            mbr_layout(),
            |l| l.partitions[0].start = 0,
            &["partition 1", "usable area 1.."],
        );
        refused(mbr_layout(), |l| l.grow = Some(2), &["grow", "extended"]);
    }

    /// An MBR image's grow partition ends at 2^32 sectors on a larger disk; the plan says
    /// how much of the disk lies past that (restore refuses unless told otherwise).
    #[test]
    fn mbr_plan_on_a_disk_past_2_tib_reports_the_cap() {
        let l = mbr_layout();
        let tib = 1u64 << 40;
        let plan = plan_layout(&l, None, 3 * tib, 512).unwrap();
        assert_eq!(plan.mbr_capped, Some(tib));
        let last = plan
            .layout
            .partitions
            .iter()
            .map(|p| p.end())
            .max()
            .unwrap();
        assert_eq!(
            last,
            1 << 32,
            "the grow partition ends at the last MBR sector"
        );
        plan.layout.validate().unwrap();
        // Exactly 2 TiB (2^32 sectors): sector 0 holds the table, so everything up to
        // the end is addressable; not capped.
        assert_eq!(
            plan_layout(&l, None, 2 * tib, 512).unwrap().mbr_capped,
            None
        );
        assert_eq!(
            plan_layout(&l, None, 2 * tib + 512, 512)
                .unwrap()
                .mbr_capped,
            Some(512)
        );
        // GPT has no cap.
        assert_eq!(
            plan_layout(&gpt_layout(), None, 3 * tib, 512)
                .unwrap()
                .mbr_capped,
            None
        );
        // A table kept as it is (the same disk cloned before, capped): the cap is still
        // reported, so the summary can say so.
        let again = plan_layout(&l, Some(&plan.layout), 3 * tib, 512).unwrap();
        assert!(again.keep_table);
        assert_eq!(again.mbr_capped, Some(tib));
    }

    #[test]
    fn plan_layout_of_a_hostile_disk_layout_does_not_panic() {
        let img = gpt_layout();
        let mut cur = gpt_layout();
        cur.partitions[1].start = u64::MAX;
        cur.partitions[1].size = u64::MAX;
        cur.sector_size = 0;
        let _ = plan_layout(&img, Some(&cur), 96 << 20, 512);
        let _ = plan_layout(&cur, Some(&img), u64::MAX, 0);
        let _ = plan_layout(&cur, None, u64::MAX, 512);
        let _ = table_ranges(&cur);
        let _ = cur.first_used_sector();
        let _ = cur.default_grow();
    }

    #[test]
    fn differences_name_the_partition() {
        let a = gpt_layout();
        let mut b = gpt_layout();
        b.partitions[1].size += 8;
        let d = differences(&a, &b);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("partition 2"), "{d:?}");
    }
}
