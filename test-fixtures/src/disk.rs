//! Disks for tests: fixture disks built by `scripts/make-fixture.sh` (cached per script
//! hash; building one needs root), loop devices and mounts that clean up in `Drop`
//! (partitions deleted before detach), file-tree snapshots, and [`assert_restored`], which
//! checks a cloned disk against its master with the reference tools (through loop devices
//! and mounts: root). Disks built on plain files, without root, are in [`crate::files`];
//! images (capture, damage, tamper) in [`crate::image`].

use crate::root::tool;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Scratch space under the target directory the tests were built into: `CARGO_TARGET_TMPDIR`
/// when set, else `$CARGO_TARGET_DIR/tmp` (an ordinary user's run builds into its own
/// target dir: the checkout's `target/` may be root's), else the workspace's `target/tmp`.
/// Created when missing.
pub fn target_tmp() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("tmp")))
        .unwrap_or_else(|| repo_root().join("target/tmp"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).to_string()
}

/// A fixture disk of `kind` (`gpt` or `mbr`), built once per version of the script and
/// shared by every test process through a lock file.
pub fn fixture(kind: &str) -> PathBuf {
    let script = repo_root().join("scripts/make-fixture.sh");
    let text = std::fs::read(&script).expect("read make-fixture.sh");
    let tag = &hex::encode(Sha256::digest(&text))[..12];
    let dir = target_tmp().join("fixtures");
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let lock = std::fs::File::create(dir.join(format!("{kind}.lock"))).expect("lock file");
    lock.lock().expect("lock fixture");
    let img = dir.join(format!("{kind}-{tag}.img"));
    if !img.exists() {
        assert!(
            crate::root::is_root(),
            "building the {kind} fixture needs root (loop devices, mount): start the test with skip_unless_root!, or use test_fixtures::files"
        );
        run(Command::new("bash").arg(&script).arg(kind).arg(&img));
    }
    img
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).expect("open for hashing");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hash");
    hex::encode(h.finalize())
}

/// A loop device with its partitions added (BLKPG via partx), removed in `Drop`.
pub struct Loop {
    pub dev: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Loop {
    pub fn attach(file: &Path, read_only: bool) -> Loop {
        Self::attach_with(file, read_only, None)
    }

    pub fn attach_with(file: &Path, read_only: bool, sector_size: Option<u32>) -> Loop {
        let mut c = tool("losetup");
        c.args(["-f", "--show"]);
        if read_only {
            c.arg("-r");
        }
        if let Some(ss) = sector_size {
            c.args(["--sector-size", &ss.to_string()]);
        }
        let dev = PathBuf::from(stdout(c.arg(file)).trim());
        let l = Loop {
            dev,
            mounts: vec![],
        };
        // partx fails on a disk without a table; that is fine for blank targets.
        let _ = tool("partx").arg("-a").arg(&l.dev).output();
        l
    }

    pub fn part(&self, n: u32) -> PathBuf {
        let p = PathBuf::from(format!("{}p{n}", self.dev.display()));
        for _ in 0..50 {
            if p.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        p
    }

    /// Mounts partition `n` read-only (no journal replay) on a fresh directory.
    pub fn mount(&mut self, n: u32, fstype: &str) -> PathBuf {
        self.mount_opts(n, fstype, "ro,noload")
    }

    /// Mounts partition `n` with `options` on a fresh directory; unmounted on drop.
    pub fn mount_opts(&mut self, n: u32, fstype: &str, options: &str) -> PathBuf {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        run(Command::new("mount")
            .args(["-t", fstype, "-o", options])
            .arg(self.part(n))
            .arg(&dir));
        self.mounts.push(dir.clone());
        dir
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for m in self.mounts.drain(..).rev() {
            // A busy mount (a process still inside it) would pin the loop device for
            // good: retry, then detach it lazily so the device is freed once unused.
            let unmounted = (0..10).any(|i| {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Command::new("umount")
                    .arg(&m)
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !unmounted {
                let _ = Command::new("umount").arg("-l").arg(&m).output();
            }
            let _ = std::fs::remove_dir(&m);
        }
        let _ = tool("partx").arg("-d").arg(&self.dev).output();
        let _ = tool("losetup").arg("-d").arg(&self.dev).output();
    }
}

/// Every inode under `root`: type, mode, owner, size, mtime, content hash or link target,
/// device number, and sorted xattrs.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!(
                "link->{}",
                std::fs::read_link(&p).expect("readlink").display()
            )
        } else if ft.is_file() {
            format!("file:{}:{}", m.len(), sha256_file(&p))
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev:{}", m.rdev())
        } else {
            "other".to_string()
        };
        let mut xattrs: Vec<String> = xattr::list(&p)
            .map(|l| {
                l.map(|k| {
                    let v = xattr::get(&p, &k).ok().flatten().unwrap_or_default();
                    format!("{}={}", k.to_string_lossy(), hex::encode(v))
                })
                .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let rel = p.strip_prefix(root).expect("prefix").display().to_string();
        out.insert(
            rel,
            format!(
                "{what} mode={:o} uid={} gid={} nlink={} mtime={}.{} xattr=[{}]",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec(),
                xattrs.join(",")
            ),
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// `TYPE`, `UUID`, `LABEL` of a device, probed from its contents.
pub fn blkid(dev: &Path) -> BTreeMap<String, String> {
    let out = tool("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| matches!(*k, "TYPE" | "UUID" | "LABEL" | "VERSION"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The files of a FAT file system on a device or in a file, extracted with mtools (the
/// host kernel has no vfat): per file its type, size and content hash.
pub fn fat_files(dev: &Path) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(dev)
        .arg("::/")
        .arg(dir.path()));
    snapshot(dir.path())
        .into_iter()
        .map(|(k, v)| (k, v.split(" mode=").next().unwrap_or_default().to_string()))
        .collect()
}

/// Asserts that `target` (a disk file) holds the same partitions as `master`: table
/// verified by sgdisk/sfdisk, every ext fs `e2fsck -fn` clean with an identical mounted
/// tree, FAT checked and equal, identical UUIDs and labels, swap identity kept.
pub fn assert_restored(master: &Path, target: &Path, partitions: &[u32]) {
    let table = stdout(
        tool("blkid")
            .args(["-p", "-o", "value", "-s", "PTTYPE"])
            .arg(target),
    );
    if table.trim() == "gpt" {
        let v = stdout(tool("sgdisk").arg("-v").arg(target));
        assert!(
            v.contains("No problems found"),
            "sgdisk -v {}: {v}",
            target.display()
        );
    } else {
        let v = stdout(tool("sfdisk").arg("-V").arg(target));
        assert!(
            v.contains("No errors detected"),
            "sfdisk -V {}: {v}",
            target.display()
        );
    }
    let mut m = Loop::attach(master, true);
    let mut t = Loop::attach(target, false);
    for &n in partitions {
        let (mp, tp) = (m.part(n), t.part(n));
        let (mid, tid) = (blkid(&mp), blkid(&tp));
        assert_eq!(mid, tid, "partition {n}: identity differs");
        match mid.get("TYPE").map(String::as_str) {
            Some(fs @ ("ext4" | "ext3" | "ext2")) => {
                run(tool("e2fsck").arg("-fn").arg(&tp));
                let md = m.mount(n, fs);
                let td = t.mount(n, fs);
                let (a, b) = (snapshot(&md), snapshot(&td));
                assert!(a.len() >= 3, "master partition {n} looks empty");
                if a != b {
                    let diff: Vec<_> = a
                        .iter()
                        .filter(|(k, v)| b.get(*k) != Some(v))
                        .take(5)
                        .collect();
                    panic!(
                        "partition {n}: trees differ, e.g. {diff:?}; {} vs {} entries",
                        a.len(),
                        b.len()
                    );
                }
            }
            Some("vfat") => {
                run(tool("fsck.vfat").arg("-n").arg(&tp));
                let (a, b) = (fat_files(&mp), fat_files(&tp));
                assert!(!a.is_empty());
                assert_eq!(a, b, "partition {n}: FAT files differ");
            }
            Some("swap") => {}
            other => panic!("partition {n}: unexpected type {other:?}"),
        }
    }
}
