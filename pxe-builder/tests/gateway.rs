//! Racks behind routers (issue 17): an entity's `gateway` is checked where it is written
//! and required where the servers lie beyond the subnet; every output carries it (dhcpd
//! `default routers` and the subnets file's `option routers`, dnsmasq option 3, bootopts, `ip=` on GRUB and iPXE lines); and the
//! dhcpd snippet merges into a site's dhcpd.conf that declares the same subnets, as the
//! real `dhcpd -t` and `dnsmasq --test` judge it.

mod common;
use common::*;
use netboot_proto::bootopts::BootOpts;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use test_fixtures::netns::Lan;

/// Builds `body` as a cluster; returns the temp dir (keep it alive) and the tree.
fn build(body: &str) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), body);
    let out = work.path().join("tree");
    let o = run(&["build", "--cluster"], &c, Some(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (work, out)
}

fn read(tree: &Path, f: &str) -> String {
    std::fs::read_to_string(tree.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
}

/// `dhcpd -t -4 -cf conf`: whether it passed, and everything it said.
fn dhcpd_t(conf: &Path) -> (bool, String) {
    let o = real_check(
        "dhcpd",
        &[
            "-t".as_ref(),
            "-4".as_ref(),
            "-cf".as_ref(),
            conf.as_os_str(),
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), said)
}

/// A site's own dhcpd.conf: both of the example's subnets declared with the site's own
/// routers and a dynamic range, then `includes`.
fn site_conf(dir: &Path, includes: &[&Path]) -> PathBuf {
    let mut t = String::from(
        "# the site's own configuration\n\
         authoritative;\n\
         default-lease-time 600;\n\
         subnet 172.20.0.0 netmask 255.255.255.224 {\n  option routers 172.20.0.30;\n  range 172.20.0.20 172.20.0.29;\n}\n\
         subnet 172.20.1.0 netmask 255.255.255.0 {\n  option routers 172.20.1.254;\n  option domain-name-servers 172.20.1.253;\n  range 172.20.1.100 172.20.1.200;\n}\n",
    );
    for i in includes {
        t.push_str(&format!("include \"{}\";\n", i.display()));
    }
    let p = dir.join("site-dhcpd.conf");
    std::fs::write(&p, t).unwrap();
    p
}

#[test]
fn the_dhcpd_snippet_merges_into_a_site_config_that_declares_the_subnets() {
    let (work, tree) = build(&example());
    let snippet = tree.join("dhcp/dhcpd.conf");
    let text = read(&tree, "dhcp/dhcpd.conf");
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("subnet")),
        "the snippet declares a subnet:\n{text}"
    );
    let site = site_conf(work.path(), &[&snippet]);
    let (ok, said) = dhcpd_t(&site);
    assert!(ok, "dhcpd -t of the site config with the snippet:\n{said}");
    assert!(
        !said.contains("overlaps") && !said.contains("Warning"),
        "dhcpd -t warned:\n{said}"
    );
    // The same check sees the clash the snippet used to cause with its own declaration
    // of the rack's subnet. (dhcpd does not always warn: a second declaration that comes
    // after another subnet's went unreported in our runs, so the snippet's having no
    // `subnet` at all, asserted above, is what keeps the site's router.)
    let old = work.path().join("old-snippet.conf");
    std::fs::write(
        &old,
        "subnet 172.20.1.0 netmask 255.255.255.0 {\n  next-server 172.20.0.2;\n}\n",
    )
    .unwrap();
    let (_, said) = dhcpd_t(&site_conf(work.path(), &[&old]));
    assert!(
        said.contains("subnet 172.20.1.0/24 overlaps subnet 172.20.1.0/24"),
        "no overlap reported for a twice-declared subnet:\n{said}"
    );
}

#[test]
fn the_standalone_pair_passes_dhcpd_and_groups_each_entitys_hosts() {
    let (work, tree) = build(&example());
    let conf = work.path().join("standalone.conf");
    std::fs::write(
        &conf,
        format!(
            "include \"{}\";\ninclude \"{}\";\n",
            tree.join("dhcp/dhcpd-subnets.conf").display(),
            tree.join("dhcp/dhcpd.conf").display()
        ),
    )
    .unwrap();
    let (ok, said) = dhcpd_t(&conf);
    assert!(ok && !said.contains("Warning"), "dhcpd -t:\n{said}");
    let subnets = read(&tree, "dhcp/dhcpd-subnets.conf");
    assert!(subnets.contains("subnet 172.20.0.0 netmask 255.255.255.224 {"));
    assert!(subnets.contains("subnet 172.20.1.0 netmask 255.255.255.0 {"));
    // The only option it sets: the router of the entity with a `gateway` (rack1's
    // gateway 172.20.0.1, rack2's 172.20.1.1 in the example).
    let options: Vec<&str> = subnets
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("option "))
        .collect();
    assert_eq!(
        options,
        ["option routers 172.20.0.1;", "option routers 172.20.1.1;"],
        "{subnets}"
    );
    // rack2's group: next-server, its router as a `default` (a site's own subnet
    // declaration keeps its router), then its one host (n04), and no host of rack1.
    let text = read(&tree, "dhcp/dhcpd.conf");
    let rack2 = text
        .split("# entity rack2 (172.20.1.0/24)\ngroup {\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no group for rack2:\n{text}"));
    let rack2 = &rack2[..rack2.find("\n}\n").unwrap()];
    assert!(rack2.contains("  next-server 172.20.0.2;\n  default routers 172.20.1.1;\n"));
    assert!(!text.contains("option routers"), "{text}");
    assert!(rack2.contains("if option arch = 00:07 or option arch = 00:09 {"));
    assert!(rack2
        .contains("  host n04 { hardware ethernet 52:54:00:12:34:04; fixed-address 172.20.1.7; }"));
    assert_eq!(rack2.matches("host ").count(), 1, "{rack2}");
}

#[test]
fn dnsmasq_hands_each_routed_entity_its_router() {
    let (_work, tree) = build(&example());
    let dnsmasq = tree.join("dhcp/dnsmasq.conf");
    let text = read(&tree, "dhcp/dnsmasq.conf");
    assert!(text.contains(
        "dhcp-range=set:rack2,172.20.1.0,static,255.255.255.0\ndhcp-option=tag:rack2,3,172.20.1.1\n"
    ));
    assert!(text.contains("dhcp-option=tag:rack1,3,172.20.0.1\n"));
    let conf = format!("--conf-file={}", dnsmasq.display());
    let o = real_check("dnsmasq", &["--test".as_ref(), conf.as_ref()]);
    assert!(
        o.status.success(),
        "dnsmasq --test: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn bootopts_and_the_grub_and_ipxe_lines_carry_each_entitys_mask_and_gateway() {
    let (_work, tree) = build(&example());
    // rack2 (172.20.1.0/24, gateway .1): its subnet file and n04's own files.
    let b = BootOpts::parse(&read(&tree, "etc/bootopts/AC1401"));
    assert_eq!(b.gateway(), Some(Ipv4Addr::new(172, 20, 1, 1)));
    assert_eq!(b.get("subnet"), Some("172.20.1.0/24"));
    let rack2 = "::172.20.1.1:255.255.255.0\n";
    for (f, ip) in [
        ("boot/grub/grub.cfg-AC1401", "ip=${net_default_ip}"),
        (
            "boot/grub/grub.cfg-01-52-54-00-12-34-04",
            "ip=${net_default_ip}",
        ),
        ("ipxe/01-52-54-00-12-34-04.ipxe", "ip=${ip}"),
    ] {
        let t = read(&tree, f);
        let line = t
            .lines()
            .find(|l| l.trim_start().starts_with("linux ") || l.starts_with("kernel "))
            .unwrap_or_else(|| panic!("{f} has no kernel line:\n{t}"));
        assert!(
            format!("{line}\n").ends_with(&format!(" {ip}{rack2}")),
            "{f}: {line}"
        );
        // The words the agent read before stay.
        assert!(
            line.contains(" netboot.mac=$") && line.contains(" netboot.ip=$"),
            "{line}"
        );
    }
    // rack1 (172.20.0.0/27, gateway .1): both of its hex files, and n02's own file.
    for f in ["etc/bootopts/AC14000", "etc/bootopts/AC14001"] {
        let b = BootOpts::parse(&read(&tree, f));
        assert_eq!(b.gateway(), Some(Ipv4Addr::new(172, 20, 0, 1)), "{f}");
    }
    assert!(read(&tree, "boot/grub/grub.cfg-AC14001")
        .contains(" ip=${net_default_ip}::172.20.0.1:255.255.255.224\n"));
    assert!(read(&tree, "ipxe/01-52-54-00-12-34-02.ipxe")
        .contains(" ip=${ip}::172.20.0.1:255.255.255.224\n"));
    // The fallback knows no entity: iPXE passes its own DHCP values, GRUB none.
    assert!(read(&tree, "ipxe/default.ipxe").contains(" ip=${ip}::${gateway}:${netmask}\n"));
    assert!(!read(&tree, "boot/grub/grub.cfg").contains(" ip="));
    // pxelinux keeps passing the lease's ip= (router and mask from DHCP) itself.
    let px = read(&tree, "pxelinux.cfg/AC1401");
    assert!(
        px.contains("  IPAPPEND 3\n") && !px.contains(" ip="),
        "{px}"
    );
}

/// The primary's own subnet, holding both servers, needs no gateway: none is handed
/// out, and the `ip=` words carry the mask with an empty gateway.
#[test]
fn a_flat_subnet_needs_no_gateway_and_gets_none() {
    let body = example()
        .replacen(
            "image_server = \"http://172.20.0.100:8080\"",
            "image_server = \"http://172.20.0.3:8080\"",
            1,
        )
        .replacen("gateway = \"172.20.0.1\"\n", "", 1);
    let (_work, tree) = build(&body);
    let b = BootOpts::parse(&read(&tree, "etc/bootopts/AC14000"));
    assert_eq!((b.get("gateway"), b.gateway()), (None, None));
    assert!(read(&tree, "boot/grub/grub.cfg-AC14000")
        .contains(" ip=${net_default_ip}:::255.255.255.224\n"));
    assert!(!read(&tree, "dhcp/dnsmasq.conf").contains("tag:rack1,3,"));
    let dhcpd = read(&tree, "dhcp/dhcpd.conf");
    let rack1 = dhcpd.split("# entity rack2").next().unwrap();
    assert!(!rack1.contains("routers"), "{rack1}");
}

#[test]
fn a_routed_entity_without_a_gateway_is_refused_at_its_name() {
    // rack2 (172.20.1.0/24) is reached through a router: server_ip 172.20.0.2 is not in it.
    refused(
        "name = \"rack2\"\nsubnet = \"172.20.1.0/24\"\ngateway = \"172.20.1.1\"\n",
        "name = \"rack2\"\nsubnet = \"172.20.1.0/24\"\n",
        "\"rack2\"",
        "entity `rack2` has no `gateway`, but its nodes must reach server_ip 172.20.0.2 outside its subnet 172.20.1.0/24",
    );
    // rack1 (172.20.0.0/27) holds server_ip, but not image_server's 172.20.0.100.
    let ex = example();
    let start = ex.find("name = \"rack1\"").unwrap();
    let gw = "gateway = \"172.20.0.1\"\n";
    let end = ex.find(gw).unwrap() + gw.len();
    let rack1 = &ex[start..end];
    refused(
        rack1,
        &rack1.replace(gw, ""),
        "\"rack1\"",
        "entity `rack1` has no `gateway`, but its nodes must reach image_server 172.20.0.100 outside its subnet 172.20.0.0/27: add `gateway = ",
    );
}

#[test]
fn an_entity_relaying_a_group_to_another_subnet_needs_a_gateway_too() {
    // rack1 holds both servers (no gateway needed to reach them), but group `compute` now
    // has n04 in rack2: the plan chains rack2's secondary to rack1's nodes, whose answers
    // need a route back to 172.20.1.0/24.
    let local = example()
        .replacen(
            "image_server = \"http://172.20.0.100:8080\"",
            "image_server = \"http://172.20.0.3:8080\"",
            1,
        )
        .replacen("gateway = \"172.20.0.1\"\n", "", 1);
    let (_work, _tree) = build(&local); // rack1 without gateway is fine on its own
    let body = local.replacen("groups = [\"vSMP_big\"]", "groups = [\"compute\"]", 1);
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &body);
    let at = body.find("name = \"rack1\"").unwrap() + "name = ".len();
    let (line, col) = line_col(&body, at);
    let tree = work.path().join("tree");
    for (args, out) in [
        (vec!["check"], None),
        (vec!["build", "--cluster"], Some(tree.as_path())),
    ] {
        let o = run(&args, &c, out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "cluster.toml:{line}:{col}: entity `rack1` has no `gateway`, but group `compute` is cloned across it and entity `rack2`"
            )),
            "{err}"
        );
        assert_eq!(err.matches("has no `gateway`").count(), 1, "{err}");
    }
    assert!(!tree.exists(), "build wrote a tree for a refused cluster");
}

#[test]
fn a_gateway_must_be_a_host_address_of_its_subnet() {
    for (gw, frag) in [
        (
            "172.20.2.1",
            "gateway 172.20.2.1 of entity `rack2` is outside the entity's subnet 172.20.1.0/24",
        ),
        (
            "172.20.1.0",
            "is the network address of subnet 172.20.1.0/24",
        ),
        (
            "172.20.1.255",
            "is the broadcast address of subnet 172.20.1.0/24",
        ),
        (
            "router1",
            "gateway `router1` of entity `rack2` is not an IPv4 address",
        ),
    ] {
        refused(
            "gateway = \"172.20.1.1\"",
            &format!("gateway = \"{gw}\""),
            "\"",
            frag,
        );
    }
}

#[test]
fn a_node_on_its_entitys_gateway_address_is_refused_at_its_ip() {
    refused(
        "ip = \"172.20.1.7\"",
        "ip = \"172.20.1.1\"",
        "\"",
        "IP 172.20.1.1 of node `n04` is the `gateway` of its entity `rack2`",
    );
}

#[test]
fn ip_is_ours_on_every_kernel_line() {
    refused(
        "\nargs = \"\"\n",
        "\nargs = \"ip=dhcp\"\n",
        "ip=",
        "`ip=` is set by pxe-builder",
    );
}

/// The one non-loopback interface of namespace `ns`.
fn iface(ns: &str) -> String {
    let o = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .find(|n| n != "lo")
        .unwrap_or_else(|| panic!("no interface in {ns}"))
}

/// A process started by the test, stopped by its PID even when the test fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What busybox `udhcpc` leased to a client with `mac`, from the real dhcpd serving
/// `conf` on a namespace LAN whose server address is `server`: `ip`, `mask`, `router`,
/// `siaddr` (next-server), `boot_file`.
fn lease(work: &Path, tag: &str, conf: &Path, server: &str, mac: &str) -> Vec<(String, String)> {
    let mut lan = Lan::new(tag);
    let srv = lan.host("d", server);
    let cli = lan.host("c", "192.0.2.1/32");
    let (srv_if, cli_if) = (iface(&srv), iface(&cli));
    let set_mac = std::process::Command::new("ip")
        .args(["-n", &cli, "link", "set", &cli_if, "address", mac])
        .status()
        .unwrap();
    assert!(set_mac.success());
    let leases = work.join(format!("{tag}.leases"));
    std::fs::write(&leases, "").unwrap();
    let log = work.join(format!("{tag}.dhcpd.log"));
    let dhcpd = ["/usr/sbin/dhcpd", "/sbin/dhcpd"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("dhcpd");
    let _dhcpd = Running(
        Lan::cmd(&srv, dhcpd)
            .args(["-4", "-f", "-d", "-cf"])
            .arg(conf)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(work.join(format!("{tag}.pid")))
            .arg(&srv_if)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(work.join(format!("{tag}.err"))).unwrap())
            .spawn()
            .expect("dhcpd (isc-dhcp-server)"),
    );
    let script = work.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE ip=$ip mask=$subnet router=$router siaddr=$siaddr boot_file=$boot_file\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // udhcpc asks up to 20 times, a second apart: dhcpd needs a moment to start.
    let o = Lan::cmd(&cli, "busybox")
        .args([
            "udhcpc", "-q", "-n", "-f", "-t", "20", "-T", "1", "-i", &cli_if, "-s",
        ])
        .arg(&script)
        .output()
        .expect("busybox");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("LEASE "))
        .unwrap_or_else(|| {
            panic!(
                "no lease for {mac}: {out}{}\ndhcpd said:\n{}",
                String::from_utf8_lossy(&o.stderr),
                std::fs::read_to_string(work.join(format!("{tag}.err"))).unwrap_or_default()
            )
        });
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(lease: &'a [(String, String)], k: &str) -> &'a str {
    lease
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {k} in {lease:?}"))
}

/// The real dhcpd serving a site's dhcpd.conf (its own subnets and routers) with the
/// snippet included: every node keeps the site's router (the site's declaration of its
/// subnet is the authority, issue 17's acceptance), and gets our next-server and boot
/// file; where the site declares the subnet without a router, or not at all (the
/// standalone pair), a rack's node gets the rack's `gateway`.
#[test]
fn dhcpd_keeps_the_sites_router_and_the_standalone_pair_hands_out_the_gateway() {
    test_fixtures::skip_unless_root!("network namespaces");
    // rack1 holds both servers and has no gateway; rack2 is routed (gateway 172.20.1.1).
    let body = example()
        .replacen(
            "image_server = \"http://172.20.0.100:8080\"",
            "image_server = \"http://172.20.0.3:8080\"",
            1,
        )
        .replacen("gateway = \"172.20.0.1\"\n", "", 1);
    let (work, tree) = build(&body);
    let conf = site_conf(work.path(), &[&tree.join("dhcp/dhcpd.conf")]);
    let n04 = lease(
        work.path(),
        "gw2",
        &conf,
        "172.20.1.2/24",
        "52:54:00:12:34:04",
    );
    assert_eq!(field(&n04, "ip"), "172.20.1.7");
    assert_eq!(
        field(&n04, "router"),
        "172.20.1.254",
        "the snippet overrode the site's router"
    );
    assert_eq!(field(&n04, "mask"), "255.255.255.0");
    assert_eq!(field(&n04, "siaddr"), "172.20.0.2");
    assert_eq!(field(&n04, "boot_file"), "pxelinux.0");
    let n01 = lease(
        work.path(),
        "gw1",
        &conf,
        "172.20.0.2/27",
        "52:54:00:12:34:01",
    );
    assert_eq!(field(&n01, "ip"), "172.20.0.5");
    assert_eq!(
        field(&n01, "router"),
        "172.20.0.30",
        "the site's router was lost"
    );
    assert_eq!(field(&n01, "mask"), "255.255.255.224");
    assert_eq!(field(&n01, "siaddr"), "172.20.0.2");
    // A site that declares rack2's subnet without a router: the rack's gateway fills it.
    let bare = work.path().join("bare-site.conf");
    std::fs::write(
        &bare,
        format!(
            "authoritative;\nsubnet 172.20.1.0 netmask 255.255.255.0 {{\n  range 172.20.1.100 172.20.1.200;\n}}\ninclude \"{}\";\n",
            tree.join("dhcp/dhcpd.conf").display()
        ),
    )
    .unwrap();
    let n04 = lease(
        work.path(),
        "gw4",
        &bare,
        "172.20.1.2/24",
        "52:54:00:12:34:04",
    );
    assert_eq!(
        field(&n04, "router"),
        "172.20.1.1",
        "a site subnet without a router got none"
    );
    // No site declarations: the standalone pair declares the subnets, with rack2's router.
    let standalone = work.path().join("standalone.conf");
    std::fs::write(
        &standalone,
        format!(
            "include \"{}\";\ninclude \"{}\";\n",
            tree.join("dhcp/dhcpd-subnets.conf").display(),
            tree.join("dhcp/dhcpd.conf").display()
        ),
    )
    .unwrap();
    let n04 = lease(
        work.path(),
        "gw3",
        &standalone,
        "172.20.1.2/24",
        "52:54:00:12:34:04",
    );
    assert_eq!(field(&n04, "ip"), "172.20.1.7");
    assert_eq!(field(&n04, "router"), "172.20.1.1", "the rack's gateway");
    assert_eq!(field(&n04, "boot_file"), "pxelinux.0");
}
