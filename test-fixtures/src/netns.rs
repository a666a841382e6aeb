//! Network namespaces made by a test: one "switch" namespace holding a bridge, and hosts
//! attached to it by veth pairs, each with one address. Everything is deleted in `Drop`
//! (deleting a namespace removes its veth ends); processes started in a host are the
//! caller's to stop, by PID.

use std::process::{Command, Stdio};

fn ip(args: &[&str]) {
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
}

/// A bridge in its own namespace, and the hosts plugged into it.
pub struct Lan {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
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
