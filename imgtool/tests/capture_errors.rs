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
fn a_partition_past_the_disk_end_is_named_and_nothing_is_left_behind() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("truncated.img");
    std::fs::copy(fixture("gpt"), &disk).unwrap();
    // The table still describes 256 MiB; the file now ends inside partition 4.
    run(Command::new("truncate").args(["-s", "200M"]).arg(&disk));
    let err = capture_fails(&disk, &work.path().join("img"));
    assert!(
        err.contains("partition 4") && err.contains("past the end of the disk"),
        "{err}"
    );
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
    require_root();
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
