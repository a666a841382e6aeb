//! The 2 TiB limit of an MBR table: restore refuses a table it would write whose grow
//! partition MBR's 32-bit sector numbers would cap short of the disk's end (issue 12),
//! unless told to accept the capped size.

use super::Plan;
use crate::error::{Error, Result};
use std::path::Path;

/// An MBR table this restore would write that cannot reach the end of the disk (its grow
/// partition capped at 2^32 sectors) is refused, naming the limit, the disk's size and the
/// ways out, unless `accept` (`--mbr-cap`). A kept table is what the disk already has.
pub(super) fn check_mbr_cap(plan: &Plan, disk_size: u64, accept: bool, tpath: &Path) -> Result<()> {
    let Some(beyond) = plan.mbr_capped else {
        return Ok(());
    };
    if accept || plan.keep_table {
        return Ok(());
    }
    let ss = plan.layout.sector_size as u64;
    let limit = (1u64 << 32).saturating_mul(ss);
    Err(Error::Refused {
        device: tpath.to_path_buf(),
        reason: format!(
            "the image's partition table is MBR, which addresses at most 2^32 sectors of {ss} bytes ({}); this disk is {} ({disk_size} bytes), so its grow partition would be capped and {} at the end left unused. Capture the master with a GPT table, or restore onto a disk of at most {}, or pass --mbr-cap to accept the capped size",
            tib(limit),
            tib(disk_size),
            tib(beyond),
            tib(limit),
        ),
    })
}

/// `n` bytes in TiB, one decimal (the 2 TiB message's unit).
fn tib(n: u64) -> String {
    format!("{:.1} TiB", n as f64 / (1u64 << 40) as f64)
}
