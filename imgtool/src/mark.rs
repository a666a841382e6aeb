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
//! then see no table on a disk whose restore was interrupted, and the next restore lays
//! the table out again and clones in full. Only signature bytes are touched; the entries,
//! CRCs and boot code are never changed by the mark.

use crate::disk::BlockIo;
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
    pub fn set(disk: &dyn BlockIo) -> io::Result<InProgress> {
        let ss = u64::from(disk.sector_size());
        let sectors = disk.size() / ss;
        let mut places: Vec<(u64, &[u8])> = vec![(510, &MBR_SIGNATURE)];
        // The primary GPT header, the backup it points at and the disk's last sector
        // (where a reader looks when the primary is gone); deduplicated below.
        let mut lbas = vec![1u64];
        if sectors > 2 {
            let mut h = vec![0u8; ss as usize];
            disk.read_exact_at(&mut h, ss)?;
            if &h[..8] == GPT_SIGNATURE {
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
        let mut mark = InProgress::default();
        for (at, sig) in places {
            let end = at.checked_add(sig.len() as u64);
            if end.is_none_or(|e| e > disk.size()) {
                continue;
            }
            let mut cur = vec![0u8; sig.len()];
            disk.read_exact_at(&mut cur, at)?;
            if cur == sig {
                mark.saved.push((at, cur));
            }
        }
        for (at, sig) in &mark.saved {
            disk.write_all_at(&vec![0u8; sig.len()], *at)?;
        }
        disk.flush()?;
        Ok(mark)
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
}
