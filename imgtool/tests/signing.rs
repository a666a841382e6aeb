//! Signed images through the real binary: keygen, sign, and `verify`/`restore --trust`
//! accepting a correctly signed image and refusing an unsigned one and a tampered one
//! re-signed by another key — a refused restore leaves the target's bytes unchanged.
//! Keys, signatures and `verify` run on the file-built master (no root); the restore
//! checked with the reference tools uses the root fixture.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn imgtool_out(args: &[&std::ffi::OsStr]) -> Output {
    imgtool().args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The key id in `KEY.pub`'s header.
fn key_id(public: &Path) -> String {
    let t = std::fs::read_to_string(public).unwrap();
    t.split_whitespace().nth(2).unwrap().to_string()
}

fn cp_r(from: &Path, to: &Path) {
    run(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

fn os(s: &str) -> std::ffi::OsString {
    std::ffi::OsString::from(s)
}

/// A site key made by `imgtool keygen` in `w`: the secret's path, the public one's, its id.
struct Site {
    secret: PathBuf,
    public: PathBuf,
    id: String,
}

fn keygen(w: &Path, name: &str) -> Site {
    let secret = w.join(name);
    let o = imgtool_out(&[os("keygen").as_os_str(), secret.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    let public = w.join(format!("{name}.pub"));
    let id = key_id(&public);
    assert!(text(&o).contains(&id), "{}", text(&o));
    Site { secret, public, id }
}

fn sign(image: &Path, key: &Path) -> Output {
    let o = imgtool_out(&[
        os("sign").as_os_str(),
        image.as_os_str(),
        os("--key").as_os_str(),
        key.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn verify(img: &Path, key: &Path) -> Output {
    imgtool_out(&[
        os("verify").as_os_str(),
        img.as_os_str(),
        os("--trust").as_os_str(),
        key.as_os_str(),
    ])
}

/// A copy of the signed `image` in `w` tampered with, re-signed by another key, and
/// given the trusted key's line back (as an attacker copying it over would). Returns the
/// copy, its new id, and the other key's id.
fn tampered_copy(w: &Path, image: &Path) -> (PathBuf, String, String) {
    let tampered = w.join("tampered");
    cp_r(image, &tampered);
    let new_id = tamper_and_rehash(&tampered);
    let evil = keygen(w, "evil");
    let o = sign(&tampered, &evil.secret);
    assert!(
        text(&o).contains("dropped 1 signature(s) of an earlier image id"),
        "{}",
        text(&o)
    );
    let good_line = std::fs::read_to_string(image.join("signature")).unwrap();
    let evil_line = std::fs::read_to_string(tampered.join("signature")).unwrap();
    std::fs::write(
        tampered.join("signature"),
        format!("{good_line}{}", evil_line.lines().nth(1).unwrap()),
    )
    .unwrap();
    (tampered, new_id, evil.id)
}

fn image_id(image: &Path) -> String {
    imgtool::manifest::Image::open(image)
        .unwrap()
        .id()
        .to_string()
}

#[test]
fn keygen_writes_two_files_and_never_overwrites_a_key() {
    let work = tempfile::tempdir().unwrap();
    let site = keygen(work.path(), "site");
    let secret = std::fs::read(&site.secret).unwrap();
    let o = imgtool_out(&[os("keygen").as_os_str(), site.secret.as_os_str()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(std::fs::read(&site.secret).unwrap(), secret);
}

#[test]
fn verify_trust_refuses_an_unsigned_image_naming_image_and_key() {
    let c = captured_files();
    let site = keygen(&c.dir, "site");
    let o = verify(&c.image, &site.public);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("unsigned") && t.contains(&site.id), "{t}");
    assert!(t.contains(&c.image.display().to_string()), "{t}");
    let o = imgtool_out(&[os("inspect").as_os_str(), c.image.as_os_str()]);
    assert!(text(&o).contains("signature  none"), "{}", text(&o));
    // Without --trust the same image verifies (integrity only).
    let o = imgtool_out(&[os("verify").as_os_str(), c.image.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_signed_image_verifies_and_inspect_lists_its_signer() {
    let c = captured_files();
    let site = keygen(&c.dir, "site");
    let id = &site.id;
    sign(&c.image, &site.secret);
    let o = verify(&c.image, &site.public);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("signed by trusted key {id}")),
        "{}",
        text(&o)
    );
    // inspect lists who claims to have signed it (unchecked), for people and scripts.
    let o = imgtool_out(&[os("inspect").as_os_str(), c.image.as_os_str()]);
    assert!(
        text(&o).contains(&format!("signature  key {id} (unchecked")),
        "{}",
        text(&o)
    );
    let o = imgtool_out(&[
        os("--json").as_os_str(),
        os("inspect").as_os_str(),
        c.image.as_os_str(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["signatures"],
        serde_json::json!([{"key_id": id, "this_image": true}])
    );
    // A secret key given as --trust is refused with advice.
    let o = verify(&c.image, &site.secret);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("SECRET key"), "{}", text(&o));
}

#[test]
fn a_tampered_image_resigned_by_another_key_is_refused_naming_both_signatures() {
    let c = captured_files();
    let site = keygen(&c.dir, "site");
    sign(&c.image, &site.secret);
    let old_id = image_id(&c.image);
    let (tampered, new_id, evil_id) = tampered_copy(&c.dir, &c.image);
    // The trusted line covers an old id and the new signer is unknown.
    let o = verify(&tampered, &site.public);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&new_id), "{t}");
    assert!(
        t.contains(&format!("signed image {old_id}, not this one")),
        "{t}"
    );
    assert!(
        t.contains(&format!("signed by unknown key {evil_id}")),
        "{t}"
    );
}

#[test]
fn restore_trust_refuses_a_tampered_image_before_writing_and_restores_the_signed_one() {
    skip_unless_root!("loop devices");
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let image = w.join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let site = keygen(w, "site");
    sign(&image, &site.secret);
    let (tampered, _, _) = tampered_copy(w, &image);

    // restore --trust refuses before writing: the target's bytes are unchanged.
    let target = w.join("target.img");
    let pattern: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&target, &pattern).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&target)
        .unwrap()
        .set_len(std::fs::metadata(&master).unwrap().len())
        .unwrap();
    let before = sha256_file(&target);
    let restore = |img: &Path| {
        imgtool_out(&[
            os("restore").as_os_str(),
            img.as_os_str(),
            target.as_os_str(),
            os("--trust").as_os_str(),
            site.public.as_os_str(),
        ])
    };
    let o = restore(&tampered);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not signed by a trusted key"),
        "{}",
        text(&o)
    );
    assert_eq!(sha256_file(&target), before, "a refused restore wrote");
    // The correctly signed image restores under the same --trust.
    let o = restore(&image);
    assert!(o.status.success(), "{}", text(&o));
    assert_restored(&master, &target, &[1, 2, 3, 4]);
}
