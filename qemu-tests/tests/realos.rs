//! A real OS, end to end (issue 12): a debootstrapped Debian bookworm master (systemd,
//! GRUB in an ef02 partition and on an ESP, swap, fstab by UUID; `scripts/make-realos.sh`)
//! is captured with `imgtool`, a node whose disk held other file systems before (LVM2,
//! LUKS, btrfs and XFS signatures where the new partitions go) PXE-clones itself with the
//! agent onto that disk, 1.25× the master (the root grows), and powers off. A second QEMU
//! run then boots the node's disk by itself (`-boot c`, no NIC) and must reach the
//! master's marker line with swap active; `blkid -p` must name exactly one type on each
//! cloned partition (none on the BIOS boot partition, which holds GRUB's core.img).
//!
//! Why a second QEMU run rather than a reboot of the first: the tree's entry always clones
//! (a reboot would PXE-boot the agent again), and a separate run gives the disk boot its
//! own firmware state and serial log; what the disk holds is all that carries over — as on
//! a node whose firmware boots its disk once the clone is done.
//!
//! Default suite: BIOS, `bios-ext4`. With `NETBOOT_SLOW_TESTS=1`: the same disk booted
//! under UEFI (OVMF, cloned through GRUB), and the `xfs` and `lvm` variants.
//! Serial logs: `target/realos/logs/`.

use qemu_tests::realos::*;
use qemu_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};
use test_fixtures::disk::Loop;
use test_fixtures::image::capture_into;
use test_fixtures::skip_unless_root;

/// TCG is slow and the machine shared: a clone of the ~0.5 GB Debian takes minutes.
const CLONE_TIMEOUT: Duration = Duration::from_secs(1200);
/// Debian under TCG reaches its marker in well under a minute alone; a swap that cannot be
/// found adds systemd's 90 s device timeout.
const DISK_BOOT_TIMEOUT: Duration = Duration::from_secs(900);

struct Case {
    name: &'static str,
    variant: &'static str,
    firmware: Firmware,
    mac: &'static str,
    /// Partition types `blkid -p` must name, partitions 1–4 (`None`: no signature at all).
    types: [Option<&'static str>; 4],
    /// What the marker must say.
    marker: &'static str,
    /// The agent must report the root partition's contents grown onto the larger disk
    /// (ext4 by resize2fs, XFS mounted and grown by ioctl inside the initrd, an LVM PV by
    /// pvresize's metadata edit).
    root_grows: bool,
}

fn clone_and_boot(case: &Case) {
    // Scratch (a 2.2 GB sparse node disk) under target/, not /tmp.
    let scratch = test_fixtures::disk::target_tmp();
    std::fs::create_dir_all(&scratch).unwrap();
    let work = tempfile::tempdir_in(&scratch).unwrap();
    let w = work.path();
    let t = Instant::now();
    let master = master(case.variant);
    let t_master = t.elapsed();

    let t = Instant::now();
    let images = w.join("images");
    capture_into(&master, &images, "compute");
    let t_capture = t.elapsed();

    let kernel = kernel();
    let initrd = w.join("initrd.img");
    std::fs::write(&initrd, agent_initrd(&kernel)).unwrap();
    let tree = one_node_tree(w, "rn1", case.mac, &kernel, &initrd);
    let port = serve_in_background(vec![images.clone(), tree.clone()]);

    let disk = w.join("node.img");
    let size = (std::fs::metadata(&master).unwrap().len() * 5 / 4) >> 20 << 20;
    let before = dirty_disk(&disk, &master, size);
    eprintln!("{}: the node's disk before: {before}", case.name);

    let t = Instant::now();
    let clone = clone_node(
        case.firmware,
        w,
        &tree,
        port,
        &disk,
        case.mac,
        CLONE_TIMEOUT,
    );
    let t_clone = t.elapsed();
    let log = keep_log(&format!("{}-clone", case.name), &clone);
    assert!(
        clone.contains("netboot: done: image"),
        "the node did not finish the clone (log {}):\n{}",
        log.display(),
        tail(&clone, 4000)
    );
    assert!(
        !case.root_grows || clone.contains("grown from"),
        "the root was not grown onto the 1.25x disk (log {})",
        log.display()
    );

    eprintln!(
        "{}: master {:.0?}, capture {:.0?}, clone {:.0?}",
        case.name, t_master, t_capture, t_clone
    );
    // Checked after the boot, so that a failure shows both what blkid and what the booted
    // OS made of the disk (an ambivalent swap: systemd cannot find it, swap=0).
    let wrong_types = partitions_without_one_type(&disk, &case.types);

    let t = Instant::now();
    let mut vm = DiskVm::start(case.firmware, &disk, w);
    let console = vm.wait(DISK_BOOT_TIMEOUT);
    let t_boot = t.elapsed();
    let log = keep_log(&format!("{}-disk", case.name), &console);
    let seen = marker(&console);
    eprintln!(
        "{}: disk boot {t_boot:.0?}, marker {seen:?} (log {})",
        case.name,
        log.display()
    );
    assert!(
        wrong_types.is_empty(),
        "{}: cloned partitions without exactly one signature:\n{}\n(and the disk boot's marker: {seen:?})",
        case.name,
        wrong_types.join("\n")
    );
    assert_eq!(
        seen.as_deref(),
        Some(case.marker),
        "the cloned disk did not boot to the marker with swap active (log {}):\n{}",
        log.display(),
        tail(&console, 4000)
    );
}

/// `blkid -p` on each partition of the cloned disk: exactly the expected type, never an
/// ambivalent result (a swap over an old btrfs superblock is one). Returns the failures.
fn partitions_without_one_type(disk: &Path, types: &[Option<&str>; 4]) -> Vec<String> {
    let l = Loop::attach(disk, true);
    let mut wrong = vec![];
    for (i, want) in types.iter().enumerate() {
        let n = i as u32 + 1;
        let got = signatures(&l.part(n));
        let ok = match (&got, want) {
            (Ok(v), Some(t)) => v.len() == 1 && v[0] == *t,
            (Ok(v), None) => v.is_empty(),
            (Err(_), _) => false,
        };
        if !ok {
            wrong.push(format!("partition {n}: want {want:?}, blkid -p: {got:?}"));
        }
    }
    wrong
}

#[test]
fn a_real_debian_cloned_over_a_disk_with_old_file_systems_boots_from_it_with_swap() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    clone_and_boot(&Case {
        name: "bios-ext4",
        variant: "bios-ext4",
        firmware: Firmware::Bios,
        mac: "52:54:00:00:12:01",
        types: [None, Some("vfat"), Some("swap"), Some("ext4")],
        marker: "swap=1 root=ext4",
        root_grows: true,
    });
}

fn slow(what: &str) -> bool {
    if !slow_tests() {
        eprintln!("skipped: {what} runs with NETBOOT_SLOW_TESTS=1 (the slow real-OS tier)");
    }
    slow_tests()
}

#[test]
fn slow_uefi_a_real_debian_cloned_through_grub_boots_from_its_esp() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    if !slow("UEFI real-OS boot") {
        return;
    }
    clone_and_boot(&Case {
        name: "uefi-ext4",
        variant: "bios-ext4",
        firmware: Firmware::Uefi,
        mac: "52:54:00:00:12:02",
        types: [None, Some("vfat"), Some("swap"), Some("ext4")],
        marker: "swap=1 root=ext4",
        root_grows: true,
    });
}

#[test]
fn slow_xfs_root_debian_clones_and_boots() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    if !slow("the XFS real-OS variant") {
        return;
    }
    clone_and_boot(&Case {
        name: "xfs",
        variant: "xfs",
        firmware: Firmware::Bios,
        mac: "52:54:00:00:12:03",
        types: [None, Some("vfat"), Some("swap"), Some("xfs")],
        marker: "swap=1 root=xfs",
        root_grows: true,
    });
}

#[test]
fn slow_lvm_root_and_swap_lvs_debian_clones_and_boots() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    if !slow("the LVM real-OS variant") {
        return;
    }
    clone_and_boot(&Case {
        name: "lvm",
        variant: "lvm",
        firmware: Firmware::Bios,
        mac: "52:54:00:00:12:04",
        types: [None, Some("vfat"), Some("swap"), Some("LVM2_member")],
        marker: "swap=2 root=ext4",
        root_grows: true,
    });
}
