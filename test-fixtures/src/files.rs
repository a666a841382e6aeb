//! Disks built on plain files, without root: each file system is made in a partition-sized
//! file (`mke2fs -d DIR`, `mkfs.vfat` + `mcopy`, `mkswap`) and spliced into a disk file
//! that `sgdisk` partitioned. Results are read back without mounting: `e2fsck -fn` and
//! `debugfs rdump` for ext4, `fsck.vfat -n` and `mcopy` for FAT, `blkid -p` for identity.
//!
//! What needs root stays out: no device nodes and no foreign owners in the trees (the
//! root-built fixture of [`crate::disk::fixture`] has them). Free blocks of each ext4 file
//! system hold garbage (the partition file is filled before `mke2fs -E nodiscard`), which
//! a capture must not store.

use crate::disk::{fat_files, run, snapshot};
use crate::root::tool;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// The file system of one partition.
#[derive(Debug, Clone)]
pub enum Fs {
    /// ext4 with this label and UUID, holding a copy of `tree`.
    Ext4 {
        label: String,
        uuid: String,
        tree: PathBuf,
    },
    /// FAT16 with this label and volume id (`1234ABCD`), holding a copy of `tree`.
    Vfat {
        label: String,
        id: String,
        tree: PathBuf,
    },
    /// A swap area with this label and UUID.
    Swap { label: String, uuid: String },
}

/// One partition of a [`gpt_disk`]: its GPT name and type code (`8300`), size, contents.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub type_code: String,
    pub mib: u64,
    pub fs: Fs,
}

/// A disk file and where its partitions are (bytes), in table order.
#[derive(Debug, Clone)]
pub struct FileDisk {
    pub path: PathBuf,
    pub parts: Vec<Extent>,
}

/// Where a partition is on its disk, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub size: u64,
}

/// Builds a GPT disk file at `path` with `parts` in order (the first at 1 MiB), 1 MiB
/// free at the end for the backup table.
pub fn gpt_disk(path: &Path, parts: &[Part]) -> FileDisk {
    let total: u64 = parts.iter().map(|p| p.mib).sum::<u64>() + 2;
    std::fs::File::create(path)
        .and_then(|f| f.set_len(total * MIB))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut sg = tool("sgdisk");
    sg.arg("-o");
    for (i, p) in parts.iter().enumerate() {
        let n = i + 1;
        let start = if n == 1 { "2048" } else { "0" };
        sg.args(["-n", &format!("{n}:{start}:+{}M", p.mib)])
            .args(["-t", &format!("{n}:{}", p.type_code)])
            .args(["-c", &format!("{n}:{}", p.name)]);
    }
    run(sg.arg(path));
    let disk = FileDisk {
        path: path.to_path_buf(),
        parts: extents(path),
    };
    assert_eq!(
        disk.parts.len(),
        parts.len(),
        "sgdisk made other partitions"
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    for (p, e) in parts.iter().zip(&disk.parts) {
        let file = scratch.path().join(&p.name);
        make_fs(&file, e.size, &p.fs);
        splice(&file, path, e.start);
    }
    disk
}

/// The partitions of a disk file as `sfdisk --json` reads them (no root needed).
pub fn extents(disk: &Path) -> Vec<Extent> {
    let out = run(tool("sfdisk").arg("--json").arg(disk));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk --json");
    let ss = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    v["partitiontable"]["partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| Extent {
                    start: p["start"].as_u64().expect("start") * ss,
                    size: p["size"].as_u64().expect("size") * ss,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Makes file system `fs` in a new file of `size` bytes at `file`.
pub fn make_fs(file: &Path, size: u64, fs: &Fs) {
    match fs {
        Fs::Ext4 { label, uuid, tree } => {
            garbage(file, size);
            run(tool("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-E", "nodiscard"])
                .args(["-L", label, "-U", uuid, "-d"])
                .arg(tree)
                .arg(file));
        }
        Fs::Vfat { label, id, tree } => {
            zeros(file, size);
            run(tool("mkfs.vfat")
                .args(["-F", "16", "-n", label, "-i", id])
                .arg(file));
            let entries: Vec<PathBuf> = std::fs::read_dir(tree)
                .expect("reading the FAT tree")
                .flatten()
                .map(|e| e.path())
                .collect();
            if !entries.is_empty() {
                run(Command::new("mcopy")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .args(["-s", "-m", "-i"])
                    .arg(file)
                    .args(&entries)
                    .arg("::/"));
            }
        }
        Fs::Swap { label, uuid } => {
            zeros(file, size);
            run(tool("mkswap").args(["-L", label, "-U", uuid]).arg(file));
        }
    }
}

/// A new file of `size` zero bytes (sparse).
pub fn zeros(file: &Path, size: u64) {
    std::fs::File::create(file)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("creating {}: {e}", file.display()));
}

/// A new file of `size` bytes that are not zero and do not compress (a xorshift stream):
/// what free blocks hold on a used disk.
pub fn garbage(file: &Path, size: u64) {
    let mut f = std::fs::File::create(file).expect("garbage file");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    let mut block = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        f.write_all(&block[..n]).expect("writing garbage");
        left -= n as u64;
    }
}

/// Writes the whole of `part` into `disk` at byte `at`.
pub fn splice(part: &Path, disk: &Path, at: u64) {
    let mut src = std::fs::File::open(part).expect("partition file");
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .expect("disk file");
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = at;
    loop {
        let n = src.read(&mut buf).expect("reading the partition file");
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], pos).expect("writing the disk");
        pos += n as u64;
    }
}

/// Copies `e`'s bytes of `disk` into a new file `out` (for the tools that want a whole
/// file system in a file).
pub fn extract(disk: &Path, e: Extent, out: &Path) {
    let mut src = std::fs::File::open(disk).expect("disk file");
    src.seek(SeekFrom::Start(e.start)).expect("seek");
    let mut dst = std::fs::File::create(out).expect("partition file");
    let n = std::io::copy(&mut src.take(e.size), &mut dst).expect("copying the partition");
    assert_eq!(n, e.size, "{} ends inside a partition", disk.display());
}

/// `e2fsck -fn` on an ext file system in a file: panics with its output unless clean.
pub fn e2fsck_clean(file: &Path) {
    run(tool("e2fsck").arg("-fn").arg(file));
}

/// `fsck.vfat -n` on a FAT file system in a file: panics with its output unless clean.
pub fn fsck_vfat_clean(file: &Path) {
    run(tool("fsck.vfat").arg("-n").arg(file));
}

/// The tree of an ext file system in a file, read by `debugfs rdump` (no mount): every
/// entry's type, size, content hash or link target, and permission bits. Owners are not
/// compared (an ordinary user cannot restore them); `lost+found` is left out.
pub fn ext_tree(file: &Path) -> BTreeMap<String, String> {
    let out = tempfile::tempdir().expect("tempdir");
    // rdump warns (and goes on) when it cannot chown what it writes.
    run(tool("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", out.path().display()))
        .arg(file));
    contents(out.path())
        .into_iter()
        .filter(|(k, _)| !k.starts_with("lost+found"))
        .collect()
}

/// What a tree holds, whoever owns it: per entry its type, size and content hash (files),
/// link target (symlinks), and permission bits. FIFOs and devices are left out (rdump
/// skips them).
pub fn contents(root: &Path) -> BTreeMap<String, String> {
    snapshot(root)
        .into_iter()
        .filter_map(|(k, v)| {
            let what = v.split(" mode=").next().unwrap_or_default().to_string();
            if what == "fifo" || what.starts_with("dev:") || what == "other" {
                return None;
            }
            let mode = v
                .split(" mode=")
                .nth(1)
                .and_then(|m| m.split(' ').next())
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0);
            let perm = if what.starts_with("link->") {
                0
            } else {
                mode & 0o777
            };
            Some((k, format!("{what} perm={perm:o}")))
        })
        .collect()
}

/// A tree for an ext4 root: nested directories, small and large files (one spanning
/// several block groups' worth of extents), a symlink, a dangling symlink, a hard link,
/// an empty file, a sparse file with a tail, odd modes, and a FIFO.
pub fn sample_tree(dir: &Path) {
    let w = |p: &str, data: &[u8]| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
    };
    for i in 0..40u32 {
        let body: Vec<u8> = (0..(i * 997 % 20_000))
            .map(|j| (j.wrapping_mul(i + 7) >> 3) as u8)
            .collect();
        w(&format!("usr/tree/d{}/file{i}.txt", i % 7), &body);
    }
    let big: Vec<u8> = b"netboot fixture line\n"
        .iter()
        .copied()
        .cycle()
        .take(3 << 20)
        .collect();
    w("srv/big.log", &big);
    w("home/alice/note.txt", b"hello from the master\n");
    w("srv/empty", b"");
    let sparse = std::fs::File::create(dir.join("srv/sparse")).expect("sparse");
    sparse.set_len(5 << 20).expect("sparse");
    sparse.write_all_at(b"tail", 5 << 20).expect("sparse tail");
    std::os::unix::fs::symlink("../home/alice/note.txt", dir.join("srv/note-link"))
        .expect("symlink");
    std::os::unix::fs::symlink("/does/not/exist", dir.join("srv/dangling")).expect("symlink");
    std::fs::hard_link(
        dir.join("home/alice/note.txt"),
        dir.join("srv/note-hardlink"),
    )
    .expect("hard link");
    run(Command::new("chmod")
        .arg("0700")
        .arg(dir.join("home/alice")));
    run(Command::new("chmod")
        .arg("0640")
        .arg(dir.join("srv/big.log")));
    run(Command::new("mkfifo").arg(dir.join("srv/fifo")));
}

/// A tree for an ESP: nested directories, a binary and two small text files.
pub fn esp_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("EFI/BOOT")).expect("mkdir");
    std::fs::create_dir_all(dir.join("EFI/netboot")).expect("mkdir");
    let bin: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(dir.join("EFI/BOOT/BOOTX64.EFI"), bin).expect("write");
    std::fs::write(
        dir.join("EFI/netboot/grub.cfg"),
        "set timeout=3\nmenuentry netboot { linux /vmlinuz root=LABEL=root }\n",
    )
    .expect("write");
    std::fs::write(dir.join("EFI/netboot/os-release"), "ID=debian\n").expect("write");
}

/// A master disk like the GPT fixture's (ESP vfat | ext4 root | swap | ext4 data, same
/// labels and UUIDs), smaller, built without root in `dir`: `dir/master.img`. Returns the
/// disk and the trees its file systems were made from (`esp`, `root`, `data`).
pub fn gpt_master(dir: &Path) -> (FileDisk, BTreeMap<&'static str, PathBuf>) {
    let trees: BTreeMap<&'static str, PathBuf> = ["esp", "root", "data"]
        .into_iter()
        .map(|n| (n, dir.join(format!("tree-{n}"))))
        .collect();
    esp_tree(&trees["esp"]);
    sample_tree(&trees["root"]);
    let data = trees["data"].join("projects");
    std::fs::create_dir_all(&data).expect("mkdir");
    let csv: Vec<u8> = b"data partition\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    std::fs::write(data.join("results.csv"), csv).expect("write");
    std::fs::write(data.join("hostname"), "master\n").expect("write");
    let ext = |label: &str, uuid: &str, tree: &Path| Fs::Ext4 {
        label: label.into(),
        uuid: uuid.into(),
        tree: tree.to_path_buf(),
    };
    let parts = [
        Part {
            name: "ESP".into(),
            type_code: "ef00".into(),
            mib: 16,
            fs: Fs::Vfat {
                label: "ESP".into(),
                id: "1234ABCD".into(),
                tree: trees["esp"].clone(),
            },
        },
        Part {
            name: "root".into(),
            type_code: "8300".into(),
            mib: 24,
            fs: ext(
                "root",
                "0c7e4f00-1111-4222-8333-444455556666",
                &trees["root"],
            ),
        },
        Part {
            name: "swap".into(),
            type_code: "8200".into(),
            mib: 4,
            fs: Fs::Swap {
                label: "swap0".into(),
                uuid: "5a5a5a5a-1234-4321-abcd-0123456789ab".into(),
            },
        },
        Part {
            name: "data".into(),
            type_code: "8300".into(),
            mib: 12,
            fs: ext(
                "data",
                "d47a0000-aaaa-4bbb-8ccc-dddddddddddd",
                &trees["data"],
            ),
        },
    ];
    (gpt_disk(&dir.join("master.img"), &parts), trees)
}

/// `TYPE`, `UUID`, `LABEL` and `VERSION` of the file system in a file (`blkid -p`).
pub fn identity(file: &Path) -> BTreeMap<String, String> {
    crate::disk::blkid(file)
}

/// Asserts that disk file `target` holds what `master` (a disk built here) holds, without
/// root: the GPT verified by `sgdisk -v`, the same partitions, and per partition the same
/// identity (`blkid -p`), ext file systems `e2fsck -fn` clean with the same `rdump` tree,
/// FAT `fsck.vfat -n` clean with the same files, and swap identity kept.
pub fn assert_restored_files(master: &Path, target: &Path) {
    let v = String::from_utf8_lossy(&run(tool("sgdisk").arg("-v").arg(target)).stdout).to_string();
    assert!(
        v.contains("No problems found"),
        "sgdisk -v {}: {v}",
        target.display()
    );
    let (m, t) = (extents(master), extents(target));
    assert_eq!(m.len(), t.len(), "{}: other partitions", target.display());
    let scratch = tempfile::tempdir().expect("tempdir");
    for (n, (me, te)) in (1..).zip(m.iter().zip(&t)) {
        let (mf, tf) = (
            scratch.path().join(format!("m{n}")),
            scratch.path().join(format!("t{n}")),
        );
        extract(master, *me, &mf);
        extract(target, *te, &tf);
        let (mid, tid) = (identity(&mf), identity(&tf));
        assert_eq!(mid, tid, "partition {n}: identity differs");
        match mid.get("TYPE").map(String::as_str) {
            Some("ext4" | "ext3" | "ext2") => {
                e2fsck_clean(&tf);
                let (a, b) = (ext_tree(&mf), ext_tree(&tf));
                assert!(a.len() >= 3, "master partition {n} looks empty");
                assert_eq!(a, b, "partition {n}: trees differ");
            }
            Some("vfat") => {
                fsck_vfat_clean(&tf);
                let (a, b) = (fat_files(&mf), fat_files(&tf));
                assert!(!a.is_empty(), "master partition {n} looks empty");
                assert_eq!(a, b, "partition {n}: FAT files differ");
            }
            Some("swap") => {}
            other => panic!("partition {n}: unexpected type {other:?}"),
        }
        std::fs::remove_file(&mf).ok();
        std::fs::remove_file(&tf).ok();
    }
}
