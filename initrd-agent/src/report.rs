//! Progress and status: console lines for the person at the serial console, and status
//! reports `POST`ed to the server's board (best effort: a stock HTTP server has none).
//! Updates are throttled to one every two seconds, phase changes go out at once.

use imgtool::serve::{post_report, Report};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Reporter {
    server: Option<String>,
    node: String,
    start: Instant,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    report: Report,
    warned: bool,
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
                warned: false,
            }),
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

    /// A new phase: printed and reported at once.
    pub fn phase(&self, phase: &str, message: &str) {
        self.say(&format!("{phase}: {message}"));
        let r = {
            let Ok(mut s) = self.state.lock() else { return };
            s.report.phase = phase.into();
            s.report.message = message.into();
            s.report.done = 0;
            s.report.total = 0;
            s.last = Some(Instant::now());
            s.report.clone()
        };
        self.send(&r);
    }

    pub fn set_image(&self, image: &str, upstream: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.report.image = image.into();
            s.report.upstream = upstream.into();
        }
    }

    /// Progress within a phase; throttled.
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

    fn send(&self, r: &Report) {
        let Some(server) = &self.server else { return };
        if let Err(e) = post_report(server, &self.node, r) {
            if let Ok(mut s) = self.state.lock() {
                if !s.warned {
                    s.warned = true;
                    drop(s);
                    self.say(&format!(
                        "status report not delivered ({e}); continuing without"
                    ));
                }
            }
        }
    }
}
