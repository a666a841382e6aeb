//! The image's `manifest`: format version, image id, and per captured region (the disk
//! head and each partition) its file system, identity and chunk list. Loading checks the
//! version first, then the id, then that the `layout` file is the one the id covers.
//! The byte format is documented in `docs/FORMAT.md`.

use crate::error::{Error, Result};
use crate::fs::Fill;
use crate::source::{HttpSource, ImageSource, LocalDir};
use crate::table::Layout;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The manifest format this imgtool writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Magic string in every manifest.
pub const FORMAT_NAME: &str = "netboot-logical-group-image";
pub const MANIFEST_FILE: &str = "manifest";
pub const LAYOUT_FILE: &str = "layout";

pub use crate::limits::MAX_MANIFEST_BYTES;

/// Largest disk head a manifest may declare (defined with the table's limits, see
/// [`crate::table::MAX_HEAD`]; this path keeps working).
pub use crate::table::MAX_HEAD;

/// One independently compressed, independently verifiable piece of a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Byte offset in the region (partition, or disk for the head).
    pub offset: u64,
    /// Raw (uncompressed) length.
    pub length: u64,
    /// Byte offset of the zstd frame in the region's payload file.
    pub payload_offset: u64,
    /// Length of the zstd frame.
    pub compressed_length: u64,
    /// sha256 of the raw bytes.
    pub sha256: String,
    /// sha256 of the zstd frame (lets a restore check a whole image before writing).
    pub frame_sha256: String,
    /// When the chunk gathers several ranges: `[offset, length]` of each, in order; their
    /// raw bytes are concatenated. Absent for one contiguous range `offset..offset+length`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extents: Vec<[u64; 2]>,
}

impl Chunk {
    /// Reads this chunk's raw bytes from `disk`, its region starting at byte `base`
    /// (`O_DIRECT` where `disk` can).
    pub fn read_from(
        &self,
        disk: &dyn crate::disk::BlockIo,
        base: u64,
    ) -> std::io::Result<crate::disk::AlignedBuf> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
        if self.length > crate::chunk::MAX_CHUNK {
            return Err(bad(
                "chunk longer than the largest chunk a manifest may declare",
            ));
        }
        let mut buf = crate::disk::AlignedBuf::new(self.length as usize);
        let mut at = 0usize;
        for (o, l) in self.ranges() {
            let to = at
                .checked_add(l as usize)
                .filter(|t| *t <= buf.len())
                .ok_or_else(|| bad("extents longer than the chunk"))?;
            let pos = base
                .checked_add(o)
                .ok_or_else(|| bad("extent offset overflows"))?;
            disk.read_exact_at(&mut buf[at..to], pos)?;
            at = to;
        }
        Ok(buf)
    }

    /// The byte ranges `(offset, length)` of the region this chunk holds.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        if self.extents.is_empty() {
            vec![(self.offset, self.length)]
        } else {
            self.extents.iter().map(|e| (e[0], e[1])).collect()
        }
    }
}

/// A captured region: the disk head (`number` 0) or a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// `head` or `p<N>`.
    pub name: String,
    /// Partition number; 0 for the disk head.
    pub number: u32,
    /// Bytes of the region at capture (partition size, or head length).
    pub size: u64,
    pub filesystem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Bytes the file system spans.
    pub fs_size: u64,
    /// Sum of the chunks' raw lengths.
    pub used_bytes: u64,
    /// What the bytes outside the chunks must be after restore.
    pub fill: Fill,
    /// Payload file name, relative to the image directory.
    pub payload: String,
    pub chunks: Vec<Chunk>,
}

impl Region {
    /// The error for chunk `i` of this region, naming partition, chunk and offsets.
    pub fn chunk_error(&self, i: usize, msg: String) -> Error {
        let c = &self.chunks[i];
        Error::BadChunk {
            partition: self.name.clone(),
            chunk: i,
            offset: c.offset,
            payload: self.payload.clone(),
            payload_offset: c.payload_offset,
            msg,
        }
    }

    pub fn compressed_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.compressed_length))
    }
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// sha256 of the canonical manifest (this field empty), hex.
    #[serde(default)]
    pub image_id: String,
    /// sha256 of the `layout` file's bytes.
    pub layout_sha256: String,
    /// Maximum raw chunk length.
    pub chunk_size: u64,
    /// zstd level used.
    pub level: i32,
    pub regions: Vec<Region>,
}

impl Manifest {
    /// The canonical bytes: compact JSON of the manifest with `image_id` empty.
    pub fn canonical(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.image_id.clear();
        serde_json::to_vec(&m).unwrap_or_default()
    }

    pub fn compute_id(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// A loaded, checked image: from a directory or an HTTP server.
#[derive(Clone)]
pub struct Image {
    pub source: Arc<dyn ImageSource>,
    pub manifest: Manifest,
    pub layout: Layout,
}

/// The `manifest` and `layout` files as read (a relay passes them on unchanged).
#[derive(Debug)]
pub struct ImageFiles {
    pub manifest: Vec<u8>,
    pub layout: Vec<u8>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}, {})", self.location(), self.manifest.image_id)
    }
}

impl Image {
    /// Loads the image directory `dir`.
    pub fn open(dir: &Path) -> Result<Image> {
        Self::load(Arc::new(LocalDir(dir.to_path_buf())))
    }

    /// Loads the image at `url` (`http://server:port/<group>`), pinned to its version
    /// ([`crate::versions::pinned_url`]).
    pub fn fetch(url: &str) -> Result<Image> {
        crate::source::check_url(url).map_err(|e| Error::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let source = HttpSource::new(url);
        let files = Self::fetch_files(&source)?;
        // On a versioned server (docs/FORMAT.md, "Versions") every later read goes to the
        // version this manifest belongs to: a version published meanwhile cannot mix in.
        let source = match crate::versions::pinned_url(url, &files.manifest) {
            Some(pinned) => HttpSource::new(&pinned),
            None => source,
        };
        Self::from_files(Arc::new(source), &files)
    }

    /// Loads `manifest` and `layout` from `source`; rejects unknown versions, a wrong image
    /// id and a layout that is not the one the manifest was made with.
    pub fn load(source: Arc<dyn ImageSource>) -> Result<Image> {
        let files = Self::fetch_files(source.as_ref())?;
        Self::from_files(source, &files)
    }

    /// Reads the `manifest` and `layout` files, unchecked (a relay can pass them on
    /// before it has parsed them: its downstream checks them itself).
    pub fn fetch_files(source: &dyn ImageSource) -> Result<ImageFiles> {
        Ok(ImageFiles {
            manifest: source.read_file(MANIFEST_FILE).map_err(Error::Source)?,
            layout: source.read_file(LAYOUT_FILE).map_err(Error::Source)?,
        })
    }

    /// Parses and checks files read by [`Image::fetch_files`] from `source`.
    pub fn from_files(source: Arc<dyn ImageSource>, files: &ImageFiles) -> Result<Image> {
        let mpath = PathBuf::from(format!("{}/{MANIFEST_FILE}", source.location()));
        let lpath = PathBuf::from(format!("{}/{LAYOUT_FILE}", source.location()));
        for (path, len) in [(&mpath, files.manifest.len()), (&lpath, files.layout.len())] {
            if len as u64 > MAX_MANIFEST_BYTES {
                return Err(Error::Corrupt {
                    path: path.clone(),
                    msg: format!("{len} bytes, more than the {MAX_MANIFEST_BYTES} a manifest or layout may have"),
                });
            }
        }
        let text = &files.manifest;
        // Format and version first, without building the whole document twice: unknown
        // fields are skipped, not stored.
        #[derive(Deserialize)]
        struct Header {
            #[serde(default)]
            format: Option<serde_json::Value>,
            #[serde(default)]
            version: Option<serde_json::Value>,
        }
        let head: Header = serde_json::from_slice(text).map_err(|e| Error::Corrupt {
            path: mpath.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        if head.format.as_ref().and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(Error::Corrupt {
                path: mpath,
                msg: format!("not an imgtool manifest (missing \"format\": \"{FORMAT_NAME}\")"),
            });
        }
        let version = head.version.as_ref().and_then(|v| v.as_u64()).unwrap_or(0);
        if version != FORMAT_VERSION as u64 {
            return Err(Error::UnsupportedVersion {
                path: mpath,
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_slice(text).map_err(|e| Error::Corrupt {
            path: mpath.clone(),
            msg: e.to_string(),
        })?;
        let id = manifest.compute_id();
        if id != manifest.image_id {
            return Err(Error::Corrupt {
                path: mpath,
                msg: format!(
                    "image id {} does not match its contents (sha256 {id}): the manifest was edited or damaged",
                    manifest.image_id
                ),
            });
        }
        let ltext = &files.layout;
        let lsum = hex::encode(Sha256::digest(ltext));
        if lsum != manifest.layout_sha256 {
            return Err(Error::Corrupt {
                path: lpath,
                msg: format!(
                    "sha256 {lsum} is not the {} the manifest records: layout edited or damaged",
                    manifest.layout_sha256
                ),
            });
        }
        let layout: Layout = serde_json::from_slice(ltext).map_err(|e| Error::Corrupt {
            path: lpath,
            msg: e.to_string(),
        })?;
        let img = Image {
            source,
            manifest,
            layout,
        };
        img.check_structure()?;
        Ok(img)
    }

    pub fn location(&self) -> String {
        self.source.location()
    }

    /// The one validation pass over layout and manifest, run by every load (so `verify`,
    /// `restore` (also `--dry-run`), `diff` and the agent get it before anything is
    /// written): the layout is [`Layout::validate`]d; every region names its partition
    /// and fits it; every chunk lies inside its region, in order, with checked
    /// arithmetic; every frame is bounded and lies inside its payload file where the
    /// source can tell (a truncated payload is caught here). The error names the file,
    /// the region or partition, the chunk and the field. Rules and limits:
    /// docs/FORMAT.md, "Validation and limits".
    pub fn check_structure(&self) -> Result<()> {
        let mpath = PathBuf::from(format!("{}/{MANIFEST_FILE}", self.location()));
        let lpath = PathBuf::from(format!("{}/{LAYOUT_FILE}", self.location()));
        self.layout.validate().map_err(|e| Error::Corrupt {
            path: lpath.clone(),
            msg: e.to_string(),
        })?;
        let corrupt = |msg: String| Error::Corrupt {
            path: mpath.clone(),
            msg,
        };
        let m = &self.manifest;
        if m.chunk_size == 0 || m.chunk_size > crate::chunk::MAX_CHUNK {
            return Err(corrupt(format!(
                "chunk_size {} outside 1..={}",
                m.chunk_size,
                crate::chunk::MAX_CHUNK
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &m.regions {
            let rbad = |msg: String| corrupt(format!("region {}: {msg}", r.name));
            if !names.insert(r.name.as_str()) {
                return Err(rbad("appears twice".into()));
            }
            self.check_region(r).map_err(rbad)?;
            let used = self.check_chunks(r, &mpath)?;
            if used.bytes != r.used_bytes {
                return Err(rbad(format!(
                    "used_bytes {} is not the sum of its chunks' lengths ({})",
                    r.used_bytes, used.bytes
                )));
            }
            if r.number == 0 && (used.covered != r.size || used.bytes != r.size) {
                return Err(rbad(format!(
                    "the disk head's chunks cover {} bytes up to {}, not the whole head (0..{}) in one contiguous range",
                    used.bytes, used.covered, r.size
                )));
            }
        }
        Ok(())
    }

    /// A region's own fields: a plain payload file name; the head is `head` (number 0)
    /// and fits the disk head; a partition's region is `pN`, names a data partition of
    /// the layout and is exactly its size; the file system fits the region.
    fn check_region(&self, r: &Region) -> std::result::Result<(), String> {
        let ss = self.layout.sector_size as u64;
        if r.payload.is_empty()
            || r.payload.contains('/')
            || r.payload.contains('\0')
            || r.payload.starts_with('.')
        {
            return Err(format!(
                "payload name `{}` is not a plain file name",
                r.payload
            ));
        }
        if r.number == 0 || r.name == "head" {
            if r.number != 0 || r.name != "head" {
                return Err(format!(
                    "number {}: only the region `head` has number 0",
                    r.number
                ));
            }
            let first_used = self
                .layout
                .first_used_sector()
                .saturating_mul(ss)
                .min(self.layout.disk_size);
            let limit = first_used.min(MAX_HEAD);
            if r.size > limit {
                return Err(format!(
                    "size {} is larger than the disk head ({limit} bytes: before the first partition at byte {first_used}, at most {MAX_HEAD})",
                    r.size
                ));
            }
        } else {
            if r.name != format!("p{}", r.number) {
                return Err(format!(
                    "number {} does not match the name (expected `p{}`)",
                    r.number, r.number
                ));
            }
            let p = self
                .layout
                .partition(r.number)
                .ok_or_else(|| format!("names partition {} which the layout lacks", r.number))?;
            if p.is_extended() {
                return Err(format!(
                    "partition {} is the extended container, which holds no data",
                    r.number
                ));
            }
            let psize = p
                .size
                .checked_mul(ss)
                .ok_or_else(|| format!("partition {} size overflows", r.number))?;
            if r.size != psize {
                return Err(format!(
                    "size {} is not partition {}'s size in the layout ({} sectors of {ss} = {psize} bytes)",
                    r.size, r.number, p.size
                ));
            }
        }
        if r.fs_size > r.size {
            return Err(format!(
                "fs_size {} is larger than the region ({} bytes)",
                r.fs_size, r.size
            ));
        }
        Ok(())
    }

    /// A region's chunks, in order: each bounded, inside the region, after the previous
    /// one, its frame right after the previous frame and inside the payload file where
    /// the source can tell. Returns what they cover.
    fn check_chunks(&self, r: &Region, mpath: &Path) -> Result<Covered> {
        let plen = self.source.len(&r.payload);
        if plen.is_none() && self.source.is_local() {
            return Err(Error::Corrupt {
                path: PathBuf::from(format!("{}/{}", self.location(), r.payload)),
                msg: "payload file missing".into(),
            });
        }
        let mut at = Covered::default();
        for (i, c) in r.chunks.iter().enumerate() {
            self.check_chunk(r, i, c, mpath, &mut at)?;
            if let Some(plen) = plen {
                if at.frames_end > plen {
                    return Err(r.chunk_error(
                        i,
                        format!(
                        "payload is truncated: the chunk needs bytes up to {} but {}/{} has {plen}",
                        at.frames_end,
                        self.location(),
                        r.payload
                    ),
                    ));
                }
            }
            at.bytes = at.bytes.saturating_add(c.length);
        }
        Ok(at)
    }

    /// Chunk `i` of `r`: length, hashes, frame size and position, ranges. Moves `at` on
    /// past it (region bytes covered, where the next frame starts).
    fn check_chunk(
        &self,
        r: &Region,
        i: usize,
        c: &Chunk,
        mpath: &Path,
        at: &mut Covered,
    ) -> Result<()> {
        let m = &self.manifest;
        let max_frame = crate::chunk::frame_bound(m.chunk_size);
        let bad = |msg: String| r.chunk_error(i, format!("{msg} (in {})", mpath.display()));
        let (mut covered, mut frames_end) = (at.covered, at.frames_end);
        if c.length == 0 || c.length > m.chunk_size {
            return Err(bad(format!(
                "`length` {} outside 1..={} (chunk_size)",
                c.length, m.chunk_size
            )));
        }
        for (field, v) in [("sha256", &c.sha256), ("frame_sha256", &c.frame_sha256)] {
            if v.len() != 64
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(format!("`{field}` is not 64 lower-case hex digits")));
            }
        }
        if c.compressed_length == 0 || c.compressed_length > max_frame {
            return Err(bad(format!(
                "`compressed_length` {} outside 1..={max_frame} (the largest zstd frame of a {}-byte chunk)",
                c.compressed_length, m.chunk_size
            )));
        }
        if c.payload_offset != frames_end {
            return Err(bad(format!(
                "`payload_offset` {} is not where the previous frame ends ({frames_end}): frames are stored back to back in manifest order",
                c.payload_offset
            )));
        }
        frames_end = c
            .payload_offset
            .checked_add(c.compressed_length)
            .ok_or_else(|| {
                bad(format!(
                    "`payload_offset` {} + `compressed_length` {} overflows",
                    c.payload_offset, c.compressed_length
                ))
            })?;
        if c.extents.len() == 1 {
            return Err(bad(
                "`extents` lists a single range (capture leaves it out then)".into(),
            ));
        }
        let mut sum = 0u64;
        for (k, (o, l)) in c.ranges().into_iter().enumerate() {
            let which = if c.extents.is_empty() {
                "`offset`+`length`".to_string()
            } else {
                format!("`extents[{k}]`")
            };
            if l == 0 {
                return Err(bad(format!("{which} is empty")));
            }
            let end = o
                .checked_add(l)
                .ok_or_else(|| bad(format!("{which} {o}+{l} overflows")))?;
            if o < covered {
                return Err(bad(format!(
                    "{which} starts at {o}, before the end of the previous range ({covered}): ranges must be in order and not overlap"
                )));
            }
            if end > r.size {
                return Err(bad(format!(
                    "{which} {o}+{l} does not fit the region ({} bytes)",
                    r.size
                )));
            }
            covered = end;
            sum = sum.saturating_add(l);
        }
        if !c.extents.is_empty() {
            if c.extents[0][0] != c.offset {
                return Err(bad(format!(
                    "`extents[0]` starts at {}, the chunk's `offset` is {}",
                    c.extents[0][0], c.offset
                )));
            }
            if sum != c.length {
                return Err(bad(format!(
                    "`extents` add up to {sum} bytes, `length` is {}",
                    c.length
                )));
            }
        }
        (at.covered, at.frames_end) = (covered, frames_end);
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.manifest.image_id
    }
}

/// How far a region's chunks reach, while and after [`Image::check_structure`] walks
/// them: region bytes covered (chunks in order, never overlapping), where the next frame
/// starts (frames back to back, in manifest order), and the raw bytes of the chunks.
#[derive(Debug, Default)]
struct Covered {
    covered: u64,
    frames_end: u64,
    bytes: u64,
}
