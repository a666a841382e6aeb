//! The uploading side: [`capture_to_server`] captures a disk with the capture pipeline
//! (all cores, the same bytes and image id as a local capture) into an [`UploadSink`],
//! which sends each frame to `imgtool serve` as soon as it is compressed — nothing is
//! staged locally, so a node's small ramdisk is enough. Frames go out on
//! [`SENDERS`] connections at once (the server writes each at its payload offset, so
//! order does not matter), at most [`QUEUE`] more wait: the client holds at most
//! `SENDERS + QUEUE` compressed frames (8 × at most one `chunk_size`, 64 MiB at the
//! default 8 MiB chunks, typically far less since frames are compressed). The server
//! answers a frame once it arrived, its frame sha256 matched and it was written (the
//! raw check runs later, see [`super::verify`]), so a connection is busy for little
//! more than the frame's transfer: four of them keep a link busy across the round
//! trips and the pauses between two of a connection's requests. No request is retried: a cut upload fails, and running it again starts a new
//! session (the token stays valid until an upload with it publishes).

use super::wire::{
    check_token, cut, RegionName, H_FRAME_SHA256, H_PAYLOAD_OFFSET, H_RAW_LENGTH, H_RAW_SHA256,
};
use crate::capture::{capture_into, CaptureOptions, ImageSink};
use crate::disk::BlockIo;
use crate::error::{Error, Result};
use crate::manifest::{Chunk, Image, Manifest, Region};
use crate::progress::Progress;
use netboot_proto::names::{name, Kind};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections frames are sent on at once (at most the server's
/// [`super::server::MAX_IN_FLIGHT`]).
pub const SENDERS: usize = 4;

/// Frames waiting for a connection, at most.
pub const QUEUE: usize = 4;

/// How long a request may wait for the server (a frame's answer comes after the server
/// checked its frame sha256 and wrote it, and had room to queue its raw check; the
/// manifest's after it checked every frame and published the whole image).
const FRAME_TIMEOUT: Duration = Duration::from_secs(120);
const COMMIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why an upload failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    /// The server answered with an error; `msg` is its reason (which names the region
    /// and chunk for a frame).
    #[error("{url}: the server refused the upload (HTTP {status}): {msg}")]
    Refused {
        url: String,
        status: u16,
        msg: String,
    },
    /// The connection failed (refused, cut, timed out).
    #[error("{url}: {msg}")]
    Transport { url: String, msg: String },
    #[error("{url}: unexpected answer: {msg}")]
    BadAnswer { url: String, msg: String },
    /// The URL or token cannot be used.
    #[error("{0}")]
    BadTarget(String),
}

/// Where an upload goes: `base` (`http://server:port`), the group, and the token.
#[derive(Clone)]
pub struct UploadTarget {
    pub base: String,
    pub group: String,
    pub token: String,
}

impl std::fmt::Debug for UploadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        write!(f, "UploadTarget({}/{})", self.base, self.group)
    }
}

impl UploadTarget {
    /// `url` is `http://server[:port][/prefix]/<group>`; its last segment is the group.
    pub fn parse(url: &str, token: &str) -> std::result::Result<UploadTarget, UploadError> {
        crate::source::check_url(url).map_err(|e| UploadError::BadTarget(format!("{url}: {e}")))?;
        let trimmed = url.trim_end_matches('/');
        let (base, group) = trimmed
            .rsplit_once('/')
            .filter(|(b, _)| b.len() > "http://".len())
            .ok_or_else(|| {
                UploadError::BadTarget(format!("{url}: name the group: http://server:port/<group>"))
            })?;
        name(Kind::Image, group)
            .map_err(|(_, why)| UploadError::BadTarget(format!("{url}: {why}")))?;
        check_token(token).map_err(|why| UploadError::BadTarget(format!("upload token: {why}")))?;
        Ok(UploadTarget {
            base: base.to_string(),
            group: group.to_string(),
            token: token.to_string(),
        })
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/upload/{}{rest}", self.base, self.group)
    }
}

/// What a finished upload published.
#[derive(Debug, Clone)]
pub struct UploadReport {
    pub manifest: Manifest,
    pub image_id: String,
    /// `<group>@<id12>`.
    pub version: String,
    /// The version's URL (`http://server:port/<group>@<id12>`).
    pub url: String,
    /// Bytes sent (frames, layout, manifest).
    pub bytes_sent: u64,
}

/// Captures `disk` and uploads it to `target` while capturing. Same options, same
/// pipeline and same image (same id) as `capture` into a directory, but the chunks'
/// raw sha256s are taken by the server, which decompresses and hashes every frame to
/// check it anyway ([`CaptureOptions::hash_raw`]): the node does not hash the raw bytes
/// a second time. So the image id is the server's; the manifest it published is then
/// read back and must be, raw hashes aside, the one this capture made.
pub fn capture_to_server(
    disk: &dyn BlockIo,
    disk_name: &Path,
    opts: &CaptureOptions,
    target: &UploadTarget,
    progress: &Progress,
) -> Result<UploadReport> {
    let opts = CaptureOptions {
        hash_raw: false,
        ..opts.clone()
    };
    let mut sink = UploadSink::begin(target, opts.chunk_size)?;
    let made = capture_into(disk, disk_name, &mut sink, &opts, progress)?;
    let done = sink
        .committed
        .as_ref()
        .ok_or_else(|| UploadError::BadAnswer {
            url: target.url(""),
            msg: "the capture ended without publishing".into(),
        })?;
    let hex64 = done.image_id.len() == 64
        && done
            .image_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex64 || done.version != format!("{}@{}", target.group, &done.image_id[..12]) {
        return Err(UploadError::BadAnswer {
            url: target.url(""),
            msg: format!(
                "the server's answer names version {:?} of image {:?}, not <group>@<id12> of a sha256",
                cut(&done.version),
                cut(&done.image_id)
            ),
        }
        .into());
    }
    let url = format!("{}/{}", target.base, done.version);
    let published = Image::fetch(&url)?.manifest;
    let mismatch = |why: String| UploadError::BadAnswer {
        url: url.clone(),
        msg: why,
    };
    if published.image_id != done.image_id {
        return Err(mismatch(format!(
            "the server said it published image {}, its manifest is image {}",
            done.image_id, published.image_id
        ))
        .into());
    }
    if !same_but_raw_sums(&made, &published) {
        return Err(mismatch(format!(
            "the server published image {} as {}, but it is not the one this capture sent (its regions, chunks or frames differ): it is current now; `imgtool rollback` on the server makes the previous version current again",
            published.image_id, done.version
        ))
        .into());
    }
    Ok(UploadReport {
        image_id: done.image_id.clone(),
        url,
        version: done.version.clone(),
        bytes_sent: sink.sent.load(Ordering::Relaxed),
        manifest: published,
    })
}

/// Whether `published` is `made` with the raw sha256s `made` left empty filled in
/// (and its image id).
fn same_but_raw_sums(made: &Manifest, published: &Manifest) -> bool {
    let mut filled = published.clone();
    filled.image_id = made.image_id.clone();
    for (f, m) in filled.regions.iter_mut().zip(&made.regions) {
        for (fc, mc) in f.chunks.iter_mut().zip(&m.chunks) {
            if mc.sha256.is_empty() {
                fc.sha256.clear();
            }
        }
    }
    filled == *made
}

#[derive(serde::Deserialize)]
struct Committed {
    image_id: String,
    version: String,
}

struct FrameJob {
    region: RegionName,
    index: usize,
    chunk: Chunk,
    frame: Vec<u8>,
}

/// An [`ImageSink`] that uploads: a session on the server, frames sent by
/// [`SENDERS`] threads, the layout and manifest (which publishes) at the end. Dropped
/// before it published, it tells the server to end the session.
pub struct UploadSink {
    target: UploadTarget,
    agent: ureq::Agent,
    session: String,
    tx: Option<SyncSender<FrameJob>>,
    senders: Vec<JoinHandle<()>>,
    failed: Arc<Mutex<Option<UploadError>>>,
    sent: Arc<AtomicU64>,
    committed: Option<Committed>,
}

impl UploadSink {
    /// Opens a session for frames of at most `chunk_size` raw bytes.
    pub fn begin(target: &UploadTarget, chunk_size: u64) -> Result<UploadSink> {
        // ureq keeps one idle connection per host by default: the other senders' would
        // be closed after each frame and a new one opened (a handshake and TCP slow
        // start per frame).
        let agent = ureq::AgentBuilder::new()
            .max_idle_connections_per_host(SENDERS + 1)
            .redirects(0)
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(FRAME_TIMEOUT)
            .timeout_write(FRAME_TIMEOUT)
            .build();
        let url = target.url(&format!("?chunk_size={chunk_size}"));
        let answer = call(agent.post(&url), &target.token, &url, &[])?;
        #[derive(serde::Deserialize)]
        struct Begun {
            session: String,
        }
        let begun: Begun = serde_json::from_slice(&answer).map_err(|e| UploadError::BadAnswer {
            url: url.clone(),
            msg: format!("no session id: {e}"),
        })?;
        super::wire::check_session(&begun.session).map_err(|e| UploadError::BadAnswer {
            url,
            msg: e.to_string(),
        })?;
        let (tx, rx) = sync_channel::<FrameJob>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let mut senders = vec![];
        for _ in 0..SENDERS {
            let sender = Sender {
                agent: agent.clone(),
                target: target.clone(),
                session: begun.session.clone(),
                rx: rx.clone(),
                failed: failed.clone(),
                sent: sent.clone(),
            };
            let h = std::thread::Builder::new()
                .name("upload".into())
                .spawn(move || sender.run())
                .map_err(|e| Error::io("starting an upload thread for", &target.base, e))?;
            senders.push(h);
        }
        Ok(UploadSink {
            target: target.clone(),
            agent,
            session: begun.session,
            tx: Some(tx),
            senders,
            failed,
            sent,
            committed: None,
        })
    }

    fn failure(&self) -> Option<UploadError> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Waits for every frame's answer.
    fn drain(&mut self) -> Result<()> {
        self.tx = None;
        for h in self.senders.drain(..) {
            let _ = h.join();
        }
        match self.failure() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn put(&self, what: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let url = self.target.url(&format!("/{}/{what}", self.session));
        let answer = call(
            self.agent.put(&url).timeout(timeout),
            &self.target.token,
            &url,
            body,
        )?;
        self.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(answer)
    }
}

impl ImageSink for UploadSink {
    fn begin_region(&mut self, _: &Region) -> Result<()> {
        Ok(())
    }

    fn frame(
        &mut self,
        region: &Region,
        index: usize,
        chunk: &Chunk,
        frame: Vec<u8>,
    ) -> Result<()> {
        if let Some(e) = self.failure() {
            return Err(e.into());
        }
        let region = if region.number == 0 {
            RegionName::Head
        } else {
            RegionName::Partition(region.number)
        };
        let job = FrameJob {
            region,
            index,
            chunk: chunk.clone(),
            frame,
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        match sent {
            true => Ok(()),
            false => Err(self
                .failure()
                .unwrap_or_else(|| UploadError::BadTarget("the upload threads ended".into()))
                .into()),
        }
    }

    fn end_region(&mut self, _: &Region) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, layout: &[u8], manifest: &[u8]) -> Result<()> {
        self.drain()?;
        self.put("layout", layout, FRAME_TIMEOUT)?;
        let answer = self.put("manifest", manifest, COMMIT_TIMEOUT)?;
        let done: Committed =
            serde_json::from_slice(&answer).map_err(|e| UploadError::BadAnswer {
                url: self.target.url(""),
                msg: format!("no image id and version in the answer: {e}"),
            })?;
        self.committed = Some(done);
        Ok(())
    }
}

impl Drop for UploadSink {
    fn drop(&mut self) {
        let _ = self.drain();
        if self.committed.is_none() {
            // Best effort: the server also ends a session that stays idle.
            let url = self.target.url(&format!("/{}", self.session));
            let _ = call(
                self.agent.delete(&url).timeout(Duration::from_secs(5)),
                &self.target.token,
                &url,
                &[],
            );
        }
    }
}

/// One sending thread: takes frames off the queue and PUTs them, until the queue
/// closes. After the first failure (of any thread) it only drains the queue.
struct Sender {
    agent: ureq::Agent,
    target: UploadTarget,
    session: String,
    rx: Arc<Mutex<Receiver<FrameJob>>>,
    failed: Arc<Mutex<Option<UploadError>>>,
    sent: Arc<AtomicU64>,
}

impl Sender {
    fn run(self) {
        loop {
            let job = match self.rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else {
                return;
            };
            if self.failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                continue;
            }
            if let Err(e) = self.send(&job) {
                if let Ok(mut f) = self.failed.lock() {
                    f.get_or_insert(e);
                }
            }
        }
    }

    fn send(&self, job: &FrameJob) -> std::result::Result<(), UploadError> {
        let url = self.target.url(&format!(
            "/{}/{}/{}",
            self.session,
            job.region.name(),
            job.index
        ));
        let c = &job.chunk;
        let mut req = self
            .agent
            .put(&url)
            .set(H_PAYLOAD_OFFSET, &c.payload_offset.to_string())
            .set(H_RAW_LENGTH, &c.length.to_string())
            .set(H_FRAME_SHA256, &c.frame_sha256);
        // Left empty by a capture that leaves the raw hashes to the server.
        if !c.sha256.is_empty() {
            req = req.set(H_RAW_SHA256, &c.sha256);
        }
        call(req, &self.target.token, &url, &job.frame)?;
        self.sent
            .fetch_add(job.frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Sends `body` with the token; the answer's body (at most 64 KiB) or why it failed.
fn call(
    req: ureq::Request,
    token: &str,
    url: &str,
    body: &[u8],
) -> std::result::Result<Vec<u8>, UploadError> {
    let answer = req
        .set("Authorization", &format!("Bearer {token}"))
        .send_bytes(body);
    let read = |r: ureq::Response| {
        let mut out = vec![];
        let _ = r.into_reader().take(64 << 10).read_to_end(&mut out);
        out
    };
    match answer {
        Ok(r) => Ok(read(r)),
        Err(ureq::Error::Status(status, r)) => Err(UploadError::Refused {
            url: url.to_string(),
            status,
            msg: String::from_utf8_lossy(&read(r)).trim().to_string(),
        }),
        Err(e) => Err(UploadError::Transport {
            url: url.to_string(),
            msg: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as our client sends it (raw hashes and id left to the server) and the
    /// one a server publishes from it.
    fn made_and_published() -> (Manifest, Manifest) {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/upload_manifest/left_to_server");
        let made: Manifest = serde_json::from_slice(&std::fs::read(seed).unwrap()).unwrap();
        assert!(made.image_id.is_empty());
        let mut published = made.clone();
        for r in &mut published.regions {
            for (i, c) in r.chunks.iter_mut().enumerate() {
                c.sha256 = format!("{i:064x}");
            }
        }
        published.image_id = published.compute_id();
        (made, published)
    }

    #[test]
    fn the_published_manifest_must_be_the_one_sent_with_the_raw_hashes_filled() {
        let (made, published) = made_and_published();
        assert!(same_but_raw_sums(&made, &published));
        let differs = |change: &dyn Fn(&mut Manifest)| {
            let mut p = published.clone();
            change(&mut p);
            !same_but_raw_sums(&made, &p)
        };
        assert!(differs(
            &|p| p.regions[1].chunks[0].frame_sha256 = "0".repeat(64)
        ));
        assert!(differs(&|p| p.regions[1].chunks[2].compressed_length += 1));
        assert!(differs(&|p| {
            let extra = p.regions[1].chunks[0].clone();
            p.regions[1].chunks.push(extra)
        }));
        assert!(differs(&|p| {
            let extra = p.regions[0].clone();
            p.regions.push(extra)
        }));
        assert!(differs(&|p| p.regions[1].uuid = Some("other".into())));
        assert!(differs(&|p| p.level += 1));
        // A hash the client gave is the client's: the server may not change it.
        let mut sent = made.clone();
        sent.regions[1].chunks[0].sha256 = "a".repeat(64);
        let mut p = published.clone();
        p.regions[1].chunks[0].sha256 = "b".repeat(64);
        assert!(!same_but_raw_sums(&sent, &p));
        p.regions[1].chunks[0].sha256 = "a".repeat(64);
        assert!(same_but_raw_sums(&sent, &p));
    }
}
