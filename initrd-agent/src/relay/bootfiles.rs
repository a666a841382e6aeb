//! Boot files from the rack (the seed's TFTP root copied to each secondary's ramdrive):
//! an entity's secondary fetches the tree's boot files (kernel, initrd, vSMP loader) once
//! from the primary into RAM, checks each against `etc/bootfiles.json` (size and sha256,
//! [`netboot_proto::bootfiles`]), and serves them on its relay at their tree paths
//! (`/boot/vmlinuz`, `/boot/initrd.img`, `/boot/vsmp`), where its entity's iPXE scripts
//! try them before the primary's.
//!
//! What it owns: [`BootStore`] (what is here: fetching, ready, or why not), [`fetch`]
//! (the bounded, checked download) and [`answer`] (the relay's route for `/boot/…`).
//! Until the files are here — or when fetching them failed — a request is answered `503`
//! at once: the node's iPXE then loads them from the primary without waiting out its
//! timeout. Memory: at most [`MAX_TOTAL_BYTES`] (the manifest's bound), held while the
//! relay lives.

use super::{InFlight, Relay};
use imgtool::httpd::{serve_range, Request, Response};
use netboot_proto::bootfiles::{BootFiles, BootFilesError, FILE, MAX_MANIFEST_BYTES};
pub use netboot_proto::bootfiles::{MAX_FILE_BYTES, MAX_TOTAL_BYTES};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Tries per file (a dropped connection, a 5xx), with 1 s, 2 s … between them.
pub const FETCH_ATTEMPTS: u32 = 4;

/// No data for this long: the attempt fails.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What this relay has of the boot files.
#[derive(Debug, Clone, Default)]
pub enum Boot {
    /// Not asked to serve them (not its entity's secondary).
    #[default]
    Off,
    /// Being fetched from the primary.
    Fetching,
    /// Here and checked: tree path → bytes.
    Ready(Arc<HashMap<String, Arc<Vec<u8>>>>),
    /// Fetching failed; why.
    Failed(String),
}

/// The relay's boot files, under their own lock (requests for them never touch the
/// image's bookkeeping).
#[derive(Debug, Default)]
pub struct BootStore(Mutex<Boot>);

impl BootStore {
    pub fn get(&self) -> Boot {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, b: Boot) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = b;
    }
}

/// Why the boot files could not be fetched (each names the URL).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {why}")]
    Http { url: String, why: String },
    #[error("{url}: no such file on the primary (a tree built before boot files were served from racks?)")]
    Missing { url: String },
    #[error("{url}: {source}")]
    Manifest {
        url: String,
        #[source]
        source: BootFilesError,
    },
    #[error("{url}: more than {limit} bytes")]
    TooLong { url: String, limit: u64 },
    #[error("{url}: {got} bytes, the manifest says {want}")]
    Size { url: String, got: u64, want: u64 },
    #[error("{url}: sha256 {got}, the manifest says {want}")]
    Hash {
        url: String,
        got: String,
        want: String,
    },
}

impl FetchError {
    /// Worth asking again (the network), not a wrong file or manifest.
    fn transient(&self) -> bool {
        matches!(self, FetchError::Http { .. })
    }
}

/// `url`'s body, at most `limit` bytes (more is an error, not a cut), tried
/// [`FETCH_ATTEMPTS`] times while the failure is the network's.
fn get_bounded(url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .build();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match get_once(&agent, url, limit) {
            Err(e) if e.transient() && attempt < FETCH_ATTEMPTS => {
                std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
            }
            r => return r,
        }
    }
}

fn get_once(agent: &ureq::Agent, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let http = |why: String| FetchError::Http {
        url: url.into(),
        why,
    };
    let resp = match agent.get(url).call() {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => return Err(http(format!("answered {}", r.status()))),
        Err(ureq::Error::Status(404, _)) => return Err(FetchError::Missing { url: url.into() }),
        Err(e) => return Err(http(e.to_string())),
    };
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len > limit {
            return Err(FetchError::TooLong {
                url: url.into(),
                limit,
            });
        }
    }
    let mut body = Vec::new();
    resp.into_reader()
        .take(limit.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|e| http(format!("reading: {e}")))?;
    if body.len() as u64 > limit {
        return Err(FetchError::TooLong {
            url: url.into(),
            limit,
        });
    }
    Ok(body)
}

/// The boot files `server` (the primary's base URL) lists in its manifest, each fetched
/// once and checked (size, sha256): tree path → bytes.
pub fn fetch(server: &str) -> Result<HashMap<String, Arc<Vec<u8>>>, FetchError> {
    let base = server.trim_end_matches('/');
    let url = format!("{base}/{FILE}");
    let text = get_bounded(&url, MAX_MANIFEST_BYTES)?;
    let manifest = BootFiles::from_json(&text).map_err(|source| FetchError::Manifest {
        url: url.clone(),
        source,
    })?;
    let mut out = HashMap::new();
    for f in &manifest.files {
        let url = format!("{base}/{}", f.path);
        let body = get_bounded(&url, f.size)?;
        if body.len() as u64 != f.size {
            return Err(FetchError::Size {
                url,
                got: body.len() as u64,
                want: f.size,
            });
        }
        let got = hex::encode(Sha256::digest(&body));
        if got != f.sha256 {
            return Err(FetchError::Hash {
                url,
                got,
                want: f.sha256.clone(),
            });
        }
        out.insert(f.path.clone(), Arc::new(body));
    }
    Ok(out)
}

impl Relay {
    /// Fetches the boot files from `server` (the primary) in a background thread and
    /// serves them from then on; `say` gets one line when they are here or why not.
    /// Until then, requests for them are answered 503.
    pub fn serve_boot_files(
        self: &Arc<Self>,
        server: &str,
        say: Box<dyn Fn(&str) + Send>,
    ) -> std::thread::JoinHandle<()> {
        self.boot.set(Boot::Fetching);
        let (me, server) = (self.clone(), server.to_string());
        std::thread::spawn(move || match fetch(&server) {
            Ok(files) => {
                let bytes: usize = files.values().map(|f| f.len()).sum();
                let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
                names.sort_unstable();
                say(&format!(
                    "serving boot files to the rack: {} ({bytes} bytes, sha256 checked)",
                    names.join(", ")
                ));
                me.boot.set(Boot::Ready(Arc::new(files)));
            }
            Err(e) => {
                say(&format!(
                    "not serving boot files (the rack boots from the primary): {e}"
                ));
                me.boot.set(Boot::Failed(e.to_string()));
            }
        })
    }
}

impl Relay {
    /// What this relay has of the boot files now.
    pub fn boot_files(&self) -> Boot {
        self.boot.get()
    }
}

/// The relay's answer for tree path `path` (`boot/…`): the file's bytes (ranges too), or
/// 503 while they are not here, 404 for a file this relay does not serve.
pub(super) fn answer(relay: &Relay, req: &Request, path: &str, guard: InFlight) -> Response {
    let files = match relay.boot.get() {
        Boot::Ready(files) => files,
        Boot::Off => return text(404, "no boot files on this relay\n".into(), guard),
        Boot::Fetching => {
            return text(503, "boot files not here yet\n".into(), guard)
                .with_header("Retry-After", "1")
        }
        Boot::Failed(why) => return text(503, format!("no boot files here: {why}\n"), guard),
    };
    let Some(data) = files.get(path).cloned() else {
        return text(404, format!("{path}: not a boot file here\n"), guard);
    };
    serve_range(req.header("Range"), data.len() as u64, move |span| {
        // serve_range gives a span inside the body: start + len <= total.
        let at = usize::try_from(span.start).unwrap_or(usize::MAX);
        let len = usize::try_from(span.len).unwrap_or(0);
        Ok(Box::new(Slice {
            end: at.saturating_add(len).min(data.len()),
            data,
            at,
            _in_flight: guard,
        }))
    })
}

/// A short text answer that keeps its request in flight until written.
fn text(status: u16, text: String, guard: InFlight) -> Response {
    let len = text.len();
    Response::stream(
        status,
        Box::new(Slice {
            data: Arc::new(text.into_bytes()),
            at: 0,
            end: len,
            _in_flight: guard,
        }),
        len as u64,
    )
}

/// Bytes `at..end` of `data`, keeping the request in flight until dropped.
struct Slice {
    data: Arc<Vec<u8>>,
    at: usize,
    end: usize,
    _in_flight: InFlight,
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.data.get(self.at..self.end).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netboot_proto::bootfiles::{BootFile, INITRD, KERNEL, VERSION};
    use std::path::Path;

    /// A primary on 127.0.0.1 serving `root`; its base URL.
    fn primary(root: &Path) -> String {
        let bound = imgtool::serve::bind(imgtool::serve::ServeOptions {
            roots: vec![root.to_path_buf()],
            listen: "127.0.0.1:0".into(),
            max_connections: 16,
        })
        .unwrap();
        let port = bound.addr().unwrap().port();
        std::thread::spawn(move || bound.run());
        format!("http://127.0.0.1:{port}")
    }

    /// Writes `files` under `root` and the manifest describing `described` (path, bytes).
    fn tree(root: &Path, files: &[(&str, &[u8])], described: &[(&str, &[u8])]) {
        for (p, b) in files {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), b).unwrap();
        }
        let m = BootFiles {
            version: VERSION,
            files: described
                .iter()
                .map(|(p, b)| BootFile {
                    path: p.to_string(),
                    size: b.len() as u64,
                    sha256: hex::encode(Sha256::digest(b)),
                })
                .collect(),
        };
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join(FILE), serde_json::to_vec(&m).unwrap()).unwrap();
    }

    /// `GET path` from the relay at `addr` with an optional range: (status, body).
    fn get(addr: std::net::SocketAddr, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
        let mut r = ureq::get(&format!("http://{addr}{path}"));
        if let Some(range) = range {
            r = r.set("Range", range);
        }
        let resp = match r.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let status = resp.status();
        let mut body = vec![];
        resp.into_reader().read_to_end(&mut body).unwrap();
        (status, body)
    }

    #[test]
    fn a_secondary_serves_exactly_the_primarys_checked_boot_files() {
        let dir = tempfile::tempdir().unwrap();
        let kernel: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let files: &[(&str, &[u8])] = &[(KERNEL, &kernel), (INITRD, b"initrd bytes")];
        tree(dir.path(), files, files);
        let server = primary(dir.path());
        let relay = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let addr = relay.serve("127.0.0.1:0").unwrap();
        // Not a secondary: nothing under /boot.
        assert_eq!(get(addr, "/boot/vmlinuz", None).0, 404);
        // Being fetched: 503 at once, so iPXE goes to the primary without waiting.
        relay.boot.set(Boot::Fetching);
        assert_eq!(get(addr, "/boot/vmlinuz", None).0, 503);
        let (tx, rx) = std::sync::mpsc::channel();
        relay
            .serve_boot_files(&server, Box::new(move |l| tx.send(l.to_string()).unwrap()))
            .join()
            .unwrap();
        let line = rx.recv().unwrap();
        assert!(line.contains("boot/initrd.img, boot/vmlinuz"), "{line}");
        assert_eq!(get(addr, "/boot/vmlinuz", None), (200, kernel.clone()));
        assert_eq!(
            get(addr, "/boot/initrd.img", None),
            (200, b"initrd bytes".to_vec())
        );
        assert_eq!(
            get(addr, "/boot/vmlinuz", Some("bytes=10-19")),
            (206, kernel[10..20].to_vec())
        );
        assert_eq!(get(addr, "/boot/vsmp", None).0, 404);
        assert_eq!(get(addr, "/boot/../etc/bootfiles.json", None).0, 404);
    }

    #[test]
    fn a_file_that_differs_from_the_manifest_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        // The primary's kernel changed after the manifest was written.
        tree(
            dir.path(),
            &[(KERNEL, b"tampered"), (INITRD, b"i")],
            &[(KERNEL, b"original"), (INITRD, b"i")],
        );
        let e = fetch(&primary(dir.path())).unwrap_err();
        assert!(matches!(e, FetchError::Hash { .. }), "{e}");
        // Longer than the manifest says: refused after size + 1 bytes, not read whole.
        tree(
            dir.path(),
            &[(KERNEL, b"a longer kernel")],
            &[(KERNEL, b"short")],
        );
        let e = fetch(&primary(dir.path())).unwrap_err();
        assert!(matches!(e, FetchError::TooLong { limit: 5, .. }), "{e}");
        // Shorter.
        tree(dir.path(), &[(KERNEL, b"k")], &[(KERNEL, b"kk")]);
        let e = fetch(&primary(dir.path())).unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::Size {
                    got: 1,
                    want: 2,
                    ..
                }
            ),
            "{e}"
        );
        // A relay whose fetch failed answers 503 and says why.
        let relay = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let addr = relay.serve("127.0.0.1:0").unwrap();
        relay
            .serve_boot_files(&primary(dir.path()), Box::new(|_| {}))
            .join()
            .unwrap();
        let (status, body) = get(addr, "/boot/vmlinuz", None);
        assert_eq!(status, 503);
        assert!(String::from_utf8_lossy(&body).contains("manifest says"));
    }

    #[test]
    fn a_hostile_or_missing_manifest_fetches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let server = primary(dir.path());
        assert!(matches!(fetch(&server), Err(FetchError::Missing { .. })));
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join(FILE),
            r#"{"version": 1, "files": [{"path": "etc/shadow", "size": 1, "sha256": ""}]}"#,
        )
        .unwrap();
        let e = fetch(&server).unwrap_err().to_string();
        assert!(e.contains("not one of"), "{e}");
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        std::fs::write(dir.path().join(FILE), big).unwrap();
        let e = fetch(&server).unwrap_err();
        assert!(matches!(e, FetchError::TooLong { .. }), "{e}");
    }
}
