//! Real servers for a QEMU node, the way a site runs them: the node's NIC is a tap on a
//! bridge in a network namespace the test creates, and the test runs stock dnsmasq, ISC
//! dhcpd, tftpd-hpa and ISC dhcrelay in the foreground in namespaces of its own, each
//! stopped by its PID in `Drop`, plus `imgtool serve` bound inside the server namespace.
//!
//! Two networks ([`FlatNet`], [`RoutedNet`]), all addresses inside the test's namespaces:
//!
//! ```text
//! flat:    node ─tap─ [switch br0] ─veth─ srv 172.20.0.2/24
//! routed:  node ─tap─ [rack br0] ─veth─ router 172.20.1.1/24 | 172.20.0.1/24 ─veth─ [servers br0] ─veth─ srv 172.20.0.2/24
//! ```
//!
//! The router forwards IPv4 and runs `dhcrelay` towards the DHCP server on srv; srv
//! routes the rack's subnet back through it. Not here: what the node does (the agent)
//! and what the boot tree holds (pxe-builder); a test builds the tree with [`node_tree`].

use imgtool::serve::NodeStatus;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use test_fixtures::netns::{self, Lan};

/// The server's address (DHCP, TFTP, image server) on its subnet.
pub const SERVER_IP: &str = "172.20.0.2";
/// The image server's URL on [`SERVER_IP`] (`imgtool serve` inside the server namespace).
pub const IMAGE_URL: &str = "http://172.20.0.2:8080";
/// The server's subnet; on a [`FlatNet`] the node's too.
pub const SERVER_SUBNET: &str = "172.20.0.0/24";
/// The routed rack's subnet ([`RoutedNet`]).
pub const RACK_SUBNET: &str = "172.20.1.0/24";
/// The router's address on the rack: the rack's gateway.
pub const RACK_GATEWAY: &str = "172.20.1.1";
/// The router's address on the server's subnet.
pub const ROUTER_SERVER_SIDE: &str = "172.20.0.1";
/// The name of the node's tap on its switch.
pub const TAP: &str = "tap0";

/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A server process run in the foreground inside a namespace, its stdout and stderr in a
/// log file; killed by its PID in `Drop` (only ours).
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args…` inside namespace `ns`, logging to `work/<name>.log`.
    pub fn start(ns: &str, name: &str, program: &str, args: &[String], work: &Path) -> Daemon {
        let log = work.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log file");
        let child = Lan::cmd(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup.sh installs it)"));
        Daemon {
            name: name.into(),
            child,
            log,
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle` (the server says it is ready); panics with the
    /// log when the server exits or does not say so within a few seconds.
    pub fn wait_for(self, needle: &str) -> Daemon {
        self.wait_until(&format!("log {needle:?}"), |d| d.log().contains(needle))
    }

    /// Waits until a UDP socket of this server's namespace `ns` listens on `port` (for
    /// servers that log nothing when ready).
    pub fn wait_for_udp(self, ns: &str, port: u16) -> Daemon {
        self.wait_until(&format!("listen on UDP port {port}"), |_| {
            let out = Lan::cmd(ns, "ss")
                .args(["-Hlun", &format!("sport = :{port}")])
                .output()
                .expect("ss (iproute2)");
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        })
    }

    /// Polls `ready` every 100 ms until it holds; panics with the server's log if the
    /// server exits first or `START_TIMEOUT` passes (`what` says what it did not do).
    fn wait_until(mut self, what: &str, mut ready: impl FnMut(&Daemon) -> bool) -> Daemon {
        let start = Instant::now();
        while !ready(&self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "{} did not {what} within {START_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// dnsmasq (DHCP and TFTP, no DNS) on `iface` of `ns`, serving `tree`, configured as a site
/// would: its own settings in `work/dnsmasq.conf`, which includes pxe-builder's snippet
/// `tree/dhcp/dnsmasq.conf` with `conf-file=`.
pub fn dnsmasq(ns: &str, iface: &str, tree: &Path, work: &Path) -> Daemon {
    let conf = work.join("dnsmasq.conf");
    let site = format!(
        "# the site's own settings\nport=0\ninterface={iface}\nbind-interfaces\nenable-tftp\ntftp-root={tree}\n\
         dhcp-leasefile={work}/dnsmasq.leases\nlog-dhcp\n# pxe-builder's snippet\nconf-file={tree}/dhcp/dnsmasq.conf\n",
        tree = tree.display(),
        work = work.display()
    );
    std::fs::write(&conf, site).expect("writing dnsmasq.conf");
    let args = [
        "--keep-in-foreground".into(),
        "--log-facility=-".into(),
        "--user=root".into(),
        format!("--pid-file={}", work.join("dnsmasq.pid").display()),
        format!("--conf-file={}", conf.display()),
    ];
    Daemon::start(ns, "dnsmasq", "dnsmasq", &args, work).wait_for("TFTP root is")
}

/// ISC dhcpd in the foreground on `iface` of `ns` with configuration `conf`.
pub fn dhcpd(ns: &str, iface: &str, conf: &Path, work: &Path) -> Daemon {
    let leases = work.join("dhcpd.leases");
    File::create(&leases).expect("dhcpd.leases");
    let args = [
        "-f".into(),
        "-d".into(),
        "-4".into(),
        "-cf".into(),
        conf.display().to_string(),
        "-lf".into(),
        leases.display().to_string(),
        "-pf".into(),
        work.join("dhcpd.pid").display().to_string(),
        iface.into(),
    ];
    Daemon::start(ns, "dhcpd", "dhcpd", &args, work).wait_for("Server starting service")
}

/// tftpd-hpa in the foreground (`in.tftpd -L`), serving `tree` read-only on
/// [`SERVER_IP`] port 69 of `ns`.
pub fn tftpd(ns: &str, tree: &Path, work: &Path) -> Daemon {
    let args = [
        "--foreground".into(),
        "--secure".into(),
        "--verbose".into(),
        "--user".into(),
        "root".into(),
        "--address".into(),
        format!("{SERVER_IP}:69"),
        tree.display().to_string(),
    ];
    Daemon::start(ns, "tftpd", "in.tftpd", &args, work).wait_for_udp(ns, 69)
}

/// ISC dhcrelay in the foreground in router namespace `ns`: takes requests on `down` (the
/// rack's leg; its address becomes the giaddr) and relays them out of `up` to `server`.
pub fn dhcrelay(ns: &str, down: &str, up: &str, server: &str, work: &Path) -> Daemon {
    let args = [
        "-d".into(),
        "-4".into(),
        "-pf".into(),
        work.join("dhcrelay.pid").display().to_string(),
        "-id".into(),
        down.into(),
        "-iu".into(),
        up.into(),
        server.into(),
    ];
    Daemon::start(ns, "dhcrelay", "dhcrelay", &args, work).wait_for("Sending on")
}

/// `imgtool serve` (in a thread of this test process) bound to [`IMAGE_URL`]'s address
/// inside namespace `ns`, serving `roots` until the process ends. Its listening socket
/// keeps the namespace alive (unnamed, unreachable) after the test deletes it, until the
/// test process exits, like [`crate::serve_in_background`]'s thread.
pub fn serve_in(ns: &str, roots: Vec<PathBuf>) {
    netns::in_namespace(ns, move || {
        let bound = imgtool::serve::bind(imgtool::serve::ServeOptions {
            roots,
            listen: format!("{SERVER_IP}:8080"),
            max_connections: imgtool::httpd::DEFAULT_MAX_CONNECTIONS,
        })
        .unwrap_or_else(|e| panic!("binding imgtool serve to {SERVER_IP}:8080: {e}"));
        // The thread inherits the namespace; the socket is bound there already.
        std::thread::spawn(move || bound.run());
    });
}

/// The status board of the image server in `ns` ([`serve_in`]).
pub fn status_board(ns: &str) -> BTreeMap<String, NodeStatus> {
    netns::in_namespace(ns, || imgtool::serve::fetch_status(IMAGE_URL))
        .unwrap_or_else(|e| panic!("status board of {IMAGE_URL}: {e}"))
}

/// One subnet: the node's tap and the server namespace on one bridge.
pub struct FlatNet {
    /// The server namespace (interface `h1`, [`SERVER_IP`]).
    pub srv: String,
    /// The interface of srv on the subnet.
    pub srv_if: &'static str,
    lan: Lan,
}

impl FlatNet {
    /// `tag` keeps concurrent tests apart (it goes into the namespace names).
    pub fn new(tag: &str) -> FlatNet {
        let mut lan = Lan::new(tag);
        let srv = lan.host("srv", &format!("{SERVER_IP}/24"));
        lan.tap(TAP);
        FlatNet {
            srv,
            srv_if: "h1",
            lan,
        }
    }

    /// The namespace QEMU runs in (the one with [`TAP`]).
    pub fn node_ns(&self) -> &str {
        self.lan.switch()
    }
}

/// A rack behind a router: the node's tap on the rack's bridge, the router on both
/// subnets, the server namespace on the server's subnet.
pub struct RoutedNet {
    /// The server namespace (interface `h1`, [`SERVER_IP`]; route to the rack via the
    /// router).
    pub srv: String,
    /// The interface of srv on its subnet.
    pub srv_if: &'static str,
    /// The router namespace (`up0` on the server's subnet, `rack0` on the rack's).
    pub router: String,
    /// Held for its `Drop` (deletes the server LAN's namespaces).
    _servers: Lan,
    rack: Lan,
}

/// The router's leg on the server's subnet.
pub const ROUTER_UP: &str = "up0";
/// The router's leg on the rack.
pub const ROUTER_DOWN: &str = "rack0";

impl RoutedNet {
    /// `tag` keeps concurrent tests apart (it goes into the namespace names).
    pub fn new(tag: &str) -> RoutedNet {
        let mut servers = Lan::new(&format!("{tag}s"));
        let mut rack = Lan::new(&format!("{tag}r"));
        let srv = servers.host("srv", &format!("{SERVER_IP}/24"));
        let router = rack.host("rtr", &format!("{RACK_GATEWAY}/24"));
        // `host` names the router's rack leg h1; give it the name the relay is told.
        let ip = |args: &[&str]| {
            test_fixtures::netns::ip(args);
        };
        ip(&["-n", &router, "link", "set", "h1", "down"]);
        ip(&["-n", &router, "link", "set", "h1", "name", ROUTER_DOWN]);
        ip(&["-n", &router, "link", "set", ROUTER_DOWN, "up"]);
        servers.attach(&router, ROUTER_UP, &format!("{ROUTER_SERVER_SIDE}/24"));
        netns::forward(&router);
        netns::route(&srv, RACK_SUBNET, ROUTER_SERVER_SIDE);
        rack.tap(TAP);
        RoutedNet {
            srv,
            srv_if: "h1",
            router,
            _servers: servers,
            rack,
        }
    }

    /// The namespace QEMU runs in (the rack's switch, with [`TAP`]).
    pub fn node_ns(&self) -> &str {
        self.rack.switch()
    }
}

/// What [`node_tree`] builds.
pub struct NodeSpec<'a> {
    pub node: &'a str,
    pub mac: &'a str,
    pub ip: &'a str,
    pub entity: &'a str,
    pub subnet: &'a str,
    /// `gateway = "…"` of the entity (a routed rack), if any.
    pub gateway: Option<&'a str>,
}

/// Writes `work/cluster.toml` for one node in its own entity, group `compute`, served
/// from [`IMAGE_URL`] with [`SERVER_IP`] as TFTP server, booting `kernel` + `initrd` with a
/// console on ttyS0 and power-off when done or failed; builds its tree into `work/tree`.
pub fn node_tree(work: &Path, spec: &NodeSpec, kernel: &Path, initrd: &Path) -> PathBuf {
    let gateway = spec
        .gateway
        .map(|g| format!("gateway = \"{g}\"\n"))
        .unwrap_or_default();
    let toml = format!(
        r#"[cluster]
name = "{node}-test"
image_server = "{IMAGE_URL}"
server_ip = "{SERVER_IP}"
kernel = "{kernel}"
initrd = "{initrd}"
kernel_args = "console=ttyS0 panic=-1 netboot.done=poweroff netboot.onerror=poweroff"

[[entity]]
name = "{entity}"
subnet = "{subnet}"
{gateway}default_group = "compute"

[[group]]
name = "compute"

[[node]]
name = "{node}"
mac = "{mac}"
ip = "{ip}"
entity = "{entity}"
groups = ["compute"]
"#,
        node = spec.node,
        kernel = kernel.display(),
        initrd = initrd.display(),
        entity = spec.entity,
        subnet = spec.subnet,
        mac = spec.mac,
        ip = spec.ip,
    );
    let path = work.join("cluster.toml");
    std::fs::write(&path, toml).expect("writing cluster.toml");
    let cluster = pxe_builder::model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tree = work.join("tree");
    pxe_builder::tree::build(&cluster, &tree).unwrap_or_else(|e| panic!("{e}"));
    tree
}
