//! The in-progress mark of a restore that keeps the disk's partition table.
//!
//! A restore that rewrites the table wipes the old one first and writes the new one last,
//! so an interrupted clone leaves a disk without a table: nothing boots from it and the
//! next clone starts over. A re-clone onto an *equal* table keeps that table, so without a
//! mark an interrupted one would leave a valid table, clean-looking file systems and the
//! old boot code around mixed old and new file data — a disk that looks bootable and is
//! not what any image holds.
//!
//! The mark makes the kept table invalid for as long as data is being written: before the
//! first data write it clears the table's signatures (the `55 AA` of sector 0 and the
//! `EFI PART` magic of the primary and every backup GPT header), and it puts the very same
//! bytes back as the last write of the restore. Firmware, the kernel and our own reader
//! then see no table on a disk whose restore was interrupted. Only signature bytes are
//! touched; the entries, CRCs and boot code are never changed by the mark.
//!
//! The next restore recognises the mark ([`InProgress::find`]): the disk read with the
//! cleared signatures put back (in memory) holds a valid table — a GPT header's CRC
//! covers its signature, so zeros where `EFI PART` was plus a header whose CRC matches
//! with it are no accident. Restore then treats the disk as having that table (a delta
//! re-clone resumes: the chunks already written are not fetched again) and puts the very
//! signatures back as its last write, as if it had set the mark itself.

use crate::disk::BlockIo;
use crate::table::{Layout, TableKind};
use std::io;

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";

/// The signatures a mark cleared: where each was and its original bytes.
#[derive(Debug, Default)]
pub struct InProgress {
    saved: Vec<(u64, Vec<u8>)>,
}

impl InProgress {
    /// Clears every table signature found on `disk` and returns what to put back. A disk
    /// without a table gets no mark (there is nothing that could look bootable).
    ///
    /// A signature an earlier, interrupted `set` cleared already (it failed or lost power
    /// half way) is put back too: a GPT header holding zeros where `EFI PART` goes whose
    /// CRC matches with it, and sector 0's `55 AA` in front of a GPT when sector 0 holds a
    /// protective entry (type `0xEE`). Without that, a rerun would see the GPT (our reader
    /// does not need the protective MBR), save only the signatures still there, and leave
    /// a disk Linux finds no partitions on.
    pub fn set(disk: &dyn BlockIo) -> io::Result<InProgress> {
        let mut mark = InProgress::default();
        let mut live = vec![];
        let mut zeroed = vec![];
        for (at, sig) in places(disk)? {
            let end = at.checked_add(sig.len() as u64);
            if end.is_none_or(|e| e > disk.size()) {
                continue;
            }
            let mut cur = vec![0u8; sig.len()];
            disk.read_exact_at(&mut cur, at)?;
            if cur == sig {
                live.push(at);
                mark.saved.push((at, cur));
            } else if cur.iter().all(|b| *b == 0) {
                zeroed.push((at, sig.to_vec()));
            }
        }
        mark.saved
            .extend(cleared_before(disk, &mark.saved, &zeroed)?);
        mark.saved.sort_by_key(|(at, _)| *at);
        for (at, sig) in &mark.saved {
            if live.contains(at) {
                disk.write_all_at(&vec![0u8; sig.len()], *at)?;
            }
        }
        disk.flush()?;
        Ok(mark)
    }

    /// A mark an interrupted restore left on `disk`, and the table it hides: `None` when
    /// the disk has a readable table, or when putting cleared signatures back yields
    /// none. Only places holding zeros are candidates; of those, the GPT headers kept are
    /// the ones whose CRC matches with the signature back, and sector 0's is kept for an
    /// MBR table and for a protective MBR (type `0xEE`), never invented in front of a
    /// GPT that had none.
    pub fn find(disk: &dyn BlockIo) -> io::Result<Option<(Layout, InProgress)>> {
        if crate::layout::read_layout(disk).ok().flatten().is_some() {
            return Ok(None);
        }
        let mut cand = vec![];
        for (at, sig) in places(disk)? {
            let end = at.checked_add(sig.len() as u64);
            if end.is_none_or(|e| e > disk.size()) {
                continue;
            }
            let mut cur = vec![0u8; sig.len()];
            disk.read_exact_at(&mut cur, at)?;
            if cur.iter().all(|b| *b == 0) {
                cand.push((at, sig.to_vec()));
            }
        }
        if cand.is_empty() {
            return Ok(None);
        }
        let view = Unmarked {
            disk,
            patches: &cand,
        };
        // A blank sector 0 with `55 AA` put back reads as an empty MBR: no mark.
        let Some(layout) = crate::layout::read_layout(&view)
            .ok()
            .flatten()
            .filter(|l| !l.partitions.is_empty())
        else {
            return Ok(None);
        };
        let ss = u64::from(disk.sector_size());
        let mut s0 = vec![0u8; 512];
        view.read_exact_at(&mut s0, 0)?;
        let protective = (0..4).any(|i| s0[446 + i * 16 + 4] == 0xee);
        let mut saved = vec![];
        for (at, sig) in cand.iter().cloned() {
            let keep = if at == 510 {
                layout.table == TableKind::Mbr || protective
            } else {
                layout.table == TableKind::Gpt && gpt_header_valid(&view, at, ss)?
            };
            if keep {
                saved.push((at, sig));
            }
        }
        Ok(Some((layout, InProgress { saved })))
    }

    /// Whether anything was marked.
    pub fn is_set(&self) -> bool {
        !self.saved.is_empty()
    }

    /// Puts the signatures back (the restore's last write) and flushes.
    pub fn clear(self, disk: &dyn BlockIo) -> io::Result<()> {
        for (at, sig) in &self.saved {
            disk.write_all_at(sig, *at)?;
        }
        disk.flush()
    }
}

/// Of the places holding zeros (`zeroed`), those an interrupted mark cleared, next to the
/// signatures still there (`live`): GPT headers whose CRC matches with `EFI PART` put
/// back, then sector 0's `55 AA` when a GPT header is there (live or cleared) and sector 0
/// holds a protective entry (type `0xEE`).
fn cleared_before(
    disk: &dyn BlockIo,
    live: &[(u64, Vec<u8>)],
    zeroed: &[(u64, Vec<u8>)],
) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let ss = u64::from(disk.sector_size());
    let mut found = vec![];
    for (at, sig) in zeroed.iter().filter(|(at, _)| *at != 510) {
        let one = [(*at, sig.clone())];
        let view = Unmarked {
            disk,
            patches: &one,
        };
        if gpt_header_valid(&view, *at, ss)? {
            found.push((*at, sig.clone()));
        }
    }
    let gpt = found.iter().chain(live).any(|(at, _)| *at != 510);
    if gpt && zeroed.iter().any(|(at, _)| *at == 510) {
        let mut s0 = vec![0u8; 512];
        disk.read_exact_at(&mut s0, 0)?;
        if (0..4).any(|i| s0[446 + i * 16 + 4] == 0xee) {
            found.push((510, MBR_SIGNATURE.to_vec()));
        }
    }
    Ok(found)
}

/// Where table signatures are: sector 0's `55 AA`, and `EFI PART` at the primary GPT
/// header, the backup it points at (its `alternate_lba` field, which the mark leaves
/// alone) and the disk's last sector (where a reader looks when the primary is gone).
fn places(disk: &dyn BlockIo) -> io::Result<Vec<(u64, &'static [u8])>> {
    let ss = u64::from(disk.sector_size());
    let sectors = disk.size() / ss;
    let mut places: Vec<(u64, &'static [u8])> = vec![(510, &MBR_SIGNATURE)];
    let mut lbas = vec![1u64];
    if sectors > 2 {
        let mut h = vec![0u8; ss as usize];
        disk.read_exact_at(&mut h, ss)?;
        // A cleared primary header still names its backup.
        if &h[..8] == GPT_SIGNATURE || h[..8].iter().all(|b| *b == 0) {
            let alt = crate::bytes::le64(&h, 32);
            if alt > 1 && alt < sectors {
                lbas.push(alt);
            }
        }
        lbas.push(sectors - 1);
    }
    lbas.sort_unstable();
    lbas.dedup();
    for lba in lbas {
        if let Some(at) = lba.checked_mul(ss) {
            places.push((at, GPT_SIGNATURE));
        }
    }
    Ok(places)
}

/// Whether the sector at byte `at` of `disk` holds a GPT header whose CRC matches.
fn gpt_header_valid(disk: &dyn BlockIo, at: u64, ss: u64) -> io::Result<bool> {
    let mut h = vec![0u8; ss as usize];
    if at.checked_add(ss).is_none_or(|e| e > disk.size()) {
        return Ok(false);
    }
    disk.read_exact_at(&mut h, at)?;
    let hsize = crate::bytes::le32(&h, 12) as usize;
    if &h[..8] != GPT_SIGNATURE || !(92..=h.len()).contains(&hsize) {
        return Ok(false);
    }
    let want = crate::bytes::le32(&h, 16);
    h[16..20].fill(0);
    Ok(crc32fast::hash(&h[..hsize]) == want)
}

/// A disk read with signature bytes put back in memory; writes are refused.
struct Unmarked<'a> {
    disk: &'a dyn BlockIo,
    patches: &'a [(u64, Vec<u8>)],
}

impl BlockIo for Unmarked<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.read_exact_at(buf, offset)?;
        let end = offset.saturating_add(buf.len() as u64);
        for (at, bytes) in self.patches {
            for (k, b) in bytes.iter().enumerate() {
                let pos = at.saturating_add(k as u64);
                if pos >= offset && pos < end {
                    buf[(pos - offset) as usize] = *b;
                }
            }
        }
        Ok(())
    }
    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a view of a marked disk is read-only",
        ))
    }
    fn size(&self) -> u64 {
        self.disk.size()
    }
    fn sector_size(&self) -> u32 {
        self.disk.sector_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn clears_and_restores_only_the_signatures() {
        let d = MemDisk::new(1 << 20, 512);
        let mut s0 = vec![7u8; 512];
        s0[510..].copy_from_slice(&MBR_SIGNATURE);
        d.write_all_at(&s0, 0).unwrap();
        let mut h = vec![9u8; 512];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[32..40].copy_from_slice(&2047u64.to_le_bytes());
        d.write_all_at(&h, 512).unwrap();
        d.write_all_at(&h, 2047 * 512).unwrap();
        let before = d.bytes();
        let mark = InProgress::set(&d).unwrap();
        assert!(mark.is_set());
        let during = d.bytes();
        assert_eq!(&during[510..512], &[0, 0]);
        assert_eq!(&during[512..520], &[0u8; 8]);
        assert_eq!(&during[2047 * 512..2047 * 512 + 8], &[0u8; 8]);
        let changed = before.iter().zip(&during).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 2 + 8 + 8, "only signature bytes change");
        assert!(crate::layout::read_layout(&d).unwrap().is_none());
        mark.clear(&d).unwrap();
        assert_eq!(d.bytes(), before);
    }

    #[test]
    fn a_disk_without_a_table_is_not_marked() {
        let d = MemDisk::new(1 << 20, 512);
        let mark = InProgress::set(&d).unwrap();
        assert!(!mark.is_set());
        assert!(d.bytes().iter().all(|b| *b == 0));
    }

    fn table(kind: TableKind) -> Layout {
        let gpt = kind == TableKind::Gpt;
        Layout {
            table: kind,
            sector_size: 512,
            disk_size: 8 << 20,
            disk_guid: None,
            first_usable: gpt.then_some(34),
            entries: gpt.then_some(128),
            disk_signature: None,
            grow: Some(1),
            partitions: vec![crate::table::Partition::plain(
                1,
                2048,
                4096,
                if gpt {
                    "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
                } else {
                    "0x83"
                },
            )],
        }
    }

    #[test]
    fn a_mark_is_found_again_with_its_table_and_cleared_as_set() {
        for kind in [TableKind::Gpt, TableKind::Mbr] {
            let d = MemDisk::new(8 << 20, 512);
            crate::layout::write_table(&d, &table(kind), &[]).unwrap();
            let before = d.bytes();
            let want = crate::layout::read_layout(&d).unwrap().unwrap();
            assert!(InProgress::find(&d).unwrap().is_none(), "not marked yet");
            let mark = InProgress::set(&d).unwrap();
            assert!(crate::layout::read_layout(&d).unwrap().is_none());
            let (found, again) = InProgress::find(&d).unwrap().expect("{kind} mark found");
            assert_eq!(
                crate::layout::differences(&want, &found),
                Vec::<String>::new()
            );
            assert_eq!(again.saved, mark.saved, "{kind}: the same places");
            again.clear(&d).unwrap();
            assert_eq!(d.bytes(), before, "{kind}: the table is back byte for byte");
        }
    }

    /// Review S4 #4: a mark interrupted after some signatures were cleared (here each
    /// single one, and `55 AA` plus the primary) is completed by the rerun's `set`, and
    /// its `clear` puts back every signature, `55 AA` of the protective MBR included.
    #[test]
    fn a_partial_mark_is_completed_and_cleared_whole() {
        let d = MemDisk::new(8 << 20, 512);
        crate::layout::write_table(&d, &table(TableKind::Gpt), &[]).unwrap();
        let before = d.bytes();
        let last = (8u64 << 20) - 512;
        let partials: [&[u64]; 4] = [&[510], &[512], &[last], &[510, 512]];
        for cleared in partials {
            for at in cleared {
                let len = if *at == 510 { 2 } else { 8 };
                d.write_all_at(&vec![0u8; len], *at).unwrap();
            }
            let mark = InProgress::set(&d).unwrap();
            assert!(
                crate::layout::read_layout(&d).unwrap().is_none(),
                "{cleared:?}"
            );
            assert_eq!(mark.saved.len(), 3, "{cleared:?}: 55 AA, primary, backup");
            mark.clear(&d).unwrap();
            assert_eq!(d.bytes(), before, "{cleared:?}: the table is back whole");
        }
    }

    /// Zeros at 510 in front of a GPT are only a cleared `55 AA` when sector 0 holds a
    /// protective entry; a header-less disk with an `0xEE` byte gets nothing invented.
    #[test]
    fn no_signature_is_invented() {
        let d = MemDisk::new(8 << 20, 512);
        let mut s0 = vec![0u8; 512];
        s0[446 + 4] = 0xee;
        d.write_all_at(&s0, 0).unwrap();
        let mark = InProgress::set(&d).unwrap();
        assert!(!mark.is_set(), "no GPT header: nothing to put back");
        assert!(d.bytes()[510..512] == [0, 0]);
    }

    #[test]
    fn a_blank_or_foreign_disk_is_not_a_mark() {
        let d = MemDisk::new(8 << 20, 512);
        assert!(InProgress::find(&d).unwrap().is_none(), "blank");
        // Zeros where the signatures go, but a header whose CRC does not match: no GPT.
        let mut h = vec![0u8; 512];
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[16..20].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        d.write_all_at(&h, 512).unwrap();
        assert!(InProgress::find(&d).unwrap().is_none(), "bad CRC");
    }
}
