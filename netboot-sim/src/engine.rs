//! The discrete-event engine: one binary heap of timed events, no threads, deterministic
//! for a seed.
//!
//! **Model.** The image is `frames` frames; a node relays a frame once it has all of it
//! (cut-through, as the agent's relay). A node pulls from one upstream at a time at a
//! rate that is the smallest of: its own receive/verify rate, its NIC's receive rate,
//! its upstream's send rate shared equally among everyone that upstream feeds, the
//! rack uplinks and spine (shared equally by the flows that cross them), the primary's
//! uplink (shared by the primary's flows) and, for the netns bench, one host CPU budget
//! shared by every flow. Shares are recomputed whenever a block transfer is scheduled,
//! i.e. continuously at block granularity. Equal shares rather than max-min: the flows
//! that share a resource in these shapes are limited the same way (siblings of one
//! relay, a rack's uplink), so the two agree; where they would not, equal shares are the
//! slower (conservative) answer.
//!
//! **Aggregation.** Frames are simulated in blocks of `block_frames` frames: node `d`
//! pulling from `u` completes block `j` at
//! `max(ready_d + B_j / r, t_u(j) + latency + F / r)` — no earlier than its previous
//! block plus this one at its rate, and no earlier than one frame after its upstream
//! completed the block (the block's last frame still has to cross this hop). For
//! constant rates this is the frame-level answer exactly: the per-hop lag is one
//! *frame*, whatever the block; only rate changes within a block are seen a block late
//! (`tests::blocks_agree_with_frames`). 100 000 nodes × 64 blocks is 6.4 million block
//! events instead of 4·10^8 frame events.
//!
//! **Failover** (the agent's rules, `imgtool::source`): a node whose upstream dies
//! (silently) notices after `keepalive` (TCP keepalive, 2 s) and leaves it at once (the
//! agent before keepalive: after `stall`, then `failover_attempts` connect timeouts with
//! back-off), then moves to the next candidate — its upstream's upstream, and so on (at
//! most `max_candidates`, then the primary) — and resumes at the frame it reached. An
//! upstream that has not answered is waited for until `grace` after the node's start
//! (every candidate, also after a move); after that each candidate that is not up costs
//! `down_candidate_cost`. A finished node keeps serving (a relay holds until its
//! downstream is served).
//!
//! **"Have you seen U?"** (`seen_query`, the agent's `imgtool::source::SEEN_QUERY_PERIOD`):
//! while a node waits for an upstream U that is not up (not booted, or dead), it asks one
//! candidate above U per period, the first after one failed attempt on U
//! (`down_candidate_cost`): the next one up (U's own upstream) first. A candidate that is
//! up answers `seen` iff U connected to it at some time (U's own reroutes included: the
//! model keeps every upstream each node connected to); `seen` → U is gone, the node moves
//! up at once. A candidate that is not up → the next query asks the one above it (up to
//! the primary, then from the nearest again); `not seen` → the next query asks the
//! nearest again. Within the grace only; the grace still ends the wait.

use crate::net::{Net, Up};
use crate::params::Params;
use crate::rng::Rng;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Events processed at most (a safety net; a run takes about 4 per node and block).
const MAX_EVENTS: u64 = 2_000_000_000;

/// Block completion times kept at most (nodes × blocks, 8 bytes each: 2 GiB): frame-level
/// runs are for small clusters.
pub const MAX_BLOCK_TIMES: u64 = 1 << 28;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Start,
    Request,
    Connect,
    Grace,
    BlockDone(u32),
    Reroute,
    MoveUp,
    /// A "have you seen U?" query of this wait (its generation).
    Ask(u32),
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: f64,
    seq: u64,
    node: u32,
    epoch: u32,
    kind: Kind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Ev) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Ev) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    /// Earliest first in a max-heap (reversed), ties in scheduling order.
    fn cmp(&self, o: &Ev) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Off,
    /// Waiting for its upstream to boot (or for the grace to end).
    WaitUp,
    /// Connected, waiting for the upstream to have the next block.
    Waiting,
    Busy,
    /// Between a broken stream and the next candidate.
    Failing,
    Done,
    Dead,
}

/// What happened to one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOutcome {
    /// When its agent started pulling (boot + setup).
    pub start: f64,
    /// When it had written and verified everything.
    pub done: Option<f64>,
    /// When it died (a planned failure).
    pub died: Option<f64>,
    /// How often it moved up its chain.
    pub reroutes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bad parameters: {0}")]
    Params(String),
    #[error("{0}")]
    Net(#[from] crate::net::NetError),
    #[error("more than {MAX_EVENTS} events")]
    Runaway,
    #[error(
        "{nodes} nodes × {blocks} blocks is more than {MAX_BLOCK_TIMES} block times: fewer blocks"
    )]
    TooManyBlocks { nodes: usize, blocks: u64 },
}

struct Flow {
    src: Up,
    /// Steps taken up the candidate list.
    steps: usize,
    /// When this node's source was created (the grace counts from it).
    created: f64,
    /// Which candidate above the current upstream the next query asks (0: the nearest;
    /// `usize::MAX`: no wait for this upstream has started yet).
    asked: usize,
    /// The current wait's generation: queries of an earlier wait are stale.
    ask_gen: u32,
}

/// Runs the model over `net`; per node, in `net`'s order.
pub fn run(net: &Net, p: &Params) -> Result<Vec<NodeOutcome>, SimError> {
    p.check().map_err(SimError::Params)?;
    net.check()?;
    let blocks = p.nblocks();
    if (net.len() as u64).saturating_mul(blocks) > MAX_BLOCK_TIMES {
        return Err(SimError::TooManyBlocks {
            nodes: net.len(),
            blocks,
        });
    }
    let mut s = Sim::new(net, p);
    s.run()?;
    Ok(s.outcomes())
}

struct Sim<'a> {
    net: &'a Net,
    p: &'a Params,
    nblocks: u32,
    block_bytes: f64,
    heap: BinaryHeap<Ev>,
    seq: u64,
    boot: Vec<f64>,
    start: Vec<f64>,
    state: Vec<State>,
    epoch: Vec<u32>,
    have: Vec<u32>,
    /// Completion time of each block, node-major.
    t_blk: Vec<f64>,
    ready: Vec<f64>,
    partial: Vec<f64>,
    /// (start, rate, bytes) of the block in flight.
    inflight: Vec<(f64, f64, f64)>,
    flow: Vec<Flow>,
    connected: Vec<bool>,
    children: Vec<Vec<u32>>,
    /// Per node, and the primary last.
    feeds: Vec<u32>,
    rack_out: Vec<u32>,
    rack_in: Vec<u32>,
    spine: u32,
    active: u32,
    waiters: Vec<Vec<u32>>,
    gate_waiters: Vec<Vec<u32>>,
    death_block: Vec<Option<u32>>,
    pause_block: Vec<Option<u32>>,
    done: Vec<Option<f64>>,
    died: Vec<Option<f64>>,
    reroutes: Vec<u32>,
    /// Every upstream each node has connected to (what a "seen" query asks about).
    fetched_from: Vec<Vec<Up>>,
}

/// `count` distinct indices below `n`, and for each a block within the middle of the
/// stream (10–90 %).
fn pick(rng: &mut Rng, n: usize, share: f64, nblocks: u32) -> Vec<Option<u32>> {
    let mut out = vec![None; n];
    let count = ((n as f64) * share).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    for k in 0..count.min(n) {
        let j = k + rng.below(n - k);
        idx.swap(k, j);
        let f = 0.1 + 0.8 * rng.unit();
        out[idx[k]] = Some(((f * f64::from(nblocks)) as u32).min(nblocks.saturating_sub(1)));
    }
    out
}

impl<'a> Sim<'a> {
    fn new(net: &'a Net, p: &'a Params) -> Sim<'a> {
        let n = net.len();
        let bf = p.block_frames();
        let block_bytes = bf as f64 * p.frame_bytes;
        // `run` bounded nodes × blocks (≤ 2^28) before this.
        let nblocks = u32::try_from(p.nblocks()).unwrap_or(u32::MAX);
        let mut rng = Rng::new(p.seed);
        let boot: Vec<f64> = (0..n).map(|_| rng.unit() * p.skew).collect();
        let death_block = pick(&mut Rng::new(p.seed ^ 0xDEAD), n, p.fail_share, nblocks);
        let pause_block = pick(&mut Rng::new(p.seed ^ 0x5A05E), n, p.pause_share, nblocks);
        let racks = net.rack.iter().copied().max().map_or(0, |r| r as usize + 1);
        Sim {
            net,
            p,
            nblocks,
            block_bytes,
            heap: BinaryHeap::new(),
            seq: 0,
            start: vec![0.0; n],
            boot,
            state: vec![State::Off; n],
            epoch: vec![0; n],
            have: vec![0; n],
            t_blk: vec![f64::INFINITY; n * nblocks as usize],
            ready: vec![0.0; n],
            partial: vec![0.0; n],
            inflight: vec![(0.0, 0.0, 0.0); n],
            flow: (0..n)
                .map(|i| Flow {
                    src: net.up(i),
                    steps: 0,
                    created: 0.0,
                    asked: usize::MAX,
                    ask_gen: 0,
                })
                .collect(),
            connected: vec![false; n],
            children: vec![vec![]; n],
            feeds: vec![0; n + 1],
            rack_out: vec![0; racks],
            rack_in: vec![0; racks],
            spine: 0,
            active: 0,
            waiters: vec![vec![]; n],
            gate_waiters: vec![vec![]; n],
            death_block,
            pause_block,
            done: vec![None; n],
            died: vec![None; n],
            reroutes: vec![0; n],
            fetched_from: vec![vec![]; n],
        }
    }

    fn push(&mut self, t: f64, node: u32, kind: Kind) {
        self.seq += 1;
        let epoch = self.epoch[node as usize];
        self.heap.push(Ev {
            t,
            seq: self.seq,
            node,
            epoch,
            kind,
        });
    }

    fn run(&mut self) -> Result<(), SimError> {
        for i in 0..self.net.len() {
            let t = self.boot[i] + self.p.setup;
            self.push(t, i as u32, Kind::Start);
        }
        let mut events = 0u64;
        while let Some(ev) = self.heap.pop() {
            events += 1;
            if events > MAX_EVENTS {
                return Err(SimError::Runaway);
            }
            let d = ev.node as usize;
            if ev.epoch != self.epoch[d] || matches!(self.state[d], State::Dead | State::Done) {
                continue;
            }
            match ev.kind {
                Kind::Start => self.on_start(d, ev.t),
                Kind::Request => self.request(d, ev.t),
                Kind::Connect | Kind::Grace if self.state[d] == State::WaitUp => {
                    let expired = ev.kind == Kind::Grace;
                    self.try_connect(d, ev.t, expired)
                }
                Kind::Connect | Kind::Grace => {}
                Kind::BlockDone(j) => self.on_block(d, j, ev.t),
                Kind::Reroute => {
                    self.disconnect(d);
                    self.move_up(d, ev.t);
                }
                Kind::MoveUp => self.move_up(d, ev.t),
                Kind::Ask(gen) if self.state[d] == State::WaitUp => self.ask(d, gen, ev.t),
                Kind::Ask(_) => {}
            }
        }
        Ok(())
    }

    fn on_start(&mut self, d: usize, now: f64) {
        if let Some(g) = self.net.gate[d] {
            let g = g as usize;
            if self.done[g].is_none() && self.died[g].is_none() {
                self.gate_waiters[g].push(d as u32);
                return;
            }
        }
        self.start[d] = now;
        self.flow[d].created = now;
        self.state[d] = State::WaitUp;
        self.try_connect(d, now, false);
    }

    /// Connects to the current candidate if it is up; otherwise waits for it (within the
    /// grace) or moves on.
    fn try_connect(&mut self, d: usize, now: f64, grace_over: bool) {
        let u = match self.flow[d].src {
            Up::Primary => return self.connect(d, now),
            Up::Node(u) => u as usize,
        };
        let booted = self.boot[u] <= now;
        if booted && self.died[u].is_none() {
            return self.connect(d, now);
        }
        let deadline = self.flow[d].created + self.p.grace;
        if !grace_over && now < deadline {
            if self.flow[d].asked == usize::MAX {
                self.start_asking(d, now, deadline);
            }
            self.state[d] = State::WaitUp;
            if !booted && self.boot[u] <= deadline {
                let t = self.boot[u];
                self.push(t, d as u32, Kind::Connect);
            } else {
                self.push(deadline, d as u32, Kind::Grace);
            }
            return;
        }
        self.state[d] = State::Failing;
        let t = now + self.p.down_candidate_cost;
        self.push(t, d as u32, Kind::MoveUp);
    }

    /// A new wait for the current upstream: its queries start after one failed attempt.
    fn start_asking(&mut self, d: usize, now: f64, deadline: f64) {
        let Some(_) = self.p.seen_query else { return };
        let f = &mut self.flow[d];
        f.ask_gen = f.ask_gen.wrapping_add(1);
        f.asked = 0;
        let (gen, t) = (f.ask_gen, now + self.p.down_candidate_cost);
        if t < deadline {
            self.push(t, d as u32, Kind::Ask(gen));
        }
    }

    /// The candidate `k` steps above `src` for a node that took `steps` steps so far (the
    /// same walk as [`Sim::move_up`]'s).
    fn candidate_above(&self, mut src: Up, mut steps: usize, k: usize) -> Up {
        for _ in 0..k {
            steps += 1;
            src = match src {
                Up::Primary => Up::Primary,
                Up::Node(_) if steps >= self.p.max_candidates => Up::Primary,
                Up::Node(u) => self.net.up(u as usize),
            };
        }
        src
    }

    /// One "have you seen U?" query of `d`, waiting for its upstream U.
    fn ask(&mut self, d: usize, gen: u32, now: f64) {
        let (Some(period), Up::Node(u)) = (self.p.seen_query, self.flow[d].src) else {
            return;
        };
        if gen != self.flow[d].ask_gen {
            return;
        }
        let u = u as usize;
        let f = &self.flow[d];
        let c = self.candidate_above(f.src, f.steps, f.asked + 1);
        let up = match c {
            Up::Primary => true,
            Up::Node(c) => self.boot[c as usize] <= now && self.died[c as usize].is_none(),
        };
        if up && self.fetched_from[u].contains(&c) {
            // U fetched from C, so it had booted and listened: it is gone, not late.
            return self.move_up(d, now);
        }
        self.flow[d].asked = if up || c == Up::Primary {
            0
        } else {
            self.flow[d].asked + 1
        };
        let deadline = self.flow[d].created + self.p.grace;
        if now + period < deadline {
            self.push(now + period, d as u32, Kind::Ask(gen));
        }
    }

    fn move_up(&mut self, d: usize, now: f64) {
        self.reroutes[d] += 1;
        // A new upstream: a new wait (and new queries) if it is not up.
        self.flow[d].asked = usize::MAX;
        let f = &mut self.flow[d];
        f.steps += 1;
        f.src = match f.src {
            Up::Primary => Up::Primary,
            Up::Node(_) if f.steps >= self.p.max_candidates => Up::Primary,
            Up::Node(u) => self.net.up(u as usize),
        };
        // The agent's grace covers every upstream that has not answered yet, counted from
        // the node's start: within it, the next candidate is waited for too.
        self.try_connect(d, now, false);
    }

    fn cross(&self, d: usize) -> Option<(Option<usize>, usize)> {
        match self.flow[d].src {
            Up::Primary => Some((None, self.net.rack[d] as usize)),
            Up::Node(u) if self.net.rack[u as usize] != self.net.rack[d] => Some((
                Some(self.net.rack[u as usize] as usize),
                self.net.rack[d] as usize,
            )),
            Up::Node(_) => None,
        }
    }

    fn connect(&mut self, d: usize, now: f64) {
        let n = self.net.len();
        let src = self.flow[d].src;
        if !self.fetched_from[d].contains(&src) {
            self.fetched_from[d].push(src);
        }
        match self.flow[d].src {
            Up::Primary => self.feeds[n] += 1,
            Up::Node(u) => {
                self.feeds[u as usize] += 1;
                self.children[u as usize].push(d as u32);
            }
        }
        if let Some((from, to)) = self.cross(d) {
            if let Some(f) = from {
                self.rack_out[f] += 1;
            }
            self.rack_in[to] += 1;
            self.spine += 1;
        }
        self.active += 1;
        self.connected[d] = true;
        self.state[d] = State::Waiting;
        self.ready[d] = now + self.p.hop_latency;
        // After every connection made at this instant: shares count them all.
        self.push(now, d as u32, Kind::Request);
    }

    fn disconnect(&mut self, d: usize) {
        if !std::mem::take(&mut self.connected[d]) {
            return;
        }
        let n = self.net.len();
        match self.flow[d].src {
            Up::Primary => self.feeds[n] -= 1,
            Up::Node(u) => {
                let u = u as usize;
                self.feeds[u] -= 1;
                self.children[u].retain(|&c| c as usize != d);
                self.waiters[u].retain(|&c| c as usize != d);
            }
        }
        if let Some((from, to)) = self.cross(d) {
            if let Some(f) = from {
                self.rack_out[f] -= 1;
            }
            self.rack_in[to] -= 1;
            self.spine -= 1;
        }
        self.active -= 1;
    }

    fn rate(&self, d: usize) -> f64 {
        let p = self.p;
        let share = |cap: f64, k: u32| cap / f64::from(k.max(1));
        let mut r = p.node_rate.min(p.node_down.unwrap_or(f64::INFINITY));
        r = r.min(match self.flow[d].src {
            Up::Primary => share(p.primary_uplink, self.feeds[self.net.len()]),
            Up::Node(u) => share(p.node_up, self.feeds[u as usize]),
        });
        if let Some((from, to)) = self.cross(d) {
            if let Some(up) = p.rack_uplink {
                if let Some(f) = from {
                    r = r.min(share(up, self.rack_out[f]));
                }
                r = r.min(share(up, self.rack_in[to]));
            }
            if let Some(s) = p.spine {
                r = r.min(share(s, self.spine));
            }
        }
        if let Some(h) = p.host_rate {
            r = r.min(share(h, self.active));
        }
        r
    }

    fn block_size(&self, j: u32) -> f64 {
        (self.p.image_bytes - f64::from(j) * self.block_bytes).min(self.block_bytes)
    }

    /// Asks the current upstream for the next block.
    fn request(&mut self, d: usize, now: f64) {
        let j = self.have[d];
        if j >= self.nblocks {
            return self.finish(d, now);
        }
        if self.pause_block[d] == Some(j) {
            self.pause_block[d] = None;
            self.ready[d] = self.ready[d].max(now) + self.p.pause;
        }
        match self.flow[d].src {
            Up::Primary => self.schedule(d, 0.0),
            Up::Node(u) => {
                let u = u as usize;
                if self.have[u] > j {
                    let t = self.t_blk[u * self.nblocks as usize + j as usize];
                    self.schedule(d, t);
                } else if let Some(died) = self.died[u] {
                    self.state[d] = State::Failing;
                    let t = now.max(died) + self.p.detect();
                    self.push(t, d as u32, Kind::Reroute);
                } else {
                    self.state[d] = State::Waiting;
                    self.waiters[u].push(d as u32);
                }
            }
        }
    }

    /// Schedules the next block, its upstream having completed it at `tu`.
    fn schedule(&mut self, d: usize, tu: f64) {
        let r = self.rate(d);
        let bytes = (self.block_size(self.have[d]) - self.partial[d]).max(0.0);
        let first = bytes.min(self.p.frame_bytes);
        let finish = (self.ready[d] + bytes / r).max(tu + self.p.hop_latency + first / r);
        self.inflight[d] = (finish - bytes / r, r, bytes);
        self.state[d] = State::Busy;
        let j = self.have[d];
        self.push(finish, d as u32, Kind::BlockDone(j));
    }

    fn on_block(&mut self, d: usize, j: u32, now: f64) {
        self.partial[d] = 0.0;
        if self.death_block[d] == Some(j) {
            return self.die(d, now);
        }
        self.have[d] = j + 1;
        self.t_blk[d * self.nblocks as usize + j as usize] = now;
        self.ready[d] = now;
        for c in std::mem::take(&mut self.waiters[d]) {
            let c = c as usize;
            if self.state[c] != State::Waiting || self.flow[c].src != Up::Node(d as u32) {
                continue;
            }
            if self.have[c] > j {
                // Ahead of this upstream (it moved here from a faster one): still waiting.
                self.waiters[d].push(c as u32);
                continue;
            }
            let t = self.t_blk[d * self.nblocks as usize + self.have[c] as usize];
            self.schedule(c, t);
        }
        self.request(d, now);
    }

    fn finish(&mut self, d: usize, now: f64) {
        self.disconnect(d);
        self.state[d] = State::Done;
        let t = now + self.p.tail;
        self.done[d] = Some(t);
        self.release_gate(d, t);
    }

    fn release_gate(&mut self, d: usize, t: f64) {
        for w in std::mem::take(&mut self.gate_waiters[d]) {
            self.push(t, w, Kind::Start);
        }
    }

    /// `d` dies: its own stream ends, and everyone pulling from it loses the block in
    /// flight past the last whole frame, notices after the stall and moves on.
    fn die(&mut self, d: usize, now: f64) {
        self.disconnect(d);
        self.state[d] = State::Dead;
        self.died[d] = Some(now);
        self.epoch[d] += 1;
        self.waiters[d].clear();
        for c in std::mem::take(&mut self.children[d]) {
            let c = c as usize;
            if self.state[c] == State::Busy {
                let (s, r, bytes) = self.inflight[c];
                let got = ((now - s) * r).clamp(0.0, bytes);
                let frames = (got / self.p.frame_bytes).floor() * self.p.frame_bytes;
                if frames >= bytes {
                    // That block is through; the next request finds the upstream dead.
                    continue;
                }
                self.partial[c] += frames;
            }
            // Cancels its block in flight or its pending request.
            self.epoch[c] += 1;
            // Still listed as fed by `d` until the reroute disconnects it.
            self.children[d].push(c as u32);
            self.state[c] = State::Failing;
            let t = now + self.p.detect();
            self.push(t, c as u32, Kind::Reroute);
        }
        self.release_gate(d, now);
    }

    fn outcomes(&self) -> Vec<NodeOutcome> {
        (0..self.net.len())
            .map(|i| NodeOutcome {
                start: self.start[i],
                done: self.done[i],
                died: self.died[i],
                reroutes: self.reroutes[i],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{generate, Shape};

    const MIB: f64 = (1u64 << 20) as f64;

    /// 64 MiB over 100 MB/s links, 1 MiB frames, 1 ms per hop, nothing else limiting.
    fn plain() -> Params {
        Params {
            image_bytes: 64.0 * MIB,
            frame_bytes: MIB,
            node_up: 100e6,
            node_down: None,
            rack_uplink: None,
            primary_uplink: 100e6,
            node_rate: 1e12,
            hop_latency: 1e-3,
            ..Params::default()
        }
    }

    fn done(out: &[NodeOutcome]) -> Vec<f64> {
        out.iter().map(|o| o.done.unwrap()).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-9)
    }

    #[test]
    fn one_node_is_size_over_rate_plus_latency() {
        let p = plain();
        let out = run(&generate(1, 1, Shape::Naive), &p).unwrap();
        let want = p.image_bytes / 100e6 + 1e-3;
        assert!(close(out[0].done.unwrap(), want, 1e-9), "{out:?} vs {want}");
        // The node's own rate limits it when lower.
        let p = Params {
            node_rate: 50e6,
            ..plain()
        };
        let out = run(&generate(1, 1, Shape::Naive), &p).unwrap();
        assert!(close(
            out[0].done.unwrap(),
            p.image_bytes / 50e6 + 1e-3,
            1e-9
        ));
    }

    #[test]
    fn a_chain_of_k_adds_one_frame_and_one_latency_per_hop() {
        for blocks in [64, 8, 1] {
            let p = Params { blocks, ..plain() };
            let single = p.image_bytes / 100e6 + 1e-3;
            let hop = MIB / 100e6 + 1e-3;
            let out = run(&generate(10, 10, Shape::Serial), &p).unwrap();
            for (k, t) in done(&out).into_iter().enumerate() {
                let want = single + k as f64 * hop;
                assert!(
                    close(t, want, 1e-9),
                    "blocks {blocks}, node {k}: {t} vs {want}"
                );
            }
        }
    }

    #[test]
    fn flows_share_a_link_fairly() {
        // Four nodes from a primary with the uplink of one: each gets a quarter.
        let p = plain();
        let out = run(&generate(4, 4, Shape::Naive), &p).unwrap();
        for t in done(&out) {
            assert!(close(t, 4.0 * p.image_bytes / 100e6 + 1e-3, 1e-9), "{t}");
        }
        // A relay feeding three (fanout, one rack): the secondary at full rate, its three
        // nodes at a third of its uplink, limited by nothing else.
        let out = run(&generate(4, 4, Shape::Fanout), &p).unwrap();
        let t = done(&out);
        assert!(close(t[0], p.image_bytes / 100e6 + 1e-3, 1e-9), "{t:?}");
        for x in &t[1..] {
            assert!(close(*x, 3.0 * p.image_bytes / 100e6 + 2e-3, 0.01), "{t:?}");
        }
        // A shared CPU budget (the netns bench) limits everyone the same way.
        let p = Params {
            host_rate: Some(200e6),
            primary_uplink: 1e12,
            ..plain()
        };
        let out = run(&generate(8, 8, Shape::Naive), &p).unwrap();
        let want = 8.0 * p.image_bytes / 200e6;
        assert!(done(&out).iter().all(|t| close(*t, want, 0.01)), "{out:?}");
    }

    #[test]
    fn a_dead_node_reroutes_its_downstream_and_every_survivor_finishes() {
        let p = Params {
            fail_share: 0.1,
            ..plain()
        };
        let net = generate(20, 10, Shape::Serial);
        let out = run(&net, &p).unwrap();
        let clean = run(
            &net,
            &Params {
                fail_share: 0.0,
                ..p.clone()
            },
        )
        .unwrap();
        let dead: Vec<usize> = (0..20).filter(|i| out[*i].died.is_some()).collect();
        assert_eq!(dead.len(), 2, "{out:?}");
        for (i, o) in out.iter().enumerate() {
            if o.died.is_none() {
                assert!(o.done.is_some(), "node {i} did not finish: {out:?}");
            }
        }
        for d in dead {
            let below = d + 1;
            if below < 20 && out[below].died.is_none() {
                assert!(out[below].reroutes >= 1, "node {below}: {out:?}");
                // It waited at least the stall and the reconnects before moving on.
                let late = out[below].done.unwrap() - clean[below].done.unwrap();
                assert!(late >= p.detect() - 1.0, "{late}");
            }
            // Nodes above a dead node are not delayed by it.
            if d > 0 && dead_above(&out, d - 1) {
                continue;
            }
        }
        // With a reset-like failure (no stall) the delay shrinks to the reconnects.
        let fast = Params {
            keepalive: Some(0.0),
            ..p
        };
        let out2 = run(&net, &fast).unwrap();
        let t1 = out.iter().filter_map(|o| o.done).fold(0.0, f64::max);
        let t2 = out2.iter().filter_map(|o| o.done).fold(0.0, f64::max);
        assert!(t2 < t1, "{t2} vs {t1}");
    }

    fn dead_above(out: &[NodeOutcome], i: usize) -> bool {
        out[..=i].iter().any(|o| o.died.is_some())
    }

    #[test]
    fn an_upstream_that_boots_late_is_skipped_after_the_grace() {
        // Boots spread over 100 s: in a chain, a node whose upstream starts more than
        // the grace after it moves up; every node still finishes.
        let p = Params {
            skew: 100.0,
            ..plain()
        };
        let out = run(&generate(30, 30, Shape::Serial), &p).unwrap();
        assert!(out.iter().all(|o| o.done.is_some()), "{out:?}");
        assert!(out.iter().any(|o| o.reroutes > 0), "{out:?}");
        // Nobody finishes before its own start plus one node's time.
        let single = p.image_bytes / 100e6;
        assert!(out.iter().all(|o| o.done.unwrap() >= o.start + single));
    }

    #[test]
    fn a_node_that_moves_to_a_slower_upstream_waits_for_it() {
        // Skew and fast failover: nodes move to upstreams that booted later and are
        // behind them; they used to be woken for a block their upstream did not have
        // and finished at infinity.
        let p = Params {
            skew: 30.0,
            fail_share: 0.05,
            stall: 1.0,
            connect_timeout: 0.2,
            down_candidate_cost: 0.2,
            ..plain()
        };
        for seed in 1..20 {
            let p = Params { seed, ..p.clone() };
            let out = run(
                &generate(
                    200,
                    50,
                    Shape::Tree {
                        roots: 2,
                        fanout: 1,
                    },
                ),
                &p,
            )
            .unwrap();
            for o in &out {
                assert!(
                    o.died.is_some() || o.done.is_some_and(f64::is_finite),
                    "{o:?}"
                );
            }
        }
    }

    #[test]
    fn asking_whether_an_upstream_was_seen_never_moves_a_node_off_a_late_one() {
        // Skew, no failures: every upstream a node waits for is only late (never seen by
        // anyone), so the queries change nothing at all.
        let p = Params {
            skew: 30.0,
            ..plain()
        };
        let net = generate(
            200,
            50,
            Shape::Tree {
                roots: 2,
                fanout: 2,
            },
        );
        let (with, without) = with_and_without_seen_query(&net, p);
        assert_eq!(with, without);
    }

    /// The outcomes of `p` as given, and of `p` with no "have you seen U?" queries.
    fn with_and_without_seen_query(net: &Net, p: Params) -> (Vec<NodeOutcome>, Vec<NodeOutcome>) {
        let with = run(net, &p).unwrap();
        let without = run(
            net,
            &Params {
                seen_query: None,
                ..p
            },
        )
        .unwrap();
        (with, without)
    }

    #[test]
    fn a_node_whose_upstream_died_before_it_booted_leaves_it_without_the_grace() {
        // A chain, boots spread over 60 s, 10 % dying: without the query, some node
        // waits out the grace on an upstream that died before it booted; with it, none
        // does, and nobody is later than without.
        let base = Params {
            skew: 60.0,
            fail_share: 0.1,
            grace: 65.0,
            ..plain()
        };
        let net = generate(60, 60, Shape::Serial);
        let mut faster = 0;
        for seed in 1..8 {
            let p = Params {
                seed,
                ..base.clone()
            };
            let (with, without) = with_and_without_seen_query(&net, p);
            let last = |o: &[NodeOutcome]| o.iter().filter_map(|x| x.done).fold(0.0, f64::max);
            for (a, b) in with.iter().zip(&without) {
                assert_eq!(a.died.is_some(), b.died.is_some());
                assert!(a.died.is_some() || a.done.is_some(), "{a:?}");
            }
            assert!(last(&with) <= last(&without) + 1e-9, "seed {seed}");
            if last(&with) + 10.0 < last(&without) {
                faster += 1;
            }
        }
        assert!(faster > 0, "no seed had a node waiting on a dead upstream");
    }

    #[test]
    fn frame_level_runs_of_huge_clusters_are_refused_not_allocated() {
        let p = Params {
            blocks: u32::MAX,
            ..Params::default()
        };
        let e = run(&generate(100_000, 250, Shape::Serial), &p).unwrap_err();
        assert!(e.to_string().contains("fewer blocks"), "{e}");
    }

    #[test]
    fn cmu_phases_run_one_after_another() {
        // Two racks of two: secondary 0 (T), secondary 2 after it (T), then the two
        // others at the same time from their secondaries (T each, separate relays).
        let p = Params {
            hop_latency: 0.0,
            ..plain()
        };
        let t = p.image_bytes / 100e6;
        let out = run(&generate(4, 2, Shape::Cmu), &p).unwrap();
        let d = done(&out);
        assert!(close(d[0], t, 1e-9) && close(d[2], 2.0 * t, 1e-9), "{d:?}");
        assert!(
            close(d[1], 3.0 * t, 1e-9) && close(d[3], 3.0 * t, 1e-9),
            "{d:?}"
        );
    }

    #[test]
    fn blocks_agree_with_frames() {
        // Frame-level (one frame per block) against 16 frames per block, in shapes where
        // rates change as flows start and end, with skew and a failure.
        for shape in [
            Shape::Fanout,
            Shape::Chain,
            Shape::Tree {
                roots: 2,
                fanout: 2,
            },
        ] {
            let base = Params {
                skew: 2.0,
                fail_share: 0.05,
                primary_uplink: 200e6,
                rack_uplink: Some(150e6),
                ..plain()
            };
            let net = generate(40, 8, shape);
            let frames = run(
                &net,
                &Params {
                    blocks: 64,
                    ..base.clone()
                },
            )
            .unwrap();
            let blocks = run(&net, &Params { blocks: 4, ..base }).unwrap();
            let total = |o: &[NodeOutcome]| o.iter().filter_map(|x| x.done).fold(0.0, f64::max);
            let (a, b) = (total(&frames), total(&blocks));
            assert!(close(b, a, 0.05), "{shape}: frames {a} s, blocks {b} s");
        }
    }
}
