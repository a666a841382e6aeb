//! The upload server's two-step frame check (issue 15's benchmark work): a frame's `PUT`
//! is answered once its frame sha256 matched and it was written; its decompression and
//! raw sha256 run later on a bounded verifier, and the commit waits for them. These
//! tests show what that must not lose: a client that lies consistently (a frame whose
//! frame sha256 is right but which decodes to other raw bytes than declared) publishes
//! nothing and is told the chunk; a byte flipped in transit is still refused at its own
//! `PUT`; the verifier never holds more frames or bytes than its bound (counted, with
//! its workers held back), and every frame of a real upload is raw-checked.
//!
//! The first two drive the server with a replay client: the frames, layout and
//! manifest of a local capture sent request by request, so one frame can be forged.

mod common;
#[path = "upload_support/mod.rs"]
mod upload_support;

use common::*;
use imgtool::manifest::Manifest;
use imgtool::upload::session::Refusal;
use imgtool::upload::verify::{Job, Verification, Verifier, VERIFY_MAX_BYTES, VERIFY_MAX_FRAMES};
use imgtool::upload::wire::RegionName;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use upload_support::*;

fn published(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    tree(root, &|p| p.ends_with(".upload"))
}

/// A request's status and body (any status).
fn send(req: ureq::Request, token: &str, body: &[u8]) -> (u16, String) {
    let r = req
        .set("Authorization", &format!("Bearer {token}"))
        .send_bytes(body);
    let (status, resp) = match r {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(c, r)) => (c, r),
        Err(e) => panic!("transport: {e}"),
    };
    let mut text = String::new();
    let _ = resp.into_reader().take(1 << 16).read_to_string(&mut text);
    (status, text)
}

/// One frame to send: its region, index, manifest entry and bytes.
struct Frame {
    region: RegionName,
    index: usize,
    chunk: imgtool::manifest::Chunk,
    bytes: Vec<u8>,
}

fn region_name(number: u32) -> RegionName {
    match number {
        0 => RegionName::Head,
        n => RegionName::Partition(n),
    }
}

/// The frames of the captured image `dir`, in the manifest's order.
fn frames_of(dir: &Path, m: &Manifest) -> Vec<Frame> {
    let mut out = vec![];
    for r in &m.regions {
        let payload = std::fs::read(dir.join(&r.payload)).unwrap();
        let region = region_name(r.number);
        for (index, c) in r.chunks.iter().enumerate() {
            let at = c.payload_offset as usize;
            out.push(Frame {
                region,
                index,
                chunk: c.clone(),
                bytes: payload[at..at + c.compressed_length as usize].to_vec(),
            });
        }
    }
    out
}

/// The answers of one replayed upload: every frame's, the layout's, the manifest's.
struct Replay {
    frames: Vec<(u16, String)>,
    layout: (u16, String),
    manifest: (u16, String),
}

/// Uploads `frames`, `layout` and `manifest` to `s` with `token`, one request at a time,
/// going on after a refused frame (to see what the server says next).
fn replay(s: &Server, token: &str, m: &Manifest, layout: &[u8], frames: &[Frame]) -> Replay {
    replay_text(s, token, m, &m.to_json(), layout, frames)
}

/// [`replay`] with the manifest sent as `text` (`m` gives its chunk size).
fn replay_text(
    s: &Server,
    token: &str,
    m: &Manifest,
    manifest_text: &str,
    layout: &[u8],
    frames: &[Frame],
) -> Replay {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let base = format!("http://{}/upload/{GROUP}", s.addr);
    let (code, text) = send(
        agent.post(&format!("{base}?chunk_size={}", m.chunk_size)),
        token,
        &[],
    );
    assert_eq!(code, 201, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let session = v["session"].as_str().unwrap().to_string();
    let mut answers = vec![];
    for f in frames {
        let c = &f.chunk;
        let mut req = agent
            .put(&format!("{base}/{session}/{}/{}", f.region.name(), f.index))
            .set("X-Payload-Offset", &c.payload_offset.to_string())
            .set("X-Raw-Length", &c.length.to_string())
            .set("X-Frame-Sha256", &c.frame_sha256);
        // As our client does: an empty raw sha256 is left to the server.
        if !c.sha256.is_empty() {
            req = req.set("X-Raw-Sha256", &c.sha256);
        }
        answers.push(send(req, token, &f.bytes));
    }
    let layout = send(
        agent.put(&format!("{base}/{session}/layout")),
        token,
        layout,
    );
    let manifest = send(
        agent.put(&format!("{base}/{session}/manifest")),
        token,
        manifest_text.as_bytes(),
    );
    Replay {
        frames: answers,
        layout,
        manifest,
    }
}

/// A local capture, a server on an empty image root, and the capture's manifest and
/// layout: what a replayed upload starts from.
struct Replaying {
    c: Captured,
    root: PathBuf,
    s: Server,
    m: Manifest,
    layout: Vec<u8>,
}

fn replaying() -> Replaying {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let (m, layout) = load(&c.image);
    Replaying {
        c,
        root,
        s,
        m,
        layout,
    }
}

fn load(dir: &Path) -> (Manifest, Vec<u8>) {
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest")).unwrap()).unwrap();
    (m, std::fs::read(dir.join("layout")).unwrap())
}

#[test]
fn a_frame_that_decodes_to_other_raw_bytes_than_declared_publishes_nothing_naming_the_chunk() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let (mut m, layout) = load(&c.image);
    // The replay client is a faithful one: unchanged, it publishes the local capture.
    let r = replay(&s, TOKEN, &m, &layout, &frames_of(&c.image, &m));
    assert!(r.frames.iter().all(|(code, _)| *code == 204));
    assert_eq!(r.manifest.0, 201, "{}", r.manifest.1);
    assert!(r.manifest.1.contains(&m.image_id), "{}", r.manifest.1);
    let before = published(&root);

    // The lie: the last chunk of the largest region holds other raw bytes (one byte
    // changed) compressed to a frame whose sha256, length and manifest entry are all
    // consistent; only the raw sha256 is the original's. Sent last, so no later frame
    // can meet the failure first: the commit must.
    let ri = (0..m.regions.len())
        .max_by_key(|&i| m.regions[i].chunks.len())
        .unwrap();
    let j = m.regions[ri].chunks.len() - 1;
    let name = region_name(m.regions[ri].number);
    let mut frames = frames_of(&c.image, &m);
    frames.sort_by_key(|f| f.region == name); // stable: that region's frames last
    let last = frames.last_mut().unwrap();
    assert_eq!((last.region, last.index), (name, j));
    let mut raw = zstd::bulk::decompress(&last.bytes, m.chunk_size as usize).unwrap();
    raw[0] ^= 0xff;
    let forged = imgtool::frame::compress_chunk(&raw, m.level, m.chunk_size).unwrap();
    let entry = &mut m.regions[ri].chunks[j];
    entry.compressed_length = forged.len() as u64;
    entry.frame_sha256 = hex::encode(Sha256::digest(&forged));
    last.chunk = entry.clone();
    last.bytes = forged;
    let what = format!("region {} chunk {j}", name.name());
    m.image_id = m.compute_id();

    let r = replay(&s, TOKEN2, &m, &layout, &frames);
    // Every frame's PUT was answered 204: its frame sha256 was right (the raw check is
    // deferred); the layout too; the commit waited for the raw checks and refused.
    assert!(
        r.frames.iter().all(|(code, _)| *code == 204),
        "{:?}",
        r.frames
    );
    assert_eq!(r.layout.0, 204, "{}", r.layout.1);
    let (code, text) = &r.manifest;
    assert_eq!(*code, 422, "{text}");
    assert!(
        text.contains(&what) && text.contains("raw sha256"),
        "{text}"
    );
    assert_eq!(published(&root), before, "something was published");
    assert!(sessions_left(&root).is_empty());
    let log = s.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("nothing published") && l.contains(&what)),
        "{log}"
    );
    assert_eq!(current_id(&root, GROUP), Some(image_id(&c.image)));
}

/// `m` with every chunk's raw sha256 and the image id left to the server, as our
/// client sends it; `frames` to match.
fn leave_raw_sums(m: &Manifest, frames: &mut [Frame]) -> Manifest {
    let mut m = m.clone();
    m.image_id.clear();
    for r in &mut m.regions {
        for c in &mut r.chunks {
            c.sha256.clear();
        }
    }
    for f in frames {
        f.chunk.sha256.clear();
    }
    m
}

#[test]
fn raw_hashes_left_to_the_server_give_the_local_captures_manifest_byte_for_byte() {
    let Replaying {
        c,
        root,
        s,
        m,
        layout,
    } = replaying();
    let mut frames = frames_of(&c.image, &m);
    let sent = leave_raw_sums(&m, &mut frames);
    assert!(sent
        .regions
        .iter()
        .all(|r| r.chunks.iter().all(|c| c.sha256.is_empty())));
    let r = replay(&s, TOKEN, &sent, &layout, &frames);
    assert!(
        r.frames.iter().all(|(code, _)| *code == 204),
        "{:?}",
        r.frames
    );
    assert_eq!(r.manifest.0, 201, "{}", r.manifest.1);
    assert!(r.manifest.1.contains(&m.image_id), "{}", r.manifest.1);
    // The server computed every raw sha256 and the id: the published manifest is the
    // one the local capture wrote, byte for byte.
    let version = format!("{GROUP}@{}", &m.image_id[..12]);
    assert_eq!(
        std::fs::read(root.join(&version).join("manifest")).unwrap(),
        std::fs::read(c.image.join("manifest")).unwrap()
    );
    assert_eq!(current_id(&root, GROUP), Some(m.image_id.clone()));
}

#[test]
fn frames_sent_without_raw_hashes_are_held_to_the_hashes_the_manifest_declares() {
    // Faithful frames without X-Raw-Sha256, the manifest with every hash given: the
    // server's own sums (not the empty headers) are what the manifest is checked
    // against, so it publishes, as sent.
    let Replaying {
        c, s, m, layout, ..
    } = replaying();
    let mut frames = frames_of(&c.image, &m);
    leave_raw_sums(&m, &mut frames);
    let r = replay(&s, TOKEN, &m, &layout, &frames);
    assert_eq!(r.manifest.0, 201, "{}", r.manifest.1);
    assert!(r.manifest.1.contains(&m.image_id), "{}", r.manifest.1);
    assert!(
        s.log_text().contains(" 0 raw sha256s taken here"),
        "{}",
        s.log_text()
    );
}

#[test]
fn raw_hashes_left_to_the_server_still_hold_the_client_to_its_frames() {
    let Replaying {
        c,
        root,
        s,
        m,
        layout,
    } = replaying();
    let ri = (0..m.regions.len())
        .max_by_key(|&i| m.regions[i].chunks.len())
        .unwrap();
    let name = region_name(m.regions[ri].number);
    let what = format!("region {} chunk 0", name.name());
    let at = |frames: &[Frame]| {
        frames
            .iter()
            .position(|f| (f.region, f.index) == (name, 0))
            .unwrap()
    };
    // A frame refused by its raw check, which runs on the verifier: a later frame's
    // PUT may meet the failure first, else the commit does. Either way the chunk is
    // named and nothing published.
    let refused_at_a_raw_check = |r: &Replay, what: &str, why: &str| {
        let (code, text) = r
            .frames
            .iter()
            .chain([&r.layout, &r.manifest])
            .find(|(code, _)| *code != 204)
            .unwrap();
        assert_eq!(*code, 422, "{text}");
        assert!(text.contains(what) && text.contains(why), "{text}");
        assert_eq!(r.manifest.0, 422, "{}", r.manifest.1);
        assert!(published(&root).is_empty(), "something was published");
        assert!(sessions_left(&root).is_empty());
    };
    let refused = |r: &Replay, needles: &[&str]| {
        assert!(
            r.frames.iter().all(|(code, _)| *code == 204),
            "{:?}",
            r.frames
        );
        let (code, text) = &r.manifest;
        assert_eq!(*code, 422, "{text}");
        for n in needles {
            assert!(text.contains(n), "{n:?} not in {text}");
        }
        assert!(
            published(&root).is_empty(),
            "something was published: {text}"
        );
        assert!(sessions_left(&root).is_empty());
    };

    // Chunk 0 of that region sent as `bytes` (its entry and every later frame's offset
    // made consistent with its length), without a raw hash.
    let swap = |sent: &mut Manifest, frames: &mut [Frame], bytes: Vec<u8>| {
        let k = at(frames);
        let old_len = sent.regions[ri].chunks[0].compressed_length as i64;
        let entry = &mut sent.regions[ri].chunks[0];
        entry.compressed_length = bytes.len() as u64;
        entry.frame_sha256 = hex::encode(Sha256::digest(&bytes));
        frames[k].chunk = entry.clone();
        frames[k].chunk.sha256.clear();
        frames[k].bytes = bytes;
        let delta = frames[k].chunk.compressed_length as i64 - old_len;
        for (i, c) in sent.regions[ri].chunks.iter_mut().enumerate().skip(1) {
            c.payload_offset = (c.payload_offset as i64 + delta) as u64;
            let j = frames
                .iter()
                .position(|f| (f.region, f.index) == (name, i))
                .unwrap();
            frames[j].chunk.payload_offset = c.payload_offset;
        }
    };
    let raw0 = || {
        let frames = frames_of(&c.image, &m);
        zstd::bulk::decompress(&frames[at(&frames)].bytes, m.chunk_size as usize).unwrap()
    };

    // 1. The manifest declares a chunk's raw sha256 that is not its frame's: the frame
    //    holds other raw bytes (consistent frame sha256), sent without a raw hash.
    let mut frames = frames_of(&c.image, &m);
    let mut sent = leave_raw_sums(&m, &mut frames);
    let mut raw = raw0();
    raw[0] ^= 0xff;
    let forged = imgtool::frame::compress_chunk(&raw, m.level, m.chunk_size).unwrap();
    swap(&mut sent, &mut frames, forged);
    sent.regions[ri].chunks[0].sha256 = m.regions[ri].chunks[0].sha256.clone();
    let r = replay(&s, TOKEN, &sent, &layout, &frames);
    refused(&r, &[&what, "not the frame received"]);

    // 2. Raw hashes left to the server, but an image id named: refused, nothing guessed.
    let mut frames = frames_of(&c.image, &m);
    let mut sent = leave_raw_sums(&m, &mut frames);
    sent.image_id = m.image_id.clone();
    let r = replay(&s, TOKEN, &sent, &layout, &frames);
    refused(&r, &["leaves", "raw sha256s to the server"]);

    // 3. A frame whose zstd content checksum is wrong (its last byte), sent with a
    //    consistent frame sha256 and no raw hash: the server's decode refuses it.
    let mut frames = frames_of(&c.image, &m);
    let mut sent = leave_raw_sums(&m, &mut frames);
    let k = at(&frames);
    let f = &mut frames[k];
    *f.bytes.last_mut().unwrap() ^= 0x5a;
    f.chunk.frame_sha256 = hex::encode(Sha256::digest(&f.bytes));
    sent.regions[ri].chunks[0].frame_sha256 = f.chunk.frame_sha256.clone();
    let r = replay(&s, TOKEN, &sent, &layout, &frames);
    refused_at_a_raw_check(&r, &what, "checksum");

    // 4. The right bytes as one frame without a content checksum, no raw hash declared:
    //    the server has nothing to tie its own raw sha256 to. Refused at its raw check.
    let mut frames = frames_of(&c.image, &m);
    let mut sent = leave_raw_sums(&m, &mut frames);
    let mut z = zstd::bulk::Compressor::new(m.level).unwrap();
    let wlog = m.chunk_size.trailing_zeros();
    z.set_parameter(zstd::stream::raw::CParameter::WindowLog(wlog))
        .unwrap();
    z.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(false))
        .unwrap();
    swap(&mut sent, &mut frames, z.compress(&raw0()).unwrap());
    let r = replay(&s, TOKEN, &sent, &layout, &frames);
    refused_at_a_raw_check(&r, &what, "content checksum");

    // 5. Hashes left to the server in a manifest not written as the server writes one
    //    (a field it does not know would be dropped, the id changed): refused.
    let mut frames = frames_of(&c.image, &m);
    let sent = leave_raw_sums(&m, &mut frames);
    let text = sent
        .to_json()
        .replacen('{', "{\n  \"from_a_newer_client\": 1,", 1);
    let r = replay_text(&s, TOKEN, &sent, &text, &layout, &frames);
    refused(&r, &["not written as this server writes one"]);

    // The faithful upload still publishes with the same token (nothing spent it).
    let mut frames = frames_of(&c.image, &m);
    let sent = leave_raw_sums(&m, &mut frames);
    let r = replay(&s, TOKEN, &sent, &layout, &frames);
    assert_eq!(r.manifest.0, 201, "{}", r.manifest.1);
    assert_eq!(current_id(&root, GROUP), Some(m.image_id.clone()));
}

#[test]
fn a_byte_flipped_in_transit_is_refused_at_its_own_put() {
    let Replaying {
        c,
        root,
        s,
        m,
        layout,
    } = replaying();
    let mut frames = frames_of(&c.image, &m);
    assert!(frames.len() >= 3, "{} frames", frames.len());
    let k = frames.len() / 2;
    let f = &mut frames[k];
    let mid = f.bytes.len() / 2;
    f.bytes[mid] ^= 1;
    let what = format!("region {} chunk {}", f.region.name(), f.index);
    let r = replay(&s, TOKEN, &m, &layout, &frames);
    // Every frame before it accepted; it refused at once, naming itself; every later
    // request told the session ended for that reason.
    assert!(r.frames[..k].iter().all(|(code, _)| *code == 204));
    let (code, text) = &r.frames[k];
    assert_eq!(*code, 422, "{text}");
    assert!(
        text.contains(&what) && text.contains("frame sha256"),
        "{text}"
    );
    for (code, text) in r.frames[k + 1..].iter().chain([&r.layout, &r.manifest]) {
        assert_eq!(*code, 422, "{text}");
        assert!(text.contains("ended") && text.contains(&what), "{text}");
    }
    assert!(published(&root).is_empty(), "something was published");
    assert!(sessions_left(&root).is_empty());
}

/// A gate the test's jobs wait at until it opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut o = self.open.lock().unwrap();
        while !*o {
            o = self.cv.wait(o).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Waits (not a timed assertion: a guard against a hang) until `cond`.
fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `n` submitters of jobs of `bytes` each that wait at `gate`; returns how many
/// `submit`s returned and their threads.
fn submit_many(
    v: &Arc<Verifier>,
    of: &Arc<Verification>,
    gate: &Arc<Gate>,
    n: usize,
    bytes: u64,
) -> (Arc<AtomicUsize>, Vec<std::thread::JoinHandle<()>>) {
    let admitted = Arc::new(AtomicUsize::new(0));
    let threads = (0..n)
        .map(|i| {
            let (v, of, gate, admitted) = (v.clone(), of.clone(), gate.clone(), admitted.clone());
            std::thread::spawn(move || {
                let job = Job {
                    bytes,
                    check: Box::new(move || {
                        gate.pass();
                        match i {
                            7 => Err(Refusal::new(422, "region p2 chunk 7: raw sha256 x")),
                            _ => Ok(()),
                        }
                    }),
                };
                v.submit(job, &of);
                admitted.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    (admitted, threads)
}

#[test]
fn the_verifier_holds_at_most_its_bound_of_frames_and_bytes() {
    // By count: 1 worker, 3 frames. The worker's job waits at the gate, so after 3
    // submits every further one waits: exactly 3 admitted of 20.
    let v = Arc::new(Verifier::with_bounds(1, 3, u64::MAX).unwrap());
    let of = Verification::new();
    let gate = Arc::new(Gate::default());
    let (admitted, threads) = submit_many(&v, &of, &gate, 20, 1000);
    until("3 frames held", || v.held().frames == 3);
    // Give the other 17 every chance to get in (they are waiting, not slow): the count
    // must not move.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(admitted.load(Ordering::SeqCst), 3);
    assert_eq!(v.held().frames, 3);
    gate.open();
    for t in threads {
        t.join().unwrap();
    }
    // The commit's wait sees every job done and the one failure, naming its chunk.
    let e = of.wait().unwrap_err();
    assert!(e.1.contains("region p2 chunk 7"), "{e:?}");
    assert_eq!(of.checked(), 19);
    let held = v.held();
    assert_eq!((held.frames, held.bytes, held.peak_frames), (0, 0, 3));

    // By bytes: 2500 bytes of 1000-byte frames is 2 frames; one frame larger than the
    // whole bound still goes through (alone).
    let v = Arc::new(Verifier::with_bounds(1, 100, 2500).unwrap());
    let of = Verification::new();
    let gate = Arc::new(Gate::default());
    let (admitted, threads) = submit_many(&v, &of, &gate, 6, 1000);
    until("2 frames held", || v.held().frames == 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(admitted.load(Ordering::SeqCst), 2);
    assert_eq!(v.held().bytes, 2000);
    gate.open();
    for t in threads {
        t.join().unwrap();
    }
    of.wait().unwrap();
    assert_eq!(of.checked(), 6);
    assert_eq!(v.held().peak_bytes, 2000);
    let big = Verification::new();
    v.submit(
        Job {
            bytes: 10_000,
            check: Box::new(|| Ok(())),
        },
        &big,
    );
    assert_eq!(big.wait(), Ok(()));
    assert_eq!(big.checked(), 1);

    // A cancelled session's queued frames are dropped unchecked (its commit never
    // comes); the wait still ends.
    let v = Arc::new(Verifier::with_bounds(1, 10, u64::MAX).unwrap());
    let of = Verification::new();
    let gate = Arc::new(Gate::default());
    let (admitted, threads) = submit_many(&v, &of, &gate, 5, 1);
    until("5 admitted", || admitted.load(Ordering::SeqCst) == 5);
    of.cancel();
    gate.open();
    for t in threads {
        t.join().unwrap();
    }
    of.wait().unwrap();
    assert!(
        of.checked() <= 1,
        "{} checked after the cancel",
        of.checked()
    );
}

#[test]
fn every_frame_of_a_real_upload_is_raw_checked_within_the_servers_bound() {
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let rep = upload(&c.master, &s.url(), TOKEN, &["--chunk-size", "64K"]).unwrap();
    let id = rep["image_id"].as_str().unwrap().to_string();
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("published"))
        .unwrap_or_else(|| panic!("{log}"));
    let num = |after: &str| -> u64 {
        let rest = line.split(after).next().unwrap();
        rest.rsplit([' ', '(']).next().unwrap().parse().unwrap()
    };
    let (chunks, checked) = (num(" chunks,"), num(" raw-checked"));
    let (frames, bytes) = (num(" frames,"), num(" bytes)"));
    // Many frames (64 KiB chunks), every one raw-checked before the publish.
    assert!(chunks > 100, "{line}");
    assert_eq!(checked, chunks, "{line}");
    assert!((1..=VERIFY_MAX_FRAMES as u64).contains(&frames), "{line}");
    assert!(bytes <= VERIFY_MAX_BYTES, "{line}");
    assert_eq!(current_id(&root, GROUP).as_deref(), Some(id.as_str()));
}

/// A TCP proxy that counts the connections it accepted.
fn counting_proxy(upstream: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut client) = c else { return };
            n.fetch_add(1, Ordering::SeqCst);
            let Ok(mut server) = std::net::TcpStream::connect(upstream) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client, &mut server);
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, count)
}

#[test]
fn the_client_keeps_its_connections_for_every_frame() {
    // ureq keeps one idle connection per host unless told otherwise: the other senders
    // opened a new connection (handshake, slow start) for every frame.
    let c = captured_files();
    let root = c.dir.join("images");
    let s = Server::start(&c.dir, &root, &[]);
    let (addr, conns) = counting_proxy(s.addr);
    let rep = upload(
        &c.master,
        &format!("http://{addr}/{GROUP}"),
        TOKEN,
        &["--chunk-size", "64K"],
    )
    .unwrap();
    let log = s.log_text();
    let line = log.lines().find(|l| l.contains("published")).unwrap();
    assert!(line.contains(" chunks,"), "{line}");
    let senders = imgtool::upload::client::SENDERS;
    let n = conns.load(Ordering::SeqCst);
    // 174 frames here; at most one connection per sender (the begin's is reused), all
    // kept (the upload is far shorter than the server's 15 s keep-alive limit). Before
    // the fix: 10 on an idle machine, more when the senders are busy at once.
    assert!(
        n <= 2 * senders + 2,
        "{n} connections for an upload ({rep})"
    );
}
