//! One partition of an image, on its own, into a device or file of its own at byte 0: what
//! a diskless node (docs/AGENT.md, "Diskless") boots from RAM. This module owns
//! - [`pick_root`]: which region is the root file system (the group's `root = N`, else
//!   the one region the layout types as a Linux root, else the one region holding a Linux
//!   root file system; anything else is an error naming the choices);
//! - [`restore_region`]: the region's chunks streamed, each verified (sha256 of the raw
//!   bytes) before it is handed to the relay hook and written at its partition offset,
//!   then read back and compared. Nothing of the partition table, the disk head or the
//!   other regions is written, and nothing past the region's size.
//!
//! It does not allocate the RAM (the agent makes the tmpfs file) or mount anything.

use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::frame::{decode_frame, FrameStream};
use crate::manifest::{Image, Region};
use crate::pool::run_pipeline;
use crate::progress::Progress;
use crate::restore::ChunkHook;
use std::path::Path;

/// The discoverable-partitions type GUID of an x86-64 Linux root partition.
pub const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// File systems a Linux root may be (what a region's `filesystem` says).
pub const ROOT_FILESYSTEMS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs"];

/// The region to boot as the root file system: partition `requested` when given (it must
/// be in the image), else the one partition the layout types [`ROOT_X86_64`], else the
/// one region with a file system of [`ROOT_FILESYSTEMS`]. No guess among several: the
/// error lists every partition with its file system, for the admin's `root = N`.
pub fn pick_root(image: &Image, requested: Option<u32>) -> Result<&Region> {
    let parts: Vec<&Region> = image
        .manifest
        .regions
        .iter()
        .filter(|r| r.number != 0)
        .collect();
    let choices = || {
        parts
            .iter()
            .map(|r| format!("{} ({})", r.number, r.filesystem))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(n) = requested {
        return parts
            .iter()
            .copied()
            .find(|r| r.number == n)
            .ok_or_else(|| {
                Error::Selection(format!(
                    "root partition {n} is not in image {} (it holds {})",
                    image.location(),
                    choices()
                ))
            });
    }
    let typed: Vec<&Region> = parts
        .iter()
        .copied()
        .filter(|r| {
            image
                .layout
                .partition(r.number)
                .is_some_and(|p| p.type_.eq_ignore_ascii_case(ROOT_X86_64))
        })
        .collect();
    if let [one] = typed[..] {
        return Ok(one);
    }
    let linux: Vec<&Region> = parts
        .iter()
        .copied()
        .filter(|r| ROOT_FILESYSTEMS.contains(&r.filesystem.as_str()))
        .collect();
    match linux[..] {
        [one] if typed.is_empty() => Ok(one),
        _ => Err(Error::Selection(format!(
            "cannot tell which partition of image {} is the root ({}); set `root = N` on the group in cluster.toml (partitions: {})",
            image.location(),
            if typed.len() > 1 || linux.len() > 1 {
                "several could be"
            } else {
                "none holds a Linux root file system"
            },
            choices()
        ))),
    }
}

/// Writes region `r` of `image` into `target` at byte 0 (the partition as a device of its
/// own), every chunk verified before `on_chunk` sees its frame and before it is written,
/// and read back after. `target` must hold the whole region (`r.size` bytes). Returns the
/// raw bytes written. `threads`: decompression workers (0: all cores).
pub fn restore_region(
    image: &Image,
    r: &Region,
    target: &dyn BlockIo,
    tpath: &Path,
    on_chunk: Option<&ChunkHook>,
    threads: usize,
    progress: &Progress,
) -> Result<u64> {
    if target.size() < r.size {
        return Err(Error::Refused {
            device: tpath.to_path_buf(),
            reason: format!(
                "it has {} bytes, region {} needs {}",
                target.size(),
                r.name,
                r.size
            ),
        });
    }
    progress.start(r.used_bytes, "restoring");
    let stream = std::sync::Mutex::new(FrameStream::new(image, r));
    let threads = crate::pool::threads(threads);
    let mut written = 0u64;
    run_pipeline(
        r.chunks.len(),
        threads,
        |i| {
            stream
                .lock()
                .map_err(|_| Error::Poisoned("frame reader"))?
                .frame(i)
        },
        |i, frame| write_chunk(r, i, frame, target, tpath, on_chunk),
        |_, n| {
            written = written.saturating_add(n);
            progress.inc(n);
            Ok(())
        },
    )?;
    progress.finish();
    target
        .flush()
        .map_err(|e| Error::device(tpath, "flushing", e))?;
    Ok(written)
}

/// Chunk `i`: decoded and verified, passed to the hook, written range by range (never
/// past the region's size), read back and compared.
fn write_chunk(
    r: &Region,
    i: usize,
    frame: Vec<u8>,
    target: &dyn BlockIo,
    tpath: &Path,
    on_chunk: Option<&ChunkHook>,
) -> Result<u64> {
    let raw = decode_frame(&frame, r, i)?;
    if let Some(hook) = on_chunk {
        hook(r, i, frame);
    }
    let c = &r.chunks[i];
    let mut at = 0usize;
    for (o, l) in c.ranges() {
        let to = usize::try_from(l)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|t| *t <= raw.len());
        let inside = o.checked_add(l).is_some_and(|e| e <= r.size);
        let (Some(to), true) = (to, inside) else {
            return Err(r.chunk_error(
                i,
                format!(
                    "range {o}+{l} does not fit region {} ({} bytes) or the chunk; not written",
                    r.name, r.size
                ),
            ));
        };
        target
            .write_all_at(&raw[at..to], o)
            .map_err(|err| io_error(tpath, "writing", r, i, o, err))?;
        at = to;
    }
    let back = c
        .read_from(target, 0)
        .map_err(|err| io_error(tpath, "reading back", r, i, c.offset, err))?;
    if back[..] != raw[..] {
        return Err(r.chunk_error(
            i,
            format!(
                "reads back from {} with different bytes: the RAM device did not keep what was written",
                tpath.display()
            ),
        ));
    }
    Ok(c.length)
}

fn io_error(
    tpath: &Path,
    action: &'static str,
    r: &Region,
    i: usize,
    o: u64,
    err: std::io::Error,
) -> Error {
    Error::ChunkIo {
        device: tpath.to_path_buf(),
        action,
        partition: r.number,
        chunk: i,
        at: format!("byte {o} of the {} device", r.name),
        err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;
    use crate::fs::Fill;
    use crate::layout::{Layout, Partition};
    use crate::manifest::{Chunk, Manifest};
    use sha2::{Digest, Sha256};
    use std::sync::{Arc, Mutex};

    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

    /// A region `p<n>` of `size` bytes whose chunks hold `chunks` (offset, bytes); their
    /// frames are appended to `p<n>.zst` in `dir`.
    fn region(dir: &Path, n: u32, fs: &str, size: u64, chunks: &[(u64, Vec<u8>)]) -> Region {
        let mut payload = vec![];
        let mut out = vec![];
        for (offset, raw) in chunks {
            let frame = crate::frame::compress_chunk(raw, 3, 4096).unwrap();
            out.push(Chunk {
                offset: *offset,
                length: raw.len() as u64,
                payload_offset: payload.len() as u64,
                compressed_length: frame.len() as u64,
                sha256: hex::encode(Sha256::digest(raw)),
                frame_sha256: hex::encode(Sha256::digest(&frame)),
                extents: vec![],
            });
            payload.extend_from_slice(&frame);
        }
        std::fs::write(dir.join(format!("p{n}.zst")), &payload).unwrap();
        Region {
            name: format!("p{n}"),
            number: n,
            size,
            filesystem: fs.into(),
            uuid: None,
            label: None,
            fs_size: size,
            used_bytes: chunks.iter().map(|(_, r)| r.len() as u64).sum(),
            fill: Fill::Keep,
            payload: format!("p{n}.zst"),
            chunks: out,
        }
    }

    /// An image of `regions` over a GPT layout typing partition n as `types[n - 1]`.
    fn image(dir: &Path, regions: Vec<Region>, types: &[&str]) -> Image {
        let partitions = types
            .iter()
            .enumerate()
            .map(|(i, t)| Partition::plain(i as u32 + 1, 2048 + i as u64 * 16384, 16384, t))
            .collect();
        let layout = Layout::gpt(64 << 20, partitions);
        Image {
            source: Arc::new(crate::source::LocalDir(dir.to_path_buf())),
            manifest: Manifest {
                format: crate::manifest::FORMAT_NAME.into(),
                version: crate::manifest::FORMAT_VERSION,
                image_id: String::new(),
                layout_sha256: String::new(),
                chunk_size: 4096,
                level: 3,
                regions,
            },
            layout,
        }
    }

    fn three(dir: &Path, root_fs: &str, types: &[&str]) -> Image {
        let rs = vec![
            region(dir, 1, "vfat", 8 << 20, &[(0, vec![1u8; 4096])]),
            region(dir, 2, "swap", 8 << 20, &[(0, vec![2u8; 4096])]),
            region(dir, 3, root_fs, 8 << 20, &[(0, vec![3u8; 4096])]),
        ];
        image(dir, rs, types)
    }

    #[test]
    fn the_root_is_the_groups_choice_else_the_typed_one_else_the_one_linux_fs() {
        let dir = tempfile::tempdir().unwrap();
        let img = three(dir.path(), "ext4", &[LINUX, LINUX, LINUX]);
        assert_eq!(pick_root(&img, None).unwrap().number, 3);
        assert_eq!(pick_root(&img, Some(1)).unwrap().number, 1);
        let e = pick_root(&img, Some(7)).unwrap_err().to_string();
        assert!(
            e.contains("root partition 7") && e.contains("3 (ext4)"),
            "{e}"
        );
        // The layout's root type wins over the file-system guess.
        let img = three(dir.path(), "ext4", &[LINUX, ROOT_X86_64, LINUX]);
        assert_eq!(pick_root(&img, None).unwrap().number, 2);
        // Two Linux file systems and no type: no guess; the choices are listed.
        let mut img = three(dir.path(), "xfs", &[LINUX, LINUX, LINUX]);
        img.manifest.regions[0].filesystem = "ext4".into();
        let e = pick_root(&img, None).unwrap_err().to_string();
        assert!(
            e.contains("several")
                && e.contains("1 (ext4), 2 (swap), 3 (xfs)")
                && e.contains("root = N"),
            "{e}"
        );
        // None at all.
        let img = three(dir.path(), "unknown", &[LINUX, LINUX, LINUX]);
        let e = pick_root(&img, None).unwrap_err().to_string();
        assert!(e.contains("none holds"), "{e}");
    }

    #[test]
    fn a_region_lands_at_byte_zero_every_chunk_verified_and_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![0xa5u8; 8192];
        let b: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let r = region(
            dir.path(),
            4,
            "ext4",
            1 << 20,
            &[(0, a.clone()), (65536, b.clone())],
        );
        let img = image(dir.path(), vec![r], &[LINUX, LINUX, LINUX, LINUX]);
        let r = &img.manifest.regions[0];
        let t = MemDisk::new(1 << 20, 512);
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        let hook: ChunkHook =
            Arc::new(move |r, i, frame| s.lock().unwrap().push((r.name.clone(), i, frame.len())));
        let n = restore_region(
            &img,
            r,
            &t,
            Path::new("mem"),
            Some(&hook),
            2,
            &Progress::hidden(),
        )
        .unwrap();
        assert_eq!(n, 12288);
        let mut want = vec![0u8; 1 << 20];
        want[..8192].copy_from_slice(&a);
        want[65536..65536 + 4096].copy_from_slice(&b);
        assert!(t.bytes() == want, "the device holds exactly the region");
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(
            seen.iter()
                .map(|(n, i, _)| (n.as_str(), *i))
                .collect::<Vec<_>>(),
            [("p4", 0), ("p4", 1)]
        );
    }

    #[test]
    fn a_corrupted_chunk_is_refused_and_neither_written_nor_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let r = region(dir.path(), 1, "ext4", 1 << 20, &[(0, vec![7u8; 4096])]);
        let mut img = image(dir.path(), vec![r], &[LINUX]);
        // The raw sha256 no longer matches: the payload "changed".
        img.manifest.regions[0].chunks[0].sha256 = "00".repeat(32);
        let t = MemDisk::new(1 << 20, 512);
        let called = Arc::new(Mutex::new(0));
        let c = called.clone();
        let hook: ChunkHook = Arc::new(move |_, _, _| *c.lock().unwrap() += 1);
        let r = img.manifest.regions[0].clone();
        let e = restore_region(
            &img,
            &r,
            &t,
            Path::new("mem"),
            Some(&hook),
            1,
            &Progress::hidden(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chunk 0") && e.contains("sha256"), "{e}");
        assert_eq!(*called.lock().unwrap(), 0);
        assert!(t.bytes().iter().all(|b| *b == 0));
    }

    #[test]
    fn nothing_is_written_past_the_region_nor_into_a_device_too_small() {
        let dir = tempfile::tempdir().unwrap();
        // The chunk claims to sit past the region's end (a hostile manifest).
        let r = region(dir.path(), 1, "ext4", 65536, &[(65536, vec![9u8; 4096])]);
        let img = image(dir.path(), vec![r], &[LINUX]);
        let r = &img.manifest.regions[0];
        let t = MemDisk::new(1 << 20, 512);
        let e = restore_region(&img, r, &t, Path::new("mem"), None, 1, &Progress::hidden())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit region p1"), "{e}");
        assert!(t.bytes().iter().all(|b| *b == 0));
        let small = MemDisk::new(32768, 512);
        let e = restore_region(
            &img,
            r,
            &small,
            Path::new("mem"),
            None,
            1,
            &Progress::hidden(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs 65536"), "{e}");
    }
}
