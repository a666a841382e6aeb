//! Progress reporting: an `indicatif` byte bar on a terminal, a callback for programs that
//! report elsewhere (the node agent: console lines and status posts), or nothing (pipes,
//! `--json`, tests). Library routines take a [`Progress`] and never print themselves.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Called with (what, done, total) at every start and every update.
pub type Callback = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

pub struct Progress {
    bar: Option<ProgressBar>,
    cb: Option<Callback>,
    what: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    fn new(bar: Option<ProgressBar>, cb: Option<Callback>) -> Self {
        Progress {
            bar,
            cb,
            what: Mutex::new(String::new()),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// A bar on stderr when it is a terminal and `quiet` is false.
    pub fn auto(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self::new(Some(bar), None)
    }

    pub fn hidden() -> Self {
        Self::new(None, None)
    }

    /// Reports through `cb` instead of drawing.
    pub fn callback(cb: Callback) -> Self {
        Self::new(None, Some(cb))
    }

    pub fn start(&self, total: u64, what: &str) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        if let Ok(mut w) = self.what.lock() {
            *w = what.to_string();
        }
        if let Some(b) = &self.bar {
            b.reset();
            b.set_length(total);
            b.set_position(0);
            b.set_message(what.to_string());
        }
        if let Some(cb) = &self.cb {
            cb(what, 0, total);
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(cb) = &self.cb {
            let what = self.what.lock().map(|w| w.clone()).unwrap_or_default();
            cb(&what, done, self.total.load(Ordering::Relaxed));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
