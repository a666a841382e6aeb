//! An XFS master disk (root: loop device, mount): a GPT disk file with one XFS partition
//! made by `mkfs.xfs` with its defaults, holding a tree with modes, owners, xattrs,
//! symlinks, hard links, a FIFO and nanosecond times, plus kept bulk data, after bulk
//! data was written and deleted (its blocks hold incompressible garbage a capture must
//! skip). Also what the tests read back: `xfs_repair -n`, the geometry by `xfs_db`.

use crate::disk::{run, snapshot, stdout, Loop};
use crate::root::tool;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A built master and what it held before it was unmounted.
pub struct XfsMaster {
    pub path: PathBuf,
    /// The mounted tree, inode by inode ([`snapshot`]).
    pub tree: BTreeMap<String, String>,
    /// `df`'s used bytes before unmount (statfs: data section minus the internal log
    /// minus free blocks).
    pub df_used: u64,
    /// XFS's own count after unmount: `(dblocks - fdblocks) × blocksize` from the
    /// superblock (`xfs_db`), i.e. df's figure plus the internal log.
    pub xfs_used: u64,
    /// Bytes of the data section.
    pub fs_size: u64,
}

/// Builds the master at `path`: one XFS partition of `part_mib` MiB at 1 MiB, `deleted_mib`
/// MiB written, synced and deleted, then `keep_mib` MiB of data (half random, half text)
/// and the sample tree with owners, xattrs and times kept.
pub fn xfs_master(path: &Path, part_mib: u64, keep_mib: u64, deleted_mib: u64) -> XfsMaster {
    std::fs::File::create(path)
        .and_then(|f| f.set_len((part_mib + 2) * MIB))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    run(tool("sgdisk")
        .args(["-o", "-n", &format!("1:2048:+{part_mib}M")])
        .args(["-t", "1:8300", "-c", "1:root"])
        .arg(path));
    let mut l = Loop::attach(path, false);
    let part = l.part(1);
    run(tool("mkfs.xfs")
        .args(["-q", "-f", "-L", "xfsroot"])
        .arg(&part));
    let m = l.mount_opts(1, "xfs", "rw");
    write_bulk(&m.join("deleted"), deleted_mib, true);
    run(Command::new("sync").arg("-f").arg(&m));
    std::fs::remove_dir_all(m.join("deleted")).expect("deleting the bulk data");
    write_bulk(&m.join("data"), keep_mib / 2, true);
    write_bulk(&m.join("text"), keep_mib - keep_mib / 2, false);
    crate::files::sample_tree(&m);
    identities(&m);
    run(Command::new("sync").arg("-f").arg(&m));
    let tree = snapshot(&m);
    let df_used = stdout(Command::new("df").args(["-B1", "--output=used"]).arg(&m))
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df used");
    drop(l);
    let l = Loop::attach(path, true);
    let g = geometry(&l.part(1));
    drop(l);
    let bs = g["blocksize"];
    XfsMaster {
        path: path.to_path_buf(),
        tree,
        df_used,
        xfs_used: (g["dblocks"] - g["fdblocks"]) * bs,
        fs_size: g["dblocks"] * bs,
    }
}

/// `mib` MiB in 4 MiB files under `dir`: random bytes, or repeated text.
pub(crate) fn write_bulk(dir: &Path, mib: u64, random: bool) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut rnd = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    let text: Vec<u8> = b"xfs master line of text for the compressor\n"
        .iter()
        .copied()
        .cycle()
        .take(MIB as usize)
        .collect();
    let mut left = mib;
    let mut i = 0;
    while left > 0 {
        let n = left.min(4);
        let mut f = std::fs::File::create(dir.join(format!("f{i}"))).expect("create");
        for _ in 0..n {
            if random {
                std::io::copy(&mut (&mut rnd).take_mib(), &mut f).expect("write");
            } else {
                f.write_all(&text).expect("write");
            }
        }
        left -= n;
        i += 1;
    }
}

trait TakeMib: std::io::Read + Sized {
    fn take_mib(self) -> std::io::Take<Self> {
        self.take(MIB)
    }
}
impl<R: std::io::Read> TakeMib for R {}

/// Owners, xattrs and nanosecond times on parts of the tree (times last, directories
/// after their contents).
pub(crate) fn identities(m: &Path) {
    use std::os::unix::fs::{chown, lchown};
    chown(m.join("home/alice"), Some(1000), Some(1000)).expect("chown");
    chown(m.join("home/alice/note.txt"), Some(1000), Some(100)).expect("chown");
    chown(m.join("srv/big.log"), Some(1234), Some(5678)).expect("chown");
    lchown(m.join("srv/note-link"), Some(7), Some(8)).expect("lchown");
    xattr::set(m.join("srv/big.log"), "user.origin", b"xfs master").expect("xattr");
    xattr::set(m.join("home/alice"), "user.empty", b"").expect("xattr");
    xattr::set(m.join("data/f0"), "trusted.netboot", &[0u8, 1, 2, 255]).expect("xattr");
    for (i, p) in [
        "srv/big.log",
        "home/alice/note.txt",
        "data/f0",
        "srv/note-link",
        "srv",
        "home/alice",
    ]
    .iter()
    .enumerate()
    {
        run(Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(format!("@1600000000.{:09}", 123_456_789 + i * 111))
            .arg(m.join(p)));
    }
}

/// The superblock's numeric fields (`blocksize`, `dblocks`, `fdblocks`, `agcount`, …)
/// of the XFS on `dev`, by `xfs_db -r`.
pub fn geometry(dev: &Path) -> BTreeMap<String, u64> {
    let out = stdout(
        tool("xfs_db")
            .args([
                "-r",
                "-c",
                "sb 0",
                "-c",
                "p blocksize dblocks fdblocks agcount agblocks",
            ])
            .arg(dev),
    );
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Asserts `xfs_repair -n` finds nothing on `dev` (exit 0), printing its report if not.
pub fn assert_repair_clean(dev: &Path) {
    let out = tool("xfs_repair")
        .arg("-n")
        .arg(dev)
        .output()
        .expect("xfs_repair");
    assert!(
        out.status.success(),
        "xfs_repair -n {}: {}\n{}",
        dev.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
