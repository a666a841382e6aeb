//! The hand-made chain set-up the agent's upstream-failure tests share (dead_peer.rs,
//! gone_upstream.rs): the `gpt` fixture master captured as group `compute`, node plans
//! written by hand (each test picks its chain), one namespace per host on a test-made
//! bridge, the real `imgtool serve` as the primary, agents cloning onto their own loop
//! devices and logging to files, and bounded waits on those logs. Each test keeps its
//! plans, agent flags and assertions.
//!
//! Built on `common/cluster.rs` (its `Proc`, `start_primary`, `spawn_agent`): include
//! both, `#[path = "common/cluster.rs"] mod cluster;` then
//! `#[path = "common/chain.rs"] mod chain;`.
#![allow(dead_code)]

use crate::cluster::{spawn_agent, start_primary, Proc};
use netboot_proto::plan::{Candidate, NodePlan};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_fixtures::disk::{fixture, Loop};
use test_fixtures::image::capture_into;
use test_fixtures::netns::Lan;

/// A chain's site: the work directory (images, disks, logs), the master and the hosts.
pub struct Chain {
    pub _work: tempfile::TempDir,
    pub dir: PathBuf,
    pub master: PathBuf,
    pub lan: Lan,
    /// The primary's address.
    pub primary: String,
    /// Namespaces: the primary's, then the nodes' in the order given to [`chain`] (their
    /// links are h1, h2, …).
    pub ns: Vec<String>,
}

/// Node `node`'s plan in group and image `compute`, rack1, relay port 8180: `upstreams`
/// as (node, address), `downstream` nodes planned below it.
pub fn node_plan(node: &str, upstreams: &[(&str, &str)], downstream: usize) -> NodePlan {
    NodePlan {
        node: node.into(),
        group: "compute".into(),
        image: "compute".into(),
        entity: "rack1".into(),
        upstreams: upstreams
            .iter()
            .map(|(node, address)| Candidate {
                node: (*node).into(),
                address: (*address).into(),
            })
            .collect(),
        downstream,
        relay_port: 8180,
        ..NodePlan::default()
    }
}

/// The image, `plans` written where the agents read them, and the namespaces: the
/// primary (`p`, at `primary`) and each of `nodes` (name, address), all on a /16.
pub fn chain(tag: &str, primary: &str, nodes: &[(&str, &str)], plans: &[NodePlan]) -> Chain {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let master = fixture("gpt");
    let images = dir.join("images");
    capture_into(&master, &images, "compute");
    for np in plans {
        let path = images.join(NodePlan::path(&np.node));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(np).unwrap()).unwrap();
    }
    let mut lan = Lan::new(tag);
    let mut ns = vec![lan.host("p", &format!("{primary}/16"))];
    for (name, address) in nodes {
        ns.push(lan.host(name, &format!("{address}/16")));
    }
    Chain {
        _work: work,
        dir,
        master,
        lan,
        primary: primary.into(),
        ns,
    }
}

impl Chain {
    /// `imgtool serve` on the chain's images in the primary's namespace, once it accepts
    /// connections.
    pub fn start_primary(&self) -> Proc {
        start_primary(&self.ns[0], &self.primary, &self.dir.join("images"))
    }
}

/// An agent this test started: its process (killed first when dropped), log and loop
/// device.
pub struct Agent {
    pub proc: Proc,
    pub log: PathBuf,
    pub _disk: Loop,
}

/// Starts node `node`'s agent in `ns` on a fresh loop device (1.5 × the master):
/// `clone --server <primary> --group compute --plan --node <node> <flags> --attempts 8`.
pub fn start_agent(c: &Chain, ns: &str, node: &str, flags: &[&str]) -> Agent {
    let size = std::fs::metadata(&c.master).unwrap().len() * 3 / 2;
    let f = c.dir.join(format!("{node}.img"));
    std::fs::File::create(&f).unwrap().set_len(size).unwrap();
    let disk = Loop::attach(&f, false);
    let log = c.dir.join(format!("{node}.log"));
    let server = format!("http://{}:8080", c.primary);
    let mut args = vec!["clone", "--server", &server];
    args.extend(["--group", "compute", "--plan", "--node", node]);
    args.extend(flags);
    args.extend(["--attempts", "8", "--target"]);
    let mut args: Vec<_> = args.into_iter().map(std::ffi::OsString::from).collect();
    args.push(disk.dev.clone().into());
    let proc = spawn_agent(ns, &log, args);
    Agent {
        proc,
        log,
        _disk: disk,
    }
}

/// The log so far (empty before the agent wrote one).
pub fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until `log` contains `what` (bounded: a node that never gets there fails); how
/// long that took.
pub fn wait_for(log: &Path, what: &str) -> Duration {
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

/// Waits for an agent to end (bounded); its exit code (-1 when killed by a signal).
pub fn exit_code(a: &mut Agent) -> i32 {
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
