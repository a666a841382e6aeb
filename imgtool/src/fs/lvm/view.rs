//! A logical volume seen as a disk ([`LvView`]): reads at LV offsets go through its
//! segments to the PV's bytes, so the ordinary file-system probes run on it unchanged;
//! and the way back, LV byte ranges split at segment boundaries into PV byte ranges
//! ([`LvView::to_pv`]). Read-only.

use super::meta::LvMap;
use crate::disk::BlockIo;
use crate::fs::PartView;
use std::io;

pub struct LvView<'a> {
    part: &'a PartView<'a>,
    /// `(LV offset, PV offset, length)`, contiguous from 0 (checked by `meta`).
    segs: &'a [(u64, u64, u64)],
    size: u64,
}

impl<'a> LvView<'a> {
    pub fn new(part: &'a PartView<'a>, lv: &'a LvMap) -> Self {
        let size = lv.segs.last().map(|(o, _, l)| o + l).unwrap_or(0);
        LvView {
            part,
            segs: &lv.segs,
            size,
        }
    }

    /// The segment holding LV byte `pos`.
    fn seg(&self, pos: u64) -> Option<&(u64, u64, u64)> {
        let i = self.segs.partition_point(|s| s.0 + s.2 <= pos);
        self.segs.get(i).filter(|s| s.0 <= pos)
    }

    /// LV byte range `(off, len)` as PV byte ranges, split at segment boundaries; the
    /// part outside the LV is dropped (the probes keep to their file system anyway).
    pub fn to_pv(&self, off: u64, len: u64, out: &mut Vec<(u64, u64)>) {
        let end = off.saturating_add(len).min(self.size);
        let mut pos = off;
        while pos < end {
            let Some(&(lo, po, l)) = self.seg(pos) else {
                return;
            };
            let n = (lo + l).min(end) - pos;
            out.push((po + (pos - lo), n));
            pos += n;
        }
    }
}

impl BlockIo for LvView<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let mut pos = offset;
        let mut done = 0usize;
        while pos < end {
            let &(lo, po, l) = self.seg(pos).ok_or(io::ErrorKind::UnexpectedEof)?;
            let n = ((lo + l).min(end) - pos) as usize;
            self.part.read(&mut buf[done..done + n], po + (pos - lo))?;
            pos += n as u64;
            done += n;
        }
        Ok(())
    }
    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::other("an LV view is read-only"))
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        512
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn reads_and_ranges_cross_segments() {
        let disk = MemDisk::from_vec((0..=255u8).cycle().take(64 << 10).collect(), 512);
        let part = PartView {
            disk: &disk,
            start: 0,
            size: 64 << 10,
        };
        // LV bytes 0..4096 at PV 8192, 4096..12288 at PV 0.
        let lv = LvMap {
            name: "x".into(),
            segs: vec![(0, 8192, 4096), (4096, 0, 8192)],
        };
        let v = LvView::new(&part, &lv);
        assert_eq!(v.size(), 12288);
        let mut buf = vec![0u8; 200];
        v.read_exact_at(&mut buf, 4000).unwrap();
        let want: Vec<u8> = (8192 + 4000..8192 + 4096)
            .chain(0..104)
            .map(|i| (i % 256) as u8)
            .collect();
        assert_eq!(buf, want);
        assert!(v.read_exact_at(&mut buf, 12200).is_err());
        let mut out = vec![];
        v.to_pv(4000, 200, &mut out);
        assert_eq!(out, vec![(12192, 96), (0, 104)]);
        out.clear();
        v.to_pv(12000, 1 << 20, &mut out);
        assert_eq!(out, vec![(7904, 288)]);
    }
}
