//! Image versions (issue 15): uploads publish `ROOT/<group>@<id12>/` and move the
//! `ROOT/<group>` link; `imgtool rollback` moves it back and restores follow; a restore
//! that read its manifest before a publish ends verified with the version it started
//! with — from `imgtool serve` and from a stock nginx serving the same root. File-built
//! master, no root needed.

mod common;
#[path = "upload_support/mod.rs"]
mod upload_support;

use common::*;
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::restore::{restore, RestoreOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use upload_support::*;

/// A blank disk file of the master's size.
fn blank(c: &Captured, name: &str) -> PathBuf {
    let p = c.dir.join(name);
    let _ = std::fs::remove_file(&p);
    std::fs::File::create(&p).unwrap().set_len(c.size).unwrap();
    p
}

/// `imgtool restore URL TARGET --json`: the restored image id.
fn restore_cli(url: &str, target: &Path) -> String {
    let out = run(imgtool()
        .args(["restore", "--json", "--verify"])
        .arg(url)
        .arg(target));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rep["image_id"].as_str().unwrap().to_string()
}

/// Two versions of the group: v1 at 8M chunks (TOKEN), v2 at 1M chunks (TOKEN2): the
/// same disk, two image ids.
fn two_versions(c: &Captured, s: &Server) -> (String, String) {
    let v1 = upload(&c.master, &s.url(), TOKEN, &[]).unwrap();
    let v2 = upload(&c.master, &s.url(), TOKEN2, &["--chunk-size", "1M"]).unwrap();
    let (v1, v2) = (
        v1["image_id"].as_str().unwrap(),
        v2["image_id"].as_str().unwrap(),
    );
    assert_ne!(v1, v2);
    (v1.to_string(), v2.to_string())
}

#[test]
fn rollback_makes_the_previous_version_current_and_clones_follow() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let (v1, v2) = two_versions(&c, &s);
    assert_eq!(current_id(&root, GROUP).as_deref(), Some(v2.as_str()));
    let listed = images(&root);
    assert_eq!(
        listed[0]["versions"].as_array().unwrap().len(),
        2,
        "{listed}"
    );
    // Newest first: v2 then v1.
    assert_eq!(
        listed[0]["versions"][0]["image_id"],
        v2.as_str(),
        "{listed}"
    );
    assert_eq!(restore_cli(&s.url(), &blank(&c, "t1.img")), v2);

    let out = run(imgtool().args(["rollback", "--json"]).arg(&root).arg(GROUP));
    let rb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rb["current"], format!("{GROUP}@{}", &v1[..12]), "{rb}");
    assert_eq!(current_id(&root, GROUP).as_deref(), Some(v1.as_str()));
    let text = String::from_utf8(run(imgtool().arg("images").arg(&root)).stdout).unwrap();
    let marked = text
        .lines()
        .find(|l| l.trim_start().starts_with('*'))
        .unwrap();
    assert!(marked.contains(&v1), "{text}");
    // A clone now gets v1, and it is the master.
    let t = blank(&c, "t2.img");
    assert_eq!(restore_cli(&s.url(), &t), v1);
    test_fixtures::files::assert_restored_files(&c.master, &t);
    // Forward again by an id prefix; an unknown version is refused.
    run(imgtool()
        .arg("rollback")
        .arg(&root)
        .arg(GROUP)
        .arg(&v2[..8]));
    assert_eq!(current_id(&root, GROUP).as_deref(), Some(v2.as_str()));
    let bad = imgtool()
        .arg("rollback")
        .arg(&root)
        .arg(GROUP)
        .arg("ffffffff")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // Prune to no old version: v1 goes, v2 (current) stays and is still served.
    run(imgtool().args(["prune", "--keep", "0"]).arg(&root));
    let listed = images(&root);
    assert_eq!(
        listed[0]["versions"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(restore_cli(&s.url(), &blank(&c, "t3.img")), v2);
}

/// Loads the group's image from `url` (reading its manifest), publishes a new version
/// through `s`, then restores: the restore must end verified with the version it
/// started with. Without pinning, the same sequence mixes versions (checked first, so
/// the test cannot pass with pinning broken).
fn restore_across_a_publish(
    c: &Captured,
    s: &Server,
    url: &str,
    token: &str,
    chunk: &str,
    name: &str,
) {
    let before = current_id(&s.root, GROUP).unwrap();
    let img = Image::fetch(url).unwrap();
    assert_eq!(img.id(), before);
    assert!(
        img.location()
            .contains(&format!("{GROUP}@{}", &before[..12])),
        "{}",
        img.location()
    );
    // The same manifest read without pinning, to show what pinning prevents.
    let unpinned = Image::load(Arc::new(imgtool::source::HttpSource::new(url))).unwrap();
    let published = upload(&c.master, &s.url(), token, &["--chunk-size", chunk]).unwrap();
    let after = published["image_id"].as_str().unwrap();
    assert_ne!(after, before);
    assert_eq!(current_id(&s.root, GROUP).as_deref(), Some(after));

    let opts = RestoreOptions {
        verify: true,
        ..Default::default()
    };
    let t = blank(c, &format!("{name}-unpinned.img"));
    let dev = imgtool::disk::Disk::open_rw_direct(&t).unwrap();
    let mixed = restore(&unpinned, &dev, &opts, &Progress::hidden());
    assert!(
        mixed.is_err(),
        "an unpinned restore read the new version's payloads without noticing"
    );

    let t = blank(c, &format!("{name}.img"));
    let dev = imgtool::disk::Disk::open_rw_direct(&t).unwrap();
    let rep = restore(&img, &dev, &opts, &Progress::hidden()).unwrap();
    drop(dev);
    assert_eq!(rep.image_id, before);
    test_fixtures::files::assert_restored_files(&c.master, &t);
}

#[test]
fn a_clone_running_during_a_publish_ends_with_the_version_it_started() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    upload(&c.master, &s.url(), TOKEN, &[]).unwrap();
    // From imgtool serve.
    restore_across_a_publish(&c, &s, &s.url(), TOKEN2, "1M", "serve");
    // From a stock nginx serving the same root (it follows the group's link).
    let nginx = test_fixtures::servers::Nginx::start(&root);
    let url = format!("http://127.0.0.1:{}/{GROUP}", nginx.port);
    restore_across_a_publish(&c, &s, &url, TOKEN3, "512K", "nginx");
}
