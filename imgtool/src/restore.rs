//! Restore: the layout rules of DESIGN.md, applied to one target disk.
//!
//! [`restore`] runs five named phases, chosen so that bad input destroys nothing and an
//! interrupted restore never looks bootable:
//! 1. **plan** ([`plan_restore`]): checks that write nothing. The target is not
//!    mounted/swapped-on; the layout plan (sector size, disk size, the planned table
//!    valid); the selected regions, each placed inside its partition of the target; the
//!    disk head one contiguous range; when the table is kept and `delta` is on, which
//!    chunks the target already holds ([`delta`]: read and hashed on all cores; the
//!    others are fetched); with a local image, the sha256 of every frame to be written
//!    (catches flipped or truncated payloads). The whole plan is validated before the
//!    first write (docs/TRUST.md).
//! 2. **head** ([`prepare_table`], [`fetch_head`]): when the table changes the old one is
//!    wiped (sector 0, the GPT headers); when it is kept its signatures are cleared
//!    ([`crate::mark`]) from before the first data write until the last write. Then the
//!    disk head is fetched and verified (written only in *finalize*).
//! 3. **stream** ([`stream_partitions`]; only the chunks to fetch, skipped ones go to
//!    the skip hook): first, partitions whose free space is kept
//!    (parsed file systems) get the foreign-signature areas the image does not cover
//!    cleared ([`crate::wipe`]: first and last MiB, LUKS2's second headers, btrfs
//!    mirrors; `restore/free_space.rs`), so no old btrfs, XFS, LVM or LUKS header
//!    survives beside the restored one; then partitions, chunk by chunk (decompress,
//!    sha256 of the raw bytes, hand the frame to the relay hook, write; with `verify`,
//!    read it back at once and compare); unknown file systems get their gaps zeroed
//!    (`zero_fill`); swap gets its header fitted to the size. A parsed file
//!    system's free space, a grown tail included, is never zeroed.
//! 4. **grow** ([`grow_filesystems`], [`crate::grow`]): ext file systems that got a larger
//!    partition are checked and grown through the whole-disk device (`e2fsck -fp`,
//!    `resize2fs DEV?offset=N`); XFS is mounted from a loop device over the partition's
//!    bytes and grown with its ioctls.
//! 5. **finalize** ([`finalize`]): last, the disk head (boot code, boot-loader gap) and
//!    the partition table; the kept table's mark is cleared; the kernel is told the
//!    partitions (`BLKPG`, `BLKRRPART` fallback).

use crate::disk::{usage, BlockIo, Disk};
use crate::error::{Error, Result};
use crate::frame::{decode_frame, read_frame, FrameStream};
use crate::fs::{swap, Fill};
use crate::layout::{plan_layout, read_layout, table_ranges, Plan};
use crate::manifest::{Image, Region};
use crate::mark::InProgress;
use crate::pool::run_pipeline;
use crate::progress::Progress;
use crate::verify::check_some_frames;
use serde::Serialize;
use std::path::Path;

pub mod delta;
mod free_space;
mod mbr_cap;

pub use free_space::fill_gaps;
use free_space::{free_space_plan, wipe_signatures, zero_fill};
use mbr_cap::check_mbr_cap;

pub use delta::{ChunkCounts, DeltaPlan};

/// Called as soon as chunk `i` of a region was verified (raw sha256), before it is
/// written, with its compressed frame: a relay serves it from then on (cut-through; the
/// disk write and read-back of this node are not on the chain's critical path).
pub type ChunkHook = std::sync::Arc<dyn Fn(&Region, usize, Vec<u8>) + Send + Sync>;

/// Called for chunk `i` of a region when a delta restore found it already correct on
/// the target (its bytes there hash to the manifest's sha256): it is neither fetched nor
/// written, and a relay serves it from the disk (re-read, re-compressed and checked
/// against `frame_sha256`). Called before the first chunk is fetched.
pub type SkipHook = std::sync::Arc<dyn Fn(&Region, usize) + Send + Sync>;

/// Called once every chunk is written and read back, before file systems grow.
pub type Hold = std::sync::Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
pub struct RestoreOptions {
    /// Partitions to restore; `None` = all the image holds.
    pub partitions: Option<Vec<u32>>,
    pub dry_run: bool,
    /// Worker threads; 0 = all cores.
    pub threads: usize,
    /// Read every chunk back from the target right after writing it and compare it with
    /// the verified bytes (before file systems are grown). The check runs while later
    /// chunks are still arriving, so it adds no pass at the end; `O_DIRECT` reads
    /// whenever the writes were direct.
    pub verify: bool,
    pub on_chunk: Option<ChunkHook>,
    /// Delta re-clone (default on): when the target's table is kept (its layout equals
    /// the image's), hash every chunk's bytes on the target first and fetch and write only
    /// the chunks that differ ([`delta`]). Off (`--full`, `netboot.delta=0`): every chunk
    /// is fetched and written.
    pub delta: bool,
    /// See [`SkipHook`].
    pub on_skip: Option<SkipHook>,
    pub before_grow: Option<Hold>,
    /// Accept an MBR table whose grow partition is capped at the last sector MBR can
    /// address (2^32 sectors: 2 TiB at 512 bytes) on a larger disk, leaving the rest of
    /// the disk unused. Without it such a restore is refused before any write.
    pub mbr_cap: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            partitions: None,
            dry_run: false,
            threads: 0,
            verify: false,
            on_chunk: None,
            delta: true,
            on_skip: None,
            before_grow: None,
            mbr_cap: false,
        }
    }
}

/// What restore did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub target: String,
    pub image_id: String,
    pub dry_run: bool,
    pub plan: Plan,
    pub regions: Vec<RegionReport>,
    /// The target's chunks were checked and only differing ones fetched ([`delta`]).
    pub delta: bool,
    /// Why every chunk was fetched, when `delta` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_reason: Option<String>,
    /// Chunks checked on the target, skipped and fetched; bytes fetched.
    pub chunks: ChunkCounts,
    /// Payload bytes the source actually transferred (HTTP, retries included; 0 for a
    /// local image).
    pub source_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    pub name: String,
    pub filesystem: String,
    /// Bytes of image data written.
    pub bytes: u64,
    /// Disk byte offset where the region starts.
    pub disk_offset: u64,
    /// Partition size on the target.
    pub target_size: u64,
    /// `Some((old, new))` file-system byte sizes when it was grown.
    pub grown: Option<(u64, u64)>,
    /// Foreign-signature areas cleared (partition byte offset, length): a partition whose
    /// free space is kept ([`Fill::Keep`]) gets its first and last MiB and the btrfs
    /// mirrors cleared, except what the image writes ([`crate::wipe`]).
    pub wipe: Vec<(u64, u64)>,
    /// Bytes of `wipe`.
    pub wiped_bytes: u64,
    /// Bytes of free space zeroed (only for unknown contents, [`Fill::Zero`]).
    pub zeroed_bytes: u64,
}

/// Plans without writing: reads the target's table and applies the layout rules. A table
/// hidden by the in-progress mark of an interrupted restore counts as the disk's table
/// ([`InProgress::find`]): the rerun keeps it, and a delta restore resumes.
pub fn plan(image: &Image, target: &dyn BlockIo, target_path: &Path) -> Result<Plan> {
    let current = match read_layout(target).unwrap_or(None) {
        Some(l) => Some(l),
        None => InProgress::find(target).ok().flatten().map(|(l, _)| l),
    };
    let plan = plan_layout(
        &image.layout,
        current.as_ref(),
        target.size(),
        target.sector_size(),
    )
    .map_err(|e| Error::Refused {
        device: target_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // The table this restore will write (the image's, grown to this disk) passes the same
    // rules as the image's own, before the first write, not only when the codec writes it
    // at the very end.
    if !plan.keep_table {
        plan.layout.validate().map_err(|e| Error::Refused {
            device: target_path.to_path_buf(),
            reason: format!("the partition table planned for it is not valid: {e}"),
        })?;
    }
    Ok(plan)
}

/// Restores `image` onto `target`: the phases of the module doc, in order.
pub fn restore(
    image: &Image,
    target: &Disk,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let (regions, delta, mut report) = plan_restore(image, target, opts, progress)?;
    if opts.dry_run {
        return Ok(report);
    }
    let plan = &report.plan;
    let mark = prepare_table(target, plan)?;
    let head = fetch_head(image, opts)?;
    let parts: Vec<Part> = regions
        .iter()
        .zip(report.regions.iter())
        .zip(delta.fetch.iter())
        .filter(|((r, _), _)| r.number != 0)
        .map(|((r, rep), fetch)| Part::new(r, rep, fetch))
        .collect();
    stream_partitions(image, target, &parts, opts, progress)?;
    if let Some(hold) = &opts.before_grow {
        hold();
    }
    grow_filesystems(target, &regions, &mut report.regions)?;
    finalize(image, target, &report.plan, head, mark)?;
    report.source_bytes = image.source.bytes_fetched();
    Ok(report)
}

/// Phase 1, **plan**: everything restore checks before its first write. Returns the
/// regions to write (the disk head first when the image has one), which of their chunks
/// to fetch (a delta restore hashes the target's chunks here: [`delta`]) and the report
/// with where each lands; nothing is written, whatever the outcome.
pub(crate) fn plan_restore<'a>(
    image: &'a Image,
    target: &Disk,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<(Vec<&'a Region>, DeltaPlan, RestoreReport)> {
    let tpath = target.path();
    let use_ = usage(tpath);
    if use_.in_use() {
        return Err(Error::Refused {
            device: tpath.to_path_buf(),
            reason: format!("it is in use: {}", use_.describe()),
        });
    }
    let plan = plan(image, target, tpath)?;
    check_mbr_cap(&plan, target.size(), opts.mbr_cap, tpath)?;
    let regions = select_regions(image, opts)?;
    let mut reports = vec![];
    for r in &regions {
        let (disk_offset, target_size) = place_region(r, &plan, target.size(), tpath)?;
        let (wipe, zeroed_bytes) = free_space_plan(r, target_size);
        reports.push(RegionReport {
            name: r.name.clone(),
            filesystem: r.filesystem.clone(),
            bytes: r.used_bytes,
            disk_offset,
            target_size,
            grown: None,
            wiped_bytes: crate::wipe::total(&wipe),
            wipe,
            zeroed_bytes,
        });
    }
    if let Some(head) = regions.iter().find(|r| r.name == "head") {
        check_head_contiguous(image, head)?;
    }
    // Delta: only when the table is kept, so every region lands where it was captured.
    let full_reason = match (opts.delta, plan.keep_table) {
        (false, _) => Some("a full restore was asked for (--full)".to_string()),
        (true, false) => Some("the partition table changes".to_string()),
        (true, true) => None,
    };
    let delta = delta::plan_delta(
        &regions,
        &reports,
        target,
        full_reason.is_none(),
        opts.threads,
        progress,
    )?;
    // Integrity of what will be written, before the first write, where the image can be
    // read twice cheaply. Streamed from a server, each chunk is checked before it is
    // written and the table goes last, so an interrupted or refused clone never looks
    // bootable.
    if image.source.is_local() {
        let wanted: Vec<(&Region, Vec<usize>)> = regions
            .iter()
            .enumerate()
            .map(|(k, r)| (*r, delta.fetched(k)))
            .collect();
        check_some_frames(image, &wanted, opts.threads, progress)?;
    }
    let report = RestoreReport {
        target: tpath.display().to_string(),
        image_id: image.id().to_string(),
        dry_run: opts.dry_run,
        plan,
        regions: reports,
        delta: full_reason.is_none(),
        full_reason,
        chunks: delta.counts.clone(),
        source_bytes: 0,
    };
    Ok((regions, delta, report))
}

/// The regions `opts` selects (the disk head always), in the image's order; a selected
/// partition the image does not hold is an error that names what it holds.
fn select_regions<'a>(image: &'a Image, opts: &RestoreOptions) -> Result<Vec<&'a Region>> {
    if let Some(list) = &opts.partitions {
        for n in list {
            if image.manifest.region(&format!("p{n}")).is_none() {
                return Err(Error::Selection(format!(
                    "partition {n} is not in image {} (it holds {})",
                    image.location(),
                    image
                        .manifest
                        .regions
                        .iter()
                        .filter(|r| r.number != 0)
                        .map(|r| r.number.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(image
        .manifest
        .regions
        .iter()
        .filter(|r| {
            r.number == 0
                || opts
                    .partitions
                    .as_ref()
                    .is_none_or(|l| l.contains(&r.number))
        })
        .collect())
}

/// Where region `r` lands on a target of `disk_size` bytes under `plan`: `(disk byte
/// offset, partition size)`. Refuses a head larger than [`crate::manifest::MAX_HEAD`], a
/// partition the plan lacks or that leaves the disk, and a region or file system larger
/// than its partition here.
fn place_region(r: &Region, plan: &Plan, disk_size: u64, tpath: &Path) -> Result<(u64, u64)> {
    let refuse = |reason: String| Error::Refused {
        device: tpath.to_path_buf(),
        reason,
    };
    let ss = plan.layout.sector_size as u64;
    let (disk_offset, target_size) = if r.number == 0 {
        if r.size > crate::manifest::MAX_HEAD {
            return Err(refuse(format!(
                "the image's disk head is {} bytes, more than {}",
                r.size,
                crate::manifest::MAX_HEAD
            )));
        }
        (0, r.size)
    } else {
        let p = plan
            .layout
            .partition(r.number)
            .ok_or_else(|| refuse(format!("the planned layout has no partition {}", r.number)))?;
        let span = p
            .start
            .checked_mul(ss)
            .zip(p.size.checked_mul(ss))
            .filter(|(o, l)| o.checked_add(*l).is_some_and(|e| e <= disk_size));
        let Some(span) = span else {
            return Err(refuse(format!(
                "partition {} (sectors {}+{}) is not inside the disk ({disk_size} bytes)",
                p.number, p.start, p.size,
            )));
        };
        span
    };
    // Checked when the image was loaded (a region is its partition); again here,
    // against the partition this restore writes: nothing may land past its end.
    if r.number != 0 && r.size > target_size {
        return Err(refuse(format!(
            "the image's region {} is {} bytes, partition {} here is {target_size}",
            r.name, r.size, r.number
        )));
    }
    if target_size < r.fs_size.min(r.size) {
        return Err(refuse(format!(
            "partition {} is {target_size} bytes, the image's {} needs {}",
            r.number, r.filesystem, r.fs_size
        )));
    }
    Ok((disk_offset, target_size))
}

/// The disk head must be one contiguous range from byte 0 (it is written as one block).
fn check_head_contiguous(image: &Image, head: &Region) -> Result<()> {
    let mut expect = 0u64;
    let contiguous = head.chunks.iter().flat_map(|c| c.ranges()).all(|(o, l)| {
        let ok = o == expect;
        expect = o.saturating_add(l);
        ok
    });
    if !contiguous || expect != head.size {
        return Err(Error::Corrupt {
            path: std::path::PathBuf::from(format!("{}/{}", image.location(), head.payload)),
            msg: "the disk head is not one contiguous range from byte 0".into(),
        });
    }
    Ok(())
}

/// Phase 2, **head** (first half): the first writes. An equal table is kept, so it is
/// marked in progress (its signatures cleared) until the last write: an interrupted
/// re-clone must not look bootable either (see [`crate::mark`]); the mark is returned for
/// [`finalize`] to clear. A table that changes is wiped (the first 34 and last 34
/// sectors): nothing on the disk may look like a valid table while data is half written.
pub(crate) fn prepare_table(target: &Disk, plan: &Plan) -> Result<Option<InProgress>> {
    let dev = target.path();
    if plan.keep_table {
        let mut mark = InProgress::set(target)
            .map_err(|e| Error::device(dev, "marking the table in progress", e))?;
        if !mark.is_set() {
            // Marked already, by an interrupted restore: its signatures go back at the end.
            if let Some((_, found)) = InProgress::find(target)
                .map_err(|e| Error::device(dev, "reading the in-progress mark", e))?
            {
                mark = found;
            }
        }
        return Ok(Some(mark));
    }
    let ss = plan.layout.sector_size as u64;
    let head_wipe = (34 * ss).min(target.size());
    target
        .zero_range(0, head_wipe)
        .map_err(|e| Error::device(dev, "wiping the old table", e))?;
    let tail = (34 * ss).min(target.size());
    target
        .zero_range(target.size() - tail, tail)
        .map_err(|e| Error::device(dev, "wiping the old backup GPT", e))?;
    Ok(None)
}

/// Phase 2, **head** (second half): the disk head (at most 1 MiB), fetched and verified
/// now although it is written last, so a streamed restore does not depend on its upstream
/// still being there at the end, and a relay can pass it on at once.
pub(crate) fn fetch_head(image: &Image, opts: &RestoreOptions) -> Result<Option<Vec<u8>>> {
    let Some(head) = image.manifest.region("head") else {
        return Ok(None);
    };
    // Contiguous from 0: checked by `plan_restore` before the first write.
    let mut bytes = Vec::with_capacity(head.size.min(crate::manifest::MAX_HEAD) as usize);
    for i in 0..head.chunks.len() {
        let frame = read_frame(image, head, i)?;
        bytes.extend_from_slice(&decode_frame(&frame, head, i)?);
        if let Some(hook) = &opts.on_chunk {
            hook(head, i, frame);
        }
    }
    Ok(Some(bytes))
}

/// A partition being restored: its region, where it starts on the target, how big it is
/// there, and whether its chunks may be written with `O_DIRECT`.
pub struct Part<'a> {
    r: &'a Region,
    base: u64,
    target_size: u64,
    direct: bool,
    /// Foreign-signature ranges to clear (partition byte offsets).
    wipe: &'a [(u64, u64)],
    /// Which chunks to fetch and write (the others are already on the target).
    fetch: &'a [bool],
}

impl<'a> Part<'a> {
    /// O_DIRECT only when no two concurrent writes can share a page (see
    /// [`Disk::buffered`]), decided per partition.
    fn new(r: &'a Region, rep: &'a RegionReport, fetch: &'a [bool]) -> Self {
        let align = crate::disk::DIRECT_ALIGN as u64;
        let direct =
            r.chunks.iter().flat_map(|c| c.ranges()).all(|(o, l)| {
                (rep.disk_offset + o).is_multiple_of(align) && l.is_multiple_of(align)
            });
        Part {
            r,
            base: rep.disk_offset,
            target_size: rep.target_size,
            direct,
            wipe: &rep.wipe,
            fetch,
        }
    }
}

/// Phase 3, **stream**: the foreign signatures of partitions whose free space is kept
/// are cleared first (so a range the image also writes could only be overwritten by the
/// image, never the other way round), then every chunk of every partition in one
/// pipeline, then the zero fill of partitions that ask for it, then a flush.
///
/// All partitions' chunks are read as one stream per partition by one reader that moves
/// on to the next partition at once: a relay chain then never waits for a node to drain
/// its writes at a partition boundary (each wait would add to the lag of every node below
/// it).
pub(crate) fn stream_partitions(
    image: &Image,
    target: &Disk,
    parts: &[Part],
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<()> {
    for part in parts {
        wipe_signatures(target, target.path(), part)?;
    }
    announce_skipped(parts, opts);
    let jobs: Vec<(usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(p, part)| (0..part.r.chunks.len()).map(move |i| (p, i)))
        .filter(|&(p, i)| parts[p].fetch.get(i).copied().unwrap_or(true))
        .collect();
    let total: u64 = jobs.iter().fold(0u64, |a, &(p, i)| {
        a.saturating_add(parts[p].r.chunks[i].length)
    });
    progress.start(total, "restoring");
    // Twice the cores: while one worker waits for its direct write, another decompresses.
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        2 * crate::pool::threads(0)
    };
    let buffered = target.buffered();
    let frames = std::sync::Mutex::new(None::<(usize, FrameStream)>);
    run_pipeline(
        jobs.len(),
        threads,
        |j| {
            let (p, i) = jobs[j];
            let mut f = frames.lock().map_err(|_| Error::Poisoned("frame reader"))?;
            match &mut *f {
                Some((at, stream)) if *at == p => stream.frame(i),
                _ => f
                    .insert((
                        p,
                        FrameStream::new(image, parts[p].r).only(parts[p].fetch.to_vec()),
                    ))
                    .1
                    .frame(i),
            }
        },
        |j, frame| -> Result<u64> {
            let (p, i) = jobs[j];
            // A direct partition's writes are all 4 KiB-aligned, so none shares a page
            // with another partition's; inside an unaligned one every write goes through
            // the page cache.
            let io: &dyn BlockIo = if parts[p].direct { target } else { &buffered };
            write_chunk(io, target.path(), &parts[p], i, frame, opts)
        },
        |_, n| {
            progress.inc(n);
            Ok(())
        },
    )?;
    for part in parts.iter().filter(|p| p.r.fill == Fill::Zero) {
        zero_fill(target, target.path(), part)?;
    }
    progress.finish();
    target
        .flush()
        .map_err(|e| Error::device(target.path(), "flushing", e))
}

/// Tells the skip hook every chunk a delta restore found already on the target.
fn announce_skipped(parts: &[Part], opts: &RestoreOptions) {
    let Some(hook) = &opts.on_skip else {
        return;
    };
    for part in parts {
        for (i, want) in part.fetch.iter().enumerate() {
            if !want && i < part.r.chunks.len() {
                hook(part.r, i);
            }
        }
    }
}

/// One chunk of a partition: decode and verify its frame, hand the frame to the relay
/// hook, fit a swap header, write each range (never a byte past the partition's end),
/// and with `verify` read it back. Returns the raw bytes written.
fn write_chunk(
    io: &dyn BlockIo,
    tpath: &Path,
    part: &Part,
    i: usize,
    frame: Vec<u8>,
    opts: &RestoreOptions,
) -> Result<u64> {
    let Part {
        r,
        base,
        target_size,
        ..
    } = *part;
    let c = &r.chunks[i];
    let mut raw = decode_frame(&frame, r, i)?;
    // Verified: a relay may pass the frame on while this node writes it.
    if let Some(hook) = &opts.on_chunk {
        hook(r, i, frame);
    }
    if r.filesystem == "swap" && c.offset == 0 {
        swap::fit_header(&mut raw, target_size);
    }
    let mut at = 0usize;
    for (o, l) in c.ranges() {
        // Validated at load; checked again where it matters: never a byte past the
        // partition's end, whatever the arithmetic of a hostile manifest.
        let to = at.checked_add(l as usize).filter(|t| *t <= raw.len());
        let inside = o.checked_add(l).is_some_and(|e| e <= target_size);
        let (Some(to), true) = (to, inside) else {
            return Err(r.chunk_error(
                i,
                format!(
                    "range {o}+{l} does not fit partition {} ({target_size} bytes) or the chunk; not written",
                    r.number
                ),
            ));
        };
        io.write_all_at(&raw[at..to], base + o)
            .map_err(|err| Error::ChunkIo {
                device: tpath.to_path_buf(),
                action: "writing",
                partition: r.number,
                chunk: i,
                at: format!("partition byte {o} (disk byte {})", base + o),
                err,
            })?;
        at = to;
    }
    if opts.verify {
        read_back(io, r, i, base, &raw, tpath)?;
    }
    Ok(c.length)
}

/// Phase 4, **grow**: each file system that got a larger partition is grown to it the way
/// its kind needs ([`crate::grow::grow_fs`]); its report records the old and new sizes.
pub(crate) fn grow_filesystems(
    target: &Disk,
    regions: &[&Region],
    reports: &mut [RegionReport],
) -> Result<()> {
    for (r, rep) in regions.iter().zip(reports.iter_mut()) {
        if let Some(grown) = crate::grow::grow_fs(target, r, rep.disk_offset, rep.target_size)? {
            rep.grown = Some(grown);
        }
    }
    Ok(())
}

/// Phase 5, **finalize**: the disk head and the partition table (the last writes), a
/// flush, the kept table's mark cleared, and the kernel told the partitions.
pub(crate) fn finalize(
    image: &Image,
    target: &Disk,
    plan: &Plan,
    head: Option<Vec<u8>>,
    mark: Option<InProgress>,
) -> Result<()> {
    let dev = target.path();
    write_head_and_table(image, target, plan, head)?;
    target
        .flush()
        .map_err(|e| Error::device(dev, "flushing", e))?;
    if let Some(mark) = mark {
        mark.clear(target)
            .map_err(|e| Error::device(dev, "restoring the kept table's signatures", e))?;
    }
    let ss = plan.layout.sector_size as u64;
    let parts: Vec<(u32, u64, u64)> = plan
        .layout
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                p.start * ss,
                if p.is_extended() {
                    ss.min(1024)
                } else {
                    p.size * ss
                },
            )
        })
        .collect();
    target
        .announce_partitions(&parts)
        .map_err(|e| Error::device(dev, "telling the kernel the new partitions", e))
}

/// The disk head up to the first partition, and the table: a kept table's bytes stay as
/// they are (boot code and boot-loader gap only); a new table is written by the codec,
/// then, on a disk of the master's size and layout, the captured sectors go over it byte
/// for byte (including fields our writer computes differently, like CHS addresses).
fn write_head_and_table(
    image: &Image,
    target: &Disk,
    plan: &Plan,
    head: Option<Vec<u8>>,
) -> Result<()> {
    let dev = target.path();
    let ss = plan.layout.sector_size as u64;
    let whead = |bytes: &[u8], at: usize| {
        target
            .write_all_at(bytes, at as u64)
            .map_err(|e| Error::device(dev, "writing the disk head", e))
    };
    let Some(bytes) = head else {
        if !plan.keep_table {
            crate::layout::write_table(target, &plan.layout, &[])?;
        }
        return Ok(());
    };
    let head_end = bytes
        .len()
        .min((plan.layout.first_used_sector() * ss) as usize);
    if plan.keep_table {
        let mut pos = 0usize;
        for (o, l) in table_ranges(&plan.layout) {
            let o = (o as usize).min(head_end);
            if o > pos {
                whead(&bytes[pos..o], pos)?;
            }
            pos = pos.max(o + l as usize);
        }
        if head_end > pos {
            whead(&bytes[pos..head_end], pos)?;
        }
        return Ok(());
    }
    whead(&bytes[..head_end], 0)?;
    crate::layout::write_table(target, &plan.layout, &bytes[..bytes.len().min(440)])?;
    if plan.layout.disk_size == image.layout.disk_size
        && crate::layout::differences(&image.layout, &plan.layout).is_empty()
    {
        whead(&bytes[..head_end], 0)?;
    }
    Ok(())
}

/// Reads chunk `i` back from the disk (region at byte `base`) and compares it with the
/// bytes written (already checked against the manifest's sha256, so a byte compare is
/// enough and costs a fraction of a second hash).
fn read_back(
    target: &dyn BlockIo,
    r: &Region,
    i: usize,
    base: u64,
    written: &[u8],
    tpath: &Path,
) -> Result<()> {
    let c = &r.chunks[i];
    let back = c.read_from(target, base).map_err(|err| Error::ChunkIo {
        device: tpath.to_path_buf(),
        action: "reading back",
        partition: r.number,
        chunk: i,
        at: format!("disk byte {}", base + c.offset),
        err,
    })?;
    if back[..] == *written {
        return Ok(());
    }
    Err(Error::BadChunk {
        partition: r.name.clone(),
        chunk: i,
        offset: c.offset,
        payload: r.payload.clone(),
        payload_offset: c.payload_offset,
        msg: format!(
            "reads back from {} (disk byte {}) with different bytes: the disk did not keep what was written",
            tpath.display(),
            base + c.offset
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::fs::Fill;
    use crate::manifest::Chunk;
    use sha2::{Digest, Sha256};

    /// One chunk gathering two 4 KiB ranges of partition 2, which starts at byte 8192.
    fn region(raw: &[u8]) -> Region {
        Region {
            name: "p2".into(),
            number: 2,
            size: 65536,
            filesystem: "ext4".into(),
            uuid: None,
            label: None,
            fs_size: 65536,
            used_bytes: raw.len() as u64,
            fill: Fill::Keep,
            payload: "p2.zst".into(),
            chunks: vec![Chunk {
                offset: 4096,
                length: raw.len() as u64,
                payload_offset: 0,
                compressed_length: 0,
                sha256: hex::encode(Sha256::digest(raw)),
                frame_sha256: String::new(),
                extents: vec![[4096, 4096], [16384, 4096]],
            }],
        }
    }

    /// An image whose region p1 (partition 1: 2 MiB at sector 2048 of an 8 MiB GPT disk,
    /// partition 2 right after it)
    /// claims `size` bytes and holds one 4 KiB chunk at `offset`, built without the
    /// load-time validation, to show that restore's own checks keep every write inside the
    /// partition.
    fn unchecked_image(dir: &Path, size: u64, offset: u64) -> Image {
        use crate::layout::{Layout, Partition, TableKind};
        use crate::manifest::Manifest;
        let raw = vec![0xabu8; 4096];
        let frame = crate::frame::compress_chunk(&raw, 3, 4096).unwrap();
        std::fs::write(dir.join("p1.zst"), &frame).unwrap();
        let layout = Layout {
            table: TableKind::Gpt,
            sector_size: 512,
            disk_size: 8 << 20,
            disk_guid: None,
            first_usable: Some(34),
            entries: Some(128),
            disk_signature: None,
            grow: Some(2),
            partitions: [(1, 2048), (2, 6144)]
                .map(|(number, start)| {
                    Partition::plain(number, start, 4096, "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
                })
                .to_vec(),
        };
        let region = Region {
            name: "p1".into(),
            number: 1,
            size,
            filesystem: "unknown".into(),
            uuid: None,
            label: None,
            fs_size: 0,
            used_bytes: 4096,
            fill: Fill::Zero,
            payload: "p1.zst".into(),
            chunks: vec![Chunk {
                offset,
                length: 4096,
                payload_offset: 0,
                compressed_length: frame.len() as u64,
                sha256: hex::encode(Sha256::digest(&raw)),
                frame_sha256: hex::encode(Sha256::digest(&frame)),
                extents: vec![],
            }],
        };
        Image {
            source: std::sync::Arc::new(crate::source::LocalDir(dir.to_path_buf())),
            manifest: Manifest {
                format: crate::manifest::FORMAT_NAME.into(),
                version: crate::manifest::FORMAT_VERSION,
                image_id: String::new(),
                layout_sha256: String::new(),
                chunk_size: 4096,
                level: 3,
                regions: vec![region],
            },
            layout,
        }
    }

    fn target(dir: &Path) -> std::path::PathBuf {
        let t = dir.join("target.img");
        std::fs::write(&t, vec![0x11u8; 8 << 20]).unwrap();
        t
    }

    #[test]
    fn a_region_larger_than_its_target_partition_is_refused_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let img = unchecked_image(dir.path(), 4 << 20, 3 << 20);
        assert!(img.check_structure().is_err());
        let t = target(dir.path());
        let disk = Disk::open_rw(&t).unwrap();
        let e = restore(&img, &disk, &RestoreOptions::default(), &Progress::hidden())
            .unwrap_err()
            .to_string();
        assert!(e.contains("region p1") && e.contains("partition 1"), "{e}");
        assert_eq!(std::fs::read(&t).unwrap(), vec![0x11u8; 8 << 20]);
    }

    #[test]
    fn a_version_2_chunk_must_stay_in_its_window_and_version_1_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        // chunk_size 4096: a chunk at 2048 crosses the window boundary at 4096.
        let mut img = unchecked_image(dir.path(), 2 << 20, 2048);
        let e = img.check_structure().unwrap_err().to_string();
        assert!(e.contains("leaves the chunk's window 0..4096"), "{e}");
        img.manifest.version = 1;
        img.check_structure().unwrap();
        // In its window, version 2 is fine.
        img.manifest.version = 2;
        img.manifest.regions[0].chunks[0].offset = 4096;
        img.check_structure().unwrap();
    }

    #[test]
    fn a_chunk_past_its_partition_is_not_written_and_zero_fill_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        // Region and partition agree (2 MiB); the chunk claims to sit at 3 MiB.
        let img = unchecked_image(dir.path(), 2 << 20, 3 << 20);
        assert!(img.check_structure().is_err());
        let t = target(dir.path());
        let disk = Disk::open_rw(&t).unwrap();
        let e = restore(&img, &disk, &RestoreOptions::default(), &Progress::hidden())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit partition 1"), "{e}");
        // Everything after the partition (up to the backup GPT wiped first) is untouched.
        let after = std::fs::read(&t).unwrap();
        let (end, tail) = ((2048 + 4096) * 512, (8 << 20) - 34 * 512);
        assert!(after[end..tail].iter().all(|b| *b == 0x11));
    }

    /// The image's one region moved to partition 2, the grow partition: on the 8 MiB
    /// target it spans sectors 6144 to the last usable one (5 MiB, larger than the
    /// image's 2 MiB), so its tail is a grown tail.
    fn grown_region_restore(fill: Fill) -> (Vec<u8>, RegionReport) {
        let dir = tempfile::tempdir().unwrap();
        let mut img = unchecked_image(dir.path(), 2 << 20, 0);
        let r = &mut img.manifest.regions[0];
        (r.name, r.number, r.fill) = ("p2".into(), 2, fill);
        img.check_structure().unwrap();
        let t = target(dir.path());
        let disk = Disk::open_rw(&t).unwrap();
        let rep = restore(&img, &disk, &RestoreOptions::default(), &Progress::hidden()).unwrap();
        (std::fs::read(&t).unwrap(), rep.regions[0].clone())
    }

    #[test]
    fn a_kept_free_space_is_not_zeroed_but_its_signature_areas_are() {
        let (b, rep) = grown_region_restore(Fill::Keep);
        let (base, size) = (6144 * 512, rep.target_size as usize);
        assert!(size > 4 << 20, "grown: {rep:?}");
        let p = &b[base..base + size];
        let mib = 1 << 20;
        assert!(p[..4096].iter().all(|x| *x == 0xab), "the chunk");
        // The first MiB and the LUKS2 header at 1 MiB, the one at 2 MiB, the last MiB
        // (the partition is just under 5 MiB: the LUKS2 header at 4 MiB lies in it).
        assert!(
            p[4096..mib + 4096].iter().all(|x| *x == 0),
            "first MiB cleared"
        );
        assert!(p[2 * mib..2 * mib + 4096].iter().all(|x| *x == 0), "2 MiB");
        assert!(
            p[mib + 4096..2 * mib]
                .iter()
                .chain(&p[2 * mib + 4096..size - mib])
                .all(|x| *x == 0x11),
            "free space and grown tail kept"
        );
        assert!(p[size - mib..].iter().all(|x| *x == 0), "last MiB cleared");
        assert!(size - mib < 4 * mib && 4 * mib + 4096 <= size);
        assert_eq!(
            (rep.wiped_bytes, rep.zeroed_bytes),
            (2 * mib as u64 + 4096, 0)
        );
        let mib = mib as u64;
        assert_eq!(
            rep.wipe,
            vec![(4096, mib), (2 * mib, 4096), (size as u64 - mib, mib)]
        );
    }

    #[test]
    fn unknown_contents_read_back_as_zeros_to_the_end_of_a_grown_partition() {
        let (b, rep) = grown_region_restore(Fill::Zero);
        let (base, size) = (6144 * 512, rep.target_size as usize);
        let p = &b[base..base + size];
        assert!(p[..4096].iter().all(|x| *x == 0xab), "the chunk");
        assert!(p[4096..].iter().all(|x| *x == 0), "every gap zeroed");
        assert_eq!((rep.wiped_bytes, rep.zeroed_bytes), (0, size as u64 - 4096));
        assert!(rep.wipe.is_empty());
    }

    fn raw() -> Vec<u8> {
        (0..8192u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn write(disk: &MemDisk, bytes: &[u8]) {
        disk.write_all_at(&bytes[..4096], 8192 + 4096).unwrap();
        disk.write_all_at(&bytes[4096..], 8192 + 16384).unwrap();
    }

    #[test]
    fn zero_fill_covers_the_gaps_and_stops_at_the_partition_end() {
        // Gaps before, between and after the stored ranges.
        let gaps = fill_gaps([(4096, 4096), (16384, 4096)].into_iter(), 65536);
        assert_eq!(gaps, vec![(0, 4096), (8192, 8192), (20480, 45056)]);
        // Ranges reaching past the end (a hostile manifest): nothing past 65536, and a
        // range starting past the end fills nothing after it.
        let gaps = fill_gaps([(60000, 10000), (70000, 4096)].into_iter(), 65536);
        assert_eq!(gaps, vec![(0, 60000)]);
        assert!(gaps.iter().all(|(o, l)| o + l <= 65536));
        // Overlapping or out-of-order ranges never move the fill backwards.
        let gaps = fill_gaps(
            [(8192, 8192), (4096, 1024), (20000, 100)].into_iter(),
            32768,
        );
        assert_eq!(gaps, vec![(0, 8192), (16384, 3616), (20100, 12668)]);
        // Nothing stored: the whole partition; an empty partition: nothing.
        assert_eq!(fill_gaps(std::iter::empty(), 4096), vec![(0, 4096)]);
        assert!(fill_gaps([(0, 10)].into_iter(), 0).is_empty());
    }

    #[test]
    fn zero_fill_writes_only_inside_its_partition() {
        let disk = MemDisk::from_vec(vec![0xffu8; 1 << 17], 512);
        let mut r = region(&raw());
        r.fill = Fill::Zero;
        // The chunk's second range claims to reach past the partition's 16 KiB end.
        r.chunks[0].extents = vec![[4096, 4096], [12288, 8192]];
        let part = Part {
            r: &r,
            base: 8192,
            target_size: 16384,
            direct: false,
            wipe: &[],
            fetch: &[],
        };
        zero_fill(&disk, Path::new("d"), &part).unwrap();
        let b = disk.bytes();
        assert!(b[..8192].iter().all(|x| *x == 0xff), "before the partition");
        assert!(b[8192..12288].iter().all(|x| *x == 0), "gap at 0");
        assert!(
            b[12288..16384].iter().all(|x| *x == 0xff),
            "stored range kept"
        );
        assert!(b[16384..20480].iter().all(|x| *x == 0), "gap at 8192");
        assert!(b[20480..].iter().all(|x| *x == 0xff), "after the partition");
    }

    #[test]
    fn read_back_accepts_what_the_disk_kept() {
        let (raw, disk) = (raw(), MemDisk::new(1 << 17, 512));
        write(&disk, &raw);
        read_back(&disk, &region(&raw), 0, 8192, &raw, Path::new("d")).unwrap();
    }

    #[test]
    fn read_back_names_the_disk_and_offset_when_it_did_not_keep_the_bytes() {
        let (raw, disk) = (raw(), MemDisk::new(1 << 17, 512));
        let mut kept = raw.clone();
        kept[5000] ^= 1;
        write(&disk, &kept);
        let e = read_back(&disk, &region(&raw), 0, 8192, &raw, Path::new("/dev/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("did not keep") && e.contains("/dev/x") && e.contains("12288"),
            "{e}"
        );
    }
}
