//! Boot files from the rack (the seed's TFTP root copied to each secondary's ramdrive):
//! an entity's secondary fetches the tree's boot files (kernel, initrd, vSMP loader) once
//! into RAM — from its peer secondaries ([`Sources`]: the boot-file tree of its node
//! plan's `boot_peers`), else from the primary — checks each against the primary's
//! `etc/bootfiles.json` (size and sha256, [`netboot_proto::bootfiles`]), and serves them
//! on its relay at their tree paths (`/boot/vmlinuz`, `/boot/initrd.img`, `/boot/vsmp`),
//! where its entity's iPXE scripts and its child secondaries try them before the
//! primary's.
//!
//! What it owns: [`BootStore`] (what is here: fetching, ready, or why not), [`fetch`]
//! (the bounded, checked download and the peer rules) and [`answer`] (the relay's route
//! for `/boot/…`). Until the files are here — or when fetching them failed — a request is
//! answered `503` at once (with `Retry-After` while fetching: a child secondary polls;
//! after a failure without: it moves on): the node's iPXE then loads them from the
//! primary without waiting out its timeout. Memory: the listed files' bytes, at most
//! [`MAX_TOTAL_BYTES`] (the manifest's bound), held while the relay lives; a node that
//! must know it first (a diskless node's memory check) reads the manifest before the
//! files ([`Relay::prepare_boot_files`], then [`BootDuty::start`]).

use super::{InFlight, Relay};
use imgtool::httpd::{serve_range, Request, Response};
use netboot_proto::bootfiles::{BootFile, BootFiles, BootFilesError, FILE, MAX_MANIFEST_BYTES};
pub use netboot_proto::bootfiles::{MAX_FILE_BYTES, MAX_TOTAL_BYTES};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
/// image's bookkeeping), and when one was last asked for.
#[derive(Debug, Default)]
pub struct BootStore(Mutex<Boot>, Mutex<Option<Instant>>);

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

    /// A boot file was asked for (or its answer ended) now.
    pub fn asked(&self) {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// When a boot file was last asked for, if ever.
    pub fn last_asked(&self) -> Option<Instant> {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Why a request failed, without the URL ureq repeats (the error names it once).
fn why(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Transport(t) => match t.message() {
            Some(m) => format!("{}: {m}", t.kind()),
            None => t.kind().to_string(),
        },
        ureq::Error::Status(code, _) => format!("answered {code}"),
    }
}

fn http_error(url: &str, why: String) -> FetchError {
    FetchError::Http {
        url: url.into(),
        why,
    }
}

/// The HTTP client of boot-file fetches: no redirects, bounded waits.
fn client() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .build()
}

/// How long one request for a body of at most `limit` bytes may take in all: the frame
/// grace plus the length at the slowest pace the agent accepts from an upstream
/// (`imgtool::limits`). The read timeout bounds only silence; without this a hostile
/// peer or primary sending a byte just inside every read timeout would hold the fetch
/// (and its rack's boot files) for days.
fn deadline_for(limit: u64) -> Duration {
    imgtool::limits::FRAME_GRACE + Duration::from_secs(limit / imgtool::limits::MIN_FRAME_RATE)
}

/// `url`'s body, at most `limit` bytes (more is an error, not a cut), tried
/// [`FETCH_ATTEMPTS`] times while the failure is the network's.
fn get_bounded(url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let agent = client();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match get_once(&agent, url, limit, deadline_for(limit)) {
            Err(e) if e.transient() && attempt < FETCH_ATTEMPTS => {
                std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
            }
            r => return r,
        }
    }
}

fn get_once(
    agent: &ureq::Agent,
    url: &str,
    limit: u64,
    deadline: Duration,
) -> Result<Vec<u8>, FetchError> {
    match agent.get(url).timeout(deadline).call() {
        Ok(r) if r.status() == 200 => read_body(url, r, limit),
        Ok(r) => Err(http_error(url, format!("answered {}", r.status()))),
        Err(ureq::Error::Status(404, _)) => Err(FetchError::Missing { url: url.into() }),
        Err(e) => Err(http_error(url, why(&e))),
    }
}

/// The body of `resp`, at most `limit` bytes (more is an error, not a cut).
fn read_body(url: &str, resp: ureq::Response, limit: u64) -> Result<Vec<u8>, FetchError> {
    let too_long = || FetchError::TooLong {
        url: url.into(),
        limit,
    };
    let declared = resp
        .header("Content-Length")
        .and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_long());
    }
    // Exactly as large as expected (a listed file's checked size, which the diskless
    // memory check counted): grown by doubling, a 129 MiB file would keep 256 MiB.
    // (read_to_end probes for the end without growing a full buffer.)
    let expected = declared.unwrap_or(limit).min(limit);
    let mut body = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    resp.into_reader()
        .take(limit.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|e| http_error(url, format!("reading: {e}")))?;
    if body.len() as u64 > limit {
        return Err(too_long());
    }
    Ok(body)
}

/// Where a secondary takes the boot files from: its peer secondaries first, nearest first
/// (`netboot_proto::plan::boot_peer_indexes`), then the primary. The manifest always
/// comes from the primary (it is small, and it is what every file is checked against,
/// whoever served it).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The primary's base URL.
    pub primary: String,
    /// Peer secondaries, nearest first: (node name, base URL `http://ip:port`).
    pub peers: Vec<(String, String)>,
    /// How long, from the start, a peer that is still fetching (`503` with
    /// `Retry-After`) or not up yet is polled before the next source is tried: its peers
    /// boot within the plan's boot window, so the agent passes its boot grace (the window
    /// + 5 s, as for an image upstream); `boot-files --window` sets it directly.
    pub window: Duration,
}

impl Sources {
    /// The primary alone.
    pub fn primary(server: &str) -> Sources {
        Sources {
            primary: server.to_string(),
            ..Sources::default()
        }
    }
}

/// How often a peer that is still fetching is asked again.
pub const PEER_POLL: Duration = Duration::from_millis(200);

/// What a secondary fetched: tree path → bytes, and who served them (peer names or
/// `the primary`, in the order first used).
#[derive(Debug, Default)]
pub struct Fetched {
    pub files: HashMap<String, Arc<Vec<u8>>>,
    pub from: Vec<String>,
}

/// A file's bytes as the manifest says: its size, then its sha256.
fn check(url: &str, body: &[u8], f: &BootFile) -> Result<(), FetchError> {
    if body.len() as u64 != f.size {
        return Err(FetchError::Size {
            url: url.into(),
            got: body.len() as u64,
            want: f.size,
        });
    }
    let got = hex::encode(Sha256::digest(body));
    if got != f.sha256 {
        return Err(FetchError::Hash {
            url: url.into(),
            got,
            want: f.sha256.clone(),
        });
    }
    Ok(())
}

/// The boot files the primary lists in its manifest, each fetched once — from the first
/// peer of `src` that serves it, else from the primary — and checked (size, sha256)
/// whatever served it. A peer that refuses, is silent, serves other bytes, or is still
/// fetching when the window has passed is not asked again (`say` names it and why).
pub fn fetch(src: &Sources, say: &dyn Fn(&str)) -> Result<Fetched, FetchError> {
    let listed = manifest(&src.primary)?;
    fetch_listed(src, &listed, say)
}

/// The primary's boot-file manifest (`etc/bootfiles.json`): at most
/// [`MAX_MANIFEST_BYTES`], checked by its rules (paths, sizes, hashes; the total at most
/// [`MAX_TOTAL_BYTES`]).
pub fn manifest(primary: &str) -> Result<BootFiles, FetchError> {
    let url = format!("{}/{FILE}", primary.trim_end_matches('/'));
    let text = get_bounded(&url, MAX_MANIFEST_BYTES)?;
    BootFiles::from_json(&text).map_err(|source| FetchError::Manifest { url, source })
}

/// The files `manifest` lists (read from `src`'s primary), fetched as [`fetch`] does.
pub fn fetch_listed(
    src: &Sources,
    manifest: &BootFiles,
    say: &dyn Fn(&str),
) -> Result<Fetched, FetchError> {
    let base = src.primary.trim_end_matches('/');
    let mut peers = Peers::new(src);
    let mut out = Fetched::default();
    for f in &manifest.files {
        let (body, who) = match peers.take(f, say) {
            Some(got) => got,
            None => {
                let url = format!("{base}/{}", f.path);
                let body = get_bounded(&url, f.size)?;
                check(&url, &body, f)?;
                (body, "the primary".to_string())
            }
        };
        if !out.from.contains(&who) {
            out.from.push(who);
        }
        out.files.insert(f.path.clone(), Arc::new(body));
    }
    Ok(out)
}

/// The peers of a fetch, each asked until it fails once. A peer that has never
/// answered (refused, or silent: it may not have booted yet — the secondaries of a storm
/// start within the boot window of each other, in any order) is asked again every
/// [`PEER_POLL`] until the window ends, as one still fetching (`503`) is; one that
/// answered and then fails, or serves other bytes, is passed over at once. The window is
/// one deadline for the whole fetch, so a list of dead peers costs it once.
struct Peers<'a> {
    list: &'a [(String, String)],
    alive: Vec<bool>,
    /// Has answered at least once (served a file, or 503 while fetching).
    answered: Vec<bool>,
    deadline: Instant,
    window: Duration,
    agent: ureq::Agent,
}

/// One answer of a peer.
enum PeerAnswer {
    Body(Vec<u8>),
    /// `503` with `Retry-After`: it is fetching them itself.
    NotYet,
    /// No connection (refused, timed out): not up (yet?).
    Unreachable(FetchError),
    Failed(FetchError),
}

impl<'a> Peers<'a> {
    fn new(src: &'a Sources) -> Peers<'a> {
        Peers {
            list: &src.peers,
            alive: vec![true; src.peers.len()],
            answered: vec![false; src.peers.len()],
            deadline: Instant::now() + src.window,
            window: src.window,
            agent: client(),
        }
    }

    /// File `f` from the first live peer that serves its bytes: (bytes, peer name).
    fn take(&mut self, f: &BootFile, say: &dyn Fn(&str)) -> Option<(Vec<u8>, String)> {
        for (i, (name, base)) in self.list.iter().enumerate() {
            if !self.alive[i] {
                continue;
            }
            let url = format!("{}/{}", base.trim_end_matches('/'), f.path);
            match self.poll(i, &url, f.size) {
                Ok(body) => match check(&url, &body, f) {
                    Ok(()) => {
                        self.answered[i] = true;
                        return Some((body, name.clone()));
                    }
                    Err(e) => say(&format!(
                        "boot files: peer {name} served bytes that are not the manifest's ({e}); taking them from the next source"
                    )),
                },
                Err(why) => say(&format!(
                    "boot files: peer {name}: {why}; taking them from the next source"
                )),
            }
            self.alive[i] = false;
        }
        None
    }

    /// `url`'s body, polling while the peer is still fetching (or has never answered)
    /// and the window lasts.
    fn poll(&mut self, i: usize, url: &str, limit: u64) -> Result<Vec<u8>, String> {
        let window = self.window.as_secs();
        loop {
            let within = Instant::now() < self.deadline;
            match peer_once(&self.agent, url, limit, deadline_for(limit)) {
                PeerAnswer::Body(b) => return Ok(b),
                PeerAnswer::Failed(e) => return Err(e.to_string()),
                PeerAnswer::NotYet if within => self.answered[i] = true,
                PeerAnswer::Unreachable(_) if within && !self.answered[i] => {}
                PeerAnswer::NotYet => {
                    return Err(format!(
                        "{url}: still fetching them when the boot window ({window} s) ended"
                    ))
                }
                PeerAnswer::Unreachable(e) if self.answered[i] => return Err(e.to_string()),
                PeerAnswer::Unreachable(e) => {
                    return Err(format!(
                        "{e} (no answer within the boot window, {window} s)"
                    ))
                }
            }
            std::thread::sleep(PEER_POLL);
        }
    }
}

/// One request to a peer: no retry (the next source is the retry).
fn peer_once(agent: &ureq::Agent, url: &str, limit: u64, deadline: Duration) -> PeerAnswer {
    match agent.get(url).timeout(deadline).call() {
        Ok(r) if r.status() == 200 => match read_body(url, r, limit) {
            Ok(b) => PeerAnswer::Body(b),
            Err(e) => PeerAnswer::Failed(e),
        },
        Err(ureq::Error::Status(503, r)) if r.header("Retry-After").is_some() => PeerAnswer::NotYet,
        Ok(r) => PeerAnswer::Failed(http_error(url, format!("answered {}", r.status()))),
        Err(e @ ureq::Error::Transport(_)) => PeerAnswer::Unreachable(http_error(url, why(&e))),
        Err(e) => PeerAnswer::Failed(http_error(url, why(&e))),
    }
}

impl Relay {
    /// Fetches the boot files from `src` (peers, then the primary) in a background
    /// thread and serves them from then on; `say` gets one line per peer passed over and
    /// one when they are here (and from whom) or why not. Until then, requests for them
    /// are answered 503 with `Retry-After` (a peer secondary polls; iPXE goes on).
    pub fn serve_boot_files(
        self: &Arc<Self>,
        src: Sources,
        say: Box<dyn Fn(&str) + Send>,
    ) -> std::thread::JoinHandle<()> {
        self.boot.set(Boot::Fetching);
        let me = self.clone();
        std::thread::spawn(move || me.take_boot_files(fetch(&src, &*say), &*say))
    }

    /// Reads the primary's boot-file manifest now (the relay answers boot-file requests
    /// `503` with `Retry-After` meanwhile, so peers wait rather than pass over it): what
    /// this node then holds in RAM for them is the listed files' bytes
    /// ([`BootDuty::bytes`]), known before a diskless node checks its memory. Without a
    /// usable manifest (missing, refused, unreachable) it serves none and keeps nothing
    /// for them: `say` gets why, and the relay answers `503` without `Retry-After` from
    /// then on (peers pass over it at once, its rack boots from the primary).
    pub fn prepare_boot_files(
        self: &Arc<Self>,
        src: Sources,
        say: &dyn Fn(&str),
    ) -> Option<BootDuty> {
        self.boot.set(Boot::Fetching);
        match manifest(&src.primary) {
            Ok(listed) => Some(BootDuty {
                src,
                listed,
                relay: Some(self.clone()),
            }),
            Err(e) => {
                say(&format!(
                    "not serving boot files (the rack boots from the primary; no memory kept for them): {e}"
                ));
                self.boot.set(Boot::Failed(e.to_string()));
                None
            }
        }
    }

    /// What a fetch gave: served from now on (then said), or why not (said, and `503`).
    fn take_boot_files(&self, got: Result<Fetched, FetchError>, say: &dyn Fn(&str)) {
        match got {
            Ok(got) => {
                let bytes: usize = got.files.values().map(|f| f.len()).sum();
                let mut names: Vec<String> = got.files.keys().cloned().collect();
                names.sort_unstable();
                // Served before it is said: whoever reads the line may ask at once.
                self.boot.set(Boot::Ready(Arc::new(got.files)));
                say(&format!(
                    "serving boot files to the rack: {} ({bytes} bytes, sha256 checked; from {})",
                    names.join(", "),
                    got.from.join(", ")
                ));
            }
            Err(e) => {
                say(&format!(
                    "not serving boot files (the rack boots from the primary): {e}"
                ));
                self.boot.set(Boot::Failed(e.to_string()));
            }
        }
    }
}

/// A secondary's boot files once their manifest is read ([`Relay::prepare_boot_files`]):
/// how much RAM they take, and the fetch to start.
/// Dropped without [`BootDuty::start`] (the node stopped on an error first), it does
/// what [`BootDuty::abandon`] does: peers polling the relay pass over it at once.
pub struct BootDuty {
    src: Sources,
    listed: BootFiles,
    /// The relay whose boot state this duty settles (taken by `start` or `abandon`).
    relay: Option<Arc<Relay>>,
}

impl std::fmt::Debug for BootDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootDuty")
            .field("src", &self.src)
            .field("listed", &self.listed)
            .finish()
    }
}

impl Drop for BootDuty {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.boot.set(Boot::Failed(
                "this node stopped before it fetched them".into(),
            ));
        }
    }
}

impl BootDuty {
    /// The bytes the relay will hold for them: the listed files' sizes (each file is
    /// refused unless it has exactly its size), at most [`MAX_TOTAL_BYTES`].
    pub fn bytes(&self) -> u64 {
        self.listed.total_bytes().min(MAX_TOTAL_BYTES)
    }

    /// Not fetched after all (`why`: the node stops, e.g. a diskless boot refused for
    /// memory): the relay answers `503` without `Retry-After` from now on, so peers
    /// polling it pass over it at once instead of waiting out their window.
    pub fn abandon(mut self, relay: &Relay, why: &str) {
        self.relay = None;
        relay.boot.set(Boot::Failed(why.to_string()));
    }

    /// Fetches the listed files (peers, then the primary) in a background thread; the
    /// relay serves them from then on. `say` as for [`Relay::serve_boot_files`].
    pub fn start(
        mut self,
        relay: &Arc<Relay>,
        say: Box<dyn Fn(&str) + Send>,
    ) -> std::thread::JoinHandle<()> {
        self.relay = None;
        relay.boot.set(Boot::Fetching);
        let me = relay.clone();
        std::thread::spawn(move || {
            me.take_boot_files(fetch_listed(&self.src, &self.listed, &*say), &*say)
        })
    }
}

impl Relay {
    /// It will serve boot files (its entity's secondary): from now on peers asking are
    /// told to retry, not that there are none. Called before it listens, so no request
    /// meets the `404` of a relay without boot files in between.
    pub fn expect_boot_files(&self) {
        self.boot.set(Boot::Fetching);
    }

    /// What this relay has of the boot files now.
    pub fn boot_files(&self) -> Boot {
        self.boot.get()
    }
}

/// The relay's answer for tree path `path` (`boot/…`): the file's bytes (ranges too), or
/// 503 while they are not here, 404 for a file this relay does not serve.
pub(super) fn answer(relay: &Relay, req: &Request, path: &str, guard: InFlight) -> Response {
    relay.boot.asked();
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
    use netboot_proto::bootfiles::{INITRD, KERNEL, VERSION};
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
            .serve_boot_files(
                Sources::primary(&server),
                Box::new(move |l| tx.send(l.to_string()).unwrap()),
            )
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
        let e = fetch(&Sources::primary(&primary(dir.path())), &|_| {}).unwrap_err();
        assert!(matches!(e, FetchError::Hash { .. }), "{e}");
        // Longer than the manifest says: refused after size + 1 bytes, not read whole.
        tree(
            dir.path(),
            &[(KERNEL, b"a longer kernel")],
            &[(KERNEL, b"short")],
        );
        let e = fetch(&Sources::primary(&primary(dir.path())), &|_| {}).unwrap_err();
        assert!(matches!(e, FetchError::TooLong { limit: 5, .. }), "{e}");
        // Shorter.
        tree(dir.path(), &[(KERNEL, b"k")], &[(KERNEL, b"kk")]);
        let e = fetch(&Sources::primary(&primary(dir.path())), &|_| {}).unwrap_err();
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
            .serve_boot_files(Sources::primary(&primary(dir.path())), Box::new(|_| {}))
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
        assert!(matches!(
            fetch(&Sources::primary(&server), &|_| {}),
            Err(FetchError::Missing { .. })
        ));
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join(FILE),
            r#"{"version": 1, "files": [{"path": "etc/shadow", "size": 1, "sha256": ""}]}"#,
        )
        .unwrap();
        let e = fetch(&Sources::primary(&server), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one of"), "{e}");
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        std::fs::write(dir.path().join(FILE), big).unwrap();
        let e = fetch(&Sources::primary(&server), &|_| {}).unwrap_err();
        assert!(matches!(e, FetchError::TooLong { .. }), "{e}");
    }

    /// A hostile peer that answers 200 and then sends one byte a second (never silent
    /// for the read timeout) is cut at the request's deadline, not followed for as long
    /// as it likes; and the deadline for the largest boot file stays bounded.
    #[test]
    fn a_peer_trickling_bytes_is_cut_at_the_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/boot/vmlinuz", l.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                use std::io::Write;
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
                for _ in 0..1000 {
                    if c.write_all(b"x").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        });
        let t = Instant::now();
        let answer = peer_once(&client(), &url, 1000, Duration::from_secs(2));
        assert!(
            matches!(answer, PeerAnswer::Failed(_)),
            "the trickle was taken"
        );
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
        let most = deadline_for(MAX_FILE_BYTES);
        assert!(most > imgtool::limits::FRAME_GRACE && most < Duration::from_secs(3 * 3600));
    }

    /// A relay serving the boot files of `root` (fetched from a primary over it); its
    /// base URL.
    fn ready_peer(root: &Path) -> (Arc<Relay>, String) {
        let relay = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let addr = relay.serve("127.0.0.1:0").unwrap();
        relay
            .serve_boot_files(Sources::primary(&primary(root)), Box::new(|_| {}))
            .join()
            .unwrap();
        assert!(matches!(relay.boot_files(), Boot::Ready(_)));
        (relay, format!("http://{addr}"))
    }

    /// `fetch` from `peers` then `server`, with `window`: what it got and what it said.
    fn fetch_via(
        server: &str,
        peers: &[(&str, &str)],
        window: Duration,
    ) -> (Result<Fetched, FetchError>, Vec<String>) {
        let said = Mutex::new(vec![]);
        let src = Sources {
            primary: server.into(),
            peers: peers
                .iter()
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .collect(),
            window,
        };
        let got = fetch(&src, &|l| said.lock().unwrap().push(l.to_string()));
        (got, said.into_inner().unwrap())
    }

    #[test]
    fn a_secondary_takes_the_files_from_its_first_serving_peer() {
        let dir = tempfile::tempdir().unwrap();
        let kernel: Vec<u8> = (0..200_000u32).map(|i| (i % 249) as u8).collect();
        let files: &[(&str, &[u8])] = &[(KERNEL, &kernel), (INITRD, b"initrd")];
        tree(dir.path(), files, files);
        let server = primary(dir.path());
        let (_p1, p1) = ready_peer(dir.path());
        // A peer that is down (nothing listens) is passed over, named; the next serves.
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (got, said) = fetch_via(&server, &[("gone", &down), ("p1", &p1)], Duration::ZERO);
        let got = got.unwrap();
        assert_eq!(got.from, ["p1"], "{said:?}");
        assert_eq!(got.files[KERNEL].as_slice(), kernel.as_slice());
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("peer gone") && said[0].contains("next source"),
            "{said:?}"
        );
        // A peer whose own fetch failed (503 without Retry-After) is passed over at once,
        // however long the window; a peer that is no secondary (404) too.
        let failed = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let failed_addr = failed.serve("127.0.0.1:0").unwrap();
        failed.boot.set(Boot::Failed("its primary was down".into()));
        let off = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let off_addr = off.serve("127.0.0.1:0").unwrap();
        let (got, said) = fetch_via(
            &server,
            &[
                ("failed", &format!("http://{failed_addr}")),
                ("off", &format!("http://{off_addr}")),
            ],
            Duration::from_secs(3600),
        );
        assert_eq!(got.unwrap().from, ["the primary"]);
        assert!(
            said[0].contains("peer failed") && said[0].contains("503"),
            "{said:?}"
        );
        assert!(
            said[1].contains("peer off") && said[1].contains("404"),
            "{said:?}"
        );
    }

    #[test]
    fn a_peers_bad_bytes_are_refused_naming_it_and_taken_from_the_next_source() {
        let good = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[(KERNEL, b"the kernel"), (INITRD, b"the initrd")];
        tree(good.path(), files, files);
        let server = primary(good.path());
        // A peer whose kernel differs (same size, and longer): refused by the primary's
        // manifest, the peer named; the initrd then skips it too.
        let bad = tempfile::tempdir().unwrap();
        tree(
            bad.path(),
            &[(KERNEL, b"THE KERNEL"), (INITRD, b"the initrd")],
            &[],
        );
        let bad_url = primary(bad.path());
        let (_p2, p2) = ready_peer(good.path());
        let (got, said) = fetch_via(&server, &[("evil", &bad_url), ("p2", &p2)], Duration::ZERO);
        let got = got.unwrap();
        assert_eq!(got.from, ["p2"], "{said:?}");
        assert_eq!(got.files[KERNEL].as_slice(), b"the kernel");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("peer evil served bytes that are not the manifest's")
                && said[0].contains("sha256"),
            "{said:?}"
        );
        tree(bad.path(), &[(KERNEL, b"a much longer kernel")], &[]);
        let (got, said) = fetch_via(&server, &[("evil", &bad_url)], Duration::ZERO);
        assert_eq!(got.unwrap().from, ["the primary"]);
        assert!(
            said[0].contains("peer evil") && said[0].contains("more than 10 bytes"),
            "{said:?}"
        );
    }

    #[test]
    fn a_peer_still_fetching_is_polled_within_the_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[(KERNEL, b"k"), (INITRD, b"i")];
        tree(dir.path(), files, files);
        let server = primary(dir.path());
        let peer = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let addr = peer.serve("127.0.0.1:0").unwrap();
        let url = format!("http://{addr}");
        peer.boot.set(Boot::Fetching);
        // Window over: the primary, saying why.
        let (got, said) = fetch_via(&server, &[("slow", &url)], Duration::ZERO);
        assert_eq!(got.unwrap().from, ["the primary"]);
        assert!(
            said[0].contains("still fetching them when the boot window (0 s) ended"),
            "{said:?}"
        );
        // Within the window: polled until it serves (it fetches from the primary here).
        let (tx, rx) = std::sync::mpsc::channel();
        let fetcher = std::thread::spawn({
            let (server, url) = (server.clone(), url.clone());
            move || {
                let got = fetch_via(&server, &[("slow", &url)], Duration::from_secs(60));
                tx.send(()).unwrap();
                got
            }
        });
        // Still waiting while the peer fetches (no answer within a few polls).
        assert!(rx.recv_timeout(PEER_POLL * 3).is_err());
        peer.serve_boot_files(Sources::primary(&server), Box::new(|_| {}))
            .join()
            .unwrap();
        let (got, said) = fetcher.join().unwrap();
        assert_eq!(got.unwrap().from, ["slow"], "{said:?}");
        assert!(said.is_empty(), "{said:?}");
    }

    #[test]
    fn a_peer_not_up_yet_is_waited_for_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[(KERNEL, b"k"), (INITRD, b"i")];
        tree(dir.path(), files, files);
        let server = primary(dir.path());
        // A port nothing listens on yet: the peer's agent starts later.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let fetcher = std::thread::spawn({
            let (server, url) = (server.clone(), format!("http://{addr}"));
            move || fetch_via(&server, &[("late", &url)], Duration::from_secs(60))
        });
        std::thread::sleep(PEER_POLL * 3);
        let peer = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        peer.serve(&addr.to_string()).unwrap();
        peer.serve_boot_files(Sources::primary(&server), Box::new(|_| {}))
            .join()
            .unwrap();
        let (got, said) = fetcher.join().unwrap();
        assert_eq!(got.unwrap().from, ["late"], "{said:?}");
    }

    #[test]
    fn the_serving_line_is_said_once_the_files_are_served() {
        // The bench and the tests start the rack's nodes on this line: a request right
        // after it must not get 503 (it did: the line came before the files were set).
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[(KERNEL, b"k"), (INITRD, b"i")];
        tree(dir.path(), files, files);
        let relay = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        let seen = Arc::new(Mutex::new(vec![]));
        let (me, log) = (relay.clone(), seen.clone());
        relay
            .serve_boot_files(
                Sources::primary(&primary(dir.path())),
                Box::new(move |l| {
                    let ready = matches!(me.boot_files(), Boot::Ready(_));
                    log.lock().unwrap().push((l.to_string(), ready));
                }),
            )
            .join()
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].0.starts_with("serving boot files") && seen[0].1,
            "{seen:?}"
        );
    }
}
