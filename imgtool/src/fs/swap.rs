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

/// Rewrites a captured header page for a partition of `part_size` bytes. The page size
/// is where the `SWAPSPACE2` signature sits; bytes without one (an image's chunk is
/// input too: a short or foreign one must not panic the agent) are left as they are.
pub fn fit_header(page: &mut [u8], part_size: u64) {
    let Some(ps) = PAGE_SIZES.into_iter().find(|&ps| {
        let ps = ps as usize;
        page.len() >= ps && &page[ps - 10..ps] == b"SWAPSPACE2"
    }) else {
        return;
    };
    let last_page = (part_size / ps).saturating_sub(1).min(u32::MAX as u64) as u32;
    page[1028..1032].copy_from_slice(&last_page.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_header_sets_last_page_and_ignores_what_is_not_a_header() {
        let mut page = vec![0u8; 4096];
        page[4086..].copy_from_slice(b"SWAPSPACE2");
        fit_header(&mut page, 64 << 20);
        assert_eq!(
            u32::from_le_bytes(page[1028..1032].try_into().unwrap()),
            16383
        );
        // A short chunk (the page size used to be its length: 0 divided, < 1032 sliced
        // past the end) and a page without the signature are left untouched.
        for len in [0usize, 100, 1031, 4096] {
            let mut b = vec![7u8; len];
            fit_header(&mut b, 64 << 20);
            assert!(b.iter().all(|x| *x == 7), "{len}");
        }
    }
}
