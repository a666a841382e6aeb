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

#[path = "common/chain.rs"]
mod chain;
#[path = "common/cluster.rs"]
mod cluster;
use chain::{exit_code, read, start_agent, wait_for, Agent, Chain};
use netboot_proto::plan::NodePlan;
use std::time::Duration;
use test_fixtures::disk::assert_restored;
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.79.0.1";
const C1: &str = "10.79.1.10";
const U1: &str = "10.79.1.11";
const D1: &str = "10.79.1.12";

/// d1's boot window, and so its grace (window + 5 s, `imgtool::source::boot_grace`).
const WINDOW: u64 = 30;

/// The image, the node plans (d1 → u1 → c1 → primary) and the namespaces (primary, c1,
/// u1, d1). c1 plans two downstream nodes (u1, and d1 when it moves up), so it holds for
/// d1.
fn chain(tag: &str) -> Chain {
    let plan = |node: &str, upstreams: &[(&str, &str)], downstream| NodePlan {
        boot_window_s: WINDOW,
        ..chain::node_plan(node, upstreams, downstream)
    };
    chain::chain(
        tag,
        PRIMARY,
        &[("c1", C1), ("u1", U1), ("d1", D1)],
        &[
            plan("c1", &[], 2),
            plan("u1", &[("c1", C1)], 1),
            plan("d1", &[("u1", U1), ("c1", C1)], 0),
        ],
    )
}

/// Starts node `node`'s agent in namespace `k` on a fresh loop device, holding its relay
/// for `relay_idle` seconds without requests.
fn start(c: &Chain, k: usize, node: &str, relay_idle: u64) -> Agent {
    let (idle, window) = (relay_idle.to_string(), WINDOW.to_string());
    let flags = [
        "--stall",
        "20",
        "--relay-idle",
        &idle,
        "--boot-window",
        &window,
    ];
    start_agent(c, &c.ns[k], node, &flags)
}

/// d1, started now, leaves u1 for c1 because c1 has seen u1 (`how`: the reason's end),
/// well within its grace, and ends with the master's bytes.
fn d1_leaves_u1_at_once(c: &Chain, how: &str) {
    let mut d1 = start(c, 3, "d1", 3);
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
    let _primary = c.start_primary();
    // c1 sends slowly, so u1 is mid-stream from it for a while.
    c.lan.limit(&c.ns[1], "16mbit");
    let _c1 = start(&c, 1, "c1", 120);
    let mut u1 = start(&c, 2, "u1", 3);
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
    let _primary = c.start_primary();
    let _c1 = start(&c, 1, "c1", 120);
    // u1 clones, tells c1 it is done, holds 2 s for a downstream that does not come, exits.
    let mut u1 = start(&c, 2, "u1", 2);
    assert_eq!(exit_code(&mut u1), 0, "u1 failed:\n{}", read(&u1.log));
    d1_leaves_u1_at_once(&c, "it finished there and exited");
}

#[test]
fn an_upstream_not_booted_yet_is_still_waited_for() {
    skip_unless_root!("network namespaces, loop devices");
    let c = chain("gc");
    let _primary = c.start_primary();
    let _c1 = start(&c, 1, "c1", 120);
    wait_for(&c.dir.join("c1.log"), "restoring");
    let mut d1 = start(&c, 3, "d1", 3);
    // d1 asks c1 about u1 several times while u1 is off: "not seen".
    std::thread::sleep(Duration::from_secs(5));
    let mut u1 = start(&c, 2, "u1", 30);
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
