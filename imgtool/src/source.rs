//! Where an image's files come from: [`LocalDir`] (a directory) or [`HttpSource`] (any
//! HTTP server holding the image root: `imgtool serve`, nginx, …). Readers ask for whole
//! small files (`layout`, `manifest`), byte ranges of payloads (one chunk's frame), or
//! open a range as a stream (the rest of a region's payload: a relay sends each frame as
//! soon as it has verified it, so a chain of relays runs as one pipe). A broken stream is
//! reopened at the first frame not yet read — a transfer never restarts from zero.
//!
//! Whole files go through ureq, one agent per [`HttpSource`]; byte ranges (a frame, a
//! region's stream) through [`client`], which opens its own sockets so that TCP
//! keepalive tells a dead upstream (powered off, silent) from a quiet one (a live relay
//! waiting for its own upstream) in about 2 s, where a read timeout cannot. An answer to
//! a range is checked against what was asked (`range_reply`: `Content-Range`,
//! `Content-Length`, no chunked body) and its body read no further; docs/DISTRIBUTION.md
//! lists the rules and why ranges have their own client. Those checks, and which URLs are
//! fetched at all, are the pure functions of [`check`].
//!
//! While it waits within the boot grace for an upstream that has never answered, a source
//! asks the candidates above it whether that upstream fetched from them ([`seen`], "have
//! you seen U?"): one that did had booted and listened, so it is gone, and the source
//! moves up at once rather than waiting out the grace.
//!
//! The failover timings are constants here ([`CONNECT_TIMEOUT`], [`FAILOVER_ATTEMPTS`],
//! [`client::KEEPALIVE`], [`backoff`], [`boot_grace`]) so that the simulator (netboot-sim)
//! models exactly what the agent does.

pub(crate) mod check;
pub mod client;
mod seen;

use check::{check_range, range_reply, RangeReply};
pub use check::{check_url, RangeError, UrlError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use crate::error::SourceError;

pub trait ImageSource: Send + Sync {
    /// Human-readable location (`/srv/images/compute`, `http://…/compute`).
    fn location(&self) -> String;
    /// Whole file (small: layout, manifest).
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError>;
    /// `len` bytes at `offset` of file `name`.
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError>;
    /// `len` bytes at `offset` of file `name` as a stream, and where it comes from.
    fn open_range(&self, name: &str, offset: u64, len: u64) -> Result<Stream, SourceError>;
    /// A stream from `from` broke (reset, stall, short body): counts as a failed attempt
    /// on that upstream, and enough of them move the source up its chain.
    fn stream_failed(&self, _from: &str, _why: &str) {}
    /// Length of file `name`, when the source can tell cheaply.
    fn len(&self, name: &str) -> Option<u64>;
    /// A small file that an image may lack (`signature`): `Ok(None)` when the source says
    /// it has none, an error when it is longer than `limit`. An HTTP source asks its
    /// current upstream and never moves up its chain for it: an absent file is no sign of
    /// a dead upstream (and relays pass the file on whenever their upstream has it).
    fn read_optional(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        if self.is_local() && self.len(name).is_none() {
            return Ok(None);
        }
        let mut stream = self.open_range(name, 0, limit.saturating_add(1))?;
        read_limited(&mut stream.reader, limit)
            .map(Some)
            .map_err(|msg| SourceError {
                location: format!("{}/{name}", stream.from),
                msg,
                unreachable: false,
            })
    }
    /// A local source can be read twice cheaply (restore checks every frame first).
    fn is_local(&self) -> bool;
    /// Payload bytes fetched so far (HTTP), for tests and reports.
    fn bytes_fetched(&self) -> u64 {
        0
    }
}

/// A range being read, and the place (upstream) it comes from.
pub struct Stream {
    pub reader: Box<dyn Read + Send>,
    pub from: String,
}

/// An image directory on this machine.
pub struct LocalDir(pub PathBuf);

impl LocalDir {
    fn err(&self, name: &str, msg: String) -> SourceError {
        SourceError {
            location: self.0.join(name).display().to_string(),
            msg,
            unreachable: false,
        }
    }
}

impl ImageSource for LocalDir {
    fn location(&self) -> String {
        self.0.display().to_string()
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        let f =
            std::fs::File::open(self.0.join(name)).map_err(|e| self.err(name, e.to_string()))?;
        read_small(f).map_err(|e| self.err(name, e.into()))
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        check_range(offset, len).map_err(|e| self.err(name, e.to_string()))?;
        let f =
            std::fs::File::open(self.0.join(name)).map_err(|e| self.err(name, e.to_string()))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            self.err(
                name,
                format!("reading {len} bytes at {offset}: {e} (payload truncated?)"),
            )
        })?;
        Ok(buf)
    }
    fn open_range(&self, name: &str, offset: u64, len: u64) -> Result<Stream, SourceError> {
        use std::io::{Seek, SeekFrom};
        let mut f =
            std::fs::File::open(self.0.join(name)).map_err(|e| self.err(name, e.to_string()))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| self.err(name, format!("seeking to {offset}: {e}")))?;
        Ok(Stream {
            reader: Box::new(f.take(len)),
            from: self.location(),
        })
    }
    fn len(&self, name: &str) -> Option<u64> {
        std::fs::metadata(self.0.join(name)).ok().map(|m| m.len())
    }
    fn is_local(&self) -> bool {
        true
    }
}

/// Reads a whole small file (`manifest`, `layout`), refusing one longer than
/// [`crate::limits::MAX_MANIFEST_BYTES`] while reading, before it is all in memory.
fn read_small(r: impl Read) -> Result<Vec<u8>, SmallRead> {
    let max = crate::limits::MAX_MANIFEST_BYTES;
    let mut buf = vec![];
    r.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SmallRead::Broken(format!("reading: {e}")))?;
    if buf.len() as u64 > max {
        return Err(SmallRead::TooLong(format!(
            "longer than {max} bytes, the most a manifest or layout may have"
        )));
    }
    Ok(buf)
}

/// How long a whole small file (`manifest`, `layout`, `signature`) may take: the frames'
/// pace ([`crate::limits::MIN_FRAME_RATE`] after [`crate::limits::FRAME_GRACE`]) for the
/// largest one, so an upstream that dribbles it holds a node for minutes, not forever.
fn small_file_deadline() -> Duration {
    crate::limits::FRAME_GRACE
        + Duration::from_secs(crate::limits::MAX_MANIFEST_BYTES / crate::limits::MIN_FRAME_RATE)
}

/// Reads at most `limit` bytes; more is an error (checked while reading).
fn read_limited(r: &mut dyn Read, limit: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![];
    r.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading: {e}"))?;
    if buf.len() as u64 > limit {
        return Err(format!("longer than {limit} bytes"));
    }
    Ok(buf)
}

/// Why [`read_small`] failed: a broken transfer may be tried again, an oversized file
/// will be just as large the next time.
enum SmallRead {
    Broken(String),
    TooLong(String),
}

impl From<SmallRead> for String {
    fn from(e: SmallRead) -> String {
        match e {
            SmallRead::Broken(m) | SmallRead::TooLong(m) => m,
        }
    }
}

/// How long a connection to an upstream may take to open. On a LAN a live host answers
/// a SYN within a millisecond (a booting one that is not listening yet with a reset, at
/// once: refused is retried until the grace); only a silent address (powered off, or not
/// up yet) waits this long. Was 3 s; every failover paid it twice.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests on an upstream that answered before and has a fallback, before the source
/// moves on (a dead peer found by keepalive is left at once, see [`HttpSource`]).
pub const FAILOVER_ATTEMPTS: u32 = 2;

/// The wait before attempt `attempt` (1, 2, …) on one upstream: 200 ms << attempt,
/// at most 3.2 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * (1 << attempt.min(4)))
}

/// Added to the boot window for [`boot_grace`]: from power-on to the relay listening
/// (firmware, PXE, kernel, DHCP, the plan) is not part of the window the admin gives.
pub const GRACE_MARGIN: Duration = Duration::from_secs(5);

/// How long a node waits for an upstream that has never answered: the cluster's boot
/// window (nodes power on within it, so the upstream may be that much later than this
/// node) plus [`GRACE_MARGIN`]. Leaving earlier sends the node to the next candidate,
/// which then feeds two at half rate; docs/DISTRIBUTION.md, "What the timers decide".
pub fn boot_grace(window: Duration) -> Duration {
    window.saturating_add(GRACE_MARGIN)
}

/// The grace of a source made without a boot window (`imgtool` itself, tests): the
/// default window's ([`netboot_proto::plan::DEFAULT_BOOT_WINDOW_S`]).
pub fn default_grace() -> Duration {
    boot_grace(Duration::from_secs(
        netboot_proto::plan::DEFAULT_BOOT_WINDOW_S,
    ))
}

/// How often a node waiting for an upstream that has never answered it asks the next
/// candidate whether that upstream has fetched from it ("have you seen U?",
/// [`netboot_proto::seen`]). An upstream that fetched from anyone was listening (a relay
/// listens before its first request), so one that is silent or refuses now is gone, not
/// late: the node moves up at once instead of waiting out the boot grace. One query in
/// flight at a time, each bounded by [`CONNECT_TIMEOUT`] and [`SEEN_QUERY_TIMEOUT`].
pub const SEEN_QUERY_PERIOD: Duration = Duration::from_secs(1);

/// How long one "have you seen U?" query may take, connect included.
pub const SEEN_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Called when a source gives up on one upstream and moves to the next: (from, to, why).
pub type SwitchHook = Box<dyn Fn(&str, &str, &str) + Send + Sync>;

/// An image on HTTP servers: a chain of upstreams holding the same URL space (a relay
/// node, the next one up, …, the primary). Requests go to the current upstream; when it
/// stops answering (refused, reset, stalled, or a relay without the file) the source moves
/// to the next one and repeats the request there: the transfer resumes at the chunk it was
/// fetching, never from zero. An upstream found **dead** (no answer to TCP keepalive on a
/// range connection: [`client`]) is left at once, without asking it again: its kernel
/// did not acknowledge anything for seconds, which a live relay's does however idle it
/// is.
pub struct HttpSource {
    bases: Vec<String>,
    current: AtomicUsize,
    agent: ureq::Agent,
    /// How ranges connect and wait ([`client`]).
    timeouts: client::Timeouts,
    /// Per upstream: a range connection to it found its peer dead.
    dead: Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Attempts per request on the last upstream (the primary) before giving up.
    pub attempts: u32,
    /// Attempts on an upstream that has a fallback and has answered before (so it died)
    /// before moving on.
    pub failover_attempts: u32,
    /// How long after this source was made an upstream that has never answered is still
    /// tried (every 100 ms: it may still be booting, nodes of a rack start together).
    /// Retrying a refused connection quickly matters: in a chain, every node's wait
    /// adds to the lag of all nodes below it.
    pub grace: Duration,
    created: std::time::Instant,
    answered: Vec<std::sync::atomic::AtomicBool>,
    /// Broken streams per upstream ([`ImageSource::stream_failed`]).
    strikes: Vec<AtomicUsize>,
    /// Per upstream: it accepted a connection once (so it booted and listens).
    up: Vec<std::sync::atomic::AtomicBool>,
    /// Per upstream: it was `up` and now refuses or does not answer connections — it died
    /// or restarted, so the boot grace no longer applies to it.
    gone: Vec<std::sync::atomic::AtomicBool>,
    fetched: std::sync::Arc<AtomicU64>,
    on_switch: Option<SwitchHook>,
    /// "Have you seen U?" queries for an upstream waited for within the grace.
    scout: seen::Scout,
}

impl HttpSource {
    pub fn new(base: &str) -> Self {
        Self::chain(vec![base.to_string()], Duration::from_secs(20))
    }

    /// A chain of upstream bases, first preferred; `stall` is how long a read may wait
    /// for data before the upstream counts as dead.
    pub fn chain(bases: Vec<String>, stall: Duration) -> Self {
        // One agent for every request of this source: its pool keeps a connection per
        // upstream open between requests (a frame stream, then the next region's).
        // No redirects: a node's upstreams are the plan's (each checked by `check_url`); an
        // upstream may not send it to another host (the hand-written client before ureq
        // never followed one either). A 3xx is a bad answer like any other.
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(stall)
            .timeout_write(stall)
            .build();
        HttpSource {
            timeouts: client::Timeouts {
                connect: CONNECT_TIMEOUT,
                stall,
                keepalive: client::KEEPALIVE,
                min_rate: crate::httpd::MIN_RATE,
            },
            dead: bases.iter().map(|_| Default::default()).collect(),
            answered: bases
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            strikes: bases.iter().map(|_| AtomicUsize::new(0)).collect(),
            up: bases
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            gone: bases
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            bases: bases
                .iter()
                .map(|b| b.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            agent,
            attempts: 8,
            failover_attempts: FAILOVER_ATTEMPTS,
            grace: default_grace(),
            created: std::time::Instant::now(),
            fetched: Default::default(),
            on_switch: None,
            scout: seen::Scout::new(bases.len()),
        }
    }

    pub fn on_switch(&mut self, hook: SwitchHook) {
        self.on_switch = Some(hook);
    }

    /// The upstream in use.
    pub fn current(&self) -> String {
        let i = self
            .current
            .load(Ordering::Relaxed)
            .min(self.bases.len().saturating_sub(1));
        self.bases.get(i).cloned().unwrap_or_default()
    }

    /// Runs `f(upstream, attempts)` on the current upstream, moving up the chain while it
    /// fails (the last upstream's error is returned). Returns the result and the upstream.
    fn with_failover<T>(
        &self,
        f: impl Fn(usize, Tries) -> Result<T, SourceError>,
    ) -> Result<(T, String), SourceError> {
        loop {
            let i = self
                .current
                .load(Ordering::Relaxed)
                .min(self.bases.len().saturating_sub(1));
            let last = i + 1 >= self.bases.len();
            if !last && self.is_dead(i) {
                self.move_up(i, "found dead earlier");
                continue;
            }
            let tries = if last {
                Tries::Count(self.attempts)
            } else if self.answered[i].load(Ordering::Relaxed) {
                Tries::Count(self.failover_attempts)
            } else {
                Tries::Until(self.created + self.grace)
            };
            match f(i, tries) {
                Ok(v) => {
                    self.answered[i].store(true, Ordering::Relaxed);
                    return Ok((v, self.bases[i].clone()));
                }
                Err(e) if last => return Err(e),
                Err(e) => self.move_up(i, &e.msg),
            }
        }
    }

    /// Leaves upstream `i` for the next one (once, however many threads saw it fail).
    fn move_up(&self, i: usize, why: &str) {
        if i + 1 < self.bases.len()
            && self
                .current
                .compare_exchange(i, i + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            if let Some(h) = &self.on_switch {
                h(&self.bases[i], &self.bases[i + 1], why);
            }
        }
    }

    /// A range connection to upstream `i` found it dead (and it is not the last).
    fn is_dead(&self, i: usize) -> bool {
        i + 1 < self.bases.len() && self.dead[i].load(Ordering::Relaxed)
    }

    fn get(&self, name: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, SourceError> {
        self.with_failover(|i, tries| self.get_from(i, name, range, tries))
            .map(|(v, _)| v)
    }

    /// One request to upstream `i`: the body's reader once the status and framing are
    /// right, or whether to try again. Whole files go through the ureq agent; ranges
    /// through [`client`] (keepalive), their answer checked by [`range_reply`] and their
    /// body bounded to what was asked.
    fn request(
        &self,
        i: usize,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Box<dyn Read + Send>, Attempt> {
        match range {
            Some((o, l)) => self.request_range(i, url, o, l),
            None => self.request_file(url),
        }
    }

    /// A whole file: a `200` and nothing else (ureq hands 1xx–3xx back as answers).
    fn request_file(&self, url: &str) -> Result<Box<dyn Read + Send>, Attempt> {
        let resp = match self.agent.get(url).timeout(small_file_deadline()).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code @ (404 | 403), _)) => return Err(missing(url, code)),
            Err(ureq::Error::Status(code, r)) => {
                return Err(Attempt::Again(
                    format!("HTTP {code} {}", r.status_text()),
                    false,
                ))
            }
            // Whole files count every transport error as unreachable.
            Err(ureq::Error::Transport(t)) => return Err(Attempt::Again(t.to_string(), true)),
        };
        if resp.status() != 200 {
            return Err(Attempt::Again(
                format!(
                    "HTTP {} {} (expected 200)",
                    resp.status(),
                    resp.status_text()
                ),
                false,
            ));
        }
        Ok(resp.into_reader())
    }

    /// `l` bytes at `o`: for a range, only no connection at all (name, refused, connect
    /// timeout) makes the upstream unreachable (the caller then reports the source, not a
    /// chunk); anything later is a bad answer.
    fn request_range(
        &self,
        i: usize,
        url: &str,
        o: u64,
        l: u64,
    ) -> Result<Box<dyn Read + Send>, Attempt> {
        const EXPECT: &str = " to a Range request (expected 206)";
        let last = o.saturating_add(l.max(1) - 1);
        let dead = self.dead[i].clone();
        let (head, body) = match client::get(url, (o, last), &self.timeouts, dead) {
            Ok(v) => v,
            Err(client::GetError::Connect(m)) => return Err(Attempt::Again(m, true)),
            Err(client::GetError::Answer(m)) => return Err(Attempt::Again(m, false)),
        };
        match head.status {
            404 | 403 => return Err(missing(url, head.status)),
            code @ 400.. => {
                return Err(Attempt::Again(
                    format!("HTTP {code} {}{EXPECT}", head.reason),
                    false,
                ))
            }
            _ => {}
        }
        let reply = RangeReply {
            status: head.status,
            content_length: head.content_length,
            content_range: head.content_range,
            transfer_encoding: head.transfer_encoding,
        };
        let n = range_reply(&reply, o, l).map_err(|e| {
            let msg = if reply.status == 206 || reply.status == 200 && o == 0 {
                e.to_string()
            } else {
                format!("HTTP {} {}{EXPECT}", reply.status, head.reason)
            };
            Attempt::Again(msg, false)
        })?;
        // Payload bytes are counted as they arrive, broken transfers included.
        Ok(Box::new(Counted(
            Box::new(body.bounded(n)),
            self.fetched.clone(),
        )))
    }

    /// Requests to upstream `i` until one succeeds or `tries` are used up; `read` takes
    /// the body. An upstream found dead is not asked again (unless it is the last).
    fn attempts_on<T>(
        &self,
        i: usize,
        url: &str,
        range: Option<(u64, u64)>,
        tries: Tries,
        read: impl Fn(Box<dyn Read + Send>) -> Result<T, Attempt>,
    ) -> Result<T, SourceError> {
        let mut last = String::new();
        let mut unreachable = true;
        let mut attempt = 0u32;
        let mut tries = tries;
        // Why upstream `i` is gone, by a "seen" answer, until the next attempt confirms.
        let mut seen_gone: Option<String> = None;
        loop {
            if matches!(tries, Tries::Until(_)) && self.gone[i].load(Ordering::Relaxed) {
                // It accepted connections before and refuses them now: it died (or
                // restarted), it is not late. The grace is for upstreams not yet booted;
                // this one gets the failover attempts from here on.
                tries = Tries::Count(attempt.saturating_add(self.failover_attempts));
            }
            if let (Tries::Until(_), true) = (tries, attempt > 0) {
                if let Some(why) = seen_gone.take() {
                    // Seen above, and the attempt made after that answer did not reach
                    // it either: it had booted and is gone, not late.
                    last = why;
                    break;
                }
                // Never reached yet: ask above whether it fetched from anyone. A "seen"
                // is checked by one more attempt at once (it may have just started, and
                // fetched, since the last attempt).
                if !self.up[i].load(Ordering::Relaxed) {
                    seen_gone =
                        self.scout
                            .poll(&self.bases, i, self.created.elapsed() + self.grace);
                }
            }
            match tries {
                _ if attempt > 0 && self.is_dead(i) => break,
                _ if seen_gone.is_some() => {}
                Tries::Count(n) if attempt >= n.max(1) => break,
                Tries::Until(t) if attempt > 0 && std::time::Instant::now() >= t => break,
                _ if attempt == 0 => {}
                Tries::Count(_) => std::thread::sleep(backoff(attempt)),
                Tries::Until(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            attempt += 1;
            match self.request(i, url, range) {
                Ok(body) => {
                    unreachable = false;
                    seen_gone = None;
                    self.up[i].store(true, Ordering::Relaxed);
                    match read(body) {
                        Ok(v) => return Ok(v),
                        Err(Attempt::Fatal(e)) => return Err(e),
                        Err(Attempt::Again(e, _)) => last = e,
                    }
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Again(msg, unreach)) => {
                    unreachable &= unreach;
                    if !unreach {
                        seen_gone = None;
                        self.up[i].store(true, Ordering::Relaxed);
                    } else if self.up[i].load(Ordering::Relaxed) {
                        self.gone[i].store(true, Ordering::Relaxed);
                    }
                    last = msg;
                }
            }
        }
        Err(SourceError {
            location: url.to_string(),
            msg: format!("{last} (after {attempt} attempts)"),
            unreachable,
        })
    }

    fn get_from(
        &self,
        i: usize,
        name: &str,
        range: Option<(u64, u64)>,
        tries: Tries,
    ) -> Result<Vec<u8>, SourceError> {
        let url = format!("{}/{name}", self.bases[i]);
        self.attempts_on(i, &url, range, tries, |body| match range {
            Some((o, l)) => {
                let mut buf = Vec::with_capacity(l.min(crate::chunk::MAX_FRAME) as usize);
                match body.take(l).read_to_end(&mut buf) {
                    Ok(_) if buf.len() as u64 == l => Ok(buf),
                    Ok(_) => Err(Attempt::Again(
                        format!("got {} of {l} bytes at {o}", buf.len()),
                        false,
                    )),
                    Err(e) => Err(Attempt::Again(
                        format!(
                            "connection lost after {} of {l} bytes at {o}: {e}",
                            buf.len()
                        ),
                        false,
                    )),
                }
            }
            None => read_small(body).map_err(|e| match e {
                SmallRead::Broken(m) => Attempt::Again(m, false),
                SmallRead::TooLong(msg) => Attempt::Fatal(SourceError {
                    location: url.clone(),
                    msg,
                    unreachable: false,
                }),
            }),
        })
    }
}

/// The error for a file the server says it does not have (404, 403).
fn missing(url: &str, code: u16) -> Attempt {
    Attempt::Fatal(SourceError {
        location: url.to_string(),
        msg: format!("HTTP {code}: no such file on the server"),
        unreachable: false,
    })
}

/// How long to keep asking one upstream.
#[derive(Clone, Copy)]
enum Tries {
    /// This many requests, with exponential backoff between them.
    Count(u32),
    /// Until this moment, every 100 ms (an upstream that may still be booting).
    Until(std::time::Instant),
}

/// What a failed request calls for.
enum Attempt {
    /// The file is not there: asking again will not help.
    Fatal(SourceError),
    /// Try again (message, whether the server could not be reached at all).
    Again(String, bool),
}

/// A body reader that adds what it reads to a counter.
struct Counted(Box<dyn Read + Send>, std::sync::Arc<AtomicU64>);

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl ImageSource for HttpSource {
    fn location(&self) -> String {
        self.current()
    }
    fn read_optional(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let url = format!("{}/{name}", self.current());
        let err = |msg: String| SourceError {
            location: url.clone(),
            msg,
            unreachable: false,
        };
        let mut last = String::new();
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt));
            }
            match self.agent.get(&url).timeout(small_file_deadline()).call() {
                Ok(r) if r.status() != 200 => {
                    last = format!("HTTP {} {} (expected 200)", r.status(), r.status_text())
                }
                Ok(r) => {
                    return read_limited(&mut r.into_reader(), limit)
                        .map(Some)
                        .map_err(err)
                }
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                // A relay that does not have the image's files yet says so; ask again.
                Err(ureq::Error::Status(code, r)) => {
                    last = format!("HTTP {code} {}", r.status_text())
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(err(format!(
            "{last} (after {} attempts)",
            self.attempts.max(1)
        )))
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        self.get(name, None)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        if len == 0 {
            return Ok(vec![]);
        }
        check_range(offset, len).map_err(|e| SourceError {
            location: format!("{}/{name}", self.current()),
            msg: e.to_string(),
            unreachable: false,
        })?;
        self.get(name, Some((offset, len)))
    }
    fn open_range(&self, name: &str, offset: u64, len: u64) -> Result<Stream, SourceError> {
        let range = Some((offset, len));
        let (reader, from) = self.with_failover(|i, tries| {
            let url = format!("{}/{name}", self.bases[i]);
            self.attempts_on(i, &url, range, tries, Ok)
        })?;
        Ok(Stream { reader, from })
    }
    fn stream_failed(&self, from: &str, why: &str) {
        let Some(i) = self.bases.iter().position(|b| b == from) else {
            return;
        };
        // Found dead (keepalive): left at once. Otherwise a stream came from it, so it
        // answered once: it gets the failover attempts.
        let limit = self.failover_attempts.max(1);
        if self.is_dead(i) || self.strikes[i].fetch_add(1, Ordering::Relaxed) + 1 >= limit as usize
        {
            self.move_up(i, why);
        }
    }
    fn len(&self, name: &str) -> Option<u64> {
        let r = self
            .agent
            .head(&format!("{}/{name}", self.current()))
            .call()
            .ok()?;
        r.header("Content-Length")?.parse().ok()
    }
    fn is_local(&self) -> bool {
        false
    }
    fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }
}
