//! An interrupted re-clone onto a disk whose table is kept (equal to the image's) must not
//! leave a disk that looks bootable (issue 10, D7): before the mark it left a valid GPT, a
//! clean-looking ext4 and the old boot head around mixed old and new file data.

mod common;
use common::*;
use imgtool::disk::{BlockIo, Disk};
use imgtool::layout::read_layout;
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::restore::{restore, RestoreOptions};
use imgtool::source::{ImageSource, LocalDir, SourceError, Stream};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory source whose connection to one payload breaks for good at byte `cut`:
/// what a node sees when its server dies in the middle of a clone.
struct CutSource {
    dir: LocalDir,
    payload: String,
    cut: u64,
}

impl CutSource {
    fn broken(&self, name: &str) -> SourceError {
        SourceError {
            location: format!("{}/{name}", self.dir.location()),
            msg: "connection reset (test)".into(),
            unreachable: false,
        }
    }
}

/// Yields the bytes before the cut, then fails.
struct CutReader {
    inner: Box<dyn Read + Send>,
    left: u64,
}

impl Read for CutReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset (test)",
            ));
        }
        let n = buf.len().min(self.left as usize);
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

impl ImageSource for CutSource {
    fn location(&self) -> String {
        format!("cut:{}", self.dir.location())
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        self.dir.read_file(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        if name == self.payload && offset + len > self.cut {
            return Err(self.broken(name));
        }
        self.dir.read_range(name, offset, len)
    }
    fn open_range(&self, name: &str, offset: u64, len: u64) -> Result<Stream, SourceError> {
        let mut s = self.dir.open_range(name, offset, len)?;
        if name == self.payload {
            if offset >= self.cut {
                return Err(self.broken(name));
            }
            s.reader = Box::new(CutReader {
                inner: s.reader,
                left: self.cut - offset,
            });
        }
        Ok(s)
    }
    fn len(&self, name: &str) -> Option<u64> {
        self.dir.len(name)
    }
    fn is_local(&self) -> bool {
        // Streamed like a server: no whole-image check before the first write.
        false
    }
}

fn sector0_signature(p: &Path) -> [u8; 2] {
    let d = Disk::open_ro(p).unwrap();
    let mut s = [0u8; 2];
    d.read_exact_at(&mut s, 510).unwrap();
    s
}

/// The node's disk `dir/node.img`, already holding the master's layout (an earlier
/// clone): a restore onto it keeps the table.
fn earlier_clone(dir: &Path, master: &Path) -> PathBuf {
    let target = dir.join("node.img");
    std::fs::copy(master, &target).unwrap();
    target
}

#[test]
fn an_interrupted_reclone_onto_a_kept_table_does_not_look_bootable() {
    skip_unless_root!("loop devices");
    let Captured {
        dir,
        image: image_dir,
        master,
        ..
    } = &captured("gpt");
    let target = earlier_clone(dir, master);
    let table_before = read_layout(&Disk::open_ro(&target).unwrap()).unwrap();
    assert!(table_before.is_some());

    // Break the stream of the region with the most chunks, half-way through it.
    let img = Image::open(image_dir).unwrap();
    let r = img
        .manifest
        .regions
        .iter()
        .max_by_key(|r| r.chunks.len())
        .unwrap();
    assert!(r.chunks.len() >= 4, "{} has too few chunks", r.name);
    let cut = r.chunks[r.chunks.len() / 2].payload_offset + 1;
    let source = CutSource {
        dir: LocalDir(image_dir.clone()),
        payload: r.payload.clone(),
        cut,
    };
    let cut_img = Image::load(Arc::new(source)).unwrap();
    let disk = Disk::open_rw(&target).unwrap();
    // A full re-clone (a delta one would find every chunk already there and fetch none;
    // imgtool/tests/delta.rs interrupts a delta re-clone).
    let opts = RestoreOptions {
        threads: 2,
        delta: false,
        ..Default::default()
    };
    let err = restore(&cut_img, &disk, &opts, &Progress::hidden())
        .expect_err("the restore must fail when its stream breaks for good");
    drop(disk);
    assert!(err.to_string().contains(&r.name), "{err}");

    // Interrupted: no valid table anywhere (MBR signature, primary and backup GPT).
    assert_ne!(sector0_signature(&target), [0x55, 0xaa]);
    let seen = read_layout(&Disk::open_ro(&target).unwrap()).unwrap();
    assert!(
        seen.is_none(),
        "an interrupted re-clone left a table: {seen:?}"
    );
    let blkid = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "PTTYPE"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&blkid.stdout).trim().is_empty(),
        "blkid still finds a table: {}",
        String::from_utf8_lossy(&blkid.stdout)
    );

    // The next clone recognises the mark (issue 14: the table it hides is kept, so a
    // delta re-clone can resume), puts the signatures back last, and ends with the
    // master's disk.
    let disk = Disk::open_rw(&target).unwrap();
    let rep = restore(&img, &disk, &opts, &Progress::hidden()).unwrap();
    drop(disk);
    assert!(
        rep.plan.keep_table,
        "the marked table is recognised and kept"
    );
    assert_eq!(sector0_signature(&target), [0x55, 0xaa]);
    assert_restored(master, &target, &[1, 2, 4]);
}

#[test]
fn a_completed_reclone_onto_a_kept_table_leaves_the_table_byte_identical() {
    skip_unless_root!("the fixture disk is built through loop devices");
    let Captured {
        dir,
        image: image_dir,
        master,
        ..
    } = &captured("gpt");
    let target = earlier_clone(dir, master);
    let img = Image::open(image_dir).unwrap();
    // While chunks are being written the table is marked; afterwards it is back.
    let target_in_hook = target.clone();
    let seen_marked = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = seen_marked.clone();
    let opts = RestoreOptions {
        threads: 2,
        before_grow: Some(Arc::new(move || {
            let d = Disk::open_ro(&target_in_hook).unwrap();
            if read_layout(&d).unwrap().is_some() {
                flag.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        })),
        ..Default::default()
    };
    let disk = Disk::open_rw(&target).unwrap();
    let rep = restore(&img, &disk, &opts, &Progress::hidden()).unwrap();
    drop(disk);
    assert!(rep.plan.keep_table);
    assert!(
        seen_marked.load(std::sync::atomic::Ordering::SeqCst),
        "the table was valid while data was being written"
    );
    // The table structures are the master's, byte for byte (first 34 sectors, last 33).
    let (m, t) = (
        std::fs::read(master).unwrap(),
        std::fs::read(&target).unwrap(),
    );
    assert_eq!(m[..34 * 512], t[..34 * 512]);
    assert_eq!(m[m.len() - 33 * 512..], t[t.len() - 33 * 512..]);
}
