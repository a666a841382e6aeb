//! An MBR image on a disk past 2 TiB (issue 12, item 4): MBR addresses 2^32 sectors, so
//! the grow partition would silently stop at 2 TiB. Restore refuses before any write,
//! naming the limit, the disk's size and the ways out; `--mbr-cap` accepts the cap and
//! the summary says so. The targets are sparse files (3 TiB, nothing allocated).

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const TIB: u64 = 1 << 40;

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// Bytes the file really holds on disk.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn mbr_image_on_a_3_tib_disk_is_refused_before_any_write() {
    skip_unless_root!("the mbr fixture is built through loop devices");
    let c = captured("mbr");
    let node = c.dir.join("node.img");
    sparse(&node, 3 * TIB);
    for dry in [true, false] {
        let mut cmd = imgtool();
        cmd.args(["restore", "-q"]);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.arg(&c.image).arg(&node).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "dry={dry}: {err}");
        for needle in [
            "MBR",
            "2^32 sectors",
            "2.0 TiB",
            "3.0 TiB",
            "GPT",
            "--mbr-cap",
        ] {
            assert!(err.contains(needle), "dry={dry}: {needle:?} missing: {err}");
        }
    }
    assert_eq!(allocated(&node), 0, "nothing may be written when refused");
    assert_eq!(std::fs::metadata(&node).unwrap().len(), 3 * TIB);
}

#[test]
fn mbr_cap_writes_a_table_that_ends_at_the_last_mbr_sector() {
    skip_unless_root!("the mbr fixture is built through loop devices");
    let c = captured("mbr");
    let node = c.dir.join("node.img");
    sparse(&node, 3 * TIB);
    // Only the first partition's data (growing the last file system to 2 TiB would write
    // gigabytes of metadata); the table is written whole, capped.
    let out = run(imgtool()
        .args(["restore", "--json", "-q", "--mbr-cap", "--partitions", "1"])
        .arg(&c.image)
        .arg(&node));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["plan"]["mbr_capped"], TIB, "{rep}");
    let text = stdout(
        imgtool()
            .args(["restore", "--dry-run", "--mbr-cap"])
            .arg(&c.image)
            .arg(&node),
    );
    assert!(
        text.contains("capped") && text.contains("1.0 TiB"),
        "{text}"
    );
    // The table, as sfdisk reads it: the extended partition and the grown logical one end
    // at sector 2^32 - 1, the last one MBR can address; the others as captured.
    let t: serde_json::Value =
        serde_json::from_slice(&run(tool("sfdisk").arg("--json").arg(&node)).stdout).unwrap();
    let parts = t["partitiontable"]["partitions"].as_array().unwrap();
    let end = |p: &serde_json::Value| p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap();
    let last = parts.iter().map(end).max().unwrap();
    assert_eq!(last, 1 << 32, "{t}");
    let master: serde_json::Value =
        serde_json::from_slice(&run(tool("sfdisk").arg("--json").arg(&c.master)).stdout).unwrap();
    let m = &master["partitiontable"]["partitions"];
    for (i, p) in parts.iter().enumerate().filter(|(_, p)| end(p) != 1 << 32) {
        for k in ["start", "size", "type"] {
            assert_eq!(p[k], m[i][k], "{t}");
        }
    }
    // A sane amount was written to the sparse file (the head and partition 1's blocks).
    assert!(allocated(&node) < 256 << 20, "{}", allocated(&node));
}
