//! The product end to end: a blank node PXE-boots (SeaBIOS + iPXE ROM → real pxelinux
//! from the pxe-builder tree → real kernel → our initrd with the static agent as PID 1),
//! reaches `imgtool serve` on the host through `guestfwd`, clones the master's image onto
//! its blank NVMe disk (repartition, restore, read-back verify, grow), and powers off. The
//! host then checks the disk with the reference tools. The same node boots again: the
//! layout matches, nothing is repartitioned, and the disk is still identical — and, a
//! delta re-clone of an unchanged image onto its own clone (issue 14), it fetches at most
//! 1 % of the image's payload (its console line and its status-board counts say so).

use qemu_tests::*;
use std::path::Path;
use std::time::Duration;
use test_fixtures::disk::{assert_restored, fixture};
use test_fixtures::image::{capture_into, payload_and_largest_frame};
use test_fixtures::skip_unless_root;

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

fn boot_node(work: &Path, tree: &Path, port: u16, disk: &Path) -> String {
    boot_bios_node(
        work,
        tree,
        port,
        disk,
        "52:54:00:00:00:21",
        "node21",
        BOOT_TIMEOUT,
    )
}

#[test]
fn a_blank_node_pxe_boots_and_clones_itself_then_reboots_without_repartitioning() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let master = fixture("gpt");
    let images = w.join("images");
    capture_into(&master, &images, "compute");

    let kernel = kernel();
    let initrd = w.join("initrd.img");
    std::fs::write(&initrd, agent_initrd(&kernel)).unwrap();
    let tree = one_node_tree(w, "n21", "52:54:00:00:00:21", &kernel, &initrd);
    let port = serve_in_background(vec![images.clone(), tree.clone()]);

    // A blank NVMe disk, 1.5x the master: the last partition and its ext4 grow.
    let disk = w.join("node21.img");
    let size = std::fs::metadata(&master).unwrap().len() * 3 / 2;
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();

    let first = boot_node(w, &tree, port, &disk);
    let has = |c: &str, s: &str| c.contains(s);
    assert!(
        has(&first, "netboot: done: image"),
        "first boot did not finish the clone:\n{first}"
    );
    assert!(
        has(&first, "partitioning: layout differs"),
        "first boot did not partition:\n{first}"
    );
    assert!(
        has(&first, "node n21 entity rack1 group compute"),
        "node not found in bootopts:\n{first}"
    );
    assert!(
        has(&first, "grown from"),
        "the data partition was not grown:\n{first}"
    );
    assert_restored(&master, &disk, &[1, 2, 3, 4]);
    let table_before = std::fs::read(&disk).unwrap()[..1 << 20].to_vec();

    let second = boot_node(w, &tree, port, &disk);
    assert!(
        has(&second, "netboot: done: image"),
        "second boot did not finish:\n{second}"
    );
    assert!(
        has(&second, "layout matches image"),
        "second boot did not see the matching layout:\n{second}"
    );
    assert!(
        !has(&second, "partitioning: layout differs"),
        "second boot repartitioned:\n{second}"
    );
    assert_eq!(
        table_before,
        std::fs::read(&disk).unwrap()[..1 << 20].to_vec(),
        "the disk head changed"
    );
    assert_restored(&master, &disk, &[1, 2, 3, 4]);

    // A delta: every chunk checked on the disk, at most 1 % of the payload fetched.
    let (payload, _) = payload_and_largest_frame(&images.join("compute"));
    let fetched = second
        .split("verified (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no fetched figure on the console:\n{second}"));
    eprintln!("re-clone fetched {fetched} of {payload} payload bytes");
    assert!(
        fetched * 100 <= payload,
        "the re-clone fetched {fetched} bytes, more than 1 % of {payload}:\n{second}"
    );
    assert!(has(&second, "netboot: delta: "), "no delta line:\n{second}");

    // The status board saw the node finish, with the same counts.
    let board = imgtool::serve::fetch_status(&format!("http://127.0.0.1:{port}")).unwrap();
    assert_eq!(board["n21"].last.phase, "done", "{board:?}");
    let counts = board["n21"].last.chunks.expect("chunk counts on the board");
    assert_eq!(counts.fetched_bytes, fetched, "{counts:?}");
    assert_eq!(counts.payload_bytes, payload, "{counts:?}");
    assert_eq!(counts.skipped + counts.fetched, counts.total, "{counts:?}");
    assert!(
        counts.skipped > 0 && counts.fetched_percent() <= 1.0,
        "{counts:?}"
    );
}
