//! Network backup (issue 15): `imgtool capture DISK http://server/GROUP --token T`
//! uploads into `imgtool serve --tokens FILE` while capturing. These tests run the real
//! binaries on the file-built GPT master (no root, except the full-disk test): an upload
//! publishes the very image a local capture makes; a cut, a flipped byte, a bad token, a
//! quota or a full disk publish nothing and leave the current version served; no request
//! path writes outside the staging directory.

mod common;
#[path = "upload_support/mod.rs"]
mod upload_support;

use common::*;
use std::path::{Path, PathBuf};
use upload_support::*;

/// The image files (names and sha256) of an image directory.
fn image_files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = tree(dir, &|_| false)
        .into_iter()
        .map(|(p, h)| (p.file_name().unwrap().to_string_lossy().into_owned(), h))
        .collect();
    v.sort();
    v
}

fn version_dir(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{GROUP}@{}", &id[..12]))
}

#[test]
fn an_upload_publishes_the_image_a_local_capture_makes() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let rep = upload(&c.master, &s.url(), TOKEN, &[]).unwrap();
    let id = image_id(&c.image);
    assert_eq!(rep["image_id"], id.as_str(), "{rep}");
    assert_eq!(rep["version"], format!("{GROUP}@{}", &id[..12]), "{rep}");
    // The same bytes as the local capture: manifest, layout and every payload.
    let published = version_dir(&root, &id);
    assert_eq!(image_files(&published), image_files(&c.image));
    // Current, listed, served through the group's link, and staging is clean.
    assert_eq!(current_id(&root, GROUP).as_deref(), Some(id.as_str()));
    assert_eq!(image_id(&root.join(GROUP)), id);
    assert!(sessions_left(&root).is_empty());
    assert!(s
        .log_text()
        .contains(&format!("published {GROUP}@{}", &id[..12])));
    // The client left every raw sha256 to the server, which took them from the frames.
    let m: imgtool::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(c.image.join("manifest")).unwrap()).unwrap();
    let chunks: usize = m.regions.iter().map(|r| r.chunks.len()).sum();
    let log = s.log_text();
    assert!(
        log.contains(&format!(
            "{chunks} chunks, {chunks} raw-checked, {chunks} raw sha256s taken here"
        )),
        "{log}"
    );
    // A restore from the server gives the master back.
    let target = c.dir.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(c.size)
        .unwrap();
    run(imgtool().args(["restore", "-q"]).arg(s.url()).arg(&target));
    test_fixtures::files::assert_restored_files(&c.master, &target);
    // The token is spent: used again, it is refused with the reason in the server log.
    let e = upload(&c.master, &s.url(), TOKEN, &[]).unwrap_err();
    assert!(e.contains("HTTP 403") && e.contains("used already"), "{e}");
    assert!(s.log_text().contains("refused (403)"), "{}", s.log_text());
}

/// The first version, published with TOKEN at the default chunk size (8M).
fn first_version(c: &Captured, s: &Server) -> String {
    let rep = upload(&c.master, &s.url(), TOKEN, &[]).unwrap();
    rep["image_id"].as_str().unwrap().to_string()
}

/// The root's files outside the staging directory.
fn published(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    tree(root, &|p| p.ends_with(".upload"))
}

/// After a failed upload: the old version is still current and served, and a restore
/// from the server gives the master back.
fn assert_old_version_served(c: &Captured, s: &Server, old: &str) {
    assert_eq!(current_id(&s.root, GROUP).as_deref(), Some(old));
    let target = c.dir.join("after-failure.img");
    let _ = std::fs::remove_file(&target);
    std::fs::File::create(&target)
        .unwrap()
        .set_len(c.size)
        .unwrap();
    let out = run(imgtool()
        .args(["restore", "--json"])
        .arg(s.url())
        .arg(&target));
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["image_id"], old);
    test_fixtures::files::assert_restored_files(&c.master, &target);
}

/// Where each in-transit fault test starts: a server with the first version published,
/// the root's published files before the faulty upload, and the bytes a whole upload at
/// 64K chunks sends (measured as the other group, whose token it spends).
struct Faulty {
    // Declared before `c`: the server stops before the test's directory goes.
    s: Server,
    c: Captured,
    root: PathBuf,
    old: String,
    before: std::collections::BTreeMap<PathBuf, String>,
    sent: u64,
}

fn before_a_faulty_upload() -> Faulty {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let old = first_version(&c, &s);
    let full = upload(
        &c.master,
        &format!("http://{}/storage", s.addr),
        OTHER_TOKEN,
        &["--chunk-size", "64K"],
    )
    .unwrap();
    let before = published(&root);
    let sent = full["bytes_sent"].as_u64().unwrap();
    Faulty {
        s,
        c,
        root,
        old,
        before,
        sent,
    }
}

impl Faulty {
    /// The upload with TOKEN2 at 64K chunks through a proxy doing `fault`, which must
    /// fail: its error.
    fn upload_through(&self, fault: Fault) -> String {
        let proxy = Proxy::start(self.s.addr, fault);
        upload(
            &self.c.master,
            &proxy.url(),
            TOKEN2,
            &["--chunk-size", "64K"],
        )
        .unwrap_err()
    }

    /// After the failed upload: nothing new in the root, and the old version still
    /// current and served.
    fn assert_nothing_published(&self) {
        assert_eq!(
            published(&self.root),
            self.before,
            "something was published"
        );
        assert_old_version_served(&self.c, &self.s, &self.old);
    }
}

#[test]
fn a_cut_upload_publishes_nothing_and_a_rerun_publishes() {
    let f = before_a_faulty_upload();
    // 64K chunks: many frames; the proxy closes every connection half-way.
    let e = f.upload_through(Fault::CutAfter(f.sent / 2));
    assert!(e.contains("uploading"), "{e}");
    f.assert_nothing_published();
    let (s, c, root, old) = (&f.s, &f.c, &f.root, &f.old);
    // The token was not spent: the rerun, straight to the server, publishes.
    let rep = upload(&c.master, &s.url(), TOKEN2, &["--chunk-size", "64K"]).unwrap();
    let new = rep["image_id"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(current_id(root, GROUP).as_deref(), Some(new));
    assert!(version_dir(root, old).is_dir(), "the old version is kept");
    // The cut session ended (at the cut, or when the rerun with its token began).
    assert!(sessions_left(root).is_empty(), "{:?}", sessions_left(root));
    assert!(
        s.log_text().contains("nothing published"),
        "{}",
        s.log_text()
    );
}

#[test]
fn a_byte_flipped_in_transit_is_refused_naming_the_chunk() {
    let f = before_a_faulty_upload();
    let e = f.upload_through(Fault::FlipAt(f.sent / 3));
    assert!(e.contains("HTTP 422") && e.contains(" chunk "), "{e}");
    assert!(e.contains("region "), "{e}");
    let log = f.s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("nothing published") && l.contains(" chunk "))
        .unwrap_or_else(|| panic!("no refusal naming a chunk in the log: {log}"));
    assert!(line.contains("sha256") || line.contains("zstd"), "{line}");
    f.assert_nothing_published();
    assert!(sessions_left(&f.root).is_empty());
}

#[test]
fn tokens_missing_unknown_or_of_another_group_are_refused_with_the_reason_logged() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let begin = |auth: &str| {
        raw_request(
            s.addr,
            &format!("POST /upload/{GROUP}?chunk_size=65536 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
            b"",
        )
    };
    let (code, text) = begin("");
    assert_eq!(code, 401, "{text}");
    let (code, text) = begin("Authorization: Bearer not-a-token-of-this-server\r\n");
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("unknown upload token"), "{text}");
    let (code, text) = begin(&format!("Authorization: Bearer {OTHER_TOKEN}\r\n"));
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("for group storage"), "{text}");
    // Through the CLI: a wrong token, then the other group's token.
    let e = upload(&c.master, &s.url(), "wrong-token-wrong-token", &[]).unwrap_err();
    assert!(e.contains("HTTP 401"), "{e}");
    let e = upload(&c.master, &s.url(), OTHER_TOKEN, &[]).unwrap_err();
    assert!(e.contains("HTTP 403"), "{e}");
    let log = s.log_text();
    for reason in [
        "refused (401) from 127.0.0.1: no upload token",
        "refused (401) from 127.0.0.1: unknown upload token",
        "refused (403) from 127.0.0.1: this token is for group storage, not compute",
    ] {
        assert!(log.contains(reason), "{reason:?} not in {log}");
    }
    assert!(published(&root).is_empty());
    assert!(sessions_left(&root).is_empty());
    // A session's requests need the session's own token.
    let (code, text) = begin(&format!("Authorization: Bearer {TOKEN}\r\n"));
    assert_eq!(code, 201, "{text}");
    let session = text.split("\"session\":\"").nth(1).unwrap()[..32].to_string();
    let (code, _) = raw_request(
        s.addr,
        &format!("DELETE /upload/{GROUP}/{session} HTTP/1.1\r\nAuthorization: Bearer {TOKEN2}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(code, 403);
    let (code, _) = raw_request(
        s.addr,
        &format!("DELETE /upload/{GROUP}/{session} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(code, 204);
    assert!(sessions_left(&root).is_empty());
}

#[test]
fn no_request_path_writes_outside_the_staging_directory() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let outside =
        |p: &Path| p.starts_with(root.join(".upload")) || p.extension().is_some_and(|e| e == "log");
    let before = tree(&c.dir, &outside);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (code, text) = raw_request(
        s.addr,
        &format!("POST /upload/{GROUP}?chunk_size=65536 HTTP/1.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(code, 201, "{text}");
    let session = text.split("\"session\":\"").nth(1).unwrap()[..32].to_string();
    let body = b"escape escape escape";
    let sha = "0".repeat(64);
    let frame_headers = format!("X-Payload-Offset: 0\r\nX-Raw-Length: 20\r\nX-Raw-Sha256: {sha}\r\nX-Frame-Sha256: {sha}\r\n");
    let paths = [
        "/upload/../../escape".to_string(),
        "/upload/%2e%2e/%2e%2e/escape".into(),
        "/upload/compute%2f..%2f..%2fescape".into(),
        "//escape".into(),
        "/upload//escape/x".into(),
        "/upload/.upload/used-tokens".into(),
        format!("/upload/{GROUP}/{session}/../../../escape"),
        format!("/upload/{GROUP}/{session}/..%2f..%2f..%2fescape/0"),
        format!("/upload/{GROUP}/{session}/%2e%2e/0"),
        format!("/upload/{GROUP}/{session}/p1/..%2fescape"),
        format!("/upload/{GROUP}/{session}/layout/../../escape"),
        format!("/upload/{GROUP}/..%2f..%2fescape/layout"),
        format!("/upload/{GROUP}/../{session}/layout"),
        format!("http://127.0.0.1/upload/{GROUP}/{session}/../../escape"),
        format!("/{}/escape", c.dir.display()),
        format!("/upload/{}", c.dir.join("escape").display()),
    ];
    for p in &paths {
        for method in ["PUT", "POST"] {
            let (code, text) = raw_request(
                s.addr,
                &format!("{method} {p} HTTP/1.1\r\n{auth}{frame_headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
                body,
            );
            assert!((400..500).contains(&code), "{method} {p}: {text}");
        }
    }
    assert_eq!(
        tree(&c.dir, &outside),
        before,
        "a file changed outside the staging directory"
    );
    for p in [
        PathBuf::from("/escape"),
        root.join("escape"),
        c.dir.join("escape"),
        root.join(".upload/escape"),
    ] {
        assert!(!p.exists(), "{}", p.display());
    }
    // The only files written are inside the session's staging directory (none here:
    // every request above was refused before a byte was written).
    let staged = tree(&root.join(".upload"), &|_| false);
    assert!(
        staged
            .keys()
            .all(|p| p.ends_with(&session) || p.starts_with(root.join(".upload").join(&session))),
        "{staged:?}"
    );
}

#[test]
fn an_upload_over_quota_publishes_nothing() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &["--max-upload-bytes", "256K"]);
    let e = upload(&c.master, &s.url(), TOKEN, &["--chunk-size", "64K"]).unwrap_err();
    assert!(e.contains("HTTP 413") && e.contains("quota"), "{e}");
    assert!(published(&root).is_empty());
    assert!(sessions_left(&root).is_empty());
    assert!(
        s.log_text().contains("over the upload quota"),
        "{}",
        s.log_text()
    );
}

/// A small tmpfs mounted for the test, unmounted in `Drop`.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_server_is_a_clear_error_and_publishes_nothing() {
    skip_unless_root!("mounts a small tmpfs as the image root");
    let c = captured_files();
    let mnt = c.dir.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    run(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt));
    let _guard = Tmpfs(mnt.clone());
    let root = mnt.join("images");
    std::fs::create_dir_all(&root).unwrap();
    let s = Server::start(&c.dir, &root, &[]);
    let e = upload(
        &c.master,
        &s.url(),
        TOKEN,
        &["--chunk-size", "64K", "--level", "1"],
    );
    let free = |p: &Path| {
        let out = run(std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(p));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let e = e.expect_err("a 1 MiB root took the whole image; make the fixture larger");
    assert!(e.contains("HTTP 507") && e.contains("disk is full"), "{e}");
    assert!(published(&root).is_empty());
    assert!(sessions_left(&root).is_empty());
    assert!(free(&mnt) > 900 << 10, "staging not cleaned");
    assert!(s.log_text().contains("disk is full"), "{}", s.log_text());
}

#[test]
fn a_token_bound_to_an_address_is_refused_from_another() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    // Bound to 127.0.0.2 (a node's address): the tests' client is 127.0.0.1.
    let e = upload(&c.master, &s.url(), THERE_TOKEN, &[]).unwrap_err();
    assert!(e.contains("HTTP 403"), "{e}");
    assert!(
        s.log_text()
            .contains("refused (403) from 127.0.0.1: this token is for uploads from 127.0.0.2"),
        "{}",
        s.log_text()
    );
    assert!(published(&root).is_empty());
    // Bound to 127.0.0.1: taken.
    let rep = upload(&c.master, &s.url(), HERE_TOKEN, &[]).unwrap();
    assert_eq!(
        current_id(&root, GROUP).as_deref(),
        rep["image_id"].as_str()
    );
}

#[test]
fn a_token_revoked_during_its_upload_publishes_nothing() {
    let f = before_a_faulty_upload();
    // Half-way through, `pxe-builder backup --clear` takes TOKEN2 out of the file.
    let tokens = f.c.dir.join("upload-tokens");
    let revoke = move || std::fs::write(&tokens, tokens_text(&[TOKEN2])).unwrap();
    let revoke = Fault::RunAt(f.sent / 2, std::sync::Arc::new(revoke), Default::default());
    let e = f.upload_through(revoke);
    assert!(e.contains("at publish: unknown upload token"), "{e}");
    f.assert_nothing_published();
    assert!(sessions_left(&f.root).is_empty());
}

#[test]
fn a_restart_removes_a_left_new_link_and_keeps_an_exchanged_image() {
    let c = captured_files();
    let root = c.dir.join("images");
    let staging = root.join(".upload");
    std::fs::create_dir_all(&staging).unwrap();
    let link = staging.join("link-compute-0123456789abcdef");
    std::os::unix::fs::symlink("compute@000000000000", &link).unwrap();
    // What adopt_plain's exchange leaves when the server dies before the rename.
    let exchanged = staging.join("link-compute-fedcba9876543210");
    std::fs::create_dir(&exchanged).unwrap();
    std::fs::write(exchanged.join("manifest.json"), "{}").unwrap();
    let s = Server::start(&c.dir, &root, &[]);
    assert!(std::fs::symlink_metadata(&link).is_err(), "the link stays");
    assert!(exchanged.join("manifest.json").is_file());
    assert!(
        s.log_text().contains("interrupted publish"),
        "{}",
        s.log_text()
    );
}
