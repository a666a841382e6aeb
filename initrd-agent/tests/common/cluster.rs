//! The netns cluster set-up the agent's many-node tests share (racks.rs, delta.rs,
//! diskless.rs): a cluster description written as pxe-builder reads it, its clone plan
//! and node plans in the image root, one network namespace for the primary and one per
//! node on a test-made bridge, the real `imgtool serve` as the primary, and agent
//! processes logging to files. Each test keeps its own master image, agent flags and
//! assertions; what is here is only the plumbing they had copied.
//!
//! Included with `#[path = "common/cluster.rs"] mod cluster;` (not through
//! `common/mod.rs`), so that tests which do not make a cluster do not compile it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use test_fixtures::netns::Lan;

/// The `imgtool` binary cargo built beside the agent.
pub fn imgtool_bin() -> PathBuf {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_initrd-agent"));
    let p = agent.with_file_name("imgtool");
    assert!(
        p.exists(),
        "{} missing: build it with `cargo build -p imgtool` (cargo test --workspace does)",
        p.display()
    );
    p
}

/// Kills a process we started, by its PID, when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process's exit code, or `None` after `timeout`.
pub fn wait(p: &mut Proc, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = p.0.try_wait() {
            return s.code();
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `r<rack>n<node>`, both counted from 1.
pub fn name(r: usize, n: usize) -> String {
    format!("r{}n{}", r + 1, n + 1)
}

/// A cluster of `racks` × `per_rack` nodes on 10.`net`.0.0/16: the primary at
/// 10.`net`.0.1, rack `r`'s node `n` at 10.`net`.`r+1`.`n+10`, one group.
#[derive(Clone, Copy)]
pub struct Spec<'a> {
    /// The cluster's `name`.
    pub name: &'a str,
    /// The second octet of every address (and the fourth byte of every MAC).
    pub net: u8,
    /// The one group every node is in.
    pub group: &'a str,
    /// Lines added to the `[[group]]` table (`diskless = true`, …).
    pub group_extra: &'a str,
    /// `rack_shape`.
    pub shape: &'a str,
    /// Lines added to `[cluster]` (link rates, `tree_fanout`).
    pub cluster_extra: &'a str,
    pub racks: usize,
    pub per_rack: usize,
}

impl Spec<'_> {
    /// The primary's address.
    pub fn primary_ip(&self) -> String {
        format!("10.{}.0.1", self.net)
    }

    /// The primary's image server URL (port 8080).
    pub fn url(&self) -> String {
        format!("http://{}:8080", self.primary_ip())
    }

    /// The cluster description, as an operator writes `cluster.toml`.
    pub fn toml(&self) -> String {
        let (net, group) = (self.net, self.group);
        let mut toml = format!(
            "[cluster]\nname = \"{}\"\nimage_server = \"{}\"\nserver_ip = \"{}\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\nrack_shape = \"{}\"\n{}\n[[group]]\nname = \"{group}\"\n{}\n",
            self.name,
            self.url(),
            self.primary_ip(),
            self.shape,
            self.cluster_extra,
            self.group_extra,
        );
        for r in 0..self.racks {
            toml.push_str(&format!("[[entity]]\nname = \"rack{}\"\nsubnet = \"10.{net}.{}.0/24\"\ngateway = \"10.{net}.{}.1\"\ndefault_group = \"{group}\"\n\n", r + 1, r + 1, r + 1));
            for n in 0..self.per_rack {
                toml.push_str(&format!(
                    "[[node]]\nname = \"{}\"\nmac = \"52:54:00:{net}:{:02x}:{:02x}\"\nip = \"10.{net}.{}.{}\"\nentity = \"rack{}\"\ngroups = [\"{group}\"]\n\n",
                    name(r, n),
                    r + 1,
                    n + 1,
                    r + 1,
                    n + 10,
                    r + 1
                ));
            }
        }
        toml
    }

    /// Writes `dir/cluster.toml` (and the kernel and initrd it names), loads it with
    /// pxe-builder and writes each node's plan into `images` as `pxe-builder build` does
    /// (the agents read these), and the whole clone plan too when `clone_plan`. Returns
    /// how many node plans were written.
    pub fn write_plans(&self, dir: &Path, images: &Path, clone_plan: bool) -> usize {
        for f in ["vmlinuz", "initrd.img"] {
            std::fs::write(dir.join(f), f).unwrap();
        }
        std::fs::write(dir.join("cluster.toml"), self.toml()).unwrap();
        let cluster =
            pxe_builder::model::load(&dir.join("cluster.toml")).unwrap_or_else(|e| panic!("{e}"));
        if clone_plan {
            let plan = pxe_builder::plan::clone_plan(&cluster);
            let pj = serde_json::to_string_pretty(&plan).unwrap();
            std::fs::write(images.join("clone-plan.json"), pj + "\n").unwrap();
        }
        let layout = pxe_builder::plan::layout(&cluster);
        let nps = pxe_builder::plan::node_plans(&cluster, &layout);
        let count = nps.len();
        for np in nps {
            let path = images.join(netboot_proto::plan::NodePlan::path(&np.node));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, serde_json::to_string_pretty(&np).unwrap()).unwrap();
        }
        count
    }

    /// The namespaces: the bridge `tag`, the primary's and one per node.
    pub fn hosts(&self, tag: &str) -> Hosts {
        let mut lan = Lan::new(tag);
        let primary_ns = lan.host("p", &format!("{}/16", self.primary_ip()));
        let mut nodes = vec![];
        for r in 0..self.racks {
            for n in 0..self.per_rack {
                let cidr = format!("10.{}.{}.{}/16", self.net, r + 1, n + 10);
                let ns = lan.host(&name(r, n), &cidr);
                nodes.push((name(r, n), ns));
            }
        }
        Hosts {
            lan,
            primary_ns,
            nodes,
        }
    }
}

/// A cluster's test site: its directory, the `gpt` fixture master captured as the group's
/// image in `dir/images` with the plans beside it, and the namespaces.
pub struct Site {
    pub _work: tempfile::TempDir,
    pub dir: PathBuf,
    pub images: PathBuf,
    pub master: PathBuf,
    pub lan: Lan,
    pub primary_ns: String,
    /// (name, namespace), in plan order.
    pub nodes: Vec<(String, String)>,
}

impl Spec<'_> {
    /// The [`Site`] of this cluster, its bridge named `tag`: the fixture master captured,
    /// the clone plan and the node plans written, the namespaces made.
    pub fn fixture_site(&self, tag: &str) -> Site {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().to_path_buf();
        let master = test_fixtures::disk::fixture("gpt");
        let images = dir.join("images");
        test_fixtures::image::capture_into(&master, &images, self.group);
        self.write_plans(&dir, &images, true);
        let hosts = self.hosts(tag);
        Site {
            _work: work,
            dir,
            images,
            master,
            lan: hosts.lan,
            primary_ns: hosts.primary_ns,
            nodes: hosts.nodes,
        }
    }
}

/// A cluster's namespaces (removed when `lan` drops).
pub struct Hosts {
    pub lan: Lan,
    pub primary_ns: String,
    /// (name, namespace), in plan order.
    pub nodes: Vec<(String, String)>,
}

/// `imgtool serve --listen <ip>:8080 images` in `ns`, once it accepts connections.
pub fn start_primary(ns: &str, ip: &str, images: &Path) -> Proc {
    let listen = format!("{ip}:8080");
    let child = Lan::cmd(ns, imgtool_bin().to_str().unwrap())
        .args(["serve", "--listen", &listen])
        .arg(images)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let probe = format!("exec 3<>/dev/tcp/{ip}/8080");
    let start = Instant::now();
    while !Lan::cmd(ns, "bash")
        .args(["-c", &probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the primary did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Proc(child)
}

/// The agent binary in `ns` with `args`, its stdout and stderr into the file `log`.
pub fn spawn_agent<I, S>(ns: &str, log: &Path, args: I) -> Proc
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = std::fs::File::create(log).unwrap();
    let child = Lan::cmd(ns, env!("CARGO_BIN_EXE_initrd-agent"))
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc(child)
}

/// `imgtool status [--json] --server url`, run in `ns`.
pub fn status(ns: &str, url: &str, json: bool) -> Output {
    let mut cmd = Lan::cmd(ns, imgtool_bin().to_str().unwrap());
    cmd.arg("status");
    if json {
        cmd.arg("--json");
    }
    cmd.args(["--server", url]).output().unwrap()
}
