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

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
use chain::{exit_code, node_plan, read, start_agent, wait_for, Agent, Chain};
use cluster::Proc;
use std::process::Command;
use std::time::Duration;
use test_fixtures::disk::assert_restored;
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.78.0.1";
const A: &str = "10.78.1.10";
const B: &str = "10.78.1.11";

/// Sends `signal` (`-STOP`, `-CONT`) to a process this test started, by its PID.
fn signal(p: &Proc, signal: &str) {
    let st = Command::new("kill")
        .args([signal, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {signal} {}", p.0.id());
}

/// The image, the node plans (b1 → a1 → primary) and the namespaces (primary, a1, b1;
/// their links are h1, h2, h3).
fn chain(tag: &str) -> Chain {
    chain::chain(
        tag,
        PRIMARY,
        &[("a1", A), ("b1", B)],
        &[node_plan("a1", &[], 1), node_plan("b1", &[("a1", A)], 0)],
    )
}

/// Starts node `node`'s agent in `ns` on a fresh loop device, with stall limit `stall`.
fn start(c: &Chain, ns: &str, node: &str, stall: u64) -> Agent {
    let stall = stall.to_string();
    start_agent(c, ns, node, &["--stall", &stall, "--relay-idle", "3"])
}

#[test]
fn a_relay_gone_silent_is_left_for_the_primary_within_the_keepalive() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("k");
    let _primary = c.start_primary();
    // a1 sends slowly, so b1 is mid-stream from it for a while.
    c.lan.limit(&c.ns[1], "16mbit");
    let a1 = start(&c, &c.ns[1], "a1", 20);
    // b1's stall is longer than this test waits for it: only keepalive can move it.
    let mut b1 = start(&c, &c.ns[2], "b1", 3000);
    wait_for(&b1.log, "restoring");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !read(&b1.log).contains("done: image"),
        "b1 finished before a1 went silent: the test proves nothing\n{}",
        read(&b1.log)
    );
    // a1 goes silent: its link down, its process alive (no FIN, no RST to anyone).
    c.lan_link(&c.ns[1], "h2", "down");
    let code = exit_code(&mut b1);
    let log = read(&b1.log);
    assert_eq!(code, 0, "b1 failed:\n{log}\n--- a1:\n{}", read(&a1.log));
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
    let primary = c.start_primary();
    // The primary sends slowly, so a1 (and b1 behind it) are mid-stream for a while.
    c.lan.limit(&c.ns[0], "16mbit");
    let mut a1 = start(&c, &c.ns[1], "a1", 30);
    let mut b1 = start(&c, &c.ns[2], "b1", 30);
    wait_for(&b1.log, "restoring");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !read(&a1.log).contains("done: image"),
        "a1 finished before the primary paused: the test proves nothing\n{}",
        read(&a1.log)
    );
    // The primary's program stops for 3 x the keepalive detection (its kernel still
    // answers): a1 waits for it, sending b1 nothing, and is alive all along.
    signal(&primary, "-STOP");
    std::thread::sleep(3 * imgtool::source::client::KEEPALIVE.detection());
    signal(&primary, "-CONT");
    let (ca, cb) = (exit_code(&mut a1), exit_code(&mut b1));
    let (a, b) = (read(&a1.log), read(&b1.log));
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
