//! The agent's clone flow as an ordinary process (the same code PID 1 runs), against an
//! `imgtool serve` on loopback, on disk files: every failure ends in a clear message, a
//! disk not yet touched is left byte-for-byte unchanged, a touched one never looks
//! bootable, and a dropped connection resumes at its chunk.

mod common;
use common::agent;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use test_fixtures::disk::{assert_restored, fixture, sha256_file};
use test_fixtures::image::{capture_into, corrupt_chunk, payload_and_largest_frame};
use test_fixtures::servers::serve_in_background;
use test_fixtures::servers::Nginx;
use test_fixtures::skip_unless_root;

struct Setup {
    _work: tempfile::TempDir,
    dir: PathBuf,
    images: PathBuf,
    master: PathBuf,
}

fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    let master = fixture("gpt");
    capture_into(&master, &images, "compute");
    Setup {
        dir: work.path().to_path_buf(),
        images,
        master,
        _work: work,
    }
}

fn blank(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn clones_a_file_disk_from_the_server() {
    skip_unless_root!("loop devices");
    let s = setup();
    let port = serve_in_background(vec![s.images.clone()]);
    let t = s.dir.join("node.img");
    blank(&t, std::fs::metadata(&s.master).unwrap().len());
    let o = agent(&format!("http://127.0.0.1:{port}"), &t, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_restored(&s.master, &t, &[1, 2, 3, 4]);
}

#[test]
fn clones_from_a_stock_nginx_without_a_status_board() {
    skip_unless_root!("loop devices");
    let s = setup();
    let nginx = Nginx::start(&s.images);
    let t = s.dir.join("node.img");
    blank(&t, std::fs::metadata(&s.master).unwrap().len() * 3 / 2);
    let o = agent(&format!("http://127.0.0.1:{}", nginx.port), &t, &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}{out}", stderr(&o));
    assert!(
        out.contains("status report not delivered"),
        "nginx has no board, the agent should say so once:\n{out}"
    );
    assert!(out.contains("done: image"), "{out}");
    assert_restored(&s.master, &t, &[1, 2, 3, 4]);
}

#[test]
fn server_unreachable_leaves_the_disk_unchanged() {
    skip_unless_root!("loop devices");
    let s = setup();
    let t = s.dir.join("node.img");
    blank(&t, 256 << 20);
    std::fs::write(&t, vec![0x5a; 1 << 20]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let before = sha256_file(&t);
    // Port 9 (discard) on loopback: nothing listens there.
    let o = agent("http://127.0.0.1:9", &t, &["--attempts", "2"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("http://127.0.0.1:9/compute/manifest") && e.contains("after 2 attempts"),
        "{e}"
    );
    assert_eq!(before, sha256_file(&t));
}

#[test]
fn disk_too_small_is_refused_before_any_write() {
    skip_unless_root!("loop devices");
    let s = setup();
    let port = serve_in_background(vec![s.images.clone()]);
    let t = s.dir.join("small.img");
    blank(&t, 64 << 20);
    let before = sha256_file(&t);
    let o = agent(&format!("http://127.0.0.1:{port}"), &t, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("too small"), "{e}");
    assert_eq!(before, sha256_file(&t));
}

#[test]
fn no_disk_matching_the_hints_lists_the_candidates() {
    let o = Command::new(env!("CARGO_BIN_EXE_initrd-agent"))
        .args([
            "clone",
            "--server",
            "http://127.0.0.1:9",
            "--group",
            "compute",
        ])
        .args(["--hint", "serial=no-such-serial-anywhere"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("no disk matches the target hints `serial=no-such-serial-anywhere`"),
        "{e}"
    );
    assert!(e.contains("candidates:"), "{e}");
}

#[test]
fn a_corrupted_chunk_is_named_and_the_disk_never_looks_bootable() {
    skip_unless_root!("loop devices");
    let s = setup();
    let bad = s.dir.join("bad");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&s.images)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(out.success());
    corrupt_chunk(&bad.join("compute"), "p2", 1);
    let port = serve_in_background(vec![bad.clone()]);

    // The target held a valid (different) partition table before.
    let t = s.dir.join("node.img");
    blank(&t, 384 << 20);
    assert!(Command::new("sgdisk")
        .args(["-o", "-n", "1:2048:+100M"])
        .arg(&t)
        .output()
        .unwrap()
        .status
        .success());
    let o = agent(&format!("http://127.0.0.1:{port}"), &t, &["--node", "n07"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("partition p2, chunk 1"),
        "error does not name the chunk: {e}"
    );
    let pt = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "PTTYPE"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&pt.stdout).trim().is_empty(),
        "a half-cloned disk still has a partition table: {}",
        String::from_utf8_lossy(&pt.stdout)
    );
    let board = imgtool::serve::fetch_status(&format!("http://127.0.0.1:{port}")).unwrap();
    assert_eq!(board["n07"].last.phase, "failed", "{board:?}");
    assert!(board["n07"].last.message.contains("chunk 1"));
}

/// A TCP proxy that cuts the connection (both directions, mid-response) after
/// `cut_after` bytes from upstream, `cuts` times; then forwards faithfully.
fn flaky_proxy(upstream: u16, cut_after: u64, cuts: u32) -> (u16, Arc<AtomicU32>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let left = Arc::new(AtomicU32::new(cuts));
    let done = Arc::new(AtomicU32::new(0));
    let (left2, done2) = (left.clone(), done.clone());
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (left, done) = (left2.clone(), done2.clone());
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            std::thread::spawn(move || {
                let (mut s_read, mut c_write) = (server, client);
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0u64;
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent + n as u64 > cut_after
                        && left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
                            .is_ok()
                    {
                        let _ =
                            c_write.write_all(&buf[..(cut_after - sent.min(cut_after)) as usize]);
                        let _ = c_write.shutdown(std::net::Shutdown::Both);
                        let _ = s_read.shutdown(std::net::Shutdown::Both);
                        done.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                }
            });
        }
    });
    (port, done)
}

#[test]
fn a_dropped_connection_resumes_at_its_chunk() {
    skip_unless_root!("loop devices");
    let s = setup();
    let port = serve_in_background(vec![s.images.clone()]);
    let (proxy, cut) = flaky_proxy(port, 1_500_000, 2);
    let t = s.dir.join("node.img");
    blank(&t, std::fs::metadata(&s.master).unwrap().len());
    let o = agent(&format!("http://127.0.0.1:{proxy}"), &t, &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}{out}", stderr(&o));
    assert_eq!(
        cut.load(Ordering::SeqCst),
        2,
        "the proxy did not cut the transfer twice"
    );
    assert_restored(&s.master, &t, &[1, 2, 3, 4]);
    // Nothing restarted from zero: fetched ≤ the payloads + one chunk per interruption.
    let fetched: u64 = out
        .split("verified (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fetched figure in: {out}"));
    let (payload, largest) = payload_and_largest_frame(&s.images.join("compute"));
    assert!(
        fetched <= payload + 2 * largest,
        "fetched {fetched} bytes for {payload} bytes of payload with 2 interruptions"
    );
}
