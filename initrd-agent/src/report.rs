//! Progress and status: console lines for the person at the serial console, and status
//! reports `POST`ed to the server's board (best effort: a stock HTTP server has none).
//! Updates are throttled to one every two seconds, phase changes go out at once. Reports
//! are posted by a background thread (the latest one wins), so cloning never waits for
//! the board — except for the final `done` or `failed`, which is delivered before the
//! node moves on.

use imgtool::serve::post_report;
use netboot_proto::status::{ChunkCounts, Phase, Report};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The report waiting to be posted, whether a post is in progress, and its signal.
type Outbox = (Mutex<(Option<Report>, bool)>, Condvar);

pub struct Reporter {
    server: Option<String>,
    node: String,
    start: Instant,
    state: Mutex<State>,
    outbox: Arc<Outbox>,
    poster: std::sync::Once,
}

struct State {
    last: Option<Instant>,
    report: Report,
}

impl Reporter {
    pub fn new(server: Option<String>, node: String) -> Self {
        Reporter {
            server,
            node,
            start: Instant::now(),
            state: Mutex::new(State {
                last: None,
                report: Report::default(),
            }),
            outbox: Default::default(),
            poster: std::sync::Once::new(),
        }
    }

    pub fn set_server(&mut self, server: Option<String>, node: String) {
        self.server = server;
        self.node = node;
    }

    /// Prints a console line.
    pub fn say(&self, msg: &str) {
        println!(
            "[{:7.1}s] netboot: {msg}",
            self.start.elapsed().as_secs_f64()
        );
    }

    /// A new phase: printed and reported at once. A final one ([`Phase::is_final`]) is
    /// delivered (up to 10 s) before this returns.
    pub fn phase(&self, phase: impl Into<Phase>, message: &str) {
        let phase = phase.into();
        self.say(&format!("{phase}: {message}"));
        let r = {
            let Ok(mut s) = self.state.lock() else { return };
            s.report.phase = phase.clone();
            s.report.message = message.into();
            s.report.done = 0;
            s.report.total = 0;
            s.last = Some(Instant::now());
            s.report.clone()
        };
        self.send(&r);
        if phase.is_final() {
            self.drain(Duration::from_secs(10));
        }
    }

    /// The upstream it pulls from now (after a reroute); the image stays.
    pub fn set_upstream(&self, upstream: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.report.upstream = upstream.into();
        }
    }

    pub fn set_image(&self, image: &str, upstream: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.report.image = image.into();
            s.report.upstream = upstream.into();
        }
    }

    /// The restore's chunk counts: carried by every report from now on.
    pub fn set_chunks(&self, counts: ChunkCounts) {
        if let Ok(mut s) = self.state.lock() {
            s.report.chunks = Some(counts);
        }
    }

    /// Progress within a phase (`what`: imgtool's progress name, `restoring`, …); throttled.
    pub fn progress(&self, what: &str, done: u64, total: u64) {
        let r = {
            let Ok(mut s) = self.state.lock() else { return };
            let due = s.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) || done == total;
            let changed = s.report.phase != what;
            s.report.phase = what.into();
            s.report.done = done;
            s.report.total = total;
            if !(due || changed) {
                return;
            }
            s.last = Some(Instant::now());
            s.report.clone()
        };
        let pct = if total > 0 {
            100.0 * done as f64 / total as f64
        } else {
            0.0
        };
        self.say(&format!(
            "{what} {pct:5.1}% ({} / {} MiB)",
            done >> 20,
            total >> 20
        ));
        self.send(&r);
    }

    /// Queues `r` for the poster thread (replacing one not yet sent).
    fn send(&self, r: &Report) {
        let Some(server) = &self.server else { return };
        self.poster.call_once(|| {
            let (outbox, server, node) = (self.outbox.clone(), server.clone(), self.node.clone());
            let start = self.start;
            let warn = move |e: String| {
                println!(
                    "[{:7.1}s] netboot: status report not delivered ({e}); continuing without",
                    start.elapsed().as_secs_f64()
                );
            };
            std::thread::spawn(move || post_loop(&outbox, &server, &node, warn));
        });
        let (m, cv) = &*self.outbox;
        if let Ok(mut o) = m.lock() {
            o.0 = Some(r.clone());
            cv.notify_all();
        }
    }

    /// Waits (up to `limit`) until every queued report was posted.
    fn drain(&self, limit: Duration) {
        let (m, cv) = &*self.outbox;
        let deadline = Instant::now() + limit;
        let Ok(mut o) = m.lock() else { return };
        while o.0.is_some() || o.1 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match cv.wait_timeout(o, deadline - now) {
                Ok((g, _)) => o = g,
                Err(_) => return,
            }
        }
    }
}

/// The poster thread: posts the latest queued report, forever. Warns once.
fn post_loop(outbox: &Outbox, server: &str, node: &str, warn: impl Fn(String)) {
    let (m, cv) = outbox;
    let mut warned = false;
    loop {
        let r = {
            let Ok(mut o) = m.lock() else { return };
            while o.0.is_none() {
                o = match cv.wait(o) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
            o.1 = true;
            o.0.take()
        };
        if let Some(r) = r {
            if let Err(e) = post_report(server, node, &r) {
                if !warned {
                    warned = true;
                    warn(imgtool::error::chain(&e));
                }
            }
        }
        if let Ok(mut o) = m.lock() {
            o.1 = false;
        }
        cv.notify_all();
    }
}
