//! A minimal HTTP/1.1 client for one job: streaming a byte range of a file (`GET` with
//! `Range`, a body with `Content-Length`) straight from the socket. ureq, used for
//! everything else, reads bodies through an 8 KiB buffer — a copy and a system call per
//! 8 KiB, which mattered when 64 relaying agents shared two cores in the distribution
//! benchmark. Plain `http://` only (what `imgtool serve`, relays and nginx speak).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A response whose body is being streamed.
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The body: exactly `Content-Length` bytes (0 when the server sent none).
    pub body: Box<dyn Read + Send>,
}

/// Why a request failed, and whether the server was reached at all.
#[derive(Debug)]
pub struct HttpError {
    pub msg: String,
    /// False when no connection could be made.
    pub connected: bool,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// `GET url` for bytes `offset .. offset + len` (`len` > 0). `stall` bounds every wait
/// for data (headers and body).
pub fn get_range(
    url: &str,
    offset: u64,
    len: u64,
    connect: Duration,
    stall: Duration,
) -> Result<Response, HttpError> {
    let unconnected = |msg: String| HttpError {
        msg,
        connected: false,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| unconnected(format!("{url}: only http:// URLs can be streamed")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs = host_port
        .to_socket_addrs()
        .map_err(|e| unconnected(format!("{host_port}: {e}")))?;
    let mut last = format!("{host_port}: no address");
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, connect) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let mut sock = sock.ok_or_else(|| unconnected(last))?;
    let failed = |msg: String| HttpError {
        msg,
        connected: true,
    };
    let io = |what: &str, e: io::Error| failed(format!("{what}: {e}"));
    sock.set_read_timeout(Some(stall))
        .and_then(|_| sock.set_write_timeout(Some(stall)))
        .and_then(|_| sock.set_nodelay(true))
        .map_err(|e| io("socket options", e))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nRange: bytes={offset}-{}\r\nUser-Agent: netboot\r\nConnection: close\r\n\r\n",
        offset + len.max(1) - 1
    );
    sock.write_all(request.as_bytes())
        .map_err(|e| io("sending the request", e))?;

    // Headers (the read that completes them may bring the first body bytes too).
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 64 << 10 {
            return Err(failed("response headers longer than 64 KiB".into()));
        }
        let n = sock
            .read(&mut buf)
            .map_err(|e| io("reading the response headers", e))?;
        if n == 0 {
            return Err(failed(
                "connection closed before the response headers".into(),
            ));
        }
        head.extend_from_slice(&buf[..n]);
    };
    let early = head.split_off(end);
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|c| c.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(failed(format!("not an HTTP/1 response: {status_line:?}")));
    };
    let reason = parts.next().unwrap_or("").to_string();
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<u64>()
                    .map_err(|_| failed(format!("bad Content-Length {v:?}")))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") && !v.eq_ignore_ascii_case("identity")
        {
            return Err(failed(format!(
                "transfer encoding {v:?} where a Content-Length was expected"
            )));
        }
    }
    let remaining = match (length, status) {
        (Some(n), _) => n,
        (None, 200..=299) => return Err(failed("no Content-Length in the response".into())),
        (None, _) => 0,
    };
    Ok(Response {
        status,
        reason,
        body: Box::new(Body {
            early,
            at: 0,
            sock,
            remaining,
        }),
    })
}

/// The body: the bytes that came with the headers, then the socket, `remaining` in all.
struct Body {
    early: Vec<u8>,
    at: usize,
    sock: TcpStream,
    remaining: u64,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = (buf.len() as u64).min(self.remaining) as usize;
        if max == 0 {
            return Ok(0);
        }
        let n = if self.at < self.early.len() {
            let n = max.min(self.early.len() - self.at);
            buf[..n].copy_from_slice(&self.early[self.at..self.at + n]);
            self.at += n;
            n
        } else {
            self.sock.read(&mut buf[..max])?
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers one request with `response`, written in pieces of `piece`
    /// bytes; returns its URL and the request it received.
    fn serve_once(response: Vec<u8>, piece: usize) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/img/p2.zst", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = vec![];
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                req.extend_from_slice(&b[..n]);
            }
            for p in response.chunks(piece) {
                s.write_all(p).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            String::from_utf8(req).unwrap()
        });
        (url, h)
    }

    fn get(url: &str) -> Result<Response, HttpError> {
        get_range(url, 100, 20, Duration::from_secs(2), Duration::from_secs(2))
    }

    #[test]
    fn streams_the_body_and_sends_the_range() {
        let body: Vec<u8> = (0..20u8).collect();
        let mut resp = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-119/500\r\nContent-Length: 20\r\n\r\n".to_vec();
        resp.extend_from_slice(&body);
        resp.extend_from_slice(b"junk after the body");
        for piece in [7, 4096] {
            let (url, h) = serve_once(resp.clone(), piece);
            let mut r = get(&url).unwrap();
            assert_eq!((r.status, r.reason.as_str()), (206, "Partial Content"));
            let mut got = vec![];
            r.body.read_to_end(&mut got).unwrap();
            assert_eq!(got, body, "piece {piece}");
            let req = h.join().unwrap();
            assert!(req.starts_with("GET /img/p2.zst HTTP/1.1\r\n"), "{req}");
            assert!(req.contains("\r\nRange: bytes=100-119\r\n"), "{req}");
        }
    }

    #[test]
    fn a_short_body_is_an_error_not_a_short_success() {
        let resp = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 20\r\n\r\n0123456789".to_vec();
        let (url, h) = serve_once(resp, 4096);
        let mut r = get(&url).unwrap();
        let mut got = vec![0u8; 20];
        let e = r.body.read_exact(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        h.join().unwrap();
    }

    #[test]
    fn statuses_chunked_bodies_and_refusals_are_told_apart() {
        let (url, h) = serve_once(b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec(), 4096);
        assert_eq!(get(&url).unwrap().status, 404);
        h.join().unwrap();
        let chunked =
            b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (url, h) = serve_once(chunked, 4096);
        let e = get(&url).err().unwrap();
        assert!(e.connected && e.msg.contains("chunked"), "{e}");
        h.join().unwrap();
        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = get(&format!("http://127.0.0.1:{port}/x")).err().unwrap();
        assert!(!e.connected, "{e}");
        assert!(get("https://127.0.0.1/x").is_err());
    }
}
