//! Refusals: every bad input leaves the target byte-for-byte unchanged (hashed before and
//! after) and the error says why.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A target with recognisable non-zero content everywhere.
fn target(path: &Path, size: u64) {
    let block: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut data = Vec::with_capacity(size as usize);
    while (data.len() as u64) < size {
        data.extend_from_slice(&block);
    }
    data.truncate(size as usize);
    std::fs::write(path, data).unwrap();
}

fn copy_image(s: &Captured, name: &str) -> PathBuf {
    let dst = s.dir.join(name);
    run(Command::new("cp").arg("-a").arg(&s.image).arg(&dst));
    dst
}

/// Runs restore, expects failure whose stderr contains every `needles`, and the target unchanged.
fn refused(image: &Path, dev: &Path, file: &Path, needles: &[&str]) {
    let before = sha256_file(file);
    let out = imgtool()
        .arg("restore")
        .arg(image)
        .arg(dev)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "restore should have been refused; stderr: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}: {err}");
    }
    assert_eq!(
        before,
        sha256_file(file),
        "the target changed although restore was refused ({err})"
    );
}

#[test]
fn too_small_disk() {
    let s = captured_files();
    let t = s.dir.join("small.img");
    target(&t, s.size / 2);
    refused(&s.image, &t, &t, &["too small"]);
}

#[test]
fn sector_size_4096_target_for_512_image() {
    skip_unless_root!("loop devices");
    let s = captured("gpt");
    let t = s.dir.join("4k.img");
    target(&t, s.size * 2);
    let l = Loop::attach_with(&t, false, Some(4096));
    refused(
        &s.image,
        &l.dev,
        &t,
        &["logical sector size is 4096", "512"],
    );
}

#[test]
fn flipped_payload_byte() {
    let s = captured_files();
    let img = copy_image(&s, "flipped");
    let p = img.join("p4.zst");
    let mut b = std::fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&p, b).unwrap();
    let t = s.dir.join("t.img");
    target(&t, s.size);
    refused(&img, &t, &t, &["partition p4, chunk", "damaged"]);
}

#[test]
fn truncated_payload() {
    let s = captured_files();
    let img = copy_image(&s, "truncated");
    let p = img.join("p2.zst");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let t = s.dir.join("t.img");
    target(&t, s.size);
    refused(&img, &t, &t, &["partition p2, chunk", "truncated"]);
}

#[test]
fn manifest_of_an_unknown_version() {
    let s = captured_files();
    let img = copy_image(&s, "v99");
    let m = std::fs::read_to_string(img.join("manifest")).unwrap();
    std::fs::write(
        img.join("manifest"),
        m.replacen("\"version\": 2,", "\"version\": 99,", 1),
    )
    .unwrap();
    let t = s.dir.join("t.img");
    target(&t, s.size);
    refused(
        &img,
        &t,
        &t,
        &["format version 99 is not supported", "versions 1 to 2"],
    );
    // inspect and verify say the same.
    let out = imgtool().arg("inspect").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 99"));
}

#[test]
fn mounted_target() {
    skip_unless_root!("loop devices");
    let s = captured("gpt");
    let t = s.dir.join("mounted.img");
    // A disk with the same content as the master, one partition mounted read-only.
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(fixture("gpt"))
        .arg(&t));
    let before = sha256_file(&t);
    {
        let mut l = Loop::attach(&t, false);
        l.mount(2, "ext4");
        let out = imgtool()
            .arg("restore")
            .arg(&s.image)
            .arg(&l.dev)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("in use") && err.contains("is mounted on"),
            "{err}"
        );
        // The backing file is refused too while its loop device is mounted.
        let out = imgtool()
            .arg("restore")
            .arg(&s.image)
            .arg(&t)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
    assert_eq!(before, sha256_file(&t), "mounted target changed");
}

#[test]
fn capture_refuses_a_source_mounted_read_write() {
    skip_unless_root!("loop devices");
    let s = captured("gpt");
    let src = s.dir.join("live.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(fixture("gpt"))
        .arg(&src));
    let mut l = Loop::attach(&src, false);
    l.mount_opts(4, "ext4", "rw");
    let out = imgtool()
        .arg("capture")
        .arg(&l.dev)
        .arg(s.dir.join("live-img"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mounted on") && err.contains("--force"),
        "{err}"
    );
    assert!(!s.dir.join("live-img").exists());
    drop(l);
}
