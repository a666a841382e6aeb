//! Telling a dead upstream from a quiet one, with real agents in network namespaces made
//! by the test: a chain primary → a1 (relay) → b1.
//!
//! - a1 goes **silent** mid-stream (its link is set down: no reset ever reaches b1, as
//!   with a node that loses power): b1 finds it dead by TCP keepalive and moves to the
//!   primary, at the frame it reached, and finishes verified. Its stall limit is set far
//!   longer than the test could wait, so only the keepalive can have moved it, and the
//!   reason it gives says so.
//! - the primary **pauses** (SIGSTOP: its kernel still answers, its program sends
//!   nothing) for longer than the keepalive detection: a1 is then a live relay that
//!   waits for its own upstream, and b1 must stay with it, not move up.
//!
//! Both assert outcomes (b1's disk identical to the master, which upstream it ended on,
//! the reason), not wall time.

use netboot_proto::plan::{Candidate, NodePlan};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_fixtures::disk::{assert_restored, fixture, Loop};
use test_fixtures::image::capture_into;
use test_fixtures::netns::Lan;
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.78.0.1";
const A: &str = "10.78.1.10";
const B: &str = "10.78.1.11";

/// A process this test started, killed (by PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process this test started, by its PID.
fn signal(p: &Proc, signal: &str) {
    let st = Command::new("kill")
        .args([signal, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {signal} {}", p.0.id());
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
    /// Namespaces: primary, a1, b1 (their links are h1, h2, h3).
    ns: [String; 3],
}

/// The image, the node plans (b1 → a1 → primary) and the namespaces.
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
        ..NodePlan::default()
    };
    let a1 = Candidate {
        node: "a1".into(),
        address: A.into(),
    };
    for np in [plan("a1", vec![], 1), plan("b1", vec![a1], 0)] {
        let path = images.join(NodePlan::path(&np.node));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&np).unwrap()).unwrap();
    }
    let mut lan = Lan::new(tag);
    let ns = [
        lan.host("p", &format!("{PRIMARY}/16")),
        lan.host("a1", &format!("{A}/16")),
        lan.host("b1", &format!("{B}/16")),
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

/// Starts node `node`'s agent in `ns` on a fresh loop device; the loop device, the
/// process and the log.
fn start_agent(c: &Chain, ns: &str, node: &str, stall: u64) -> (Loop, Proc, PathBuf) {
    let size = std::fs::metadata(&c.master).unwrap().len() * 3 / 2;
    let f = c.dir.join(format!("{node}.img"));
    std::fs::File::create(&f).unwrap().set_len(size).unwrap();
    let l = Loop::attach(&f, false);
    let log = c.dir.join(format!("{node}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Lan::cmd(ns, env!("CARGO_BIN_EXE_initrd-agent"))
        .args(["clone", "--server", &format!("http://{PRIMARY}:8080")])
        .args(["--group", "compute", "--plan", "--node", node])
        .args(["--stall", &stall.to_string(), "--relay-idle", "3"])
        .args(["--attempts", "8", "--target"])
        .arg(&l.dev)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (l, Proc(child), log)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until `log` contains `what` (bounded: a node that never gets there fails).
fn wait_for(log: &Path, what: &str) {
    let start = Instant::now();
    while !read(log).contains(what) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "never saw `{what}`:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a process to end (bounded); its exit code.
fn exit_code(p: &mut Proc, log: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = p.0.try_wait() {
            return s.code().unwrap_or(-1);
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "did not finish:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_relay_gone_silent_is_left_for_the_primary_within_the_keepalive() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("k");
    let _primary = start_primary(&c.ns[0], &c.dir.join("images"));
    // a1 sends slowly, so b1 is mid-stream from it for a while.
    c.lan.limit(&c.ns[1], "16mbit");
    let (_la, _pa, alog) = start_agent(&c, &c.ns[1], "a1", 20);
    // b1's stall is longer than this test waits for it: only keepalive can move it.
    let (_lb, mut pb, blog) = start_agent(&c, &c.ns[2], "b1", 3000);
    wait_for(&blog, "restoring");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !read(&blog).contains("done: image"),
        "b1 finished before a1 went silent: the test proves nothing\n{}",
        read(&blog)
    );
    // a1 goes silent: its link down, its process alive (no FIN, no RST to anyone).
    c.lan_link(&c.ns[1], "h2", "down");
    let code = exit_code(&mut pb, &blog);
    let log = read(&blog);
    assert_eq!(code, 0, "b1 failed:\n{log}\n--- a1:\n{}", read(&alog));
    assert!(
        log.contains("rerouted: upstream a1 failed")
            && log.contains("no answer to TCP keepalive")
            && log.contains("now pulling from primary"),
        "b1 did not move to the primary for a dead a1:\n{log}"
    );
    assert_restored(&c.master, &c.dir.join("b1.img"), &[1, 2, 3, 4]);
}

#[test]
fn a_live_relay_waiting_for_its_own_upstream_is_not_left() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("q");
    let primary = start_primary(&c.ns[0], &c.dir.join("images"));
    // The primary sends slowly, so a1 (and b1 behind it) are mid-stream for a while.
    c.lan.limit(&c.ns[0], "16mbit");
    let (_la, mut pa, alog) = start_agent(&c, &c.ns[1], "a1", 30);
    let (_lb, mut pb, blog) = start_agent(&c, &c.ns[2], "b1", 30);
    wait_for(&blog, "restoring");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !read(&alog).contains("done: image"),
        "a1 finished before the primary paused: the test proves nothing\n{}",
        read(&alog)
    );
    // The primary's program stops for 3 x the keepalive detection (its kernel still
    // answers): a1 waits for it, sending b1 nothing, and is alive all along.
    signal(&primary, "-STOP");
    std::thread::sleep(3 * imgtool::source::client::KEEPALIVE.detection());
    signal(&primary, "-CONT");
    let (ca, cb) = (exit_code(&mut pa, &alog), exit_code(&mut pb, &blog));
    let (a, b) = (read(&alog), read(&blog));
    assert_eq!((ca, cb), (0, 0), "a1:\n{a}\n--- b1:\n{b}");
    assert!(!b.contains("rerouted"), "b1 left a live relay:\n{b}");
    assert!(b.contains("upstreams: a1 -> primary"), "{b}");
    assert_restored(&c.master, &c.dir.join("b1.img"), &[1, 2, 3, 4]);
    assert_restored(&c.master, &c.dir.join("a1.img"), &[1, 2, 3, 4]);
}

impl Chain {
    /// `ip link set dev DEV up|down` inside `ns`.
    fn lan_link(&self, ns: &str, dev: &str, state: &str) {
        test_fixtures::netns::ip(&["-n", ns, "link", "set", "dev", dev, state]);
    }
}
