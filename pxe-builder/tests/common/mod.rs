//! Helpers shared by pxe-builder's integration tests: the binary, the example cluster,
//! a cluster file with its boot files, tree snapshots, a refused edit of the example
//! (located at its line:column), and the real DHCP servers' checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pxe-builder"))
}

/// `examples/cluster.toml`.
pub fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster.toml"
    ))
    .unwrap()
}

/// Writes `dir/cluster.toml` with `body`, and the boot files it names.
pub fn write_cluster(dir: &Path, body: &str) -> PathBuf {
    for f in ["vmlinuz", "initrd.img", "vsmp-loader"] {
        std::fs::write(dir.join(f), f).unwrap();
    }
    let p = dir.join("cluster.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// Every file under `dir` with its bytes (empty when `dir` does not exist).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Runs a real DHCP server's own check, `prog args…` (found in /usr/sbin too, which an
/// ordinary user's PATH may lack). `scripts/setup.sh` installs them: a missing one is a
/// failure, not a skip.
pub fn real_check(prog: &str, args: &[&std::ffi::OsStr]) -> Output {
    test_fixtures::root::tool(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{prog} not runnable ({e}); scripts/setup.sh installs dnsmasq-base and isc-dhcp-server"
            )
        })
}

/// 1-based line and column (in characters) of byte `at` of `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

pub fn run(args: &[&str], cluster: &Path, out: Option<&Path>) -> Output {
    let mut cmd = bin();
    cmd.args(args).arg(cluster);
    if let Some(o) = out {
        cmd.arg("--out").arg(o);
    }
    cmd.output().unwrap()
}

/// Replaces `from` (once) in the example with `to`; `check` and `build` must both fail
/// with a diagnostic at the start of `mark` (a piece of `to`, as spelled in the file)
/// whose message contains `frag`, and must write nothing.
pub fn refused(from: &str, to: &str, mark: &str, frag: &str) {
    let text = example();
    assert_eq!(text.matches(from).count(), 1, "`{from}` must be unique");
    let body = text.replacen(from, to, 1);
    let at = body.find(to).unwrap() + to.find(mark).expect("mark inside `to`");
    let (line, col) = line_col(&body, at);
    let needle = format!("cluster.toml:{line}:{col}: ");

    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &body);
    let old = work.path().join("tree");
    std::fs::create_dir_all(old.join("etc/bootopts")).unwrap();
    std::fs::write(old.join("etc/bootopts/AC14000"), "server=http://old\n").unwrap();
    let before = snapshot(&old);
    let fresh = work.path().join("fresh");

    for (args, out) in [
        (vec!["check"], None),
        (vec!["build", "--cluster"], Some(old.as_path())),
        (vec!["build", "--cluster"], Some(fresh.as_path())),
    ] {
        let o = run(&args, &c, out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?} accepted {to:?}\nstdout: {}\nstderr: {err}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            err.lines().any(|l| l.contains(&needle) && l.contains(frag)),
            "{args:?}: expected `{needle}` … `{frag}` for {to:?} in:\n{err}"
        );
        // The hostile value reaches the terminal escaped, never raw.
        assert!(
            !err.chars().any(|c| c.is_control() && c != '\n'),
            "control character on stderr: {err:?}"
        );
        assert!(
            err.lines().count() < 40,
            "a newline in the value split the messages:\n{err}"
        );
    }
    assert_eq!(before, snapshot(&old), "a refused build touched --out");
    assert!(!fresh.exists(), "a refused build created --out");
    assert!(!std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("building")));
}
