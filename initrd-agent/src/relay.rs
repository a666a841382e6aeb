//! The relay: a node with downstream nodes serves the primary's URL space for its image
//! (`/<image>/manifest`, `/<image>/layout`, payload ranges on frame boundaries: one frame,
//! or a stream of them) from what it has verified. A chunk is served as soon as its
//! sha256 matched (cut-through); a stream reaching a chunk not yet there waits for it.
//! Memory is bounded: frames are cached up to a budget, and an evicted frame is re-read
//! from the local disk (the store) and re-compressed — zstd is deterministic, so the frame
//! is byte-identical, which the manifest's `frame_sha256` confirms before anything is
//! sent.

use imgtool::manifest::{Image, Region};
use imgtool::serve::parse_range;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Response, StatusCode};

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
    clients: HashMap<std::net::IpAddr, HashSet<Key>>,
    served_bytes: u64,
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

    /// Waits up to `wait` for the files.
    fn files(&self, wait: Duration) -> Option<Arc<imgtool::manifest::ImageFiles>> {
        self.wait_set(&self.files, wait)
    }

    /// Waits up to `wait` until `slot` is filled (by `set_files` or `set_image`).
    fn wait_set<T>(&self, slot: &Mutex<Option<Arc<T>>>, wait: Duration) -> Option<Arc<T>> {
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

    /// Waits up to `wait` for the image to be known.
    fn info(&self, wait: Duration) -> Option<Arc<Info>> {
        self.wait_set(&self.info, wait)
    }

    pub fn set_base(&self, region: &str, disk_offset: u64) {
        if let Ok(mut b) = self.bases.lock() {
            b.insert(region.to_string(), disk_offset);
        }
    }

    /// A chunk was verified and written: serve it from now on.
    pub fn chunk_done(&self, region: &Region, i: usize, frame: Vec<u8>) {
        let Some(info) = self.info(Duration::ZERO) else {
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
            .info(Duration::ZERO)
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

    /// The frame of chunk `k`: cached, or re-read from the disk and re-compressed.
    fn frame(&self, info: &Info, k: Key, wait: Duration) -> Result<Arc<Vec<u8>>, String> {
        let deadline = Instant::now() + wait;
        let mut s = self.state.lock().map_err(|_| "poisoned".to_string())?;
        while !s.have.contains(&k) {
            let now = Instant::now();
            if now >= deadline {
                return Err("chunk not yet available here; try the next upstream".into());
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .map_err(|_| "poisoned".to_string())?
                .0;
        }
        if let Some(f) = s.frames.get(&k) {
            return Ok(f.clone());
        }
        drop(s);
        let r = &info.regions[k.0];
        let c = &r.chunks[k.1];
        let base = self
            .bases
            .lock()
            .ok()
            .and_then(|b| b.get(&r.name).copied())
            .ok_or(format!("no disk offset for {}", r.name))?;
        let disk = imgtool::disk::Disk::open_ro(&self.target).map_err(|e| e.to_string())?;
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
        let server = tiny_http::Server::http(listen)
            .map_err(|e| anyhow::anyhow!("relay: listening on {listen}: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow::anyhow!("relay: no IP address"))?;
        let server = Arc::new(server);
        for _ in 0..32 {
            let (server, me) = (server.clone(), self.clone());
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    me.answer(req);
                }
            });
        }
        Ok(addr)
    }

    fn answer(&self, req: tiny_http::Request) {
        /// Counts the request as in flight until it is answered (every return path).
        struct InFlight<'a>(&'a Mutex<State>);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                if let Ok(mut s) = self.0.lock() {
                    s.active -= 1;
                    s.last_request = Instant::now();
                }
            }
        }
        if let Ok(mut s) = self.state.lock() {
            s.active += 1;
            s.last_request = Instant::now();
        }
        let _in_flight = InFlight(&self.state);
        self.respond_to(req);
    }

    fn served(&self, client: Option<std::net::IpAddr>, k: Key, bytes: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.served_bytes += bytes as u64;
            if let Some(ip) = client {
                s.clients.entry(ip).or_default().insert(k);
            }
        }
    }

    fn respond_to(&self, mut req: tiny_http::Request) {
        let url = req.url().split('?').next().unwrap_or("").to_string();
        let prefix = format!("/{}/", self.image_name);
        let name = url.strip_prefix(&prefix).unwrap_or("");
        let head = *req.method() == Method::Head;
        let hdr = |k: &str, v: &str| Header::from_bytes(k.as_bytes(), v.as_bytes()).ok();
        let respond = |req: tiny_http::Request, code: u16, body: Vec<u8>, extra: Vec<Header>| {
            let mut r = Response::from_data(if head { vec![] } else { body })
                .with_status_code(StatusCode(code))
                .with_chunked_threshold(usize::MAX);
            for h in extra {
                r.add_header(h);
            }
            let _ = req.respond(r);
        };
        if !matches!(req.method(), Method::Get | Method::Head) {
            let mut sink = vec![];
            let _ = req.as_reader().take(1 << 20).read_to_end(&mut sink);
            return respond(req, 405, b"relay serves GET only\n".to_vec(), vec![]);
        }
        if !url.starts_with(&prefix) {
            return respond(req, 404, b"not on this relay\n".to_vec(), vec![]);
        }
        let not_yet = |req| {
            respond(
                req,
                503,
                b"this relay has not got the image yet\n".to_vec(),
                vec![],
            )
        };
        if name == "manifest" || name == "layout" {
            let Some(files) = self.files(Duration::from_secs(120)) else {
                return not_yet(req);
            };
            let body = if name == "manifest" {
                &files.manifest
            } else {
                &files.layout
            };
            return respond(req, 200, body.clone(), vec![]);
        }
        if name == imgtool::sign::SIGNATURE_FILE {
            if self.files(Duration::from_secs(120)).is_none() {
                return not_yet(req);
            }
            let sig = self.signature.lock().ok().and_then(|s| s.clone());
            return match sig {
                Some(body) => respond(req, 200, body, vec![]),
                None => respond(req, 404, b"no signature on this relay\n".to_vec(), vec![]),
            };
        }
        let Some(info) = self.info(Duration::from_secs(120)) else {
            return not_yet(req);
        };
        let Some(ri) = info.regions.iter().position(|r| r.payload == name) else {
            return respond(req, 404, b"not on this relay\n".to_vec(), vec![]);
        };
        let r = &info.regions[ri];
        let total = r.compressed_bytes();
        let range = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("Range"))
            .map(|h| parse_range(h.value.as_str(), total));
        let (start, end) = match range {
            Some(Ok(Some(se))) => se,
            None if head => {
                let extra = hdr("Content-Length", &total.to_string())
                    .into_iter()
                    .collect();
                return respond(req, 200, vec![], extra);
            }
            _ => {
                return respond(
                    req,
                    416,
                    b"a relay serves one chunk per range request\n".to_vec(),
                    vec![],
                )
            }
        };
        // Whole frames only: from one chunk's first byte to a (later) chunk's last.
        let first = r.chunks.iter().position(|c| c.payload_offset == start);
        let last = r
            .chunks
            .iter()
            .position(|c| c.payload_offset + c.compressed_length == end + 1);
        let (Some(first), Some(last)) = (first, last) else {
            return respond(
                req,
                416,
                b"range does not start and end on frame boundaries\n".to_vec(),
                vec![],
            );
        };
        if last < first {
            return respond(req, 416, b"empty range\n".to_vec(), vec![]);
        }
        let extra = hdr("Content-Range", &format!("bytes {start}-{end}/{total}"))
            .into_iter()
            .collect();
        let len = (end + 1 - start) as usize;
        let frames = FrameFeed {
            relay: self,
            info: &info,
            region: ri,
            next: first,
            last,
            client: req.remote_addr().map(|a| a.ip()),
            current: None,
            at: 0,
        };
        // Frames go out as they are verified here, in 1 MiB writes. A frame that does not
        // come in time ends the response early: the downstream sees a short body and
        // moves up its chain.
        // (tiny_http sends no body to HEAD.) A concrete BufReader, not a boxed reader:
        // io::copy then writes its whole buffer at once.
        let body = std::io::BufReader::with_capacity(if head { 0 } else { 1 << 20 }, frames);
        let r = Response::new(StatusCode(206), extra, body, Some(len), None)
            .with_chunked_threshold(usize::MAX);
        let _ = req.respond(r);
    }
}

/// The body of a relay response: frames `next..=last` of a region, each as soon as this
/// node has verified it.
struct FrameFeed<'a> {
    relay: &'a Relay,
    info: &'a Info,
    region: usize,
    next: usize,
    last: usize,
    client: Option<std::net::IpAddr>,
    current: Option<Arc<Vec<u8>>>,
    at: usize,
}

impl Read for FrameFeed<'_> {
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
                .frame(self.info, k, Duration::from_secs(120))
                .map_err(std::io::Error::other)?;
            self.relay.served(self.client, k, f.len());
            self.current = Some(f);
            self.at = 0;
            self.next += 1;
        }
    }
}
