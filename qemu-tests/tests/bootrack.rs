//! Boot files from the rack with a real iPXE: SeaBIOS + the NIC's iPXE ROM run the node's
//! own script from pxe-builder's tree (`ipxe/01-<mac>.ipxe`, the DHCP boot file), which
//! tries the kernel and initrd from its rack's secondary — a relay serving the boot files
//! in this process (`initrd_agent::relay`, fetched from `imgtool serve` and checked),
//! reached through QEMU's `guestfwd` at the secondary's address — then the primary (QEMU's
//! TFTP). The initrd prints the kernel command line and powers off. A default-group node
//! (no script of its own) reaches the same rack through `boot.ipxe` and the entity's
//! gateway script (`ipxe/gw-<router>.ipxe`).

use initrd_agent::relay::Relay;
use qemu_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const MAC: &str = "52:54:00:00:00:02";
const SECONDARY: &str = "172.20.0.11";

/// A rack of two compute nodes: n1 (172.20.0.11) its secondary, n2 (172.20.0.12) a node
/// with its own iPXE script.
fn build_tree(work: &Path) -> std::path::PathBuf {
    let initrd = work.join("cmdline-initrd.img");
    std::fs::write(&initrd, cmdline_initrd()).unwrap();
    let toml = format!(
        r#"
[cluster]
name = "rack"
image_server = "http://172.20.0.100:8080"
server_ip = "172.20.0.2"
kernel = "{k}"
initrd = "{i}"
kernel_args = "console=ttyS0 panic=-1"
node_files = "all"

[[entity]]
name = "rack1"
subnet = "172.20.0.0/27"
gateway = "172.20.0.2"
default_group = "compute"

[[group]]
name = "compute"

[[node]]
name = "n1"
mac = "52:54:00:00:00:01"
ip = "{SECONDARY}"
entity = "rack1"
groups = ["compute"]

[[node]]
name = "n2"
mac = "{MAC}"
ip = "172.20.0.12"
entity = "rack1"
groups = ["compute"]
"#,
        k = kernel().display(),
        i = initrd.display()
    );
    tree_from_toml(work, &toml)
}

/// Boots n2 with the iPXE ROM on its own script from `tftp`, the secondary's relay port
/// forwarded to the host's `port`; its console once it powered off.
fn boot_n2(work: &Path, tftp: &Path, port: u16) -> String {
    boot_n2_from(work, tftp, port, "ipxe/01-52-54-00-00-00-02.ipxe", "on")
}

/// As [`boot_n2`], the DHCP boot file being `bootfile`; `restrict` is QEMU's (`off`: its
/// DHCP also sends the router, 172.20.0.2, which it leaves out when restricted).
///
/// Unrestricted user networking would let the guest reach any address the host reaches,
/// so then QEMU runs in a network namespace of its own that has only its loopback (no
/// route anywhere): the guest's one way out is the `guestfwd` to the relay, whose
/// command enters this test process's namespace (`nsenter`) to reach it.
fn boot_n2_from(work: &Path, tftp: &Path, port: u16, bootfile: &str, restrict: &str) -> String {
    let log = work.join(format!("console-{port}.log"));
    let (cmd, forward, _jail) = if restrict == "on" {
        let fwd = format!("/bin/busybox nc 127.0.0.1 {port}");
        (Command::new("qemu-system-x86_64"), fwd, None)
    } else {
        let jail = test_fixtures::netns::Lan::new("gw");
        let fwd = format!(
            "nsenter --net=/proc/{}/ns/net /bin/busybox nc 127.0.0.1 {port}",
            std::process::id()
        );
        let cmd = test_fixtures::netns::Lan::cmd(jail.switch(), "qemu-system-x86_64");
        (cmd, fwd, Some(jail))
    };
    let netdev = format!(
        "user,id=n0,net=172.20.0.0/24,dhcpstart=172.20.0.12,restrict={restrict},tftp={},bootfile={bootfile},guestfwd=tcp:{SECONDARY}:8180-cmd:{forward}",
        tftp.display()
    );
    let device = format!("virtio-net-pci,netdev=n0,mac={MAC}");
    let args = [
        "-m", "512", "-netdev", &netdev, "-device", &device, "-boot", "n",
    ];
    let mut q = Qemu::spawn(cmd, &args, log);
    let start = Instant::now();
    loop {
        let console = q.console();
        if printed_cmdline(&console).is_some() || matches!(q.child.try_wait(), Ok(Some(_))) {
            return q.console();
        }
        assert!(
            start.elapsed() < BOOT_TIMEOUT,
            "no boot within {BOOT_TIMEOUT:?}; console tail:\n{}",
            tail(&console, 3000)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The tree built in `work` and the rack's secondary: the primary (HTTP) holds the whole
/// tree, served in the background; the secondary, a relay on loopback, has fetched the
/// boot files from it. The tree, the relay (keep it for the whole test) and its port.
fn tree_and_secondary(work: &Path) -> (PathBuf, Arc<Relay>, u16) {
    let tree = build_tree(work);
    let primary = serve_in_background(vec![tree.clone()]);
    let relay = Relay::new("", Path::new("/dev/null"), 0);
    let addr = relay.serve("127.0.0.1:0").unwrap();
    relay
        .serve_boot_files(
            initrd_agent::relay::bootfiles::Sources::primary(&format!(
                "http://127.0.0.1:{primary}"
            )),
            Box::new(|l| eprintln!("secondary: {l}")),
        )
        .join()
        .unwrap();
    (tree, relay, addr.port())
}

/// A TFTP root `dir` holding only `files` (paths under `ipxe/` or at the top) copied
/// from `tree`.
fn tftp_with(dir: &Path, tree: &Path, files: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir.join("ipxe")).unwrap();
    for f in files {
        std::fs::copy(tree.join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

/// The kernel command line the initrd printed; the test fails without one.
fn cmdline_of(console: &str) -> String {
    printed_cmdline(console)
        .unwrap_or_else(|| panic!("no command line; console:\n{}", tail(console, 3000)))
}

/// iPXE loaded the kernel and the initrd from the rack's secondary.
fn assert_boot_files_from_secondary(console: &str) {
    for f in ["boot/vmlinuz", "boot/initrd.img"] {
        let url = format!("http://{SECONDARY}:8180/{f}");
        assert!(
            console
                .lines()
                .any(|l| l.starts_with(&url) && l.contains("ok")),
            "{}",
            tail(console, 3000)
        );
    }
}

#[test]
fn real_ipxe_boots_from_the_racks_secondary_and_falls_back_to_the_primary() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let work = tempfile::tempdir().unwrap();
    let (tree, _secondary, port) = tree_and_secondary(work.path());

    // TFTP without the boot files: the node can only have them from its secondary.
    let bare = tftp_with(
        &work.path().join("bare"),
        &tree,
        &["ipxe/01-52-54-00-00-00-02.ipxe"],
    );
    let console = boot_n2(work.path(), &bare, port);
    let cmdline = cmdline_of(&console);
    assert!(cmdline.contains("netboot.node=n2"), "{cmdline}");
    assert_boot_files_from_secondary(&console);

    // The secondary down (nothing listens where its port is forwarded): from the primary.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let console = boot_n2(work.path(), &tree, dead_port);
    let cmdline = cmdline_of(&console);
    assert!(cmdline.contains("netboot.node=n2"), "{cmdline}");
    // iPXE tried the secondary (an error), then loaded both from the primary (relative to
    // the script: QEMU's TFTP). Its lines read `http://…/boot/vmlinuz... Error 0x…` (or,
    // as the forwarding command's connection fails in time, `... Connection reset
    // (http://ipxe.org/0f0a6039)`: iPXE names the error and links its code) and
    // `/boot/vmlinuz... ok`.
    let lines: Vec<&str> = console.lines().filter(|l| l.contains("/boot/")).collect();
    let secondary = format!("http://{SECONDARY}:8180/boot/vmlinuz");
    assert!(
        lines.iter().any(|l| l.starts_with(&secondary)
            && (l.contains("Error") || l.contains("http://ipxe.org/"))),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(&secondary) && l.contains("... ok")),
        "{lines:?}"
    );
    for f in ["/boot/vmlinuz", "/boot/initrd.img"] {
        assert!(
            lines.iter().any(|l| l.starts_with(f) && l.contains("ok")),
            "{lines:?}"
        );
    }
}

#[test]
fn real_ipxe_finds_its_rack_by_its_gateway() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let work = tempfile::tempdir().unwrap();
    let (tree, _secondary, port) = tree_and_secondary(work.path());
    // A default-group node without a script of its own: TFTP holds boot.ipxe and the
    // entity's gateway script (QEMU's DHCP router is 172.20.0.2, the entity's gateway),
    // not the boot files; boot.ipxe's first chain (01-<mac>) fails, the second runs the
    // gateway script, whose `iseq` branch is the secondary's only.
    let bare = tftp_with(
        &work.path().join("bare-gw"),
        &tree,
        &["boot.ipxe", "ipxe/gw-172.20.0.2.ipxe"],
    );
    // Unrestricted, so that QEMU's DHCP names the router — and therefore in a namespace
    // with no route anywhere (boot_n2_from): the guest reaches the relay and nothing else.
    let console = boot_n2_from(work.path(), &bare, port, "boot.ipxe", "off");
    let cmdline = cmdline_of(&console);
    assert!(
        cmdline.contains("netboot.entity=rack1") && !cmdline.contains("netboot.node="),
        "{cmdline}"
    );
    assert_boot_files_from_secondary(&console);
}
