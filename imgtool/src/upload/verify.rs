//! The deferred half of a frame's check: decompressing it and checking the sha256 of
//! its raw bytes, off the request path. A frame's `PUT` is answered once its bytes
//! arrived, its **frame** sha256 (the hash of the stored, compressed form) matched and
//! it was written ([`super::session::check_frame_sum`]); the raw check then runs on the
//! [`Verifier`]'s workers while the client already sends the next frames. Each session
//! has a [`Verification`] that counts its frames not checked yet and keeps the first
//! failure; the commit waits for it ([`Verification::wait`]) and publishes nothing if a
//! frame failed (the refusal names the region and chunk).
//!
//! Memory bound: the verifier holds (queued or being checked) at most
//! [`VERIFY_MAX_FRAMES`] frames and [`VERIFY_MAX_BYTES`] bytes of frames, server-wide
//! (one frame is always admitted, so a single frame larger than the byte bound still
//! goes through), plus one raw buffer of the session's `chunk_size` per worker while it
//! decompresses. A `PUT` whose frame does not fit waits before it is answered: that is
//! the backpressure that slows a client down to the verifier's pace.

use super::session::Refusal;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Frames the verifier holds at most (queued and being checked), over all sessions.
pub const VERIFY_MAX_FRAMES: usize = 64;

/// Bytes of frames the verifier holds at most, over all sessions (at least one frame).
pub const VERIFY_MAX_BYTES: u64 = 128 << 20;

/// Worker threads at most (fewer on a machine with fewer cores).
pub const VERIFY_MAX_WORKERS: usize = 4;

/// A check to run later: its size in bytes (counted against [`VERIFY_MAX_BYTES`]) and
/// the check itself.
pub struct Job {
    pub bytes: u64,
    pub check: Box<dyn FnOnce() -> Result<(), Refusal> + Send>,
}

/// The frames of one session not checked yet, and its first failure.
#[derive(Default)]
pub struct Verification {
    state: Mutex<VerifyState>,
    done: Condvar,
}

#[derive(Default)]
struct VerifyState {
    pending: usize,
    checked: usize,
    failed: Option<Refusal>,
    /// The session ended: its frames still queued are dropped unchecked.
    cancelled: bool,
}

impl Verification {
    pub fn new() -> Arc<Verification> {
        Arc::new(Verification::default())
    }

    fn lock(&self) -> MutexGuard<'_, VerifyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first frame that failed its check, if one did (so far).
    pub fn failed(&self) -> Option<Refusal> {
        self.lock().failed.clone()
    }

    /// Frames checked so far.
    pub fn checked(&self) -> usize {
        self.lock().checked
    }

    /// The session ended: frames of it still queued are not checked.
    pub fn cancel(&self) {
        self.lock().cancelled = true;
    }

    /// Waits until every frame submitted is checked; the first failure, if any.
    pub fn wait(&self) -> Result<(), Refusal> {
        let mut st = self.lock();
        while st.pending > 0 {
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        match &st.failed {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }

    fn finish(&self, result: Option<Result<(), Refusal>>) {
        let mut st = self.lock();
        st.pending = st.pending.saturating_sub(1);
        match result {
            Some(Ok(())) => st.checked += 1,
            Some(Err(r)) => {
                st.failed.get_or_insert(r);
            }
            None => {}
        }
        if st.pending == 0 {
            self.done.notify_all();
        }
    }
}

/// How much the verifier holds now and held at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub frames: usize,
    pub bytes: u64,
    pub peak_frames: usize,
    pub peak_bytes: u64,
}

/// A bounded queue of frame checks and the threads that run them.
pub struct Verifier {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<QueueState>,
    /// Signalled when a held frame is done (room for a waiting `submit`).
    room: Condvar,
    /// Signalled when a job is queued or the verifier closes.
    work: Condvar,
    max_frames: usize,
    max_bytes: u64,
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<(Job, Arc<Verification>)>,
    held: Held,
    closed: bool,
    /// Admission in arrival order: the ticket the next `submit` draws, and the one that
    /// may be admitted now (a large frame is not starved by small ones that fit first).
    next_ticket: u64,
    serving: u64,
}

impl Verifier {
    /// The server's verifier: one worker per core up to [`VERIFY_MAX_WORKERS`], the
    /// bounds [`VERIFY_MAX_FRAMES`] and [`VERIFY_MAX_BYTES`].
    pub fn start() -> std::io::Result<Verifier> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier::with_bounds(
            cores.clamp(1, VERIFY_MAX_WORKERS),
            VERIFY_MAX_FRAMES,
            VERIFY_MAX_BYTES,
        )
    }

    /// A verifier of `workers` threads holding at most `max_frames` frames and
    /// `max_bytes` bytes (each at least 1).
    pub fn with_bounds(
        workers: usize,
        max_frames: usize,
        max_bytes: u64,
    ) -> std::io::Result<Verifier> {
        let shared = Arc::new(Shared {
            state: Mutex::new(QueueState::default()),
            room: Condvar::new(),
            work: Condvar::new(),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
        });
        let mut v = Verifier {
            shared,
            workers: vec![],
        };
        for _ in 0..workers.max(1) {
            let s = v.shared.clone();
            let h = std::thread::Builder::new()
                .name("upload-verify".into())
                .spawn(move || s.work())?;
            v.workers.push(h);
        }
        Ok(v)
    }

    /// Queues `job` for `of`, waiting first while the verifier holds its bound; frames
    /// are admitted in the order they were submitted. The job counts as pending in `of`
    /// from here until it was run (or dropped for a cancelled session).
    pub fn submit(&self, job: Job, of: &Arc<Verification>) {
        let sh = &self.shared;
        let mut st = sh.lock();
        let ticket = st.next_ticket;
        st.next_ticket = st.next_ticket.wrapping_add(1);
        while st.serving != ticket
            || (st.held.frames > 0
                && (st.held.frames >= sh.max_frames
                    || st.held.bytes.saturating_add(job.bytes) > sh.max_bytes))
        {
            st = sh.room.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.serving = st.serving.wrapping_add(1);
        // The next ticket's holder may fit now too.
        sh.room.notify_all();
        of.lock().pending += 1;
        let h = &mut st.held;
        h.frames += 1;
        h.bytes = h.bytes.saturating_add(job.bytes);
        h.peak_frames = h.peak_frames.max(h.frames);
        h.peak_bytes = h.peak_bytes.max(h.bytes);
        st.queue.push_back((job, of.clone()));
        sh.work.notify_one();
    }

    /// What the verifier holds now and held at most since it started.
    pub fn held(&self) -> Held {
        self.shared.lock().held
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker: runs queued jobs until the verifier closes and its queue is empty.
    fn work(&self) {
        loop {
            let (job, of) = {
                let mut st = self.lock();
                loop {
                    if let Some(j) = st.queue.pop_front() {
                        break j;
                    }
                    if st.closed {
                        return;
                    }
                    st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let bytes = job.bytes;
            // Not under the session's lock: `submit` takes it under the queue's.
            let cancelled = of.lock().cancelled;
            let result = (!cancelled).then(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.check)).unwrap_or_else(
                    |_| Err(Refusal::new(500, "the frame's check failed unexpectedly")),
                )
            });
            // The frame is let go before the session hears it was checked, so a commit
            // that waited sees the verifier without it.
            {
                let mut st = self.lock();
                st.held.frames = st.held.frames.saturating_sub(1);
                st.held.bytes = st.held.bytes.saturating_sub(bytes);
                self.room.notify_all();
            }
            of.finish(result);
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn gated(bytes: u64) -> (Job, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel::<()>();
        let check = Box::new(move || {
            let _ = rx.recv();
            Ok(())
        });
        (Job { bytes, check }, tx)
    }

    fn tickets(v: &Verifier) -> u64 {
        v.shared.lock().next_ticket
    }

    fn wait_for(what: impl Fn() -> bool) {
        for _ in 0..2000 {
            if what() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the condition never held");
    }

    /// A large frame that does not fit waits; a small frame submitted after it must not
    /// pass it (else small frames that keep fitting can starve it until its client's
    /// timeout).
    #[test]
    fn frames_are_admitted_in_the_order_they_came() {
        let v = Arc::new(Verifier::with_bounds(1, 10, 1000).unwrap());
        let of = Verification::new();
        let (held, open_held) = gated(600);
        v.submit(held, &of);
        let (big, open_big) = gated(900);
        let (v2, of2) = (v.clone(), of.clone());
        let a = std::thread::spawn(move || v2.submit(big, &of2));
        wait_for(|| tickets(&v) == 2);
        let (small, open_small) = gated(300);
        let (v3, of3) = (v.clone(), of.clone());
        let b = std::thread::spawn(move || v3.submit(small, &of3));
        wait_for(|| tickets(&v) == 3);
        // 300 more bytes would fit beside the 600 held, but the 900 came first.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            v.held().frames,
            1,
            "the small frame passed the waiting large one"
        );
        open_held.send(()).unwrap();
        a.join().unwrap();
        open_big.send(()).unwrap();
        b.join().unwrap();
        open_small.send(()).unwrap();
        assert_eq!(of.wait(), Ok(()));
        assert_eq!(of.checked(), 3);
        assert!(v.held().peak_bytes <= 1000, "{:?}", v.held());
    }
}
