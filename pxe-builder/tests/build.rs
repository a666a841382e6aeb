//! `pxe-builder` as a user runs it: validation errors with locations, nothing written on
//! error, byte-identical output, DHCP snippets accepted by the real servers, lookup.

mod common;
use common::*;
use std::path::PathBuf;

const HEADER: &str = r#"[cluster]
name = "t"
image_server = "http://172.20.0.100:8080"
server_ip = "172.20.0.2"
kernel = "vmlinuz"
initrd = "initrd.img"
vsmp_loader = "vsmp-loader"
"#;

#[test]
fn the_example_builds_twice_to_identical_bytes() {
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &example());
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    for out in [&a, &b] {
        let o = bin()
            .args(["build", "--cluster"])
            .arg(&c)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (sa, sb) = (snapshot(&a), snapshot(&b));
    assert!(sa.len() > 30);
    assert!(sa == sb, "two builds differ");
    // Rebuilding over an existing tree replaces it.
    let o = bin()
        .args(["build", "--json", "--cluster"])
        .arg(&c)
        .arg("--out")
        .arg(&a)
        .output()
        .unwrap();
    assert!(o.status.success());
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["nodes"], 4);
    // Per-node files exist exactly for the nodes booting something else than their
    // entity's default: n02 (group debug) and the vSMP boards n03, n04.
    let mut own: Vec<String> = std::fs::read_dir(a.join("pxelinux.cfg"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("01-"))
        .collect();
    own.sort();
    assert_eq!(
        own,
        [
            "01-52-54-00-12-34-02",
            "01-52-54-00-12-34-03",
            "01-52-54-00-12-34-04"
        ]
    );
    assert_eq!(snapshot(&a), sb);
    assert!(!std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("building")));
}

/// Each case: a cluster body, and (line, message fragment) pairs expected among the errors.
fn expect_errors(body: &str, want: &[(usize, &str)]) {
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), body);
    // An existing tree must survive a failed build untouched.
    let out = work.path().join("tree");
    std::fs::create_dir_all(out.join("pxelinux.cfg")).unwrap();
    std::fs::write(out.join("pxelinux.cfg/default"), "old tree").unwrap();
    let before = snapshot(&out);
    for args in [vec!["check"], vec!["build", "--cluster"]] {
        let mut cmd = bin();
        cmd.args(&args).arg(&c);
        if args[0] == "build" {
            cmd.arg("--out").arg(&out);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        for (line, frag) in want {
            let needle = format!("cluster.toml:{line}:");
            assert!(
                err.lines().any(|l| l.contains(&needle) && l.contains(frag)),
                "expected `{frag}` at line {line} in:\n{err}"
            );
        }
    }
    assert_eq!(
        before,
        snapshot(&out),
        "a failed build touched the existing tree"
    );
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let body = format!(
        r#"{HEADER}
[[entity]]
name = "r1"
subnet = "172.20.0.0/27"
[[entity]]
name = "r2"
subnet = "172.20.0.16/28"
[[entity]]
name = "r3"
subnet = "10.1.0.0/33"
[[entity]]
name = "r4"
subnet = "10.2.0.7/24"

[[group]]
name = "vSMP_empty"

[[node]]
name = "a"
mac = "52:54:00:00:00:01"
ip = "172.20.0.40"
entity = "r1"
groups = ["nope"]

[[node]]
name = "a"
mac = "52:54:00:00:00:01"
ip = "172.20.0.40"
entity = "r9"

[[node]]
name = "b"
mac = "52:54:00:00:01"
ip = "172.20.0.3"
entity = "r1"
"#
    );
    // Line numbers of the body above (HEADER is 8 lines + a blank).
    expect_errors(
        &body,
        &[
            (14, "overlaps subnet 172.20.0.0/27"),
            (17, "prefix `33` is not 0-32"),
            (20, "host bits set"),
            (23, "has no active member"),
            (28, "outside subnet 172.20.0.0/27"),
            (30, "group `nope` of node `a` is not defined"),
            (33, "duplicate node name `a`"),
            (34, "is also node `a`'s"),
            (35, "IP 172.20.0.40 of node `a` is also"),
            (36, "entity `r9` of node `a` is not defined"),
            (40, "is not six hex bytes"),
        ],
    );
}

#[test]
fn syntax_errors_and_unknown_keys_are_located() {
    expect_errors(
        &format!("{HEADER}\n[[node]]\nname = \"x\"\nmacc = \"52:54:00:00:00:01\"\n"),
        &[(11, "unknown field `macc`")],
    );
    expect_errors(&format!("{HEADER}\n[[entity]\nname = 1\n"), &[(9, "")]);
    let missing_kernel = HEADER.replace("kernel = \"vmlinuz\"", "kernel = \"nope/vmlinuz\"");
    expect_errors(&missing_kernel, &[(5, "kernel `nope/vmlinuz` not found")]);
}

/// Builds the example cluster; returns the temp dir (keep it alive) and the tree.
fn build_example() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &example());
    let out = work.path().join("tree");
    let o = bin()
        .args(["build", "--cluster"])
        .arg(&c)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (work, out)
}

#[test]
fn dhcp_snippets_pass_the_real_servers_checks() {
    let (_work, out) = build_example();
    let dnsmasq = out.join("dhcp/dnsmasq.conf");
    let conf = format!("--conf-file={}", dnsmasq.display());
    let o = real_check("dnsmasq", &["--test".as_ref(), conf.as_ref()]);
    assert!(
        o.status.success(),
        "dnsmasq --test: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&dnsmasq).unwrap();
    assert!(text.contains("dhcp-host=52:54:00:12:34:01,172.20.0.5,n01"));
    assert!(text.contains("dhcp-boot=tag:efi-x86_64,boot/grub/x86_64-efi/core.efi,,172.20.0.2"));
    let dhcpd = out.join("dhcp/dhcpd.conf");
    let dhcpd_check = || {
        real_check(
            "dhcpd",
            &[
                "-t".as_ref(),
                "-4".as_ref(),
                "-cf".as_ref(),
                dhcpd.as_os_str(),
            ],
        )
    };
    let o = dhcpd_check();
    assert!(
        o.status.success(),
        "dhcpd -t: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A broken snippet is caught by the same check (the check can fail).
    std::fs::write(&dhcpd, "subnet 172.20.0.0 netmask { }\n").unwrap();
    assert!(!dhcpd_check().status.success());
}

#[test]
fn lookup_explains_which_file_a_client_loads() {
    let (_work, out) = build_example();
    let run = |args: &[&str]| -> serde_json::Value {
        let o = bin()
            .args(["lookup", "--json", "--tree"])
            .arg(&out)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // n02 boots another group than its entity's default: it has a file of its own.
    let l = run(&["--mac", "52:54:00:12:34:02", "--ip", "172.20.0.6"]);
    assert_eq!(l["chosen"], "pxelinux.cfg/01-52-54-00-12-34-02");
    assert!(l["append"]
        .as_str()
        .unwrap()
        .contains("netboot.node=n02 netboot.entity=rack1 netboot.group=debug"));
    // n01 boots rack1's default: the subnet file, and the bootopts name it by its MAC.
    let l = run(&["--mac", "52:54:00:12:34:01", "--ip", "172.20.0.5"]);
    assert_eq!(l["chosen"], "pxelinux.cfg/AC14000");
    let opts = std::fs::read_to_string(out.join("etc/bootopts/AC14000")).unwrap();
    assert!(
        opts.contains("node=52:54:00:12:34:01,172.20.0.5,n01,compute\n"),
        "{opts}"
    );
    assert!(
        !opts.contains(",172.20.0.20,"),
        "a node outside AC14000 is listed in it"
    );
    let l = run(&["--ip", "172.20.0.20"]);
    assert_eq!(l["chosen"], "pxelinux.cfg/AC14001");
    assert_eq!(l["tried"][0][0], "pxelinux.cfg/AC140014");
    assert_eq!(l["bootopts"], "etc/bootopts/AC14001");
    let l = run(&["--ip", "172.20.0.40"]);
    assert_eq!(
        l["chosen"], "pxelinux.cfg/default",
        "an address outside every subnet fell into one"
    );
}
