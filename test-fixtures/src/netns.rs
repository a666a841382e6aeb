//! Network namespaces made by a test: one "switch" namespace holding a bridge, and hosts
//! attached to it by veth pairs, each with one address. Everything is deleted in `Drop`
//! (deleting a namespace removes its veth ends and taps); processes started in a host are
//! the caller's to stop, by PID.
//!
//! For real-server tests (qemu-tests' `realnet`): a tap on the bridge for a QEMU node
//! ([`Lan::tap`]), an existing namespace plugged into a second LAN (a router with one leg
//! per subnet: [`Lan::attach`], [`forward`]), a route ([`route`]), and code run on a
//! thread inside a namespace ([`in_namespace`], e.g. an in-process server bound there).

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

/// Runs `ip ARGS` (iproute2) and returns its stdout; panics with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bridge in its own namespace, and the hosts plugged into it.
pub struct Lan {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
    /// Veths plugged in by [`Lan::attach`] (their names in the switch).
    legs: usize,
}

impl Lan {
    /// `tag` keeps concurrent tests apart (namespace names include it and the PID).
    pub fn new(tag: &str) -> Lan {
        let prefix = format!("nb{}{tag}", std::process::id() % 100_000);
        let switch = format!("{prefix}-sw");
        ip(&["netns", "add", &switch]);
        let lan = Lan {
            prefix,
            switch: switch.clone(),
            hosts: vec![],
            legs: 0,
        };
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        lan
    }

    /// Adds host `name` with address `cidr` (e.g. `10.77.1.2/16`); returns its namespace.
    pub fn host(&mut self, name: &str, cidr: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let idx = self.hosts.len();
        let (a, b) = (
            format!("h{idx}"),
            format!("s{}x{idx}", std::process::id() % 10_000),
        );
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &self.switch,
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", cidr, "dev", &a]);
        ip(&["-n", &ns, "link", "set", &a, "up"]);
        ip(&["-n", &self.switch, "link", "set", &b, "master", "br0"]);
        ip(&["-n", &self.switch, "link", "set", &b, "up"]);
        ns
    }

    /// Limits what host `ns` sends to `rate` (e.g. `40mbit`) with a tbf qdisc.
    pub fn limit(&self, ns: &str, rate: &str) {
        let dev = format!(
            "h{}",
            self.hosts
                .iter()
                .position(|h| h == ns)
                .map(|i| i + 1)
                .unwrap_or(0)
        );
        ip(&["-n", ns, "link", "show", &dev]);
        let out = Command::new("ip")
            .args([
                "netns", "exec", ns, "tc", "qdisc", "add", "dev", &dev, "root", "tbf",
            ])
            .args(["rate", rate, "burst", "64kb", "latency", "50ms"])
            .stderr(Stdio::piped())
            .output()
            .expect("tc");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The namespace of the switch (the bridge `br0` and its taps).
    pub fn switch(&self) -> &str {
        &self.switch
    }

    /// A persistent tap `name` on the bridge, up, for a QEMU NIC
    /// (`-netdev tap,ifname=NAME,script=no,downscript=no`, QEMU run in [`Lan::switch`]).
    /// Deleted with the switch namespace.
    pub fn tap(&self, name: &str) {
        let sw = self.switch.as_str();
        ip(&["-n", sw, "tuntap", "add", "dev", name, "mode", "tap"]);
        ip(&["-n", sw, "link", "set", name, "master", "br0"]);
        ip(&["-n", sw, "link", "set", name, "up"]);
    }

    /// Plugs namespace `ns` (a host of another LAN, e.g. a router) into this bridge with a
    /// veth whose end in `ns` is called `ifname` and has address `cidr`. The namespace
    /// stays its owner's to delete; the veth goes with whichever end goes first.
    pub fn attach(&mut self, ns: &str, ifname: &str, cidr: &str) {
        self.legs += 1;
        let peer = format!("a{}x{}", std::process::id() % 10_000, self.legs);
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.switch,
        ]);
        ip(&["-n", ns, "addr", "add", cidr, "dev", ifname]);
        ip(&["-n", ns, "link", "set", ifname, "up"]);
        ip(&["-n", &self.switch, "link", "set", &peer, "master", "br0"]);
        ip(&["-n", &self.switch, "link", "set", &peer, "up"]);
    }

    /// A command that runs inside host `ns`.
    pub fn cmd(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Adds a route to `dest` (CIDR) via `gateway` in namespace `ns`.
pub fn route(ns: &str, dest: &str, gateway: &str) {
    ip(&["-n", ns, "route", "add", dest, "via", gateway]);
}

/// Makes namespace `ns` forward IPv4 between its interfaces (a router).
pub fn forward(ns: &str) {
    let out = Lan::cmd(ns, "sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .output()
        .expect("sysctl (procps)");
    assert!(
        out.status.success(),
        "sysctl net.ipv4.ip_forward=1 in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a new thread that has entered network namespace `ns` (only that thread,
/// and the threads it starts, live there: a socket it binds belongs to `ns`); returns
/// what `f` returned.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
        drop(file);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
