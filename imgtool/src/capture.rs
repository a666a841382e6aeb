//! Capture: reads a disk's layout, probes the selected partitions' file systems, and
//! produces an image: `layout`, one payload per region (the disk head and each
//! partition) made of independent zstd frames, and the `manifest` whose sha256 is the
//! image id. Where the image goes is an [`ImageSink`]: a directory ([`DirSink`], built
//! in `<dir>.partial` and renamed into place at the end; a failed capture removes it
//! again) or an upload to `imgtool serve` while capturing ([`crate::upload`]). The
//! bytes and the id do not depend on the sink.

use crate::chunk::chunk_ranges;
use crate::disk::{AlignedBuf, BlockIo};
use crate::error::{Error, Result};
use crate::fs::{probe, Fill, PartView};
use crate::layout::{read_layout, Layout};
use crate::manifest::{
    Chunk, Manifest, Region, FORMAT_NAME, FORMAT_VERSION, LAYOUT_FILE, MANIFEST_FILE,
};
use crate::pool::run_pipeline;
use crate::progress::Progress;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Capture settings.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Partitions to capture; `None` = every data partition.
    pub partitions: Option<Vec<u32>>,
    /// Partitions stored whole, without looking at their file system.
    pub raw: Vec<u32>,
    pub level: i32,
    /// Compression threads; 0 = all cores.
    pub threads: usize,
    pub chunk_size: u64,
    /// Hash each chunk's raw bytes (the manifest's `sha256`) here. An upload leaves
    /// them to the server ([`crate::upload::capture_to_server`]), which decompresses
    /// and hashes every frame to check it anyway: hashing them on the node too was a
    /// fifth of a backup's CPU. Without them the manifest has no image id until the
    /// server fills them in.
    pub hash_raw: bool,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            partitions: None,
            raw: vec![],
            level: 3,
            threads: 0,
            chunk_size: crate::chunk::DEFAULT_CHUNK,
            hash_raw: true,
        }
    }
}

/// Bytes of the disk head kept in the image (boot code, table, boot-loader gap).
pub const HEAD_MAX: u64 = crate::table::MAX_HEAD;

/// The frame codec moved to [`crate::frame`]; this path keeps working.
pub use crate::frame::compress_chunk;

/// Where a capture's output goes, in this order: for each region `begin_region`, its
/// frames in manifest order (`frame`: the chunk's entry is complete, its
/// `payload_offset` is where the frame goes in the payload), `end_region`; then
/// `finish` with the `layout` and `manifest` files' bytes. Nothing is called before the
/// disk's table and the selection were checked.
pub trait ImageSink {
    fn begin_region(&mut self, region: &Region) -> Result<()>;
    fn frame(&mut self, region: &Region, index: usize, chunk: &Chunk, frame: Vec<u8>)
        -> Result<()>;
    fn end_region(&mut self, region: &Region) -> Result<()>;
    fn finish(&mut self, layout: &[u8], manifest: &[u8]) -> Result<()>;
}

/// An image directory being written: `<out>.partial`, renamed to `out` by
/// [`DirSink::commit`]; removed when dropped before that.
pub struct DirSink {
    out: PathBuf,
    partial: PathBuf,
    /// Removed again on any error; disarmed once renamed into place.
    cleanup: RemoveOnDrop,
    payload: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl DirSink {
    /// A new image directory `out`, which must not exist (a stale `<out>.partial` is
    /// removed). Nothing is created before the first region.
    pub fn new(out: &Path) -> Result<DirSink> {
        if out.exists() {
            return Err(Error::Exists {
                path: out.to_path_buf(),
            });
        }
        Ok(DirSink {
            out: out.to_path_buf(),
            partial: PathBuf::from(format!("{}.partial", out.display())),
            cleanup: RemoveOnDrop(None),
            payload: None,
        })
    }

    fn create(&mut self) -> Result<()> {
        if self.cleanup.0.is_some() {
            return Ok(());
        }
        let partial = &self.partial;
        if partial.exists() {
            std::fs::remove_dir_all(partial)
                .map_err(|e| Error::io("removing stale", partial, e))?;
        }
        std::fs::create_dir_all(partial).map_err(|e| Error::io("creating", partial, e))?;
        self.cleanup.0 = Some(partial.clone());
        Ok(())
    }

    /// Renames the finished directory into place.
    pub fn commit(mut self) -> Result<()> {
        self.create()?;
        std::fs::rename(&self.partial, &self.out)
            .map_err(|e| Error::io("renaming into place", &self.out, e))?;
        self.cleanup.0 = None;
        Ok(())
    }
}

impl ImageSink for DirSink {
    fn begin_region(&mut self, region: &Region) -> Result<()> {
        self.create()?;
        let ppath = self.partial.join(&region.payload);
        let file = std::fs::File::create(&ppath).map_err(|e| Error::io("creating", &ppath, e))?;
        self.payload = Some((ppath, std::io::BufWriter::with_capacity(1 << 20, file)));
        Ok(())
    }

    fn frame(&mut self, _: &Region, _: usize, _: &Chunk, frame: Vec<u8>) -> Result<()> {
        let Some((ppath, w)) = &mut self.payload else {
            return Err(Error::Poisoned("capture sink (frame outside a region)"));
        };
        w.write_all(&frame)
            .map_err(|e| Error::io("writing", &*ppath, e))
    }

    fn end_region(&mut self, _: &Region) -> Result<()> {
        let Some((ppath, w)) = self.payload.take() else {
            return Ok(());
        };
        let f = w
            .into_inner()
            .map_err(|e| Error::io("writing", &ppath, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("syncing", &ppath, e))
    }

    fn finish(&mut self, layout: &[u8], manifest: &[u8]) -> Result<()> {
        self.create()?;
        for (name, bytes) in [(LAYOUT_FILE, layout), (MANIFEST_FILE, manifest)] {
            let path = self.partial.join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::io("writing", &path, e))?;
        }
        Ok(())
    }
}

/// Captures `disk` (named `disk_name` in messages) into `out`, which must not exist.
pub fn capture(
    disk: &dyn BlockIo,
    disk_name: &Path,
    out: &Path,
    opts: &CaptureOptions,
    progress: &Progress,
) -> Result<Manifest> {
    let mut sink = DirSink::new(out)?;
    let manifest = capture_into(disk, disk_name, &mut sink, opts, progress)?;
    sink.commit()?;
    Ok(manifest)
}

/// Captures `disk` (named `disk_name` in messages) into `sink`.
///
/// Steps: read the table and check the selection (`select_partitions`) and that every
/// rule an image must pass holds, before anything is written; plan every region's chunks
/// (`plan_regions`); compress each region into its payload (`write_region`); make
/// `layout` and `manifest` (`write_manifest`) and hand them to the sink.
pub fn capture_into(
    disk: &dyn BlockIo,
    disk_name: &Path,
    sink: &mut dyn ImageSink,
    opts: &CaptureOptions,
    progress: &Progress,
) -> Result<Manifest> {
    let mut layout = read_layout(disk)?.ok_or_else(|| Error::Uncapturable {
        device: disk_name.to_path_buf(),
        reason: "no valid GPT or MBR partition table".into(),
    })?;
    layout.grow = layout.default_grow();
    let selected = select_partitions(&layout, disk, disk_name, opts)?;
    // The rules every image must pass (docs/FORMAT.md), checked now: a table that
    // restore would refuse is reported here, not after a whole capture.
    layout.validate().map_err(|e| Error::Uncapturable {
        device: disk_name.to_path_buf(),
        reason: format!("the partition table cannot be captured: {e}"),
    })?;
    // Plan every region first so progress knows the total.
    let jobs = plan_regions(&mut layout, &selected, disk, disk_name, opts)?;
    let total: u64 = jobs
        .iter()
        .flat_map(|j| j.ranges.iter().flatten().map(|r| r.1))
        .sum();
    progress.start(total, "capturing");
    let mut regions = vec![];
    for job in jobs {
        regions.push(write_region(job, disk, disk_name, sink, opts, progress)?);
    }
    progress.finish();
    write_manifest(sink, &layout, regions, opts)
}

/// The partitions to capture: `opts.partitions` (each must exist and hold data, not be
/// the extended container) or every data partition; each `--raw` one among them, and
/// each inside the disk (a truncated disk-image file is named as such).
fn select_partitions(
    layout: &Layout,
    disk: &dyn BlockIo,
    disk_name: &Path,
    opts: &CaptureOptions,
) -> Result<Vec<u32>> {
    let selected: Vec<u32> = match &opts.partitions {
        Some(list) => {
            for n in list {
                match layout.partition(*n) {
                    None => {
                        return Err(Error::Selection(format!(
                            "{}: partition {n} does not exist (it has {})",
                            disk_name.display(),
                            layout.partitions.iter().map(|p| p.number.to_string()).collect::<Vec<_>>().join(", ")
                        )))
                    }
                    Some(p) if p.is_extended() => {
                        return Err(Error::Selection(format!(
                            "{}: partition {n} is the extended container; select its logical partitions",
                            disk_name.display()
                        )))
                    }
                    _ => {}
                }
            }
            // A partition named twice would be captured twice into one payload file.
            let mut seen = std::collections::BTreeSet::new();
            if let Some(n) = list.iter().find(|n| !seen.insert(**n)) {
                return Err(Error::Selection(format!(
                    "{}: partition {n} is selected twice",
                    disk_name.display()
                )));
            }
            list.clone()
        }
        None => layout.data_partitions().map(|p| p.number).collect(),
    };
    for r in &opts.raw {
        if !selected.contains(r) {
            return Err(Error::Selection(format!(
                "--raw {r}: partition {r} is not being captured"
            )));
        }
    }
    let ss = layout.sector_size as u64;
    for n in &selected {
        let Some(p) = layout.partition(*n) else {
            continue;
        };
        let end = p.start.checked_add(p.size).and_then(|e| e.checked_mul(ss));
        if end.is_none_or(|e| e > disk.size()) {
            return Err(Error::Uncapturable {
                device: disk_name.to_path_buf(),
                reason: format!(
                    "partition {n} (sectors {}..{}) ends past the end of the disk ({} bytes, {} sectors): the table describes a larger disk (a truncated disk-image file?)",
                    p.start,
                    p.start.saturating_add(p.size),
                    disk.size(),
                    disk.size() / ss
                ),
            });
        }
    }
    Ok(selected)
}

/// One region to capture: its manifest entry (chunks still empty), where it starts on
/// the disk, and the byte ranges of each chunk.
struct Job {
    region: Region,
    base: u64,
    ranges: Vec<Vec<(u64, u64)>>,
}

/// The disk head and every selected partition as a [`Job`]: the file system of each is
/// probed for its used ranges (and recorded in `layout`).
fn plan_regions(
    layout: &mut Layout,
    selected: &[u32],
    disk: &dyn BlockIo,
    disk_name: &Path,
    opts: &CaptureOptions,
) -> Result<Vec<Job>> {
    let ss = layout.sector_size as u64;
    let mut jobs = vec![];
    let head_len = (layout.first_used_sector() * ss)
        .min(HEAD_MAX)
        .min(disk.size());
    jobs.push(Job {
        region: Region {
            name: "head".into(),
            number: 0,
            size: head_len,
            filesystem: "raw".into(),
            uuid: None,
            label: None,
            fs_size: head_len,
            used_bytes: 0,
            fill: Fill::Keep,
            payload: "head.zst".into(),
            chunks: vec![],
        },
        base: 0,
        ranges: chunk_ranges(&[(0, head_len)], opts.chunk_size),
    });
    for n in selected {
        let Some(p) = layout.partitions.iter_mut().find(|p| p.number == *n) else {
            continue;
        };
        let view = PartView {
            disk,
            start: p.start * ss,
            size: p.size * ss,
        };
        let info = probe(&view, opts.raw.contains(n)).map_err(|err| Error::Probe {
            device: disk_name.to_path_buf(),
            partition: *n,
            err,
        })?;
        p.filesystem = Some(info.kind.clone());
        jobs.push(Job {
            region: Region {
                name: format!("p{n}"),
                number: *n,
                size: view.size,
                filesystem: info.kind,
                uuid: info.uuid,
                label: info.label,
                fs_size: info.fs_size,
                used_bytes: 0,
                fill: info.fill,
                payload: format!("p{n}.zst"),
                chunks: vec![],
            },
            base: view.start,
            ranges: chunk_ranges(&info.used, opts.chunk_size),
        });
    }
    Ok(jobs)
}

/// Reads, compresses and hands every chunk of `job` to `sink` (read, compress and send
/// overlap in the pipeline; chunks stay in order), and returns the region with its
/// chunks.
fn write_region(
    job: Job,
    disk: &dyn BlockIo,
    disk_name: &Path,
    sink: &mut dyn ImageSink,
    opts: &CaptureOptions,
    progress: &Progress,
) -> Result<Region> {
    let threads = crate::pool::threads(opts.threads);
    let mut region = job.region;
    sink.begin_region(&region)?;
    let mut payload_offset = 0u64;
    let ranges = &job.ranges;
    let name = region.name.clone();
    run_pipeline(
        ranges.len(),
        threads,
        |i| -> Result<AlignedBuf> {
            let len: u64 = ranges[i].iter().map(|e| e.1).sum();
            let mut buf = AlignedBuf::new(len as usize);
            let mut at = 0usize;
            for &(o, l) in &ranges[i] {
                disk.read_exact_at(&mut buf[at..at + l as usize], job.base + o)
                    .map_err(|err| Error::CaptureRead {
                        device: disk_name.to_path_buf(),
                        region: name.clone(),
                        offset: o,
                        disk_offset: job.base + o,
                        err,
                    })?;
                at += l as usize;
            }
            Ok(buf)
        },
        |i, buf| -> Result<(Vec<u8>, String, String)> {
            let raw_sum = match opts.hash_raw {
                true => hex::encode(Sha256::digest(&buf[..])),
                false => String::new(),
            };
            let frame = compress_chunk(&buf, opts.level, opts.chunk_size).map_err(|err| {
                Error::Compress {
                    region: name.clone(),
                    chunk: i,
                    err,
                }
            })?;
            let frame_sum = hex::encode(Sha256::digest(&frame));
            Ok((frame, raw_sum, frame_sum))
        },
        |i, (frame, sha256, frame_sha256)| {
            let offset = ranges[i][0].0;
            let length: u64 = ranges[i].iter().map(|e| e.1).sum();
            let extents = if ranges[i].len() > 1 {
                ranges[i].iter().map(|e| [e.0, e.1]).collect()
            } else {
                vec![]
            };
            let chunk = Chunk {
                offset,
                length,
                payload_offset,
                compressed_length: frame.len() as u64,
                sha256,
                frame_sha256,
                extents,
            };
            payload_offset += frame.len() as u64;
            sink.frame(&region, i, &chunk, frame)?;
            region.chunks.push(chunk);
            progress.inc(length);
            Ok(())
        },
    )?;
    sink.end_region(&region)?;
    region.used_bytes = region.chunks.iter().map(|c| c.length).sum();
    Ok(region)
}

/// Makes `layout` and the `manifest` (whose sha256 is the image id; left empty when
/// the raw hashes are the server's to take, see [`CaptureOptions::hash_raw`]) and hands
/// them to `sink`.
fn write_manifest(
    sink: &mut dyn ImageSink,
    layout: &Layout,
    regions: Vec<Region>,
    opts: &CaptureOptions,
) -> Result<Manifest> {
    let layout_text = layout.to_json();
    let mut manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        image_id: String::new(),
        layout_sha256: hex::encode(Sha256::digest(layout_text.as_bytes())),
        chunk_size: opts.chunk_size,
        level: opts.level,
        regions,
    };
    if opts.hash_raw {
        manifest.image_id = manifest.compute_id();
    }
    sink.finish(layout_text.as_bytes(), manifest.to_json().as_bytes())?;
    Ok(manifest)
}

/// A half-written `<image>.partial` directory: removed when a capture fails, so a failed
/// capture leaves nothing behind.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
