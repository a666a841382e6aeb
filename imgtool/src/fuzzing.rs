//! Fuzz target bodies: the functions `fuzz/fuzz_targets/*.rs` call with the fuzzer's
//! input, and `tests/fuzz_regressions.rs` calls with every kept input (the corpus seeds
//! and the crashes found), so a found input stays a regression test without the fuzzer.
//!
//! Each target must return for every input, without panicking, aborting or hanging:
//! errors are fine, and are ignored here. See docs/FUZZING.md.

use crate::disk::MemDisk;
use crate::fs::PartView;
use crate::manifest::{Image, ImageFiles, Manifest};
use crate::source::{ImageSource, SourceError, Stream};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Inputs longer than this are cut: every structure read here fits (a GPT with 128
/// entries needs 34 sectors, an ext or FAT head a few KiB), and the fuzzers run with
/// `-max_len` at this value.
pub const MAX_INPUT: usize = 64 << 10;

fn cut(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

/// A disk holding `data`; the first byte picks the sector size (odd: 4096, even: 512)
/// and the disk is at least one sector long.
fn disk_of(data: &[u8]) -> MemDisk {
    let data = cut(data);
    let ss: u32 = if data.first().is_some_and(|b| b & 1 == 1) {
        4096
    } else {
        512
    };
    let mut v = data.to_vec();
    if v.len() < ss as usize {
        v.resize(ss as usize, 0);
    }
    MemDisk::from_vec(v, ss)
}

/// The partition table readers (`read_layout`: MBR and its EBR chain, GPT primary and
/// backup) over a disk made of the input.
pub fn gpt_mbr(data: &[u8]) {
    let disk = disk_of(data);
    if let Ok(Some(layout)) = crate::layout::read_layout(&disk) {
        // A table that reads must also serialise (the image's `layout` file).
        let _ = serde_json::to_string(&layout);
    }
}

/// Largest partition an `ext_probe`/`fat_probe` input describes: 32 KiB << 11, room
/// for a FAT32 of 512-byte clusters and for several groups of 4 KiB-block ext4, while
/// each run stays short.
pub const MAX_PART: u64 = 64 << 20;

/// `[shift byte] partition head`: the partition is the head followed by zeros, and is
/// `32 KiB << (shift & 15)` long (at most [`MAX_PART`]) or, for shift 0, exactly the
/// head. So a 64 KiB input can be the head of a FAT32 or multi-group ext4 file system.
fn part_probe(data: &[u8], probe: impl Fn(&PartView) -> std::io::Result<()>) {
    let data = cut(data);
    let Some((&shift, head)) = data.split_first() else {
        return;
    };
    let shift = (shift & 15).min(11);
    let size = if shift == 0 {
        head.len() as u64
    } else {
        (head.len() as u64).max((32u64 << 10) << shift)
    };
    let disk = ZeroTail {
        head: head.to_vec(),
        size,
    };
    let part = PartView {
        disk: &disk,
        start: 0,
        size,
    };
    let _ = probe(&part);
}

/// A disk of `size` bytes: `head`, then zeros.
struct ZeroTail {
    head: Vec<u8>,
    size: u64,
}

impl crate::disk::BlockIo for ZeroTail {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.fill(0);
        let head = self.head.len() as u64;
        if offset < head {
            let n = (end.min(head) - offset) as usize;
            buf[..n].copy_from_slice(&self.head[offset as usize..offset as usize + n]);
        }
        Ok(())
    }
    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only"))
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        512
    }
}

fn check_used(size: u64, used: &[(u64, u64)]) {
    // The probes promise sorted, non-overlapping ranges within the partition.
    let mut end = 0u64;
    for &(o, l) in used {
        assert!(o >= end, "used ranges overlap or are unsorted: {used:?}");
        end = o.checked_add(l).expect("used range wraps");
        assert!(
            end <= size,
            "used range {o}+{l} past the partition ({size})"
        );
    }
}

/// The ext2/3/4 probe and `geometry` over a partition made of the input.
pub fn ext_probe(data: &[u8]) {
    part_probe(data, |p| {
        if let Some(info) = crate::fs::ext::probe(p)? {
            check_used(p.size, &info.used);
        }
        crate::fs::ext::geometry(p)?;
        Ok(())
    });
}

/// The FAT and swap probes; for partitions of the input's own size, the whole probe
/// chain (ext, FAT, swap, non-zero scan).
pub fn fat_probe(data: &[u8]) {
    part_probe(data, |p| {
        if let Some(info) = crate::fs::fat::probe(p)? {
            check_used(p.size, &info.used);
        }
        if let Some(info) = crate::fs::swap::probe(p)? {
            check_used(p.size, &info.used);
        }
        if p.size <= MAX_INPUT as u64 {
            let info = crate::fs::probe(p, false)?;
            check_used(p.size, &info.used);
        }
        Ok(())
    });
}

/// The XFS probe (superblock, AGFs, free-space trees; the non-zero fallback) over a
/// partition made of the input, as `ext_probe`.
pub fn xfs_probe(data: &[u8]) {
    part_probe(data, |p| {
        if let Some(info) = crate::fs::xfs::probe(p)? {
            check_used(p.size, &info.used);
        }
        Ok(())
    });
}

/// LVM2 (`fs::lvm`): the metadata text parser and the VG's extent map with the input
/// as a text; then, with the input as `[shift] head` (as `ext_probe`), the whole PV probe
/// (label, pv_header, mda_header, text, LV views and the probes inside them) and the
/// pvresize of restore's grow step on a 4 MiB disk made of the head (an image's bytes
/// reach it on a node).
pub fn lvm_metadata(data: &[u8]) {
    use crate::fs::lvm;
    let data = cut(data);
    let vg = lvm::text::parse(data)
        .ok()
        .and_then(|root| lvm::meta::Vg::from_root(&root).ok());
    if let Some(vg) = vg {
        for pv in &vg.pvs {
            if let Ok(map) = lvm::meta::map_pv(&vg, pv, MAX_PART) {
                assert!(map.data_end() <= MAX_PART);
            }
        }
    }
    part_probe(data, |p| {
        if let Some(info) = lvm::probe(p)? {
            check_used(p.size, &info.used);
        }
        Ok(())
    });
    // Only inputs with a label reach the resize (its 4 MiB disk costs every run).
    let labelled = data.windows(8).any(|w| w == b"LABELONE");
    if let Some((_, head)) = data.split_first().filter(|_| labelled) {
        let mut v = head.to_vec();
        v.resize(4 << 20, 0);
        let _ = lvm::resize::resize(&MemDisk::from_vec(v, 512), 0, 4 << 20);
    }
}

/// The btrfs probe over a partition made of the input: `[shift] body`, where the body
/// starts at the superblock (64 KiB; the first 64 KiB are zeros) and the partition is
/// `32 KiB << shift` long as for `ext_probe` (at least the body), at most 4 MiB. The
/// checksums of the superblock and of every node carrying its fsid are recomputed first
/// ([`crate::fs::btrfs::synth::reseal`]), so mutations reach the checks behind them. Runs
/// [`crate::fs::btrfs::read`], the probe without its fallback (the non-zero scan, which
/// `fat_probe` covers, took most of each run), and returns what it said.
pub fn btrfs_probe_info(
    data: &[u8],
) -> Option<Result<crate::fs::btrfs::Used, crate::fs::btrfs::Bad>> {
    let data = cut(data);
    let (&shift, body) = data.split_first()?;
    let mut head = vec![0u8; crate::fs::btrfs::synth::SB_AT];
    head.extend_from_slice(body);
    crate::fs::btrfs::synth::reseal(&mut head);
    // At most 4 MiB, the synthetic file system's size: a larger partition only moves
    // the superblock's size check.
    let shift = (shift & 15).min(7);
    let size = if shift == 0 {
        head.len() as u64
    } else {
        (head.len() as u64).max((32u64 << 10) << shift)
    };
    let disk = ZeroTail { head, size };
    let part = PartView {
        disk: &disk,
        start: 0,
        size,
    };
    let _ = crate::fs::btrfs::device(&part);
    let r = crate::fs::btrfs::read(&part).ok()??;
    if let Ok(u) = &r {
        check_used(part.size, &u.ranges);
    }
    Some(r)
}

/// See [`btrfs_probe_info`].
pub fn btrfs_probe(data: &[u8]) {
    let _ = btrfs_probe_info(data);
}

/// Separates the manifest from the layout in an `image_load` input (JSON has no NUL).
pub const IMAGE_SEPARATOR: u8 = 0;

/// How the in-memory source of an `image_load` run answers for the payload files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payloads {
    /// A remote source that cannot tell a payload's length (HTTP): every chunk check
    /// runs except the one against the payload's length.
    Remote,
    /// A local directory whose payloads are exactly as long as the manifest's frames
    /// say (the sum of `compressed_length` over the regions that name the file), so a
    /// consistent image loads completely and the length check runs too.
    LocalAsManifest,
}

/// Loads the image `manifest`/`layout` from memory as [`image_load`] does; the payloads
/// are absent, their lengths as `payloads` says. For the replay tests, which check
/// that the seeds get past the structure checks.
pub fn mem_image(
    manifest: &[u8],
    layout: &[u8],
    payloads: Payloads,
) -> crate::error::Result<Image> {
    let files = ImageFiles {
        manifest: manifest.to_vec(),
        layout: layout.to_vec(),
    };
    let lens = match payloads {
        Payloads::Remote => None,
        Payloads::LocalAsManifest => {
            let mut lens = std::collections::BTreeMap::<String, u64>::new();
            if let Ok(m) = serde_json::from_slice::<Manifest>(manifest) {
                for r in &m.regions {
                    let n = lens.entry(r.payload.clone()).or_default();
                    for c in &r.chunks {
                        *n = n.saturating_add(c.compressed_length);
                    }
                }
            }
            Some(lens)
        }
    };
    let source: Arc<dyn ImageSource> = Arc::new(MemSource {
        files: ImageFiles {
            manifest: files.manifest.clone(),
            layout: files.layout.clone(),
        },
        lens,
    });
    Image::from_files(source, &files)
}

/// Loads an image from `manifest NUL layout`: once as given (from a remote source),
/// then with the manifest's layout hash and image id recomputed so the structural
/// checks behind them run too, from a local source whose payload lengths the manifest
/// gives.
pub fn image_load(data: &[u8]) {
    let data = cut(data);
    let (manifest, layout) = match data.iter().position(|b| *b == IMAGE_SEPARATOR) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let _ = mem_image(manifest, layout, Payloads::Remote);
    if let Ok(mut m) = serde_json::from_slice::<Manifest>(manifest) {
        m.layout_sha256 = hex::encode(Sha256::digest(layout));
        m.image_id = m.compute_id();
        let _ = mem_image(m.to_json().as_bytes(), layout, Payloads::LocalAsManifest);
    }
}

/// An image whose `manifest` and `layout` files are in memory and whose payloads are
/// absent: `lens` says how long each payload is (a local directory), `None` that the
/// source cannot tell (HTTP). A local source without lengths would stop every load at
/// "payload file missing" before the chunk checks.
struct MemSource {
    files: ImageFiles,
    lens: Option<std::collections::BTreeMap<String, u64>>,
}

impl MemSource {
    fn err(&self, name: &str, msg: &str) -> SourceError {
        SourceError {
            location: format!("mem:{name}"),
            msg: msg.into(),
            unreachable: false,
        }
    }
}

impl ImageSource for MemSource {
    fn location(&self) -> String {
        "mem:".into()
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        match name {
            crate::manifest::MANIFEST_FILE => Ok(self.files.manifest.clone()),
            crate::manifest::LAYOUT_FILE => Ok(self.files.layout.clone()),
            _ => Err(self.err(name, "no such file")),
        }
    }
    fn read_range(&self, name: &str, _offset: u64, _len: u64) -> Result<Vec<u8>, SourceError> {
        Err(self.err(name, "no payloads in a fuzz input"))
    }
    fn open_range(&self, name: &str, _offset: u64, _len: u64) -> Result<Stream, SourceError> {
        Err(self.err(name, "no payloads in a fuzz input"))
    }
    fn len(&self, name: &str) -> Option<u64> {
        self.lens.as_ref().and_then(|l| l.get(name).copied())
    }
    fn is_local(&self) -> bool {
        self.lens.is_some()
    }
}

/// The upload protocol's parsers (`upload::wire`, the tokens file) and the frame check
/// of the server: the first line is `METHOD TARGET` (a route and a `chunk_size` query),
/// the following `Name: value` lines are headers (a frame's four, `Authorization`); the
/// whole input is also read as a tokens file and, after the first NUL, as a frame whose
/// declared raw length is the first header set's (bounded by a small session chunk size).
pub fn upload_wire(data: &[u8]) {
    use crate::upload::{session, tokens, wire};
    let data = cut(data);
    let (text_part, frame) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text_part);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let (method, target) = first.split_once(' ').unwrap_or(("PUT", first));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let _ = wire::parse_route(method, path);
    let _ = wire::parse_begin_query(query);
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let get = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(k))
            .map(|(_, v)| *v)
    };
    if let Some(t) = wire::bearer(get("Authorization")) {
        let _ = wire::check_token(t);
    }
    let _ = tokens::parse_tokens(std::path::Path::new("fuzz"), &text);
    for chunk_size in [1, 4096, 1 << 20, crate::chunk::MAX_CHUNK] {
        let _ = wire::FrameHeaders::parse(get, chunk_size);
    }
    // A frame is decompressed into at most the declared raw length: bound it small here
    // so the fuzzer spends its time in the decoder, not in allocating.
    if let Ok(h) = wire::FrameHeaders::parse(get, 256 << 10) {
        let _ = session::verify_frame(frame, &h, "fuzz");
    }
}

/// The upload server's reading of a manifest that leaves its raw sha256s to the server
/// (`upload::session::fill_raw_sums`): the input is the manifest a client sends; the
/// "computed" sums exist for chunks 0..8 of `head` and partitions 1..4. When it fills
/// something, what it makes must load back as a manifest whose id is its own hash and
/// which has no empty raw hash left.
pub fn upload_manifest(data: &[u8]) {
    use crate::manifest::Manifest;
    use crate::upload::{session, wire::RegionName};
    let data = cut(data);
    let sum_of = |r: RegionName, i: usize| {
        let known = match r {
            RegionName::Head => true,
            RegionName::Partition(n) => n <= 4,
        };
        (known && i < 8).then(|| format!("{i:064x}"))
    };
    if let Ok(Some((bytes, filled))) = session::fill_raw_sums(data, sum_of) {
        assert!(filled > 0);
        let m: Manifest = serde_json::from_slice(&bytes).expect("the filled manifest parses");
        assert_eq!(
            m.image_id,
            m.compute_id(),
            "the id is the filled manifest's"
        );
        assert!(m
            .regions
            .iter()
            .all(|r| r.chunks.iter().all(|c| !c.sha256.is_empty())));
    }
}

/// The range client's reading of an answer (`source::client`): `url NUL head` — the URL
/// through `parse_url` (what goes into the request line), the head through `parse_head`
/// (httparse, the framing headers, a length given twice) and what it gives through
/// `source::check::range_reply` for a few ranges (the one answer a node takes).
pub fn range_answer(data: &[u8]) {
    use crate::source::check::{range_reply, RangeReply};
    use crate::source::client::{parse_head, parse_url};
    let data = cut(data);
    let (url, head) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"http://10.0.0.1:8180/img/p1.zst"[..], data),
    };
    if let Ok(u) = parse_url(&String::from_utf8_lossy(url)) {
        // What parse_url lets through must be safe in a request line.
        assert!(u.path.bytes().all(|b| (0x21..0x7f).contains(&b)), "{u:?}");
        assert!(!u.host_header.contains(['\r', '\n', ' ']), "{u:?}");
    }
    let Ok(h) = parse_head(head) else {
        return;
    };
    let reply = RangeReply {
        status: h.status,
        content_length: h.content_length,
        content_range: h.content_range,
        transfer_encoding: h.transfer_encoding,
    };
    for (o, l) in [
        (0, 1),
        (100, 20),
        (0, 1 << 20),
        (u64::MAX - 1, 1),
        (7, u64::MAX),
    ] {
        if let Ok(n) = range_reply(&reply, o, l) {
            // Never more than was asked for.
            assert!(n <= l.max(1), "{n} bytes taken for {l} asked");
        }
    }
}
