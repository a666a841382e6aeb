//! The agent's backup mode as an ordinary process (`initrd-agent backup`, the code PID 1
//! runs for `netboot.mode=backup`) against `imgtool serve` with uploads on loopback, on
//! the fixture disks: through a TCP proxy that cuts the upload half-way or flips one byte
//! of it, nothing is published, the old version stays current and cloneable (by the
//! agent), and a rerun publishes the image a local `imgtool capture` makes. A clone that
//! is running while a new version is published ends verified with the version it began.

mod common;
use common::agent;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use test_fixtures::disk::{assert_restored, fixture};
use test_fixtures::image::capture_into;
use test_fixtures::skip_unless_root;

/// One disk comparison at a time in this process: each attaches loop devices and adds
/// their partitions (partx), which parallel tests were seen to race on.
static LOOPS: Mutex<()> = Mutex::new(());

fn assert_equal_disks(master: &Path, target: &Path) {
    let _one = LOOPS.lock().unwrap_or_else(|e| e.into_inner());
    assert_restored(master, target, parts(master));
}

const TOKEN_A: &str = "tokenAAAAAAAAAAAAAAAAAAAA";
const TOKEN_B: &str = "tokenBBBBBBBBBBBBBBBBBBBB";

/// An `imgtool serve` taking uploads into `root` (tokens file beside it, outside the
/// served root), in a thread of this test process.
struct Server {
    port: u16,
    root: PathBuf,
}

impl Server {
    fn start(dir: &Path, tokens: &[&str]) -> Server {
        let root = dir.join("images");
        std::fs::create_dir_all(&root).unwrap();
        let file = dir.join("upload-tokens");
        let text: String = tokens.iter().map(|t| format!("compute {t}\n")).collect();
        std::fs::write(&file, text).unwrap();
        let bound = imgtool::serve::bind_with_uploads(
            imgtool::serve::ServeOptions {
                roots: vec![root.clone()],
                listen: "127.0.0.1:0".into(),
                max_connections: imgtool::httpd::DEFAULT_MAX_CONNECTIONS,
            },
            Some(imgtool::upload::UploadOptions {
                tokens: file,
                keep: 3,
                max_upload_bytes: imgtool::upload::server::DEFAULT_MAX_UPLOAD,
            }),
        )
        .expect("binding imgtool serve with uploads");
        let port = bound.addr().expect("server address").port();
        std::thread::spawn(move || bound.run());
        Server { port, root }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The version `ROOT/compute` points at (`compute@<id12>`), if any.
    fn current(&self) -> Option<String> {
        std::fs::read_link(self.root.join("compute"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Every published version directory.
    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("compute@"))
            .collect();
        v.sort();
        v
    }
}

/// `initrd-agent backup` of `disk` to `server` as group `compute`.
fn backup(server: &str, token: &str, disk: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_initrd-agent"))
        .args([
            "backup", "--server", server, "--group", "compute", "--token", token, "--disk",
        ])
        .arg(disk)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The image id a local `imgtool capture` of `disk` gives.
fn local_id(disk: &Path, dir: &Path) -> String {
    let images = dir.join("local");
    capture_into(disk, &images, "g");
    let id = imgtool::manifest::Image::open(&images.join("g"))
        .unwrap()
        .id()
        .to_string();
    std::fs::remove_dir_all(&images).unwrap();
    id
}

fn version_of(id: &str) -> String {
    format!("compute@{}", &id[..12])
}

/// Clones the server's current `compute` with the agent onto a fresh blank disk and
/// checks it equals `master` (tables, UUIDs, trees, `e2fsck -fn`).
fn assert_clones_to(server: &str, master: &Path, dir: &Path, name: &str) {
    let t = blank(master, dir, name);
    let o = agent(server, &t, &[]);
    assert!(o.status.success(), "clone failed:\n{}", text(&o));
    assert_equal_disks(master, &t);
    std::fs::remove_file(&t).unwrap();
}

/// A blank disk file of `master`'s size.
fn blank(master: &Path, dir: &Path, name: &str) -> PathBuf {
    let t = dir.join(name);
    std::fs::File::create(&t)
        .unwrap()
        .set_len(std::fs::metadata(master).unwrap().len())
        .unwrap();
    t
}

/// The data partitions of the fixture `master` (scripts/make-fixture.sh).
fn parts(master: &Path) -> &'static [u32] {
    if master.to_string_lossy().contains("mbr-") {
        &[1, 5, 6]
    } else {
        &[1, 2, 3, 4]
    }
}

/// What the proxy does to the bytes it forwards.
#[derive(Clone)]
enum Fault {
    /// Cuts the first connection whose upload (client → server) passes this many bytes
    /// in total; later connections are forwarded faithfully.
    CutUpload(u64),
    /// Flips one bit of the upload's byte at this offset (counted over all connections).
    FlipUpload(u64),
    /// Holds the download (server → client) once this many bytes passed, until the gate
    /// opens.
    HoldDownload(u64, Arc<Gate>),
}

#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    reached: AtomicBool,
}

impl Gate {
    fn wait(&self) {
        self.reached.store(true, Ordering::SeqCst);
        let mut o = self.open.lock().unwrap();
        while !*o {
            o = self.cv.wait(o).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// A TCP proxy on loopback in front of `upstream`; returns its port and whether the
/// fault happened.
fn proxy(upstream: u16, fault: Fault) -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hit = Arc::new(AtomicBool::new(false));
    let up_total = Arc::new(AtomicU64::new(0));
    let down_total = Arc::new(AtomicU64::new(0));
    let hit2 = hit.clone();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (f, h, t) = (fault.clone(), hit2.clone(), up_total.clone());
            std::thread::spawn(move || pump(client, server, &f, &h, &t, true));
            let (f, h, t) = (fault.clone(), hit2.clone(), down_total.clone());
            std::thread::spawn(move || pump(s2, c2, &f, &h, &t, false));
        }
    });
    (port, hit)
}

/// Copies `from` → `to`, applying `fault` to its direction (`up`: client → server).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: &Fault,
    hit: &AtomicBool,
    total: &AtomicU64,
    up: bool,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let start = total.fetch_add(n as u64, Ordering::SeqCst);
        let end = start + n as u64;
        match fault {
            Fault::CutUpload(at) if up && end > *at && !hit.swap(true, Ordering::SeqCst) => {
                let keep = at.saturating_sub(start) as usize;
                let _ = to.write_all(&buf[..keep.min(n)]);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            Fault::FlipUpload(at) if up && (start..end).contains(at) => {
                buf[(at - start) as usize] ^= 0x40;
                hit.store(true, Ordering::SeqCst);
            }
            Fault::HoldDownload(at, gate)
                if !up && end > *at && !hit.swap(true, Ordering::SeqCst) =>
            {
                gate.wait();
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Where the version tests start: a server in `w` taking TOKEN_A and TOKEN_B, whose
/// current version is the old master (`mbr`), backed up by the agent straight to the
/// server with TOKEN_A. Returns the server, the old and the new (`gpt`) master, and
/// that backup's output.
fn old_version_published(w: &Path) -> (Server, PathBuf, PathBuf, Output) {
    let (old, new) = (fixture("mbr"), fixture("gpt"));
    let s = Server::start(w, &[TOKEN_A, TOKEN_B]);
    let o = backup(&s.url(), TOKEN_A, &old);
    assert!(o.status.success(), "{}", text(&o));
    (s, old, new, o)
}

#[test]
fn a_cut_upload_publishes_nothing_the_old_version_stays_cloneable_and_a_rerun_publishes() {
    skip_unless_root!("fixture disks and loop devices");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (s, old, new, o) = old_version_published(w);
    let old_id = local_id(&old, w);
    assert_eq!(s.current(), Some(version_of(&old_id)));
    assert!(text(&o).contains(&old_id), "{}", text(&o));

    // Half-way through the new master's upload the connection is cut.
    let payload = {
        let d = w.join("probe");
        capture_into(&new, &d, "g");
        test_fixtures::image::payload_and_largest_frame(&d.join("g")).0
    };
    let (p, cut) = proxy(s.port, Fault::CutUpload(payload / 2));
    let via = format!("http://127.0.0.1:{p}");
    let o = backup(&via, TOKEN_B, &new);
    assert!(
        cut.load(Ordering::SeqCst),
        "the proxy never cut:\n{}",
        text(&o)
    );
    assert!(!o.status.success(), "a cut upload succeeded:\n{}", text(&o));
    assert_eq!(s.current(), Some(version_of(&old_id)), "{}", text(&o));
    assert_eq!(
        s.versions(),
        [version_of(&old_id)],
        "something was published"
    );
    assert_clones_to(&s.url(), &old, w, "after-cut.img");

    // The rerun (same token: a cut upload did not spend it) publishes the new master,
    // with the id a local capture gives.
    let o = backup(&via, TOKEN_B, &new);
    assert!(o.status.success(), "{}", text(&o));
    let new_id = local_id(&new, w);
    assert_eq!(s.current(), Some(version_of(&new_id)), "{}", text(&o));
    assert!(text(&o).contains(&new_id), "{}", text(&o));
    assert_clones_to(&s.url(), &new, w, "after-rerun.img");
}

#[test]
fn a_byte_flipped_in_transit_is_refused_naming_the_chunk_and_nothing_is_published() {
    skip_unless_root!("fixture disks and loop devices");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let master = fixture("gpt");
    let s = Server::start(w, &[TOKEN_A]);
    // Well inside the first partition's frames (the head region is small).
    let (p, flipped) = proxy(s.port, Fault::FlipUpload(3 << 20));
    let o = backup(&format!("http://127.0.0.1:{p}"), TOKEN_A, &master);
    let out = text(&o);
    assert!(
        flipped.load(Ordering::SeqCst),
        "the proxy flipped nothing:\n{out}"
    );
    assert!(!o.status.success(), "a corrupted upload succeeded:\n{out}");
    assert!(
        out.contains("region ") && out.contains(" chunk ") && out.contains("HTTP 422"),
        "the refusal names no region and chunk:\n{out}"
    );
    assert_eq!(s.current(), None, "{out}");
    assert!(
        s.versions().is_empty(),
        "something was published: {:?}",
        s.versions()
    );
    // Nothing spent: the same token publishes once the path is clean.
    let o = backup(&s.url(), TOKEN_A, &master);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(s.current(), Some(version_of(&local_id(&master, w))));
}

#[test]
fn a_clone_running_while_a_new_version_is_published_ends_verified_with_the_old_one() {
    skip_unless_root!("fixture disks and loop devices");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (s, old, new, _) = old_version_published(w);
    let old_version = s.current().unwrap();

    // The clone reads the manifest and layout, then stalls mid-payload in the proxy.
    let gate = Arc::new(Gate::default());
    let (p, held) = proxy(s.port, Fault::HoldDownload(1 << 20, gate.clone()));
    let t = blank(&old, w, "node.img");
    let via = format!("http://127.0.0.1:{p}");
    let clone = {
        let (via, t) = (via.clone(), t.clone());
        std::thread::spawn(move || agent(&via, &t, &["--stall", "600"]))
    };
    while !held.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Meanwhile the new master is published as the group's current version.
    let o = backup(&s.url(), TOKEN_B, &new);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(s.current().unwrap(), old_version);
    gate.open();
    let o = clone.join().unwrap();
    assert!(
        o.status.success(),
        "the clone did not finish:\n{}",
        text(&o)
    );
    assert!(
        text(&o).contains(&old_version),
        "the clone did not pin the version it began with:\n{}",
        text(&o)
    );
    assert_equal_disks(&old, &t);
}
