//! Diskless nodes in network namespaces made by the test (issue 16): a diskless group of
//! 16 nodes in two racks, the clone plan from pxe-builder (`rack_shape = "chain"`), a
//! primary running the real `imgtool serve`, and each node an `initrd-agent diskless`
//! process in its own namespace — the PID-1 flow up to the mounted root, without the
//! switch. Every node must get the root through the relay chain like a clone (leaves from
//! their rack's secondary, rack 2's secondary from rack 1's), verified chunk by chunk,
//! mounted, with its `/sbin/init` found; each root file is then checked (`e2fsck -fn`, the
//! files' bytes) and holds nothing but the root partition. A second test: a corrupted
//! chunk is refused and nothing is mounted; too little memory is refused before any
//! payload is fetched, with the sizes.

#[path = "common/cluster.rs"]
mod cluster;
use cluster::{spawn_agent, start_primary, wait, Proc, Spec};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_fixtures::disk::run;
use test_fixtures::image::{capture_into, corrupt_chunk};
use test_fixtures::netns::Lan;
use test_fixtures::skip_unless_root;

const RACKS: usize = 2;
const PER_RACK: usize = 8;
/// The blob on the root: several chunks' worth of incompressible bytes.
const BLOB_BYTES: usize = 12 << 20;

/// A 96 MiB GPT master built without loop devices: partition 1 a swap area, partition 2
/// an ext4 root (`mkfs.ext4 -d`) holding an executable `/sbin/init` behind the usrmerge
/// symlink `sbin -> usr/sbin`, as Debian's, and a random blob. Returns the master and the
/// blob's bytes.
fn master(dir: &Path) -> (PathBuf, Vec<u8>) {
    let tree = dir.join("rootfs");
    std::fs::create_dir_all(tree.join("usr/sbin")).unwrap();
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", tree.join("sbin")).unwrap();
    std::fs::write(tree.join("usr/sbin/init"), "#!/bin/sh\necho booted\n").unwrap();
    run(Command::new("chmod")
        .arg("755")
        .arg(tree.join("usr/sbin/init")));
    let mut blob = vec![0u8; BLOB_BYTES];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in blob.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(tree.join("data/blob"), &blob).unwrap();
    let disk = dir.join("master.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    run(Command::new("sgdisk")
        .args([
            "-o",
            "-n",
            "1:2048:+8M",
            "-t",
            "1:8200",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
        ])
        .arg(&disk));
    let swap = dir.join("swap.img");
    std::fs::File::create(&swap)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    run(Command::new("mkswap").arg(&swap));
    let root = dir.join("root.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "ramroot", "-d"])
        .arg(&tree)
        .arg(&root)
        .arg("80M"));
    // Partition 1 at sector 2048, partition 2 right after its 8 MiB.
    for (f, at) in [(&swap, 1u64), (&root, 9)] {
        run(Command::new("dd")
            .arg(format!("if={}", f.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={at}")));
    }
    (disk, blob)
}

/// The diskless group `ram` (`racks` × `per_rack` nodes, chain) on 10.78.0.0/16.
fn spec(racks: usize, per_rack: usize) -> Spec<'static> {
    Spec {
        name: "ram",
        net: 78,
        group: "ram",
        group_extra: "diskless = true\nroot = 2\n",
        shape: "chain",
        cluster_extra: "",
        racks,
        per_rack,
    }
}

/// The plan of the diskless group `ram` (16 nodes in two racks, chain) written where the
/// agents read it, as `pxe-builder build` writes it.
fn plan(dir: &Path, images: &Path) {
    let written = spec(RACKS, PER_RACK).write_plans(dir, images, false);
    assert_eq!(written, RACKS * PER_RACK, "every diskless node has a plan");
}

/// `imgtool serve` as the primary.
fn serve(ns: &str, images: &Path) -> Proc {
    start_primary(ns, "10.78.0.1", images)
}

/// `initrd-agent diskless` for `node` in `ns`, its root file in `store`.
fn agent(ns: &str, node: &str, store: &Path, log: &Path, extra: &[&str]) -> Proc {
    let args = [
        "diskless",
        "--server",
        "http://10.78.0.1:8080",
        "--group",
        "ram",
        "--node",
        node,
        "--stall",
        "10",
        "--relay-idle",
        "3",
        "--attempts",
        "3",
    ];
    let args = args.iter().chain(extra).chain(&["--store"]).map(OsStr::new);
    spawn_agent(ns, log, args.chain([store.as_os_str()]))
}

/// What `debugfs` reads of `path` in the ext4 file `fs` (no mount, no loop device).
fn debugfs_cat(fs: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(fs)
        .stderr(Stdio::null())
        .output()
        .expect("debugfs");
    out.stdout
}

struct Net {
    _work: tempfile::TempDir,
    dir: PathBuf,
    images: PathBuf,
    blob: Vec<u8>,
    lan: Lan,
    primary_ns: String,
    nodes: Vec<(String, String)>,
}

fn setup(tag: &str, racks: usize, per_rack: usize) -> Net {
    let scratch = test_fixtures::disk::target_tmp();
    std::fs::create_dir_all(&scratch).unwrap();
    let work = tempfile::tempdir_in(&scratch).unwrap();
    let dir = work.path().to_path_buf();
    let (disk, blob) = master(&dir);
    let images = dir.join("images");
    capture_into(&disk, &images, "ram");
    plan(&dir, &images);
    let hosts = spec(racks, per_rack).hosts(tag);
    Net {
        _work: work,
        dir,
        images,
        blob,
        lan: hosts.lan,
        primary_ns: hosts.primary_ns,
        nodes: hosts.nodes,
    }
}

#[test]
fn sixteen_diskless_nodes_in_two_racks_get_the_root_through_the_relay_chain() {
    skip_unless_root!("network namespaces, loop devices, mounts");
    let net = setup("dl", RACKS, PER_RACK);
    let _primary = serve(&net.primary_ns, &net.images);
    let mut procs = vec![];
    for (node, ns) in &net.nodes {
        let store = net.dir.join("ram").join(node);
        procs.push(agent(
            ns,
            node,
            &store,
            &net.dir.join(format!("{node}.log")),
            &["--plan"],
        ));
    }
    let log =
        |n: &str| std::fs::read_to_string(net.dir.join(format!("{n}.log"))).unwrap_or_default();
    for (i, p) in procs.iter_mut().enumerate() {
        let n = &net.nodes[i].0;
        assert_eq!(
            wait(p, Duration::from_secs(240)),
            Some(0),
            "{n}:\n{}",
            log(n)
        );
    }
    // Through the plan's chain, like clones: each node pulls first from the upstream its
    // node plan names, and every relay holds for its planned downstream nodes and is
    // released because they had the root (its chunks only: a diskless relay fetches
    // nothing else), not by the idle fallback.
    let mut from_primary = 0;
    let mut relays = 0;
    for (node, _) in &net.nodes {
        let np: netboot_proto::plan::NodePlan = serde_json::from_slice(
            &std::fs::read(net.images.join(netboot_proto::plan::NodePlan::path(node))).unwrap(),
        )
        .unwrap();
        let first = np.upstreams.first().map_or("primary", |c| c.node.as_str());
        from_primary += usize::from(first == "primary");
        assert!(
            log(node).contains(&format!("upstreams: {first} ")),
            "{node} did not pull from {first}:\n{}",
            log(node)
        );
        if np.downstream > 0 {
            relays += 1;
            let released = format!(
                "relay released: all {} downstream node(s) have every chunk",
                np.downstream
            );
            assert!(
                log(node).contains(&released),
                "{node}: no `{released}`:\n{}",
                log(node)
            );
        }
    }
    assert_eq!(
        from_primary, 1,
        "only the first rack's secondary pulls from the primary"
    );
    assert!(relays >= RACKS, "{relays} relays");
    assert!(log("r2n1").contains("upstreams: r1n"), "{}", log("r2n1"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.images.join("ram/manifest")).unwrap()).unwrap();
    let p2_size = manifest["regions"]
        .as_array()
        .and_then(|v| v.iter().find(|r| r["name"] == "p2"))
        .and_then(|r| r["size"].as_u64())
        .unwrap();
    assert!(p2_size < 96 << 20);
    for (node, _) in &net.nodes {
        let l = log(node);
        assert!(
            l.contains("root p2 (ext4) mounted from /dev/loop") && l.contains("/sbin/init found"),
            "{node}:\n{l}"
        );
        let root = net.dir.join("ram").join(node).join("root.img");
        run(Command::new("e2fsck").arg("-fn").arg(&root));
        assert!(
            debugfs_cat(&root, "/data/blob") == net.blob,
            "{node}: the blob differs"
        );
        // Only the root partition, not the disk.
        assert_eq!(std::fs::metadata(&root).unwrap().len(), p2_size, "{node}");
    }
    drop(net.lan);
}

#[test]
fn a_corrupted_chunk_or_too_little_memory_is_refused_and_nothing_is_mounted() {
    skip_unless_root!("network namespaces, loop devices, mounts");
    let net = setup("dk", 1, 1);
    let _primary = serve(&net.primary_ns, &net.images);
    let (node, ns) = net.nodes[0].clone();

    // Too little memory: refused after the manifest, before any payload byte.
    let meminfo = net.dir.join("meminfo");
    std::fs::write(&meminfo, "MemTotal: 262144 kB\nMemAvailable: 131072 kB\n").unwrap();
    let store = net.dir.join("small");
    let log = net.dir.join("small.log");
    let mut p = agent(
        &ns,
        &node,
        &store,
        &log,
        &["--meminfo", meminfo.to_str().unwrap()],
    );
    assert_eq!(wait(&mut p, Duration::from_secs(60)), Some(2));
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(
        l.contains("refusing the diskless boot before fetching: not enough memory: needed ")
            && l.contains("available 128 MiB (MemAvailable)"),
        "{l}"
    );
    assert!(
        !store.join("root.img").exists(),
        "a root file was made:\n{l}"
    );

    // A corrupted chunk: refused, named, nothing mounted.
    let c = corrupt_chunk(&net.images.join("ram"), "p2", 1);
    let store = net.dir.join("bad");
    let log = net.dir.join("bad.log");
    let mut p = agent(&ns, &node, &store, &log, &[]);
    assert_eq!(wait(&mut p, Duration::from_secs(120)), Some(2));
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(
        l.contains("partition p2, chunk 1") && l.contains("nothing booted"),
        "{c}\n{l}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(store.to_str().unwrap()), "{mounts}");
    drop(net.lan);
}
