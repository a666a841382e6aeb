//! `imgtool serve`: the primary image server. Serves files under one or more roots (the
//! image root, then optionally the boot tree for `etc/bootopts/*` and `clone-plan.json`)
//! with `Range` support, and keeps a status board that node agents `POST` to and
//! `imgtool status` reads. Any static HTTP server holding the same files works as a
//! pull-only primary; only the status board is specific to this one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tiny_http::{Header, Method, Request, Response, StatusCode};

/// What an agent reports (also the body of `POST /status/<node>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// `booting`, `network`, `layout`, `partitioning`, `restoring`, `growing`, `verifying`,
    /// `done`, `failed`, …
    pub phase: String,
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub message: String,
    /// Who the node pulls from (`primary` or a node name).
    #[serde(default)]
    pub upstream: String,
    #[serde(default)]
    pub image: String,
}

/// A node's entry on the board.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub node: String,
    pub last: Report,
    /// Seconds since the server started, at the last report.
    pub at: f64,
    /// Earlier phases and messages, oldest first (at most 50).
    pub history: Vec<String>,
}

#[derive(Default)]
struct Board {
    nodes: BTreeMap<String, NodeStatus>,
}

pub struct ServeOptions {
    pub roots: Vec<PathBuf>,
    pub listen: String,
    pub threads: usize,
}

/// Resolves a URL path to a file under one of `roots`; `None` for anything outside them.
pub fn resolve(roots: &[PathBuf], url_path: &str) -> Option<PathBuf> {
    let path = url_path.split('?').next().unwrap_or("");
    let mut rel = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        if part == ".." || part.starts_with('.') || part.contains('\\') {
            return None;
        }
        rel.push(part);
    }
    if rel.as_os_str().is_empty() {
        return None;
    }
    roots.iter().map(|r| r.join(&rel)).find(|p| p.is_file())
}

/// A `Range` header that no byte of the file satisfies (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a single-range `Range: bytes=…` header against a file of `len` bytes.
/// `Ok(None)`: no usable range (serve everything).
pub fn parse_range(h: &str, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| Unsatisfiable)?, len.saturating_sub(1)),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| Unsatisfiable)?;
            let e: u64 = e.parse().map_err(|_| Unsatisfiable)?;
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len || end < start {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).expect("static header")
    })
}

fn text(code: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body).with_status_code(StatusCode(code))
}

fn serve_file(req: Request, path: &Path) {
    let head = *req.method() == Method::Head;
    let Ok(mut f) = File::open(path) else {
        let _ = req.respond(text(404, "not found\n"));
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let range = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map(|h| parse_range(h.value.as_str(), len));
    let (status, start, n) = match range {
        Some(Err(Unsatisfiable)) => {
            let r = text(416, "range not satisfiable\n")
                .with_header(header("Content-Range", &format!("bytes */{len}")));
            let _ = req.respond(r);
            return;
        }
        Some(Ok(Some((s, e)))) => (206, s, e - s + 1),
        _ => (200, 0, len),
    };
    if f.seek(SeekFrom::Start(start)).is_err() {
        let _ = req.respond(text(500, "seek failed\n"));
        return;
    }
    let mut resp = Response::new(
        StatusCode(status),
        vec![
            header("Accept-Ranges", "bytes"),
            header("Content-Type", "application/octet-stream"),
        ],
        // Concrete BufReader: io::copy then sends 1 MiB per write instead of 8 KiB.
        std::io::BufReader::with_capacity(1 << 20, f.take(if head { 0 } else { n })),
        Some(n as usize),
        None,
    )
    // Content-Length, not tiny_http's default chunked encoding over 32 KiB (8 KiB
    // pieces, costly on both ends).
    .with_chunked_threshold(usize::MAX);
    if status == 206 {
        resp = resp.with_header(header(
            "Content-Range",
            &format!("bytes {start}-{}/{len}", start + n - 1),
        ));
    }
    let _ = req.respond(resp);
}

/// Runs the server until the process ends. Prints one line when ready.
pub fn serve(opts: ServeOptions) -> Result<(), String> {
    bind(opts)?.run()
}

/// A bound server, not yet answering.
pub struct Bound {
    server: tiny_http::Server,
    opts: ServeOptions,
}

impl Bound {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Answers requests until the process ends.
    pub fn run(self) -> Result<(), String> {
        run(self.server, self.opts)
    }
}

/// Binds the listening socket.
pub fn bind(opts: ServeOptions) -> Result<Bound, String> {
    let server = tiny_http::Server::http(&opts.listen)
        .map_err(|e| format!("listening on {}: {e}", opts.listen))?;
    Ok(Bound { server, opts })
}

fn run(server: tiny_http::Server, opts: ServeOptions) -> Result<(), String> {
    let server = Arc::new(server);
    let board = Arc::new(Mutex::new(Board::default()));
    let started = Instant::now();
    eprintln!(
        "imgtool serve: {} on http://{} (status board at /status)",
        opts.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        server.server_addr()
    );
    let roots = Arc::new(opts.roots);
    let mut handles = vec![];
    for _ in 0..opts.threads.max(1) {
        let (server, board, roots) = (server.clone(), board.clone(), roots.clone());
        handles.push(std::thread::spawn(move || loop {
            let Ok(mut req) = server.recv() else {
                return;
            };
            let url = req.url().to_string();
            match req.method() {
                Method::Post if url.starts_with("/status/") => {
                    let node = url
                        .trim_start_matches("/status/")
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let mut body = String::new();
                    let ok = req
                        .as_reader()
                        .take(64 << 10)
                        .read_to_string(&mut body)
                        .is_ok();
                    let report: Option<Report> = serde_json::from_str(&body).ok().filter(|_| ok);
                    match (node.is_empty() || node.contains('/'), report) {
                        (false, Some(r)) => {
                            if let Ok(mut b) = board.lock() {
                                let at = started.elapsed().as_secs_f64();
                                let e = b.nodes.entry(node.clone()).or_insert_with(|| NodeStatus {
                                    node: node.clone(),
                                    last: Report::default(),
                                    at,
                                    history: vec![],
                                });
                                if e.last.phase != r.phase
                                    || !r.message.is_empty() && e.last.message != r.message
                                {
                                    e.history.push(
                                        format!("{at:.1}s {} {}", r.phase, r.message)
                                            .trim_end()
                                            .to_string(),
                                    );
                                    if e.history.len() > 50 {
                                        e.history.remove(0);
                                    }
                                }
                                if r.phase == "failed" {
                                    eprintln!("imgtool serve: node {node} failed: {}", r.message);
                                }
                                e.last = r;
                                e.at = at;
                            }
                            let _ = req.respond(text(204, ""));
                        }
                        _ => {
                            let _ = req.respond(text(
                                400,
                                "expected POST /status/<node> with a JSON report\n",
                            ));
                        }
                    }
                }
                Method::Get if url == "/status" || url.starts_with("/status?") => {
                    let body = board
                        .lock()
                        .map(|b| serde_json::to_string_pretty(&b.nodes).unwrap_or_default())
                        .unwrap_or_default();
                    let _ = req.respond(
                        text(200, &body).with_header(header("Content-Type", "application/json")),
                    );
                }
                Method::Get | Method::Head => match resolve(&roots, &url) {
                    // A transfer gets its own thread: a node streaming a partition for
                    // minutes must not hold one of the workers that answer everyone else
                    // (64 nodes pulling at once would otherwise queue behind 16).
                    Some(p) => {
                        std::thread::spawn(move || serve_file(req, &p));
                    }
                    None => {
                        let _ = req.respond(text(404, "not found\n"));
                    }
                },
                _ => {
                    let _ = req.respond(text(405, "method not allowed\n"));
                }
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Reads the status board of the server at `url`.
pub fn fetch_status(url: &str) -> Result<BTreeMap<String, NodeStatus>, String> {
    let u = format!("{}/status", url.trim_end_matches('/'));
    let r = ureq::get(&u).call().map_err(|e| format!("{u}: {e}"))?;
    let mut s = String::new();
    r.into_reader()
        .take(64 << 20)
        .read_to_string(&mut s)
        .map_err(|e| format!("{u}: {e}"))?;
    serde_json::from_str(&s).map_err(|e| format!("{u}: not a status board: {e}"))
}

/// Sends one report; best effort (errors are returned for logging, never fatal).
pub fn post_report(server: &str, node: &str, r: &Report) -> Result<(), String> {
    let u = format!("{}/status/{node}", server.trim_end_matches('/'));
    let body = serde_json::to_string(r).map_err(|e| e.to_string())?;
    ureq::post(&u)
        .timeout(std::time::Duration::from_secs(3))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .map(|_| ())
        .map_err(|e| format!("{u}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(parse_range("bytes=-10", 1000), Ok(Some((990, 999))));
        assert_eq!(parse_range("bytes=990-2000", 1000), Ok(Some((990, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=5-1", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range("items=0-1", 1000), Ok(None));
    }

    #[test]
    fn paths_stay_inside_the_roots() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("g")).unwrap();
        std::fs::write(d.path().join("g/manifest"), "x").unwrap();
        let roots = vec![d.path().to_path_buf()];
        assert!(resolve(&roots, "/g/manifest").is_some());
        assert!(resolve(&roots, "/g/../g/manifest").is_none());
        assert!(resolve(&roots, "/../etc/passwd").is_none());
        assert!(resolve(&roots, "/g/.hidden").is_none());
        assert!(resolve(&roots, "/").is_none());
    }
}
