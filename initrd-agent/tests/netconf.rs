//! The boot interface as the agent configures it, checked with iproute2: a veth pair in a
//! network namespace the test makes, the agent's code run on a thread moved into it.
//! `ip=` with a mask and gateway gives `/24` and the default route; a flat subnet's `ip=`
//! gives `/24` and no route, until the subnet's bootopts add their gateway. Before issue
//! 17 an address without a mask went to the kernel as it was (the classful /16).

use initrd_agent::config::Config;
use initrd_agent::ipconf;
use initrd_agent::net::{self, Link};
use initrd_agent::report::Reporter;
use netboot_proto::bootopts::BootOpts;
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::os::fd::AsFd;
use std::process::Command;
use test_fixtures::skip_unless_root;

/// A network namespace holding the veth pair `v0` (the node's NIC) and `v1` (its peer,
/// up, so `v0` gets carrier); deleted when dropped.
struct Ns(String);

use test_fixtures::netns::ip;

impl Ns {
    fn new(tag: &str) -> Ns {
        let ns = Ns(format!("nbnc{}{tag}", std::process::id() % 100_000));
        ip(&["netns", "add", &ns.0]);
        ip(&[
            "-n", &ns.0, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        ip(&["-n", &ns.0, "link", "set", "v1", "up"]);
        ns
    }

    /// Runs `f` on a thread inside the namespace (the ioctls act on the caller's).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).expect("the namespace's file");
                move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))
                    .expect("setns");
                f()
            })
            .join()
            .expect("the namespace thread")
        })
    }

    fn addr(&self) -> String {
        ip(&["-n", &self.0, "-4", "addr", "show", "dev", "v0"])
    }

    fn routes(&self) -> String {
        ip(&["-n", &self.0, "-4", "route", "show"])
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// What the agent configures for `cmdline`, on `v0` in `ns`, as [`net::bring_up`] does
/// after finding the interface and its carrier (it reads `/sys/class/net`, which shows
/// the test's own namespace).
fn configure(ns: &Ns, cmdline: &str) -> (Config, Link) {
    let cfg = Config::from_cmdline(cmdline).unwrap();
    let settings = ipconf::initial("v0", cfg.address, |_| {
        Err("no DHCP in this test: the command line has the mask".into())
    })
    .unwrap();
    ns.run(|| net::configure("v0", &settings)).unwrap();
    let link = Link {
        iface: "v0".into(),
        mac: "52:54:00:00:00:09".into(),
        settings,
    };
    (cfg, link)
}

#[test]
fn grub_ip_line_gives_the_mask_and_the_default_route() {
    skip_unless_root!("makes a network namespace");
    let ns = Ns::new("g");
    configure(
        &ns,
        "netboot.ip=172.20.1.9 ip=172.20.1.9::172.20.1.1:255.255.255.0",
    );
    let addr = ns.addr();
    assert!(addr.contains("inet 172.20.1.9/24 "), "{addr}");
    let routes = ns.routes();
    assert!(routes.contains("default via 172.20.1.1 dev v0"), "{routes}");
    assert!(routes.contains("172.20.1.0/24 dev v0"), "{routes}");
    assert!(
        !routes.contains("172.20.0.0/16"),
        "classful route: {routes}"
    );
}

#[test]
fn a_flat_subnet_gets_its_gateway_from_bootopts() {
    skip_unless_root!("makes a network namespace");
    let ns = Ns::new("f");
    let (mut cfg, mut link) = configure(&ns, "ip=172.20.0.9:172.20.0.2:0.0.0.0:255.255.255.0");
    assert!(ns.addr().contains("inet 172.20.0.9/24 "), "{}", ns.addr());
    assert!(!ns.routes().contains("default"), "{}", ns.routes());

    cfg.merge_bootopts(&BootOpts::parse(
        "subnet=172.20.0.0/24\ngateway=172.20.0.1\n",
    ));
    let rep = Reporter::new(None, String::new());
    ns.run(|| net::apply_bootopts(&mut link, &mut cfg, &rep))
        .unwrap();
    let routes = ns.routes();
    assert!(routes.contains("default via 172.20.0.1 dev v0"), "{routes}");
    assert_eq!(link.settings.gateway, Some("172.20.0.1".parse().unwrap()));
    assert_eq!(
        link.settings.line("v0", "m"),
        "network: v0 (m) 172.20.0.9/24 gateway 172.20.0.1 (address and mask from ip=, gateway from bootopts)"
    );
    assert_eq!(cfg.address.and_then(|a| a.gateway), link.settings.gateway);
}

/// dnsmasq in the namespace, serving DHCP on `v1`; killed by its PID when dropped.
struct Dnsmasq(std::process::Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn netboot_ip_alone_takes_mask_and_router_from_a_real_dhcp_server() {
    skip_unless_root!("makes a network namespace and runs dnsmasq in it");
    let ns = Ns::new("d");
    let dir = tempfile::tempdir().unwrap();
    ip(&["-n", &ns.0, "addr", "add", "172.20.1.2/24", "dev", "v1"]);
    let leases = dir.path().join("leases");
    let _dnsmasq = Dnsmasq(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "dnsmasq",
                "--no-daemon",
                "-C",
                "/dev/null",
            ])
            .args(["--port=0", "--interface=v1", "--bind-interfaces"])
            .args(["--dhcp-range=172.20.1.50,172.20.1.99,255.255.255.0"])
            .args(["--dhcp-option=3,172.20.1.1", "--dhcp-authoritative"])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq"),
    );
    // GRUB's entry before issue 17: the address only.
    let cfg = Config::from_cmdline("netboot.ip=172.20.1.60").unwrap();
    let script = dir.path().join("udhcpc.sh");
    let settings = ns
        .run(|| {
            net::up("v0")?;
            let s = ipconf::initial("v0", cfg.address, |request| {
                net::dhcp_via("v0", request, &script).map_err(Into::into)
            })?;
            net::configure("v0", &s)?;
            anyhow::Ok(s)
        })
        .unwrap();
    assert_eq!(
        settings.line("v0", "m"),
        "network: v0 (m) 172.20.1.60/24 gateway 172.20.1.1 (address from netboot.ip=, mask and gateway from DHCP)"
    );
    assert!(ns.addr().contains("inet 172.20.1.60/24 "), "{}", ns.addr());
    let routes = ns.routes();
    assert!(routes.contains("default via 172.20.1.1 dev v0"), "{routes}");
}
