//! Linux swap (`SWAPSPACE2`): only the header page is stored; on restore the page is
//! written back with `last_page` set for the target partition, as `mkswap -U -L` would.

use super::{Fill, FsInfo, PartView};
use std::io;

const PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];

/// Probes for a swap header; `None` when absent.
pub fn probe(part: &PartView) -> io::Result<Option<FsInfo>> {
    for ps in PAGE_SIZES {
        if part.size < ps * 2 {
            continue;
        }
        let mut sig = [0u8; 10];
        part.read(&mut sig, ps - 10)?;
        if &sig == b"SWAPSPACE2" {
            let mut h = vec![0u8; 1100];
            part.read(&mut h, 0)?;
            return Ok(Some(FsInfo {
                kind: "swap".into(),
                uuid: Some(super::uuid_string(&h[1036..1052])),
                label: super::label_string(&h[1052..1068]),
                fs_size: part.size,
                used: vec![(0, ps)],
                fill: Fill::Keep,
            }));
        }
    }
    Ok(None)
}

/// Rewrites a captured header page for a partition of `part_size` bytes.
pub fn fit_header(page: &mut [u8], part_size: u64) {
    let ps = page.len() as u64;
    let last_page = (part_size / ps).saturating_sub(1).min(u32::MAX as u64) as u32;
    page[1028..1032].copy_from_slice(&last_page.to_le_bytes());
}
