//! A failed capture leaves nothing behind and says what failed, once (issue 10, item 6).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a capture that must fail; returns its stderr.
fn capture_fails(disk: &Path, out: &Path) -> String {
    let o = imgtool()
        .args(["capture", "-q"])
        .arg(disk)
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "capture should fail: {err}");
    assert!(
        !out.exists(),
        "{} exists after a failed capture",
        out.display()
    );
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    assert!(
        !partial.exists(),
        "{} left behind by a failed capture ({err})",
        partial.display()
    );
    err
}

#[test]
fn a_table_past_the_disk_end_is_named_and_nothing_is_left_behind() {
    skip_unless_root!("loop devices");
    let work = tempfile::tempdir().unwrap();
    // The tables still describe 256 MiB; the files now end inside the last partition.
    for (kind, needles) in [
        // GPT: the header's usable area already does not fit the disk.
        (
            "gpt",
            ["GPT header", "do not fit the disk (409600 sectors)"],
        ),
        // MBR: only the partition says where it ends.
        ("mbr", ["partition 6", "past the end of the disk"]),
    ] {
        let disk = work.path().join(format!("truncated-{kind}.img"));
        std::fs::copy(fixture(kind), &disk).unwrap();
        run(Command::new("truncate").args(["-s", "200M"]).arg(&disk));
        let err = capture_fails(&disk, &work.path().join(format!("img-{kind}")));
        for n in needles {
            assert!(err.contains(n), "{kind}: {n:?} not in: {err}");
        }
    }
}

/// A tmpfs of a few MiB, unmounted on drop.
struct SmallFs(PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_reported_once_and_nothing_is_left_behind() {
    skip_unless_root!("loop devices");
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2M", "tmpfs"])
        .arg(&mnt));
    let fs = SmallFs(mnt.clone());
    let err = capture_fails(&fixture("gpt"), &mnt.join("img"));
    assert!(err.contains("(os error 28)"), "{err}");
    assert_eq!(
        err.matches("(os error 28)").count(),
        1,
        "the cause is repeated: {err}"
    );
    drop(fs);
}

#[test]
fn a_table_that_restore_would_refuse_is_refused_at_capture() {
    skip_unless_root!("loop devices");
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("overlap.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // Two partitions sharing sectors 8192..10239: sgdisk refuses to make that, so the
    // second entry's start is edited in place and both CRCs are recomputed.
    run(Command::new("sgdisk")
        .args(["-n", "1:2048:10239", "-n", "2:12288:20479"])
        .arg(&disk));
    let mut bytes = std::fs::read(&disk).unwrap();
    // Entry 2 starts at LBA 2 + 128 bytes; its first LBA is at offset 32 in the entry.
    let e2 = 2 * 512 + 128;
    bytes[e2 + 32..e2 + 40].copy_from_slice(&8192u64.to_le_bytes());
    // Fix both CRCs: entries array, then header.
    let crc = crc32(&bytes[1024..1024 + 128 * 128]);
    bytes[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
    bytes[512 + 16..512 + 20].fill(0);
    let hcrc = crc32(&bytes[512..512 + 92]);
    bytes[512 + 16..512 + 20].copy_from_slice(&hcrc.to_le_bytes());
    std::fs::write(&disk, &bytes).unwrap();
    let err = capture_fails(&disk, &work.path().join("img"));
    assert!(
        err.contains("cannot be captured") && err.contains("overlap"),
        "{err}"
    );
}

fn crc32(b: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
