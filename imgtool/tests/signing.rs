//! Signed images through the real binary: keygen, sign, and `verify`/`restore --trust`
//! accepting a correctly signed image and refusing an unsigned one and a tampered one
//! re-signed by another key — a refused restore leaves the target's bytes unchanged.

mod common;
use common::*;
use std::path::Path;
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

/// What an attacker with write access to the image directory does: change the manifest
/// and recompute its id, so the integrity checks pass. Returns the new id.
pub fn tamper_and_rehash(dir: &Path) -> String {
    let p = dir.join("manifest");
    let mut m: imgtool::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let r = m.regions.last_mut().unwrap();
    r.label = Some("tampered".into());
    m.image_id = m.compute_id();
    std::fs::write(&p, m.to_json()).unwrap();
    m.image_id
}

fn cp_r(from: &Path, to: &Path) {
    run(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn keygen_sign_and_verify_trust_accept_good_and_refuse_unsigned_and_tampered() {
    skip_unless_root!("loop devices");
    let master = fixture("gpt");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let image = w.join("img");
    run(imgtool().args(["capture", "-q"]).arg(&master).arg(&image));
    let os = |s: &str| std::ffi::OsString::from(s);

    // keygen: two files, the secret one private; never overwritten.
    let site = w.join("site");
    let site_pub = w.join("site.pub");
    let o = imgtool_out(&[os("keygen").as_os_str(), site.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    let id = key_id(&site_pub);
    assert!(text(&o).contains(&id), "{}", text(&o));
    let secret = std::fs::read(&site).unwrap();
    let o = imgtool_out(&[os("keygen").as_os_str(), site.as_os_str()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    assert_eq!(std::fs::read(&site).unwrap(), secret);

    let verify = |img: &Path, key: &Path| {
        imgtool_out(&[
            os("verify").as_os_str(),
            img.as_os_str(),
            os("--trust").as_os_str(),
            key.as_os_str(),
        ])
    };

    // Unsigned: refused, naming the image and the key.
    let o = verify(&image, &site_pub);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("unsigned") && t.contains(&id), "{t}");
    assert!(t.contains(&image.display().to_string()), "{t}");
    let o = imgtool_out(&[os("inspect").as_os_str(), image.as_os_str()]);
    assert!(text(&o).contains("signature  none"), "{}", text(&o));
    // Without --trust the same image verifies (integrity only).
    let o = imgtool_out(&[os("verify").as_os_str(), image.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));

    // Signed: accepted, naming the key.
    let o = imgtool_out(&[
        os("sign").as_os_str(),
        image.as_os_str(),
        os("--key").as_os_str(),
        site.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = verify(&image, &site_pub);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("signed by trusted key {id}")),
        "{}",
        text(&o)
    );
    // inspect lists who claims to have signed it (unchecked), for people and scripts.
    let o = imgtool_out(&[os("inspect").as_os_str(), image.as_os_str()]);
    assert!(
        text(&o).contains(&format!("signature  key {id} (unchecked")),
        "{}",
        text(&o)
    );
    let o = imgtool_out(&[
        os("--json").as_os_str(),
        os("inspect").as_os_str(),
        image.as_os_str(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["signatures"],
        serde_json::json!([{"key_id": id, "this_image": true}])
    );
    // A secret key given as --trust is refused with advice.
    let o = verify(&image, &site);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("SECRET key"), "{}", text(&o));

    // Tampered and re-signed by another key: refused; the trusted line now covers an
    // old id and the new signer is unknown.
    let tampered = w.join("tampered");
    cp_r(&image, &tampered);
    let old_id = imgtool::manifest::Image::open(&image)
        .unwrap()
        .id()
        .to_string();
    let new_id = tamper_and_rehash(&tampered);
    let evil = w.join("evil");
    assert!(imgtool_out(&[os("keygen").as_os_str(), evil.as_os_str()])
        .status
        .success());
    let evil_id = key_id(&w.join("evil.pub"));
    let o = imgtool_out(&[
        os("sign").as_os_str(),
        tampered.as_os_str(),
        os("--key").as_os_str(),
        evil.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("dropped 1 signature(s) of an earlier image id"),
        "{}",
        text(&o)
    );
    // Put the trusted line back, as an attacker copying it over would.
    let good_line = std::fs::read_to_string(image.join("signature")).unwrap();
    let evil_line = std::fs::read_to_string(tampered.join("signature")).unwrap();
    std::fs::write(
        tampered.join("signature"),
        format!("{good_line}{}", evil_line.lines().nth(1).unwrap()),
    )
    .unwrap();
    let o = verify(&tampered, &site_pub);
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
    let o = imgtool_out(&[
        os("restore").as_os_str(),
        tampered.as_os_str(),
        target.as_os_str(),
        os("--trust").as_os_str(),
        site_pub.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not signed by a trusted key"),
        "{}",
        text(&o)
    );
    assert_eq!(sha256_file(&target), before, "a refused restore wrote");
    // The correctly signed image restores under the same --trust.
    let o = imgtool_out(&[
        os("restore").as_os_str(),
        image.as_os_str(),
        target.as_os_str(),
        os("--trust").as_os_str(),
        site_pub.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_restored(&master, &target, &[1, 2, 3, 4]);
}
