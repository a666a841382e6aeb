//! Set-up shared by the rack boot-file tests (`bootrack.rs`, `bootpeers.rs`): the boot
//! tree pxe-builder renders for a cluster, the real binaries run in network namespaces
//! (`imgtool serve` as the primary, `initrd-agent boot-files` as a secondary), a small
//! interpreter of the iPXE commands our scripts use, and the primary's sent-bytes
//! counter.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use test_fixtures::netns::{ip, Lan};

/// Kills a process we started, by its PID, when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary of the workspace, beside the agent's.
pub fn bin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_initrd-agent")).with_file_name(name);
    assert!(
        p.exists(),
        "{} missing: `cargo build -p {name}`",
        p.display()
    );
    p
}

/// The served tree of cluster `text` (its `kernel = "k"`, `initrd = "i"` under `dir`):
/// the rendered text files (scripts, node plans), the boot files and their manifest.
/// Returns the tree's root, the kernel and the initrd.
pub fn write_tree(dir: &Path, text: &str) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let kernel: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let initrd: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(dir.join("k"), &kernel).unwrap();
    std::fs::write(dir.join("i"), &initrd).unwrap();
    let c = pxe_builder::model::parse(text, "cluster.toml", dir).unwrap_or_else(|e| panic!("{e}"));
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

/// `imgtool serve ROOT --listen ADDR` in namespace `ns`, given half a second to bind.
pub fn serve(ns: &str, root: &Path, addr: &str) -> Proc {
    let p = Proc(
        Lan::cmd(ns, bin("imgtool").to_str().unwrap())
            .arg("serve")
            .arg(root)
            .args(["--listen", addr])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    p
}

/// A secondary's `initrd-agent boot-files --server SERVER --listen LISTEN --peer …` in
/// namespace `ns`, not waited for (see [`Secondary::serving`]).
pub struct Secondary {
    pub proc: Proc,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

impl Secondary {
    pub fn start(ns: &str, server: &str, listen: &str, peers: &[String]) -> Secondary {
        Secondary::start_with(ns, server, listen, peers, 30)
    }

    /// As [`Secondary::start`], polling peers for `window` seconds.
    pub fn start_with(
        ns: &str,
        server: &str,
        listen: &str,
        peers: &[String],
        window: u64,
    ) -> Secondary {
        let mut cmd = Lan::cmd(ns, bin("initrd-agent").to_str().unwrap());
        cmd.args(["boot-files", "--server", server, "--listen", listen]);
        cmd.args(["--window", &window.to_string()]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        Secondary {
            proc: Proc(child),
            lines: BufReader::new(err).lines(),
        }
    }

    /// Waits until it serves; its console lines until then. Its error line
    /// (`initrd-agent: error:`), or its end before serving, fails the test.
    pub fn serving(mut self, who: &str) -> (Proc, Vec<String>) {
        let mut said = vec![];
        loop {
            let l = self
                .lines
                .next()
                .unwrap_or_else(|| panic!("{who}: boot-files ended before serving: {said:?}"))
                .unwrap();
            eprintln!("{who}: {l}");
            assert!(!l.contains("initrd-agent: error"), "{who}: {l}");
            let done = l.contains("serving boot files");
            said.push(l);
            if done {
                break;
            }
        }
        // Keep draining its console so it never blocks on a full pipe.
        let lines = self.lines;
        std::thread::spawn(move || lines.for_each(drop));
        (self.proc, said)
    }
}

/// What a node booted: each image's URL and bytes.
#[derive(Debug, Default)]
pub struct Booted {
    pub kernel: Option<(String, Vec<u8>)>,
    pub initrd: Option<(String, Vec<u8>)>,
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
pub fn fetch(url: &str, ms: u64) -> Result<Vec<u8>, String> {
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
/// an error; `boot` succeeds when a kernel and an initrd are loaded. `vars` expands
/// `${name}` settings (`ip`, …); `iseq A B && goto L ||` jumps when A equals B.
pub fn run_ipxe(script: &str, origin: &str, vars: &[(&str, &str)]) -> Result<Booted, String> {
    let mut text = script.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let goto = |label: &str| -> Result<usize, String> {
        let to = format!(":{label}");
        Ok(lines
            .iter()
            .position(|l| *l == to)
            .ok_or(format!("no label {to}"))?
            + 1)
    };
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
        if let Some(rest) = line.strip_prefix("iseq ") {
            let (cond, label) = rest
                .strip_suffix(" ||")
                .and_then(|r| r.split_once(" && goto "))
                .ok_or(format!("not `iseq A B && goto L ||`: {line}"))?;
            let mut w = cond.split_whitespace();
            if w.next() == w.next() {
                pc = goto(label)?;
            }
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
            pc = goto(label)?;
        }
    }
    Err("the script ended without booting".into())
}

/// Bytes namespace `ns` has sent on its interface `h1` (the primary is the first host).
pub fn sent(ns: &str) -> u64 {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", "h1"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["tx"]["bytes"].as_u64().unwrap()
}
