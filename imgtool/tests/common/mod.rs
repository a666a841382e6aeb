//! imgtool's integration tests stand on the workspace's test fixtures (disks, images,
//! the root check).
#![allow(dead_code, unused_imports)]

pub use test_fixtures::disk::*;
pub use test_fixtures::image::*;
pub use test_fixtures::root::tool;
pub use test_fixtures::skip_unless_root;

pub fn imgtool() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_imgtool"))
}

/// A fixture disk captured into a fresh temporary directory (removed on drop).
pub struct Captured {
    pub _work: tempfile::TempDir,
    /// The temporary directory: put targets and edited images here.
    pub dir: std::path::PathBuf,
    pub image: std::path::PathBuf,
    pub master: std::path::PathBuf,
    /// The master disk's size in bytes.
    pub size: u64,
}

/// Captures the `kind` fixture (`gpt` or `mbr`); needs root (the fixture is built once
/// through loop devices): call it after `skip_unless_root!`.
pub fn captured(kind: &str) -> Captured {
    let master = fixture(kind);
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    Captured {
        dir: work.path().to_path_buf(),
        size: std::fs::metadata(&master).unwrap().len(),
        image,
        master,
        _work: work,
    }
}

/// The file-built GPT master of `test_fixtures::files::gpt_master` (same layout, labels
/// and UUIDs as the `gpt` fixture, smaller, no root needed), captured into a fresh
/// temporary directory.
pub fn captured_files() -> Captured {
    let work = tempfile::tempdir().unwrap();
    let (disk, _) = test_fixtures::files::gpt_master(work.path());
    let image = work.path().join("img");
    run(imgtool()
        .args(["capture", "-q"])
        .arg(&disk.path)
        .arg(&image));
    Captured {
        dir: work.path().to_path_buf(),
        size: std::fs::metadata(&disk.path).unwrap().len(),
        image,
        master: disk.path,
        _work: work,
    }
}
