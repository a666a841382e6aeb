//! The relay's HTTP face: answers `GET`/`HEAD` for `/<image>/manifest`, `layout`,
//! `signature` and payload ranges from the [`Relay`]'s state, and `/boot/…` (the rack's
//! boot files, [`super::bootfiles`]), through
//! [`imgtool::httpd`] (connections, limits) and its one range helper
//! ([`imgtool::httpd::serve_range`]). Every answer goes through [`small`] or carries a
//! [`FrameFeed`], and either way its body holds the request's in-flight guard: a request
//! counts as in flight until its answer is written.

use super::{FrameFeed, InFlight, Info, Relay, Unavailable, RELAY_MAX_CONNECTIONS};
use imgtool::httpd::{serve_range, Limits, Request, Response, Span};
use imgtool::manifest::Region;
use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;

impl Relay {
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
            .spawn(Arc::new(move |req: &mut Request| answer(&me, req)))
            .map_err(|e| anyhow::anyhow!("relay: starting: {e}"))?;
        Ok(addr)
    }
}

/// The path (under `/<image>/`) a downstream node asks for to say it holds every chunk.
pub const DONE: &str = ".done";

/// Answers one request.
fn answer(relay: &Arc<Relay>, req: &mut Request) -> Response {
    let guard = relay.request_started();
    let client = req.peer().ip().to_canonical();
    if !matches!(req.method(), "GET" | "HEAD") {
        return small(405, b"relay serves GET only\n", guard);
    }
    // The rack's boot files (`boot` is a reserved image name: no image's URL space).
    if let Some(path) = req
        .path()
        .strip_prefix('/')
        .filter(|p| p.starts_with("boot/"))
    {
        let path = path.to_string();
        return super::bootfiles::answer(relay, req, &path, guard);
    }
    let prefix = format!("/{}/", relay.image_name);
    let Some(name) = req.path().strip_prefix(&prefix).map(str::to_string) else {
        return small(404, b"not on this relay\n", guard);
    };
    // "Have you seen U?" (netboot_proto::seen): answered, not recorded.
    if let Some(addr) = netboot_proto::seen::parse_query(&name) {
        return match addr {
            Ok(a) => small(200, relay.seen_answer(a).to_json().as_bytes(), guard)
                .with_header("Content-Type", "application/json"),
            Err(()) => small(400, b"expected .seen/<address>\n", guard),
        };
    }
    relay.saw(client);
    match name.as_str() {
        "manifest" | "layout" => match relay.files(client) {
            Ok(f) if name == "manifest" => small(200, &f.manifest, guard),
            Ok(f) => small(200, &f.layout, guard),
            Err(u) => unavailable(u, guard),
        },
        // Not a file of the image (payload names never start with `.`): a downstream
        // node saying it has verified every chunk, which a node whose disk already held
        // most of the image says instead of fetching them all.
        DONE => {
            relay.finished(client);
            relay.saw_done(client);
            small(200, b"noted\n", guard)
        }
        n if n == imgtool::sign::SIGNATURE_FILE => match relay.signature(client) {
            Ok(Some(sig)) => small(200, &sig, guard),
            Ok(None) => small(404, b"no signature on this relay\n", guard),
            Err(u) => unavailable(u, guard),
        },
        payload => match relay.info(client) {
            Ok(info) => answer_payload(relay, req, info, payload, client, guard),
            Err(u) => unavailable(u, guard),
        },
    }
}

/// A payload: whole frames of one region as they are verified here (a plain `HEAD` is
/// told the payload's length).
fn answer_payload(
    relay: &Arc<Relay>,
    req: &Request,
    info: Arc<Info>,
    payload: &str,
    client: IpAddr,
    guard: InFlight,
) -> Response {
    let Some(region) = info.regions.iter().position(|r| r.payload == payload) else {
        return small(404, b"not on this relay\n", guard);
    };
    let total = info.regions[region].compressed_bytes();
    let plain_head = req.is_head() && req.header("Range").is_none();
    serve_range(req.header("Range"), total, move |span| {
        if !span.partial {
            if plain_head {
                return Ok(Box::new(Guarded {
                    body: std::io::empty(),
                    _in_flight: guard,
                }));
            }
            return Err(small(
                416,
                b"a relay serves one chunk per range request\n",
                guard,
            ));
        }
        let (first, last) = match frames_of(&info.regions[region], span) {
            Ok(f) => f,
            Err(why) => return Err(small(416, why.as_bytes(), guard)),
        };
        // No place to wait for the first frame: say so now, not with an empty 206. The
        // place taken here is the one the stream waits in.
        let place = match relay.place_unless_here(client, (region, first)) {
            Ok(p) => p,
            Err(u) => return Err(unavailable(u, guard)),
        };
        // Frames go out as they are verified here, one write per frame (up to 1 MiB). A
        // frame that does not come in time ends the response early: the downstream sees a
        // short body and moves up its chain.
        Ok(Box::new(FrameFeed {
            relay: relay.clone(),
            info,
            region,
            next: first,
            last,
            client,
            place,
            current: None,
            at: 0,
            _in_flight: guard,
        }))
    })
}

/// The frames `first..=last` a range covers: it must start on one chunk's first byte and
/// end on the same or a later chunk's last byte.
fn frames_of(r: &Region, span: Span) -> Result<(usize, usize), &'static str> {
    let end = span.start.checked_add(span.len);
    let first = r.chunks.iter().position(|c| c.payload_offset == span.start);
    let last = r
        .chunks
        .iter()
        .position(|c| c.payload_offset.checked_add(c.compressed_length) == end);
    let (Some(first), Some(last)) = (first, last) else {
        return Err("range does not start and end on frame boundaries\n");
    };
    if last < first {
        return Err("empty range\n");
    }
    Ok((first, last))
}

/// An answer with a body that is all here.
fn small(status: u16, body: &[u8], guard: InFlight) -> Response {
    let len = body.len() as u64;
    Response::stream(
        status,
        Box::new(Guarded {
            body: std::io::Cursor::new(body.to_vec()),
            _in_flight: guard,
        }),
        len,
    )
}

/// 503: the relay cannot answer now; the downstream retries or moves up its chain.
fn unavailable(u: Unavailable, guard: InFlight) -> Response {
    small(503, format!("{u}\n").as_bytes(), guard).with_header("Retry-After", "1")
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

#[cfg(test)]
mod tests {
    use super::super::tests::{region, relay_of};
    use super::*;
    use crate::relay::Released;
    use crate::relay::MAX_WAITING_PER_CLIENT;
    use std::io::Write;
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
    use std::time::{Duration, Instant};

    /// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all
    /// local: each address is another client to the relay).
    fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        use rustix::net::{bind, connect, socket_with, AddressFamily, SocketFlags, SocketType};
        let fd = socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&fd, &SocketAddrV4::new(from, 0)).unwrap();
        connect(&fd, &to).unwrap();
        TcpStream::from(fd)
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
        r.ledger().waiting.of(IpAddr::V4(ip))
    }

    /// A relay on 127.0.0.1 for image `img` with one region `p1` of two 100-byte frames,
    /// its files and layout known, no chunk here yet.
    fn relay() -> (Arc<Relay>, SocketAddr, Region) {
        let p1 = region(2);
        let r = relay_of(&p1);
        let addr = r.serve("127.0.0.1:0").unwrap();
        (r, addr, p1)
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
        assert!(got.contains("Content-Range: bytes 0-199/200\r\n"), "{got}");
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
            ("/img/p1.zst", "items=0-99", "416"),
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

    /// Review S6: a relay with no downstream node holds only for its boot files — other
    /// requests do not keep it, boot-file requests keep it at most its bound, and one
    /// with no boot files to serve does not hold at all.
    #[test]
    fn a_boot_files_only_relay_holds_for_boot_files_and_not_past_its_bound() {
        use crate::relay::bootfiles::Boot;
        let (r, addr, _) = relay();
        assert_eq!(
            r.wait_boot_files(Duration::from_secs(60), Duration::from_secs(60)),
            Released::NoBootFiles
        );
        let files: std::collections::HashMap<String, Arc<Vec<u8>>> =
            [("boot/vmlinuz".to_string(), Arc::new(vec![7u8; 100]))].into();
        r.boot.set(Boot::Ready(Arc::new(files)));
        let ask = |path: &'static str, for_: Duration| {
            std::thread::spawn(move || {
                let end = Instant::now() + for_;
                while Instant::now() < end {
                    answer(request(Ipv4Addr::new(127, 0, 0, 9), addr, path, "bytes=0-"));
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        // Image requests every 50 ms for 3 s: not boot files, so 0.3 s idle releases.
        let stray = ask("/img/manifest", Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(400));
        let t = Instant::now();
        let why = r.wait_boot_files(Duration::from_millis(300), Duration::from_secs(30));
        assert_eq!(why, Released::Idle);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        stray.join().unwrap();
        // Boot-file requests every 50 ms for 3 s: held, but only up to the bound.
        let boot = ask("/boot/vmlinuz", Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let why = r.wait_boot_files(Duration::from_millis(300), Duration::from_millis(800));
        assert_eq!(why, Released::Bounded);
        assert!(
            t.elapsed() >= Duration::from_millis(790) && t.elapsed() < Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        boot.join().unwrap();
    }

    #[test]
    fn a_node_that_says_done_releases_its_relay() {
        let (r, addr, region) = relay();
        // Another node took both chunks; the up-to-date one took none and says it is done.
        r.chunk_done(&region, 0, vec![b'a'; 100]);
        r.chunk_done(&region, 1, vec![b'b'; 100]);
        let other = Ipv4Addr::new(127, 0, 0, 3);
        let got = answer(request(other, addr, "/img/p1.zst", "bytes=0-199"));
        assert!(got.starts_with("HTTP/1.1 206"), "{got}");
        assert_eq!(r.wait_downstream(2, Duration::ZERO), Released::Idle);
        let done = answer(request(Ipv4Addr::LOCALHOST, addr, "/img/.done", "bytes=0-"));
        assert!(done.starts_with("HTTP/1.1 200"), "{done}");
        assert_eq!(
            r.wait_downstream(2, Duration::from_secs(3600)),
            Released::AllServed
        );
    }

    #[test]
    fn the_relay_says_who_fetched_from_it() {
        let (_r, addr, _) = relay();
        let (fetcher, asker) = (Ipv4Addr::new(127, 0, 0, 4), Ipv4Addr::new(127, 0, 0, 5));
        let ask = |who: &str| {
            answer(request(
                asker,
                addr,
                &format!("/img/.seen/{who}"),
                "bytes=0-",
            ))
        };
        let no = ask("127.0.0.4");
        assert!(no.starts_with("HTTP/1.1 200"), "{no}");
        assert!(no.ends_with("{\"seen\":false,\"done\":false}\n"), "{no}");
        answer(request(fetcher, addr, "/img/manifest", "bytes=0-"));
        assert!(ask("127.0.0.4").ends_with("{\"seen\":true,\"done\":false}\n"));
        answer(request(fetcher, addr, "/img/.done", "bytes=0-"));
        assert!(ask("127.0.0.4").ends_with("{\"seen\":true,\"done\":true}\n"));
        // The asker itself is not recorded by asking; a bad address is a 400.
        assert!(ask("127.0.0.5").contains("\"seen\":false"));
        assert!(ask("nobody").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn a_range_must_cover_whole_frames() {
        let p1 = region(3);
        let span = |start, len| Span {
            start,
            len,
            partial: true,
        };
        assert_eq!(frames_of(&p1, span(0, 100)), Ok((0, 0)));
        assert_eq!(frames_of(&p1, span(100, 200)), Ok((1, 2)));
        assert!(frames_of(&p1, span(0, 50)).is_err());
        assert!(frames_of(&p1, span(50, 100)).is_err());
        assert!(frames_of(&p1, span(u64::MAX, 2)).is_err());
    }
}
