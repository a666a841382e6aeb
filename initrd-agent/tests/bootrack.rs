//! Boot files from the rack, in network namespaces made by the test: a primary running
//! the real `imgtool serve` over a boot tree rendered by pxe-builder (node iPXE scripts,
//! `etc/bootfiles.json`), the rack's secondary running `initrd-agent boot-files` (what a
//! secondary's relay does beside the image), and a node that follows its own rendered
//! iPXE script — read by a small interpreter of the commands the script uses (`kernel`,
//! `initrd`, `boot`, `|| goto`, labels, `imgfree`), fetching over HTTP with iPXE's
//! `--timeout` as the progress timeout. The node's kernel and initrd must equal the
//! primary's bytes, come from the secondary while it serves (the primary sending only
//! the script), and from the primary when the secondary is gone or unreachable.

mod common;

use common::rackboot::{fetch, run_ipxe, sent, serve, write_tree, Booted, Secondary};
use test_fixtures::netns::{ip, Lan};
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.79.0.1";
const SECONDARY: &str = "10.79.1.11";
const NODE: &str = "10.79.1.12";
const PORT: u16 = 8180;

/// One rack of three compute nodes (n1 its secondary), every node with its own files.
fn cluster() -> String {
    format!(
        "[cluster]\nname = \"t\"\nimage_server = \"http://{PRIMARY}:8080\"\nserver_ip = \"{PRIMARY}\"\nkernel = \"k\"\ninitrd = \"i\"\nnode_files = \"all\"\nrelay_port = {PORT}\n\n[[entity]]\nname = \"r1\"\nsubnet = \"10.79.1.0/24\"\ngateway = \"10.79.1.1\"\ndefault_group = \"compute\"\n\n[[group]]\nname = \"compute\"\n\n[[node]]\nname = \"n1\"\nmac = \"52:54:00:79:00:01\"\nip = \"{SECONDARY}\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n2\"\nmac = \"52:54:00:79:00:02\"\nip = \"{NODE}\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n3\"\nmac = \"52:54:00:79:00:03\"\nip = \"10.79.1.13\"\nentity = \"r1\"\ngroups = [\"compute\"]\n"
    )
}

/// The node n2 boots by its own iPXE script, in its namespace; what it booted and how
/// many bytes the primary sent meanwhile.
fn boot_n2(node_ns: &str, primary_ns: &str) -> (Booted, u64) {
    let origin = format!("http://{PRIMARY}:8080");
    let before = sent(primary_ns);
    let booted = test_fixtures::netns::in_namespace(node_ns, move || {
        let script = fetch(&format!("{origin}/ipxe/01-52-54-00-79-00-02.ipxe"), 10_000)
            .expect("the node's script from the primary");
        run_ipxe(&String::from_utf8_lossy(&script), &origin, &[("ip", NODE)])
    })
    .expect("n2 boots");
    (booted, sent(primary_ns) - before)
}

/// The secondary's `initrd-agent boot-files`, once it serves.
fn start_secondary(ns: &str) -> common::rackboot::Proc {
    let server = format!("http://{PRIMARY}:8080");
    Secondary::start(ns, &server, &format!("{SECONDARY}:{PORT}"), &[])
        .serving("secondary")
        .0
}

#[test]
fn a_node_boots_from_its_racks_secondary_and_falls_back_to_the_primary() {
    skip_unless_root!("network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let (root, kernel, initrd) = write_tree(dir.path(), &cluster());
    let mut lan = Lan::new("br");
    let p = lan.host("p", &format!("{PRIMARY}/16"));
    let s = lan.host("n1", &format!("{SECONDARY}/16"));
    let n = lan.host("n2", &format!("{NODE}/16"));
    let _primary = serve(&p, &root, &format!("{PRIMARY}:8080"));
    let secondary = start_secondary(&s);
    let total = (kernel.len() + initrd.len()) as u64;

    // From the rack: the primary's bytes, from the secondary; the primary sent the script.
    let (b, primary_sent) = boot_n2(&n, &p);
    let (ku, kb) = b.kernel.unwrap();
    let (iu, ib) = b.initrd.unwrap();
    assert_eq!(ku, format!("http://{SECONDARY}:{PORT}/boot/vmlinuz"));
    assert_eq!(iu, format!("http://{SECONDARY}:{PORT}/boot/initrd.img"));
    assert!(kb == kernel && ib == initrd, "the node got other bytes");
    assert!(
        primary_sent < total / 20,
        "the primary sent {primary_sent} bytes for a rack boot"
    );

    // The secondary gone (its port refuses): from the primary, the same bytes.
    drop(secondary);
    let (b, primary_sent) = boot_n2(&n, &p);
    let (ku, kb) = b.kernel.unwrap();
    let (iu, ib) = b.initrd.unwrap();
    assert_eq!(ku, format!("http://{PRIMARY}:8080/boot/vmlinuz"));
    assert_eq!(iu, format!("http://{PRIMARY}:8080/boot/initrd.img"));
    assert!(kb == kernel && ib == initrd, "the node got other bytes");
    assert!(primary_sent >= total, "the primary sent {primary_sent}");

    // The secondary's host unreachable (no answer at all): the script's timeout, then the
    // primary.
    ip(&["-n", &s, "link", "set", "h2", "down"]);
    let (b, _) = boot_n2(&n, &p);
    assert_eq!(
        b.kernel.map(|k| k.0),
        Some(format!("http://{PRIMARY}:8080/boot/vmlinuz"))
    );
    assert_eq!(b.initrd.map(|i| i.1), Some(initrd));
}
