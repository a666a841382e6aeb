//! The relay: a node with downstream nodes serves the primary's URL space for its image
//! (`/<image>/manifest`, `/<image>/layout`, payload ranges on frame boundaries: one frame,
//! or a stream of them) from what it has verified. A chunk is served as soon as its
//! sha256 matched (cut-through); a stream reaching a chunk not yet there waits for it.
//! Memory is bounded: frames are cached up to a budget, and an evicted frame is re-read
//! from the local disk (the store) and re-compressed — zstd is deterministic, so the frame
//! is byte-identical (for an image captured before frames carried zstd's content
//! checksum, once the checksum is taken off again: [`imgtool::frame::without_checksum`]),
//! which the manifest's `frame_sha256` confirms before anything is sent.
//!
//! A relay whose own restore was a delta (its disk already held most of the image) has no
//! frame for the chunks it skipped: they are had on the disk ([`Relay::chunk_skipped`])
//! and made the same way when asked for. When the frame made from the disk does not match
//! the manifest (the disk changed under the relay, or the image was compressed by another
//! zstd), the relay fetches that frame from its own upstream and checks it the same way;
//! a frame that matches neither way is never sent (the stream ends early and the
//! downstream moves up its chain).
//!
//! Brief overview: [`Relay`] is the shared state and the frame supply; its bookkeeping is
//! three plain types tested without sockets or threads — [`cache::FrameCache`] (which
//! chunks are here, which frames are in memory), [`downstream::Downstream`] (who was
//! served what; when the relay may stop holding) and [`waiting::WaitingPlaces`] (who may
//! wait) — and `http` answers requests with them; [`seen`] remembers who fetched from
//! here and answers "have you seen U?" for nodes waiting on an upstream that is silent. [`bootfiles`] is the rack's boot files
//! (kernel, initrd) an entity's secondary serves beside the image, under `/boot/`.
//!
//! Waiting is bounded: a request for something not here yet (the image's files, the next
//! chunk of a stream) takes one of [`MAX_WAITING`] waiting places, at most
//! [`MAX_WAITING_PER_CLIENT`] per address, for at most [`RELAY_WAIT`]; without a free
//! place it is answered 503 at once (a stream ends early), and the downstream retries or
//! moves up its chain. So a few clients asking for chunks that are not here cannot hold
//! the relay. Connections, head and time limits are [`imgtool::httpd`]'s.

pub mod bootfiles;
mod cache;
mod downstream;
mod http;
mod seen;
mod waiting;

use cache::{FrameCache, Key, Lookup};
pub use downstream::Released;
use downstream::{Downstream, Hold};
pub use http::DONE;
use imgtool::manifest::{Image, ImageFiles, Region};
use imgtool::source::ImageSource;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use waiting::WaitingPlaces;
pub use waiting::{Unavailable, MAX_WAITING, MAX_WAITING_PER_CLIENT};

/// How long a request waits for something this relay does not have yet before it is
/// answered 503 (or its stream ends early). About the downstream's own stall limit
/// (`--stall`, 20 s by default): after that the downstream has given up on this relay
/// anyway, so a longer wait only holds a connection. (It was 120 s.)
pub const RELAY_WAIT: Duration = Duration::from_secs(30);

/// Open connections at most (half of them at most can be waiting).
pub const RELAY_MAX_CONNECTIONS: usize = 256;

/// What the relay knows of its image, as its own upstream answered.
#[derive(Default)]
struct Known {
    /// `manifest` and `layout` as fetched, served before they are parsed here.
    files: Option<Arc<ImageFiles>>,
    /// The image's `signature` file when this node fetched one (set before `files`).
    signature: Option<Vec<u8>>,
    /// The image as parsed here: payload ranges are answered from then on.
    info: Option<Arc<Info>>,
    /// Disk byte offset of each region on the local target (for re-reads).
    bases: HashMap<String, u64>,
    /// This node's own upstream chain: where a frame the disk cannot give back is fetched.
    upstream: Option<Arc<dyn ImageSource>>,
    /// A diskless relay fetches one region (its root): a downstream node is complete once
    /// it has that region's chunks ([`Relay::count_only`]).
    only: Option<String>,
}

/// The parts of the parsed image a relay needs.
struct Info {
    regions: Vec<Region>,
    level: i32,
    chunk_size: u64,
}

impl Info {
    /// Chunks of the whole image.
    fn chunks(&self) -> usize {
        self.regions.iter().map(|r| r.chunks.len()).sum()
    }
}

/// The relay's bookkeeping, under one lock.
struct Ledger {
    cache: FrameCache,
    downstream: Downstream,
    waiting: WaitingPlaces,
    /// Frames made from the local disk (evicted or skipped chunks).
    from_disk: u64,
    /// Frames fetched again from the upstream because the disk did not give them back.
    from_upstream: u64,
}

pub struct Relay {
    image_name: String,
    target: PathBuf,
    known: Mutex<Known>,
    /// Signalled when something becomes known.
    known_changed: Condvar,
    ledger: Mutex<Ledger>,
    /// Signalled when a chunk arrives or a request ends.
    ledger_changed: Condvar,
    /// The boot files it serves to its rack, when it is its entity's secondary.
    boot: bootfiles::BootStore,
    /// Who fetched from here, and who said it was done ([`seen`]).
    seen: Mutex<netboot_proto::seen::SeenSet>,
    /// When it was made (the boot-files-only hold counts quiet time from here).
    created: Instant,
}

impl Relay {
    /// A relay for `image_name` that listens before it has the image: early requests
    /// wait. At most `budget` bytes of frames are kept in memory.
    pub fn new(image_name: &str, target: &Path, budget: usize) -> Arc<Relay> {
        Arc::new(Relay {
            image_name: image_name.to_string(),
            target: target.to_path_buf(),
            known: Mutex::new(Known::default()),
            known_changed: Condvar::new(),
            ledger: Mutex::new(Ledger {
                cache: FrameCache::new(budget),
                downstream: Downstream::new(Instant::now()),
                waiting: WaitingPlaces::default(),
                from_disk: 0,
                from_upstream: 0,
            }),
            ledger_changed: Condvar::new(),
            boot: bootfiles::BootStore::default(),
            seen: Mutex::default(),
            created: Instant::now(),
        })
    }

    // A panic while a lock is held cannot leave these half-updated in a way that matters
    // more than stopping would (PID 1 must not stop): a poisoned lock is used as is.
    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `signature` file as fetched (call before [`Relay::set_files`]); `None`: this
    /// node has none to pass on, downstream asking for it get 404.
    pub fn set_signature(&self, signature: Option<Vec<u8>>) {
        self.known().signature = signature;
    }

    /// `manifest` and `layout` were fetched: downstream nodes may have them at once
    /// (they check them themselves), so parsing here is off the chain's critical path.
    pub fn set_files(&self, files: Arc<ImageFiles>) {
        self.known().files = Some(files);
        self.known_changed.notify_all();
    }

    /// The image is parsed (after [`Relay::set_files`]): start answering payload ranges.
    pub fn set_image(&self, img: &Image) {
        self.set_info(Info {
            regions: img.manifest.regions.clone(),
            level: img.manifest.level,
            chunk_size: img.manifest.chunk_size,
        });
    }

    fn set_info(&self, info: Info) {
        self.known().info = Some(Arc::new(info));
        self.known_changed.notify_all();
    }

    /// This node's image source: a frame the local disk cannot give back (see
    /// [`Relay::frame`]) is fetched from it.
    pub fn set_source(&self, source: Arc<dyn ImageSource>) {
        self.known().upstream = Some(source);
    }

    /// Region `region` starts at byte `disk_offset` of the local target.
    pub fn set_base(&self, region: &str, disk_offset: u64) {
        self.known().bases.insert(region.to_string(), disk_offset);
    }

    /// This node fetches only region `region` (a diskless node's root, docs/AGENT.md):
    /// downstream nodes count as complete once they have its chunks. Region indexes stay
    /// those of the whole image, so requests already waiting are not misled.
    pub fn count_only(&self, region: &str) {
        self.known().only = Some(region.to_string());
    }

    /// What `pick` finds in what is known, waiting up to [`RELAY_WAIT`] for it (in a
    /// waiting place of `client`).
    fn wait_known<T>(
        self: &Arc<Self>,
        client: IpAddr,
        pick: impl Fn(&Known) -> Option<T>,
    ) -> Result<T, Unavailable> {
        if let Some(v) = pick(&self.known()) {
            return Ok(v);
        }
        let _place = self.take_place(client)?;
        let deadline = Instant::now() + RELAY_WAIT;
        let mut k = self.known();
        loop {
            if let Some(v) = pick(&k) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Unavailable::NotYet);
            }
            k = self
                .known_changed
                .wait_timeout(k, deadline - now)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
    }

    /// The image's files (waiting for them in a place of `client`).
    fn files(self: &Arc<Self>, client: IpAddr) -> Result<Arc<ImageFiles>, Unavailable> {
        self.wait_known(client, |k| k.files.clone())
    }

    /// The parsed image (waiting for it in a place of `client`).
    fn info(self: &Arc<Self>, client: IpAddr) -> Result<Arc<Info>, Unavailable> {
        self.wait_known(client, |k| k.info.clone())
    }

    /// The signature file, once the files are here (it is set before them).
    fn signature(self: &Arc<Self>, client: IpAddr) -> Result<Option<Vec<u8>>, Unavailable> {
        self.files(client)?;
        Ok(self.known().signature.clone())
    }

    /// Takes one of the waiting places for `client`, or says why there is none.
    fn take_place(self: &Arc<Self>, client: IpAddr) -> Result<WaitPlace, Unavailable> {
        self.ledger().waiting.take(client)?;
        Ok(WaitPlace {
            relay: self.clone(),
            client,
        })
    }

    /// A waiting place for `client` if chunk `k` is not here yet (`None`: it is).
    fn place_unless_here(
        self: &Arc<Self>,
        client: IpAddr,
        k: Key,
    ) -> Result<Option<WaitPlace>, Unavailable> {
        let mut l = self.ledger();
        if l.cache.has(k) {
            return Ok(None);
        }
        l.waiting.take(client)?;
        Ok(Some(WaitPlace {
            relay: self.clone(),
            client,
        }))
    }

    /// A chunk was verified and written: serve it from now on.
    pub fn chunk_done(&self, region: &Region, i: usize, frame: Vec<u8>) {
        let Some(ri) = self.region_index(region) else {
            return;
        };
        self.ledger().cache.insert((ri, i), frame);
        self.ledger_changed.notify_all();
    }

    /// A delta restore found chunk `i` of `region` already correct on the disk and did
    /// not fetch it: serve it from now on, made from the disk when asked for.
    pub fn chunk_skipped(&self, region: &Region, i: usize) {
        let Some(ri) = self.region_index(region) else {
            return;
        };
        self.ledger().cache.mark_on_disk((ri, i));
        self.ledger_changed.notify_all();
    }

    /// `client` says it has verified every chunk (`GET /<image>/.done`).
    fn finished(&self, client: IpAddr) {
        self.ledger().downstream.finished(client);
        self.ledger_changed.notify_all();
    }

    fn region_index(&self, region: &Region) -> Option<usize> {
        self.known()
            .info
            .as_ref()
            .and_then(|info| info.regions.iter().position(|r| r.name == region.name))
    }

    /// Frames made from the local disk, and frames fetched again from the upstream
    /// because the disk did not give them back ([`Relay::frame`]).
    pub fn remade_frames(&self) -> (u64, u64) {
        let l = self.ledger();
        (l.from_disk, l.from_upstream)
    }

    /// Blocks until the `expected` downstream nodes have each been served every chunk, or
    /// — for downstream nodes that never came or moved elsewhere — until no request is in
    /// flight and none has started or ended for `idle`; says which. The decision is
    /// [`downstream::Downstream::hold`]'s; this only waits for its next chance.
    pub fn wait_downstream(&self, expected: usize, idle: Duration) -> Released {
        loop {
            let chunks = {
                let k = self.known();
                let only = k.only.clone();
                k.info.as_ref().map_or(0, |i| match &only {
                    Some(name) => i
                        .regions
                        .iter()
                        .filter(|r| &r.name == name)
                        .map(|r| r.chunks.len())
                        .sum(),
                    None => i.chunks(),
                })
            };
            let l = self.ledger();
            let wait = match l.downstream.hold(expected, chunks, idle, Instant::now()) {
                Hold::Release(why) => return why,
                Hold::Wait(d) => d,
            };
            // Woken when a request ends: the moment the last node may be complete. The
            // lock is held from the decision into the wait, so that wake-up is not missed.
            drop(
                self.ledger_changed
                    .wait_timeout(l, wait)
                    .map_or_else(|e| e.into_inner().0, |r| r.0),
            );
        }
    }

    /// The hold of a relay with no downstream node, which serves only its rack's boot
    /// files: until no boot file was asked for during `idle` (counted from the relay's
    /// start if none ever was) and its own fetch of them is over — at most `bound` from
    /// now, so a client that keeps asking cannot keep this node from finishing. Other
    /// requests (image ranges, stray paths) do not count. Returns at once when it has
    /// no boot files to serve.
    pub fn wait_boot_files(&self, idle: Duration, bound: Duration) -> Released {
        let until = Instant::now() + bound;
        loop {
            let fetching = match self.boot.get() {
                bootfiles::Boot::Off | bootfiles::Boot::Failed(_) => return Released::NoBootFiles,
                bootfiles::Boot::Fetching => true,
                bootfiles::Boot::Ready(_) => false,
            };
            let now = Instant::now();
            if now >= until {
                return Released::Bounded;
            }
            let last = self.boot.last_asked().unwrap_or(self.created);
            let quiet = now.saturating_duration_since(last);
            if quiet >= idle && !fetching {
                return Released::Idle;
            }
            let left = idle.saturating_sub(quiet).max(Duration::from_millis(50));
            std::thread::sleep(left.min(Duration::from_millis(200)).min(until - now));
        }
    }

    pub fn served_bytes(&self) -> u64 {
        self.ledger().downstream.served_bytes()
    }

    /// A request came in: it counts as in flight until the returned guard is dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.ledger().downstream.request_started(Instant::now());
        InFlight(self.clone())
    }

    /// The frame of chunk `k`: cached, or re-read from the disk and re-compressed. A chunk
    /// not here yet is waited for (up to [`RELAY_WAIT`]) in `place`, or else in a waiting
    /// place taken for `client` now.
    fn frame(
        self: &Arc<Self>,
        info: &Info,
        k: Key,
        client: IpAddr,
        mut place: Option<WaitPlace>,
    ) -> Result<Arc<Vec<u8>>, String> {
        let deadline = Instant::now() + RELAY_WAIT;
        let found = {
            // Declared after `place`: on every way out the guard goes first, then the
            // place (whose drop takes the lock).
            let mut l = self.ledger();
            loop {
                match l.cache.lookup(k) {
                    Lookup::Missing => {}
                    found => break found,
                }
                if place.is_none() {
                    l.waiting.take(client).map_err(|u| u.to_string())?;
                    place = Some(WaitPlace {
                        relay: self.clone(),
                        client,
                    });
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err("chunk not yet available here; try the next upstream".into());
                }
                l = self
                    .ledger_changed
                    .wait_timeout(l, deadline - now)
                    .map_or_else(|e| e.into_inner().0, |r| r.0);
            }
        };
        drop(place);
        match found {
            Lookup::Cached(f) => Ok(f),
            _ => self.remake(info, k),
        }
    }

    /// The frame of a chunk that is had but not in memory: made from the local disk, or,
    /// when the disk does not give it back, fetched from this node's upstream; either way
    /// checked against the manifest's `frame_sha256` before it is cached and served.
    fn remake(&self, info: &Info, k: Key) -> Result<Arc<Vec<u8>>, String> {
        let (frame, disk) = match self.reread(info, k) {
            Ok(f) => (f, true),
            Err(disk_err) => match self.refetch(info, k) {
                Ok(f) => (f, false),
                Err(up_err) => return Err(format!("{disk_err}; {up_err}")),
            },
        };
        let mut l = self.ledger();
        if disk {
            l.from_disk += 1;
        } else {
            l.from_upstream += 1;
        }
        // Cached for the next downstream node (within the budget; a copy, as the cache
        // may evict it at once).
        l.cache.insert(k, frame.clone());
        Ok(Arc::new(frame))
    }

    /// Chunk `k`'s frame fetched from this node's upstream, checked against the manifest.
    fn refetch(&self, info: &Info, k: Key) -> Result<Vec<u8>, String> {
        let (r, c) = chunk_of(info, k)?;
        let source = self
            .known()
            .upstream
            .clone()
            .ok_or("no upstream to fetch it from")?;
        let frame = source
            .read_range(&r.payload, c.payload_offset, c.compressed_length)
            .map_err(|e| format!("fetching it from the upstream: {e}"))?;
        if hex::encode(Sha256::digest(&frame)) != c.frame_sha256 {
            return Err(format!(
                "the upstream's frame of {} chunk {} does not match the manifest",
                r.name, k.1
            ));
        }
        Ok(frame)
    }

    /// Chunk `k`'s frame made again from the local disk, checked against the manifest.
    fn reread(&self, info: &Info, k: Key) -> Result<Vec<u8>, String> {
        let (r, c) = chunk_of(info, k)?;
        let base = self
            .known()
            .bases
            .get(&r.name)
            .copied()
            .ok_or(format!("no disk offset for {}", r.name))?;
        let disk = imgtool::disk::Disk::open_ro(&self.target).map_err(|e| e.chain())?;
        let raw = c.read_from(&disk, base).map_err(|e| e.to_string())?;
        let frame = imgtool::capture::compress_chunk(&raw, info.level, info.chunk_size)
            .map_err(|e| e.to_string())?;
        let matches = |f: &[u8]| hex::encode(Sha256::digest(f)) == c.frame_sha256;
        if matches(&frame) {
            return Ok(frame);
        }
        // An image captured before frames carried zstd's content checksum.
        match imgtool::frame::without_checksum(&frame) {
            Some(old) if matches(&old) => Ok(old),
            _ => Err(format!(
                "{} chunk {} changed on this disk since it was cloned",
                r.name, k.1
            )),
        }
    }

    /// Chunk `k` (`bytes` of frame) went to `client`.
    fn served(&self, client: IpAddr, k: Key, bytes: usize) {
        self.ledger().downstream.served(client, k, bytes);
    }
}

/// Region and chunk of key `k`.
fn chunk_of(info: &Info, k: Key) -> Result<(&Region, &imgtool::manifest::Chunk), String> {
    let r = info.regions.get(k.0).ok_or("no such region")?;
    let c = r.chunks.get(k.1).ok_or("no such chunk")?;
    Ok((r, c))
}

/// A taken waiting place; given back on drop.
struct WaitPlace {
    relay: Arc<Relay>,
    client: IpAddr,
}

impl Drop for WaitPlace {
    fn drop(&mut self) {
        self.relay.ledger().waiting.give_back(self.client);
    }
}

/// Counts a request as in flight until its response body is dropped (written or not).
struct InFlight(Arc<Relay>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ledger().downstream.request_ended(Instant::now());
        self.0.ledger_changed.notify_all();
    }
}

/// The body of a relay response: frames `next..=last` of a region, each as soon as this
/// node has verified it. The first one is waited for in `place` when one was taken for it.
struct FrameFeed {
    relay: Arc<Relay>,
    info: Arc<Info>,
    region: usize,
    next: usize,
    last: usize,
    client: IpAddr,
    place: Option<WaitPlace>,
    current: Option<Arc<Vec<u8>>>,
    at: usize,
    _in_flight: InFlight,
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
                .frame(&self.info, k, self.client, self.place.take())
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
    use std::net::Ipv4Addr;
    use std::sync::mpsc;

    /// A region `p1` of `n` 100-byte frames.
    pub(super) fn region(n: usize) -> Region {
        let chunks: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({"offset": i * 65536, "length": 65536,
                    "payload_offset": i * 100, "compressed_length": 100,
                    "sha256": "", "frame_sha256": ""})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": "p1", "number": 1, "size": 1 << 20, "filesystem": "raw",
            "fs_size": 1 << 20, "used_bytes": n << 16, "fill": "keep", "payload": "p1.zst",
            "chunks": chunks
        }))
        .unwrap()
    }

    /// A relay for image `img` with `region` known (its files and parsed image).
    pub(super) fn relay_of(region: &Region) -> Arc<Relay> {
        let r = Relay::new("img", Path::new("/nonexistent"), 1 << 20);
        r.set_files(Arc::new(ImageFiles {
            manifest: b"manifest".to_vec(),
            layout: b"layout".to_vec(),
        }));
        r.set_info(Info {
            regions: vec![region.clone()],
            level: 3,
            chunk_size: 65536,
        });
        r
    }

    fn node(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    /// `client` reads every frame of region 0 as one stream, the way a response body is
    /// read (without the socket).
    fn fetch_all(r: &Arc<Relay>, client: IpAddr) -> Vec<u8> {
        let (out, broke) = fetch_some(r, client);
        assert!(broke.is_none(), "the stream broke: {broke:?}");
        out
    }

    /// `client` reads frames `0..=last` of region 0 as one stream; what came before the
    /// stream broke, and the error that broke it.
    fn fetch_some(r: &Arc<Relay>, client: IpAddr) -> (Vec<u8>, Option<std::io::Error>) {
        let info = r.known().info.clone().unwrap();
        let last = info.regions[0].chunks.len() - 1;
        let mut feed = FrameFeed {
            relay: r.clone(),
            info,
            region: 0,
            next: 0,
            last,
            client,
            place: None,
            current: None,
            at: 0,
            _in_flight: r.request_started(),
        };
        let mut out = vec![];
        let mut buf = [0u8; 4096];
        loop {
            match feed.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// A captured region of three 64 KiB chunks, really compressed (level 3), its
    /// raw bytes at byte 4096 of `dir/disk` and its payload in `dir/img/p1.zst`.
    fn captured(dir: &Path) -> (Region, Vec<Vec<u8>>) {
        captured_by(dir, false)
    }

    /// [`captured`], its frames as an imgtool before frames carried zstd's content
    /// checksum made them when `before_checksum`.
    fn captured_by(dir: &Path, before_checksum: bool) -> (Region, Vec<Vec<u8>>) {
        let (size, level) = (65536usize, 3);
        let mut disk = vec![0u8; 4096];
        let (mut chunks, mut frames, mut payload) = (vec![], vec![], vec![]);
        let mut x = 7u32;
        for i in 0..3 {
            let raw: Vec<u8> = (0..size)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 28) as u8
                })
                .collect();
            let mut frame = imgtool::capture::compress_chunk(&raw, level, size as u64).unwrap();
            if before_checksum {
                let mut c = zstd::bulk::Compressor::new(level).unwrap();
                c.set_parameter(zstd::stream::raw::CParameter::WindowLog(16))
                    .unwrap();
                c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(false))
                    .unwrap();
                frame = c.compress(&raw).unwrap();
            }
            chunks.push(serde_json::json!({
                "offset": i * size, "length": size,
                "payload_offset": payload.len(), "compressed_length": frame.len(),
                "sha256": hex::encode(Sha256::digest(&raw)),
                "frame_sha256": hex::encode(Sha256::digest(&frame)),
            }));
            disk.extend_from_slice(&raw);
            payload.extend_from_slice(&frame);
            frames.push(frame);
        }
        std::fs::write(dir.join("disk"), &disk).unwrap();
        std::fs::create_dir_all(dir.join("img")).unwrap();
        std::fs::write(dir.join("img/p1.zst"), &payload).unwrap();
        let region: Region = serde_json::from_value(serde_json::json!({
            "name": "p1", "number": 1, "size": 1 << 20, "filesystem": "raw",
            "fs_size": 1 << 20, "used_bytes": 3 * size, "fill": "keep", "payload": "p1.zst",
            "chunks": chunks
        }))
        .unwrap();
        (region, frames)
    }

    /// A relay of [`captured`]'s region whose delta restore found all three chunks on
    /// its disk (`dir/disk`, the region at byte 4096).
    fn all_skipped(dir: &Path, p1: &Region) -> Arc<Relay> {
        let r = Relay::new("img", &dir.join("disk"), 1 << 20);
        r.set_info(Info {
            regions: vec![p1.clone()],
            level: 3,
            chunk_size: 65536,
        });
        r.set_base("p1", 4096);
        for i in 0..3 {
            r.chunk_skipped(p1, i);
        }
        r
    }

    #[test]
    fn frames_of_an_image_made_before_the_content_checksum_are_remade_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, frames) = captured_by(dir.path(), true);
        let r = all_skipped(dir.path(), &p1);
        // No upstream: each frame can only come from the disk, made again.
        let (got, err) = fetch_some(&r, node(1));
        assert!(err.is_none(), "{err:?}");
        assert!(got == frames.concat(), "frames made from the disk differ");
        assert_eq!(r.remade_frames(), (3, 0));
    }

    #[test]
    fn skipped_chunks_are_served_from_the_disk_and_never_a_wrong_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, frames) = captured(dir.path());
        // This relay's delta restore found every chunk already on its disk.
        let r = all_skipped(dir.path(), &p1);
        // Made from the disk, the frames are the capture's, byte for byte.
        let (got, err) = fetch_some(&r, node(1));
        assert!(err.is_none(), "{err:?}");
        assert!(got == frames.concat(), "frames made from the disk differ");
        assert_eq!(r.remade_frames(), (3, 0));

        // Chunk 1 changes on the disk, its cached frame gone (a fresh relay), and no
        // upstream to fetch it from: frame 0 goes out, then the stream breaks — chunk
        // 1's wrong frame is never sent.
        let r = all_skipped(dir.path(), &p1);
        let disk = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("disk"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&disk, b"changed since", 4096 + 65536 + 100)
            .unwrap();
        let (got, err) = fetch_some(&r, node(1));
        assert_eq!(got, frames[0], "only the good frame before the break");
        let err = err
            .expect("the stream breaks at the changed chunk")
            .to_string();
        assert!(err.contains("p1 chunk 1 changed on this disk"), "{err}");
        // An upstream whose frame does not match either: still nothing wrong sent.
        let bad = dir.path().join("bad");
        std::fs::create_dir_all(&bad).unwrap();
        let mut payload = std::fs::read(dir.path().join("img/p1.zst")).unwrap();
        payload[frames[0].len() + 10] ^= 0xff;
        std::fs::write(bad.join("p1.zst"), &payload).unwrap();
        r.set_source(Arc::new(imgtool::source::LocalDir(bad)));
        let (got, err) = fetch_some(&r, node(1));
        assert_eq!(got, frames[0]);
        assert!(
            err.unwrap()
                .to_string()
                .contains("does not match the manifest"),
            "the upstream's bad frame is refused"
        );
        // With a good upstream, the changed chunk's frame comes from there, checked.
        r.set_source(Arc::new(imgtool::source::LocalDir(dir.path().join("img"))));
        let (got, err) = fetch_some(&r, node(2));
        assert!(err.is_none(), "{err:?}");
        assert!(got == frames.concat(), "frames differ");
        assert_eq!(r.remade_frames(), (2, 1));
    }

    #[test]
    fn a_relay_holds_until_its_planned_nodes_are_served_and_no_longer() {
        let p1 = region(3);
        let r = relay_of(&p1);
        for i in 0..3 {
            r.chunk_done(&p1, i, vec![b'a' + i as u8; 100]);
        }
        assert_eq!(fetch_all(&r, node(1)).len(), 300);
        // A re-read by the same node does not make it two.
        fetch_all(&r, node(1));
        // One of two planned nodes served: only the idle fallback would release it.
        assert_eq!(r.wait_downstream(2, Duration::ZERO), Released::Idle);
        // Held with an idle time no test waits out: the last node served releases it.
        let (tx, rx) = mpsc::channel();
        let r2 = r.clone();
        let t = std::thread::spawn(move || {
            tx.send(r2.wait_downstream(2, Duration::from_secs(3600)))
                .unwrap()
        });
        assert_eq!(
            fetch_all(&r, node(2)),
            [[b'a'; 100], [b'b'; 100], [b'c'; 100]].concat()
        );
        // (The timeout only keeps a broken relay from hanging the test.)
        let why = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(why, Ok(Released::AllServed));
        t.join().unwrap();
        assert_eq!(r.served_bytes(), 900);
    }

    #[test]
    fn a_stream_waits_for_a_chunk_in_one_place_and_gives_it_back() {
        let p1 = region(2);
        let r = relay_of(&p1);
        r.chunk_done(&p1, 0, vec![b'a'; 100]);
        let r2 = r.clone();
        let t = std::thread::spawn(move || fetch_all(&r2, node(1)));
        // The stream got frame 0 and waits for frame 1 in one place.
        let start = Instant::now();
        while r.ledger().waiting.of(node(1)) == 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "not waiting");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.ledger().waiting.of(node(1)), 1);
        r.chunk_done(&p1, 1, vec![b'b'; 100]);
        assert_eq!(t.join().unwrap(), [[b'a'; 100], [b'b'; 100]].concat());
        assert_eq!(r.ledger().waiting.of(node(1)), 0);
    }
}
