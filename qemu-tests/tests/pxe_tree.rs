//! The boot tree of pxe-builder, booted for real: SeaBIOS + iPXE ROM + pxelinux from the
//! tree, and OVMF + GRUB's network image from the tree, each with the real kernel and an
//! initrd that prints the command line the entry set.

use qemu_tests::*;
use std::path::Path;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A cluster: rack1 = 172.20.0.0/27 (default group compute), node n01 in another group
/// (so it has a file of its own), and a vSMP
/// group whose boards are p1 (primary) and s1 (secondary). The vSMP loader is the test
/// kernel itself, so the booted command line shows each board's role.
fn build_tree(work: &Path) -> std::path::PathBuf {
    let kernel = kernel();
    let initrd = work.join("cmdline-initrd.img");
    std::fs::write(&initrd, cmdline_initrd()).unwrap();
    let toml = format!(
        r#"
[cluster]
name = "qemu"
image_server = "http://172.20.0.100:8080"
server_ip = "172.20.0.2"
kernel = "{k}"
initrd = "{i}"
kernel_args = "console=ttyS0 panic=-1"
vsmp_loader = "{k}"

[[entity]]
name = "rack1"
subnet = "172.20.0.0/27"
gateway = "172.20.0.2"
default_group = "compute"

[[group]]
name = "compute"

[[group]]
name = "special"

[[group]]
name = "vSMP_big"
diskless = true
active = ["p1", "s1"]

[[node]]
name = "n01"
mac = "52:54:00:00:00:01"
ip = "172.20.0.5"
entity = "rack1"
groups = ["special"]

[[node]]
name = "s1"
mac = "52:54:00:00:00:12"
ip = "172.20.0.7"
entity = "rack1"
groups = ["vSMP_big"]

[[node]]
name = "p1"
mac = "52:54:00:00:00:11"
ip = "172.20.0.6"
entity = "rack1"
groups = ["vSMP_big"]
"#,
        k = kernel.display(),
        i = initrd.display()
    );
    tree_from_toml(work, &toml)
}

fn boot(firmware: Firmware, mac: &str, ip: &str) -> String {
    let work = tempfile::tempdir().unwrap();
    let tree = build_tree(work.path());
    let mut vm = Vm::start(&Boot {
        firmware,
        tree: &tree,
        mac,
        ip,
        netdev_extra: String::new(),
        extra: vec![],
        work: work.path(),
    });
    let console = vm.wait_exit(BOOT_TIMEOUT);
    printed_cmdline(&console).unwrap_or_else(|| {
        panic!(
            "the initrd never printed the command line; console tail:
{}",
            tail(&console, 3000)
        )
    })
}

#[test]
fn bios_node_with_its_own_file_boots_that_entry() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let cmd = boot(Firmware::Bios, "52:54:00:00:00:01", "172.20.0.5");
    assert!(cmd.contains("netboot.node=n01"), "{cmd}");
    assert!(
        cmd.contains("netboot.group=special netboot.image=special"),
        "{cmd}"
    );
    // pxelinux's IPAPPEND 3 told the kernel the interface and address.
    assert!(cmd.contains("BOOTIF=01-52-54-00-00-00-01"), "{cmd}");
    assert!(cmd.contains("ip=172.20.0.5:"), "{cmd}");
}

#[test]
fn bios_unlisted_node_in_a_27_boots_its_entity_hex_file() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let cmd = boot(Firmware::Bios, "52:54:00:00:00:99", "172.20.0.9");
    assert!(
        cmd.contains("netboot.entity=rack1 netboot.group=compute"),
        "{cmd}"
    );
    assert!(
        !cmd.contains("netboot.node="),
        "an unlisted node got a node entry: {cmd}"
    );
    assert!(cmd.contains("ip=172.20.0.9:"), "{cmd}");
}

#[test]
fn bios_vsmp_boards_get_their_roles() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let p = boot(Firmware::Bios, "52:54:00:00:00:11", "172.20.0.6");
    assert!(
        p.contains("vsmp.role=primary vsmp.board=1 vsmp.boards=p1,s1"),
        "{p}"
    );
    assert!(p.contains("netboot.mode=vsmp-diskless"), "{p}");
    let s = boot(Firmware::Bios, "52:54:00:00:00:12", "172.20.0.7");
    assert!(
        s.contains("vsmp.role=secondary vsmp.board=2 vsmp.boards=p1,s1"),
        "{s}"
    );
}

#[test]
fn uefi_grub_boots_the_entity_file_and_passes_mac_and_address() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let cmd = boot(Firmware::Uefi, "52:54:00:aa:bb:cc", "172.20.0.9");
    assert!(
        cmd.contains("netboot.entity=rack1 netboot.group=compute"),
        "{cmd}"
    );
    assert!(cmd.contains("netboot.mac=52:54:00:aa:bb:cc"), "{cmd}");
    assert!(cmd.contains("netboot.ip=172.20.0.9"), "{cmd}");
}
