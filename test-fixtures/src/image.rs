//! Images for tests: capture a disk into an image root, damage one chunk's frame, tamper
//! with a manifest so that only a signature can tell, and the payload bounds that say
//! "nothing restarted from zero".

use std::path::Path;

/// Region `name` of the image in `image_dir` as its manifest records it (loaded and
/// checked by imgtool itself): its `used_bytes` and `filesystem`.
pub fn region_used(image_dir: &Path, name: &str) -> (u64, String) {
    let img = imgtool::manifest::Image::open(image_dir).expect("loading the image");
    let r = img
        .manifest
        .regions
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no region {name} in {}", image_dir.display()));
    (r.used_bytes, r.filesystem.clone())
}

/// An image's payload bytes and its largest frame: the bounds of "nothing restarted
/// from zero" (bytes fetched ≤ payload + one frame per interruption).
pub fn payload_and_largest_frame(image_dir: &Path) -> (u64, u64) {
    let img = imgtool::manifest::Image::open(image_dir).expect("loading the image");
    let frames = || {
        img.manifest
            .regions
            .iter()
            .flat_map(|r| r.chunks.iter())
            .map(|c| c.compressed_length)
    };
    (frames().sum(), frames().max().unwrap_or(0))
}

/// Flips one bit in the middle of chunk `chunk`'s frame of region `region` (`p2`, …) of
/// the image in `image_dir`; returns the chunk's manifest entry.
pub fn corrupt_chunk(image_dir: &Path, region: &str, chunk: usize) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(image_dir.join("manifest")).expect("manifest"),
    )
    .expect("manifest JSON");
    let r = m["regions"]
        .as_array()
        .and_then(|v| v.iter().find(|r| r["name"] == region))
        .unwrap_or_else(|| panic!("no region {region}"))
        .clone();
    let c = r["chunks"][chunk].clone();
    let pos = c["payload_offset"].as_u64().expect("payload_offset")
        + c["compressed_length"].as_u64().expect("compressed_length") / 2;
    let path = image_dir.join(r["payload"].as_str().expect("payload"));
    let mut bytes = std::fs::read(&path).expect("payload");
    bytes[pos as usize] ^= 0x10;
    std::fs::write(&path, bytes).expect("payload");
    c
}

/// Captures `master` into `images/<group>` (an image root, as `imgtool serve` serves it).
pub fn capture_into(master: &Path, images: &Path, group: &str) {
    std::fs::create_dir_all(images).expect("image root");
    let disk = imgtool::disk::Disk::open_ro(master).expect("opening the master");
    imgtool::capture::capture(
        &disk,
        master,
        &images.join(group),
        &Default::default(),
        &imgtool::progress::Progress::hidden(),
    )
    .expect("capture");
}

/// Changes the manifest of the image in `dir` (the last region's label) and recomputes its
/// id, so every integrity check passes and only a signature can tell; returns the new id.
pub fn tamper_and_rehash(dir: &Path) -> String {
    let p = dir.join("manifest");
    let mut m: imgtool::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(&p).expect("reading the manifest"))
            .expect("a manifest");
    if let Some(r) = m.regions.last_mut() {
        r.label = Some("tampered".into());
    }
    m.image_id = m.compute_id();
    std::fs::write(&p, m.to_json()).expect("writing the manifest");
    m.image_id
}
