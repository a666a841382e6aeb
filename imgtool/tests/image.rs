//! Properties of the image itself: free-block garbage is not stored, captures are
//! deterministic, and damaged images are named precisely by `verify`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// Bytes an ext file system uses, from its superblock (dumpe2fs).
fn ext_used_bytes(dev: &Path) -> u64 {
    let out = stdout(Command::new("dumpe2fs").arg("-h").arg(dev));
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("dumpe2fs lacks {name}"))
    };
    (field("Block count:") - field("Free blocks:")) * field("Block size:")
}

#[test]
fn garbage_in_free_blocks_is_not_in_the_image() {
    skip_unless_root!("loop devices");
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(image.join("manifest")).unwrap()).unwrap();
    let region = |n: u32| {
        m["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["number"] == n)
            .unwrap()
            .clone()
    };
    // make-fixture.sh writes GARBAGE_MB (24 MiB) of random data, then deletes it, in each
    // ext4 (partitions 2 and 4).
    let garbage_each = 24u64 << 20;
    let l = Loop::attach(&master, true);

    // 1. Directly: the raw bytes stored for each ext4 are what the file system uses (plus
    //    gaps under 16 KiB that chunking merges), not used + garbage.
    for n in [2, 4] {
        let stored = region(n)["used_bytes"].as_u64().unwrap();
        let used = ext_used_bytes(&l.part(n));
        assert!(
            stored <= used + used / 50 + (1 << 20),
            "partition {n}: {stored} raw bytes stored, the fs uses {used}"
        );
        assert!(
            stored < used + garbage_each / 2,
            "partition {n} holds the garbage"
        );
    }

    // 2. As the acceptance states it: the partitions' payloads are smaller than `zstd -3`
    //    of the whole partitions by at least the garbage.
    let mut ours = 0u64;
    let mut full = 0u64;
    for n in 1..=4u32 {
        ours += std::fs::metadata(image.join(format!("p{n}.zst")))
            .unwrap()
            .len();
        let out = stdout(
            Command::new("sh")
                .arg("-c")
                .arg(format!("zstd -3 -c < {} | wc -c", l.part(n).display())),
        );
        full += out.trim().parse::<u64>().unwrap();
    }
    let garbage = 2 * garbage_each;
    assert!(
        ours + garbage <= full,
        "payloads are {ours} bytes, zstd -3 of the partitions {full}: less than the {garbage} bytes of garbage saved"
    );
}

#[test]
fn two_captures_have_the_same_id_and_bytes() {
    skip_unless_root!("loop devices");
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let id = |dir: &Path, threads: &str| {
        let out = stdout(
            imgtool()
                .args(["capture", "--json", "--threads", threads])
                .arg(&master)
                .arg(dir),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["image_id"].as_str().unwrap().to_string()
    };
    let (ia, ib) = (id(&a, "2"), id(&b, "1"));
    assert_eq!(ia, ib);
    for f in [
        "manifest", "layout", "head.zst", "p1.zst", "p2.zst", "p3.zst", "p4.zst",
    ] {
        assert_eq!(
            sha256_file(&a.join(f)),
            sha256_file(&b.join(f)),
            "{f} differs between captures"
        );
    }
    // And the id is the sha256 of the canonical manifest, which inspect reports.
    let insp: serde_json::Value =
        serde_json::from_str(&stdout(imgtool().args(["inspect", "--json"]).arg(&a))).unwrap();
    assert_eq!(insp["image_id"], ia);
}

#[test]
fn verify_names_the_damaged_chunk() {
    skip_unless_root!("loop devices");
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let c = corrupt_chunk(&image, "p2", 3);
    let out = Command::new(env!("CARGO_BIN_EXE_imgtool"))
        .arg("verify")
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("partition p2, chunk 3"),
        "error does not name the chunk: {err}"
    );
    assert!(
        err.contains(&format!("byte offset {}", c["offset"])),
        "error lacks the offset: {err}"
    );
}
