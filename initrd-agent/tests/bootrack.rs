//! Boot files from the rack, in network namespaces made by the test: a primary running
//! the real `imgtool serve` over a boot tree rendered by pxe-builder (node iPXE scripts,
//! `etc/bootfiles.json`), the rack's secondary running `initrd-agent boot-files` (what a
//! secondary's relay does beside the image), and a node that follows its own rendered
//! iPXE script — read by a small interpreter of the commands the script uses (`kernel`,
//! `initrd`, `boot`, `|| goto`, labels, `imgfree`), fetching over HTTP with iPXE's
//! `--timeout` as the progress timeout. The node's kernel and initrd must equal the
//! primary's bytes, come from the secondary while it serves (the primary sending only
//! the script), and from the primary when the secondary is gone or unreachable.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use test_fixtures::netns::{ip, Lan};
use test_fixtures::skip_unless_root;

const PRIMARY: &str = "10.79.0.1";
const SECONDARY: &str = "10.79.1.11";
const NODE: &str = "10.79.1.12";
const PORT: u16 = 8180;

/// Kills a process we started, by its PID, when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_initrd-agent")).with_file_name(name);
    assert!(
        p.exists(),
        "{} missing: `cargo build -p {name}`",
        p.display()
    );
    p
}

/// One rack of three compute nodes (n1 its secondary), every node with its own files.
fn cluster(dir: &Path) -> pxe_builder::model::Cluster {
    let text = format!(
        "[cluster]\nname = \"t\"\nimage_server = \"http://{PRIMARY}:8080\"\nserver_ip = \"{PRIMARY}\"\nkernel = \"k\"\ninitrd = \"i\"\nnode_files = \"all\"\nrelay_port = {PORT}\n\n[[entity]]\nname = \"r1\"\nsubnet = \"10.79.1.0/24\"\ngateway = \"10.79.1.1\"\ndefault_group = \"compute\"\n\n[[group]]\nname = \"compute\"\n\n[[node]]\nname = \"n1\"\nmac = \"52:54:00:79:00:01\"\nip = \"{SECONDARY}\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n2\"\nmac = \"52:54:00:79:00:02\"\nip = \"{NODE}\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n3\"\nmac = \"52:54:00:79:00:03\"\nip = \"10.79.1.13\"\nentity = \"r1\"\ngroups = [\"compute\"]\n"
    );
    pxe_builder::model::parse(&text, "cluster.toml", dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The served tree: the rendered text files, the boot files and their manifest.
fn write_tree(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let kernel: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let initrd: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(dir.join("k"), &kernel).unwrap();
    std::fs::write(dir.join("i"), &initrd).unwrap();
    let c = cluster(dir);
    let root = dir.join("tree");
    let mut files = pxe_builder::tree::render(&c).unwrap().files;
    files.insert(
        netboot_proto::bootfiles::FILE.into(),
        pxe_builder::tree::Source::Text(pxe_builder::bootfiles::manifest(&c).unwrap()),
    );
    for (path, src) in files {
        let p = root.join(&path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match src {
            pxe_builder::tree::Source::Text(t) => std::fs::write(&p, t).unwrap(),
            pxe_builder::tree::Source::Copy(from) => {
                std::fs::copy(from, &p).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join("boot/vmlinuz"), &kernel).unwrap();
    std::fs::write(root.join("boot/initrd.img"), &initrd).unwrap();
    (root, kernel, initrd)
}

/// What the node booted: each image's URL and bytes.
#[derive(Debug, Default)]
struct Booted {
    kernel: Option<(String, Vec<u8>)>,
    initrd: Option<(String, Vec<u8>)>,
}

/// The URL `u` names in a script fetched from `origin` (`http://host:port`).
fn resolve(origin: &str, u: &str) -> String {
    if u.starts_with("http://") {
        u.to_string()
    } else {
        format!("{origin}{u}")
    }
}

/// GET `url` with iPXE's progress timeout `ms` (connect and every read).
fn fetch(url: &str, ms: u64) -> Result<Vec<u8>, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(ms))
        .timeout_read(Duration::from_millis(ms))
        .redirects(0)
        .build();
    let r = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut body = vec![];
    r.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(body)
}

/// Runs the iPXE `script` fetched from `origin` as iPXE would for the commands our
/// scripts use: a failing command jumps to its `|| goto LABEL`, or ends the script with
/// an error; `boot` succeeds when a kernel and an initrd are loaded.
fn run_ipxe(script: &str, origin: &str) -> Result<Booted, String> {
    let lines: Vec<&str> = script.lines().map(str::trim).collect();
    let mut booted = Booted::default();
    let mut pc = 0;
    let mut steps = 0;
    while pc < lines.len() {
        steps += 1;
        assert!(steps < 1000, "the script loops");
        let line = lines[pc];
        pc += 1;
        if line.is_empty() || line.starts_with('#') || line.starts_with(':') {
            continue;
        }
        let (cmd, on_fail) = match line.split_once(" || goto ") {
            Some((c, l)) => (c, Some(l)),
            None => (line, None),
        };
        let mut words = cmd.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let mut rest: Vec<&str> = words.collect();
        let mut ms = 10_000;
        if rest.first() == Some(&"--timeout") {
            ms = rest[1]
                .parse()
                .map_err(|_| format!("bad timeout in {line}"))?;
            rest.drain(..2);
        }
        let ok = match verb {
            "kernel" | "initrd" => {
                let url = resolve(origin, rest[0]);
                let got = fetch(&url, ms).map(|b| (url, b));
                let ok = got.is_ok();
                let slot = if verb == "kernel" {
                    &mut booted.kernel
                } else {
                    &mut booted.initrd
                };
                *slot = got.ok();
                ok
            }
            "boot" => {
                if booted.kernel.is_some() && booted.initrd.is_some() {
                    return Ok(booted);
                }
                false
            }
            "imgfree" => {
                booted = Booted::default();
                true
            }
            other => return Err(format!("command {other} is not one our scripts use")),
        };
        if !ok {
            let Some(label) = on_fail else {
                return Err(format!("`{line}` failed"));
            };
            let to = format!(":{label}");
            pc = lines
                .iter()
                .position(|l| *l == to)
                .ok_or(format!("no label {to}"))?
                + 1;
        }
    }
    Err("the script ended without booting".into())
}

/// Bytes namespace `ns` has sent on its interface `h1` (the primary is the first host).
fn sent(ns: &str) -> u64 {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", "h1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["tx"]["bytes"].as_u64().unwrap()
}

/// The node n2 boots by its own iPXE script, in its namespace; what it booted and how
/// many bytes the primary sent meanwhile.
fn boot_n2(node_ns: &str, primary_ns: &str) -> (Booted, u64) {
    let origin = format!("http://{PRIMARY}:8080");
    let before = sent(primary_ns);
    let booted = test_fixtures::netns::in_namespace(node_ns, move || {
        let script = fetch(&format!("{origin}/ipxe/01-52-54-00-79-00-02.ipxe"), 10_000)
            .expect("the node's script from the primary");
        run_ipxe(&String::from_utf8_lossy(&script), &origin)
    })
    .expect("n2 boots");
    (booted, sent(primary_ns) - before)
}

/// The secondary's `initrd-agent boot-files`, once it serves (its console line).
fn start_secondary(ns: &str) -> Proc {
    let mut child = Lan::cmd(ns, bin("initrd-agent").to_str().unwrap())
        .args(["boot-files", "--server"])
        .arg(format!("http://{PRIMARY}:8080"))
        .arg("--listen")
        .arg(format!("{SECONDARY}:{PORT}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let proc = Proc(child);
    let mut lines = BufReader::new(err).lines();
    loop {
        let l = lines
            .next()
            .expect("boot-files ended before serving")
            .unwrap();
        eprintln!("secondary: {l}");
        assert!(!l.contains("error"), "{l}");
        if l.contains("serving boot files") {
            break;
        }
    }
    // Keep draining its console so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    proc
}

#[test]
fn a_node_boots_from_its_racks_secondary_and_falls_back_to_the_primary() {
    skip_unless_root!("network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let (root, kernel, initrd) = write_tree(dir.path());
    let mut lan = Lan::new("br");
    let p = lan.host("p", &format!("{PRIMARY}/16"));
    let s = lan.host("n1", &format!("{SECONDARY}/16"));
    let n = lan.host("n2", &format!("{NODE}/16"));
    let _primary = Proc(
        Lan::cmd(&p, bin("imgtool").to_str().unwrap())
            .arg("serve")
            .arg(&root)
            .args(["--listen", &format!("{PRIMARY}:8080")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
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
