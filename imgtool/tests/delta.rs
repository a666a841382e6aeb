//! Delta re-clone (issue 14): a target whose table equals the image's gets its chunks
//! hashed, and only the chunks that differ are fetched and written. Every restore here
//! pulls from `imgtool serve` on 127.0.0.1, so the bytes counted are the bytes on the
//! wire (`HttpSource::bytes_fetched`, the report's `source_bytes`). Targets are disk files
//! checked through loop devices (`assert_restored`: sgdisk, `e2fsck -fn`, inode-by-inode
//! trees, FAT, swap identity).

mod common;
use common::*;
use imgtool::disk::{BlockIo, Disk};
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::restore::{restore, RestoreOptions, RestoreReport};
use imgtool::source::{HttpSource, ImageSource, SourceError, Stream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const PARTS: [u32; 4] = [1, 2, 3, 4];

/// A working directory with an image root served by `imgtool serve`.
struct Site {
    _work: tempfile::TempDir,
    dir: PathBuf,
    images: PathBuf,
    port: u16,
}

impl Site {
    fn new() -> Site {
        let work = tempfile::tempdir_in(target_tmp()).unwrap();
        let dir = work.path().to_path_buf();
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        let port = test_fixtures::servers::serve_in_background(vec![images.clone()]);
        Site {
            _work: work,
            dir,
            images,
            port,
        }
    }

    fn url(&self, group: &str) -> String {
        format!("http://127.0.0.1:{}/{group}", self.port)
    }

    fn capture(&self, master: &Path, group: &str) -> PathBuf {
        capture_into(master, &self.images, group);
        self.images.join(group)
    }

    /// A blank target file of `size` bytes.
    fn blank(&self, name: &str, size: u64) -> PathBuf {
        let t = self.dir.join(name);
        std::fs::File::create(&t).unwrap().set_len(size).unwrap();
        t
    }
}

fn opts(delta: bool) -> RestoreOptions {
    RestoreOptions {
        delta,
        verify: true,
        threads: 2,
        ..Default::default()
    }
}

/// Restores `group` from the site's server onto `target`.
fn restore_http(site: &Site, group: &str, target: &Path, o: &RestoreOptions) -> RestoreReport {
    let img = Image::load(Arc::new(HttpSource::new(&site.url(group)))).unwrap();
    restore_image(&img, target, o).unwrap()
}

fn restore_image(
    img: &Image,
    target: &Path,
    o: &RestoreOptions,
) -> imgtool::error::Result<RestoreReport> {
    let disk = Disk::open_rw_direct(target).unwrap();
    restore(img, &disk, o, &Progress::hidden())
}

/// Compressed payload bytes of an image (every frame).
fn payload(image_dir: &Path) -> u64 {
    payload_and_largest_frame(image_dir).0
}

/// Chunks of the image's partitions (the head is always fetched, never checked).
fn partition_chunks(image_dir: &Path) -> usize {
    let img = Image::open(image_dir).unwrap();
    img.manifest
        .regions
        .iter()
        .filter(|r| r.number != 0)
        .map(|r| r.chunks.len())
        .sum()
}

/// `imgtool diff` of the image and the disk: the chunks differing, per region.
fn differing(image_dir: &Path, disk: &Path) -> Vec<(String, Vec<usize>)> {
    let img = Image::open(image_dir).unwrap();
    let d = Disk::open_ro(disk).unwrap();
    let rep = imgtool::diff::diff(&img, &d, 2, &Progress::hidden()).unwrap();
    assert!(rep.layout_kept, "{rep:?}");
    rep.regions
        .into_iter()
        .filter(|r| !r.differing.is_empty())
        .map(|r| (r.name, r.differing))
        .collect()
}

/// A copy of the gpt fixture (root fs p2 of 112 MiB, ESP, swap, data) with two more
/// files of random bytes on the root fs: `srv/old.bin` (10 MiB, deleted by the change)
/// and `srv/large.bin` (16 MiB, 1 MiB of it rewritten by the change).
fn master(site: &Site) -> PathBuf {
    let m = site.dir.join("master.img");
    std::fs::copy(fixture("gpt"), &m).unwrap();
    let mut l = Loop::attach(&m, false);
    let root = l.mount_opts(2, "ext4", "rw");
    write_random(&root.join("srv/old.bin"), 10 << 20, 1);
    write_random(&root.join("srv/large.bin"), 16 << 20, 2);
    drop(l);
    m
}

/// `len` bytes of a seeded xorshift stream: incompressible, reproducible.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write_random(p: &Path, len: usize, seed: u64) {
    std::fs::write(p, random_bytes(len, seed)).unwrap();
}

/// The master changed as issue 14 says: 20 MiB of new files (half random, half text),
/// 10 MiB deleted, 1 MiB rewritten inside a large file. Returns the changed bytes.
fn change(master: &Path) -> Vec<u8> {
    let mut l = Loop::attach(master, false);
    let root = l.mount_opts(2, "ext4", "rw");
    let new_random = random_bytes(10 << 20, 3);
    let text: Vec<u8> = (0..)
        .flat_map(|i| {
            format!("{i:08} a line of new log text from the changed master\n").into_bytes()
        })
        .take(10 << 20)
        .collect();
    std::fs::create_dir_all(root.join("srv/new")).unwrap();
    std::fs::write(root.join("srv/new/random.bin"), &new_random).unwrap();
    std::fs::write(root.join("srv/new/app.log"), &text).unwrap();
    std::fs::remove_file(root.join("srv/old.bin")).unwrap();
    let patch = random_bytes(1 << 20, 4);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("srv/large.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &patch, 5 << 20).unwrap();
    drop(f);
    drop(l);
    [new_random, text, patch].concat()
}

#[test]
fn an_unchanged_reclone_fetches_under_one_percent_and_checks_every_chunk() {
    skip_unless_root!("loop devices");
    let site = Site::new();
    let m = master(&site);
    let image = site.capture(&m, "base");
    let size = std::fs::metadata(&m).unwrap().len();
    let t = site.blank("node.img", size);

    let first = restore_http(&site, "base", &t, &opts(true));
    assert!(!first.delta, "a blank disk has no table to keep: {first:?}");
    assert!(first.source_bytes >= payload(&image) - payload(&image) / 100);

    let skipped = Arc::new(AtomicUsize::new(0));
    let mut o = opts(true);
    let s = skipped.clone();
    o.on_skip = Some(Arc::new(move |_, _| {
        s.fetch_add(1, Ordering::Relaxed);
    }));
    let again = restore_http(&site, "base", &t, &o);
    let (c, total) = (&again.chunks, partition_chunks(&image));
    eprintln!(
        "re-clone: {c:?}, {} of {} payload bytes on the wire",
        again.source_bytes,
        payload(&image)
    );
    assert!(again.delta && again.full_reason.is_none());
    assert_eq!(c.checked, total, "every chunk checked");
    assert_eq!(c.skipped, total, "every chunk already there");
    assert_eq!(skipped.load(Ordering::Relaxed), total, "the hook saw each");
    assert!(
        again.source_bytes * 100 <= payload(&image),
        "{} bytes fetched of {}",
        again.source_bytes,
        payload(&image)
    );
    assert!(differing(&image, &t).is_empty());
    assert_restored(&m, &t, &PARTS);

    // --full fetches everything again.
    let full = restore_http(&site, "base", &t, &opts(false));
    assert!(!full.delta && full.full_reason.as_deref().unwrap_or("").contains("--full"));
    assert_eq!(full.chunks.fetched, total + 1, "every chunk and the head");
}

#[test]
fn a_changed_master_reclones_with_what_changed_only() {
    skip_unless_root!("loop devices");
    let site = Site::new();
    let (m, _, t) = master_and_clone(&site, "v1");

    let changed = change(&m);
    let compressed = zstd::bulk::compress(&changed, 3).unwrap().len() as u64;
    let v2 = site.capture(&m, "v2");
    let rep = restore_http(&site, "v2", &t, &opts(true));
    let budget = 3 * compressed + (16 << 20);
    eprintln!(
        "changed master: {:?}; {} bytes on the wire, changed data {} compressed, budget {budget}, payload {}",
        rep.chunks,
        rep.source_bytes,
        compressed,
        payload(&v2)
    );
    assert!(rep.delta);
    assert!(rep.chunks.skipped > rep.chunks.fetched, "{:?}", rep.chunks);
    assert!(
        rep.source_bytes <= budget,
        "{} bytes fetched, more than 3 x {compressed} + 16 MiB",
        rep.source_bytes
    );
    assert!(differing(&v2, &t).is_empty());
    assert_restored(&m, &t, &PARTS);
}

/// The site's master captured as `group`, and `node.img`, a blank disk of its size that
/// a restore over HTTP made a clone of: (master, image directory, clone).
fn master_and_clone(site: &Site, group: &str) -> (PathBuf, PathBuf, PathBuf) {
    let m = master(site);
    let image = site.capture(&m, group);
    let size = std::fs::metadata(&m).unwrap().len();
    let t = site.blank("node.img", size);
    restore_http(site, group, &t, &opts(true));
    (m, image, t)
}

/// Writes 4 KiB of random bytes into chunk `i` of region `r` (at its first range) on
/// `disk`, a region starting at disk byte `base`.
fn damage(disk: &Path, img: &Image, r: &str, i: usize, base: u64) {
    let c = &img.manifest.region(r).unwrap().chunks[i];
    let (o, l) = c.ranges()[0];
    let at = base + o + (l / 2) / 4096 * 4096;
    let d = Disk::open_rw(disk).unwrap();
    d.write_all_at(&random_bytes(4096, 100 + i as u64), at)
        .unwrap();
    d.flush().unwrap();
}

fn part_base(img: &Image, n: u32) -> u64 {
    img.layout.partition(n).unwrap().start * img.layout.sector_size as u64
}

#[test]
fn a_damaged_clone_is_repaired_by_fetching_only_the_damaged_chunks() {
    skip_unless_root!("loop devices");
    let site = Site::new();
    let (m, image, t) = master_and_clone(&site, "base");
    let img = Image::open(&image).unwrap();

    // A file deleted on the clone, then random bytes in used blocks of three chunks.
    {
        let mut l = Loop::attach(&t, false);
        let root = l.mount_opts(2, "ext4", "rw");
        std::fs::remove_file(root.join("srv/big.log")).unwrap();
    }
    let after_delete = differing(&image, &t);
    let p2 = img.manifest.region("p2").unwrap();
    let n = p2.chunks.len();
    let hit = [n / 4, n / 2, 3 * n / 4];
    for i in hit {
        damage(&t, &img, "p2", i, part_base(&img, 2));
    }
    let before = differing(&image, &t);
    let p2_diff: Vec<usize> = before
        .iter()
        .find(|(r, _)| r == "p2")
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    assert!(hit.iter().all(|i| p2_diff.contains(i)), "{before:?}");
    let expected: usize = before.iter().map(|(_, d)| d.len()).sum();
    // The deletion touches a few metadata chunks (inode table, bitmaps, directory,
    // journal, superblock); not the file's data chunks.
    assert!(
        expected <= hit.len() + 8,
        "{before:?} ({after_delete:?} after the delete)"
    );

    let rep = restore_http(&site, "base", &t, &opts(true));
    eprintln!(
        "repair: {:?}, {} bytes on the wire",
        rep.chunks, rep.source_bytes
    );
    assert_eq!(
        rep.chunks.fetched,
        expected + 1,
        "those chunks and the head"
    );
    let head = img.manifest.region("head").unwrap().compressed_bytes();
    let wanted: u64 = before
        .iter()
        .flat_map(|(r, d)| {
            let r = img.manifest.region(r).unwrap();
            d.iter().map(move |&i| r.chunks[i].compressed_length)
        })
        .sum();
    assert_eq!(rep.chunks.fetched_bytes, wanted + head);
    assert_eq!(rep.source_bytes, wanted + head, "nothing else on the wire");
    assert!(differing(&image, &t).is_empty());
    assert_restored(&m, &t, &PARTS);
}

#[test]
fn a_damaged_payload_is_refused_before_a_delta_restore_writes() {
    skip_unless_root!("loop devices");
    let site = Site::new();
    let (_, image, t) = master_and_clone(&site, "base");
    let img = Image::open(&image).unwrap();

    // Chunk k differs on the disk, and its frame in the image is damaged: a local delta
    // restore checks the frames it will write before its first write.
    let k = img.manifest.region("p2").unwrap().chunks.len() / 2;
    damage(&t, &img, "p2", k, part_base(&img, 2));
    corrupt_chunk(&image, "p2", k);
    let before = sha256_file(&t);
    let e = restore_image(&Image::open(&image).unwrap(), &t, &opts(true))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("chunk {k}")) && e.contains("damaged"),
        "{e}"
    );
    assert_eq!(sha256_file(&t), before, "nothing written");

    // A damaged frame of a chunk the disk already holds is not needed: the delta restore
    // neither reads nor writes it, and ends with every chunk verified.
    let j = k / 2;
    corrupt_chunk(&image, "p2", j);
    corrupt_chunk(&image, "p2", k); // k repaired (the same bit flipped back)
    let rep = restore_image(&Image::open(&image).unwrap(), &t, &opts(true)).unwrap();
    assert_eq!(
        rep.chunks.fetched, 2,
        "chunk {k} and the head: {:?}",
        rep.chunks
    );
    assert!(differing(&image, &t).is_empty());

    // Over HTTP the damaged frame is found when it arrives, before it is written; the
    // kept table is marked in progress, so the disk does not look bootable.
    damage(&t, &img, "p2", j, part_base(&img, 2));
    let remote = Image::load(Arc::new(HttpSource::new(&site.url("base")))).unwrap();
    let e = restore_image(&remote, &t, &opts(true))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("chunk {j}")), "{e}");
    let table = imgtool::layout::read_layout(&Disk::open_ro(&t).unwrap()).unwrap();
    assert!(table.is_none(), "a failed re-clone left a valid table");
}

/// An image source that answers `frames_left` payload requests (a frame, or a stream of
/// a run of frames), then refuses every one: the server died mid-restore.
struct DiesAfter {
    inner: HttpSource,
    frames_left: AtomicUsize,
}

impl DiesAfter {
    fn dead(&self, name: &str) -> SourceError {
        SourceError {
            location: format!("{}/{name}", self.inner.location()),
            msg: "connection refused (test: the server died)".into(),
            unreachable: true,
        }
    }
    fn alive(&self) -> bool {
        self.frames_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl ImageSource for DiesAfter {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        self.inner.read_file(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        if !self.alive() {
            return Err(self.dead(name));
        }
        self.inner.read_range(name, offset, len)
    }
    fn open_range(&self, name: &str, offset: u64, len: u64) -> Result<Stream, SourceError> {
        if !self.alive() {
            return Err(self.dead(name));
        }
        self.inner.open_range(name, offset, len)
    }
    fn len(&self, name: &str) -> Option<u64> {
        self.inner.len(name)
    }
    fn is_local(&self) -> bool {
        false
    }
}

#[test]
fn an_interrupted_delta_reclone_ends_verified_when_run_again() {
    skip_unless_root!("loop devices");
    let site = Site::new();
    let (m, _, t) = master_and_clone(&site, "v1");
    change(&m);
    let v2 = site.capture(&m, "v2");

    // The server dies after the head and two runs of frames of the delta.
    let dying = DiesAfter {
        inner: HttpSource::new(&site.url("v2")),
        frames_left: AtomicUsize::new(3),
    };
    let img = Image::load(Arc::new(dying)).unwrap();
    let mut o = opts(true);
    o.threads = 1;
    let err = restore_image(&img, &t, &o).expect_err("the server died");
    eprintln!("interrupted: {err}");
    let table = imgtool::layout::read_layout(&Disk::open_ro(&t).unwrap()).unwrap();
    assert!(
        table.is_none(),
        "an interrupted re-clone left a valid table"
    );

    // The rerun recognises the mark and resumes as a delta re-clone: what the first run
    // wrote is not fetched again.
    let rep = restore_http(&site, "v2", &t, &opts(true));
    eprintln!("rerun: {:?}, {} bytes", rep.chunks, rep.source_bytes);
    assert!(rep.delta, "{rep:?}");
    assert!(
        rep.source_bytes < payload(&v2) / 2,
        "{} bytes",
        rep.source_bytes
    );
    assert!(
        differing(&v2, &t).is_empty(),
        "every chunk verified on the disk"
    );
    assert_restored(&m, &t, &PARTS);
}
