//! Who downstream has what, and when the relay may stop holding for them. A relay holds
//! before it grows its file systems, and again before it exits, while downstream nodes may
//! still need chunks from it. It is released
//! - at the moment the planned number of downstream nodes have each been served every
//!   chunk and no request is in flight ([`Released::AllServed`]), or
//! - for downstream nodes that never came or moved elsewhere: when no request is in
//!   flight and none has started or ended for the idle time ([`Released::Idle`]). (Send
//!   buffers hide the tail of a slow transfer from the server, so in-flight counting alone
//!   is not enough.)
//!
//! A downstream node whose own disk already held most of the image (a delta re-clone)
//! fetches only what it lacks, so it is never "served every chunk": it says it has the
//! whole image (`GET /<image>/.done`, [`Downstream::finished`]) once it has verified
//! every chunk, and counts as complete from then on.
//!
//! Downstream nodes are told apart by address; what one of them reads twice counts once.
//! No clock of its own and no I/O: the relay passes `now` in and holds it under its lock.

use super::cache::Key;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Why the relay stopped holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Every planned downstream node has every chunk.
    AllServed,
    /// Nobody asked for anything for the idle time (the fallback); for a relay that only
    /// serves boot files, nobody asked for one.
    Idle,
    /// A relay that only serves boot files has none to serve (never fetched, or failed).
    NoBootFiles,
    /// A relay that only serves boot files was asked for them all along, up to its bound.
    Bounded,
}

/// What the relay does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Release(Released),
    /// Keep holding; nothing changes the answer before this long unless a request starts,
    /// ends or is served (the relay is woken for those).
    Wait(Duration),
}

pub struct Downstream {
    /// Distinct chunks served to each downstream address.
    served: HashMap<IpAddr, HashSet<Key>>,
    /// Addresses that said they hold every chunk (whatever they fetched here).
    finished: HashSet<IpAddr>,
    /// Requests being answered right now (a slow transfer is not idleness).
    in_flight: usize,
    /// When a request last started or ended.
    last_activity: Instant,
    served_bytes: u64,
}

impl Downstream {
    pub fn new(now: Instant) -> Downstream {
        Downstream {
            served: HashMap::new(),
            finished: HashSet::new(),
            in_flight: 0,
            last_activity: now,
            served_bytes: 0,
        }
    }

    /// A request came in.
    pub fn request_started(&mut self, now: Instant) {
        self.in_flight += 1;
        self.last_activity = now;
    }

    /// Its answer was written (or given up).
    pub fn request_ended(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_activity = now;
    }

    /// Chunk `k` (`bytes` of frame) went to `client`.
    pub fn served(&mut self, client: IpAddr, k: Key, bytes: usize) {
        self.served_bytes += bytes as u64;
        self.served.entry(client).or_default().insert(k);
    }

    pub fn served_bytes(&self) -> u64 {
        self.served_bytes
    }

    /// `client` holds every chunk of the image now (it said so: a delta re-clone that
    /// needed few or none of them from here).
    pub fn finished(&mut self, client: IpAddr) {
        self.finished.insert(client);
    }

    /// Downstream nodes that have all `chunks` chunks of the image: served every one of
    /// them here, or said they hold them ([`Downstream::finished`]); each address once.
    pub fn complete(&self, chunks: usize) -> usize {
        if chunks == 0 {
            return 0;
        }
        let served = self
            .served
            .iter()
            .filter(|(a, c)| c.len() >= chunks && !self.finished.contains(a))
            .count();
        served + self.finished.len()
    }

    /// Whether a relay planned for `expected` downstream nodes, of an image of `chunks`
    /// chunks (0: not known yet), with the fallback `idle`, may stop holding at `now`.
    pub fn hold(&self, expected: usize, chunks: usize, idle: Duration, now: Instant) -> Hold {
        if self.in_flight > 0 {
            return Hold::Wait(idle);
        }
        if expected > 0 && self.complete(chunks) >= expected {
            return Hold::Release(Released::AllServed);
        }
        let quiet = now.saturating_duration_since(self.last_activity);
        match idle.checked_sub(quiet) {
            Some(left) if !left.is_zero() => Hold::Wait(left),
            _ => Hold::Release(Released::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IDLE: Duration = Duration::from_secs(15);
    const CHUNKS: usize = 3;

    fn node(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    /// `client` fetches chunks `from..to` of region 0 in one request at `now`.
    fn fetch(d: &mut Downstream, client: IpAddr, chunks: std::ops::Range<usize>, now: Instant) {
        d.request_started(now);
        for i in chunks {
            d.served(client, (0, i), 100);
        }
        d.request_ended(now);
    }

    #[test]
    fn held_exactly_until_each_planned_node_has_every_chunk() {
        let t0 = Instant::now();
        let mut d = Downstream::new(t0);
        let planned = 3;
        for n in 1..=planned as u8 {
            // Before this node's last chunk: held, and the idle fallback is the full
            // time away (activity just happened).
            fetch(&mut d, node(n), 0..CHUNKS - 1, t0);
            assert_eq!(d.hold(planned, CHUNKS, IDLE, t0), Hold::Wait(IDLE));
            d.request_started(t0);
            d.served(node(n), (0, CHUNKS - 1), 100);
            // Served but still being written: held.
            assert_eq!(d.hold(planned, CHUNKS, IDLE, t0), Hold::Wait(IDLE));
            d.request_ended(t0);
            let want = if n as usize == planned {
                // The last one: released at that moment, not after the idle time.
                Hold::Release(Released::AllServed)
            } else {
                Hold::Wait(IDLE)
            };
            assert_eq!(d.hold(planned, CHUNKS, IDLE, t0), want, "after node {n}");
        }
        assert_eq!(d.complete(CHUNKS), planned);
        assert_eq!(d.served_bytes(), (planned * CHUNKS * 100) as u64);
    }

    #[test]
    fn fewer_nodes_than_planned_wait_for_the_idle_fallback() {
        let t0 = Instant::now();
        let mut d = Downstream::new(t0);
        fetch(&mut d, node(1), 0..CHUNKS, t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            d.hold(2, CHUNKS, IDLE, later),
            Hold::Wait(IDLE - Duration::from_secs(10))
        );
        assert_eq!(
            d.hold(2, CHUNKS, IDLE, t0 + IDLE),
            Hold::Release(Released::Idle)
        );
        // A request in flight is not idleness, however long it takes.
        d.request_started(t0);
        assert_eq!(d.hold(2, CHUNKS, IDLE, t0 + 10 * IDLE), Hold::Wait(IDLE));
    }

    #[test]
    fn a_node_that_reads_again_counts_once() {
        let t0 = Instant::now();
        let mut d = Downstream::new(t0);
        // Node 1 reads everything twice (a reopened stream, a re-clone), node 2 half.
        fetch(&mut d, node(1), 0..CHUNKS, t0);
        fetch(&mut d, node(1), 0..CHUNKS, t0);
        fetch(&mut d, node(2), 0..1, t0);
        assert_eq!(d.complete(CHUNKS), 1);
        assert_eq!(d.hold(2, CHUNKS, IDLE, t0), Hold::Wait(IDLE));
        fetch(&mut d, node(2), 1..CHUNKS, t0);
        assert_eq!(
            d.hold(2, CHUNKS, IDLE, t0),
            Hold::Release(Released::AllServed)
        );
    }

    #[test]
    fn an_up_to_date_node_that_says_it_is_done_counts_as_complete() {
        let t0 = Instant::now();
        let mut d = Downstream::new(t0);
        // Node 1 is fresh: it reads everything. Node 2's disk held all but one chunk.
        fetch(&mut d, node(1), 0..CHUNKS, t0);
        fetch(&mut d, node(2), 0..1, t0);
        assert_eq!(d.hold(2, CHUNKS, IDLE, t0), Hold::Wait(IDLE));
        d.finished(node(2));
        assert_eq!(d.complete(CHUNKS), 2);
        assert_eq!(
            d.hold(2, CHUNKS, IDLE, t0),
            Hold::Release(Released::AllServed)
        );
        // Saying it twice, or a fresh node saying it too, counts each node once.
        d.finished(node(2));
        d.finished(node(1));
        assert_eq!(d.complete(CHUNKS), 2);
    }

    #[test]
    fn without_a_plan_or_an_image_only_idleness_releases() {
        let t0 = Instant::now();
        let mut d = Downstream::new(t0);
        fetch(&mut d, node(1), 0..CHUNKS, t0);
        // No downstream planned: never "all served".
        assert_eq!(d.hold(0, CHUNKS, IDLE, t0), Hold::Wait(IDLE));
        // The image not parsed yet (0 chunks): nobody is complete.
        assert_eq!(d.complete(0), 0);
        assert_eq!(d.hold(1, 0, IDLE, t0), Hold::Wait(IDLE));
        assert_eq!(d.hold(1, 0, IDLE, t0 + IDLE), Hold::Release(Released::Idle));
    }
}
