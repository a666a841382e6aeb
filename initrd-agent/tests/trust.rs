//! The agent with trusted keys (the same clone code PID 1 runs), against `imgtool serve` on
//! loopback, on disk files: an unsigned image, a tampered one re-signed by another key and
//! an image other than the pinned one are refused before anything is written (the disk's
//! sha256 is unchanged) and reported as failed on the status board; a correctly signed
//! image clones, also through a relay, which passes the signature on.

mod common;
use common::agent;
use imgtool::sign::{sign_dir, SecretKey};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use test_fixtures::disk::{assert_restored, fixture, sha256_file};
use test_fixtures::image::{capture_into, payload_and_largest_frame, tamper_and_rehash};
use test_fixtures::servers::serve_in_background;
use test_fixtures::skip_unless_root;

struct Setup {
    _work: tempfile::TempDir,
    dir: PathBuf,
    images: PathBuf,
    master: PathBuf,
    /// The trusted key's `.pub`.
    trusted: PathBuf,
    key: SecretKey,
}

fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let images = dir.join("images");
    let master = fixture("gpt");
    capture_into(&master, &images, "compute");
    let key = SecretKey::generate().unwrap();
    let trusted = dir.join("site.pub");
    std::fs::write(&trusted, key.public("").to_text()).unwrap();
    Setup {
        _work: work,
        dir,
        images,
        master,
        trusted,
        key,
    }
}

/// A disk file the size of the master holding a pattern (so "unchanged" means something).
fn patterned(path: &Path, size: u64) -> String {
    let pattern: Vec<u8> = (0..2u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(path, &pattern).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
    sha256_file(path)
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn unsigned_tampered_and_unpinned_images_are_refused_before_any_write() {
    skip_unless_root!("loop devices");
    let s = setup();
    let port = serve_in_background(vec![s.images.clone()]);
    let server = format!("http://127.0.0.1:{port}");
    let trust = s.trusted.to_str().unwrap();
    let t = s.dir.join("node.img");
    let size = std::fs::metadata(&s.master).unwrap().len();
    let before = patterned(&t, size);
    let img = s.images.join("compute");

    // Unsigned.
    let o = agent(&server, &t, &["--trust", trust, "--node", "n1"]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(
        text.contains("refusing to clone, nothing written")
            && text.contains("is unsigned")
            && text.contains(&format!("{server}/compute"))
            && text.contains(&s.key.id),
        "{text}"
    );
    assert_eq!(sha256_file(&t), before, "an unsigned image was written");
    let board = imgtool::serve::fetch_status(&server).unwrap();
    assert_eq!(board["n1"].last.phase, "failed", "{board:?}");
    assert!(board["n1"].last.message.contains("unsigned"), "{board:?}");

    // Tampered, re-signed by another key.
    let good_id = imgtool::manifest::Image::open(&img)
        .unwrap()
        .id()
        .to_string();
    let new_id = tamper_and_rehash(&img);
    let evil = SecretKey::generate().unwrap();
    sign_dir(&img, &evil).unwrap();
    let o = agent(&server, &t, &["--trust", trust]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&new_id) && text.contains(&format!("signed by unknown key {}", evil.id)),
        "{text}"
    );
    assert_eq!(sha256_file(&t), before, "a tampered image was written");

    // Back to the real image, signed by the trusted key, but pinned to another id.
    std::fs::remove_dir_all(s.images.join("compute")).unwrap();
    capture_into(&s.master, &s.images, "compute");
    sign_dir(&img, &s.key).unwrap();
    let o = agent(&server, &t, &["--trust", trust, "--image-id", &new_id]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("pinned to id {new_id}")) && text.contains(&good_id),
        "{text}"
    );
    assert_eq!(sha256_file(&t), before, "an unpinned image was written");

    // Signed and pinned right: cloned.
    let o = agent(&server, &t, &["--trust", trust, "--image-id", &good_id]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains(&format!("signed by trusted key {}", s.key.id)),
        "{text}"
    );
    assert_restored(&s.master, &t, &[1, 2, 3, 4]);
}

/// Runs node `a` (a relay, trusting no key) and node `b` (its downstream, trusting the site
/// key) against the primary serving `s.images`; returns both outputs.
fn relay_pair(s: &Setup, name: &str) -> (Output, Output) {
    let relay_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let tree = s.dir.join(format!("tree-{name}"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(
        tree.join("clone-plan.json"),
        serde_json::json!({
            "relay_port": relay_port,
            "addresses": {"a": "127.0.0.1", "b": "127.0.0.1"},
            "nodes": {
                "a": {"upstream": "primary", "downstream": ["b"]},
                "b": {"upstream": "a", "downstream": []}
            }
        })
        .to_string(),
    )
    .unwrap();
    let port = serve_in_background(vec![s.images.clone(), tree]);
    let server = format!("http://127.0.0.1:{port}");
    let size = std::fs::metadata(&s.master).unwrap().len();
    let (ta, tb) = (
        s.dir.join(format!("{name}-a.img")),
        s.dir.join(format!("{name}-b.img")),
    );
    patterned(&ta, size);
    patterned(&tb, size);
    let trust = s.trusted.to_str().unwrap().to_string();
    let run = |node: &str, t: &Path, trusts: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_initrd-agent"));
        cmd.args(["clone", "--server", &server, "--group", "compute"])
            .arg("--target")
            .arg(t)
            .args(["--node", node, "--plan", "--relay-idle", "3"]);
        if trusts {
            cmd.args(["--trust", &trust]);
        }
        cmd.output().unwrap()
    };
    std::thread::scope(|sc| {
        let a = sc.spawn(|| run("a", &ta, false));
        // b starts second; its upstream waits for a's relay to come up.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = sc.spawn(|| run("b", &tb, true));
        (a.join().unwrap(), b.join().unwrap())
    })
}

#[test]
fn a_relay_passes_the_signature_on_even_when_it_checks_none_itself() {
    skip_unless_root!("loop devices");
    let s = setup();
    // Unsigned: b refuses, and says so without leaving its relay for the primary (an
    // absent signature file is not a dead upstream).
    let b_before = {
        // relay_pair lays the same pattern on b's disk: its hash before the run.
        let size = std::fs::metadata(&s.master).unwrap().len();
        let probe = s.dir.join("pattern-probe.img");
        patterned(&probe, size)
    };
    let (oa, ob) = relay_pair(&s, "unsigned");
    assert!(oa.status.success(), "a: {}", out(&oa));
    let b = out(&ob);
    assert!(!ob.status.success(), "b cloned an unsigned image: {b}");
    assert!(b.contains("is unsigned"), "{b}");
    assert!(!b.contains("rerouted"), "{b}");
    assert_eq!(
        sha256_file(&s.dir.join("unsigned-b.img")),
        b_before,
        "b wrote to its disk before refusing an unsigned image"
    );

    // Signed: a (no key of its own) passes the signature on, b checks and clones.
    sign_dir(&s.images.join("compute"), &s.key).unwrap();
    let (oa, ob) = relay_pair(&s, "signed");
    assert!(oa.status.success(), "a: {}", out(&oa));
    let b = out(&ob);
    assert!(ob.status.success(), "b: {b}");
    assert!(b.contains("upstreams: a -> primary"), "{b}");
    assert!(
        b.contains(&format!("signed by trusted key {}", s.key.id)),
        "{b}"
    );
    // b got manifest, signature and payload from a: it never moved to the primary, and
    // a served it at least the whole payload.
    assert!(!b.contains("rerouted"), "{b}");
    let a_log = out(&oa);
    let served: u64 = a_log
        .lines()
        .find_map(|l| l.split("relay served ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a says nothing of what it served: {a_log}"));
    let (payload, _) = payload_and_largest_frame(&s.images.join("compute"));
    assert!(
        served >= payload,
        "a served {served} of {payload} payload bytes"
    );
    assert_restored(&s.master, &s.dir.join("signed-b.img"), &[1, 2, 3, 4]);
}
