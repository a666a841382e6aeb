//! Telling a gone upstream from one not booted yet ("have you seen U?",
//! `netboot_proto::seen`), with real agents in network namespaces made by the test: a
//! chain primary → c1 → u1 → d1, d1's boot window 30 s (so its grace is 35 s).
//!
//! - u1 fetches part of the image from c1 and is **killed** (SIGKILL) before d1 starts:
//!   d1 finds u1's address refusing, asks c1 whether it has seen u1 (it has), and leaves
//!   u1 within seconds, not after the grace;
//! - u1 **finishes and exits** before d1 starts: the same, and c1 says u1 was done;
//! - u1 is simply **not booted yet** (started 5 s after d1): c1 has not seen it, d1 waits
//!   for it and pulls from it, never from c1.
//!
//! Each asserts what happened (which upstream d1 ended on and why, its disk identical to
//! the master); the only time asserted is d1's move against the grace, with a wide
//! margin (under grace − 10 s).

use netboot_proto::plan::{Candidate, NodePlan};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use test_fixtures::disk::{assert_restored, fixture, Loop};
use test_fixtures::image::capture_into;
use test_fixtures::netns::Lan;
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.79.0.1";
const C1: &str = "10.79.1.10";
const U1: &str = "10.79.1.11";
const D1: &str = "10.79.1.12";

/// d1's boot window, and so its grace (window + 5 s, `imgtool::source::boot_grace`).
const WINDOW: u64 = 30;

/// A process this test started, killed (by PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn imgtool_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_initrd-agent")).with_file_name("imgtool");
    assert!(
        p.exists(),
        "{} missing: build it with `cargo build -p imgtool`",
        p.display()
    );
    p
}

struct Chain {
    _work: tempfile::TempDir,
    dir: PathBuf,
    master: PathBuf,
    lan: Lan,
    /// Namespaces: primary, c1, u1, d1.
    ns: [String; 4],
}

fn candidate(node: &str, address: &str) -> Candidate {
    Candidate {
        node: node.into(),
        address: address.into(),
    }
}

/// The image, the node plans (d1 → u1 → c1 → primary) and the namespaces. c1 plans two
/// downstream nodes (u1, and d1 when it moves up), so it holds for d1.
fn chain(tag: &str) -> Chain {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let master = fixture("gpt");
    let images = dir.join("images");
    capture_into(&master, &images, "compute");
    let plan = |node: &str, upstreams: Vec<Candidate>, downstream| NodePlan {
        node: node.into(),
        group: "compute".into(),
        image: "compute".into(),
        entity: "rack1".into(),
        upstreams,
        downstream,
        relay_port: 8180,
        boot_window_s: WINDOW,
        ..NodePlan::default()
    };
    for np in [
        plan("c1", vec![], 2),
        plan("u1", vec![candidate("c1", C1)], 1),
        plan("d1", vec![candidate("u1", U1), candidate("c1", C1)], 0),
    ] {
        let path = images.join(NodePlan::path(&np.node));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&np).unwrap()).unwrap();
    }
    let mut lan = Lan::new(tag);
    let ns = [
        lan.host("p", &format!("{PRIMARY}/16")),
        lan.host("c1", &format!("{C1}/16")),
        lan.host("u1", &format!("{U1}/16")),
        lan.host("d1", &format!("{D1}/16")),
    ];
    Chain {
        _work: work,
        dir,
        master,
        lan,
        ns,
    }
}

fn start_primary(ns: &str, images: &Path) -> Proc {
    let child = Lan::cmd(ns, imgtool_bin().to_str().unwrap())
        .args(["serve", "--listen", &format!("{PRIMARY}:8080")])
        .arg(images)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let start = Instant::now();
    while !Lan::cmd(ns, "bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/{PRIMARY}/8080")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the primary did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

/// An agent this test started: its loop device, process and log.
struct Agent {
    _disk: Loop,
    proc: Proc,
    log: PathBuf,
}

/// Starts node `node`'s agent in namespace `k` on a fresh loop device, holding its relay
/// for `relay_idle` seconds without requests.
fn start_agent(c: &Chain, k: usize, node: &str, relay_idle: u64) -> Agent {
    let size = std::fs::metadata(&c.master).unwrap().len() * 3 / 2;
    let f = c.dir.join(format!("{node}.img"));
    std::fs::File::create(&f).unwrap().set_len(size).unwrap();
    let l = Loop::attach(&f, false);
    let log = c.dir.join(format!("{node}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Lan::cmd(&c.ns[k], env!("CARGO_BIN_EXE_initrd-agent"))
        .args(["clone", "--server", &format!("http://{PRIMARY}:8080")])
        .args(["--group", "compute", "--plan", "--node", node])
        .args(["--stall", "20", "--relay-idle", &relay_idle.to_string()])
        .args(["--boot-window", &WINDOW.to_string()])
        .args(["--attempts", "8", "--target"])
        .arg(&l.dev)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Agent {
        _disk: l,
        proc: Proc(child),
        log,
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until `log` contains `what` (bounded); how long that took.
fn wait_for(log: &Path, what: &str) -> Duration {
    let start = Instant::now();
    while !read(log).contains(what) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "never saw `{what}`:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Waits for an agent to end (bounded); its exit code.
fn exit_code(a: &mut Agent) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = a.proc.0.try_wait() {
            return s.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "did not finish:\n{}",
            read(&a.log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// d1, started now, leaves u1 for c1 because c1 has seen u1 (`how`: the reason's end),
/// well within its grace, and ends with the master's bytes.
fn d1_leaves_u1_at_once(c: &Chain, how: &str) {
    let mut d1 = start_agent(c, 3, "d1", 3);
    let moved = wait_for(&d1.log, "now pulling from c1");
    let grace = imgtool::source::boot_grace(Duration::from_secs(WINDOW));
    let log = read(&d1.log);
    assert!(
        log.contains(&format!(
            "{U1}:8180 was seen by {C1}:8180 and is gone: {how}"
        )),
        "d1 did not leave u1 for having been seen:\n{log}"
    );
    assert!(
        moved < grace - Duration::from_secs(10),
        "d1 took {moved:?} to leave u1 (grace {grace:?}):\n{log}"
    );
    assert_eq!(exit_code(&mut d1), 0, "d1 failed:\n{}", read(&d1.log));
    assert_restored(&c.master, &c.dir.join("d1.img"), &[1, 2, 3, 4]);
}

#[test]
fn an_upstream_killed_before_its_downstream_boots_is_left_without_the_grace() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("ga");
    let _primary = start_primary(&c.ns[0], &c.dir.join("images"));
    // c1 sends slowly, so u1 is mid-stream from it for a while.
    c.lan.limit(&c.ns[1], "16mbit");
    let _c1 = start_agent(&c, 1, "c1", 120);
    let mut u1 = start_agent(&c, 2, "u1", 3);
    wait_for(&u1.log, "restoring");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !read(&u1.log).contains("done: image"),
        "u1 finished before it was killed: the test proves nothing\n{}",
        read(&u1.log)
    );
    // SIGKILL, by PID: its address now refuses, like one whose agent has not started.
    u1.proc.0.kill().unwrap();
    u1.proc.0.wait().unwrap();
    d1_leaves_u1_at_once(
        &c,
        "it fetched from there, so it had booted, and no longer answers",
    );
}

#[test]
fn an_upstream_that_finished_and_exited_is_left_without_the_grace() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("gb");
    let _primary = start_primary(&c.ns[0], &c.dir.join("images"));
    let _c1 = start_agent(&c, 1, "c1", 120);
    // u1 clones, tells c1 it is done, holds 2 s for a downstream that does not come, exits.
    let mut u1 = start_agent(&c, 2, "u1", 2);
    assert_eq!(exit_code(&mut u1), 0, "u1 failed:\n{}", read(&u1.log));
    d1_leaves_u1_at_once(&c, "it finished there and exited");
}

#[test]
fn an_upstream_not_booted_yet_is_still_waited_for() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("gc");
    let _primary = start_primary(&c.ns[0], &c.dir.join("images"));
    let _c1 = start_agent(&c, 1, "c1", 120);
    wait_for(&c.dir.join("c1.log"), "restoring");
    let mut d1 = start_agent(&c, 3, "d1", 3);
    // d1 asks c1 about u1 several times while u1 is off: "not seen".
    std::thread::sleep(Duration::from_secs(5));
    let mut u1 = start_agent(&c, 2, "u1", 30);
    assert_eq!(exit_code(&mut d1), 0, "d1 failed:\n{}", read(&d1.log));
    let log = read(&d1.log);
    assert!(!log.contains("rerouted"), "d1 left a late u1:\n{log}");
    assert_eq!(exit_code(&mut u1), 0, "u1 failed:\n{}", read(&u1.log));
    let ulog = read(&u1.log);
    assert!(
        ulog.contains("relay released: all 1 downstream node(s) have every chunk"),
        "d1 did not take the image from u1:\n{ulog}"
    );
    assert_restored(&c.master, &c.dir.join("d1.img"), &[1, 2, 3, 4]);
}
