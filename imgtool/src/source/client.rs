//! The range client: one HTTP/1.1 `GET` with a `Range` header over a `TcpStream` this
//! module opens itself, so that it can tell a **dead** upstream from a **quiet** one.
//!
//! Why not ureq for ranges: ureq 2 never hands out its socket, and a node that reads a
//! frame stream from a relay cannot otherwise tell a powered-off relay (silent: no reset
//! ever comes) from a live relay that is waiting for its own upstream (it sends nothing,
//! but it is healthy). With ureq the only sign was the read timeout (`--stall`, 20 s),
//! which has to stay long for the quiet case. Here every connection gets TCP keepalive
//! probe after 1 s idle and a `TCP_USER_TIMEOUT` of 2 s ([`KEEPALIVE`]): a live
//! peer's kernel answers the probes however idle its program is, a dead peer's does not,
//! and the read fails with `ETIMEDOUT` within about 2 s. That failure marks the peer
//! dead ([`Body::dead`]); `super` then leaves it at once instead of asking it again.
//! (ureq 3's `Connector` could set the same options, but would move every ureq use in
//! the workspace to a new major version at once; this client is ~300 lines for one
//! request shape, and the head is parsed by `httparse`, the parser `imgtool::httpd`
//! already uses. docs/DISTRIBUTION.md, "The client".)
//!
//! Every request also has an overall deadline: connect + stall + the range's length at
//! `min_rate` ([`crate::httpd::MIN_RATE`], the pace `imgtool serve` asks of its own
//! clients). Keepalive and the stall bound only silence; without the deadline a live but
//! hostile upstream sending one byte just inside every stall would hold the reader (PID 1
//! of a booting node) for days.
//!
//! Owns: parsing an `http://` URL into host, port and path; connecting with a timeout;
//! writing the request; reading a bounded head ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]) and
//! the framing headers [`super::check::range_reply`] checks; handing out the body. Does
//! not decide what to do with an answer (that is `super`'s, with the same rules as for
//! whole files).

use crate::httpd::{head_end, MAX_HEADERS, MAX_HEAD_BYTES};
use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Dead-peer detection on every connection: keepalive probes after `idle` without
/// traffic, every `interval`, `count` unanswered probes and the connection is dead; and
/// data (the request) unacknowledged for `user_timeout` fails too. About 2 s from the
/// last sign of life to the error, on any link where a round trip is far below a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
    pub user_timeout: Duration,
}

/// The agent's detection: 1 s idle, then one probe (1 s to answer it), 2 s user timeout.
///
/// Why 2 s and not 3 s (two probes): every silent death costs each node below it the
/// detection time, and a rack chain never wins that lag back (every link in it runs at
/// link rate), so deaths along one path add up. Simulated at 100 000 nodes, 30 s boot
/// skew, 1 % dying (docs/BENCH.md): the last node at 1.45–1.55× of (one node + skew) with
/// 3 s, 1.30–1.37× with 2 s. The price: a keepalive probe (or its answer) lost on an idle
/// connection is taken for a death — the node then moves up its candidates (it feeds
/// from further up, at a shared rate), it does not fail. Probes only go out on a
/// connection that has been idle for a second, i.e. not on a link that is busy
/// streaming to this node; a LAN round trip is microseconds to milliseconds.
pub const KEEPALIVE: KeepAlive = KeepAlive {
    idle: Duration::from_secs(1),
    interval: Duration::from_secs(1),
    count: 1,
    user_timeout: Duration::from_secs(2),
};

impl KeepAlive {
    /// From an upstream's last sign of life to the error a reader sees (the user timeout
    /// cuts the probes short when it is the smaller; Linux takes the user timeout as the
    /// limit for keepalive too). The simulator charges this for every silent death.
    pub fn detection(&self) -> Duration {
        let probes = self.idle + self.interval * self.count;
        probes.min(self.user_timeout.max(self.idle))
    }

    /// Sets the options on a connected (or accepted) socket.
    pub fn apply(&self, s: &TcpStream) -> std::io::Result<()> {
        use rustix::net::sockopt;
        sockopt::set_socket_keepalive(s, true)?;
        sockopt::set_tcp_keepidle(s, self.idle)?;
        sockopt::set_tcp_keepintvl(s, self.interval)?;
        sockopt::set_tcp_keepcnt(s, self.count)?;
        let ms = u32::try_from(self.user_timeout.as_millis()).unwrap_or(u32::MAX);
        sockopt::set_tcp_user_timeout(s, ms)?;
        Ok(())
    }
}

/// An `http://host[:port]/path` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// As the `Host` header says it (`h`, `h:8080`, `[::1]:8080`).
    pub host_header: String,
    host: String,
    port: u16,
    /// The request target, from the first `/` (`/` when there is none).
    pub path: String,
}

/// Why a URL is not one this client sends.
pub(crate) fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // Host and target go into the request as they are: visible ASCII only (no space, no
    // control byte that would end the line or start a header).
    if let Some(b) = rest.bytes().find(|b| !(0x21..0x7f).contains(b)) {
        return Err(format!("{}: byte {b:#04x} in the URL", url.escape_debug()));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url}: no host, or user information in the URL"));
    }
    let (host, port) = split_authority(authority).ok_or_else(|| format!("{url}: bad host:port"))?;
    Ok(Url {
        host_header: authority.to_string(),
        host,
        port,
        path: path.to_string(),
    })
}

/// `h`, `h:p`, `[v6]`, `[v6]:p` → (host without brackets, port; 80 by default).
fn split_authority(a: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = a.strip_prefix('[') {
        let (h, rest) = v6.split_once(']')?;
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':')?)),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok()?,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The head of an answer: the status and the framing headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub reason: String,
    pub content_length: Option<String>,
    pub content_range: Option<String>,
    pub transfer_encoding: Option<String>,
}

/// Parses a response head (`bytes` ends at its blank line).
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
        Err(e) => return Err(format!("bad response head: {e}")),
    }
    let mut head = Head {
        status: resp.code.unwrap_or(0),
        reason: resp.reason.unwrap_or("").to_string(),
        ..Head::default()
    };
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        let slot = if h.name.eq_ignore_ascii_case("content-length") {
            &mut head.content_length
        } else if h.name.eq_ignore_ascii_case("content-range") {
            &mut head.content_range
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            &mut head.transfer_encoding
        } else {
            continue;
        };
        // A framing header twice with two values: which one frames the body is anyone's
        // guess (request smuggling's trick), so the answer is refused.
        match slot {
            Some(old) if *old != value => {
                return Err(format!("{} given twice ({old:?}, {value:?})", h.name))
            }
            _ => *slot = Some(value),
        }
    }
    Ok(head)
}

/// A failed request.
#[derive(Debug)]
pub(super) enum GetError {
    /// No connection at all (name, refused, connect timeout): the upstream is unreachable.
    Connect(String),
    /// Connected, but no usable answer (a reset, a stall, a bad head).
    Answer(String),
}

/// A body being read; [`Body::dead`] says whether the peer stopped answering keepalive.
pub(super) struct Body {
    inner: std::io::Chain<Cursor<Vec<u8>>, TcpStream>,
    dead: Arc<AtomicBool>,
    clock: Clock,
}

/// A request's stall and overall deadline ([`deadline`]).
#[derive(Debug, Clone, Copy)]
struct Clock {
    stall: Duration,
    until: Instant,
    started: Instant,
}

impl Clock {
    /// Shortens the read timeout to the deadline when it is nearer than the stall.
    fn before_read(&self, s: &TcpStream) -> std::io::Result<()> {
        wait_before_read(s, self.stall, self.until, self.started)
    }

    /// A read timeout at or past the deadline is the deadline's error, not a stall.
    fn after_error(&self, e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() >= self.until {
            past_deadline(self.until, self.started)
        } else {
            e
        }
    }
}

impl Body {
    /// The first `n` bytes of the body, as `Content-Length` framed it: the connection
    /// closing before all of them is an error (`UnexpectedEof`), never a short success.
    pub fn bounded(self, n: u64) -> Bounded {
        Bounded {
            body: self,
            left: n,
            total: n,
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.get_ref().0.position() >= self.inner.get_ref().0.get_ref().len() as u64 {
            self.clock.before_read(self.inner.get_ref().1)?;
        }
        self.inner
            .read(buf)
            .map_err(|e| explain(self.clock.after_error(e), self.clock.stall, &self.dead))
    }
}

/// A [`Body`] read to its length ([`Body::bounded`]).
pub(super) struct Bounded {
    body: Body,
    left: u64,
    total: u64,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.body.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the connection closed after {} of {} bytes",
                    self.total - self.left,
                    self.total
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Names what a read error means: `ETIMEDOUT` on a socket with keepalive is the kernel
/// giving up on the peer (no answer to its probes: a dead upstream), `EAGAIN` the read
/// timeout (a quiet upstream, alive as far as TCP can tell).
fn explain(e: std::io::Error, stall: Duration, dead: &AtomicBool) -> std::io::Error {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::TimedOut => {
            dead.store(true, Ordering::Relaxed);
            std::io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "the upstream is dead (no answer to TCP keepalive within {} ms)",
                    KEEPALIVE.detection().as_millis()
                ),
            )
        }
        ErrorKind::WouldBlock => std::io::Error::new(
            ErrorKind::WouldBlock,
            format!(
                "no data for {} s (the upstream is alive but sends nothing)",
                stall.as_secs_f64()
            ),
        ),
        _ => e,
    }
}

/// How a [`get`] connects and waits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    /// No data for this long on a live connection: the attempt fails.
    pub stall: Duration,
    pub keepalive: KeepAlive,
    /// Bytes per second the whole answer must come at, at least, on top of `connect` and
    /// `stall` (see [`deadline`]).
    pub min_rate: u64,
}

/// When a request for `len` bytes started `now` must be done, head and body: `connect` +
/// `stall` + `len / min_rate` seconds (a 8 MiB frame at 128 KiB/s: 64 s more).
fn deadline(now: Instant, t: &Timeouts, len: u64) -> Instant {
    let pace = Duration::from_secs(len / t.min_rate.max(1));
    now.checked_add(t.connect.saturating_add(t.stall).saturating_add(pace))
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
}

/// The read timeout before a read: the stall, or less when the deadline is nearer; an
/// error once the deadline has passed.
fn wait_before_read(
    s: &TcpStream,
    stall: Duration,
    until: Instant,
    started: Instant,
) -> std::io::Result<()> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(past_deadline(until, started));
    }
    if left < stall {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    }
    Ok(())
}

/// Not `TimedOut` (that is keepalive's verdict on a dead peer, see [`explain`]): a slow
/// upstream is alive, and is asked again like one that stalled.
fn past_deadline(until: Instant, started: Instant) -> std::io::Error {
    std::io::Error::other(
        format!(
            "the answer did not complete within its deadline ({} s: connect + stall + length at the minimum rate); the upstream is too slow",
            until.saturating_duration_since(started).as_secs()
        ),
    )
}

/// `GET url` for bytes `o ..= last`; the head and the body's reader. `dead` is set when
/// a read (of the head, or later of the body) finds the peer dead.
pub(super) fn get(
    url: &str,
    range: (u64, u64),
    t: &Timeouts,
    dead: Arc<AtomicBool>,
) -> Result<(Head, Body), GetError> {
    let started = Instant::now();
    let (o, last) = range;
    let until = deadline(started, t, last.saturating_sub(o).saturating_add(1));
    let u = parse_url(url).map_err(GetError::Answer)?;
    let mut s = connect(&u, t.connect).map_err(GetError::Connect)?;
    let setup = |s: &TcpStream| -> std::io::Result<()> {
        t.keepalive.apply(s)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(t.stall.max(Duration::from_millis(1))))?;
        s.set_write_timeout(Some(t.stall.max(Duration::from_millis(1))))
    };
    setup(&s).map_err(|e| GetError::Answer(format!("setting up the connection: {e}")))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nRange: bytes={o}-{last}\r\nUser-Agent: imgtool/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        u.path,
        u.host_header,
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes()).map_err(|e| {
        GetError::Answer(format!(
            "sending the request: {}",
            explain(e, t.stall, &dead)
        ))
    })?;
    let clock = Clock {
        stall: t.stall,
        until,
        started,
    };
    let (head, rest) = read_head(&mut s, &clock, &dead).map_err(GetError::Answer)?;
    let head = parse_head(&head).map_err(GetError::Answer)?;
    Ok((
        head,
        Body {
            inner: Cursor::new(rest).chain(s),
            dead,
            clock,
        },
    ))
}

/// The first address of `u`'s host that accepts within `timeout`.
fn connect(u: &Url, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", u.host))?
        .collect();
    let mut last = format!("{}: no address", u.host);
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!(
                    "connecting to {a}: no answer within {} ms",
                    timeout.as_millis()
                )
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    Err(last)
}

/// Reads up to the blank line that ends the head (at most [`MAX_HEAD_BYTES`]); returns
/// the head and the body bytes read past it.
fn read_head(
    s: &mut TcpStream,
    clock: &Clock,
    dead: &AtomicBool,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let stall = clock.stall;
    let mut buf = Vec::with_capacity(1024);
    let mut piece = [0u8; 4096];
    loop {
        let want = piece.len().min(MAX_HEAD_BYTES - buf.len());
        if want == 0 {
            return Err(format!("response head longer than {MAX_HEAD_BYTES} bytes"));
        }
        let n = match clock
            .before_read(s)
            .and_then(|()| s.read(&mut piece[..want]))
        {
            Ok(0) => return Err("the connection closed before an answer".into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = clock.after_error(e);
                return Err(format!("reading the answer: {}", explain(e, stall, dead)));
            }
        };
        let from = buf.len();
        buf.extend_from_slice(&piece[..n]);
        if let Some(end) = head_end(&buf, from) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_a_clean_target() {
        let u = parse_url("http://10.0.0.1:8200/img/p1.zst").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 8200, "/img/p1.zst")
        );
        assert_eq!(u.host_header, "10.0.0.1:8200");
        let u = parse_url("http://server").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("server", 80, "/")
        );
        let u = parse_url("http://[::1]:8080/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        for bad in [
            "https://s/x",
            "http:///x",
            "http://s:99999/x",
            "http://u@s/x",
            "http://s/a b",
            "http://s/a\r\nX: y",
            "http://s\r\nX:1/a",
            "http://[::1/x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn heads_give_the_framing_headers_and_refuse_two_lengths() {
        let h = parse_head(
            b"HTTP/1.1 206 Partial Content\r\ncontent-length: 20\r\nContent-Range: bytes 0-19/500\r\nServer: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status, 206);
        assert_eq!(h.reason, "Partial Content");
        assert_eq!(h.content_length.as_deref(), Some("20"));
        assert_eq!(h.content_range.as_deref(), Some("bytes 0-19/500"));
        assert_eq!(h.transfer_encoding, None);
        let e = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nContent-Length: 30\r\n\r\n")
            .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        // The same value twice is one value.
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nContent-Length: 20\r\n\r\n")
                .is_ok()
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert!(parse_head(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()).is_err());
    }

    #[test]
    fn detection_is_the_shorter_of_probes_and_user_timeout() {
        assert_eq!(KEEPALIVE.detection(), Duration::from_secs(2));
        let k = KeepAlive {
            user_timeout: Duration::from_secs(10),
            ..KEEPALIVE
        };
        assert_eq!(k.detection(), Duration::from_secs(2));
        let k = KeepAlive {
            count: 3,
            user_timeout: Duration::from_secs(10),
            ..KEEPALIVE
        };
        assert_eq!(k.detection(), Duration::from_secs(4));
    }

    #[test]
    fn a_head_past_its_bound_is_refused_and_the_body_start_is_kept() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut a, _) = l.accept().unwrap();
            a.write_all(
                b"HTTP/1.1 206 P\r\nContent-Length: 3\r\nContent-Range: bytes 0-2/3\r\n\r\nabc",
            )
            .unwrap();
            let (mut b, _) = l.accept().unwrap();
            let big = vec![b'a'; MAX_HEAD_BYTES + 10];
            let _ = b.write_all(&big);
            std::thread::sleep(Duration::from_millis(200));
        });
        let t_out = Timeouts {
            connect: Duration::from_secs(1),
            stall: Duration::from_secs(5),
            keepalive: KEEPALIVE,
            min_rate: crate::httpd::MIN_RATE,
        };
        let dead = Arc::new(AtomicBool::new(false));
        let url = format!("http://{addr}/img/p");
        let (head, body) = get(&url, (0, 2), &t_out, dead.clone()).unwrap();
        assert_eq!(head.status, 206);
        let mut got = vec![];
        body.bounded(3).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc");
        match get(&url, (0, 2), &t_out, dead.clone()) {
            Err(GetError::Answer(e)) => assert!(e.contains("longer than"), "{e}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("a 16 KiB head was taken"),
        }
        assert!(!dead.load(Ordering::Relaxed));
        t.join().unwrap();
    }

    /// A server that answers `head` at once (may be empty), then sends one byte of
    /// `dribble` every 100 ms: alive, never stalling, far below any useful rate.
    fn dribbler(
        head: &'static [u8],
        dribble: &'static [u8],
    ) -> (String, std::thread::JoinHandle<()>) {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut a, _) = l.accept().unwrap();
            let _ = a.write_all(head);
            for b in dribble {
                if a.write_all(std::slice::from_ref(b)).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        (format!("http://{addr}/img/p"), t)
    }

    /// Review S4 #7: a live upstream that never stalls but dribbles is cut at the
    /// request's deadline (connect + stall + length / min_rate: 1 + 1 + 0 s here), in the
    /// head and in the body; without it, these reads run until the server stops (10 s)
    /// and fail otherwise, or succeed.
    #[test]
    fn a_dribbling_upstream_is_cut_at_the_deadline() {
        let t_out = Timeouts {
            connect: Duration::from_secs(1),
            stall: Duration::from_secs(1),
            keepalive: KEEPALIVE,
            min_rate: 1 << 30,
        };
        let head: &[u8] =
            b"HTTP/1.1 206 P\r\nContent-Length: 100\r\nContent-Range: bytes 0-99/100\r\n\r\n";
        let (url, t) = dribbler(b"", head);
        let dead = Arc::new(AtomicBool::new(false));
        match get(&url, (0, 99), &t_out, dead.clone()) {
            Err(GetError::Answer(e)) => assert!(e.contains("deadline"), "{e}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("a dribbled head was taken"),
        }
        assert!(!dead.load(Ordering::Relaxed), "slow is not dead");
        t.join().unwrap();

        let (url, t) = dribbler(head, [b'x'; 100].as_slice());
        let (_, body) = get(&url, (0, 99), &t_out, dead.clone()).unwrap();
        let mut got = vec![];
        let e = body.bounded(100).read_to_end(&mut got).unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        assert!(got.len() < 100, "{}", got.len());
        assert!(!dead.load(Ordering::Relaxed), "slow is not dead");
        t.join().unwrap();
    }

    #[test]
    fn the_deadline_grows_with_the_length_at_the_minimum_rate() {
        let t_out = Timeouts {
            connect: Duration::from_secs(5),
            stall: Duration::from_secs(20),
            keepalive: KEEPALIVE,
            min_rate: crate::httpd::MIN_RATE,
        };
        let now = Instant::now();
        assert_eq!(deadline(now, &t_out, 1) - now, Duration::from_secs(25));
        assert_eq!(
            deadline(now, &t_out, 8 << 20) - now,
            Duration::from_secs(25 + 64)
        );
        assert!(deadline(now, &t_out, u64::MAX) > now);
    }
}
