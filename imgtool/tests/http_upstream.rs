//! `HttpSource` against upstreams that answer badly: more bytes than asked, a wrong
//! `Content-Range`, a chunked body, a stall in the middle of a body, a 5xx, a 404, no
//! server at all. Each fake upstream is a loopback listener made by the test; every
//! answer closes its connection.

use imgtool::source::{check_url, HttpSource, ImageSource};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file every good upstream holds: 500 bytes, byte i = i mod 251.
fn file() -> Vec<u8> {
    (0..500u32).map(|i| (i % 251) as u8).collect()
}

/// The `Range: bytes=a-b` of a request head, if any.
fn range_of(head: &str) -> Option<(usize, usize)> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))?;
    let spec = line.split_once('=')?.1.trim();
    let (a, b) = spec.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What a fake upstream does with one request: writes to the socket as it likes.
type Answer = dyn Fn(&str, &mut TcpStream) + Send + Sync;

/// An upstream on a loopback port answering every request with `answer`; returns its
/// base URL and the request heads it received.
fn upstream(answer: Arc<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/img", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(vec![]));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (answer, seen) = (answer.clone(), seen2.clone());
            std::thread::spawn(move || {
                let mut head = vec![];
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(head.clone());
                answer(&head, &mut s);
                let _ = s.flush();
            });
        }
    });
    (base, seen)
}

/// A 206 with the given Content-Range and Content-Length headers and `body`.
fn partial(s: &mut TcpStream, content_range: &str, body: &[u8]) {
    let _ = write!(
        s,
        "HTTP/1.1 206 Partial Content\r\nContent-Range: {content_range}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
}

/// A correct upstream: the range asked for, nothing else.
fn good(head: &str, s: &mut TcpStream) {
    let f = file();
    let Some((a, b)) = range_of(head) else {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            f.len()
        );
        let _ = s.write_all(&f);
        return;
    };
    let b = b.min(f.len() - 1);
    partial(s, &format!("bytes {a}-{b}/{}", f.len()), &f[a..=b]);
}

/// A source of one upstream, quick to give up: 2 attempts, a 300 ms stall limit.
fn source(bases: Vec<String>) -> HttpSource {
    let mut s = HttpSource::chain(bases, Duration::from_millis(300));
    s.attempts = 2;
    s.failover_attempts = 1;
    s.grace = Duration::ZERO;
    s
}

#[test]
fn a_range_is_asked_for_and_its_bytes_come_back() {
    let (base, seen) = upstream(Arc::new(good));
    let src = source(vec![base]);
    assert_eq!(
        src.read_range("p2.zst", 100, 20).unwrap(),
        &file()[100..120]
    );
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /img/p2.zst HTTP/1.1\r\n"), "{head}");
    assert_eq!(range_of(&head), Some((100, 119)), "{head}");
    // A stream of the same range, and a whole small file.
    let mut st = src.open_range("p2.zst", 100, 20).unwrap();
    let mut got = vec![];
    st.reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, &file()[100..120]);
    assert_eq!(src.read_file("manifest").unwrap(), file());
    assert_eq!(src.bytes_fetched(), 40);
}

#[test]
fn an_answer_longer_than_asked_is_refused() {
    // The right start, but 40 bytes where 20 were asked for.
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        partial(s, "bytes 100-139/500", &file()[100..140])
    }));
    let e = source(vec![base.clone()])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(
        e.msg
            .contains("does not match the range asked for (bytes 100-119)")
            && e.msg.contains("after 2 attempts")
            && !e.unreachable,
        "{e}"
    );
    // A stream of it is refused too, instead of handing on the 20 extra bytes.
    let src = source(vec![base]);
    assert!(src
        .open_range("p2.zst", 100, 20)
        .is_err_and(|e| !e.unreachable));
    assert_eq!(src.bytes_fetched(), 0);
}

#[test]
fn a_content_length_that_disagrees_with_the_range_is_refused() {
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        partial(s, "bytes 100-119/500", &file()[100..140])
    }));
    let e = source(vec![base])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(e.msg.contains("Content-Length 40 does not match"), "{e}");
}

#[test]
fn a_wrong_content_range_is_refused() {
    // 20 bytes, but from the start of the file.
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        partial(s, "bytes 0-19/500", &file()[..20])
    }));
    let e = source(vec![base.clone()])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(e.msg.contains("\"bytes 0-19/500\""), "{e}");
    // And a 206 without any.
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s.write_all(
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 20\r\nConnection: close\r\n\r\n",
        );
        let _ = s.write_all(&file()[100..120]);
    }));
    let e = source(vec![base])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(e.msg.contains("Content-Range \"\" in a 206 answer"), "{e}");
}

#[test]
fn a_200_is_taken_only_for_a_range_from_zero_and_only_what_was_asked() {
    // A server that ignores Range: the whole file with a 200.
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        good("GET / HTTP/1.1\r\n\r\n", s)
    }));
    let src = source(vec![base]);
    assert_eq!(src.read_range("p2.zst", 0, 20).unwrap(), &file()[..20]);
    let mut st = src.open_range("p2.zst", 0, 20).unwrap();
    let mut got = vec![];
    st.reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, &file()[..20]);
    let e = src.read_range("p2.zst", 100, 20).unwrap_err();
    assert!(e.msg.contains("HTTP 200 OK to a Range request"), "{e}");
}

#[test]
fn a_chunked_body_is_refused() {
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-119/500\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n14\r\n");
        let _ = s.write_all(&file()[100..120]);
        let _ = s.write_all(b"\r\n0\r\n\r\n");
    }));
    let e = source(vec![base])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(e.msg.contains("transfer encoding \"chunked\""), "{e}");
}

#[test]
fn a_stall_in_the_middle_of_a_body_is_an_error() {
    // Half the body, then silence for much longer than the source's 300 ms stall limit.
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-119/500\r\nContent-Length: 20\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(&file()[100..110]);
        let _ = s.flush();
        std::thread::sleep(Duration::from_secs(3));
    }));
    let src = source(vec![base]);
    let e = src.read_range("p2.zst", 100, 20).unwrap_err();
    assert!(
        e.msg
            .contains("connection lost after 10 of 20 bytes at 100")
            && !e.unreachable,
        "{e}"
    );
    // A stream gives the 10 bytes, then an error (never a short success).
    let mut st = src.open_range("p2.zst", 100, 20).unwrap();
    let mut got = vec![];
    assert!(st.reader.read_to_end(&mut got).is_err());
    assert_eq!(got, &file()[100..110]);
}

#[test]
fn a_short_body_is_an_error_not_a_short_success() {
    let (base, _) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-119/500\r\nContent-Length: 20\r\nConnection: close\r\n\r\n0123456789");
    }));
    let e = source(vec![base])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(e.msg.contains("after 10 of 20 bytes at 100"), "{e}");
}

#[test]
fn a_5xx_moves_the_source_to_the_next_upstream() {
    let (broken, broken_seen) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }));
    let (primary, _) = upstream(Arc::new(good));
    let mut src = source(vec![broken.clone(), primary.clone()]);
    let switched = Arc::new(Mutex::new(vec![]));
    let sw = switched.clone();
    src.on_switch(Box::new(move |from: &str, to: &str, why: &str| {
        sw.lock()
            .unwrap()
            .push((from.to_string(), to.to_string(), why.to_string()))
    }));
    assert_eq!(
        src.read_range("p2.zst", 100, 20).unwrap(),
        &file()[100..120]
    );
    assert_eq!(src.current(), primary);
    let switched = switched.lock().unwrap();
    assert_eq!(switched.len(), 1);
    assert_eq!((&switched[0].0, &switched[0].1), (&broken, &primary));
    assert!(switched[0].2.contains("HTTP 503"), "{:?}", switched[0]);
    assert!(!broken_seen.lock().unwrap().is_empty());
    // A stream opens on the primary from now on.
    assert_eq!(src.open_range("p2.zst", 0, 10).unwrap().from, primary);
}

#[test]
fn statuses_are_told_apart() {
    // 404: the file is not there, asked once, never retried.
    let (base, seen) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }));
    let e = source(vec![base])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(e.msg.contains("HTTP 404: no such file"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // 416: asked again, then given up.
    let (base, seen) = upstream(Arc::new(|_: &str, s: &mut TcpStream| {
        let _ = s.write_all(
            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }));
    let e = source(vec![base])
        .read_range("p2.zst", 100, 20)
        .unwrap_err();
    assert!(
        e.msg
            .contains("HTTP 416 Range Not Satisfiable to a Range request (expected 206)")
            && e.msg.contains("after 2 attempts"),
        "{e}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn no_server_is_unreachable_and_https_is_refused_up_front() {
    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = source(vec![format!("http://127.0.0.1:{port}/img")]);
    let e = src.read_range("p2.zst", 100, 20).unwrap_err();
    assert!(e.unreachable, "{e}");
    assert!(src
        .open_range("p2.zst", 100, 20)
        .is_err_and(|e| e.unreachable));
    let e = check_url("https://images.example/img")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("https:// is not supported") && e.contains("docs/TRUST.md"),
        "{e}"
    );
    assert!(check_url("http://images.example/img").is_ok());
}

#[test]
fn a_redirect_is_not_followed_but_counts_as_a_bad_answer() {
    // Where the redirect points: a good upstream that must never be asked. A node's
    // upstreams are the plan's; an upstream may not send the node somewhere else.
    let (elsewhere, elsewhere_seen) = upstream(Arc::new(good));
    let target = format!("{elsewhere}/p2.zst");
    let (base, seen) = upstream(Arc::new(move |_: &str, s: &mut TcpStream| {
        let _ = write!(
            s,
            "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }));
    let src = source(vec![base]);
    let e = src.read_range("p2.zst", 100, 20).unwrap_err();
    assert!(e.msg.contains("HTTP 302"), "{e}");
    let e = src.read_file("manifest").unwrap_err();
    assert!(e.msg.contains("HTTP 302"), "{e}");
    let e = src.read_optional("signature", 1024).unwrap_err();
    assert!(e.msg.contains("HTTP 302"), "{e}");
    assert!(!seen.lock().unwrap().is_empty());
    assert!(
        elsewhere_seen.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}
