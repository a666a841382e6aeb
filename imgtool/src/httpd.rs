//! A small HTTP/1.1 server with hard limits, for `imgtool serve` and the agent's relay.
//! It owns the connections (accept, timeouts, the request head, the response framing);
//! what a request means is the handler's business ([`crate::serve`], the relay).
//!
//! Why not tiny_http 0.12 any more: it reads a request head line by line into a buffer
//! without a limit (a 256 MiB header line was kept whole: 267 MB of memory), sets no
//! read or write timeout on its sockets (an idle connection is kept forever), and starts
//! a thread for every connection without a bound. None of that is configurable from
//! outside the crate. So connections are accepted here with std's `TcpListener`, the head
//! is read into a buffer of at most [`MAX_HEAD_BYTES`] and parsed by `httparse` (hyper's
//! parser; nothing here parses HTTP by hand), and every connection is bounded in time
//! ([`IDLE_TIMEOUT`], and a minimum transfer rate: [`MIN_RATE`] over [`RATE_WINDOW`]) and
//! in number ([`Limits::max_connections`]).
//!
//! The data path keeps the properties the distribution benchmark relies on: a thread per
//! connection (so a transfer never waits for a worker), identity transfer encoding with a
//! `Content-Length`, and bodies written in pieces of up to 1 MiB — one `read` of the body
//! (a file, or a relay's next verified frame) per `write`, the response head riding in the
//! first one.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest request head (request line and all header lines) accepted: 16 KiB, twice
/// nginx's default for one header line. Our clients send a few hundred bytes. A larger
/// head is answered 431 and the connection closed, so no request can make the server
/// hold more than this per connection.
pub const MAX_HEAD_BYTES: usize = 16 << 10;

/// The most header fields in a request (httparse needs the array up front); our clients
/// send five or six. More is answered 431.
pub const MAX_HEADERS: usize = 64;

/// How long a connection may take to deliver a complete request head — counted from the
/// accept, or from the end of the previous response on a kept-alive connection. Then it
/// is closed (408 if part of a head had come). This is also the keep-alive idle limit,
/// and the time a request body (a few KiB at most) has to arrive.
/// Agents post a status report every two seconds; ureq's pooled connections are reused
/// well within it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// The slowest a client may take a response: a connection whose client took fewer than
/// `MIN_RATE × RATE_WINDOW` bytes (3.75 MiB) during [`RATE_WINDOW`] of time spent waiting
/// for it to take them is closed. Only time blocked on the client counts (not the time a
/// handler takes to produce the body, e.g. a relay waiting for its upstream), in
/// consecutive windows that carry over from one response to the next on a kept-alive
/// connection.
///
/// Why 128 KiB/s: a real node is far faster — 64 nodes sharing one congested 1 Gbit
/// uplink still take about 1.9 MiB/s each, 15 times this. And holding a connection slot
/// costs a client this much bandwidth: to hold all 1024 of `imgtool serve`'s
/// ([`DEFAULT_MAX_CONNECTIONS`]) a client must take 128 MiB/s, more than one node's
/// 1 Gbit link carries. Before this, the limit was 60 s per 1 MiB piece (about
/// 17 KiB/s): 1024 readers at 17 KiB/s (17 MiB/s in all) held the whole server.
pub const MIN_RATE: u64 = 128 << 10;

/// The window over which [`MIN_RATE`] is measured: long enough for a TCP connection to
/// recover from losses and a client to stall for a few seconds (a disk flush), short
/// enough that a client that stopped reading is gone in half a minute.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);

/// Default bound on open connections of `imgtool serve`. Each costs a thread (512 KiB of
/// address space, a few pages resident), two descriptors and, once it has streamed a
/// body, its piece buffer (1 MiB and a response head, kept for its next response). At
/// the bound, the connection that has waited longest for a request is closed to make
/// room; when none is waiting (all are busy answering), the slowest reader is closed if
/// one is slow enough (see [`EVICT_RATE_FACTOR`]); otherwise the new one is answered 503
/// and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// At the connection bound with no idle connection, a busy one is closed for the new one
/// when, in its current rate window, it has kept the server waiting for at least
/// `rate_window / EVICT_WAIT_DIVISOR` (2 s by default) and its client took less than
/// `EVICT_RATE_FACTOR × min_rate` per second of that waiting (512 KiB/s by default);
/// the slowest such is chosen. Without this, clients that stall (costing them nothing)
/// and reconnect every window would keep a full server answering 503. 512 KiB/s is
/// still 3.7 times below a node on a congested 1 Gbit uplink shared by 64 (1.9 MiB/s); a
/// connection whose handler is slow (a relay waiting for its upstream) keeps nobody
/// waiting and is never chosen.
pub const EVICT_RATE_FACTOR: u64 = 4;

/// See [`EVICT_RATE_FACTOR`].
pub const EVICT_WAIT_DIVISOR: u32 = 15;

/// After an error answer, how long and how much of what the client still sends is read
/// and dropped before the connection is closed (see `Conn::error`).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 << 10;

/// Largest piece of a response body written at once.
const PIECE: usize = 1 << 20;

/// Stack of a connection thread: handlers keep buffers on the heap.
const STACK: usize = 512 << 10;

/// The limits of one server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most (see [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Largest request body accepted (by `Content-Length`); larger is answered 413.
    pub max_body: u64,
    /// Largest body of a `PUT` (an upload's frame: [`crate::chunk::MAX_FRAME`] for
    /// `imgtool serve`), read as a stream by the handler ([`Request::copy_body`]) at the
    /// pace of [`Limits::min_rate`]; `PUT` bodies larger than `max_body` are answered 413
    /// when this is 0.
    pub max_put_body: u64,
    /// See [`IDLE_TIMEOUT`].
    pub idle: Duration,
    /// Bytes per second a client must take, at least (see [`MIN_RATE`]).
    pub min_rate: u64,
    /// Over what time of waiting for the client (see [`RATE_WINDOW`]).
    pub rate_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body: 16 << 10,
            max_put_body: 0,
            idle: IDLE_TIMEOUT,
            min_rate: MIN_RATE,
            rate_window: RATE_WINDOW,
        }
    }
}

/// A parsed request. The body (at most [`Limits::max_body`] bytes) is read on demand.
pub struct Request<'c> {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    peer: SocketAddr,
    body_left: u64,
    conn: &'c mut Conn,
}

impl Request<'_> {
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent (path and query).
    pub fn url(&self) -> &str {
        &self.target
    }

    /// The request target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Who sent it.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Reads the whole body (its length was checked against [`Limits::max_body`] before
    /// the handler was called).
    pub fn body(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.body_left as usize);
        let n = self.body_left;
        self.conn.read_body(n, &mut out)?;
        self.body_left = 0;
        Ok(out)
    }

    /// The whole body through [`Request::copy_body`] (its length was bounded by the
    /// limits before the handler was called).
    pub fn body_whole(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.body_left).unwrap_or(0));
        self.copy_body(&mut out)?;
        Ok(out)
    }

    /// Bytes of the body not read yet (its `Content-Length` before any read; checked
    /// against the limits before the handler was called).
    pub fn body_len(&self) -> u64 {
        self.body_left
    }

    /// Streams the whole body into `out` (an upload's frame, up to
    /// [`Limits::max_put_body`]): it must arrive within [`Limits::idle`] plus its length
    /// at [`Limits::min_rate`]. An error (a cut connection, a body shorter than its
    /// `Content-Length`, too slow) leaves the connection unusable; the server closes it.
    pub fn copy_body(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        let n = self.body_left;
        let limits = &self.conn.limits;
        let pace = Duration::from_secs(n / limits.min_rate.max(1));
        let deadline = Instant::now() + limits.idle + pace;
        // Whatever happens, the body is consumed or the connection is dead.
        self.body_left = 0;
        match self.conn.read_body_until(n, out, deadline) {
            Ok(()) => Ok(n),
            Err(e) => {
                self.conn.broken = true;
                Err(e)
            }
        }
    }
}

/// What a handler answers.
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// A body many responses share (the status board's snapshot): written straight from
    /// the shared bytes, so a slow reader holds a reference, not a copy.
    Shared(Arc<Vec<u8>>),
    /// Exactly `len` bytes from the reader (fewer: the connection is closed early, which
    /// the client sees as a short body).
    Stream(Box<dyn Read + Send>, u64),
}

impl Response {
    pub fn bytes(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![],
            body: Body::Bytes(body),
        }
    }

    pub fn text(status: u16, body: &str) -> Response {
        Self::bytes(status, body.as_bytes().to_vec())
            .with_header("Content-Type", "text/plain; charset=utf-8")
    }

    /// `body`, shared with other responses (never copied per connection).
    pub fn shared(status: u16, body: Arc<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![],
            body: Body::Shared(body),
        }
    }

    /// `len` bytes read from `reader` as they come (to a `HEAD`: the head only, with this
    /// `Content-Length`).
    pub fn stream(status: u16, reader: Box<dyn Read + Send>, len: u64) -> Response {
        Response {
            status,
            headers: vec![],
            body: Body::Stream(reader, len),
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }
}

/// The part of a body of `total` bytes that a range answer covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// Bytes from `start` on (at least 1 for a range; `total` for the whole body).
    pub len: u64,
    /// A range was asked for (answered 206), or the whole body (200).
    pub partial: bool,
}

/// The one place where ranges are answered (`imgtool serve`'s files, the agent's relay):
/// a body of `total` bytes, honouring a single `Range: bytes=…` (`range` is the header,
/// when the request has one). The whole body is a 200, one range a 206 with
/// `Content-Range: bytes S-E/TOTAL`, both with `Accept-Ranges: bytes`; a range no byte
/// satisfies is a 416 with `Content-Range: bytes */TOTAL`. Several ranges, or another
/// unit, are answered with the whole body (RFC 9110 lets a server ignore `Range`).
/// `open` gives the body for the span — or an answer of its own, when the handler
/// refuses that span (a relay serves whole frames only).
pub fn serve_range(
    range: Option<&str>,
    total: u64,
    open: impl FnOnce(Span) -> Result<Box<dyn Read + Send>, Response>,
) -> Response {
    let span = match range.map(|h| netboot_proto::range::parse_range(h, total)) {
        Some(Err(netboot_proto::range::Unsatisfiable)) => {
            return Response::text(416, "range not satisfiable\n")
                .with_header("Content-Range", &format!("bytes */{total}"));
        }
        // parse_range gives start <= end < total: the length is at least 1, no overflow.
        Some(Ok(Some((start, end)))) => Span {
            start,
            len: end - start + 1,
            partial: true,
        },
        _ => Span {
            start: 0,
            len: total,
            partial: false,
        },
    };
    let body = match open(span) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let status = if span.partial { 206 } else { 200 };
    let resp = Response::stream(status, body, span.len)
        .with_header("Accept-Ranges", "bytes")
        .with_header("Content-Type", "application/octet-stream");
    if span.partial {
        let end = span.start + span.len - 1;
        resp.with_header(
            "Content-Range",
            &format!("bytes {}-{end}/{total}", span.start),
        )
    } else {
        resp
    }
}

/// The function answering requests; it runs on the connection's own thread.
pub type Handler = dyn Fn(&mut Request) -> Response + Send + Sync;

/// A bound listening socket.
pub struct Server {
    listener: TcpListener,
    limits: Limits,
}

impl Server {
    /// Binds `addr`. Raises the soft descriptor limit to the hard one (each connection
    /// takes two) and lowers `max_connections` to what the limit allows.
    pub fn bind(addr: &str, mut limits: Limits) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let fds = raise_fd_limit();
        // Two descriptors per connection, and room for files being served.
        let allowed = (fds.saturating_sub(64) / 2).max(1) as usize;
        limits.max_connections = limits.max_connections.clamp(1, allowed);
        Ok(Server { listener, limits })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Accepts connections until the listening socket fails; each connection gets a
    /// thread that answers its requests with `handler`.
    pub fn run(self, handler: Arc<Handler>) -> io::Result<()> {
        let slots = Arc::new(Mutex::new(Slots::default()));
        let epoch = Instant::now();
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if is_broken_listener(&e) => return Err(e),
                Err(_) => {
                    // Out of descriptors or memory for a moment, or a connection that
                    // died before it was accepted: let connections end, go on.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let progress = Arc::new(Progress::default());
            let Some(id) = admit(&slots, &stream, &self.limits, epoch, progress.clone()) else {
                refuse(stream);
                continue;
            };
            let (slots2, handler, limits) = (slots.clone(), handler.clone(), self.limits.clone());
            let spawned = std::thread::Builder::new()
                .name("http-conn".into())
                .stack_size(STACK)
                .spawn(move || {
                    let mut conn = Conn {
                        stream,
                        buf: Vec::new(),
                        piece: Vec::new(),
                        limits,
                        window_bytes: 0,
                        window_spent: Duration::ZERO,
                        progress,
                        epoch,
                        broken: false,
                    };
                    conn.serve(peer, &*handler, &slots2, id);
                    if let Ok(mut s) = slots2.lock() {
                        s.open.remove(&id);
                    }
                });
            if spawned.is_err() {
                if let Ok(mut s) = slots.lock() {
                    s.open.remove(&id);
                }
            }
        }
    }

    /// [`Server::run`] on a background thread.
    pub fn spawn(self, handler: Arc<Handler>) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || {
                let _ = self.run(handler);
            })
    }
}

/// An `accept` error that will not go away (every other one is waited out).
fn is_broken_listener(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force
/// (`u64::MAX` for unlimited).
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let unlimited = |v: Option<u64>| v.unwrap_or(u64::MAX);
    if unlimited(l.current) < unlimited(l.maximum) {
        let want = Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return unlimited(l.maximum);
        }
    }
    unlimited(l.current)
}

/// The open connections: for each, a handle to close it and since when it has been
/// waiting for a request (None while a request is being answered).
#[derive(Default)]
struct Slots {
    next: u64,
    open: HashMap<u64, Slot>,
}

struct Slot {
    stream: TcpStream,
    waiting_since: Option<Instant>,
    progress: Arc<Progress>,
}

/// A connection's current rate window, as its thread last published it (read by the
/// accept loop to pick a slow reader to close at the bound).
#[derive(Default)]
struct Progress {
    /// Bytes the client took in the window.
    bytes: AtomicU64,
    /// Microseconds spent waiting for the client in the window, before the write now
    /// in progress.
    spent_us: AtomicU64,
    /// When the write in progress started (microseconds since the server's epoch, plus
    /// one), or 0.
    blocked_since_us: AtomicU64,
}

impl Progress {
    /// How long the client has kept the server waiting in this window and how many bytes
    /// per second of it it took; `None` for less than `min_wait`.
    fn rate(&self, now_us: u64, min_wait: Duration) -> Option<f64> {
        let mut spent = self.spent_us.load(Ordering::Relaxed);
        let since = self.blocked_since_us.load(Ordering::Relaxed);
        if since != 0 {
            spent = spent.saturating_add(now_us.saturating_sub(since - 1));
        }
        if spent < min_wait.as_micros() as u64 {
            return None;
        }
        Some(self.bytes.load(Ordering::Relaxed) as f64 * 1e6 / spent as f64)
    }
}

/// Registers a new connection. At the bound, closes the longest-waiting idle one, or
/// else the slowest reader below the eviction rate ([`EVICT_RATE_FACTOR`]); `None` when
/// there is neither.
fn admit(
    slots: &Mutex<Slots>,
    stream: &TcpStream,
    limits: &Limits,
    epoch: Instant,
    progress: Arc<Progress>,
) -> Option<u64> {
    let handle = stream.try_clone().ok()?;
    let mut s = slots.lock().ok()?;
    if s.open.len() >= limits.max_connections {
        let idle = s
            .open
            .iter()
            .filter_map(|(id, slot)| slot.waiting_since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id);
        let slow = || {
            let now_us = epoch.elapsed().as_micros() as u64;
            let min_wait = limits.rate_window / EVICT_WAIT_DIVISOR;
            let evict_rate = limits.min_rate.saturating_mul(EVICT_RATE_FACTOR) as f64;
            s.open
                .iter()
                .filter_map(|(id, slot)| Some((slot.progress.rate(now_us, min_wait)?, *id)))
                .filter(|(rate, _)| *rate < evict_rate)
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, id)| id)
        };
        let victim = idle.or_else(slow)?;
        if let Some(slot) = s.open.remove(&victim) {
            // Wakes its thread, whose read (or write) then fails.
            let _ = slot.stream.shutdown(std::net::Shutdown::Both);
        }
    }
    s.next += 1;
    let id = s.next;
    s.open.insert(
        id,
        Slot {
            stream: handle,
            waiting_since: Some(Instant::now()),
            progress,
        },
    );
    Some(id)
}

/// Answers a connection over the bound 503 and closes it (from the accept thread: a new
/// socket's send buffer is empty, so this short write does not block).
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver busy\n",
    );
}

fn set_waiting(slots: &Mutex<Slots>, id: u64, waiting: bool) {
    if let Ok(mut s) = slots.lock() {
        if let Some(slot) = s.open.get_mut(&id) {
            slot.waiting_since = waiting.then(Instant::now);
        }
    }
}

/// One connection: its socket, the bytes read past the last request head, and the
/// current rate window (bytes the client took, time spent waiting for it).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where a streamed body is read into before it is written (up to [`PIECE`] and a
    /// response head), reused by every response on the connection.
    piece: Vec<u8>,
    limits: Limits,
    window_bytes: u64,
    window_spent: Duration,
    /// The window as the accept loop sees it.
    progress: Arc<Progress>,
    epoch: Instant,
    /// A request body could not be read whole: answer, then close.
    broken: bool,
}

/// Why no request head could be read.
enum HeadError {
    /// The peer closed, or went idle before sending anything: close quietly.
    Gone,
    /// Part of a head came, the rest not in time.
    Timeout,
    TooLarge,
    Bad(String),
}

struct Head {
    method: String,
    target: String,
    version: u8,
    headers: Vec<(String, String)>,
    /// Length of the head in `buf`.
    len: usize,
}

impl Conn {
    fn serve(&mut self, peer: SocketAddr, handler: &Handler, slots: &Mutex<Slots>, id: u64) {
        let _ = self.stream.set_nodelay(true);
        loop {
            set_waiting(slots, id, true);
            let head = match self.read_head() {
                Ok(h) => h,
                Err(HeadError::Gone) => return,
                Err(HeadError::Timeout) => {
                    return self.error(408, "request head not received in time\n")
                }
                Err(HeadError::TooLarge) => {
                    return self.error(
                        431,
                        &format!(
                        "request head larger than {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields\n"
                    ),
                    )
                }
                Err(HeadError::Bad(why)) => return self.error(400, &format!("{why}\n")),
            };
            set_waiting(slots, id, false);
            self.buf.drain(..head.len);
            let close_asked = head.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("connection") && v.to_ascii_lowercase().contains("close")
            });
            let keep_alive = head.version == 1 && !close_asked;
            if head
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
            {
                return self.error(501, "request bodies need a Content-Length\n");
            }
            let mut lengths = head
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().parse::<u64>());
            let body_len = match (lengths.next(), lengths.next()) {
                (None, _) => 0,
                (Some(Ok(n)), None) => n,
                _ => return self.error(400, "bad Content-Length\n"),
            };
            let max_body = if head.method == "PUT" {
                self.limits.max_body.max(self.limits.max_put_body)
            } else {
                self.limits.max_body
            };
            if body_len > max_body {
                return self.error(413, &format!("request body larger than {max_body} bytes\n"));
            }
            let expects_continue = head.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
            });
            if expects_continue
                && body_len > 0
                && self.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
            {
                return;
            }
            let is_head = head.method == "HEAD";
            let mut req = Request {
                method: head.method,
                target: head.target,
                headers: head.headers,
                peer,
                body_left: body_len,
                conn: self,
            };
            let resp = handler(&mut req);
            let left = req.body_left;
            if self.broken {
                // The body was cut or too slow: answer if the client still listens.
                let _ = self.respond(resp, is_head, false);
                return;
            }
            // An unread body is skipped (bounded by max_body, or max_put_body at the
            // upload pace), so the client, which sends it before it reads, sees the answer.
            let pace = Duration::from_secs(left / self.limits.min_rate.max(1));
            let deadline = Instant::now() + self.limits.idle + pace;
            if left > 0
                && self
                    .read_body_until(left, &mut io::sink(), deadline)
                    .is_err()
            {
                return;
            }
            match self.respond(resp, is_head, keep_alive) {
                Ok(true) => {}
                _ => return,
            }
        }
    }

    /// Reads until a complete head is in `buf` (at most [`MAX_HEAD_BYTES`], within
    /// [`Limits::idle`]) and parses it.
    fn read_head(&mut self) -> Result<Head, HeadError> {
        let deadline = Instant::now() + self.limits.idle;
        let mut scanned = 0;
        loop {
            if let Some(end) = head_end(&self.buf, scanned) {
                return parse_head(&self.buf[..end]);
            }
            scanned = self.buf.len();
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(if self.buf.is_empty() {
                    HeadError::Gone
                } else {
                    HeadError::Timeout
                });
            }
            let _ = self.stream.set_read_timeout(Some(deadline - now));
            let mut piece = [0u8; 4096];
            let want = piece.len().min(MAX_HEAD_BYTES - self.buf.len());
            match self.stream.read(&mut piece[..want]) {
                Ok(0) => return Err(HeadError::Gone),
                Ok(n) => self.buf.extend_from_slice(&piece[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return Err(HeadError::Gone),
            }
        }
    }

    /// Reads `n` body bytes (the rest of `buf` first) into `out`, all within
    /// [`Limits::idle`]: a body trickled in byte by byte cannot hold the connection (bodies
    /// are at most [`Limits::max_body`], a few KiB).
    fn read_body(&mut self, n: u64, out: &mut dyn Write) -> io::Result<()> {
        let deadline = Instant::now() + self.limits.idle;
        self.read_body_until(n, out, deadline)
    }

    /// Reads `n` body bytes into `out` by `deadline`.
    fn read_body_until(
        &mut self,
        n: u64,
        out: &mut dyn Write,
        deadline: Instant,
    ) -> io::Result<()> {
        let from_buf = (n as usize).min(self.buf.len());
        out.write_all(&self.buf[..from_buf])?;
        self.buf.drain(..from_buf);
        let mut rest = n - from_buf as u64;
        let mut piece = vec![0u8; (rest as usize).clamp(1, 256 << 10)];
        while rest > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request body not received in time",
                ));
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let want = piece.len().min(rest as usize);
            match self.stream.read(&mut piece[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "request body shorter than its Content-Length",
                    ))
                }
                Ok(k) => {
                    out.write_all(&piece[..k])?;
                    rest -= k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf`, as long as the client keeps up [`Limits::min_rate`]: the
    /// time blocked in `write` is summed into windows of [`Limits::rate_window`]; a
    /// window in which the client took fewer than `min_rate × rate_window` bytes closes
    /// the connection. (A plain socket write timeout would let a client that takes a byte
    /// a minute hold the connection for ever.)
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let window = self.limits.rate_window;
        let need = (self.limits.min_rate as f64 * window.as_secs_f64()) as u64;
        let mut at = 0;
        while at < buf.len() {
            let left = window
                .saturating_sub(self.window_spent)
                .max(Duration::from_millis(1));
            self.stream.set_write_timeout(Some(left))?;
            let t = Instant::now();
            let p = &self.progress;
            let since = t.saturating_duration_since(self.epoch).as_micros() as u64;
            p.blocked_since_us.store(since + 1, Ordering::Relaxed);
            let wrote = self.stream.write(&buf[at..]);
            self.window_spent += t.elapsed();
            match wrote {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    at += k;
                    self.window_bytes = self.window_bytes.saturating_add(k as u64);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            if self.window_spent >= window {
                if self.window_bytes < need {
                    p.blocked_since_us.store(0, Ordering::Relaxed);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client took {} bytes in {:?}, less than {} bytes/s",
                            self.window_bytes, self.window_spent, self.limits.min_rate
                        ),
                    ));
                }
                self.window_bytes = 0;
                self.window_spent = Duration::ZERO;
            }
            p.bytes.store(self.window_bytes, Ordering::Relaxed);
            p.spent_us
                .store(self.window_spent.as_micros() as u64, Ordering::Relaxed);
            p.blocked_since_us.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Answers an error, then closes the connection gracefully: our side first, then
    /// what the client still sends is read and dropped for a moment (at most
    /// [`LINGER_BYTES`] or [`LINGER`]), so that its unread bytes do not make the kernel
    /// reset the connection before the client has read the answer.
    fn error(&mut self, status: u16, msg: &str) {
        if self
            .respond(Response::text(status, msg), false, false)
            .is_err()
        {
            return;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(LINGER));
        let deadline = Instant::now() + LINGER;
        let mut left = LINGER_BYTES;
        let mut sink = [0u8; 4096];
        while left > 0 && Instant::now() < deadline {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    /// Writes `resp`; true when the connection can take another request.
    fn respond(&mut self, resp: Response, is_head: bool, keep_alive: bool) -> io::Result<bool> {
        let len = match &resp.body {
            Body::Bytes(b) => b.len() as u64,
            Body::Shared(b) => b.len() as u64,
            Body::Stream(_, n) => *n,
        };
        let mut out = Vec::with_capacity(256);
        write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status))?;
        // A 204 has no body and must not announce one.
        if resp.status != 204 {
            write!(out, "Content-Length: {len}\r\n")?;
        }
        for (k, v) in &resp.headers {
            // Header text comes from our own handlers; still, never let a line break
            // through.
            let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
            write!(out, "{}: {}\r\n", clean(k), clean(v))?;
        }
        out.extend_from_slice(if keep_alive {
            b"\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if is_head {
            self.send(&out)?;
            return Ok(keep_alive);
        }
        match resp.body {
            Body::Bytes(b) => {
                out.extend_from_slice(&b);
                self.send(&out)?;
                Ok(keep_alive)
            }
            Body::Shared(b) => {
                self.send(&out)?;
                for piece in b.chunks(PIECE) {
                    self.send(piece)?;
                }
                Ok(keep_alive)
            }
            Body::Stream(reader, len) => {
                // The connection's piece buffer, kept between responses: zeroed once
                // when it grows, not for every response.
                let mut piece = std::mem::take(&mut self.piece);
                let sent = self.stream_body(&mut piece, &out, reader, len);
                self.piece = piece;
                Ok(sent? && keep_alive)
            }
        }
    }

    /// Sends `head`, then `len` bytes of `reader` in pieces of up to [`PIECE`] (the head
    /// riding in the first), read into `piece`. False when the body ended early: what
    /// there was is sent, and the short body tells the client (the connection cannot be
    /// reused).
    fn stream_body(
        &mut self,
        piece: &mut Vec<u8>,
        head: &[u8],
        mut reader: Box<dyn Read + Send>,
        len: u64,
    ) -> io::Result<bool> {
        let want = head.len() + PIECE.min(usize::try_from(len).unwrap_or(usize::MAX));
        if piece.len() < want {
            piece.resize(want, 0);
        }
        piece[..head.len()].copy_from_slice(head);
        let mut at = head.len();
        let mut left = len;
        loop {
            if left == 0 {
                self.send(&piece[..at])?;
                return Ok(true);
            }
            let room = (piece.len() - at)
                .min(PIECE)
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match reader.read(&mut piece[at..at + room]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                self.send(&piece[..at])?;
                return Ok(false);
            }
            left -= n as u64;
            self.send(&piece[..at + n])?;
            at = 0;
        }
    }
}

/// The end of the request head in `buf` (just past its empty line), scanning from about
/// `from` on. Finding the blank line is all this does; `httparse` parses. It stays beside
/// httparse because it is incremental: each read scans only its new bytes, where asking
/// httparse after every read re-parses the whole head — a client trickling a 16 KiB head
/// a byte at a time would cost 16 Ki parses of up to 16 KiB each.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    (start..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

fn parse_head(bytes: &[u8]) -> Result<Head, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => Ok(Head {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            version: req.version.unwrap_or(0),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            len,
        }),
        Ok(httparse::Status::Partial) => Err(HeadError::Bad("incomplete request head".into())),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Bad(format!("bad request head: {e}"))),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server with one-second limits: `/big` streams 64 MiB, `POST /echo` answers the
    /// length of its body, anything else a short text.
    fn server() -> SocketAddr {
        let limits = Limits {
            max_connections: 8,
            max_body: 1024,
            max_put_body: 1 << 20,
            idle: Duration::from_secs(1),
            min_rate: 1 << 20,
            rate_window: Duration::from_secs(1),
        };
        let s = Server::bind("127.0.0.1:0", limits).unwrap();
        let addr = s.local_addr().unwrap();
        s.spawn(Arc::new(|req: &mut Request| match req.path() {
            "/big" => Response::stream(200, Box::new(io::repeat(7).take(64 << 20)), 64 << 20),
            "/echo" => {
                let n = req.body().map(|b| b.len()).unwrap_or(0);
                Response::text(200, &n.to_string())
            }
            "/put" => match req.copy_body(&mut io::sink()) {
                Ok(n) => Response::text(200, &format!("put {n}")),
                Err(e) => Response::text(400, &format!("cut: {e}")),
            },
            _ => Response::text(200, "hello"),
        }))
        .unwrap();
        addr
    }

    /// Everything the server sends until it closes (or 10 s pass: then the test fails).
    fn read_all(c: &mut TcpStream) -> Vec<u8> {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = vec![];
        let mut piece = [0u8; 65536];
        loop {
            match c.read(&mut piece) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&piece[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("the server did not close the connection: {e}"),
            }
        }
    }

    #[test]
    fn keep_alive_then_close_on_request() {
        let mut c = TcpStream::connect(server()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let all = String::from_utf8(read_all(&mut c)).unwrap();
        assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
        assert!(
            all.contains("\r\n\r\nhello") && all.contains("\r\n\r\n3"),
            "{all}"
        );
        assert!(all.ends_with("Connection: close\r\n\r\nhello"), "{all}");
    }

    #[test]
    fn put_bodies_stream_up_to_their_own_limit_and_a_cut_one_closes() {
        let addr = server();
        // 512 KiB: over max_body, under max_put_body; then another request on the same
        // connection.
        let mut c = TcpStream::connect(addr).unwrap();
        let body = vec![5u8; 512 << 10];
        c.write_all(
            format!(
                "PUT /put HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        c.write_all(&body).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let all = String::from_utf8(read_all(&mut c)).unwrap();
        assert!(all.contains(&format!("put {}", 512 << 10)), "{all}");
        assert!(all.ends_with("hello"), "{all}");
        // Over max_put_body: 413 before any of it is read.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(
            format!(
                "PUT /put HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                (1 << 20) + 1
            )
            .as_bytes(),
        )
        .unwrap();
        let all = String::from_utf8_lossy(&read_all(&mut c)).into_owned();
        assert!(all.starts_with("HTTP/1.1 413"), "{all}");
        // A POST is still held to max_body.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 2048\r\n\r\n")
            .unwrap();
        let all = String::from_utf8_lossy(&read_all(&mut c)).into_owned();
        assert!(all.starts_with("HTTP/1.1 413"), "{all}");
        // Cut half-way: the handler sees the error, the connection is closed.
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"PUT /put HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc")
            .unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let all = String::from_utf8_lossy(&read_all(&mut c)).into_owned();
        assert!(
            all.starts_with("HTTP/1.1 400") && all.contains("cut:"),
            "{all}"
        );
        assert!(all.contains("Connection: close"), "{all}");
    }

    #[test]
    fn a_trickled_body_does_not_hold_the_connection() {
        let mut c = TcpStream::connect(server()).unwrap();
        c.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nab")
            .unwrap();
        // The server gives up on the body after its idle limit and closes.
        assert!(read_all(&mut c).is_empty());
    }

    #[test]
    fn a_reader_too_slow_is_dropped() {
        let mut c = TcpStream::connect(server()).unwrap();
        c.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        // Read nothing for longer than the server's write limit.
        std::thread::sleep(Duration::from_secs(3));
        let got = read_all(&mut c).len();
        assert!(got < 64 << 20, "the whole body came: {got}");
    }

    /// Reads `GET /big` at about `rate` bytes/s (16 KiB at a time) for at most `limit`;
    /// returns the body bytes it got and whether the server closed the connection.
    fn read_at(addr: SocketAddr, rate: u64, limit: Duration) -> (u64, bool) {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Instant::now();
        let mut got = 0u64;
        let mut piece = vec![0u8; 16 << 10];
        while start.elapsed() < limit {
            match c.read(&mut piece) {
                Ok(0) | Err(_) => return (got, true),
                Ok(n) => got += n as u64,
            }
            if rate > 0 {
                // Sleep until `got` bytes are due at `rate`.
                let due = Duration::from_secs_f64(got as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        (got, false)
    }

    #[test]
    fn readers_below_the_minimum_rate_are_dropped_fast_ones_are_not() {
        // The test server wants 1 MiB/s over windows of 1 s (the thresholds scaled down:
        // serve_hardening.rs tests the real ones). Three readers at 256 KiB/s, a quarter
        // of it, and one reading at full speed.
        let addr = server();
        let slow: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || read_at(addr, 256 << 10, Duration::from_secs(20))))
            .collect();
        let (fast, closed) = read_at(addr, 0, Duration::from_secs(60));
        assert!(
            closed && fast > 64 << 20,
            "the fast reader got {fast} bytes"
        );
        for t in slow {
            let (got, closed) = t.join().unwrap();
            // Dropped after a window or two, with a few MiB of socket buffers at most.
            assert!(closed, "a reader at 256 KiB/s kept its connection for 20 s");
            assert!(got < 16 << 20, "{got}");
        }
    }

    #[test]
    fn oversized_heads_are_refused_with_431() {
        let mut c = TcpStream::connect(server()).unwrap();
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD_BYTES + 100, b'a');
        let _ = c.write_all(&head);
        let all = String::from_utf8_lossy(&read_all(&mut c)).into_owned();
        assert!(all.starts_with("HTTP/1.1 431"), "{all}");
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nbody", 0), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        // Found when the blank line straddles two reads.
        let full = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(head_end(full, 16), Some(18));
    }

    #[test]
    fn heads_parse_with_httparse() {
        let Ok(h) = parse_head(b"POST /status/n1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        else {
            panic!("not parsed")
        };
        assert_eq!(
            (h.method.as_str(), h.target.as_str(), h.version),
            ("POST", "/status/n1", 1)
        );
        assert_eq!(h.headers.len(), 2);
        assert!(matches!(
            parse_head(b"GET / HTTP/9\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(req.as_bytes()),
            Err(HeadError::TooLarge)
        ));
    }

    /// Status, headers and body of a range answer over the bytes 0..100.
    fn ranged(range: Option<&str>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let data: Vec<u8> = (0..100u8).collect();
        let r = serve_range(range, 100, |span| {
            let at = span.start as usize;
            let piece = data[at..at + span.len as usize].to_vec();
            Ok(Box::new(io::Cursor::new(piece)))
        });
        let body = match r.body {
            Body::Bytes(b) => b,
            Body::Shared(b) => b.to_vec(),
            Body::Stream(rd, n) => {
                let mut v = vec![];
                rd.take(n).read_to_end(&mut v).unwrap();
                v
            }
        };
        (r.status, r.headers, body)
    }

    fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn ranges_are_answered_200_206_or_416_with_their_headers() {
        let (st, h, body) = ranged(None);
        assert_eq!((st, body.len()), (200, 100));
        assert_eq!(header(&h, "Accept-Ranges"), Some("bytes"));
        assert_eq!(header(&h, "Content-Range"), None);
        let (st, h, body) = ranged(Some("bytes=10-19"));
        assert_eq!((st, body), (206, (10..20u8).collect::<Vec<_>>()));
        assert_eq!(header(&h, "Content-Range"), Some("bytes 10-19/100"));
        assert_eq!(header(&h, "Accept-Ranges"), Some("bytes"));
        let (st, h, _) = ranged(Some("bytes=-5"));
        assert_eq!(
            (st, header(&h, "Content-Range")),
            (206, Some("bytes 95-99/100"))
        );
        let (st, h, _) = ranged(Some("bytes=100-"));
        assert_eq!(
            (st, header(&h, "Content-Range")),
            (416, Some("bytes */100"))
        );
        // Several ranges: the whole body.
        assert_eq!(ranged(Some("bytes=0-1,5-6")).0, 200);
        // A handler may refuse a span with an answer of its own.
        let r = serve_range(Some("bytes=0-9"), 100, |_| Err(Response::text(416, "no")));
        assert_eq!(r.status, 416);
    }
}
