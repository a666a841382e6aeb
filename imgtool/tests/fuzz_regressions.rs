//! Replays every kept fuzz input (fuzz/corpus/<target>/ seeds and the crashes found,
//! fuzz/regressions/<target>/) through the same functions the fuzz targets call, so each
//! stays a regression test in the ordinary `cargo test` run, without the fuzzer. A hang
//! shows as this test never finishing; a panic or an abort fails it.

use imgtool::disk::MemDisk;
use imgtool::layout::read_layout;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut v = vec![];
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        v.extend(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !p.ends_with("README.md")),
        );
    }
    v.sort();
    v
}

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let files = inputs(target);
    for p in &files {
        let data = std::fs::read(p).unwrap();
        eprintln!("{}", p.display());
        f(&data);
    }
    files.len()
}

#[test]
fn gpt_mbr_inputs() {
    assert!(replay("gpt_mbr", imgtool::fuzzing::gpt_mbr) >= 7);
}

#[test]
fn ext_probe_inputs() {
    assert!(replay("ext_probe", imgtool::fuzzing::ext_probe) >= 8);
}

#[test]
fn fat_probe_inputs() {
    assert!(replay("fat_probe", imgtool::fuzzing::fat_probe) >= 4);
}

#[test]
fn xfs_probe_inputs() {
    assert!(replay("xfs_probe", imgtool::fuzzing::xfs_probe) >= 2);
}

#[test]
fn lvm_metadata_inputs() {
    assert!(replay("lvm_metadata", imgtool::fuzzing::lvm_metadata) >= 3);
}

#[test]
fn btrfs_probe_inputs() {
    assert!(replay("btrfs_probe", imgtool::fuzzing::btrfs_probe) >= 2);
}

#[test]
fn image_load_inputs() {
    assert!(replay("image_load", imgtool::fuzzing::image_load) >= 4);
}

#[test]
fn range_answer_inputs() {
    assert!(replay("range_answer", imgtool::fuzzing::range_answer) >= 3);
}

/// The captured seeds load completely from the fuzz target's in-memory source, and a
/// mutation of one chunk is caught by the chunk checks. Before, that source said it was
/// local yet knew no payload length, so every load stopped at "payload file missing" on
/// the first region and the fuzzer never reached the chunk arithmetic.
#[test]
fn image_load_seeds_reach_the_chunk_checks() {
    use imgtool::fuzzing::{mem_image, Payloads};
    use imgtool::manifest::Manifest;
    for name in ["capture-d1", "capture-d2", "fixture-gpt", "fixture-mbr"] {
        let data = file("corpus", "image_load", name);
        let i = data.iter().position(|b| *b == 0).unwrap();
        let (manifest, layout) = (&data[..i], &data[i + 1..]);
        for how in [Payloads::Remote, Payloads::LocalAsManifest] {
            let img = mem_image(manifest, layout, how)
                .unwrap_or_else(|e| panic!("{name} ({how:?}): {e}"));
            assert!(!img.manifest.regions.is_empty(), "{name}");
        }
    }
    // The real capture's root file system: chunk 1 moved 4 KiB on, so it overlaps the
    // next chunk's first extent; the error names the region and the chunk.
    let data = file("corpus", "image_load", "fixture-gpt");
    let i = data.iter().position(|b| *b == 0).unwrap();
    let (manifest, layout) = (&data[..i], &data[i + 1..]);
    let mut m: Manifest = serde_json::from_slice(manifest).unwrap();
    let r = m.regions.iter_mut().find(|r| r.name == "p2").unwrap();
    assert!(r.chunks.len() > 2, "the seed's p2 has several chunks");
    let was = r.chunks[1].offset;
    let moved = r.chunks[2].offset + 4096;
    let c = &mut r.chunks[1];
    c.offset = moved;
    if let Some(e) = c.extents.first_mut() {
        e[0] = moved;
    }
    m.image_id = m.compute_id();
    for how in [Payloads::Remote, Payloads::LocalAsManifest] {
        let e = mem_image(m.to_json().as_bytes(), layout, how)
            .err()
            .unwrap_or_else(|| panic!("chunk moved from {was}: accepted ({how:?})"))
            .to_string();
        assert!(!e.contains("payload file missing"), "{how:?}: {e}");
        assert!(e.contains("p2") && e.contains("chunk 1"), "{how:?}: {e}");
    }
}

fn file(kind: &str, target: &str, name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target)
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The seeds are what they claim to be (a seed that no longer parses would leave the
/// fuzzer starting from noise), and the reproducers fail with a named error.
#[test]
fn seeds_parse_and_reproducers_are_refused() {
    let disk = |name: &str, kind: &str| MemDisk::from_vec(file(kind, "gpt_mbr", name), 512);
    let gpt = read_layout(&disk("gpt-64k", "corpus")).unwrap().unwrap();
    assert_eq!(gpt.partitions.len(), 2);
    let mbr = read_layout(&disk("mbr-ext-logicals-64k", "corpus"))
        .unwrap()
        .unwrap();
    let numbers: Vec<u32> = mbr.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 5, 6, 7]);

    let e = read_layout(&disk("d5-self-linked-empty-ebr", "regressions")).unwrap_err();
    assert!(e.to_string().contains("EBR chain loops"), "{e}");
    let e = read_layout(&disk("d6-gpt-4096-entries-of-4gib", "regressions")).unwrap_err();
    assert!(e.to_string().contains("entry size 4294967295"), "{e}");
    let e = read_layout(&disk("d12-gpt-entry-0-to-u64-max", "regressions")).unwrap_err();
    assert!(e.to_string().contains("GPT entry 1: sectors 0..="), "{e}");

    // ext and FAT seeds: `[shift] head`, the partition `32 KiB << shift` (0: the head).
    let part = |target: &str, name: &str, kind: &str, f: fn(&imgtool::fs::PartView) -> _| {
        let data = file(kind, target, name);
        let size = match data[0] {
            0 => data.len() as u64 - 1,
            s => (32u64 << 10) << s,
        };
        let mut head = data[1..].to_vec();
        head.resize(size as usize, 0);
        let d = MemDisk::from_vec(head, 512);
        let view = imgtool::fs::PartView {
            disk: &d,
            start: 0,
            size,
        };
        f(&view)
    };
    for name in [
        "ext2-64k",
        "ext4-64k",
        "ext4-64bit-16m",
        "ext4-metabg-16m",
        "ext4-4k-64m",
        "ext4-sparse2-16m",
    ] {
        let info = part("ext_probe", name, "corpus", imgtool::fs::ext::probe)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not ext"));
        assert!(info.kind.starts_with("ext"), "{name}: {}", info.kind);
    }
    for name in ["fat12-64k", "fat16-8m", "fat32-64m"] {
        let info = part("fat_probe", name, "corpus", imgtool::fs::fat::probe)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not FAT"));
        assert_eq!(info.kind, "vfat");
    }
    for (name, why) in [
        ("d12-ext64-desc-size-0", "64-bit group descriptor size 0"),
        ("d12-ext64-blocks-wrap-140tb", "larger than its partition"),
    ] {
        let e = part("ext_probe", name, "regressions", imgtool::fs::ext::probe).unwrap_err();
        assert!(e.to_string().contains(why), "{name}: {e}");
    }
}

#[test]
fn upload_manifest_inputs() {
    assert!(replay("upload_manifest", imgtool::fuzzing::upload_manifest) >= 1);
    // The seed is filled: every hash it leaves is one the target "computed".
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/upload_manifest/left_to_server"),
    )
    .unwrap();
    let sum_of = |_: imgtool::upload::wire::RegionName, i: usize| Some(format!("{i:064x}"));
    let (filled, n) = imgtool::upload::session::fill_raw_sums(&seed, sum_of)
        .unwrap()
        .unwrap();
    let m: imgtool::manifest::Manifest = serde_json::from_slice(&filled).unwrap();
    assert_eq!(m.image_id, m.compute_id());
    assert_eq!(n, m.regions.iter().map(|r| r.chunks.len()).sum::<usize>());
}

#[test]
fn upload_wire_inputs() {
    assert!(replay("upload_wire", imgtool::fuzzing::upload_wire) >= 5);
}

/// The frame seed is a frame the server takes: the fuzzer starts inside the decoder and
/// both hash checks, not at the first header refusal.
#[test]
fn the_upload_frame_seed_passes_the_servers_frame_check() {
    use imgtool::upload::{session, wire};
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/upload_wire/zstd_frame"),
    )
    .unwrap();
    let nul = data.iter().position(|b| *b == 0).unwrap();
    let text = String::from_utf8(data[..nul].to_vec()).unwrap();
    let headers: Vec<(&str, &str)> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .collect();
    let get = |k: &str| headers.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let h = wire::FrameHeaders::parse(get, 256 << 10).unwrap();
    let raw_sum = session::verify_frame(&data[nul + 1..], &h, "seed");
    assert_eq!(raw_sum.as_ref().ok(), h.raw_sha256.as_ref(), "{raw_sum:?}");
    let first = text.lines().next().unwrap().split_once(' ').unwrap();
    assert!(wire::parse_route(first.0, first.1).is_ok());
}
