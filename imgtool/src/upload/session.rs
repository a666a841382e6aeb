//! One upload being received: its staging directory `ROOT/.upload/<session>/`, the
//! frames received so far (where each went and its hashes), and the checks that make
//! it publishable. A frame is checked on its own: as it arrives, the sha256 of the frame
//! ([`check_frame_sum`]); then, off the request path on the server's
//! [`super::verify::Verifier`], decompressed within the session's `chunk_size` and the
//! sha256 of the raw bytes ([`check_raw`]), counted in the session's
//! [`Verification`] and kept in its [`RawSums`]. The commit waits for every frame's
//! check, fills the raw sha256s a client left to the server into the manifest
//! ([`Session::settle_manifest`]: our client does not hash the raw bytes, the server
//! must anyway), and the manifest must describe exactly the frames received
//! ([`Session::check_commit`]) besides passing every rule an image load checks.
//! File names in the staging directory are made here from parsed numbers
//! ([`RegionName::payload`], `layout`, `manifest`), never taken from a request.

use super::verify::Verification;
use super::wire::{cut, FrameHeaders, RegionName};
use crate::manifest::{Image, ImageFiles, LAYOUT_FILE, MANIFEST_FILE};
use crate::source::LocalDir;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The raw sha256 the verifier computed for each frame checked, by region and chunk
/// index: what [`Session::settle_manifest`] fills in and checks against.
pub type RawSums = Mutex<HashMap<(RegionName, usize), String>>;

/// A frame as received: where it went in its payload and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub payload_offset: u64,
    pub compressed_length: u64,
    pub length: u64,
    pub sha256: String,
    pub frame_sha256: String,
}

/// Why a session cannot go on: the HTTP status and the message (which names the group,
/// region and chunk). Every refusal of a frame or of the commit ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

impl Refusal {
    pub fn new(code: u16, msg: impl Into<String>) -> Refusal {
        Refusal(code, msg.into())
    }
}

/// An upload in progress.
pub struct Session {
    pub id: String,
    pub group: String,
    /// The sha256 of the token that opened it (every request must carry the same token).
    pub token_key: String,
    pub dir: PathBuf,
    pub chunk_size: u64,
    /// Bytes accepted or being received (for the quota).
    pub bytes: u64,
    /// Frames being received now.
    pub in_flight: usize,
    pub last: Instant,
    pub layout: bool,
    /// The manifest arrived: no frame or layout is admitted any more.
    pub committing: bool,
    /// The raw checks of its frames (deferred, see [`super::verify`]).
    pub verify: Arc<Verification>,
    /// What those checks computed.
    pub raw_sums: Arc<RawSums>,
    /// How many of the manifest's raw sha256s the server filled in at the commit.
    pub filled: usize,
    /// Payload byte ranges of the frames admitted (received or arriving), per region:
    /// `start → (end, index)`. A chunk index or a byte range is admitted once.
    ranges: HashMap<RegionName, BTreeMap<u64, (u64, usize)>>,
    pending: std::collections::HashSet<(RegionName, usize)>,
    files: HashMap<RegionName, Arc<File>>,
    chunks: BTreeMap<RegionName, BTreeMap<usize, Received>>,
    count: usize,
}

impl Session {
    /// A new session; its directory `dir` is created (empty).
    pub fn create(
        id: String,
        group: &str,
        token_key: String,
        dir: PathBuf,
        chunk_size: u64,
    ) -> std::io::Result<Session> {
        std::fs::create_dir(&dir)?;
        Ok(Session {
            id,
            group: group.to_string(),
            token_key,
            dir,
            chunk_size,
            bytes: 0,
            in_flight: 0,
            last: Instant::now(),
            layout: false,
            committing: false,
            verify: Verification::new(),
            raw_sums: Arc::default(),
            filled: 0,
            ranges: HashMap::new(),
            pending: Default::default(),
            files: HashMap::new(),
            chunks: BTreeMap::new(),
            count: 0,
        })
    }

    /// Whether chunk `index` of `region` came already or is arriving.
    pub fn has(&self, region: RegionName, index: usize) -> bool {
        self.pending.contains(&(region, index))
            || self
                .chunks
                .get(&region)
                .is_some_and(|m| m.contains_key(&index))
    }

    /// An admitted frame of `region` whose payload bytes meet `start..end`: its start
    /// and chunk index.
    pub fn overlap(&self, region: RegionName, start: u64, end: u64) -> Option<(u64, usize)> {
        let m = self.ranges.get(&region)?;
        let (&at, &(e, i)) = m.range(..end.max(start.saturating_add(1))).next_back()?;
        (e > start).then_some((at, i))
    }

    /// Admits chunk `index` of `region` into payload bytes `start..end` (see
    /// [`Session::has`], [`Session::overlap`]) until [`Session::record`].
    pub fn reserve(&mut self, region: RegionName, index: usize, start: u64, end: u64) {
        self.pending.insert((region, index));
        self.ranges
            .entry(region)
            .or_default()
            .insert(start, (end, index));
    }

    /// Chunks received.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The payload file of `region`, created at its first frame.
    pub fn payload(&mut self, region: RegionName) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.files.get(&region) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            File::options()
                .create_new(true)
                .read(true)
                .write(true)
                .open(self.dir.join(region.payload()))?,
        );
        self.files.insert(region, f.clone());
        Ok(f)
    }

    /// Records a checked and written frame.
    pub fn record(&mut self, region: RegionName, index: usize, r: Received) {
        self.pending.remove(&(region, index));
        if self
            .chunks
            .entry(region)
            .or_default()
            .insert(index, r)
            .is_none()
        {
            self.count += 1;
        }
    }

    /// The manifest to publish, from the one the client sent, once every frame's raw
    /// check is done: each chunk's `sha256` the client left empty is filled with the one
    /// the server computed, and then the image id, which the client must have left
    /// empty too (it could not know it), is computed; a manifest with every hash given
    /// is taken as sent. The frames received are recorded with the computed hashes, so
    /// [`Session::check_commit`] refuses a declared hash that is not the frame's.
    pub fn settle_manifest(&mut self, sent: &[u8]) -> Result<Vec<u8>, Refusal> {
        let sums = std::mem::take(&mut *self.raw_sums.lock().unwrap_or_else(|p| p.into_inner()));
        for (region, chunks) in &mut self.chunks {
            for (i, r) in chunks.iter_mut() {
                let Some(sum) = sums.get(&(*region, *i)) else {
                    return Err(Refusal::new(
                        500,
                        format!(
                            "region {} chunk {i}: received but not raw-checked",
                            region.name()
                        ),
                    ));
                };
                r.sha256 = sum.clone();
            }
        }
        let chunks = &self.chunks;
        let filled = fill_raw_sums(sent, |region, i| {
            chunks
                .get(&region)
                .and_then(|m| m.get(&i))
                .map(|r| r.sha256.clone())
        })?;
        Ok(match filled {
            Some((bytes, n)) => {
                self.filled = n;
                bytes
            }
            None => sent.to_vec(),
        })
    }

    /// Checks that the manifest describes exactly the frames received and that the
    /// image passes every rule of an image load, then syncs the files. Returns the
    /// image id. `manifest` and `layout` are already written into the directory.
    pub fn check_commit(&self, manifest: &[u8], layout: &[u8]) -> Result<String, Refusal> {
        let files = ImageFiles {
            manifest: manifest.to_vec(),
            layout: layout.to_vec(),
        };
        let image = Image::from_files(Arc::new(LocalDir(self.dir.clone())), &files)
            .map_err(|e| Refusal::new(422, format!("the image does not load: {}", e.chain())))?;
        let m = &image.manifest;
        if m.chunk_size != self.chunk_size {
            return Err(Refusal::new(
                422,
                format!(
                    "the manifest's chunk_size {} is not the session's {}",
                    m.chunk_size, self.chunk_size
                ),
            ));
        }
        let mut seen = vec![];
        for r in &m.regions {
            let name = if r.number == 0 {
                RegionName::Head
            } else {
                RegionName::Partition(r.number)
            };
            if r.payload != name.payload() {
                return Err(Refusal::new(
                    422,
                    format!(
                        "region {}: payload {:?} is not {}",
                        r.name,
                        r.payload,
                        name.payload()
                    ),
                ));
            }
            seen.push(name);
            self.check_region(name, r)?;
        }
        if let Some(extra) = self.chunks.keys().find(|k| !seen.contains(k)) {
            return Err(Refusal::new(
                422,
                format!(
                    "frames of region {} were sent but the manifest has no such region",
                    extra.name()
                ),
            ));
        }
        self.sync()?;
        Ok(m.image_id.clone())
    }

    /// Region `r` of the manifest against the frames received for it, and its payload
    /// file's length.
    fn check_region(&self, name: RegionName, r: &crate::manifest::Region) -> Result<(), Refusal> {
        let empty = BTreeMap::new();
        let got = self.chunks.get(&name).unwrap_or(&empty);
        if got.len() != r.chunks.len() {
            let missing = (0..r.chunks.len()).find(|i| !got.contains_key(i));
            return Err(Refusal::new(
                422,
                match missing {
                    Some(i) => format!(
                        "region {} chunk {i}: in the manifest, never received ({} of {} chunks came)",
                        r.name,
                        got.len(),
                        r.chunks.len()
                    ),
                    None => format!(
                        "region {}: {} chunks received, the manifest lists {}",
                        r.name,
                        got.len(),
                        r.chunks.len()
                    ),
                },
            ));
        }
        for (i, c) in r.chunks.iter().enumerate() {
            let want = Received {
                payload_offset: c.payload_offset,
                compressed_length: c.compressed_length,
                length: c.length,
                sha256: c.sha256.clone(),
                frame_sha256: c.frame_sha256.clone(),
            };
            if got.get(&i) != Some(&want) {
                return Err(Refusal::new(
                    422,
                    format!(
                        "region {} chunk {i}: the manifest's entry is not the frame received",
                        r.name
                    ),
                ));
            }
        }
        let end = r
            .chunks
            .last()
            .map_or(0, |c| c.payload_offset.saturating_add(c.compressed_length));
        let len = self
            .files
            .get(&name)
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if len != end {
            return Err(Refusal::new(
                422,
                format!(
                    "region {}: payload {} holds {len} bytes, its chunks end at {end}",
                    r.name,
                    name.payload()
                ),
            ));
        }
        Ok(())
    }

    /// Every file and the directory on disk before the rename that publishes them.
    fn sync(&self) -> Result<(), Refusal> {
        let fail = |what: &Path, e: std::io::Error| {
            Refusal::new(disk_status(&e), format!("syncing {}: {e}", what.display()))
        };
        for f in self.files.values() {
            f.sync_all().map_err(|e| fail(&self.dir, e))?;
        }
        for name in [LAYOUT_FILE, MANIFEST_FILE] {
            let p = self.dir.join(name);
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail(&p, e))?;
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(&self.dir, e))
    }
}

/// 507 for a full disk or quota (the client must know the server cannot take it), 500
/// for any other write error.
pub fn disk_status(e: &std::io::Error) -> u16 {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => 507,
        _ => 500,
    }
}

/// The manifest a client `sent` (at most [`crate::limits::MAX_MANIFEST_BYTES`], bounded
/// when its body was read) with each chunk's empty `sha256` filled from `sum_of(region,
/// index)` (the raw check's result) and its image id computed: `None` when the client
/// left nothing to fill (it is then taken as sent), else the bytes and how many hashes
/// were filled. Refused: a manifest that is not a
/// manifest, a hash left to the server for a chunk that never came, an image id named
/// while hashes were left to the server. Pure (fuzzed: `fuzzing::upload_manifest`);
/// everything else about the manifest is [`Session::check_commit`]'s.
pub fn fill_raw_sums(
    sent: &[u8],
    sum_of: impl Fn(RegionName, usize) -> Option<String>,
) -> Result<Option<(Vec<u8>, usize)>, Refusal> {
    let mut m: crate::manifest::Manifest = serde_json::from_slice(sent)
        .map_err(|e| Refusal::new(422, format!("the manifest is not an image manifest: {e}")))?;
    let leaves = m
        .regions
        .iter()
        .any(|r| r.chunks.iter().any(|c| c.sha256.is_empty()));
    if !leaves {
        return Ok(None);
    }
    // What is filled is written as this server writes a manifest: that must be what the
    // client sent, or a field this server does not know would be dropped and the image
    // published under another id than the client's.
    if m.to_json().as_bytes() != sent {
        return Err(Refusal::new(
            422,
            "the manifest leaves its raw sha256s to the server but is not written as this server writes one (a field it does not know, or another layout): send the raw sha256s, or upload with an imgtool of this server's version",
        ));
    }
    let mut filled = 0usize;
    for r in &mut m.regions {
        let name = if r.number == 0 {
            RegionName::Head
        } else {
            RegionName::Partition(r.number)
        };
        for (i, c) in r.chunks.iter_mut().enumerate() {
            if !c.sha256.is_empty() {
                continue;
            }
            let Some(sum) = sum_of(name, i) else {
                return Err(Refusal::new(
                    422,
                    format!(
                        "region {:?} chunk {i}: its raw sha256 is left to the server, but no such frame came",
                        cut(&r.name)
                    ),
                ));
            };
            c.sha256 = sum;
            filled += 1;
        }
    }
    if !m.image_id.is_empty() {
        return Err(Refusal::new(
            422,
            format!(
                "the manifest names image {:?} but leaves {filled} raw sha256s to the server: the id is the server's to compute then",
                cut(&m.image_id)
            ),
        ));
    }
    m.image_id = m.compute_id();
    Ok(Some((m.to_json().into_bytes(), filled)))
}

/// Checks one frame against its headers: the frame's sha256 ([`check_frame_sum`]),
/// then its decompressed length and raw sha256 ([`check_raw`]). `what` names the
/// region and chunk in the message. The server runs the two halves apart (the second
/// on its [`super::verify::Verifier`]); this is both, in order.
pub fn verify_frame(frame: &[u8], h: &FrameHeaders, what: &str) -> Result<String, Refusal> {
    check_frame_sum(frame, h, what)?;
    check_raw(frame, h, what)
}

/// The frame's sha256 (of its compressed bytes, as stored and listed in the manifest's
/// `frame_sha256`) against the one sent with it: a byte changed in transit is refused
/// here, before the frame's `PUT` is answered.
pub fn check_frame_sum(frame: &[u8], h: &FrameHeaders, what: &str) -> Result<(), Refusal> {
    let frame_sum = hex::encode(Sha256::digest(frame));
    if frame_sum != h.frame_sha256 {
        return Err(Refusal::new(
            422,
            format!(
                "{what}: frame sha256 {frame_sum} is not the {} sent with it (damaged in transit)",
                h.frame_sha256
            ),
        ));
    }
    Ok(())
}

/// The frame decompressed within its declared raw length (allocated as declared, which
/// the session's `chunk_size` bounds; zstd checks the frame's content checksum, which
/// capture writes, on the way) and the raw bytes' sha256, returned, and checked
/// against the declared one if the client sent one: what a client that lies
/// consistently (right frame sha256, wrong raw bytes) is caught by.
pub fn check_raw(frame: &[u8], h: &FrameHeaders, what: &str) -> Result<String, Refusal> {
    let bad = |msg: String| Refusal::new(422, format!("{what}: {msg}"));
    // raw_length was bounded by the session's chunk_size (≤ MAX_CHUNK) when parsed.
    // Decoded into the spare capacity: no zeroing of 8 MiB a frame first.
    let mut raw = Vec::with_capacity(h.raw_length as usize);
    let decoded =
        zstd::bulk::Decompressor::new().and_then(|mut d| d.decompress_to_buffer(frame, &mut raw));
    let n = decoded.map_err(|e| {
        bad(format!(
            "the frame does not decode to at most its {} raw bytes: {e}",
            h.raw_length
        ))
    })?;
    if n as u64 != h.raw_length {
        return Err(bad(format!(
            "decompressed to {n} bytes, {} were declared",
            h.raw_length
        )));
    }
    // Left to the server, the raw sha256 is only as good as the frame's content
    // checksum (the compressor's hash of what it read): one frame, with it.
    if h.raw_sha256.is_none() && !crate::frame::is_one_checksummed_frame(frame) {
        return Err(bad(
            "the frame leaves its raw sha256 to the server but is not one zstd frame with a content checksum".into(),
        ));
    }
    let raw_sum = hex::encode(Sha256::digest(&raw));
    if let Some(declared) = h.raw_sha256.as_ref().filter(|d| **d != raw_sum) {
        return Err(bad(format!(
            "raw sha256 {raw_sum} is not the {declared} declared"
        )));
    }
    Ok(raw_sum)
}

/// Writes a checked frame at its offset in the payload file.
pub fn write_frame(file: &File, frame: &[u8], at: u64, what: &str) -> Result<(), Refusal> {
    file.write_all_at(frame, at).map_err(|e| {
        let code = disk_status(&e);
        let why = if code == 507 {
            format!("the server's disk is full ({e})")
        } else {
            format!("writing it failed ({e})")
        };
        Refusal::new(code, format!("{what}: {why}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(frame: &[u8], raw: &[u8]) -> FrameHeaders {
        FrameHeaders {
            payload_offset: 0,
            raw_length: raw.len() as u64,
            raw_sha256: Some(hex::encode(Sha256::digest(raw))),
            frame_sha256: hex::encode(Sha256::digest(frame)),
        }
    }

    #[test]
    fn a_frame_is_checked_by_both_hashes_and_its_length() {
        let raw = vec![7u8; 100_000];
        let frame = crate::frame::compress_chunk(&raw, 3, 1 << 20).unwrap();
        let h = headers(&frame, &raw);
        let sum = hex::encode(Sha256::digest(&raw));
        assert_eq!(verify_frame(&frame, &h, "p2 chunk 0"), Ok(sum.clone()));
        // Left to the server: computed, the same.
        let undeclared = FrameHeaders {
            raw_sha256: None,
            ..h.clone()
        };
        assert_eq!(verify_frame(&frame, &undeclared, "p2 chunk 0"), Ok(sum));
        let mut flipped = frame.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        let e = verify_frame(&flipped, &h, "p2 chunk 0").unwrap_err();
        assert_eq!(e.0, 422);
        assert!(e.1.starts_with("p2 chunk 0: frame sha256"), "{}", e.1);
        // Consistent hashes over a frame that decompresses to more than declared.
        let mut short = h.clone();
        short.raw_length = 1000;
        assert!(verify_frame(&frame, &short, "x").is_err());
        // Right frame, wrong raw hash.
        let mut other = h.clone();
        other.raw_sha256 = Some("0".repeat(64));
        let e = verify_frame(&frame, &other, "head chunk 3").unwrap_err();
        assert!(e.1.contains("raw sha256"), "{}", e.1);
        // Not zstd at all.
        let junk = vec![1u8; 64];
        assert!(verify_frame(&junk, &headers(&junk, &raw), "x").is_err());
    }

    #[test]
    fn a_chunk_index_or_payload_range_is_admitted_once_even_while_arriving() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Session::create(
            "s".into(),
            "compute",
            "k".into(),
            d.path().join("s"),
            1 << 20,
        )
        .unwrap();
        let r = RegionName::Head;
        // Chunk 0 admitted (bytes 0..100), its body still arriving.
        assert!(!s.has(r, 0) && s.overlap(r, 0, 100).is_none());
        s.reserve(r, 0, 0, 100);
        // The same index again, before it was recorded: refused (was admitted twice).
        assert!(s.has(r, 0));
        // Another index over the same or a neighbouring range: refused.
        assert_eq!(s.overlap(r, 50, 150), Some((0, 0)));
        assert_eq!(s.overlap(r, 0, 10), Some((0, 0)));
        assert!(s.overlap(r, 100, 200).is_none());
        s.reserve(r, 1, 100, 200);
        // A longer frame that would run into chunk 1's bytes.
        assert!(s.overlap(r, 99, 101).is_some());
        assert_eq!(s.overlap(r, 150, 400), Some((100, 1)));
        assert!(s.overlap(r, 200, 300).is_none());
        s.record(
            r,
            0,
            Received {
                payload_offset: 0,
                compressed_length: 100,
                length: 1,
                sha256: String::new(),
                frame_sha256: String::new(),
            },
        );
        assert!(s.has(r, 0) && s.overlap(r, 0, 1).is_some() && s.count() == 1);
    }
}
