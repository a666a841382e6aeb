//! Foreign signatures on a target disk: real file systems, volume managers and
//! encryption headers made by their own tools ([`plant`]) on a partition device, and what
//! `blkid -p` and `wipefs -n` then see there ([`probe`]). Restore tests put these under a
//! partition before cloning over it and check that only the image's type is left.
//! Needs root (block devices).

use crate::disk::run;
use crate::root::tool;
use std::path::Path;

/// What a target partition held before the clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// `mkfs.btrfs` (`--mixed` below 114 MiB, its minimum otherwise).
    Btrfs,
    /// `mkfs.xfs` (its 300 MB minimum lifted the way xfstests do).
    Xfs,
    /// `pvcreate`: an LVM2 physical volume.
    Lvm,
    /// `cryptsetup luksFormat --type luks2` with a key file (fast PBKDF: the header is
    /// what counts, not its strength) and a 4 MiB metadata area: the secondary header then
    /// sits at 4 MiB, outside the first MiB, where `blkid` still finds it when the primary
    /// is gone (a 1 MiB keyslot area keeps the header, 9 MiB, inside a 16 MiB partition).
    Luks,
}

impl Foreign {
    /// The `TYPE` `blkid` reports for it.
    pub fn blkid_type(self) -> &'static str {
        match self {
            Foreign::Btrfs => "btrfs",
            Foreign::Xfs => "xfs",
            Foreign::Lvm => "LVM2_member",
            Foreign::Luks => "crypto_LUKS",
        }
    }
}

/// Makes `kind` on the partition device `dev` with its own tool (which writes nothing
/// outside `dev`), and checks that `blkid -p` then sees exactly it.
pub fn plant(kind: Foreign, dev: &Path) {
    match kind {
        Foreign::Btrfs => {
            let size = crate::disk::stdout(tool("blockdev").arg("--getsize64").arg(dev));
            let small = size.trim().parse::<u64>().unwrap_or(0) < 114_294_784;
            let mut c = tool("mkfs.btrfs");
            c.args(["-q", "-f"]);
            if small {
                c.arg("--mixed");
            }
            run(c.arg(dev));
        }
        Foreign::Xfs => {
            run(tool("mkfs.xfs")
                .args(["-q", "-f"])
                .env("TEST_DIR", "1")
                .env("TEST_DEV", "1")
                .env("QA_CHECK_FS", "1")
                .arg(dev));
        }
        Foreign::Lvm => {
            run(tool("pvcreate")
                .args([
                    "-q",
                    "-ff",
                    "-y",
                    "--config",
                    "devices { use_devicesfile = 0 }",
                ])
                .env("LVM_SUPPRESS_FD_WARNINGS", "1")
                .arg(dev));
        }
        Foreign::Luks => {
            let key = tempfile::NamedTempFile::new().expect("key file");
            std::fs::write(key.path(), b"not a secret: a test key").expect("write key");
            run(tool("cryptsetup")
                .args(["luksFormat", "--batch-mode", "--type", "luks2"])
                .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
                .args(["--luks2-metadata-size", "4m", "--luks2-keyslots-size", "1m"])
                .arg("--key-file")
                .arg(key.path())
                .arg(dev));
        }
    }
    let seen = probe(dev);
    assert_eq!(
        seen.blkid,
        Ok(kind.blkid_type().to_string()),
        "planting {kind:?} on {}: {seen:?}",
        dev.display()
    );
}

/// What the probers see on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `blkid -p`'s `TYPE`, or why it named none (its exit code and message: "ambivalent
    /// result" when two signatures compete).
    pub blkid: Result<String, String>,
    /// Every signature type `wipefs -n` finds (each distinct type once, sorted).
    pub wipefs: Vec<String>,
}

/// Probes `dev` with `blkid -p` (low-level, no cache) and `wipefs -n` (every magic it
/// knows, also the ones blkid's verdict hides).
pub fn probe(dev: &Path) -> Seen {
    let out = tool("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .output()
        .expect("run blkid");
    let text = String::from_utf8_lossy(&out.stdout);
    let ty = text
        .lines()
        .find_map(|l| l.strip_prefix("TYPE="))
        .map(str::to_string);
    let blkid = match (out.status.success(), ty) {
        (true, Some(t)) => Ok(t),
        _ => Err(format!(
            "blkid -p {}: {} {}{}",
            dev.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            text.trim()
        )),
    };
    let out = tool("wipefs")
        .args(["-n", "-p", "-i"])
        .arg(dev)
        .output()
        .expect("run wipefs");
    // -p: "offset,uuid,label,type" per line (the header line starts with '#').
    let mut wipefs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next())
        .map(str::to_string)
        .collect();
    wipefs.sort();
    wipefs.dedup();
    Seen { blkid, wipefs }
}
