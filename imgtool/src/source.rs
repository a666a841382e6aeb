//! Where an image's files come from: [`LocalDir`] (a directory) or [`HttpSource`] (any
//! HTTP server holding the image root: `imgtool serve`, nginx, …). Readers ask for whole
//! small files (`layout`, `manifest`) and byte ranges of payloads (one chunk's frame). Over
//! HTTP every chunk is its own Range request, so a dropped connection is retried at that
//! chunk — a transfer never restarts from zero.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A failed read, with what was being read.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {msg}")]
pub struct SourceError {
    pub location: String,
    pub msg: String,
    /// The source cannot be reached at all (as opposed to a bad answer).
    pub unreachable: bool,
}

pub trait ImageSource: Send + Sync {
    /// Human-readable location (`/srv/images/compute`, `http://…/compute`).
    fn location(&self) -> String;
    /// Whole file (small: layout, manifest).
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError>;
    /// `len` bytes at `offset` of file `name`.
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError>;
    /// Length of file `name`, when the source can tell cheaply.
    fn len(&self, name: &str) -> Option<u64>;
    /// A local source can be read twice cheaply (restore checks every frame first).
    fn is_local(&self) -> bool;
    /// Payload bytes fetched so far (HTTP), for tests and reports.
    fn bytes_fetched(&self) -> u64 {
        0
    }
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
        std::fs::read(self.0.join(name)).map_err(|e| self.err(name, e.to_string()))
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
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
    fn len(&self, name: &str) -> Option<u64> {
        std::fs::metadata(self.0.join(name)).ok().map(|m| m.len())
    }
    fn is_local(&self) -> bool {
        true
    }
}

/// Called when a source gives up on one upstream and moves to the next: (from, to, why).
pub type SwitchHook = Box<dyn Fn(&str, &str, &str) + Send + Sync>;

/// An image on HTTP servers: a chain of upstreams holding the same URL space (a relay
/// node, the next one up, …, the primary). Requests go to the current upstream; when it
/// stops answering (refused, reset, stalled, or a relay without the file) the source moves
/// to the next one and repeats the request there: the transfer resumes at the chunk it was
/// fetching, never from zero.
pub struct HttpSource {
    bases: Vec<String>,
    current: AtomicUsize,
    agent: ureq::Agent,
    /// Attempts per request on the last upstream (the primary) before giving up.
    pub attempts: u32,
    /// Attempts on an upstream that has a fallback and has answered before (so it died)
    /// before moving on.
    pub failover_attempts: u32,
    /// Attempts on an upstream that has never answered yet: it may still be booting (nodes
    /// of a rack start together), so it gets about ten seconds of grace.
    pub grace_attempts: u32,
    answered: Vec<std::sync::atomic::AtomicBool>,
    fetched: AtomicU64,
    on_switch: Option<SwitchHook>,
}

impl HttpSource {
    pub fn new(base: &str) -> Self {
        Self::chain(vec![base.to_string()], Duration::from_secs(20))
    }

    /// A chain of upstream bases, first preferred; `stall` is how long a read may wait
    /// for data before the upstream counts as dead.
    pub fn chain(bases: Vec<String>, stall: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout_read(stall)
            .build();
        HttpSource {
            answered: bases
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
            failover_attempts: 2,
            grace_attempts: 6,
            fetched: AtomicU64::new(0),
            on_switch: None,
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

    fn get(&self, name: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>, SourceError> {
        loop {
            let i = self
                .current
                .load(Ordering::Relaxed)
                .min(self.bases.len().saturating_sub(1));
            let last = i + 1 >= self.bases.len();
            let tries = if last {
                self.attempts
            } else if self.answered[i].load(Ordering::Relaxed) {
                self.failover_attempts
            } else {
                self.grace_attempts
            };
            match self.get_from(&self.bases[i], name, range, tries) {
                Ok(v) => {
                    self.answered[i].store(true, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if last => return Err(e),
                Err(e) => {
                    if self
                        .current
                        .compare_exchange(i, i + 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        if let Some(h) = &self.on_switch {
                            h(&self.bases[i], &self.bases[i + 1], &e.msg);
                        }
                    }
                }
            }
        }
    }

    fn get_from(
        &self,
        base: &str,
        name: &str,
        range: Option<(u64, u64)>,
        tries: u32,
    ) -> Result<Vec<u8>, SourceError> {
        let url = format!("{base}/{name}");
        let mut last = String::new();
        let mut unreachable = true;
        for attempt in 0..tries.max(1) {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 * (1 << attempt.min(4))));
            }
            let mut req = self.agent.get(&url);
            if let Some((o, l)) = range {
                req = req.set("Range", &format!("bytes={}-{}", o, o + l - 1));
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, _)) if code == 404 || code == 403 => {
                    return Err(SourceError {
                        location: url,
                        msg: format!("HTTP {code}: no such file on the server"),
                        unreachable: false,
                    })
                }
                Err(ureq::Error::Status(code, r)) => {
                    unreachable = false;
                    last = format!("HTTP {code} {}", r.status_text());
                    continue;
                }
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            unreachable = false;
            if let Some((o, l)) = range {
                if resp.status() != 206 && !(resp.status() == 200 && o == 0) {
                    last = format!("HTTP {} to a Range request (expected 206)", resp.status());
                    continue;
                }
                let mut buf = Vec::with_capacity(l as usize);
                match resp.into_reader().take(l).read_to_end(&mut buf) {
                    Ok(_) if buf.len() as u64 == l => {
                        self.fetched.fetch_add(l, Ordering::Relaxed);
                        return Ok(buf);
                    }
                    Ok(_) => last = format!("got {} of {l} bytes at {o}", buf.len()),
                    Err(e) => {
                        last = format!(
                            "connection lost after {} of {l} bytes at {o}: {e}",
                            buf.len()
                        )
                    }
                }
            } else {
                let mut buf = vec![];
                match resp.into_reader().take(256 << 20).read_to_end(&mut buf) {
                    Ok(_) => return Ok(buf),
                    Err(e) => last = format!("connection lost: {e}"),
                }
            }
        }
        Err(SourceError {
            location: url,
            msg: format!("{last} (after {} attempts)", tries.max(1)),
            unreachable,
        })
    }
}

impl ImageSource for HttpSource {
    fn location(&self) -> String {
        self.current()
    }
    fn read_file(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        self.get(name, None)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, SourceError> {
        if len == 0 {
            return Ok(vec![]);
        }
        self.get(name, Some((offset, len)))
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
