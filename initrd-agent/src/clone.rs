//! The clone itself, the same for PID 1 and for `initrd-agent clone`: load the image
//! (manifest, layout) from the server, compare layouts, restore chunk by chunk with
//! per-chunk sha256 (imgtool's restore: table rewritten only when it differs, table and
//! first MiB last), read everything back, grow, report.

use crate::report::Reporter;
use imgtool::disk::Disk;
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::restore::{restore, RestoreOptions, RestoreReport};
use imgtool::source::HttpSource;
use std::path::Path;
use std::sync::Arc;

/// Clones `{server}/{image}` onto `target`.
pub fn clone(
    server: &str,
    image: &str,
    target: &Path,
    attempts: u32,
    rep: &Arc<Reporter>,
) -> anyhow::Result<RestoreReport> {
    let url = format!("{}/{}", server.trim_end_matches('/'), image);
    rep.set_image(image, "primary");
    rep.phase("layout", &format!("reading image {url}"));
    let mut source = HttpSource::new(&url);
    source.attempts = attempts;
    let img =
        Image::load(Arc::new(source)).map_err(|e| anyhow::anyhow!("loading image {url}: {e}"))?;
    let disk =
        Disk::open_rw_direct(target).map_err(|e| anyhow::anyhow!("opening target disk: {e}"))?;
    let plan = imgtool::restore::plan(&img, &disk, target).map_err(|e| anyhow::anyhow!("{e}"))?;
    if plan.keep_table {
        rep.phase(
            "layout",
            &format!(
                "layout matches image {}: partition table kept, no repartitioning",
                &img.id()[..12]
            ),
        );
    } else {
        rep.phase(
            "partitioning",
            &format!(
                "layout differs ({}); repartitioning {}",
                plan.reasons.join("; "),
                target.display()
            ),
        );
    }
    let r2 = rep.clone();
    let progress = Progress::callback(Arc::new(move |what, done, total| {
        r2.progress(what, done, total)
    }));
    let report = restore(
        &img,
        &disk,
        &RestoreOptions {
            partitions: None,
            dry_run: false,
            threads: 0,
            verify: true,
        },
        &progress,
    )
    .map_err(|e| anyhow::anyhow!("restoring {url} onto {}: {e}", target.display()))?;
    for r in &report.regions {
        if let Some((a, b)) = r.grown {
            rep.say(&format!(
                "{}: {} grown from {} to {} MiB",
                r.name,
                r.filesystem,
                a >> 20,
                b >> 20
            ));
        }
    }
    rep.phase(
        "done",
        &format!(
            "image {} on {} verified ({} payload bytes fetched)",
            &img.id()[..12],
            target.display(),
            img.source.bytes_fetched()
        ),
    );
    Ok(report)
}
