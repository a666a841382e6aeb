//! The probe on a synthetic btrfs ([`super::synth`]): exact on the sound image, and for
//! each kind of damage a fallback to the non-zero blocks (a superset), never a panic.

use super::synth::{self, CHUNK_LEAF, EXTENT_LEAF, NODE, ROOT_LEAF, SB_AT};
use super::*;
use crate::disk::MemDisk;

fn run(b: Vec<u8>) -> FsInfo {
    let disk = MemDisk::from_vec(b.clone(), 512);
    let part = PartView {
        disk: &disk,
        start: 0,
        size: b.len() as u64,
    };
    let info = probe(&part).unwrap().expect("btrfs");
    let covered = |o: u64, l: u64| info.used.iter().any(|&(a, n)| a <= o && o + l <= a + n);
    // Whatever the probe says, it covers every byte the file system uses; a fallback
    // (restore zeroes the rest) covers every non-zero 4 KiB block.
    if info.fill == Fill::Keep {
        for &(o, l) in &synth::USED {
            assert!(covered(o, l), "{o}+{l} not covered by {:?}", info.used);
        }
    } else {
        for (i, blk) in b.chunks(4096).enumerate() {
            let o = i as u64 * 4096;
            assert!(
                blk.iter().all(|x| *x == 0) || covered(o, 4096),
                "{o} not covered"
            );
        }
    }
    info
}

/// Why the probe does not trust the image (the message it prints).
fn why(b: &[u8]) -> String {
    let disk = MemDisk::from_vec(b.to_vec(), 512);
    let part = PartView {
        disk: &disk,
        start: 0,
        size: b.len() as u64,
    };
    let (_, sb) = sb::read(&part).unwrap().expect("btrfs");
    match sb.and_then(|sb| used(&part, &sb)) {
        Ok(u) => panic!("no fallback: {u:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the probe fell back to the non-zero scan, for the reason `want`.
fn assert_fallback_for(b: Vec<u8>, want: &str) {
    let w = why(&b);
    assert!(w.contains(want), "fell back for {w:?}, not {want:?}");
    assert_fallback(&run(b));
}

/// Asserts the probe fell back to the non-zero scan.
fn assert_fallback(info: &FsInfo) {
    assert_eq!(info.fill, Fill::Zero, "{info:?}");
    assert_eq!(info.kind, super::UNPARSED);
    // The freed garbage in the data chunk is then stored too.
    let garbage = synth::USED[0].1 + (64 << 10);
    assert!(info
        .used
        .iter()
        .any(|&(o, l)| o <= garbage && garbage < o + l));
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn a_sound_image_gives_exactly_its_used_bytes() {
    let info = run(synth::image());
    assert_eq!(info.used, synth::USED.to_vec());
    assert_eq!(info.fill, Fill::Keep);
    assert_eq!(info.fs_size, synth::SIZE as u64);
    assert_eq!(info.label.as_deref(), Some("synth"));
    assert_eq!(
        info.uuid.as_deref(),
        Some("73796e74-6865-7469-632d-627472667321")
    );
}

#[test]
fn no_magic_or_a_bad_superblock_checksum_is_not_btrfs() {
    let disk = MemDisk::new(synth::SIZE, 512);
    let part = PartView {
        disk: &disk,
        start: 0,
        size: synth::SIZE as u64,
    };
    assert!(probe(&part).unwrap().is_none());
    let mut b = synth::image();
    b[SB_AT + 0x100] ^= 1;
    let disk = MemDisk::from_vec(b, 512);
    let part = PartView {
        disk: &disk,
        start: 0,
        size: synth::SIZE as u64,
    };
    assert!(probe(&part).unwrap().is_none());
}

#[test]
fn a_bad_node_checksum_falls_back() {
    let mut b = synth::image();
    b[EXTENT_LEAF + 200] ^= 0xff;
    assert_fallback_for(b, "checksum mismatch");
}

#[test]
fn a_chunk_with_a_stripe_past_the_device_falls_back() {
    let mut b = synth::image();
    let mut items = synth::chunk_items();
    items[2].1 = synth::chunk_item(1 << 20, 1, &[synth::SIZE as u64 - 4096]);
    b[CHUNK_LEAF..CHUNK_LEAF + NODE].copy_from_slice(&synth::leaf(1 << 20, 3, &items));
    synth::reseal(&mut b);
    assert_fallback_for(b, "past the device");
}

#[test]
fn a_raid_profile_or_a_second_device_falls_back() {
    let mut b = synth::image();
    let mut items = synth::chunk_items();
    items[2].1 = synth::chunk_item(1 << 20, 1 | 8, &[1 << 20]);
    b[CHUNK_LEAF..CHUNK_LEAF + NODE].copy_from_slice(&synth::leaf(1 << 20, 3, &items));
    synth::reseal(&mut b);
    assert_fallback_for(b, "profile");
    let mut b = synth::image();
    set_u64(&mut b, SB_AT + 0x88, 2);
    synth::reseal(&mut b);
    assert_fallback_for(b, "2 devices");
}

#[test]
fn a_tree_loop_falls_back() {
    // The root tree's root becomes an internal node whose child is itself.
    let mut b = synth::image();
    let mut k = 2u64.to_le_bytes().to_vec();
    k.push(132);
    k.extend_from_slice(&0u64.to_le_bytes());
    b[ROOT_LEAF..ROOT_LEAF + NODE].copy_from_slice(&synth::internal(2 << 20, 1, &[(k, 2 << 20)]));
    b[SB_AT + 0xc6] = 1;
    synth::reseal(&mut b);
    assert_fallback_for(b.clone(), "a loop");
    // The same with the level check passing: two pointers to one leaf (the extent
    // tree's), the first key of each pointer the one that leaf starts with.
    let leaf_at = (2 << 20) + 4096;
    let mut k1 = (1u64 << 20).to_le_bytes().to_vec();
    k1.push(169);
    k1.extend_from_slice(&0u64.to_le_bytes());
    let mut k2 = k1.clone();
    k2[9] = 1;
    b[ROOT_LEAF..ROOT_LEAF + NODE].copy_from_slice(&synth::internal(
        2 << 20,
        1,
        &[(k1, leaf_at), (k2, leaf_at)],
    ));
    synth::reseal(&mut b);
    assert_fallback_for(b, "reached twice");
}

#[test]
fn huge_item_counts_fall_back() {
    for (at, n) in [
        (EXTENT_LEAF, u32::MAX),
        (CHUNK_LEAF, 200),
        (ROOT_LEAF, 1 << 20),
    ] {
        let mut b = synth::image();
        set_u32(&mut b, at + 0x60, n);
        synth::reseal(&mut b);
        assert_fallback_for(b, "items");
    }
}

#[test]
fn an_extent_outside_every_chunk_or_items_out_of_order_fall_back() {
    let mut b = synth::image();
    let mut items = synth::extent_items();
    set_u64(&mut items[4].0, 9, 4 << 20);
    b[EXTENT_LEAF..EXTENT_LEAF + NODE].copy_from_slice(&synth::leaf((2 << 20) + 4096, 2, &items));
    synth::reseal(&mut b);
    assert_fallback_for(b, "in no chunk");
    let mut b = synth::image();
    let mut items = synth::extent_items();
    items.swap(3, 4);
    b[EXTENT_LEAF..EXTENT_LEAF + NODE].copy_from_slice(&synth::leaf((2 << 20) + 4096, 2, &items));
    synth::reseal(&mut b);
    assert_fallback_for(b, "out of order");
}

#[test]
fn a_superblock_larger_than_its_partition_falls_back() {
    let mut b = synth::image();
    set_u64(&mut b, SB_AT + 0x70, 1 << 40);
    synth::reseal(&mut b);
    assert_fallback_for(b, "superblock");
}

#[test]
fn a_log_tree_keeps_data_chunks_whole() {
    let mut b = synth::image();
    set_u64(&mut b, SB_AT + 0x60, 2 << 20);
    synth::reseal(&mut b);
    let info = run(b);
    assert_eq!(info.fill, Fill::Keep);
    assert_eq!(info.used, vec![(0, 2 << 20)]);
}

#[test]
fn mixed_chunks_keep_only_their_extents() {
    let mut b = synth::image();
    let mut items = synth::chunk_items();
    items[2].1 = synth::chunk_item(1 << 20, 1 | 4, &[1 << 20]);
    b[CHUNK_LEAF..CHUNK_LEAF + NODE].copy_from_slice(&synth::leaf(1 << 20, 3, &items));
    synth::reseal(&mut b);
    assert_eq!(run(b).used, synth::USED.to_vec());
}

#[test]
fn a_tree_node_the_extent_tree_does_not_record_falls_back() {
    // The chunk tree's leaf loses its metadata item: the extent tree no longer accounts
    // for every tree block, so neither metadata nor data extents are trusted.
    let mut b = synth::image();
    let mut items = synth::extent_items();
    items.remove(0);
    b[EXTENT_LEAF..EXTENT_LEAF + NODE].copy_from_slice(&synth::leaf((2 << 20) + 4096, 2, &items));
    synth::reseal(&mut b);
    assert_fallback_for(b, "not in the extent tree");
}

/// Writes the `btrfs_probe` fuzz seeds (run once with `--ignored`; they are committed):
/// the synthetic image from its superblock on, as is and with a log tree.
#[test]
#[ignore]
fn write_btrfs_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/btrfs_probe");
    std::fs::create_dir_all(&dir).unwrap();
    let mut log = synth::image();
    set_u64(&mut log, SB_AT + 0x60, 2 << 20);
    synth::reseal(&mut log);
    for (name, img) in [("synthetic", synth::image()), ("synthetic-log-tree", log)] {
        // Shift 7: a 4 MiB partition, the synthetic file system's size.
        let mut seed = vec![7u8];
        seed.extend_from_slice(&img[SB_AT..SB_AT + crate::fuzzing::MAX_INPUT - 1]);
        std::fs::write(dir.join(name), seed).unwrap();
    }
}

#[test]
fn the_fuzz_seeds_reach_the_extent_tree() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/btrfs_probe");
    let seed = std::fs::read(dir.join("synthetic")).unwrap();
    let used = crate::fuzzing::btrfs_probe_info(&seed).unwrap().unwrap();
    // Without the data (beyond the input) the extents are still there.
    assert_eq!(
        (used.ranges, used.chunk_level),
        (synth::USED.to_vec(), None)
    );
    let seed = std::fs::read(dir.join("synthetic-log-tree")).unwrap();
    let used = crate::fuzzing::btrfs_probe_info(&seed).unwrap().unwrap();
    assert!(used.chunk_level.is_some());
}
