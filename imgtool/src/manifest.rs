//! The image's `manifest`: format version, image id, and per captured region (the disk
//! head and each partition) its file system, identity and chunk list. Loading checks the
//! version first, then the id, then that the `layout` file is the one the id covers.
//! The byte format is documented in `docs/FORMAT.md`.

use crate::error::{Error, Result};
use crate::fs::Fill;
use crate::layout::Layout;
use crate::source::{HttpSource, ImageSource, LocalDir};
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
        let mut buf = crate::disk::AlignedBuf::new(self.length as usize);
        let mut at = 0usize;
        for (o, l) in self.ranges() {
            disk.read_exact_at(&mut buf[at..at + l as usize], base + o)?;
            at += l as usize;
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
        self.chunks.iter().map(|c| c.compressed_length).sum()
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

    /// Loads the image at `url` (`http://server:port/<group>`).
    pub fn fetch(url: &str) -> Result<Image> {
        Self::load(Arc::new(HttpSource::new(url)))
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
        let text = &files.manifest;
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| Error::Corrupt {
                path: mpath.clone(),
                msg: format!("not valid JSON: {e}"),
            })?;
        if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
            return Err(Error::Corrupt {
                path: mpath,
                msg: format!("not an imgtool manifest (missing \"format\": \"{FORMAT_NAME}\")"),
            });
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: mpath,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| Error::Corrupt {
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
        let lpath = PathBuf::from(format!("{}/{LAYOUT_FILE}", source.location()));
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

    /// Internal consistency: chunks inside their region, payload files present and long
    /// enough where the source can tell (a truncated payload is caught here, before
    /// anything is written).
    pub fn check_structure(&self) -> Result<()> {
        if self.manifest.chunk_size == 0 || self.manifest.chunk_size > crate::chunk::MAX_CHUNK {
            return Err(Error::Corrupt {
                path: PathBuf::from(format!("{}/{MANIFEST_FILE}", self.location())),
                msg: format!(
                    "chunk_size {} outside 1..={}",
                    self.manifest.chunk_size,
                    crate::chunk::MAX_CHUNK
                ),
            });
        }
        for r in &self.manifest.regions {
            if r.payload.contains('/') || r.payload.starts_with('.') {
                return Err(Error::Corrupt {
                    path: PathBuf::from(format!("{}/{MANIFEST_FILE}", self.location())),
                    msg: format!(
                        "region {}: payload name `{}` is not a plain file name",
                        r.name, r.payload
                    ),
                });
            }
            let plen = self.source.len(&r.payload);
            if plen.is_none() && self.source.is_local() {
                return Err(Error::Invalid(format!(
                    "{}/{}: payload file missing",
                    self.location(),
                    r.payload
                )));
            }
            for (i, c) in r.chunks.iter().enumerate() {
                let bad = |msg: String| r.chunk_error(i, msg);
                if c.length == 0 || c.length > self.manifest.chunk_size {
                    return Err(bad(format!(
                        "raw length {} outside 1..={}",
                        c.length, self.manifest.chunk_size
                    )));
                }
                let ranges = c.ranges();
                let sum: u64 = ranges.iter().map(|e| e.1).sum();
                if sum != c.length || ranges.first().map(|e| e.0) != Some(c.offset) {
                    return Err(bad(format!(
                        "extents add up to {sum} bytes, the chunk says {}",
                        c.length
                    )));
                }
                if let Some(e) = ranges.iter().find(|e| e.0 + e.1 > r.size) {
                    return Err(bad(format!(
                        "raw range {}+{} does not fit the region ({} bytes)",
                        e.0, e.1, r.size
                    )));
                }
                if let Some(plen) = plen {
                    if c.payload_offset + c.compressed_length > plen {
                        return Err(bad(format!(
                            "payload is truncated: the chunk needs bytes up to {} but {}/{} has {plen}",
                            c.payload_offset + c.compressed_length,
                            self.location(),
                            r.payload
                        )));
                    }
                }
            }
            if r.number != 0 && self.layout.partition(r.number).is_none() {
                return Err(Error::Corrupt {
                    path: PathBuf::from(format!("{}/{MANIFEST_FILE}", self.location())),
                    msg: format!(
                        "region {} names partition {} which the layout lacks",
                        r.name, r.number
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.manifest.image_id
    }
}
