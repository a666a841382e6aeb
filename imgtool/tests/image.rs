//! Properties of the image itself: free-block garbage is not stored, captures are
//! deterministic, and damaged images are named precisely by `verify`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn partition_bytes(img: &Path, n: u32) -> Vec<u8> {
    let l = Loop::attach(img, true);
    std::fs::read(l.part(n)).unwrap()
}

#[test]
fn garbage_in_free_blocks_is_not_in_the_image() {
    require_root();
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let ours: u64 = std::fs::read_dir(&image)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    // Reference: every partition compressed whole with zstd at the same level.
    let mut full = 0u64;
    for n in 1..=4 {
        let data = partition_bytes(&master, n);
        full += zstd::bulk::compress(&data, 3).unwrap().len() as u64;
    }
    // make-fixture.sh writes GARBAGE_MB (24 MiB) of random data, then deletes it, in each ext4.
    let garbage = 2 * (24u64 << 20);
    assert!(
        ours + garbage <= full,
        "image is {ours} bytes, full-partition zstd {full}: the {garbage} bytes of garbage were stored"
    );
}

#[test]
fn two_captures_have_the_same_id_and_bytes() {
    require_root();
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
    require_root();
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(image.join("manifest")).unwrap()).unwrap();
    let p2 = m["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "p2")
        .unwrap();
    let c = &p2["chunks"][3];
    let pos = c["payload_offset"].as_u64().unwrap() + c["compressed_length"].as_u64().unwrap() / 2;
    let path = image.join("p2.zst");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[pos as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
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
