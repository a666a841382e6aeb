//! Delta re-clone through the agent (issue 14), in network namespaces made by the test:
//! a primary running the real `imgtool serve`, nodes as agent processes in their own
//! namespaces cloning onto their own loop devices along the clone plan pxe-builder makes.
//!
//! - One chain that mixes fresh nodes (blank disks) and up-to-date nodes (disks already
//!   restored from the image): every disk ends identical to the master; the up-to-date
//!   nodes fetch at most 1 % of the payload; the fresh ones, each right below an
//!   up-to-date relay, get every chunk through it (frames the relay made from its own
//!   disk), none from further up.
//! - A delta re-clone killed in the middle (the agent process, by its PID) leaves no valid
//!   table; run again, it resumes as a delta and ends verified and identical.

#[path = "common/cluster.rs"]
mod cluster;
use cluster::{imgtool_bin, spawn_agent, start_primary, status, wait, Proc, Site, Spec};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_fixtures::disk::{assert_restored, Loop};
use test_fixtures::image::payload_and_largest_frame;
use test_fixtures::skip_unless_root;

/// The primary's image server (the cluster's `image_server`).
const URL: &str = "http://10.78.0.1:8080";

/// The site (the nodes' namespaces, the image and where the disks and logs go) and its
/// primary.
struct Cluster {
    site: Site,
    _primary: Proc,
}

impl std::ops::Deref for Cluster {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.site
    }
}

impl Cluster {
    /// `racks` × `per_rack` nodes (`r1n1`, …) in a `shape` chain, the fixture master's
    /// image captured and served by `imgtool serve` at 10.78.0.1:8080.
    fn new(tag: &str, racks: usize, per_rack: usize, shape: &str) -> Cluster {
        // The clone plan and the node plans of a real cluster description.
        let site = Spec {
            name: "delta",
            net: 78,
            group: "compute",
            group_extra: "",
            shape,
            cluster_extra: "",
            racks,
            per_rack,
        }
        .fixture_site(tag);
        let primary = start_primary(&site.primary_ns, "10.78.0.1", &site.images);
        Cluster {
            site,
            _primary: primary,
        }
    }

    fn disk(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.img"))
    }

    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{node}.log"))).unwrap_or_default()
    }

    /// A node's disk file, 1.5× the master (its last partition grows): blank, or the
    /// image already restored onto it (`imgtool restore`, as a clone left it).
    fn make_disk(&self, node: &str, up_to_date: bool) {
        let f = self.disk(node);
        let size = std::fs::metadata(&self.master).unwrap().len() * 3 / 2;
        std::fs::File::create(&f).unwrap().set_len(size).unwrap();
        if up_to_date {
            let o = std::process::Command::new(imgtool_bin())
                .args(["restore", "--verify"])
                .arg(self.images.join("compute"))
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "restoring {node}'s disk: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    /// The agent of `node` on its disk's loop device, logging to `<node>.log`.
    fn start_agent(&self, node: &str, dev: &Path) -> Proc {
        let ns = &self.nodes.iter().find(|(n, _)| n == node).unwrap().1;
        let log = self.dir.join(format!("{node}.log"));
        let args = [
            "clone", "--server", URL, "--group", "compute", "--plan", "--node", node,
        ];
        let timers = ["--stall", "10", "--relay-idle", "3", "--attempts", "3"];
        let args = args.iter().chain(&timers).chain(&["--target"]);
        spawn_agent(ns, &log, args.map(OsStr::new).chain([dev.as_os_str()]))
    }
}

/// A figure from a log line: the number right after `before`.
fn figure(log: &str, before: &str) -> Option<u64> {
    log.split(before)
        .nth(1)
        .and_then(|r| r.split([' ', ')']).next())
        .and_then(|n| n.parse().ok())
}

/// `(payload bytes fetched)` from an agent's final line.
fn fetched(log: &str) -> u64 {
    figure(log, "verified (").unwrap_or_else(|| panic!("no fetched figure in the log:\n{log}"))
}

#[test]
fn a_chain_of_fresh_and_up_to_date_nodes_fetches_only_what_each_lacks() {
    skip_unless_root!("network namespaces, loop devices");
    // serial: r1n1 → r1n2 → r1n3 → r2n1 → r2n2 → r2n3, each pulling from the one before
    // and relaying to the next. Every fresh node sits right below an up-to-date one.
    let c = Cluster::new("d", 2, 3, "serial");
    // r2n2's disk also drifted: a few chunks damaged, which it fetches from r2n1 (a fresh
    // relay) as separate runs of frames, and relays to r2n3 with the rest from its disk.
    let up_to_date = ["r1n1", "r1n3", "r2n2"];
    let fresh = [("r1n2", "r1n1"), ("r2n1", "r1n3"), ("r2n3", "r2n2")];
    let (mut loops, mut procs) = (vec![], vec![]);
    for (node, _) in &c.nodes {
        c.make_disk(node, up_to_date.contains(&node.as_str()));
    }
    let (damaged, damaged_frames) = damage(&c.images, &c.disk("r2n2"));
    assert!(damaged >= 2, "too few chunks to damage");
    for (node, _) in &c.nodes {
        let l = Loop::attach(&c.disk(node), false);
        procs.push((node.clone(), c.start_agent(node, &l.dev)));
        loops.push(l);
    }
    for (node, p) in &mut procs {
        let code = wait(p, Duration::from_secs(240));
        assert_eq!(code, Some(0), "{node} did not finish:\n{}", c.log(node));
    }
    drop(loops);
    for (node, _) in &c.nodes {
        assert_restored(&c.master, &c.disk(node), &[1, 2, 3, 4]);
    }
    let (payload, largest) = payload_and_largest_frame(&c.images.join("compute"));
    let board = board(&c);
    for node in up_to_date {
        let log = c.log(node);
        let f = fetched(&log);
        eprintln!("{node} (up to date): fetched {f} of {payload} payload bytes");
        if node == "r2n2" {
            // The damaged chunks and the disk head (always fetched), and at most one frame
            // more: the chunk the grow rewrote on every clone's disk (the undamaged nodes
            // fetch it too: 7 260 bytes with the head), or a stream resumed under load.
            let img = imgtool::manifest::Image::open(&c.images.join("compute")).unwrap();
            let head: u64 = img
                .manifest
                .regions
                .iter()
                .filter(|r| r.name == "head")
                .flat_map(|r| &r.chunks)
                .map(|c| c.compressed_length)
                .sum();
            eprintln!(
                "  ({damaged} damaged chunks: {damaged_frames} bytes of frames; head {head})"
            );
            let want = damaged_frames + head;
            assert!(
                f >= want && f <= want + largest,
                "r2n2 fetched {f} bytes, its damaged chunks and head are {want}:\n{log}"
            );
            let counts = &board[node]["last"]["chunks"];
            assert_eq!(counts["fetched_bytes"].as_u64(), Some(f), "{board}");
            assert!(counts["fetched"].as_u64() > Some(damaged as u64), "{board}");
            continue;
        }
        assert!(
            f * 100 <= payload,
            "{node} fetched {f} bytes, more than 1 % of the {payload}-byte payload:\n{log}"
        );
        assert!(log.contains("layout matches image"), "{log}");
        assert!(log.contains("delta: "), "no delta counts line:\n{log}");
        // The board has the same counts, typed.
        let counts = &board[node]["last"]["chunks"];
        assert_eq!(counts["fetched_bytes"].as_u64(), Some(f), "{board}");
        assert!(counts["skipped"].as_u64().unwrap_or(0) > 0, "{board}");
    }
    for (node, upstream) in fresh {
        let log = c.log(node);
        let f = fetched(&log);
        eprintln!("{node} (fresh, below {upstream}): fetched {f} bytes");
        assert!(f >= payload, "{node} fetched only {f} of {payload}:\n{log}");
        assert!(!log.contains("rerouted"), "{node} left {upstream}:\n{log}");
        assert!(
            log.contains(&format!("upstreams: {upstream} ->")),
            "{node} did not pull from {upstream}:\n{log}"
        );
        // Its up-to-date upstream served it everything, mostly frames it made from its
        // own disk (it fetched almost none of them itself).
        let up = c.log(upstream);
        let served = figure(&up, "relay served ").unwrap_or(0);
        assert!(served >= payload, "{upstream} served {served}:\n{up}");
        let made = figure(&up, "bytes (").unwrap_or(0);
        assert!(made > 0, "{upstream} made no frame from its disk:\n{up}");
        assert!(
            up.contains(", 0 fetched again from upstream"),
            "{upstream}'s disk frames did not match the manifest:\n{up}"
        );
    }
    // A relay whose downstream node was up to date was released when that node said it
    // had every chunk (`.done`), not by the idle fallback.
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.images.join("clone-plan.json")).unwrap()).unwrap();
    for relay in ["r1n2", "r2n1"] {
        let log = c.log(relay);
        let expected = plan["nodes"][relay]["downstream"].as_array().unwrap().len();
        let released =
            format!("relay released: all {expected} downstream node(s) have every chunk");
        assert!(log.contains(&released), "{relay}: no `{released}`:\n{log}");
    }
}

/// The board as `imgtool status --json` shows it.
fn board(c: &Cluster) -> serde_json::Value {
    let out = status(&c.primary_ns, URL, true);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "board: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Writes garbage over the first 4 KiB of every other chunk of the image's largest
/// partition region on `disk` (a node's disk that drifted): a delta re-clone has those
/// to fetch, as runs of one frame each. Returns how many chunks were damaged and the
/// bytes of their frames.
fn damage(images: &Path, disk: &Path) -> (usize, u64) {
    let img = imgtool::manifest::Image::open(&images.join("compute")).unwrap();
    let r = img
        .manifest
        .regions
        .iter()
        .filter(|r| r.number > 0)
        .max_by_key(|r| r.chunks.len())
        .unwrap();
    let ss = img.layout.sector_size as u64;
    let base = img.layout.partition(r.number).unwrap().start * ss;
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    let (mut n, mut frames) = (0, 0);
    for c in r.chunks.iter().step_by(2) {
        let (o, l) = c.ranges()[0];
        let junk: Vec<u8> = (0..l.min(4096)).map(|i| (i * 7 + 13) as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&f, &junk, base + o).unwrap();
        n += 1;
        frames += c.compressed_length;
    }
    (n, frames)
}

#[test]
fn a_delta_re_clone_killed_in_the_middle_and_run_again_ends_verified() {
    skip_unless_root!("network namespaces, loop devices");
    let c = Cluster::new("k", 1, 1, "serial");
    let node = "r1n1";
    c.make_disk(node, true);
    let (damaged, _) = damage(&c.images, &c.disk(node));
    assert!(damaged >= 2, "the image has too few chunks to damage");
    // Slow enough that the agent is still fetching the damaged chunks when it is killed.
    c.lan.limit(&c.primary_ns, "8mbit");
    let l = Loop::attach(&c.disk(node), false);
    let mut p = c.start_agent(node, &l.dev);
    let start = Instant::now();
    while !c.log(node).contains("restoring") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never started restoring:\n{}",
            c.log(node)
        );
        assert_eq!(
            p.0.try_wait().unwrap(),
            None,
            "ended early:\n{}",
            c.log(node)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        p.0.try_wait().unwrap(),
        None,
        "finished before it was killed:\n{}",
        c.log(node)
    );
    drop(p); // killed by its PID
    let first = c.log(node);
    assert!(
        first.contains("layout matches image"),
        "not a delta:\n{first}"
    );
    assert!(!first.contains("done: image"), "{first}");
    // The killed delta left the kept table marked in progress (imgtool's mark.rs: its
    // signatures cleared until the last write), so the disk never looks bootable...
    let table = imgtool::layout::read_layout(&imgtool::disk::Disk::open_ro(&l.dev).unwrap());
    assert!(
        matches!(table, Ok(None)),
        "an interrupted delta left a valid table"
    );
    // ...and the rerun recognises the mark, keeps the table and resumes as a delta:
    // verified, and it fetches only what still differs, not the whole payload.
    let mut p = c.start_agent(node, &l.dev);
    let code = wait(&mut p, Duration::from_secs(240));
    let log = c.log(node);
    assert_eq!(
        code,
        Some(0),
        "the rerun failed:\n{first}\n--- rerun:\n{log}"
    );
    drop(l);
    assert_restored(&c.master, &c.disk(node), &[1, 2, 3, 4]);
    let (payload, _) = payload_and_largest_frame(&c.images.join("compute"));
    let f = fetched(&log);
    eprintln!(
        "killed delta ({damaged} chunks damaged), then the rerun fetched {f} of {payload} payload bytes:\n{first}\n--- rerun:\n{log}"
    );
    assert!(
        log.contains("layout matches image"),
        "the rerun repartitioned:\n{log}"
    );
    assert!(log.contains("delta: "), "the rerun was not a delta:\n{log}");
    assert!(f < payload, "the rerun fetched the whole payload:\n{log}");
}
