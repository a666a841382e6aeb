//! Secondaries take the boot files from each other (docs/BOOT.md, "Boot files from the
//! rack"), in network namespaces made by the test: the real `imgtool serve` as the
//! primary over a tree pxe-builder rendered for four racks, and each rack's secondary
//! running `initrd-agent boot-files` with the peers its node plan
//! (`etc/plan/<node>.json`, `boot_peers`) lists. All four start at once: each must serve
//! the primary's bytes, and the primary's interface must have sent one copy for the four.
//! A peer serving other bytes is refused by name and one that is down is passed over
//! (after the boot window: it might have booted later), the files then coming from the
//! next source. A secondary alone in its rack (no downstream node in its image's plan),
//! running the real agent, serves them to its child in the boot-file tree.

mod common;

use common::rackboot::{bin, fetch, sent, serve, write_tree, Proc, Secondary};
use netboot_proto::plan::NodePlan;
use std::path::Path;
use test_fixtures::netns::Lan;
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.78.0.1";
const PORT: u16 = 8180;

/// Four racks of two compute nodes; the secondaries are s1..s4 (10.78.R.11).
fn cluster() -> String {
    let mut t = format!(
        "[cluster]\nname = \"t\"\nimage_server = \"http://{PRIMARY}:8080\"\nserver_ip = \"{PRIMARY}\"\nkernel = \"k\"\ninitrd = \"i\"\nrelay_port = {PORT}\n\n[[group]]\nname = \"compute\"\n\n"
    );
    for r in 1..=4 {
        t.push_str(&format!(
            "[[entity]]\nname = \"r{r}\"\nsubnet = \"10.78.{r}.0/24\"\ngateway = \"10.78.{r}.1\"\ndefault_group = \"compute\"\nsecondary = \"s{r}\"\n\n"
        ));
        for (name, h) in [(format!("s{r}"), 11), (format!("m{r}"), 12)] {
            t.push_str(&format!(
                "[[node]]\nname = \"{name}\"\nmac = \"52:54:00:78:{r:02x}:{h:02x}\"\nip = \"10.78.{r}.{h}\"\nentity = \"r{r}\"\ngroups = [\"compute\"]\n\n"
            ));
        }
    }
    t
}

/// Secondary `s`'s peers as its node plan in the tree lists them: relay URLs.
fn peers_of(root: &Path, s: &str) -> Vec<String> {
    let text = std::fs::read(root.join(NodePlan::path(s))).unwrap();
    let route = NodePlan::from_json(&text).unwrap().route(s).unwrap();
    assert!(route.boot_files, "{s} serves boot files");
    route
        .boot_peers
        .iter()
        .map(|(_, ip)| format!("http://{ip}:{}", route.relay_port))
        .collect()
}

/// The primary serving the tree on the LAN; its namespace.
struct Site {
    lan: Lan,
    primary_ns: String,
    root: std::path::PathBuf,
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    _primary: common::rackboot::Proc,
    _dir: tempfile::TempDir,
}

fn site(tag: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (root, kernel, initrd) = write_tree(dir.path(), &cluster());
    let mut lan = Lan::new(tag);
    let primary_ns = lan.host("p", &format!("{PRIMARY}/16"));
    let primary = serve(&primary_ns, &root, &format!("{PRIMARY}:8080"));
    Site {
        lan,
        primary_ns,
        root,
        kernel,
        initrd,
        _primary: primary,
        _dir: dir,
    }
}

/// `GET url` from namespace `ns`.
fn get_in(ns: &str, url: String) -> Vec<u8> {
    test_fixtures::netns::in_namespace(ns, move || fetch(&url, 10_000))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn four_secondaries_started_together_cost_the_primary_one_copy() {
    skip_unless_root!("network namespaces");
    let mut site = site("bp");
    let server = format!("http://{PRIMARY}:8080");
    let total = (site.kernel.len() + site.initrd.len()) as u64;
    let names = ["s1", "s2", "s3", "s4"];
    let peers: Vec<Vec<String>> = names.iter().map(|s| peers_of(&site.root, s)).collect();
    // The tree pxe-builder planned: s1 from the primary, s2 and s3 from s1, s4 from s2
    // then s1.
    let url = |r: u8| format!("http://10.78.{r}.11:{PORT}");
    assert_eq!(
        peers,
        [vec![], vec![url(1)], vec![url(1)], vec![url(2), url(1)]]
    );
    let ns: Vec<String> = (1..=4)
        .map(|r| site.lan.host(&format!("s{r}"), &format!("10.78.{r}.11/16")))
        .collect();
    let before = sent(&site.primary_ns);
    // All at once, the deepest first: the peers answer 503 while they fetch and are
    // polled.
    let started: Vec<Secondary> = (0..4)
        .rev()
        .map(|i| {
            Secondary::start(
                &ns[i],
                &server,
                &format!("10.78.{}.11:{PORT}", i + 1),
                &peers[i],
            )
        })
        .collect();
    let mut procs = vec![];
    let mut said = vec![];
    for (s, i) in started.into_iter().zip((0..4).rev()) {
        let (p, lines) = s.serving(names[i]);
        procs.push(p);
        said.push((i, lines.last().cloned().unwrap_or_default()));
    }
    let primary_sent = sent(&site.primary_ns) - before;
    for (i, line) in &said {
        let from = match i {
            0 => "from the primary",
            1 | 2 => "from http://10.78.1.11:8180",
            _ => "from http://10.78.2.11:8180",
        };
        assert!(line.ends_with(&format!("{from})")), "{}: {line}", names[*i]);
    }
    // One copy of the files (plus four manifests, headers and TCP) for four racks.
    assert!(
        primary_sent >= total && primary_sent < total + total / 10,
        "the primary sent {primary_sent} bytes for four secondaries ({total} per copy)"
    );
    // Each serves exactly the primary's bytes.
    for r in 1..=4 {
        assert!(get_in(&ns[0], format!("{}/boot/vmlinuz", url(r))) == site.kernel);
        assert!(get_in(&ns[0], format!("{}/boot/initrd.img", url(r))) == site.initrd);
    }
}

#[test]
fn a_peer_with_bad_bytes_or_down_is_passed_over_by_name() {
    skip_unless_root!("network namespaces");
    let mut site = site("bq");
    let server = format!("http://{PRIMARY}:8080");
    let total = (site.kernel.len() + site.initrd.len()) as u64;
    // A good peer (s1, from the primary), an evil one serving a tree whose kernel
    // differs from the manifest's, and an address where no host answers.
    let s1_ns = site.lan.host("s1", "10.78.1.11/16");
    let (_s1, _) =
        Secondary::start(&s1_ns, &server, &format!("10.78.1.11:{PORT}"), &[]).serving("s1");
    let evil_dir = tempfile::tempdir().unwrap();
    let evil_root = evil_dir.path().join("tree");
    std::fs::create_dir_all(evil_root.join("boot")).unwrap();
    let mut bad = site.kernel.clone();
    bad[1_000_000] ^= 1;
    std::fs::write(evil_root.join("boot/vmlinuz"), &bad).unwrap();
    std::fs::write(evil_root.join("boot/initrd.img"), &site.initrd).unwrap();
    let evil_ns = site.lan.host("ev", "10.78.4.66/16");
    let _evil = serve(&evil_ns, &evil_root, &format!("10.78.4.66:{PORT}"));

    let s2_ns = site.lan.host("s2", "10.78.2.11/16");
    let before = sent(&site.primary_ns);
    let peers = [
        format!("http://10.78.4.77:{PORT}"),
        format!("http://10.78.4.66:{PORT}"),
        format!("http://10.78.1.11:{PORT}"),
    ];
    // A peer that never answers is waited for within the window (it may boot later): 2 s.
    let (_s2, lines) =
        Secondary::start_with(&s2_ns, &server, &format!("10.78.2.11:{PORT}"), &peers, 2)
            .serving("s2");
    let primary_sent = sent(&site.primary_ns) - before;
    let all = lines.join("\n");
    assert!(
        all.contains("peer http://10.78.4.77:8180: ")
            && all.contains(
                "no answer within the boot window, 2 s); taking them from the next source"
            ),
        "the silent peer is named: {all}"
    );
    assert!(
        all.contains("peer http://10.78.4.66:8180 served bytes that are not the manifest's")
            && all.contains("sha256"),
        "the evil peer is named: {all}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("from http://10.78.1.11:8180)"),
        "{all}"
    );
    assert!(
        primary_sent < total / 20,
        "the primary sent {primary_sent} bytes: the manifest only"
    );
    let url = format!("http://10.78.2.11:{PORT}");
    assert!(get_in(&s2_ns, format!("{url}/boot/vmlinuz")) == site.kernel);
    assert!(get_in(&s2_ns, format!("{url}/boot/initrd.img")) == site.initrd);
}

/// A cluster whose first group `solo` has one rack of one node, s1 (10.78.1.11): an
/// entity's secondary with no downstream node in its image's plan, and the root of the
/// boot-file tree. Rack 2 (group `compute`: s2, m2) comes after it, so s2 is s1's child
/// in that tree.
fn one_node_rack_cluster() -> String {
    let mut t = format!(
        "[cluster]\nname = \"t\"\nimage_server = \"http://{PRIMARY}:8080\"\nserver_ip = \"{PRIMARY}\"\nkernel = \"k\"\ninitrd = \"i\"\nrelay_port = {PORT}\n\n[[group]]\nname = \"solo\"\n\n[[group]]\nname = \"compute\"\n\n"
    );
    for (r, group, nodes) in [(1, "solo", &["s1"][..]), (2, "compute", &["s2", "m2"][..])] {
        t.push_str(&format!(
            "[[entity]]\nname = \"r{r}\"\nsubnet = \"10.78.{r}.0/24\"\ngateway = \"10.78.{r}.1\"\ndefault_group = \"{group}\"\nsecondary = \"s{r}\"\n\n"
        ));
        for (i, name) in nodes.iter().enumerate() {
            let h = 11 + i;
            t.push_str(&format!(
                "[[node]]\nname = \"{name}\"\nmac = \"52:54:00:78:{r:02x}:{h:02x}\"\nip = \"10.78.{r}.{h}\"\nentity = \"r{r}\"\ngroups = [\"{group}\"]\n\n"
            ));
        }
    }
    t
}

/// docs/BOOT.md: a secondary alone in its rack (no downstream node in its image's plan)
/// used to start no relay and serve no boot files, so its child in the boot-file tree
/// polled a refused port for the whole boot window before taking them from the primary.
/// Here s1 runs the real agent (`clone --plan`, its node plan: no downstream, boot files)
/// and s2 (`boot-files` with its node plan's peers, a 30 s window) starts first: s2 must
/// get the files from s1, named, well within the window.
#[test]
fn a_one_node_racks_secondary_serves_its_boot_tree_child() {
    skip_unless_root!("network namespaces, loop devices");
    let dir = tempfile::tempdir().unwrap();
    let (root, kernel, initrd) = write_tree(dir.path(), &one_node_rack_cluster());
    let master = test_fixtures::disk::fixture("gpt");
    test_fixtures::image::capture_into(&master, &root, "solo");
    let s1_plan =
        NodePlan::from_json(&std::fs::read(root.join(NodePlan::path("s1"))).unwrap()).unwrap();
    assert_eq!(
        (s1_plan.downstream, s1_plan.boot_files),
        (0, true),
        "s1 is a secondary with no downstream node"
    );
    let s1_url = format!("http://10.78.1.11:{PORT}");
    let s2_peers = peers_of(&root, "s2");
    assert_eq!(s2_peers, vec![s1_url.clone()], "s2 is s1's child");

    let mut lan = Lan::new("bo");
    let primary_ns = lan.host("p", &format!("{PRIMARY}/16"));
    let _primary = serve(&primary_ns, &root, &format!("{PRIMARY}:8080"));
    let s1_ns = lan.host("s1", "10.78.1.11/16");
    let s2_ns = lan.host("s2", "10.78.2.11/16");
    let server = format!("http://{PRIMARY}:8080");

    // The child first: s1 is not up yet (polled, as a peer still booting).
    let started = std::time::Instant::now();
    let s2 = Secondary::start(&s2_ns, &server, &format!("10.78.2.11:{PORT}"), &s2_peers);
    let disk = dir.path().join("s1.img");
    let size = std::fs::metadata(&master).unwrap().len() * 3 / 2;
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    let lo = test_fixtures::disk::Loop::attach(&disk, false);
    let log = dir.path().join("s1.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut s1 = Proc(
        Lan::cmd(&s1_ns, bin("initrd-agent").to_str().unwrap())
            .args(["clone", "--server", &server, "--group", "solo", "--plan"])
            .args(["--node", "s1", "--relay-idle", "10", "--target"])
            .arg(&lo.dev)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let (_s2, lines) = s2.serving("s2");
    let took = started.elapsed();
    let all = lines.join("\n");
    let s1_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        lines.last().unwrap().ends_with(&format!("from {s1_url})")),
        "s2 did not take the files from s1 ({took:?}):\n{all}\ns1:\n{}",
        s1_log()
    );
    assert!(
        took < std::time::Duration::from_secs(25),
        "s2 waited {took:?}: the boot window, not s1:\n{all}"
    );
    // s2 serves s1's (the primary's) bytes.
    let url = format!("http://10.78.2.11:{PORT}");
    assert!(get_in(&s2_ns, format!("{url}/boot/vmlinuz")) == kernel);
    assert!(get_in(&s2_ns, format!("{url}/boot/initrd.img")) == initrd);
    // s1 said it serves them, and its clone still ends well (no frame cache, no node
    // to hold for beyond its idle fallback).
    let code = {
        let t = std::time::Instant::now();
        loop {
            if let Some(s) = s1.0.try_wait().unwrap() {
                break s.code();
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(240),
                "s1 never finished:\n{}",
                s1_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let said = s1_log();
    assert_eq!(code, Some(0), "{said}");
    for want in [
        "upstreams: primary (serving boot files)",
        "(no downstream node in the plan: no frame cache)",
        "serving boot files to the rack: boot/initrd.img, boot/vmlinuz",
        "sha256 checked; from the primary)",
        "no downstream node planned",
    ] {
        assert!(said.contains(want), "s1: no `{want}`:\n{said}");
    }
    drop(lo);
}
