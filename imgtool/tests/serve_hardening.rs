//! `imgtool serve` under hostile clients, against the real binary on 127.0.0.1 (loopback
//! only; every loop bounded in count and time; the server is stopped by its PID in
//! `Drop`): symbolic links out of the roots, the status board's bounds, and a load of 500
//! idle connections plus a 1 GiB request header while normal requests go on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `imgtool serve`, stopped in `Drop`.
struct Serve {
    child: Child,
    addr: SocketAddr,
    url: String,
}

impl Serve {
    fn start(roots: &[&Path], extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgtool"))
            .arg("serve")
            .args(roots)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting imgtool serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // "imgtool serve: ROOTS on http://127.0.0.1:PORT (status board …"
        let first = lines.next().expect("a ready line").unwrap();
        let addr: SocketAddr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            addr,
            url: format!("http://{addr}"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .max_idle_connections(0)
        .build()
}

/// GET `path` (with an optional Range): status and body.
fn get(s: &Serve, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut r = agent().get(&format!("{}{path}", s.url));
    if let Some(range) = range {
        r = r.set("Range", range);
    }
    let resp = match r.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = resp.status();
    let mut body = vec![];
    resp.into_reader()
        .take(64 << 20)
        .read_to_end(&mut body)
        .unwrap();
    (status, body)
}

fn post(s: &Serve, node: &str, body: &str) -> (u16, String) {
    match agent()
        .post(&format!("{}/status/{node}", s.url))
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST /status/{node}: {e}"),
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Raises this process's descriptor limit so it can hold `n` sockets (and the server,
/// its child, inherits it).
fn allow_descriptors(n: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < n {
            l.rlim_cur = n.min(l.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        }
        assert!(l.rlim_cur >= n, "descriptor limit {} < {n}", l.rlim_cur);
    }
}

/// An image-like root: `g/manifest` and a 4 MiB payload `g/p1.zst`.
fn image_root(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("g")).unwrap();
    std::fs::write(dir.join("g/manifest"), b"{\"format\":\"test\"}\n").unwrap();
    let payload: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("g/p1.zst"), &payload).unwrap();
    payload
}

#[test]
fn symbolic_links_never_lead_out_of_the_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    image_root(root.path());
    std::fs::write(outside.path().join("shadow"), b"root:secret\n").unwrap();
    let g = root.path().join("g");
    // A link to a file outside, a link to a directory outside, and a link inside.
    std::os::unix::fs::symlink(outside.path().join("shadow"), g.join("shadow")).unwrap();
    std::os::unix::fs::symlink(outside.path(), g.join("etc")).unwrap();
    std::os::unix::fs::symlink("manifest", g.join("alias")).unwrap();
    std::os::unix::fs::symlink(root.path(), root.path().join("self")).unwrap();

    let s = Serve::start(&[root.path()], &[]);
    let (code, body) = get(&s, "/g/manifest", None);
    assert_eq!(
        (code, body.as_slice()),
        (200, &b"{\"format\":\"test\"}\n"[..])
    );
    for path in ["/g/shadow", "/g/etc/shadow"] {
        let (code, body) = get(&s, path, None);
        assert!(
            code == 404 || code == 403,
            "{path}: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }
    // Links that stay inside the root keep working.
    assert_eq!(get(&s, "/g/alias", None).0, 200);
    assert_eq!(get(&s, "/self/g/manifest", None).0, 200);
}

/// A fresh `imgtool serve` over an image-like root (the root is removed on drop).
fn board_server() -> (tempfile::TempDir, Serve) {
    let root = tempfile::tempdir().unwrap();
    image_root(root.path());
    let s = Serve::start(&[root.path()], &[]);
    (root, s)
}

const REPORT: &str = r#"{"phase":"restoring"}"#;

#[test]
fn the_status_board_strips_escape_sequences_from_reports() {
    let (_root, s) = board_server();
    // Escape sequences are replaced when stored, so neither GET /status nor
    // `imgtool status` passes them to a terminal.
    let evil = r#"{"phase":"failed","message":"disk \u001b]0;pwned\u0007\u001b[2J\u009b31mgone\r\nfake line"}"#;
    assert_eq!(post(&s, "n1", evil).0, 204);
    let (_, board) = get(&s, "/status", None);
    let board = String::from_utf8(board).unwrap();
    assert!(
        board.contains("pwned") && !board.contains("\\u001b"),
        "{board}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_imgtool"))
        .args(["status", "--server", &s.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("n1"), "{text}");
    assert!(
        !text.bytes().any(|b| b == 0x1b || b == 0x07 || b == b'\r'),
        "{text:?}"
    );
}

#[test]
fn the_status_board_takes_node_names_from_a_fixed_set() {
    let (_root, s) = board_server();
    for bad in ["a$b", "primary", "..", "x%0Ay"] {
        let (code, msg) = post(&s, bad, REPORT);
        assert!(
            code == 400 || code == 404 || code == 405,
            "{bad}: {code} {msg}"
        );
    }
    assert_eq!(post(&s, "n1", REPORT).0, 204, "a good name is taken");
}

#[test]
fn the_status_board_bounds_bodies_and_messages() {
    let (_root, s) = board_server();
    // A body over the limit is refused on its Content-Length, before it is read.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"POST /status/n2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n{")
        .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let long = format!(r#"{{"phase":"x","message":"{}"}}"#, "A".repeat(10_000));
    assert_eq!(post(&s, "n2", &long).0, 204);
    let (_, board) = get(&s, "/status", None);
    let b: serde_json::Value = serde_json::from_slice(&board).unwrap();
    let kept = b["n2"]["last"]["message"].as_str().unwrap().len();
    assert!(kept <= imgtool::board::MAX_MESSAGE, "{kept} bytes kept");
}

#[test]
fn the_status_board_holds_at_most_max_nodes() {
    let (_root, s) = board_server();
    // Bounded loop: MAX_NODES + 1 posts on one machine.
    let mut refused = None;
    for i in 0..=imgtool::board::MAX_NODES {
        let (code, msg) = post(&s, &format!("m{i}"), REPORT);
        if code != 204 {
            refused = Some((i, code, msg));
            break;
        }
    }
    let (i, code, msg) = refused.expect("a board without a node limit");
    assert_eq!((i, code), (imgtool::board::MAX_NODES, 503), "{msg}");
    assert!(msg.contains("full"), "{msg}");
    let (code, board) = get(&s, "/status", None);
    assert_eq!(code, 200);
    assert!((board.len() as u64) < imgtool::board::MAX_BOARD_BYTES);
}

/// Sends a request head that never ends, in 64 KiB writes, up to `limit` bytes or until
/// the server closes the connection; returns the bytes sent and what came back.
fn endless_header(addr: SocketAddr, limit: u64) -> (u64, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0u64;
    let _ = c.write_all(b"GET /g/manifest HTTP/1.1\r\nX-Huge: ");
    let piece = vec![b'a'; 64 << 10];
    while sent < limit {
        match c.write(&piece) {
            Ok(n) => sent += n as u64,
            Err(_) => break,
        }
    }
    let mut answer = vec![];
    let _ = c.take(4096).read_to_end(&mut answer);
    (sent, String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn idle_connections_and_a_1_gib_header_do_not_stop_normal_requests() {
    const IDLE: usize = 500;
    allow_descriptors(4 * IDLE as u64);
    let root = tempfile::tempdir().unwrap();
    let payload = image_root(root.path());
    let s = Serve::start(&[root.path()], &[]);
    // Warm up (the first file transfer allocates its 1 MiB piece buffer), then measure.
    assert_eq!(get(&s, "/g/p1.zst", None).1, payload);
    let (base, _) = memory_kib(s.pid());

    // 500 idle connections: half send nothing, half half a request head.
    let mut idle = vec![];
    for i in 0..IDLE {
        let mut c = TcpStream::connect(s.addr).unwrap();
        if i % 2 == 1 {
            c.write_all(b"GET /g/manifest HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
        }
        idle.push(c);
    }
    let addr = s.addr;
    let huge = std::thread::spawn(move || endless_header(addr, 1 << 30));

    // Normal requests while this goes on: the manifest and payload ranges.
    let mut slowest = Duration::ZERO;
    for i in 0..20u64 {
        let t = Instant::now();
        let (code, body) = get(&s, "/g/manifest", None);
        assert_eq!((code, body.len()), (200, 18));
        let off = i * 200_000;
        let (code, body) = get(
            &s,
            "/g/p1.zst",
            Some(&format!("bytes={off}-{}", off + 99_999)),
        );
        assert_eq!(code, 206);
        assert!(body == payload[off as usize..off as usize + 100_000]);
        slowest = slowest.max(t.elapsed());
    }
    let (sent, answer) = huge.join().unwrap();
    let (rss, hwm) = memory_kib(s.pid());
    eprintln!(
        "load: {IDLE} idle connections + a header of which {sent} bytes were taken before \
         the server closed it; slowest manifest+range pair {slowest:?}; server RSS \
         {base} KiB at rest, {rss} KiB under load, peak {hwm} KiB"
    );
    // The server stopped reading the head at its limit (a 1 GiB one would be in
    // memory otherwise) and said why when it could.
    assert!(
        sent < 64 << 20,
        "the server took {sent} bytes of one header"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // The documented bound: 64 MiB over the server at rest.
    assert!(
        hwm < base + (64 << 10),
        "server memory grew from {base} KiB to a peak of {hwm} KiB"
    );

    // Idle connections are closed (IDLE_TIMEOUT after they opened).
    let mut c = idle.pop().unwrap();
    c.set_read_timeout(Some(imgtool::httpd::IDLE_TIMEOUT * 2))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = c
        .read(&mut buf)
        .expect("the idle connection is closed, not left open");
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || got.starts_with("HTTP/1.1 408"), "{got}");
    drop(idle);
}

#[test]
fn at_the_connection_bound_idle_connections_make_room() {
    allow_descriptors(1024);
    let root = tempfile::tempdir().unwrap();
    image_root(root.path());
    let s = Serve::start(&[root.path()], &["--max-connections", "32"]);
    // Four times the bound in idle connections: the oldest idle ones are closed for the
    // newer, so a real request always gets in.
    let idle: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    for _ in 0..5 {
        assert_eq!(get(&s, "/g/manifest", None).0, 200);
    }
    // The first ones were closed to make room.
    let mut c = &idle[0];
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
}

/// A connection to `addr` with a 4 KiB receive buffer (set before the connect, so the
/// window stays small): a reader that stops reading leaves the server holding the rest of
/// its response, not the kernel.
fn small_window_connect(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("{addr}: IPv4 expected")
    };
    // SAFETY: plain socket calls on a descriptor we own; sizes are those of the structs.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let small: libc::c_int = 4096;
        assert_eq!(
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &small as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ),
            0
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::connect(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            0,
            "connect: {}",
            std::io::Error::last_os_error()
        );
        stream
    }
}

#[test]
fn slow_status_readers_share_one_board() {
    const READERS: usize = 64;
    allow_descriptors(4 * READERS as u64);
    let root = tempfile::tempdir().unwrap();
    image_root(root.path());
    let s = Serve::start(&[root.path()], &[]);
    // A large board: MAX_NODES entries whose every text is at its bound and needs a JSON
    // escape for each character (posted from this host, which may post for any node).
    let report = |i: usize| {
        serde_json::json!({
            "phase": "\"".repeat(40),
            "message": format!("{i}{}", "\"".repeat(600)),
            "image": "\"".repeat(200),
            "upstream": "\"".repeat(100),
        })
        .to_string()
    };
    let pooled = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let post = |node: &str, i: usize| {
        let r = pooled
            .post(&format!("{}/status/{node}", s.url))
            .send_string(&report(i))
            .unwrap_or_else(|e| panic!("POST /status/{node}: {e}"));
        assert_eq!(r.status(), 204);
    };
    for i in 0..imgtool::board::MAX_NODES {
        post(&format!("n{i:04}"), i);
    }
    let (code, board) = get(&s, "/status", None);
    assert_eq!(code, 200);
    let board_kib = board.len() as u64 >> 10;
    let (base, _) = memory_kib(s.pid());

    // Readers that take the first bytes and then stop; a report before each, so that
    // every reader asks for a new version of the board.
    let mut readers = vec![];
    for i in 0..READERS {
        post("n0000", i + 1);
        let mut c = small_window_connect(s.addr);
        c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut first = [0u8; 1024];
        c.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200"));
        readers.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (rss, hwm) = memory_kib(s.pid());
    eprintln!(
        "status: a board of {board_kib} KiB, {READERS} readers stalled: server RSS {base} KiB \
         before, {rss} KiB with them, peak {hwm} KiB"
    );
    // The bound (MAX_STATUS_SNAPSHOT_BYTES and one board) plus 32 MiB for the
    // connections and a board being serialised. Each reader holding its own copy would
    // be READERS boards.
    let bound =
        base + (imgtool::board::MAX_STATUS_SNAPSHOT_BYTES >> 10) + 2 * board_kib + (32 << 10);
    assert!(
        hwm < bound,
        "server memory grew from {base} KiB to a peak of {hwm} KiB (bound {bound} KiB)"
    );
    // The board still answers, and shows the latest report once the rebuild spacing
    // (four times the last build's duration) has passed.
    drop(readers);
    post("n0001", 999_999);
    let fresh = (0..100).any(|_| {
        let (code, board) = get(&s, "/status", None);
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(100));
        String::from_utf8_lossy(&board).contains("999999")
    });
    assert!(fresh, "the board never showed the latest report");
}

/// The reported hole, at the real thresholds: readers taking 64 KiB/s (above the old
/// floor of 1 MiB per 60 s, below `MIN_RATE`) held their connection slots as long as
/// they liked — with `--max-connections 3`, three of them kept every other request out
/// (503). Now a request gets in again: the rate rule closes them after 30-60 s (a
/// reader's first window includes the few MiB the kernel takes at once), and at the bound
/// the slowest is closed for a new connection sooner. Bounded: the readers stop after
/// 120 s, the polling after 100 s.
#[test]
fn readers_slower_than_the_minimum_rate_give_their_slots_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let root = tempfile::tempdir().unwrap();
    image_root(root.path());
    // A 256 MiB file (sparse: costs nothing to read).
    std::fs::File::create(root.path().join("g/big"))
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let s = Serve::start(&[root.path()], &["--max-connections", "3"]);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop) = (s.addr, stop.clone());
            std::thread::spawn(move || {
                let mut c = small_window_connect(addr);
                c.write_all(b"GET /g/big HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let start = Instant::now();
                let mut got = 0u64;
                let mut piece = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                    match c.read(&mut piece) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n as u64,
                    }
                    // 64 KiB/s.
                    let due = Duration::from_secs_f64(got as f64 / (64 << 10) as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                got
            })
        })
        .collect();
    // All three slots are taken.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(get(&s, "/g/manifest", None).0, 503);
    let t = Instant::now();
    let mut answered = None;
    while t.elapsed() < Duration::from_secs(100) {
        std::thread::sleep(Duration::from_secs(1));
        let code = get(&s, "/g/manifest", None).0;
        if code == 200 {
            answered = Some(t.elapsed());
            break;
        }
        assert_eq!(code, 503);
    }
    stop.store(true, Ordering::Relaxed);
    let got: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    eprintln!("slow readers: got {got:?} bytes; a request got in after {answered:?}");
    assert!(
        answered.is_some(),
        "three readers at 64 KiB/s kept every slot for 100 s"
    );
}

/// Readers that stall cost their client nothing, and the rate rule takes a window or two
/// to close them: a client reconnecting stalled readers kept a full server answering 503.
/// Now, at the bound with no idle connection, the slowest reader well below a real node's
/// rate is closed for the new connection — and a reader at a real node's rate never is.
#[test]
fn at_the_bound_a_stalled_reader_makes_room_a_fast_one_does_not() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let root = tempfile::tempdir().unwrap();
    image_root(root.path());
    std::fs::File::create(root.path().join("g/big"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let s = Serve::start(&[root.path()], &["--max-connections", "3"]);
    // Two readers that take the start of the response and then nothing.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = small_window_connect(s.addr);
            c.write_all(b"GET /g/big HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut first = [0u8; 64];
            c.read_exact(&mut first).unwrap();
            c
        })
        .collect();
    // One reading at 4 MiB/s (a node on a congested uplink takes about 1.9 MiB/s) until
    // told to stop (at most 120 s): returns its bytes and whether the server closed it.
    let stop = Arc::new(AtomicBool::new(false));
    let fast = {
        let (addr, stop) = (s.addr, stop.clone());
        std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /g/big HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let start = Instant::now();
            let mut got = 0u64;
            let mut piece = vec![0u8; 64 << 10];
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                match c.read(&mut piece) {
                    Ok(0) | Err(_) => return (got, true),
                    Ok(n) => got += n as u64,
                }
                let due = Duration::from_secs_f64(got as f64 / (4 << 20) as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            (got, false)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Requests until one gets in (at most 25 s: less than one rate window, so only an
    // eviction can make room).
    let t = Instant::now();
    let mut answered = None;
    let mut refused = 0;
    while t.elapsed() < Duration::from_secs(25) {
        match get(&s, "/g/manifest", None).0 {
            200 => {
                answered = Some(t.elapsed());
                break;
            }
            503 => refused += 1,
            code => panic!("HTTP {code}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let (got, closed) = fast.join().unwrap();
    eprintln!(
        "eviction: {refused} requests refused, then one answered after {answered:?}; \
         the fast reader got {} MiB",
        got >> 20
    );
    assert!(
        answered.is_some(),
        "two stalled readers and a fast one kept the server full for 25 s"
    );
    assert!(
        !closed,
        "the reader at 4 MiB/s was closed after {got} bytes"
    );
    drop(stalled);
}
