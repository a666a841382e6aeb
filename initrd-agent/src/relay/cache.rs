//! The relay's frame cache: which chunks this node has verified (and so may serve), and
//! the frames of those it still holds in memory, up to a byte budget. An evicted frame,
//! or a chunk a delta restore skipped because the disk already held it, is still *had*:
//! the relay re-reads it from the local disk ([`Lookup::OnDisk`]). No
//! locking, no I/O: the relay holds it under its lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// A chunk: (region index in the manifest, chunk index in the region).
pub type Key = (usize, usize);

/// Frames smaller than this are never evicted: the small regions (a swap header, the disk
/// head) may be transformed on the disk after they are written, so re-reading them there
/// would not give the frame back.
pub const KEEP_BELOW: usize = 64 << 10;

/// Where the frame of a chunk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// In memory.
    Cached(Arc<Vec<u8>>),
    /// Verified and written, evicted since: re-read it from the disk.
    OnDisk,
    /// Not verified here yet.
    Missing,
}

pub struct FrameCache {
    have: HashSet<Key>,
    frames: HashMap<Key, Arc<Vec<u8>>>,
    /// Cached frames, oldest first (the eviction order).
    order: VecDeque<Key>,
    bytes: usize,
    budget: usize,
}

impl FrameCache {
    /// A cache holding frames of at most `budget` bytes in all (small frames aside). A
    /// budget of 0 keeps no frame at all, small ones included: a relay with no planned
    /// downstream node (an entity's secondary alone in its rack, listening for its boot
    /// files) takes no memory for frames; one asked for is made again from the disk.
    pub fn new(budget: usize) -> FrameCache {
        FrameCache {
            have: HashSet::new(),
            frames: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Chunk `k` was verified with this frame: it is had from now on, and cached (the
    /// oldest large frames are evicted to stay within the budget).
    pub fn insert(&mut self, k: Key, frame: Vec<u8>) {
        self.have.insert(k);
        if self.budget == 0 {
            return;
        }
        self.bytes += frame.len();
        match self.frames.insert(k, Arc::new(frame)) {
            // The same chunk again (a retried write): replaced, counted once.
            Some(old) => self.bytes -= old.len(),
            None => self.order.push_back(k),
        }
        self.evict();
    }

    /// Drops the oldest large frames while over budget. Each turn drops a frame or moves
    /// a small one to the back; once only small ones are left, it stops.
    fn evict(&mut self) {
        let mut kept = 0;
        while self.bytes > self.budget && kept < self.order.len() {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            match self.frames.get(&k).map(|f| f.len()) {
                Some(n) if n < KEEP_BELOW => {
                    self.order.push_back(k);
                    kept += 1;
                }
                Some(n) => {
                    self.frames.remove(&k);
                    self.bytes -= n;
                }
                None => {}
            }
        }
    }

    /// Chunk `k` is correct on the local disk without a frame here (a delta restore
    /// found its sha256 already matching and skipped it): had, and re-read from the disk
    /// when asked for ([`Lookup::OnDisk`]).
    pub fn mark_on_disk(&mut self, k: Key) {
        self.have.insert(k);
    }

    pub fn has(&self, k: Key) -> bool {
        self.have.contains(&k)
    }

    pub fn lookup(&self, k: Key) -> Lookup {
        match self.frames.get(&k) {
            Some(f) => Lookup::Cached(f.clone()),
            None if self.have.contains(&k) => Lookup::OnDisk,
            None => Lookup::Missing,
        }
    }

    /// Bytes of the frames in memory.
    #[cfg(test)]
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_large_frames_go_first_small_ones_stay() {
        let big = 100 << 10;
        let mut c = FrameCache::new(2 * big + 10);
        c.insert((0, 0), vec![1; 10]); // small: a disk head
        c.insert((1, 0), vec![2; big]);
        c.insert((1, 1), vec![3; big]);
        assert!(matches!(c.lookup((1, 0)), Lookup::Cached(_)));
        c.insert((1, 2), vec![4; big]);
        // Over budget: the oldest large one is evicted, but still had (on disk).
        assert_eq!(c.lookup((1, 0)), Lookup::OnDisk);
        assert!(c.has((1, 0)));
        assert_eq!(c.lookup((0, 0)), Lookup::Cached(Arc::new(vec![1; 10])));
        assert!(matches!(c.lookup((1, 2)), Lookup::Cached(_)));
        assert_eq!(c.lookup((1, 3)), Lookup::Missing);
        assert_eq!(c.cached_bytes(), 2 * big + 10);
    }

    #[test]
    fn only_small_frames_over_budget_are_all_kept() {
        let mut c = FrameCache::new(10);
        for i in 0..5 {
            c.insert((0, i), vec![0; 100]);
        }
        for i in 0..5 {
            assert!(matches!(c.lookup((0, i)), Lookup::Cached(_)));
        }
        assert_eq!(c.cached_bytes(), 500);
    }

    #[test]
    fn a_skipped_chunk_is_had_on_disk_until_a_frame_is_cached() {
        let mut c = FrameCache::new(1 << 20);
        assert_eq!(c.lookup((0, 3)), Lookup::Missing);
        c.mark_on_disk((0, 3));
        assert!(c.has((0, 3)));
        assert_eq!(c.lookup((0, 3)), Lookup::OnDisk);
        // Its frame, once made from the disk (or fetched), is cached like any other.
        c.insert((0, 3), vec![7; 10]);
        assert_eq!(c.lookup((0, 3)), Lookup::Cached(Arc::new(vec![7; 10])));
        assert_eq!(c.cached_bytes(), 10);
    }

    #[test]
    fn a_zero_budget_keeps_no_frame_not_even_small_ones() {
        let mut c = FrameCache::new(0);
        c.insert((0, 0), vec![1; 10]);
        c.insert((1, 0), vec![2; 100 << 10]);
        // Had (served from the disk when asked), never in memory.
        assert_eq!(c.lookup((0, 0)), Lookup::OnDisk);
        assert_eq!(c.lookup((1, 0)), Lookup::OnDisk);
        assert_eq!(c.cached_bytes(), 0);
    }

    #[test]
    fn a_chunk_verified_twice_is_counted_once() {
        let mut c = FrameCache::new(1 << 20);
        c.insert((0, 0), vec![0; 100]);
        c.insert((0, 0), vec![0; 100]);
        assert_eq!(c.cached_bytes(), 100);
    }
}
