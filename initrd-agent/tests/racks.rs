//! Many-node cloning in network namespaces made by the test: a primary running the real
//! `imgtool serve` binary, 3 racks × 4 nodes, each node an agent process in its own
//! namespace cloning to its own loop device, following the clone plan from pxe-builder:
//! rack secondaries relay cut-through (secondary k pulls from k-1), the other nodes pull
//! from their rack's secondary. Every disk must end verified-identical to the master.

#[path = "common/cluster.rs"]
mod cluster;
use cluster::{name, spawn_agent, start_primary, status, wait, Proc, Site, Spec};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_fixtures::disk::{assert_restored, Loop};
use test_fixtures::image::payload_and_largest_frame;
use test_fixtures::servers::Nginx;
use test_fixtures::skip_unless_root;

const RACKS: usize = 3;
const PER_RACK: usize = 4;
/// The primary's image server (the cluster's `image_server`).
const URL: &str = "http://10.77.0.1:8080";

/// The primary image server of a test (held for its `Drop`, which stops it).
#[allow(dead_code)]
enum Primary {
    Serve(Proc),
    Nginx(Nginx),
    Stopped,
}

/// The site, its primary and how many tries each agent's requests get.
struct Cluster {
    site: Site,
    primary: Primary,
    attempts: u32,
}

impl std::ops::Deref for Cluster {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.site
    }
}

fn setup(tag: &str, nginx: bool, shape: &str) -> Cluster {
    setup_with(tag, nginx, shape, "")
}

/// [`setup`] with `extra` lines in `[cluster]` (link rates, `tree_fanout`).
fn setup_with(tag: &str, nginx: bool, shape: &str, extra: &str) -> Cluster {
    // The clone plan and node plans from a real cluster description.
    let site = Spec {
        name: "racks",
        net: 77,
        group: "compute",
        group_extra: "",
        shape,
        cluster_extra: extra,
        racks: RACKS,
        per_rack: PER_RACK,
    }
    .fixture_site(tag);
    let primary = if nginx {
        Primary::Nginx(Nginx::start_in(
            Some(&site.primary_ns),
            "10.77.0.1",
            8080,
            &site.images,
        ))
    } else {
        Primary::Serve(serve(&site.primary_ns, &site.images))
    };
    Cluster {
        site,
        primary,
        attempts: 3,
    }
}

/// `imgtool serve` as the primary.
fn serve(ns: &str, images: &Path) -> Proc {
    start_primary(ns, "10.77.0.1", images)
}

fn start_agent(ns: &str, node: &str, dev: &Path, log: &Path, attempts: u32) -> Proc {
    let attempts = attempts.to_string();
    let args = [
        "clone", "--server", URL, "--group", "compute", "--plan", "--node", node,
    ];
    // Every node here starts at once: a 5 s boot window (grace 10 s). With the default
    // 30 s window a relay waiting out the grace on a finished candidate outlasts its
    // downstream's 10 s stall (docs/DISTRIBUTION.md, the timers).
    let timers = [
        "--stall",
        "10",
        "--relay-idle",
        "3",
        "--boot-window",
        "5",
        "--attempts",
        &attempts,
        "--target",
    ];
    let args = args.iter().chain(&timers).map(OsStr::new);
    spawn_agent(ns, log, args.chain([dev.as_os_str()]))
}

/// Starts all agents; returns (loops, processes, logs).
fn run_all(c: &Cluster) -> (Vec<Loop>, Vec<Proc>, Vec<PathBuf>) {
    let size = std::fs::metadata(&c.master).unwrap().len() * 3 / 2;
    let (mut loops, mut procs, mut logs) = (vec![], vec![], vec![]);
    for (node, ns) in &c.nodes {
        let f = c.dir.join(format!("{node}.img"));
        std::fs::File::create(&f).unwrap().set_len(size).unwrap();
        let l = Loop::attach(&f, false);
        let log = c.dir.join(format!("{node}.log"));
        procs.push(start_agent(ns, node, &l.dev, &log, c.attempts));
        loops.push(l);
        logs.push(log);
    }
    (loops, procs, logs)
}

/// Waits for every agent; each must succeed.
fn all_succeed(c: &Cluster, procs: &mut [Proc], logs: &[PathBuf], skip: Option<usize>) {
    for (i, p) in procs.iter_mut().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let code = wait(p, Duration::from_secs(240));
        let log = std::fs::read_to_string(&logs[i]).unwrap_or_default();
        assert_eq!(code, Some(0), "{} did not finish:\n{log}", c.nodes[i].0);
    }
}

fn all_identical(c: &Cluster, skip: Option<usize>) {
    for (i, (node, _)) in c.nodes.iter().enumerate() {
        if Some(i) != skip {
            assert_restored(&c.master, &c.dir.join(format!("{node}.img")), &[1, 2, 3, 4]);
        }
    }
}

/// `(payload bytes fetched)` from an agent's log.
fn fetched(c: &Cluster, node: &str) -> u64 {
    let log = std::fs::read_to_string(c.dir.join(format!("{node}.log"))).unwrap();
    log.split("verified (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fetched figure in {node}'s log:\n{log}"))
}

#[test]
fn twelve_nodes_in_three_racks_clone_through_relays() {
    skip_unless_root!("network namespaces, loop devices");
    let c = setup("a", false, "chain");
    let (loops, mut procs, logs) = run_all(&c);
    all_succeed(&c, &mut procs, &logs, None);
    drop(loops);
    // Secondaries relayed; leaves pulled from their secondary, not the primary.
    let log = |n: &str| std::fs::read_to_string(c.dir.join(format!("{n}.log"))).unwrap();
    assert!(
        log("r2n1").contains("upstreams: r1n1 -> primary (relaying)"),
        "{}",
        log("r2n1")
    );
    assert!(
        log("r3n2").contains("upstreams: r3n1 -> r2n1 -> r1n1 -> primary"),
        "{}",
        log("r3n2")
    );
    for r in 0..RACKS {
        let served: u64 = log(&name(r, 0))
            .split("relay served ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(served > 0, "secondary {} served nothing", name(r, 0));
    }
    // Each relay held for the downstream nodes the plan gives it, not for the idle
    // fallback alone (the plan's downstream count never reached the agent before).
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.images.join("clone-plan.json")).unwrap()).unwrap();
    for r in 0..RACKS {
        let n = name(r, 0);
        let expected = plan["nodes"][&n]["downstream"].as_array().unwrap().len();
        assert!(expected > 0, "{n} relays to nobody in the plan");
        let want = format!("holding before growing until {expected} downstream node(s)");
        assert!(log(&n).contains(&want), "{n}: no `{want}`:\n{}", log(&n));
        // ... and was released because they had, not by the idle fallback.
        let released =
            format!("relay released: all {expected} downstream node(s) have every chunk");
        assert!(
            log(&n).contains(&released),
            "{n}: no `{released}`:\n{}",
            log(&n)
        );
    }
    all_identical(&c, None);
}

#[test]
fn nginx_as_a_pull_only_primary() {
    skip_unless_root!("network namespaces, loop devices");
    // The default shape (`auto`: serial for a group this small).
    let c = setup("n", true, "auto");
    let (loops, mut procs, logs) = run_all(&c);
    all_succeed(&c, &mut procs, &logs, None);
    drop(loops);
    all_identical(&c, None);
}

#[test]
fn a_tree_of_racks_clones_through_node_plans() {
    skip_unless_root!("network namespaces, loop devices");
    // One full-rate stream from the primary (its uplink is a node's link): rack 1 pulls
    // from it, racks 2 and 3 hang under rack 1's first and second node (tree_fanout 2).
    let c = setup_with(
        "t",
        false,
        "tree",
        "node_link_gbps = 10\nprimary_uplink_gbps = 10\ntree_fanout = 2\n",
    );
    // Only the node plans are served: the whole plan would give the same routes (the
    // agent falls back to it), so a broken node-plan path could not fail this test.
    std::fs::remove_file(c.images.join("clone-plan.json")).unwrap();
    let (loops, mut procs, logs) = run_all(&c);
    all_succeed(&c, &mut procs, &logs, None);
    drop(loops);
    all_identical(&c, None);
    let log = |n: &str| std::fs::read_to_string(c.dir.join(format!("{n}.log"))).unwrap();
    for (n, route) in [
        ("r1n1", "upstreams: primary (relaying)"),
        ("r2n1", "upstreams: r1n1 -> primary (relaying)"),
        ("r3n1", "upstreams: r1n2 -> r1n1 -> primary (relaying)"),
        (
            "r3n4",
            "upstreams: r3n3 -> r3n2 -> r3n1 -> r1n2 -> r1n1 -> primary",
        ),
    ] {
        assert!(log(n).contains(route), "{n}: {}", log(n));
    }
}

#[test]
fn the_primary_killed_and_restarted_mid_stream_resumes_every_node() {
    skip_unless_root!("network namespaces, loop devices");
    let mut c = setup("r", false, "serial");
    c.attempts = 8;
    // Slow the primary so that the first secondary is mid-transfer when it dies.
    c.lan.limit(&c.primary_ns.clone(), "24mbit");
    let (loops, mut procs, logs) = run_all(&c);
    std::thread::sleep(Duration::from_millis(1200));
    c.primary = Primary::Stopped; // kills imgtool serve (Drop of Proc)
    std::thread::sleep(Duration::from_millis(2000));
    c.primary = Primary::Serve(serve(&c.primary_ns, &c.images));
    all_succeed(&c, &mut procs, &logs, None);
    drop(loops);
    all_identical(&c, None);
    // Nothing restarted from zero: each node fetched at most the payload plus one chunk
    // for the one interruption.
    let (payload, largest) = payload_and_largest_frame(&c.images.join("compute"));
    for (node, _) in &c.nodes {
        let f = fetched(&c, node);
        assert!(
            f <= payload + largest,
            "{node} fetched {f} bytes for a {payload}-byte payload"
        );
    }
    let r1 = std::fs::read_to_string(c.dir.join("r1n1.log")).unwrap();
    assert!(r1.contains("done: image"), "{r1}");
    assert!(matches!(c.primary, Primary::Serve(_)));
}

#[test]
fn killing_a_secondary_mid_stream_reroutes_its_rack() {
    skip_unless_root!("network namespaces, loop devices");
    let c = setup("b", false, "fanout");
    let victim = kill_mid_stream(&c, "r2n1");
    let log = |n: &str| std::fs::read_to_string(c.dir.join(format!("{n}.log"))).unwrap();
    // Its leaves (and rack 3's secondary, downstream of it) moved up the chain.
    for n in ["r2n2", "r2n3", "r2n4"] {
        assert!(
            log(n).contains("rerouted: upstream r2n1 failed"),
            "{n} did not reroute:\n{}",
            log(n)
        );
    }
    all_identical(&c, Some(victim));
    // The status board shows the re-routing.
    let board = status(&c.primary_ns, URL, true);
    let board: serde_json::Value = serde_json::from_slice(&board.stdout).unwrap();
    let hist = board["r2n2"]["history"].to_string();
    assert!(hist.contains("rerouted"), "board: {board}");
    assert_ne!(board["r2n1"]["last"]["phase"], "done");
    // The text view is the tree: rack 1's secondary under the primary, the re-routed
    // rack-2 nodes under the upstream they moved to, marked.
    let tree = status_tree(&c);
    assert!(tree.starts_with("primary\n  r1n1 [done"), "{tree}");
    assert!(tree.contains("r2n2 [rerouted done"), "{tree}");
    // Rack 1 never lost its secondary: its nodes stay under it, not re-routed.
    for n in ["r1n2", "r1n3", "r1n4"] {
        assert!(
            tree.contains(&format!("\n    {n} [done")),
            "{n} left its live secondary:\n{tree}\n{}",
            log(n)
        );
    }
    eprintln!("{tree}");
}

#[test]
fn killing_a_secondary_of_the_serial_chain_reroutes_the_nodes_below() {
    skip_unless_root!("network namespaces, loop devices");
    // serial: r1n1 … r1n4 → r2n1 (secondary) → r2n2 … r2n4 → r3n1 … r3n4.
    let c = setup("s", false, "serial");
    let victim = kill_mid_stream(&c, "r2n1");
    let log = |n: &str| std::fs::read_to_string(c.dir.join(format!("{n}.log"))).unwrap();
    // The node right below moved up to the previous rack's last node; the ones below it
    // kept their (live) upstream.
    assert!(
        log("r2n2").contains("rerouted: upstream r2n1 failed")
            && log("r2n2").contains("now pulling from r1n4"),
        "{}",
        log("r2n2")
    );
    for n in ["r2n3", "r2n4", "r3n1", "r3n4"] {
        assert!(!log(n).contains("rerouted"), "{n} rerouted:\n{}", log(n));
    }
    all_identical(&c, Some(victim));
    // The tree keeps a chain in one column: r1n2 is r1n1's only downstream.
    let tree = status_tree(&c);
    assert!(tree.starts_with("primary\n  r1n1 [done"), "{tree}");
    assert!(tree.contains("\n  → r1n2 [done"), "{tree}");
    assert!(tree.contains("r2n2 [rerouted done"), "{tree}");
    assert!(
        tree.contains("r2n1 [FAILED") || tree.contains("r2n1 [restoring"),
        "{tree}"
    );
}

/// Runs every node with `victim`'s link slowed, kills it (by PID) 2.5 s in, in the middle
/// of relaying, and asserts that every other node finishes. Returns the victim's index.
fn kill_mid_stream(c: &Cluster, victim: &str) -> usize {
    let victim = c.nodes.iter().position(|(n, _)| n == victim).unwrap();
    c.lan.limit(&c.nodes[victim].1, "24mbit");
    let (loops, mut procs, logs) = run_all(c);
    // Killed a second after it starts restoring (and relaying: cut-through), measured on
    // its own log rather than from when the test started them: the loop devices are
    // attached one by one, and on a busy machine a fixed delay let the victim finish
    // its whole (throttled) stream before it was killed.
    let started = Instant::now();
    while !std::fs::read_to_string(&logs[victim])
        .unwrap_or_default()
        .contains("restoring")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} never started restoring",
            c.nodes[victim].0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let _ = procs[victim].0.kill();
    let _ = procs[victim].0.wait();
    for (i, p) in procs.iter_mut().enumerate() {
        if i == victim {
            continue;
        }
        let code = wait(p, Duration::from_secs(240));
        let log = std::fs::read_to_string(&logs[i]).unwrap_or_default();
        assert_eq!(
            code,
            Some(0),
            "{} did not finish after {} died:\n{log}",
            c.nodes[i].0,
            c.nodes[victim].0
        );
    }
    drop(loops);
    victim
}

/// `imgtool status` (the text tree) from the primary's board.
fn status_tree(c: &Cluster) -> String {
    let out = status(&c.primary_ns, URL, false);
    String::from_utf8_lossy(&out.stdout).to_string()
}
