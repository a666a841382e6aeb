//! Diskless nodes under QEMU (issue 16): a node with **no disk** PXE-boots the agent,
//! which fetches the group's real Debian image (the real-OS fixture,
//! `scripts/make-realos.sh`, captured with imgtool), restores its root partition into RAM,
//! mounts it and hands PID 1 over to the image's systemd; the master's marker unit must
//! print on the serial console. Measured: power-on → marker (docs/BENCH.md).
//!
//! The image is not edited for diskless use: its fstab names the root, the ESP and a swap
//! partition by UUID, none of which exist as devices on a diskless node, so the group's
//! kernel arguments carry `fstab=no` (systemd-fstab-generator then ignores the fstab, as
//! systemd 252 documents; the root is already mounted read-write by the agent). Only the
//! test's own copy of the master gets one more line in its marker script: the booted
//! system's `/proc/cmdline`, for the vSMP case.
//!
//! Tests, each its own QEMU run (one at a time: the file holds a lock):
//! - diskless: marker printed with `root=ext4` and `swap=0`, and the agent's console
//!   says the root came from RAM (partition 4 by the group's `root = 4`);
//! - vsmp-diskless: the same boot, root found without `root` (the image's one Linux
//!   file system), and the booted system's `/proc/cmdline` holds `vsmp.role`,
//!   `vsmp.board`, `vsmp.boards` and the group's arguments;
//! - too little RAM (`-m 320`): refused before fetching, with the sizes (n1, its rack's
//!   secondary, counts its boot files at their real size), nothing booted;
//! - a corrupted chunk of the root: refused, named, nothing booted.
//!
//! Serial logs: `target/realos/logs/diskless-*.log`; the images: `target/realos/diskless/`.

use qemu_tests::realos::{self, keep_log, marker, master, MARKER};
use qemu_tests::*;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use test_fixtures::disk::{run, Loop};
use test_fixtures::image::{capture_into, corrupt_chunk};
use test_fixtures::root::tool;
use test_fixtures::servers::serve_in_background;
use test_fixtures::skip_unless_root;

/// Fetching the ~0.5 GB root through QEMU's user network under TCG, then Debian's boot
/// (~20-30 s alone under TCG): minutes on a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// A refusal comes before the payload: the PXE boot and the agent's start.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the test's copy of the marker script prints before the marker.
const CMDLINE: &str = "NETBOOT-DISKLESS-CMDLINE";

const KERNEL_ARGS: &str = "console=ttyS0 panic=-1 netboot.done=poweroff netboot.onerror=poweroff";

/// One QEMU run at a time in this process (each takes a core for minutes).
static ONE_VM: Mutex<()> = Mutex::new(());

/// The image root shared by the tests: `ram` (the Debian, its marker script also printing
/// `/proc/cmdline`) and `ram-bad` (the same with chunk 1 of the root corrupted).
struct Images {
    root: PathBuf,
    used_root: u64,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        // A static is never dropped, so not a temporary directory (it would stay behind,
        // 0.2 GB per run): one fixed place, replaced by each run of this file (the tests
        // of one process share it; the suites run one QEMU test process at a time).
        let w = realos::cache_dir().join("diskless");
        let _ = std::fs::remove_dir_all(&w);
        std::fs::create_dir_all(&w).unwrap();
        let w = w.as_path();
        let copy = w.join("master.img");
        run(tool("cp")
            .arg("--sparse=always")
            .arg(master("bios-ext4"))
            .arg(&copy));
        print_cmdline_too(&copy);
        let root = w.join("images");
        capture_into(&copy, &root, "ram");
        std::fs::remove_file(&copy).unwrap();
        // `ram-bad`: manifest and layout as they are, the root's payload copied and one
        // chunk of it flipped, the other payloads linked.
        let (good, bad) = (root.join("ram"), root.join("ram-bad"));
        std::fs::create_dir_all(&bad).unwrap();
        for e in std::fs::read_dir(&good).unwrap().flatten() {
            let to = bad.join(e.file_name());
            if e.file_name() == "p4.zst" || !e.file_name().to_string_lossy().ends_with(".zst") {
                std::fs::copy(e.path(), &to).unwrap();
            } else {
                std::fs::hard_link(e.path(), &to).unwrap();
            }
        }
        corrupt_chunk(&bad, "p4", 1);
        let used_root = imgtool::manifest::Image::open(&good)
            .expect("the captured image")
            .manifest
            .region("p4")
            .expect("the root region p4")
            .used_bytes;
        Images { root, used_root }
    })
}

/// Adds a line printing `/proc/cmdline` to the marker script of the master copy `disk`.
fn print_cmdline_too(disk: &Path) {
    let mut l = Loop::attach(disk, false);
    let mnt = l.mount_opts(4, "ext4", "rw");
    let script = mnt.join("usr/local/sbin/netboot-marker");
    let text = std::fs::read_to_string(&script).unwrap();
    let line = format!("echo \"{CMDLINE} $(cat /proc/cmdline)\" > /dev/ttyS0\n");
    let text = text.replacen("swaps=", &format!("{line}swaps="), 1);
    assert!(text.contains(CMDLINE), "{text}");
    std::fs::write(&script, text).unwrap();
    drop(l);
}

/// A one-node tree whose node `n1` (MAC `mac`, 172.20.0.9) is the only active member of
/// the group described by `group` (TOML lines after `name`).
fn tree(
    w: &Path,
    mac: &str,
    group: &str,
    group_toml: &str,
    kernel: &Path,
    initrd: &Path,
) -> PathBuf {
    let toml = format!(
        r#"[cluster]
name = "diskless-test"
image_server = "{IMAGE_SERVER}"
server_ip = "172.20.0.2"
kernel = "{k}"
initrd = "{i}"
vsmp_loader = "{k}"
kernel_args = "{KERNEL_ARGS}"

[[entity]]
name = "rack1"
subnet = "172.20.0.0/27"
gateway = "172.20.0.2"
default_group = "{group}"

[[group]]
name = "{group}"
diskless = true
{group_toml}

[[node]]
name = "n1"
mac = "{mac}"
ip = "172.20.0.9"
entity = "rack1"
groups = ["{group}"]
"#,
        k = kernel.display(),
        i = initrd.display()
    );
    std::fs::write(w.join("cluster.toml"), toml).unwrap();
    let cluster =
        pxe_builder::model::load(&w.join("cluster.toml")).unwrap_or_else(|e| panic!("{e}"));
    let tree = w.join("tree");
    pxe_builder::tree::build(&cluster, &tree).unwrap_or_else(|e| panic!("{e}"));
    tree
}

/// What one diskless boot showed.
struct Run {
    console: String,
    /// The boot files' bytes as the tree's manifest lists them: n1 is its rack's
    /// secondary (alone in it), so it serves them and its memory check counts them.
    boot_files: u64,
    /// Power-on → the agent's switch to the image's init.
    switched: Option<Duration>,
    /// Power-on → the marker line.
    marked: Option<Duration>,
    log: PathBuf,
}

/// PXE-boots a node with no disk (`-m mem` MiB) into the tree; stops at the marker (plus a
/// grace for the power-off), at QEMU's exit, or at `timeout`.
fn boot(name: &str, group: &str, group_toml: &str, mac: &str, mem: u32, timeout: Duration) -> Run {
    let imgs = images();
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = test_fixtures::disk::target_tmp();
    let work = tempfile::tempdir_in(&scratch).unwrap();
    let w = work.path();
    let kernel = kernel();
    let initrd = w.join("initrd.img");
    std::fs::write(&initrd, agent_initrd(&kernel)).unwrap();
    let tree = tree(w, mac, group, group_toml, &kernel, &initrd);
    let manifest = std::fs::read(tree.join(netboot_proto::bootfiles::FILE)).unwrap();
    let boot_files = netboot_proto::bootfiles::BootFiles::from_json(&manifest)
        .unwrap()
        .total_bytes();
    let port = serve_in_background(vec![imgs.root.clone(), tree.clone()]);
    let start = Instant::now();
    let vm = Vm::start(&Boot {
        firmware: Firmware::Bios,
        tree: &tree,
        mac,
        ip: "172.20.0.9",
        netdev_extra: format!(
            ",guestfwd=tcp:{}-cmd:/bin/busybox nc 127.0.0.1 {port}",
            IMAGE_SERVER.trim_start_matches("http://")
        ),
        // No disk at all; the last -m wins.
        extra: vec!["-m".into(), mem.to_string()],
        work: w,
    });
    let (mut switched, mut marked) = (None, None);
    let console = loop {
        let c = vm.console();
        if switched.is_none() && c.contains("switching root to") {
            switched = Some(start.elapsed());
        }
        if marked.is_none() && c.contains(MARKER) {
            marked = Some(start.elapsed());
        }
        let over = c.contains("netboot: powering off")
            || marked.is_some_and(|m| start.elapsed() > m + Duration::from_secs(20))
            || start.elapsed() > timeout;
        if over || vm_exited(&c) {
            break c;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(vm);
    let log = keep_log(&format!("diskless-{name}"), &console);
    Run {
        console,
        boot_files,
        switched,
        marked,
        log,
    }
}

/// The guest went down (systemd's last words, or the kernel's).
fn vm_exited(console: &str) -> bool {
    console.contains("reboot: Power down") || console.contains("Kernel panic")
}

#[test]
fn a_node_without_a_disk_boots_the_groups_debian_from_ram() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    let r = boot(
        "boot",
        "ram",
        "root = 4\nargs = \"fstab=no\"",
        "52:54:00:00:16:01",
        1024,
        BOOT_TIMEOUT,
    );
    let c = &r.console;
    assert!(
        c.contains("root: partition 4 (ext4,") && c.contains("into RAM"),
        "(log {})\n{}",
        r.log.display(),
        tail(c, 4000)
    );
    // n1 is its rack's secondary, alone in it: it serves the boot files (their real
    // size reserved, not the manifest's bound: the check passes on 1 GiB).
    assert!(
        c.contains("serving boot files to the rack:"),
        "(log {})\n{}",
        r.log.display(),
        tail(c, 4000)
    );
    assert_eq!(
        marker(c).as_deref(),
        Some("swap=0 root=ext4"),
        "no marker from the image's systemd (log {}):\n{}",
        r.log.display(),
        tail(c, 4000)
    );
    eprintln!(
        "diskless boot: power-on -> switch_root {:.1?}, -> marker {:.1?} (root {} MiB used; log {})",
        r.switched.unwrap_or_default(),
        r.marked.unwrap_or_default(),
        images().used_root >> 20,
        r.log.display()
    );
}

#[test]
fn a_vsmp_diskless_board_keeps_its_role_arguments_in_the_booted_system() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    let r = boot(
        "vsmp",
        "vSMP_ram",
        "image = \"ram\"\nargs = \"fstab=no netboot_test.group_arg=1\"",
        "52:54:00:00:16:02",
        1024,
        BOOT_TIMEOUT,
    );
    let c = &r.console;
    let cmdline = c
        .lines()
        .find_map(|l| l.split_once(CMDLINE).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| {
            panic!(
                "the booted system printed no /proc/cmdline (log {}):\n{}",
                r.log.display(),
                tail(c, 4000)
            )
        });
    for w in [
        "vsmp.role=primary",
        "vsmp.board=1",
        "vsmp.boards=n1",
        "netboot.mode=vsmp-diskless",
        "netboot_test.group_arg=1",
        "fstab=no",
    ] {
        assert!(
            cmdline.split_whitespace().any(|x| x == w),
            "{w} not in the booted system's /proc/cmdline: {cmdline}"
        );
    }
    assert_eq!(
        marker(c).as_deref(),
        Some("swap=0 root=ext4"),
        "{}",
        tail(c, 3000)
    );
}

#[test]
fn too_little_ram_is_refused_before_fetching_with_the_sizes() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    let r = boot(
        "small",
        "ram",
        "args = \"fstab=no\"",
        "52:54:00:00:16:03",
        320,
        REFUSE_TIMEOUT,
    );
    let c = &r.console;
    let want = format!(
        "needed {} MiB (root partition 4 ext4: {} MiB used + {} MiB rack boot files",
        // The guest has one CPU: the restore pipeline holds two 8 MiB chunks' frames. n1
        // is its rack's secondary: its boot files count as the manifest lists them (no
        // relay cache: no node pulls the image from it).
        (images().used_root
            + r.boot_files
            + (128 << 20)
            + 2 * imgtool::chunk::frame_bound(8 << 20))
        .div_ceil(1 << 20),
        images().used_root.div_ceil(1 << 20),
        r.boot_files.div_ceil(1 << 20)
    );
    assert!(
        c.contains("refusing the diskless boot before fetching: not enough memory")
            && c.contains(&want)
            && !c.contains("relay cache")
            && c.contains("MiB (MemAvailable)"),
        "want `{want}` (log {}):\n{}",
        r.log.display(),
        tail(c, 4000)
    );
    // Refused before the root's line (said once memory is checked) and before any payload.
    assert!(
        !c.contains(") into RAM") && !c.contains("switching root"),
        "{}",
        tail(c, 3000)
    );
    assert!(!c.contains(MARKER));
}

#[test]
fn a_corrupted_chunk_of_the_root_is_refused_and_nothing_boots() {
    skip_unless_root!("QEMU boots, loop devices, debootstrap; scripts/test.sh runs them");
    let r = boot(
        "corrupt",
        "ram",
        "image = \"ram-bad\"\nargs = \"fstab=no\"",
        "52:54:00:00:16:04",
        1024,
        BOOT_TIMEOUT,
    );
    let c = &r.console;
    assert!(
        c.contains("DISKLESS BOOT FAILED")
            && c.contains("partition p4, chunk 1")
            && c.contains("nothing booted"),
        "(log {})\n{}",
        r.log.display(),
        tail(c, 4000)
    );
    assert!(
        !c.contains("switching root") && !c.contains(MARKER),
        "{}",
        tail(c, 3000)
    );
}
