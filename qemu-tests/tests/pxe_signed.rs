//! Signed images end to end: a node PXE-boots (SeaBIOS + iPXE ROM → pxelinux → kernel →
//! our initrd, built with `--trust site.pub`) three times against `imgtool serve`:
//! 1. the image is unsigned: refused, the disk's sha256 unchanged, the board says failed;
//! 2. the image was tampered with (manifest changed, id recomputed so every integrity
//!    check passes) and re-signed by another key, the trusted key's old line kept: refused,
//!    the disk unchanged;
//! 3. the image is the master's, signed by the trusted key: cloned and checked with the
//!    reference tools.

use imgtool::sign::{sign_dir, SecretKey};
use qemu_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_fixtures::disk::{assert_restored, fixture, sha256_file};
use test_fixtures::image::{capture_into, tamper_and_rehash};
use test_fixtures::skip_unless_root;

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const MAC: &str = "52:54:00:00:00:31";

fn boot_node(work: &Path, tree: &Path, port: u16, disk: &Path) -> String {
    boot_bios_node(work, tree, port, disk, MAC, "node31", BOOT_TIMEOUT)
}

/// One node of a signed-image site: the master captured into `images/compute`, the site
/// key (its public half in the initrd), the boot tree, `imgtool serve`, and the node's
/// disk holding a pattern that a refused image must not touch.
struct Site {
    _work: tempfile::TempDir,
    w: PathBuf,
    master: PathBuf,
    images: PathBuf,
    img: PathBuf,
    good_id: String,
    key: SecretKey,
    tree: PathBuf,
    port: u16,
    disk: PathBuf,
    untouched: String,
}

/// The image URL as the node sees it.
const URL: &str = "http://172.20.0.100:8080/compute";

impl Site {
    fn new() -> Site {
        let work = tempfile::tempdir().unwrap();
        let w = work.path().to_path_buf();
        let master = fixture("gpt");
        let images = w.join("images");
        let img = images.join("compute");
        capture_into(&master, &images, "compute");
        let good_id = imgtool::manifest::Image::open(&img)
            .unwrap()
            .id()
            .to_string();
        // The site key: its public half goes into the initrd.
        let site = w.join("site");
        let key = imgtool::sign::keygen(&site).unwrap();
        let kernel = kernel();
        let initrd = w.join("initrd.img");
        std::fs::write(
            &initrd,
            agent_initrd_trusting(&kernel, &[imgtool::sign::public_path(&site)]),
        )
        .unwrap();
        let tree = one_node_tree(&w, "n31", MAC, &kernel, &initrd);
        let port = serve_in_background(vec![images.clone(), tree.clone()]);
        // The node's disk holds data (a pattern) that a refused image must not touch.
        let disk = w.join("node31.img");
        let size = std::fs::metadata(&master).unwrap().len() * 3 / 2;
        let pattern: Vec<u8> = (0..4u32 << 20).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&disk, &pattern).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&disk)
            .unwrap()
            .set_len(size)
            .unwrap();
        let untouched = sha256_file(&disk);
        Site {
            _work: work,
            w,
            master,
            images,
            img,
            good_id,
            key,
            tree,
            port,
            disk,
            untouched,
        }
    }

    /// Boots the node once; returns its console.
    fn boot(&self, what: &str) -> String {
        let t = std::time::Instant::now();
        let c = boot_node(&self.w, &self.tree, self.port, &self.disk);
        eprintln!("boot ({what}): {:.1?}", t.elapsed());
        c
    }
}

/// The status board of site `$s` (its type is imgtool's, inferred).
macro_rules! board {
    ($s:expr) => {
        imgtool::serve::fetch_status(&format!("http://127.0.0.1:{}", $s.port)).unwrap()
    };
}

/// 1. Unsigned: refused before anything is written, naming image and key.
fn an_unsigned_image_is_refused(s: &Site) {
    let c = s.boot("unsigned");
    assert!(
        c.contains(&format!("trusted image-signing keys: {}", s.key.id)),
        "{c}"
    );
    assert!(
        c.contains("CLONE FAILED"),
        "unsigned image not refused:\n{c}"
    );
    assert!(
        c.contains("refusing to clone, nothing written")
            && c.contains(&format!("image {URL} (id {}) is unsigned", s.good_id))
            && c.contains(&format!("key {}", s.key.id)),
        "the refusal does not name image and key:\n{c}"
    );
    assert_eq!(
        sha256_file(&s.disk),
        s.untouched,
        "an unsigned image was written"
    );
    let b = board!(s);
    assert_eq!(b["n31"].last.phase, "failed", "{b:?}");
    assert!(b["n31"].last.message.contains("unsigned"), "{b:?}");
}

/// 2. Tampered, re-signed by another key; the trusted key's line (for the old id) kept.
fn a_tampered_image_resigned_by_another_key_is_refused(s: &Site) {
    sign_dir(&s.img, &s.key).unwrap();
    let trusted_line = std::fs::read_to_string(s.img.join("signature")).unwrap();
    let new_id = tamper_and_rehash(&s.img);
    let evil = SecretKey::generate().unwrap();
    sign_dir(&s.img, &evil).unwrap();
    let evil_line = std::fs::read_to_string(s.img.join("signature")).unwrap();
    std::fs::write(
        s.img.join("signature"),
        format!("{trusted_line}{}\n", evil_line.lines().nth(1).unwrap()),
    )
    .unwrap();
    let c = s.boot("tampered, re-signed");
    assert!(
        c.contains("CLONE FAILED"),
        "tampered image not refused:\n{c}"
    );
    assert!(
        c.contains(&format!(
            "image {URL} (id {new_id}) is not signed by a trusted key"
        )) && c.contains(&format!("signed image {}, not this one", s.good_id))
            && c.contains(&format!("signed by unknown key {}", evil.id)),
        "the refusal does not name image and keys:\n{c}"
    );
    assert_eq!(
        sha256_file(&s.disk),
        s.untouched,
        "a tampered image was written"
    );
    assert_eq!(board!(s)["n31"].last.phase, "failed");
}

/// 3. The master's image, signed by the trusted key: cloned and checked.
fn the_signed_image_is_cloned(s: &Site) {
    std::fs::remove_dir_all(&s.img).unwrap();
    capture_into(&s.master, &s.images, "compute");
    sign_dir(&s.img, &s.key).unwrap();
    let c = s.boot("signed");
    assert!(
        c.contains(&format!("signed by trusted key {}", s.key.id)),
        "no signature check reported:\n{c}"
    );
    assert!(
        c.contains("netboot: done: image"),
        "signed image not cloned:\n{c}"
    );
    assert_restored(&s.master, &s.disk, &[1, 2, 3, 4]);
    assert_eq!(board!(s)["n31"].last.phase, "done");
}

#[test]
fn a_node_with_a_trusted_key_refuses_unsigned_and_tampered_images_and_clones_a_signed_one() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let started = std::time::Instant::now();
    // One node, booted three times in order (each boot takes minutes under TCG).
    let site = Site::new();
    an_unsigned_image_is_refused(&site);
    a_tampered_image_resigned_by_another_key_is_refused(&site);
    the_signed_image_is_cloned(&site);
    eprintln!("total: {:.1?}", started.elapsed());
}
