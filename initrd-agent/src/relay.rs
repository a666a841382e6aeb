//! The relay: a node with downstream nodes serves the primary's URL space for its image
//! (`/<image>/manifest`, `/<image>/layout`, payload ranges on frame boundaries: one frame,
//! or a stream of them) from what it has verified. A chunk is served as soon as its
//! sha256 matched (cut-through); a stream reaching a chunk not yet there waits for it.
//! Memory is bounded: frames are cached up to a budget, and an evicted frame is re-read
//! from the local disk (the store) and re-compressed — zstd is deterministic, so the frame
//! is byte-identical, which the manifest's `frame_sha256` confirms before anything is
//! sent.
//!
//! Waiting is bounded: a request for something not here yet (the image's files, the next
//! chunk of a stream) takes one of [`MAX_WAITING`] waiting places, at most
//! [`MAX_WAITING_PER_CLIENT`] per address, for at most [`RELAY_WAIT`]; without a free
//! place it is answered 503 at once (a stream ends early), and the downstream retries or
//! moves up its chain. So a few clients asking for chunks that are not here cannot hold
//! the relay. Connections, head and time limits are [`imgtool::httpd`]'s.

use imgtool::httpd::{Limits, Request, Response};
use imgtool::manifest::{Image, Region};
use imgtool::serve::parse_range;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a request waits for something this relay does not have yet before it is
/// answered 503 (or its stream ends early). About the downstream's own stall limit
/// (`--stall`, 20 s by default): after that the downstream has given up on this relay
/// anyway, so a longer wait only holds a connection. (It was 120 s.)
pub const RELAY_WAIT: Duration = Duration::from_secs(30);

/// Requests from one address that may wait at once. A downstream node streams one range
/// at a time; four leave room for its manifest and layout and for a stream it reopened
/// while the broken one still waits.
pub const MAX_WAITING_PER_CLIENT: usize = 4;

/// Requests that may wait at once, from all addresses: more than the nodes of a rack in
/// `fanout` (all waiting for the next chunk at the same moment is normal there).
pub const MAX_WAITING: usize = 128;

/// Open connections at most (half of them at most can be waiting).
pub const RELAY_MAX_CONNECTIONS: usize = 256;

type Key = (usize, usize);

struct State {
    have: HashSet<Key>,
    frames: HashMap<Key, Arc<Vec<u8>>>,
    order: VecDeque<Key>,
    bytes: usize,
    last_request: Instant,
    /// Requests being answered right now (a slow transfer is not idleness).
    active: usize,
    /// Distinct chunks served to each downstream address.
    clients: HashMap<IpAddr, HashSet<Key>>,
    served_bytes: u64,
    /// Requests waiting for something not here yet, per client and in all.
    waiting: HashMap<IpAddr, usize>,
    waiting_total: usize,
}

/// What the relay knows of its image once its own upstream answered.
struct Info {
    regions: Vec<Region>,
    level: i32,
    chunk_size: u64,
}

pub struct Relay {
    image_name: String,
    /// `manifest` and `layout` as fetched, served before they are parsed here.
    files: Mutex<Option<Arc<imgtool::manifest::ImageFiles>>>,
    /// The image's `signature` file when this node fetched one (set before `files`).
    signature: Mutex<Option<Vec<u8>>>,
    info: Mutex<Option<Arc<Info>>>,
    /// Disk byte offset of each region on the local target (for re-reads).
    bases: Mutex<HashMap<String, u64>>,
    target: std::path::PathBuf,
    budget: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl Relay {
    /// A relay for `image_name` that listens before it has the image: early requests wait.
    pub fn new(image_name: &str, target: &std::path::Path, budget: usize) -> Arc<Relay> {
        Arc::new(Relay {
            image_name: image_name.to_string(),
            files: Mutex::new(None),
            signature: Mutex::new(None),
            info: Mutex::new(None),
            bases: Mutex::new(HashMap::new()),
            target: target.to_path_buf(),
            budget,
            state: Mutex::new(State {
                have: HashSet::new(),
                frames: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                last_request: Instant::now(),
                active: 0,
                clients: HashMap::new(),
                served_bytes: 0,
                waiting: HashMap::new(),
                waiting_total: 0,
            }),
            cv: Condvar::new(),
        })
    }

    /// `manifest` and `layout` were fetched: downstream nodes may have them at once
    /// (they check them themselves), so parsing here is off the chain's critical path.
    pub fn set_files(&self, files: Arc<imgtool::manifest::ImageFiles>) {
        if let Ok(mut f) = self.files.lock() {
            *f = Some(files);
        }
        self.cv.notify_all();
    }

    /// The `signature` file as fetched (call before [`Relay::set_files`]); `None`: this
    /// node has none to pass on, downstream asking for it get 404.
    pub fn set_signature(&self, signature: Option<Vec<u8>>) {
        if let Ok(mut s) = self.signature.lock() {
            *s = signature;
        }
    }

    /// The files, waiting up to [`RELAY_WAIT`] for them (in a waiting place of `client`).
    fn files(&self, client: IpAddr) -> Result<Arc<imgtool::manifest::ImageFiles>, Unavailable> {
        self.wait_set(&self.files, client)
    }

    /// The content of `slot` (filled by `set_files` or `set_image`), waiting up to
    /// [`RELAY_WAIT`] for it in a waiting place of `client`.
    fn wait_set<T>(
        &self,
        slot: &Mutex<Option<Arc<T>>>,
        client: IpAddr,
    ) -> Result<Arc<T>, Unavailable> {
        if let Some(v) = slot.lock().map_err(|_| Unavailable::NotYet)?.as_ref() {
            return Ok(v.clone());
        }
        let _place = self.wait_place(client)?;
        self.wait_filled(slot, RELAY_WAIT)
            .ok_or(Unavailable::NotYet)
    }

    /// Waits up to `wait` until `slot` is filled.
    fn wait_filled<T>(&self, slot: &Mutex<Option<Arc<T>>>, wait: Duration) -> Option<Arc<T>> {
        let deadline = Instant::now() + wait;
        let mut g = slot.lock().ok()?;
        loop {
            if let Some(v) = g.as_ref() {
                return Some(v.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self.cv.wait_timeout(g, deadline - now).ok()?.0;
        }
    }

    /// The image is parsed (after [`Relay::set_files`]): start answering payload ranges.
    pub fn set_image(&self, img: &Image) {
        if let Ok(mut i) = self.info.lock() {
            *i = Some(Arc::new(Info {
                regions: img.manifest.regions.clone(),
                level: img.manifest.level,
                chunk_size: img.manifest.chunk_size,
            }));
        }
        self.cv.notify_all();
    }

    /// The image as parsed here, if it is.
    fn info_now(&self) -> Option<Arc<Info>> {
        self.wait_filled(&self.info, Duration::ZERO)
    }

    /// Takes one of the waiting places for `client`, or says why there is none.
    fn wait_place(&self, client: IpAddr) -> Result<WaitPlace<'_>, Unavailable> {
        let mut s = self.state.lock().map_err(|_| Unavailable::NotYet)?;
        let mine = s.waiting.get(&client).copied().unwrap_or(0);
        if mine >= MAX_WAITING_PER_CLIENT || s.waiting_total >= MAX_WAITING {
            return Err(Unavailable::Busy);
        }
        s.waiting.insert(client, mine + 1);
        s.waiting_total += 1;
        Ok(WaitPlace {
            state: &self.state,
            client,
        })
    }

    pub fn set_base(&self, region: &str, disk_offset: u64) {
        if let Ok(mut b) = self.bases.lock() {
            b.insert(region.to_string(), disk_offset);
        }
    }

    /// A chunk was verified and written: serve it from now on.
    pub fn chunk_done(&self, region: &Region, i: usize, frame: Vec<u8>) {
        let Some(info) = self.info_now() else {
            return;
        };
        let Some(ri) = info.regions.iter().position(|r| r.name == region.name) else {
            return;
        };
        let Ok(mut s) = self.state.lock() else { return };
        s.have.insert((ri, i));
        s.bytes += frame.len();
        s.frames.insert((ri, i), Arc::new(frame));
        s.order.push_back((ri, i));
        // Evict the oldest large frames over budget; small ones (swap header, disk head)
        // may be transformed on disk, so they stay.
        while s.bytes > self.budget {
            let Some(k) = s.order.pop_front() else { break };
            let small = s.frames.get(&k).is_some_and(|f| f.len() < 64 << 10);
            if small {
                s.order.push_back(k);
                if s.order
                    .iter()
                    .all(|k| s.frames.get(k).is_some_and(|f| f.len() < 64 << 10))
                {
                    break;
                }
                continue;
            }
            if let Some(f) = s.frames.remove(&k) {
                s.bytes -= f.len();
            }
        }
        drop(s);
        self.cv.notify_all();
    }

    /// Blocks until the `expected` downstream nodes have each fetched every chunk, or —
    /// for downstream nodes that never came or moved elsewhere — until no request is in
    /// flight and none has come or ended for `idle`. (Send buffers hide the tail of a slow
    /// transfer from the server, so in-flight counting alone is not enough.)
    pub fn wait_downstream(&self, expected: usize, idle: Duration) {
        let total: usize = self
            .info_now()
            .map(|i| i.regions.iter().map(|r| r.chunks.len()).sum())
            .unwrap_or(0);
        loop {
            let (active, since, complete) = self
                .state
                .lock()
                .map(|s| {
                    let complete = s
                        .clients
                        .values()
                        .filter(|c| total > 0 && c.len() >= total)
                        .count();
                    (s.active, s.last_request.elapsed(), complete)
                })
                .unwrap_or((0, idle, 0));
            if active == 0 && expected > 0 && complete >= expected {
                return;
            }
            if active == 0 && since >= idle {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn served_bytes(&self) -> u64 {
        self.state.lock().map(|s| s.served_bytes).unwrap_or(0)
    }

    /// The frame of chunk `k`: cached, or re-read from the disk and re-compressed. A chunk
    /// not here yet is waited for (up to [`RELAY_WAIT`], in a waiting place of `client`).
    fn frame(&self, info: &Info, k: Key, client: IpAddr) -> Result<Arc<Vec<u8>>, String> {
        fn poisoned<T>(_: T) -> String {
            "poisoned".to_string()
        }
        // Declared before the lock guard: dropped after it (its drop takes the lock).
        let mut place = None;
        let mut s = self.state.lock().map_err(poisoned)?;
        let deadline = Instant::now() + RELAY_WAIT;
        while !s.have.contains(&k) {
            if place.is_none() {
                drop(s);
                place = Some(self.wait_place(client).map_err(|u| u.to_string())?);
                s = self.state.lock().map_err(poisoned)?;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("chunk not yet available here; try the next upstream".into());
            }
            s = self.cv.wait_timeout(s, deadline - now).map_err(poisoned)?.0;
        }
        if let Some(f) = s.frames.get(&k) {
            return Ok(f.clone());
        }
        drop(s);
        drop(place);
        let r = &info.regions[k.0];
        let c = &r.chunks[k.1];
        let base = self
            .bases
            .lock()
            .ok()
            .and_then(|b| b.get(&r.name).copied())
            .ok_or(format!("no disk offset for {}", r.name))?;
        let disk = imgtool::disk::Disk::open_ro(&self.target).map_err(|e| e.chain())?;
        let raw = c.read_from(&disk, base).map_err(|e| e.to_string())?;
        let frame = imgtool::capture::compress_chunk(&raw, info.level, info.chunk_size)
            .map_err(|e| e.to_string())?;
        if hex::encode(Sha256::digest(&frame)) != c.frame_sha256 {
            return Err(format!(
                "{} chunk {} changed on this disk since it was cloned",
                r.name, k.1
            ));
        }
        Ok(Arc::new(frame))
    }

    /// Serves on `listen` in background threads; returns the bound address.
    pub fn serve(self: &Arc<Self>, listen: &str) -> anyhow::Result<std::net::SocketAddr> {
        let limits = Limits {
            max_connections: RELAY_MAX_CONNECTIONS,
            max_body: 0,
            ..Limits::default()
        };
        let server = imgtool::httpd::Server::bind(listen, limits)
            .map_err(|e| anyhow::anyhow!("relay: listening on {listen}: {e}"))?;
        let addr = server
            .local_addr()
            .map_err(|e| anyhow::anyhow!("relay: no address: {e}"))?;
        let me = self.clone();
        server
            .spawn(Arc::new(move |req: &mut Request| Relay::answer(&me, req)))
            .map_err(|e| anyhow::anyhow!("relay: starting: {e}"))?;
        Ok(addr)
    }

    /// Answers one request. It counts as in flight until its response is written (the
    /// guard travels with the body).
    fn answer(me: &Arc<Relay>, req: &mut Request) -> Response {
        if let Ok(mut s) = me.state.lock() {
            s.active += 1;
            s.last_request = Instant::now();
        }
        let guard = InFlight(me.clone());
        me.respond_to(req, guard)
    }

    fn served(&self, client: IpAddr, k: Key, bytes: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.served_bytes += bytes as u64;
            s.clients.entry(client).or_default().insert(k);
        }
    }

    fn respond_to(self: &Arc<Self>, req: &mut Request, guard: InFlight) -> Response {
        let url = req.path().to_string();
        let prefix = format!("/{}/", self.image_name);
        let name = url.strip_prefix(&prefix).unwrap_or("");
        let client = req.peer().ip().to_canonical();
        fn reply(guard: InFlight, code: u16, body: Vec<u8>) -> Response {
            let len = body.len() as u64;
            Response::stream(
                code,
                Box::new(Guarded {
                    body: std::io::Cursor::new(body),
                    _in_flight: guard,
                }),
                len,
            )
        }
        if !matches!(req.method(), "GET" | "HEAD") {
            return reply(guard, 405, b"relay serves GET only\n".to_vec());
        }
        if !url.starts_with(&prefix) {
            return reply(guard, 404, b"not on this relay\n".to_vec());
        }
        let unavailable = |u: Unavailable| -> Response {
            let body = format!("{u}\n").into_bytes();
            let len = body.len() as u64;
            Response::stream(503, Box::new(std::io::Cursor::new(body)), len)
                .with_header("Retry-After", "1")
        };
        if name == "manifest" || name == "layout" {
            let files = match self.files(client) {
                Ok(f) => f,
                Err(u) => return unavailable(u),
            };
            let body = if name == "manifest" {
                &files.manifest
            } else {
                &files.layout
            };
            return reply(guard, 200, body.clone());
        }
        if name == imgtool::sign::SIGNATURE_FILE {
            // Set before the files: once they are here, so is the signature (or its absence).
            if let Err(u) = self.files(client) {
                return unavailable(u);
            }
            let sig = self.signature.lock().ok().and_then(|s| s.clone());
            return match sig {
                Some(body) => reply(guard, 200, body),
                None => reply(guard, 404, b"no signature on this relay\n".to_vec()),
            };
        }
        let info = match self.wait_set(&self.info, client) {
            Ok(i) => i,
            Err(u) => return unavailable(u),
        };
        let Some(ri) = info.regions.iter().position(|r| r.payload == name) else {
            return reply(guard, 404, b"not on this relay\n".to_vec());
        };
        let r = &info.regions[ri];
        let total = r.compressed_bytes();
        let range = req.header("Range").map(|h| parse_range(h, total));
        let (start, end) = match range {
            Some(Ok(Some(se))) => se,
            None if req.is_head() => {
                let body = Guarded {
                    body: std::io::empty(),
                    _in_flight: guard,
                };
                return Response::stream(200, Box::new(body), total);
            }
            _ => {
                return reply(
                    guard,
                    416,
                    b"a relay serves one chunk per range request\n".to_vec(),
                )
            }
        };
        // Whole frames only: from one chunk's first byte to a (later) chunk's last.
        let first = r.chunks.iter().position(|c| c.payload_offset == start);
        let last = r
            .chunks
            .iter()
            .position(|c| c.payload_offset.checked_add(c.compressed_length) == end.checked_add(1));
        let (Some(first), Some(last)) = (first, last) else {
            return reply(
                guard,
                416,
                b"range does not start and end on frame boundaries\n".to_vec(),
            );
        };
        if last < first {
            return reply(guard, 416, b"empty range\n".to_vec());
        }
        // No place to wait for the first frame: say so now, not with an empty 206.
        let here = self
            .state
            .lock()
            .is_ok_and(|s| s.have.contains(&(ri, first)));
        if !here {
            if let Err(u) = self.wait_place(client) {
                return unavailable(u);
            }
        }
        let len = end + 1 - start;
        let frames = FrameFeed {
            relay: self.clone(),
            info: info.clone(),
            region: ri,
            next: first,
            last,
            client,
            current: None,
            at: 0,
            _guard: guard,
        };
        // Frames go out as they are verified here, one write per frame (up to 1 MiB). A
        // frame that does not come in time ends the response early: the downstream sees a
        // short body and moves up its chain.
        Response::stream(206, Box::new(frames), len)
            .with_header("Content-Range", &format!("bytes {start}-{end}/{total}"))
    }
}

/// Why a relay cannot answer a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unavailable {
    /// It has not got the image (or the chunk) yet.
    NotYet,
    /// The waiting places (for this client, or all) are taken.
    Busy,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotYet => f.write_str("this relay has not got the image yet"),
            Unavailable::Busy => write!(
                f,
                "relay busy: {MAX_WAITING_PER_CLIENT} requests of this client (or {MAX_WAITING} in all) already wait for chunks not here yet"
            ),
        }
    }
}

/// A taken waiting place; given back on drop.
struct WaitPlace<'a> {
    state: &'a Mutex<State>,
    client: IpAddr,
}

impl Drop for WaitPlace<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.waiting_total = s.waiting_total.saturating_sub(1);
            if let Some(n) = s.waiting.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    s.waiting.remove(&self.client);
                }
            }
        }
    }
}

/// Counts a request as in flight until its response body is dropped (written or not).
struct InFlight(Arc<Relay>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.active -= 1;
            s.last_request = Instant::now();
        }
    }
}

/// A body that keeps its request in flight.
struct Guarded<R> {
    body: R,
    _in_flight: InFlight,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf)
    }
}

/// The body of a relay response: frames `next..=last` of a region, each as soon as this
/// node has verified it.
struct FrameFeed {
    relay: Arc<Relay>,
    info: Arc<Info>,
    region: usize,
    next: usize,
    last: usize,
    client: IpAddr,
    current: Option<Arc<Vec<u8>>>,
    at: usize,
    _guard: InFlight,
}

impl Read for FrameFeed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(f) = &self.current {
                if self.at < f.len() {
                    let n = buf.len().min(f.len() - self.at);
                    buf[..n].copy_from_slice(&f[self.at..self.at + n]);
                    self.at += n;
                    return Ok(n);
                }
                self.current = None;
            }
            if self.next > self.last {
                return Ok(0);
            }
            let k = (self.region, self.next);
            let f = self
                .relay
                .frame(&self.info, k, self.client)
                .map_err(std::io::Error::other)?;
            self.relay.served(self.client, k, f.len());
            self.current = Some(f);
            self.at = 0;
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    use std::os::fd::FromRawFd;

    /// A relay on 127.0.0.1 for image `img` with one region `p1` of two 100-byte frames,
    /// its files and layout known, no chunk here yet.
    fn relay() -> (Arc<Relay>, SocketAddr, Region) {
        let r = Relay::new("img", std::path::Path::new("/nonexistent"), 1 << 20);
        let region: Region = serde_json::from_value(serde_json::json!({
            "name": "p1", "number": 1, "size": 1 << 20, "filesystem": "raw",
            "fs_size": 1 << 20, "used_bytes": 2 << 16, "fill": "keep", "payload": "p1.zst",
            "chunks": [
                {"offset": 0, "length": 65536, "payload_offset": 0, "compressed_length": 100,
                 "sha256": "", "frame_sha256": ""},
                {"offset": 65536, "length": 65536, "payload_offset": 100,
                 "compressed_length": 100, "sha256": "", "frame_sha256": ""}
            ]
        }))
        .unwrap();
        r.set_files(Arc::new(imgtool::manifest::ImageFiles {
            manifest: b"manifest".to_vec(),
            layout: b"layout".to_vec(),
        }));
        *r.info.lock().unwrap() = Some(Arc::new(Info {
            regions: vec![region.clone()],
            level: 3,
            chunk_size: 65536,
        }));
        let addr = r.serve("127.0.0.1:0").unwrap();
        (r, addr, region)
    }

    /// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all
    /// local: each address is another client to the relay).
    fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let SocketAddr::V4(to) = to else {
            panic!("IPv4 only")
        };
        let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a new socket, bound and connected with valid sockaddr_in values, then
        // owned by the TcpStream.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let src = sa(from, 0);
            assert_eq!(
                libc::bind(fd, &src as *const _ as *const libc::sockaddr, len),
                0
            );
            let dst = sa(*to.ip(), to.port());
            assert_eq!(
                libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len),
                0
            );
            TcpStream::from_raw_fd(fd)
        }
    }

    /// Sends `GET path` with `range` from `from`; the connection, reading.
    fn request(from: Ipv4Addr, to: SocketAddr, path: &str, range: &str) -> TcpStream {
        let mut c = connect_from(from, to);
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: relay\r\nRange: {range}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        // Far below the relay's wait: an answer "at once" comes well within it.
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    fn answer(mut c: TcpStream) -> String {
        let mut out = vec![];
        c.read_to_end(&mut out)
            .expect("an answer before the read timeout");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn waiting(r: &Relay, ip: Ipv4Addr) -> usize {
        let s = r.state.lock().unwrap();
        s.waiting.get(&IpAddr::V4(ip)).copied().unwrap_or(0)
    }

    #[test]
    fn a_few_clients_cannot_hold_the_relay_waiting() {
        let (r, addr, region) = relay();
        let (greedy, other) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::LOCALHOST);
        // One client fills its waiting places with requests for a chunk not here yet.
        let held: Vec<TcpStream> = (0..MAX_WAITING_PER_CLIENT)
            .map(|_| request(greedy, addr, "/img/p1.zst", "bytes=0-99"))
            .collect();
        let t = Instant::now();
        while waiting(&r, greedy) < MAX_WAITING_PER_CLIENT {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "requests not waiting"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Its next one is refused at once (it used to wait 120 s, holding a worker).
        let more = answer(request(greedy, addr, "/img/p1.zst", "bytes=0-99"));
        assert!(more.starts_with("HTTP/1.1 503"), "{more}");
        assert!(more.contains("relay busy"), "{more}");
        // Another client still waits, and gets the chunk when it comes.
        let patient = request(other, addr, "/img/p1.zst", "bytes=0-199");
        let t = Instant::now();
        while waiting(&r, other) < 1 {
            assert!(t.elapsed() < Duration::from_secs(10), "request not waiting");
            std::thread::sleep(Duration::from_millis(10));
        }
        // What the relay has is served without waiting.
        let files = answer(request(other, addr, "/img/manifest", "bytes=0-"));
        assert!(
            files.starts_with("HTTP/1.1 200") && files.ends_with("manifest"),
            "{files}"
        );
        r.chunk_done(&region, 0, vec![b'a'; 100]);
        r.chunk_done(&region, 1, vec![b'b'; 100]);
        let got = answer(patient);
        assert!(got.starts_with("HTTP/1.1 206"), "{got}");
        assert!(got.ends_with(&format!("{}{}", "a".repeat(100), "b".repeat(100))));
        for c in held {
            let a = answer(c);
            assert!(
                a.starts_with("HTTP/1.1 206") && a.ends_with(&"a".repeat(100)),
                "{a}"
            );
        }
        assert_eq!(waiting(&r, greedy) + waiting(&r, other), 0);
    }

    #[test]
    fn requests_outside_the_image_are_refused_at_once() {
        let (_r, addr, _) = relay();
        let me = Ipv4Addr::LOCALHOST;
        for (path, range, status) in [
            ("/img/p1.zst", "bytes=200-299", "416"),
            ("/img/p1.zst", "bytes=5000-", "416"),
            ("/img/p1.zst", "bytes=0-49", "416"),
            ("/img/p1.zst", "bytes=50-99", "416"),
            ("/img/p9.zst", "bytes=0-99", "404"),
            ("/other/p1.zst", "bytes=0-99", "404"),
        ] {
            let a = answer(request(me, addr, path, range));
            assert!(
                a.starts_with(&format!("HTTP/1.1 {status}")),
                "{path} {range}: {a}"
            );
        }
    }
}
