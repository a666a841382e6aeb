//! `etc/bootfiles.json`: the size and sha256 of each boot file the tree holds (kernel,
//! initrd, vSMP loader), so an entity's secondary can check what it fetched from the
//! primary before serving it to its rack ([`netboot_proto::bootfiles`]). Read at build
//! time from the files the tree copies; `check` does not read them.

use crate::model::Cluster;
use crate::tree::BuildError;
use netboot_proto::bootfiles::{self, BootFile, BootFiles};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The manifest's text for cluster `c`'s boot files, in tree order. A file too large for
/// a secondary to hold is refused here, not found out by every secondary.
pub fn manifest(c: &Cluster) -> Result<String, BuildError> {
    let s = &c.settings;
    let mut files = vec![
        describe(bootfiles::KERNEL, &s.kernel)?,
        describe(bootfiles::INITRD, &s.initrd)?,
    ];
    if let Some(l) = &s.vsmp_loader {
        files.push(describe(bootfiles::VSMP, l)?);
    }
    let b = BootFiles {
        version: bootfiles::VERSION,
        files,
    };
    b.check().map_err(|e| BuildError::Io {
        what: "boot files",
        path: s.kernel.clone(),
        err: std::io::Error::other(e),
    })?;
    let mut text = serde_json::to_string_pretty(&b).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

/// `path`'s entry: its size and sha256, read in 1 MiB pieces.
fn describe(tree_path: &str, local: &Path) -> Result<BootFile, BuildError> {
    let io = |err| BuildError::Io {
        what: "hashing",
        path: local.to_path_buf(),
        err,
    };
    let mut f = std::fs::File::open(local).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size: u64 = 0;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size = size.saturating_add(n as u64);
    }
    Ok(BootFile {
        path: tree_path.into(),
        size,
        sha256: hex::encode(h.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_holds_each_boot_files_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::boot::tests::cluster();
        std::fs::write(dir.path().join("k"), b"kernel").unwrap();
        std::fs::write(dir.path().join("i"), b"").unwrap();
        c.settings.kernel = dir.path().join("k");
        c.settings.initrd = dir.path().join("i");
        c.settings.vsmp_loader = None;
        let b = BootFiles::from_json(manifest(&c).unwrap().as_bytes()).unwrap();
        let k = b.get(bootfiles::KERNEL).unwrap();
        assert_eq!(k.size, 6);
        assert_eq!(k.sha256, hex::encode(Sha256::digest(b"kernel")),);
        assert_eq!(
            b.get(bootfiles::INITRD).unwrap().sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(b.get(bootfiles::VSMP).is_none());
    }
}
