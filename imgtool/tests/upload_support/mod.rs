//! Helpers of the upload and versions tests: an `imgtool serve` taking uploads (a child
//! process whose log is kept, killed by its PID in `Drop`), a TCP proxy that cuts a
//! connection or flips a byte on its way to the server, and snapshots of every file
//! under a directory (to show that nothing was written outside the staging directory).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn imgtool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgtool"))
}
use std::time::{Duration, Instant};

pub const GROUP: &str = "compute";
pub const TOKEN: &str = "tok-compute-0123456789abcdef";
pub const TOKEN2: &str = "tok-compute-second-0123456789";
pub const TOKEN3: &str = "tok-compute-third-0123456789";
pub const OTHER_TOKEN: &str = "tok-storage-0123456789abcdef";
/// Bound to 127.0.0.1 (the tests' client address).
pub const HERE_TOKEN: &str = "tok-compute-here-0123456789";
/// Bound to 127.0.0.2: refused from the tests' client.
pub const THERE_TOKEN: &str = "tok-compute-there-0123456789";

/// The tokens file `Server::start` writes, without the lines of `revoked` tokens.
pub fn tokens_text(revoked: &[&str]) -> String {
    let mut t = "# test\n".to_string();
    for (g, tok, ip) in [
        (GROUP, TOKEN, ""),
        (GROUP, TOKEN2, ""),
        (GROUP, TOKEN3, ""),
        ("storage", OTHER_TOKEN, ""),
        (GROUP, HERE_TOKEN, " 127.0.0.1"),
        (GROUP, THERE_TOKEN, " 127.0.0.2"),
    ] {
        if !revoked.contains(&tok) {
            t.push_str(&format!("{g} {tok}{ip}\n"));
        }
    }
    t
}

/// `imgtool serve ROOT --tokens FILE` on 127.0.0.1; its stderr goes to `log`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Serves `root` with a tokens file `work/upload-tokens` (outside the root):
    /// [`tokens_text`].
    pub fn start(work: &Path, root: &Path, extra: &[&str]) -> Server {
        std::fs::create_dir_all(root).unwrap();
        let tokens = work.join("upload-tokens");
        std::fs::write(&tokens, tokens_text(&[])).unwrap();
        let log = work.join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = imgtool()
            .arg("serve")
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--tokens"])
            .arg(&tokens)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            root: root.to_path_buf(),
            log,
        };
        s.addr = s.wait_ready();
        s
    }

    /// The address from the server's first line (it binds before it prints it).
    fn wait_ready(&mut self) -> SocketAddr {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(rest) = text.split(" on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                return addr.parse().unwrap();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("imgtool serve exited ({st}): {text}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "serve not ready: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/{GROUP}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `imgtool capture --json DISK URL --token T [args]`: (exit ok, stdout JSON or stderr).
pub fn upload(
    disk: &Path,
    url: &str,
    token: &str,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let out = imgtool()
        .args(["capture", "--json"])
        .arg(disk)
        .arg(url)
        .args(["--token", token])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What the proxy does to the bytes going to the server.
#[derive(Clone)]
pub enum Fault {
    /// Runs the function once, when this many bytes passed, before passing on.
    RunAt(
        u64,
        Arc<dyn Fn() + Send + Sync>,
        Arc<std::sync::atomic::AtomicBool>,
    ),
    /// Closes every connection once this many bytes (all connections together) passed.
    CutAfter(u64),
    /// Flips the lowest bit of the byte at this position (all connections together).
    FlipAt(u64),
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    pub passed: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let passed = Arc::new(AtomicU64::new(0));
        let p = passed.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let p = p.clone();
                let fault = fault.clone();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Answers go back untouched.
                std::thread::spawn(move || pipe_back(s2, c2));
                std::thread::spawn(move || pipe_up(client, server, &p, fault));
            }
        });
        Proxy { addr, passed }
    }

    pub fn url(&self) -> String {
        format!("http://{}/{GROUP}", self.addr)
    }
}

fn pipe_back(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn pipe_up(mut client: TcpStream, mut server: TcpStream, passed: &AtomicU64, fault: Fault) {
    let fault = &fault;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let start = passed.fetch_add(n as u64, Ordering::SeqCst);
        let mut n = n;
        match fault {
            Fault::CutAfter(limit) if start + n as u64 >= *limit => {
                n = limit.saturating_sub(start) as usize;
                let _ = server.write_all(&buf[..n]);
                let _ = server.shutdown(std::net::Shutdown::Both);
                let _ = client.shutdown(std::net::Shutdown::Both);
                return;
            }
            Fault::FlipAt(at) if (start..start + n as u64).contains(at) => {
                buf[(at - start) as usize] ^= 1;
            }
            Fault::RunAt(at, f, done)
                if start + n as u64 >= *at && !done.swap(true, Ordering::SeqCst) =>
            {
                f();
            }
            _ => {}
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
}

/// Every file under `dir` (symbolic links not followed) with its sha256 (links: their
/// target), skipping the paths `skip` says.
pub fn tree(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if skip(&p) {
                continue;
            }
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p.clone());
                out.insert(p, "dir".into());
            } else if t.is_symlink() {
                out.insert(
                    p.clone(),
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if t.is_file() {
                out.insert(p.clone(), test_fixtures::disk::sha256_file(&p));
            } else {
                // A FIFO or device node of a sample tree: its type only (never opened).
                out.insert(p.clone(), format!("{t:?}"));
            }
        }
    }
    out
}

/// The session directories left in `root/.upload` (none once every upload ended).
pub fn sessions_left(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join(".upload"))
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default()
}

/// `imgtool images ROOT --json`.
pub fn images(root: &Path) -> serde_json::Value {
    let out = imgtool()
        .args(["images", "--json"])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The current version's image id of `group` as `imgtool images` shows it.
pub fn current_id(root: &Path, group: &str) -> Option<String> {
    let all = images(root);
    let g = all.as_array()?.iter().find(|g| g["group"] == group)?;
    let v = g["versions"]
        .as_array()?
        .iter()
        .find(|v| v["current"] == true)?;
    Some(v["image_id"].as_str()?.to_string())
}

/// The image id in a manifest file.
pub fn image_id(dir: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest")).unwrap()).unwrap();
    m["image_id"].as_str().unwrap().to_string()
}

/// One raw HTTP/1.1 request (closes after it); returns the status and the whole answer.
pub fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut out = vec![];
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
