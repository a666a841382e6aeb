//! The boot files of the tree and their manifest (`etc/bootfiles.json`): the netboot
//! kernel, the initrd and the vSMP loader, each with its size and sha256. `pxe-builder
//! build` writes the manifest beside the files; an entity's secondary reads it, fetches
//! each file once from the primary into RAM, checks it against the manifest and serves it
//! to the nodes of its entity at the same path (`/boot/vmlinuz`, …), which their iPXE
//! scripts try before the primary (docs/BOOT.md, "Boot files from the rack").
//!
//! The manifest comes over the network, so reading it is bounded: at most
//! [`MAX_MANIFEST_BYTES`] of JSON, only the paths in [`PATHS`] (a secondary never fetches
//! a URL the manifest makes up), each at most once, each at most [`MAX_FILE_BYTES`] and
//! all together at most [`MAX_TOTAL_BYTES`] (what a secondary holds in RAM), each hash 64
//! lower-case hex digits.

use serde::{Deserialize, Serialize};

/// The manifest's path in the boot tree (served by the primary with the rest of `etc/`).
pub const FILE: &str = "etc/bootfiles.json";

/// The version pxe-builder writes.
pub const VERSION: u32 = 1;

/// Tree paths of the boot files (also their paths on a secondary's relay).
pub const KERNEL: &str = "boot/vmlinuz";
pub const INITRD: &str = "boot/initrd.img";
pub const VSMP: &str = "boot/vsmp";

/// The only paths a manifest may list.
pub const PATHS: [&str; 3] = [KERNEL, INITRD, VSMP];

/// The most a secondary reads of the manifest (three entries are under 1 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024;

/// The largest boot file a secondary takes into RAM: a distribution kernel is 8–15 MiB,
/// an initrd with firmware and modules up to ~100 MiB; 256 MiB leaves room and still fits
/// a node's RAM beside the agent.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// All boot files together, at most: what a secondary may hold in RAM for its entity.
pub const MAX_TOTAL_BYTES: u64 = 384 << 20;

/// `etc/bootfiles.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootFiles {
    pub version: u32,
    pub files: Vec<BootFile>,
}

/// One boot file: its tree path, size and the sha256 of its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootFilesError {
    #[error("not a boot-file manifest")]
    Json(#[from] serde_json::Error),
    #[error("boot-file manifest version {0} is not {VERSION}")]
    Version(u32),
    #[error("boot file {0:?} is not one of boot/vmlinuz, boot/initrd.img, boot/vsmp")]
    Path(String),
    #[error("boot file {0} is listed twice")]
    Twice(String),
    #[error(
        "boot file {path} has {size} bytes; a secondary holds at most {MAX_FILE_BYTES} per file"
    )]
    TooLarge { path: String, size: u64 },
    #[error("the boot files have {0} bytes together; a secondary holds at most {MAX_TOTAL_BYTES}")]
    TooLargeTotal(u64),
    #[error("boot file {0}: sha256 is not 64 lower-case hex digits")]
    Hash(String),
}

impl BootFiles {
    /// Reads and checks a manifest (at most [`MAX_MANIFEST_BYTES`] is the caller's to
    /// enforce); see the module's rules.
    pub fn from_json(text: &[u8]) -> Result<BootFiles, BootFilesError> {
        let b: BootFiles = serde_json::from_slice(text)?;
        b.check()?;
        Ok(b)
    }

    /// The module's rules, for a manifest made here or read.
    pub fn check(&self) -> Result<(), BootFilesError> {
        if self.version != VERSION {
            return Err(BootFilesError::Version(self.version));
        }
        let mut total: u64 = 0;
        for (i, f) in self.files.iter().enumerate() {
            if !PATHS.contains(&f.path.as_str()) {
                return Err(BootFilesError::Path(f.path.chars().take(64).collect()));
            }
            if self.files[..i].iter().any(|g| g.path == f.path) {
                return Err(BootFilesError::Twice(f.path.clone()));
            }
            if f.size > MAX_FILE_BYTES {
                return Err(BootFilesError::TooLarge {
                    path: f.path.clone(),
                    size: f.size,
                });
            }
            total = total.saturating_add(f.size);
            let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
            if f.sha256.len() != 64 || !f.sha256.chars().all(hex) {
                return Err(BootFilesError::Hash(f.path.clone()));
            }
        }
        if total > MAX_TOTAL_BYTES {
            return Err(BootFilesError::TooLargeTotal(total));
        }
        Ok(())
    }

    /// The bytes of all its files together: what a secondary holds in RAM to serve them
    /// (at most [`MAX_TOTAL_BYTES`] once [`BootFiles::check`] passed; saturating, so a
    /// manifest not checked yet cannot overflow it).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// The entry for tree path `path`.
    pub fn get(&self, path: &str) -> Option<&BootFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> BootFile {
        BootFile {
            path: path.into(),
            size,
            sha256: "ab".repeat(32),
        }
    }

    fn manifest(files: Vec<BootFile>) -> Vec<u8> {
        serde_json::to_vec(&BootFiles {
            version: VERSION,
            files,
        })
        .unwrap()
    }

    #[test]
    fn a_written_manifest_reads_back() {
        let text = manifest(vec![file(KERNEL, 10), file(INITRD, 20)]);
        let b = BootFiles::from_json(&text).unwrap();
        assert_eq!(b.get(INITRD).map(|f| f.size), Some(20));
        assert!(b.get(VSMP).is_none());
        assert_eq!(b.total_bytes(), 30);
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (manifest(vec![file("../etc/shadow", 1)]), "not one of"),
            (manifest(vec![file("/boot/vmlinuz", 1)]), "not one of"),
            (manifest(vec![file(KERNEL, 1), file(KERNEL, 1)]), "twice"),
            (manifest(vec![file(KERNEL, MAX_FILE_BYTES + 1)]), "per file"),
            (
                manifest(vec![
                    file(KERNEL, MAX_FILE_BYTES),
                    file(INITRD, MAX_FILE_BYTES),
                ]),
                "together",
            ),
            (
                manifest(vec![BootFile {
                    sha256: "AB".repeat(32),
                    ..file(KERNEL, 1)
                }]),
                "sha256",
            ),
            (
                manifest(vec![BootFile {
                    sha256: "ab".into(),
                    ..file(KERNEL, 1)
                }]),
                "sha256",
            ),
            (br#"{"version": 2, "files": []}"#.to_vec(), "version 2"),
            (
                br#"{"version": 1, "files": [{"path": 1}]}"#.to_vec(),
                "manifest",
            ),
            (b"[".to_vec(), "manifest"),
        ];
        for (text, why) in cases {
            let e = BootFiles::from_json(&text).unwrap_err().to_string();
            assert!(e.contains(why), "{e} (wanted {why})");
        }
    }
}
