//! "Have you seen U?" ([`netboot_proto::seen`]), the asking side: while an
//! [`super::HttpSource`] waits within the boot grace for an upstream U that has never
//! answered it, it asks a candidate above U, about once per
//! [`super::SEEN_QUERY_PERIOD`], whether U fetched from it. `seen` → U had booted and
//! listened (a relay listens before its first request upstream), so a U that is silent or
//! refuses now is gone: the source moves up at once instead of waiting out the grace.
//!
//! Which candidate: the next one up (U's own upstream) first; one that cannot be reached
//! (not booted, dead) → the next query asks the one above it, up to the last (the
//! primary), then the nearest again; one that answers anything but `seen` → the nearest
//! again. Bounded: one query in flight per source (its own thread), connect within
//! [`super::CONNECT_TIMEOUT`], the whole query within [`super::SEEN_QUERY_TIMEOUT`], the
//! answer at most [`netboot_proto::seen::MAX_ANSWER_BYTES`], parsed typed. The answer
//! only decides when the source moves, never what it fetches or how it verifies.

use netboot_proto::seen::{query_path_within, SeenAnswer, MAX_ANSWER_BYTES};
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What one query found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// The candidate answered; `seen` or not.
    Answer(SeenAnswer),
    /// It answered, but not with an answer (an nginx primary: 404; a bad body).
    NoAnswer,
    /// It could not be reached.
    Unreachable,
}

#[derive(Default)]
struct State {
    in_flight: bool,
    /// When the last query started.
    last: Option<Instant>,
    /// The upstream the rotation below is for.
    waiting_on: Option<usize>,
    /// Which candidate above it the next query asks (0: the nearest).
    next: usize,
    /// Per upstream: why it is known to be gone.
    gone: Vec<Option<String>>,
}

/// The queries of one source.
pub(crate) struct Scout {
    state: Arc<Mutex<State>>,
    agent: ureq::Agent,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Scout {
    pub(crate) fn new(upstreams: usize) -> Scout {
        Scout {
            state: Arc::new(Mutex::new(State {
                gone: vec![None; upstreams],
                ..State::default()
            })),
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout_connect(super::CONNECT_TIMEOUT)
                .timeout(super::SEEN_QUERY_TIMEOUT)
                .build(),
        }
    }

    /// Called while the source waits for upstream `i` of `bases` (never the last): why
    /// `i` is gone, if a query found out; otherwise starts the next query when none is in
    /// flight and the period has passed. `within`: how long ago a fetch by `i` may have
    /// been to count (this run: the source's age plus its boot grace).
    pub(crate) fn poll(&self, bases: &[String], i: usize, within: Duration) -> Option<String> {
        let mut s = lock(&self.state);
        if let Some(why) = s.gone.get(i).cloned().flatten() {
            return Some(why);
        }
        let above = bases.len().checked_sub(i + 1).filter(|n| *n > 0)?;
        if s.waiting_on != Some(i) {
            s.waiting_on = Some(i);
            s.next = 0;
        }
        let due = s
            .last
            .is_none_or(|t| t.elapsed() >= super::SEEN_QUERY_PERIOD);
        if s.in_flight || !due {
            return None;
        }
        let who = host_of(&bases[i])?;
        let addr: IpAddr = who.rsplit_once(':').map_or(who, |(h, _)| h).parse().ok()?;
        let j = i + 1 + s.next.min(above - 1);
        let (asked, url) = (
            host_of(&bases[j]).unwrap_or(&bases[j]).to_string(),
            format!("{}/{}", bases[j], query_path_within(addr, within)),
        );
        s.in_flight = true;
        s.last = Some(Instant::now());
        drop(s);
        let (state, agent, who) = (self.state.clone(), self.agent.clone(), who.to_string());
        let spawned = std::thread::Builder::new()
            .name("seen-query".into())
            .spawn(move || {
                let found = ask(&agent, &url);
                let mut s = lock(&state);
                s.in_flight = false;
                match found {
                    Found::Answer(a) if a.seen => {
                        let how = if a.done {
                            "it finished there and exited"
                        } else {
                            "it fetched from there, so it had booted, and no longer answers"
                        };
                        if let Some(g) = s.gone.get_mut(i) {
                            *g = Some(format!("{who} was seen by {asked} and is gone: {how}"));
                        }
                    }
                    _ if s.waiting_on != Some(i) => {}
                    Found::Unreachable if j + 1 < i + 1 + above => s.next += 1,
                    _ => s.next = 0,
                }
            });
        if spawned.is_err() {
            lock(&self.state).in_flight = false;
        }
        None
    }
}

/// `host:port` of an `http://host:port/…` URL.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// One query: `GET url`, the answer bounded and typed.
fn ask(agent: &ureq::Agent, url: &str) -> Found {
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(..)) => return Found::NoAnswer,
        Err(ureq::Error::Transport(_)) => return Found::Unreachable,
    };
    let mut body = vec![];
    let limit = MAX_ANSWER_BYTES as u64 + 1;
    if resp
        .into_reader()
        .take(limit)
        .read_to_end(&mut body)
        .is_err()
    {
        return Found::NoAnswer;
    }
    SeenAnswer::parse(&body).map_or(Found::NoAnswer, Found::Answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A server that answers every query about 127.0.0.1 bounded to the asker's run
    /// (`?within=35`, [`RUN`]) with `body` (status 200), anything else `400`; counting
    /// the requests.
    fn answering(body: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/img", l.local_addr().unwrap());
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = n.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /img/.seen/127.0.0.1?within=35 ") {
                    ("200 OK", body)
                } else {
                    ("400 Bad Request", "")
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (base, n)
    }

    /// A base nothing listens on (connection refused).
    fn refusing() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("http://{a}/img")
    }

    /// How long ago a fetch may have been to count: the source's age plus its grace.
    const RUN: Duration = Duration::from_secs(35);

    fn poll_until(s: &Scout, bases: &[String], i: usize) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Some(w) = s.poll(bases, i, RUN) {
                return Some(w);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    #[test]
    fn an_upstream_seen_above_is_gone_and_the_walk_skips_unreachable_candidates() {
        let u = refusing();
        let dead_c = refusing();
        let (primary, asked) = answering(r#"{"seen":true,"done":false}"#);
        let bases = vec![u, dead_c, primary];
        let s = Scout::new(bases.len());
        // The next candidate refuses: the query after it asks the one above.
        let why = poll_until(&s, &bases, 0).expect("found gone");
        assert!(
            why.contains("was seen by") && why.contains("is gone"),
            "{why}"
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn not_seen_or_no_answer_keeps_waiting_and_asks_at_most_once_a_period() {
        for body in [r#"{"seen":false,"done":false}"#, "<html>not found</html>"] {
            let (c, asked) = answering(body);
            let bases = vec![refusing(), c];
            let s = Scout::new(bases.len());
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(2500) {
                assert_eq!(s.poll(&bases, 0, RUN), None, "{body}");
                std::thread::sleep(Duration::from_millis(20));
            }
            // 2.5 s of polling every 20 ms: at most one query per second (three, and one
            // of slack), not one per poll (~125); at least the first one was asked.
            let n = asked.load(std::sync::atomic::Ordering::SeqCst);
            assert!((1..=4).contains(&n), "{n} queries");
        }
    }

    #[test]
    fn no_query_for_the_last_upstream_or_a_name_that_is_not_an_address() {
        let (c, asked) = answering(r#"{"seen":true}"#);
        let s = Scout::new(2);
        assert_eq!(s.poll(std::slice::from_ref(&c), 0, RUN), None);
        assert_eq!(s.poll(&["http://node7:8180/img".into(), c], 0, RUN), None);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
