//! Restore: the layout rules of DESIGN.md, applied to one target disk.
//!
//! Order of work, chosen so that bad input destroys nothing and an interrupted restore
//! never looks bootable:
//! 1. checks that write nothing: target not mounted/swapped-on, layout plan (sector size,
//!    disk size), every selected chunk's frame sha256 (catches flipped or truncated
//!    payloads);
//! 2. when the table changes: the old table is wiped (sector 0, the GPT headers); when it
//!    is kept: its signatures are cleared ([`crate::mark`]);
//! 3. partitions, chunk by chunk (decompress, sha256 of the raw bytes, hand the frame to
//!    the relay hook, write; with `verify`, read it back at once and compare); unknown
//!    file systems get their gaps zeroed; swap gets its header fitted to the size;
//! 4. ext file systems that got a larger partition are checked and grown through the
//!    whole-disk device (`e2fsck -fp`, `resize2fs DEV?offset=N`);
//! 5. last, the disk head (boot code, boot-loader gap) and the partition table; a kept
//!    table is marked in progress (signatures cleared) from before the first data write
//!    until this point, so an interrupted re-clone never looks bootable either;
//! 6. the kernel is told the partitions (`BLKPG`, `BLKRRPART` fallback).

use crate::disk::{usage, BlockIo, Disk};
use crate::error::{Error, Result};
use crate::frame::{decode_frame, read_frame, FrameStream};
use crate::fs::{swap, Fill};
use crate::layout::{plan_layout, read_layout, table_ranges, Plan};
use crate::manifest::{Image, Region};
use crate::mark::InProgress;
use crate::pool::run_pipeline;
use crate::progress::Progress;
use crate::verify::check_frames;
use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// Called as soon as chunk `i` of a region was verified (raw sha256), before it is
/// written, with its compressed frame: a relay serves it from then on (cut-through; the
/// disk write and read-back of this node are not on the chain's critical path).
pub type ChunkHook = std::sync::Arc<dyn Fn(&Region, usize, Vec<u8>) + Send + Sync>;

/// Called once every chunk is written and read back, before file systems grow.
pub type Hold = std::sync::Arc<dyn Fn() + Send + Sync>;

#[derive(Clone, Default)]
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
    pub before_grow: Option<Hold>,
}

/// What restore did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub target: String,
    pub image_id: String,
    pub dry_run: bool,
    pub plan: Plan,
    pub regions: Vec<RegionReport>,
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
}

/// Plans without writing: reads the target's table and applies the layout rules.
pub fn plan(image: &Image, target: &dyn BlockIo, target_path: &Path) -> Result<Plan> {
    let current = read_layout(target).unwrap_or(None);
    let plan = plan_layout(
        &image.layout,
        current.as_ref(),
        target.size(),
        target.sector_size(),
    )
    .map_err(|reason| Error::Refused {
        device: target_path.to_path_buf(),
        reason,
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

/// Restores `image` onto `target`.
pub fn restore(
    image: &Image,
    target: &Disk,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let tpath = target.path().to_path_buf();
    let use_ = usage(&tpath);
    if use_.in_use() {
        return Err(Error::Refused {
            device: tpath,
            reason: format!("it is in use: {}", use_.describe()),
        });
    }
    let plan = plan(image, target, &tpath)?;
    let ss = plan.layout.sector_size as u64;

    // The regions to write.
    let mut regions: Vec<&Region> = vec![];
    for r in &image.manifest.regions {
        let wanted = r.number == 0
            || opts
                .partitions
                .as_ref()
                .is_none_or(|l| l.contains(&r.number));
        if wanted {
            regions.push(r);
        }
    }
    if let Some(list) = &opts.partitions {
        for n in list {
            if image.manifest.region(&format!("p{n}")).is_none() {
                return Err(Error::Invalid(format!(
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
    let mut reports = vec![];
    for r in &regions {
        let refuse = |reason: String| Error::Refused {
            device: tpath.clone(),
            reason,
        };
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
            let p = plan.layout.partition(r.number).ok_or_else(|| {
                refuse(format!("the planned layout has no partition {}", r.number))
            })?;
            let span = p
                .start
                .checked_mul(ss)
                .zip(p.size.checked_mul(ss))
                .filter(|(o, l)| o.checked_add(*l).is_some_and(|e| e <= target.size()));
            let Some(span) = span else {
                return Err(refuse(format!(
                    "partition {} (sectors {}+{}) is not inside the disk ({} bytes)",
                    p.number,
                    p.start,
                    p.size,
                    target.size()
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
            return Err(Error::Refused {
                device: tpath.clone(),
                reason: format!(
                    "partition {} is {target_size} bytes, the image's {} needs {}",
                    r.number, r.filesystem, r.fs_size
                ),
            });
        }
        reports.push(RegionReport {
            name: r.name.clone(),
            filesystem: r.filesystem.clone(),
            bytes: r.used_bytes,
            disk_offset,
            target_size,
            grown: None,
        });
    }

    // Whole-image integrity before the first write, where the image can be read twice
    // cheaply. Streamed from a server, each chunk is checked before it is written and the
    // table goes last, so an interrupted or refused clone never looks bootable.
    if image.source.is_local() {
        check_frames(image, &regions, opts.threads, progress)?;
    }

    let mut report = RestoreReport {
        target: tpath.display().to_string(),
        image_id: image.id().to_string(),
        dry_run: opts.dry_run,
        plan,
        regions: reports,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let plan = &report.plan;
    let werr = |what: String, e: std::io::Error| {
        Error::Invalid(format!("{}: {what}: {e}", tpath.display()))
    };

    // An equal table is kept, so it is marked in progress (its signatures cleared) until
    // the last write: an interrupted re-clone must not look bootable either (see `mark`).
    let mark = if plan.keep_table {
        Some(InProgress::set(target).map_err(|e| werr("marking the table in progress".into(), e))?)
    } else {
        None
    };
    if !plan.keep_table {
        // Nothing on the disk may look like a valid table while data is half written.
        let head_wipe = (34 * ss).min(target.size());
        target
            .zero_range(0, head_wipe)
            .map_err(|e| werr("wiping the old table".into(), e))?;
        let tail = (34 * ss).min(target.size());
        target
            .zero_range(target.size() - tail, tail)
            .map_err(|e| werr("wiping the old backup GPT".into(), e))?;
    }

    let total: u64 = regions
        .iter()
        .filter(|r| r.number != 0)
        .map(|r| r.used_bytes)
        .sum();
    // O_DIRECT only when no two concurrent writes can share a page (see Disk::buffered),
    // decided per partition.
    let aligned = |r: &Region, rep: &RegionReport| {
        r.chunks.iter().flat_map(|c| c.ranges()).all(|(o, l)| {
            (rep.disk_offset + o).is_multiple_of(crate::disk::DIRECT_ALIGN as u64)
                && l.is_multiple_of(crate::disk::DIRECT_ALIGN as u64)
        })
    };
    // The disk head (at most 1 MiB) first: it is written last, but fetched and verified
    // now, so a streamed restore does not depend on its upstream still being there at
    // the end, and a relay can pass it on at once.
    let mut head_bytes = None;
    if let Some(head) = image.manifest.region("head") {
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
        let mut bytes = Vec::with_capacity(head.size.min(crate::manifest::MAX_HEAD) as usize);
        for i in 0..head.chunks.len() {
            let frame = read_frame(image, head, i)?;
            bytes.extend_from_slice(&decode_frame(&frame, head, i)?);
            if let Some(hook) = &opts.on_chunk {
                hook(head, i, frame);
            }
        }
        head_bytes = Some(bytes);
    }
    progress.start(total, "restoring");
    // Twice the cores: while one worker waits for its direct write, another decompresses.
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        2 * crate::pool::threads(0)
    };
    // All partitions' chunks in one pipeline, read as one stream per partition by one
    // reader that moves on to the next partition at once: a relay chain then never
    // waits for a node to drain its writes at a partition boundary (each wait would add
    // to the lag of every node below it).
    let parts: Vec<Part> = regions
        .iter()
        .zip(report.regions.iter())
        .filter(|(r, _)| r.number != 0)
        .map(|(r, rep)| Part {
            r,
            base: rep.disk_offset,
            target_size: rep.target_size,
            direct: aligned(r, rep),
        })
        .collect();
    let jobs: Vec<(usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(p, part)| (0..part.r.chunks.len()).map(move |i| (p, i)))
        .collect();
    let buffered = target.buffered();
    let frames = std::sync::Mutex::new(None::<(usize, FrameStream)>);
    run_pipeline(
        jobs.len(),
        threads,
        |j| {
            let (p, i) = jobs[j];
            let mut f = frames
                .lock()
                .map_err(|_| Error::Invalid("frame reader poisoned".into()))?;
            match &mut *f {
                Some((at, stream)) if *at == p => stream.frame(i),
                _ => f
                    .insert((p, FrameStream::new(image, parts[p].r)))
                    .1
                    .frame(i),
            }
        },
        |j, frame| -> Result<u64> {
            let (p, i) = jobs[j];
            let Part { r, base, .. } = parts[p];
            // A direct partition's writes are all 4 KiB-aligned, so none shares a page
            // with another partition's; inside an unaligned one every write goes through
            // the page cache.
            let io: &dyn BlockIo = if parts[p].direct { target } else { &buffered };
            let c = &r.chunks[i];
            let mut raw = decode_frame(&frame, r, i)?;
            // Verified: a relay may pass the frame on while this node writes it.
            if let Some(hook) = &opts.on_chunk {
                hook(r, i, frame);
            }
            if r.filesystem == "swap" && c.offset == 0 {
                swap::fit_header(&mut raw, parts[p].target_size);
            }
            let mut at = 0usize;
            for (o, l) in c.ranges() {
                // Validated at load; checked again where it matters: never a byte past
                // the partition's end, whatever the arithmetic of a hostile manifest.
                let to = at.checked_add(l as usize).filter(|t| *t <= raw.len());
                let inside = o.checked_add(l).is_some_and(|e| e <= parts[p].target_size);
                let (Some(to), true) = (to, inside) else {
                    return Err(r.chunk_error(
                        i,
                        format!(
                            "range {o}+{l} does not fit partition {} ({} bytes) or the chunk; not written",
                            r.number, parts[p].target_size
                        ),
                    ));
                };
                io.write_all_at(&raw[at..to], base + o).map_err(|e| {
                    Error::Invalid(format!(
                        "{}: writing partition {} chunk {i} at partition byte {o} (disk byte {}): {e}",
                        tpath.display(),
                        r.number,
                        base + o
                    ))
                })?;
                at = to;
            }
            if opts.verify {
                read_back(io, r, i, base, &raw, &tpath)?;
            }
            Ok(c.length)
        },
        |_, n| {
            progress.inc(n);
            Ok(())
        },
    )?;
    for part in parts.iter().filter(|p| p.r.fill == Fill::Zero) {
        let (r, base) = (part.r, part.base);
        // The gaps between the stored ranges, clamped to the target partition: a zero
        // fill never reaches past its end whatever the ranges say.
        let mut pos = 0u64;
        let stored = r.chunks.iter().flat_map(|c| c.ranges());
        for (o, l) in stored.chain(std::iter::once((part.target_size, 0))) {
            let o = o.min(part.target_size);
            if o > pos {
                target
                    .zero_range(base + pos, o - pos)
                    .map_err(|e| werr(format!("zeroing partition {} at {pos}", r.number), e))?;
            }
            pos = pos.max(o.saturating_add(l)).min(part.target_size);
        }
    }
    progress.finish();
    target.flush().map_err(|e| werr("flushing".into(), e))?;

    if let Some(hold) = &opts.before_grow {
        hold();
    }

    // Grow ext file systems to their partition, before the table is written.
    for (r, rep) in regions.iter().zip(report.regions.iter_mut()) {
        if r.filesystem.starts_with("ext") && rep.target_size >= r.fs_size + 1024 * 1024 {
            let what = format!("partition {} of {}", r.number, tpath.display());
            let access = PartitionAccess::new(target, rep.disk_offset, rep.target_size, &what)?;
            let dev = access.path();
            run_tool("e2fsck", &["-f", "-p", &dev], &[0, 1], &what)?;
            run_tool(
                "resize2fs",
                &[&dev, &format!("{}K", rep.target_size / 1024)],
                &[0],
                &what,
            )?;
            drop(access);
            let view = crate::fs::PartView {
                disk: target,
                start: rep.disk_offset,
                size: rep.target_size,
            };
            let new = crate::fs::ext::geometry(&view)
                .ok()
                .flatten()
                .map(|(bs, n)| bs * n)
                .unwrap_or(0);
            rep.grown = Some((r.fs_size, new));
        }
    }

    // Last: the disk head and the table.
    if let Some(bytes) = head_bytes {
        let head_end = bytes
            .len()
            .min((plan.layout.first_used_sector() * ss) as usize);
        if plan.keep_table {
            // Boot code and boot-loader gap only; the table bytes stay as they are.
            let mut pos = 0usize;
            for (o, l) in table_ranges(&plan.layout) {
                let o = (o as usize).min(head_end);
                if o > pos {
                    target
                        .write_all_at(&bytes[pos..o], pos as u64)
                        .map_err(|e| werr("writing the disk head".into(), e))?;
                }
                pos = pos.max(o + l as usize);
            }
            if head_end > pos {
                target
                    .write_all_at(&bytes[pos..head_end], pos as u64)
                    .map_err(|e| werr("writing the disk head".into(), e))?;
            }
        } else {
            target
                .write_all_at(&bytes[..head_end], 0)
                .map_err(|e| werr("writing the disk head".into(), e))?;
            crate::layout::write_table(target, &plan.layout, &bytes[..bytes.len().min(440)])?;
            if plan.layout.disk_size == image.layout.disk_size
                && crate::layout::differences(&image.layout, &plan.layout).is_empty()
            {
                // Same disk as the master: the captured sectors are the table, byte for byte
                // (including fields our writer computes differently, like CHS addresses).
                target
                    .write_all_at(&bytes[..head_end], 0)
                    .map_err(|e| werr("writing the disk head".into(), e))?;
            }
        }
    } else if !plan.keep_table {
        crate::layout::write_table(target, &plan.layout, &[])?;
    }
    target.flush().map_err(|e| werr("flushing".into(), e))?;
    if let Some(mark) = mark {
        mark.clear(target)
            .map_err(|e| werr("restoring the kept table's signatures".into(), e))?;
    }
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
        .map_err(|e| werr("telling the kernel the new partitions".into(), e))?;
    Ok(report)
}

/// A path e2fsprogs can open for one partition of the target, before the partition table
/// exists. On a block device: `DEV?offset=N` (e2fsprogs' own I/O option). On a disk-image
/// file: a loop device over exactly the partition's bytes, because resize2fs truncates a
/// regular file to the new file-system size and ignores `?offset=` when doing so (seen with
/// e2fsprogs 1.47.0: the tail of the grown file system was cut off).
enum PartitionAccess {
    Offset(String),
    Loop(String),
}

impl PartitionAccess {
    fn new(target: &Disk, offset: u64, size: u64, what: &str) -> Result<Self> {
        if target.is_block_device() {
            return Ok(PartitionAccess::Offset(format!(
                "{}?offset={offset}",
                target.path().display()
            )));
        }
        let out = Command::new("losetup")
            .args([
                "--find",
                "--show",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
            ])
            .arg(target.path())
            .output()
            .map_err(|e| Error::External {
                program: "losetup".into(),
                target: what.into(),
                msg: format!("cannot run it ({e})"),
            })?;
        if !out.status.success() {
            return Err(Error::External {
                program: "losetup".into(),
                target: what.into(),
                msg: format!(
                    "{}; growing ext4 inside a disk-image file needs a loop device (run as root), or keep the master's disk size",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(PartitionAccess::Loop(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }

    fn path(&self) -> String {
        match self {
            PartitionAccess::Offset(p) | PartitionAccess::Loop(p) => p.clone(),
        }
    }
}

impl Drop for PartitionAccess {
    fn drop(&mut self) {
        if let PartitionAccess::Loop(dev) = self {
            let _ = Command::new("losetup").arg("-d").arg(dev.as_str()).output();
        }
    }
}

/// Runs an external program, accepting the given exit codes.
/// A partition being restored: its region, where it starts on the target, how big it is
/// there, and whether its chunks may be written with `O_DIRECT`.
struct Part<'a> {
    r: &'a Region,
    base: u64,
    target_size: u64,
    direct: bool,
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
    let back = c.read_from(target, base).map_err(|e| {
        Error::Invalid(format!(
            "{}: reading back partition {} chunk {i} at disk byte {}: {e}",
            tpath.display(),
            r.number,
            base + c.offset
        ))
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

pub fn run_tool(program: &str, args: &[&str], ok: &[i32], target: &str) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::External {
            program: program.into(),
            target: target.into(),
            msg: format!("cannot run it ({e}); install e2fsprogs"),
        })?;
    let code = out.status.code().unwrap_or(-1);
    if !ok.contains(&code) {
        return Err(Error::External {
            program: format!("{program} {}", args.join(" ")),
            target: target.into(),
            msg: format!(
                "exit {code}: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(())
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
                .map(|(number, start)| Partition {
                    number,
                    start,
                    size: 4096,
                    type_: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
                    guid: None,
                    name: None,
                    attributes: 0,
                    role: None,
                    bootable: false,
                    ebr: None,
                    filesystem: None,
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

    fn raw() -> Vec<u8> {
        (0..8192u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn write(disk: &MemDisk, bytes: &[u8]) {
        disk.write_all_at(&bytes[..4096], 8192 + 4096).unwrap();
        disk.write_all_at(&bytes[4096..], 8192 + 16384).unwrap();
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
