//! A blank node PXE-clones itself with the servers a site really runs (qemu-tests'
//! `realnet`): its NIC is a tap in network namespaces the test creates, and DHCP, TFTP
//! and relaying are done by stock dnsmasq, ISC dhcpd + tftpd-hpa and ISC dhcrelay, each
//! run in the foreground and stopped by PID; the image server is `imgtool serve` bound in
//! the server's namespace. The disk is then checked with the reference tools
//! (`sgdisk -v`, `e2fsck -fn`, the trees), as in `pxe_clone.rs`.
//!
//! - dnsmasq, BIOS (SeaBIOS + iPXE ROM → pxelinux), the node on the server's subnet;
//! - ISC dhcpd + dhcrelay + tftpd-hpa, BIOS, the node in a rack behind a router, with a
//!   site dhcpd.conf that declares the rack's subnet and its own router and includes
//!   pxe-builder's snippet;
//! - dnsmasq + dhcrelay, UEFI (OVMF → GRUB), the node in the routed rack.

use qemu_tests::realnet::{self, Daemon, FlatNet, NodeSpec, RoutedNet};
use qemu_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_fixtures::disk::{assert_restored, fixture};
use test_fixtures::image::capture_into;
use test_fixtures::netns::Lan;

const BOOT_TIMEOUT: Duration = Duration::from_secs(480);

/// The router's second address on the rack: the router a site's own dhcpd.conf names,
/// unlike the `gateway` of cluster.toml (the relay uses the first, 172.20.1.1).
const SITE_ROUTER: &str = "172.20.1.254";

/// A test's files: the master's image, the agent's initrd and a blank disk 1.5× the
/// master (its last partition and ext4 grow).
struct Work {
    dir: tempfile::TempDir,
    master: PathBuf,
    images: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    disk: PathBuf,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        // The servers read the tree as themselves, not as the test.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = dir.path();
        let master = fixture("gpt");
        let images = w.join("images");
        capture_into(&master, &images, "compute");
        let kernel = kernel();
        let initrd = w.join("initrd.img");
        std::fs::write(&initrd, agent_initrd(&kernel)).unwrap();
        let disk = w.join("node.img");
        let size = std::fs::metadata(&master).unwrap().len() * 3 / 2;
        std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
        Work {
            dir,
            master,
            images,
            kernel,
            initrd,
            disk,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn tree(&self, spec: &NodeSpec) -> PathBuf {
        realnet::node_tree(self.path(), spec, &self.kernel, &self.initrd)
    }

    /// Boots the node on the tap of namespace `ns` until it powers off; returns its console.
    fn boot(&self, firmware: Firmware, spec: &NodeSpec, tree: &Path, ns: &str) -> String {
        let mut vm = Vm::start_on_tap(
            &Boot {
                firmware,
                tree,
                mac: spec.mac,
                ip: spec.ip,
                netdev_extra: String::new(),
                extra: vec![
                    "-drive".into(),
                    format!("file={},if=none,id=d0,format=raw", self.disk.display()),
                    "-device".into(),
                    format!("nvme,drive=d0,serial={}", spec.node),
                ],
                work: self.path(),
            },
            ns,
            realnet::TAP,
        );
        vm.wait_exit(BOOT_TIMEOUT)
    }
}

/// The servers' logs, for a failure message.
fn logs(servers: &[&Daemon]) -> String {
    servers
        .iter()
        .map(|d| d.log())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

/// The agent's line saying how it configured the network (address/prefix, gateway, and
/// where each came from); empty when it never said.
fn network_line(console: &str) -> &str {
    console
        .lines()
        .find(|l| l.contains("netboot: network: eth"))
        .unwrap_or("")
}

/// The clone finished, repartitioned and grew, and the disk equals the master.
fn assert_cloned(w: &Work, node: &str, console: &str, servers: &[&Daemon]) {
    for want in [
        "netboot: done: image",
        "partitioning: layout differs",
        "grown from",
    ] {
        assert!(
            console.contains(want),
            "no {want:?} on the console:\n{console}\nservers:\n{}",
            logs(servers)
        );
    }
    assert!(
        console.contains(&format!("node {node} entity")),
        "node {node} not found in bootopts:\n{console}"
    );
    assert_restored(&w.master, &w.disk, &[1, 2, 3, 4]);
}

#[test]
fn dnsmasq_bios_flat_subnet_node_clones_itself() {
    skip_unless_root!("network namespaces and QEMU boots; scripts/test.sh runs them");
    let w = Work::new();
    let spec = NodeSpec {
        node: "flat9",
        mac: "52:54:00:20:00:09",
        ip: "172.20.0.9",
        entity: "rack1",
        subnet: realnet::SERVER_SUBNET,
        gateway: None,
    };
    let tree = w.tree(&spec);
    let net = FlatNet::new("dm");
    realnet::serve_in(&net.srv, vec![w.images.clone(), tree.clone()]);
    let dnsmasq = realnet::dnsmasq(&net.srv, net.srv_if, &tree, w.path());

    let console = w.boot(Firmware::Bios, &spec, &tree, net.node_ns());
    assert_cloned(&w, spec.node, &console, &[&dnsmasq]);
    let log = dnsmasq.log();
    assert!(
        log.contains("DHCPACK(h1) 172.20.0.9 52:54:00:20:00:09"),
        "dnsmasq did not lease 172.20.0.9 to the node:\n{log}"
    );
    assert!(
        log.contains("sent") && log.contains("pxelinux.0 to 172.20.0.9"),
        "dnsmasq's TFTP did not send pxelinux.0:\n{log}"
    );
    assert!(
        network_line(&console).contains("172.20.0.9/24 gateway"),
        "the node came up with {:?}, want its subnet's mask (172.20.0.9/24)",
        network_line(&console)
    );
    let board = realnet::status_board(&net.srv);
    assert_eq!(board[spec.node].last.phase, "done", "{board:?}");
}

/// The site's own dhcpd.conf: both subnets, the rack's with the site's router, and
/// pxe-builder's snippet included.
fn site_dhcpd_conf(work: &Path, tree: &Path) -> PathBuf {
    let conf = work.join("dhcpd.conf");
    let text = format!(
        "# the site's own configuration\nauthoritative;\nddns-update-style none;\n\
         default-lease-time 600;\nmax-lease-time 7200;\n\n\
         subnet 172.20.0.0 netmask 255.255.255.0 {{\n}}\n\n\
         subnet 172.20.1.0 netmask 255.255.255.0 {{\n  option routers {SITE_ROUTER};\n  option subnet-mask 255.255.255.0;\n}}\n\n\
         # the cluster's hosts and boot files, from pxe-builder\ninclude \"{}\";\n",
        tree.join("dhcp/dhcpd.conf").display()
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

#[test]
fn isc_dhcpd_relay_bios_routed_rack_node_clones_itself_with_the_sites_router() {
    skip_unless_root!("network namespaces and QEMU boots; scripts/test.sh runs them");
    let w = Work::new();
    let spec = NodeSpec {
        node: "rack9",
        mac: "52:54:00:20:01:09",
        ip: "172.20.1.9",
        entity: "rack2",
        subnet: realnet::RACK_SUBNET,
        gateway: Some(realnet::RACK_GATEWAY),
    };
    let tree = w.tree(&spec);
    let conf = site_dhcpd_conf(w.path(), &tree);
    // The site's configuration with the snippet is clean: no duplicate subnet.
    let check = test_fixtures::root::tool("dhcpd")
        .args(["-t", "-4", "-cf"])
        .arg(&conf)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && !said.contains("overlap"),
        "dhcpd -t on the site's dhcpd.conf with the snippet:\n{said}"
    );

    let net = RoutedNet::new("dh");
    let ip = |args: &[&str]| {
        let st = Lan::cmd(&net.router, "ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?} in the router");
    };
    ip(&[
        "addr",
        "add",
        &format!("{SITE_ROUTER}/24"),
        "dev",
        realnet::ROUTER_DOWN,
    ]);
    realnet::serve_in(&net.srv, vec![w.images.clone(), tree.clone()]);
    let dhcpd = realnet::dhcpd(&net.srv, net.srv_if, &conf, w.path());
    let tftpd = realnet::tftpd(&net.srv, &tree, w.path());
    let relay = realnet::dhcrelay(
        &net.router,
        realnet::ROUTER_DOWN,
        realnet::ROUTER_UP,
        realnet::SERVER_IP,
        w.path(),
    );

    let console = w.boot(Firmware::Bios, &spec, &tree, net.node_ns());
    let servers = [&dhcpd, &tftpd, &relay];
    assert_cloned(&w, spec.node, &console, &servers);
    let log = dhcpd.log();
    assert!(
        log.contains("DHCPACK on 172.20.1.9 to 52:54:00:20:01:09")
            && log.contains("via 172.20.1.1"),
        "dhcpd did not lease 172.20.1.9 to the node through the relay:\n{log}"
    );
    // pxelinux passes the lease's router on (IPAPPEND 3); the site's must win over the
    // snippet's.
    let want = format!("172.20.1.9/24 gateway {SITE_ROUTER} ");
    assert!(
        network_line(&console).contains(&want),
        "the node came up with {:?}, want {want:?}: the router of the site's own subnet \
         declaration (the included snippet must not override it)",
        network_line(&console)
    );
    let board = realnet::status_board(&net.srv);
    assert_eq!(board[spec.node].last.phase, "done", "{board:?}");
}

#[test]
fn grub_uefi_routed_rack_node_clones_itself() {
    skip_unless_root!("network namespaces and QEMU boots; scripts/test.sh runs them");
    let w = Work::new();
    let spec = NodeSpec {
        node: "efi9",
        mac: "52:54:00:20:01:19",
        ip: "172.20.1.19",
        entity: "rack2",
        subnet: realnet::RACK_SUBNET,
        gateway: Some(realnet::RACK_GATEWAY),
    };
    let tree = w.tree(&spec);
    let net = RoutedNet::new("du");
    realnet::serve_in(&net.srv, vec![w.images.clone(), tree.clone()]);
    let dnsmasq = realnet::dnsmasq(&net.srv, net.srv_if, &tree, w.path());
    let relay = realnet::dhcrelay(
        &net.router,
        realnet::ROUTER_DOWN,
        realnet::ROUTER_UP,
        realnet::SERVER_IP,
        w.path(),
    );

    let console = w.boot(Firmware::Uefi, &spec, &tree, net.node_ns());
    assert_cloned(&w, spec.node, &console, &[&dnsmasq, &relay]);
    // From GRUB's `ip=` (dnsmasq's option 3 names the same router, so the origin is what
    // tells that the agent used the kernel line pxe-builder wrote).
    let want = format!(
        "172.20.1.19/24 gateway {} (address, mask and gateway from ip=)",
        realnet::RACK_GATEWAY
    );
    assert!(
        network_line(&console).contains(&want),
        "the node came up with {:?}, want {want:?} (the rack's mask and gateway)",
        network_line(&console)
    );
    let board = realnet::status_board(&net.srv);
    assert_eq!(board[spec.node].last.phase, "done", "{board:?}");
}
