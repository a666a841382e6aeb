//! The model's parameters: link rates, image and frame size, node rates, timing of the
//! agent's failover, boot skew and failures. Rates are in bytes per second, times in
//! seconds. Read from JSON (every field optional: [`Params::default`] is the issue's
//! data-centre cluster) and overridden by the command line.

use serde::{Deserialize, Serialize};

/// Bits per second to bytes per second.
pub fn gbit(g: f64) -> f64 {
    g * 1e9 / 8.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Payload bytes a node receives (the image's compressed payload).
    pub image_bytes: f64,
    /// Frame (chunk) size: a relay passes a frame on once it has all of it.
    pub frame_bytes: f64,
    /// Frames are simulated in blocks of about `image_bytes / blocks` (1 frame per block
    /// when `blocks` is at least the number of frames): see `engine`'s doc for why the
    /// answer keeps.
    pub blocks: u32,
    /// A node's NIC, sending (shared by the node's downstream flows).
    pub node_up: f64,
    /// A node's NIC, receiving (`None`: unlimited, as with tc on egress only).
    pub node_down: Option<f64>,
    /// A rack's uplink into the spine, each direction (`None`: unlimited).
    pub rack_uplink: Option<f64>,
    /// The spine's total cross-rack capacity (`None`: non-blocking).
    pub spine: Option<f64>,
    /// The primary's uplink (its sending rate).
    pub primary_uplink: f64,
    /// What one node can receive, decompress and verify per second (its own cap).
    pub node_rate: f64,
    /// All nodes share one CPU budget of this many payload bytes per second (the netns
    /// bench: every agent on the same two cores); `None` on real hardware.
    pub host_rate: Option<f64>,
    /// Latency of a request or a frame's first byte per hop.
    pub hop_latency: f64,
    /// From an agent's boot to its first request (DHCP, plan, manifest, partitioning).
    pub setup: f64,
    /// After the last frame until the node is done (last writes and read-backs).
    pub tail: f64,
    /// Agents start uniformly within this window.
    pub skew: f64,
    /// Share of nodes that die mid-stream (silently: no reset reaches the downstream).
    pub fail_share: f64,
    /// Share of nodes that pause mid-stream for `pause` seconds (a slow disk, a busy core).
    pub pause_share: f64,
    pub pause: f64,
    /// The agent's `--stall`: no data for this long and the stream counts as broken.
    pub stall: f64,
    /// How long TCP keepalive takes to find a silent upstream dead
    /// (`imgtool::source::client::KEEPALIVE`, 2 s); the agent then leaves it at once.
    /// `null`: the agent before keepalive (a death is noticed by the stall, then
    /// `failover_attempts` connects time out).
    pub keepalive: Option<f64>,
    /// Connection attempt timeout (`imgtool::source::CONNECT_TIMEOUT`, 1 s; was 3 s).
    pub connect_timeout: f64,
    /// Attempts on an upstream that answered before, before moving on
    /// (`imgtool::source::FAILOVER_ATTEMPTS`, 2).
    pub failover_attempts: u32,
    /// How long a node waits for an upstream that never answered:
    /// `imgtool::source::boot_grace` of the boot window (the plan's `boot_window_s`,
    /// 30 s by default, + 5 s). Was 10 s.
    pub grace: f64,
    /// Cost of trying a candidate that is not up (dead, or not booted after the grace):
    /// a connect timeout on real hardware; 0 where a reset comes back (netns).
    pub down_candidate_cost: f64,
    /// How often a node waiting for an upstream that never answered it asks its next
    /// candidate whether that upstream fetched from it (`imgtool::source::SEEN_QUERY_PERIOD`,
    /// 1 s): `seen` means the upstream had started and is gone, and the node moves up at
    /// once. `null`: the agent before (it waits out the grace).
    pub seen_query: Option<f64>,
    /// Upstream candidates a node walks before the primary (the node plan's bound,
    /// `netboot_proto::plan::MAX_CANDIDATES`).
    pub max_candidates: usize,
    pub seed: u64,
}

impl Default for Params {
    /// The issue's cluster: 4 GiB, 1 MiB frames, 10 Gbit/s node links, 100 Gbit/s rack
    /// uplinks and primary uplink, a non-blocking spine, nodes that decompress and verify
    /// faster than the link (the measured 1.4 GB/s on two cores of this VM, BENCH.md),
    /// the agent's real failover timings.
    fn default() -> Params {
        Params {
            image_bytes: 4.0 * (1u64 << 30) as f64,
            frame_bytes: (1u64 << 20) as f64,
            blocks: 64,
            node_up: gbit(10.0),
            node_down: Some(gbit(10.0)),
            rack_uplink: Some(gbit(100.0)),
            spine: None,
            primary_uplink: gbit(100.0),
            node_rate: 1.4e9,
            host_rate: None,
            hop_latency: 50e-6,
            setup: 0.0,
            tail: 0.0,
            skew: 0.0,
            fail_share: 0.0,
            pause_share: 0.0,
            pause: 0.0,
            stall: 20.0,
            keepalive: Some(secs(imgtool::source::client::KEEPALIVE.detection())),
            connect_timeout: secs(imgtool::source::CONNECT_TIMEOUT),
            failover_attempts: imgtool::source::FAILOVER_ATTEMPTS,
            grace: secs(imgtool::source::default_grace()),
            down_candidate_cost: secs(imgtool::source::CONNECT_TIMEOUT),
            seen_query: Some(secs(imgtool::source::SEEN_QUERY_PERIOD)),
            max_candidates: netboot_proto::plan::MAX_CANDIDATES,
            seed: 1,
        }
    }
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

/// The agent's grace for a cluster whose nodes power on within `window_s` seconds
/// (`imgtool::source::boot_grace`).
pub fn grace_for_window(window_s: u64) -> f64 {
    secs(imgtool::source::boot_grace(std::time::Duration::from_secs(
        window_s,
    )))
}

/// The most connection attempts per upstream a parameter file may ask for (the agent
/// makes 2; a larger value only stretches [`Params::detect`]'s sum).
pub const MAX_FAILOVER_ATTEMPTS: u32 = 64;

impl Params {
    /// Frames in the image (the last one may be short).
    pub fn frames(&self) -> u64 {
        (self.image_bytes / self.frame_bytes).ceil().max(1.0) as u64
    }

    /// Frames per simulated block.
    pub fn block_frames(&self) -> u64 {
        self.frames().div_ceil(u64::from(self.blocks.max(1)))
    }

    /// Simulated blocks in the image (the last one may be short): the one count both the
    /// engine's size check and its tables use.
    pub fn nblocks(&self) -> u64 {
        self.frames().div_ceil(self.block_frames())
    }

    /// From the moment a silent upstream dies until its downstream pulls from the next
    /// candidate. With keepalive: its detection time (the agent then leaves the dead
    /// upstream without asking it again). Without (the agent before): the stall timeout,
    /// then `failover_attempts` connection attempts that time out, with the agent's
    /// back-off (`imgtool::source::backoff`) between them.
    pub fn detect(&self) -> f64 {
        if let Some(k) = self.keepalive {
            return k;
        }
        let n = self.failover_attempts.max(1);
        let backoff: f64 = (1..n).map(|a| secs(imgtool::source::backoff(a))).sum();
        self.stall + f64::from(n) * self.connect_timeout + backoff
    }

    /// Checks what the engine relies on (positive sizes and rates).
    pub fn check(&self) -> Result<(), String> {
        let pos = [
            ("image_bytes", self.image_bytes),
            ("frame_bytes", self.frame_bytes),
            ("node_up", self.node_up),
            ("primary_uplink", self.primary_uplink),
            ("node_rate", self.node_rate),
        ];
        for (name, v) in pos {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be positive, not {v}"));
            }
        }
        for (name, v) in [
            ("node_down", self.node_down),
            ("rack_uplink", self.rack_uplink),
            ("spine", self.spine),
            ("host_rate", self.host_rate),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{name} must be positive, not {v}"));
                }
            }
        }
        let nonneg = [
            ("hop_latency", self.hop_latency),
            ("setup", self.setup),
            ("tail", self.tail),
            ("skew", self.skew),
            ("pause", self.pause),
            ("stall", self.stall),
            ("connect_timeout", self.connect_timeout),
            ("grace", self.grace),
            ("down_candidate_cost", self.down_candidate_cost),
            ("keepalive", self.keepalive.unwrap_or(0.0)),
        ];
        if let Some(q) = self.seen_query {
            if !(q.is_finite() && q > 0.0) {
                return Err(format!("seen_query must be positive (or null), not {q}"));
            }
        }
        for (name, v) in nonneg {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be 0 or more, not {v}"));
            }
        }
        for (name, v) in [
            ("fail_share", self.fail_share),
            ("pause_share", self.pause_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be within 0..1, not {v}"));
            }
        }
        if self.frames() > 1 << 32 {
            return Err("more than 2^32 frames".into());
        }
        // `detect` sums one back-off per attempt on every death and reroute.
        if self.failover_attempts > MAX_FAILOVER_ATTEMPTS {
            return Err(format!(
                "failover_attempts must be at most {MAX_FAILOVER_ATTEMPTS}, not {}",
                self.failover_attempts
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_attempts_past_the_bound_are_refused() {
        let p = Params {
            failover_attempts: u32::MAX,
            ..Params::default()
        };
        assert!(p.check().unwrap_err().contains("failover_attempts"));
        assert!(Params::default().check().is_ok());
    }

    #[test]
    fn the_agents_failover_time_and_block_sizes() {
        let p = Params::default();
        // TCP keepalive finds a silent upstream dead in 2 s; the agent leaves it at once.
        assert!((p.detect() - 2.0).abs() < 1e-9, "{}", p.detect());
        // The agent's own constants, not copies: 1 s connects, 35 s grace (30 s window).
        assert_eq!(
            (p.connect_timeout, p.grace, p.failover_attempts),
            (1.0, 35.0, 2)
        );
        assert_eq!(grace_for_window(60), 65.0);
        // Before keepalive: 20 s stall, two 3 s connects, 400 ms back-off between them.
        let old = Params {
            keepalive: None,
            connect_timeout: 3.0,
            ..Params::default()
        };
        assert!((old.detect() - 26.4).abs() < 1e-9, "{}", old.detect());
        assert_eq!(p.frames(), 4096);
        assert_eq!(p.block_frames(), 64);
        assert!(p.check().is_ok());
        let bad = Params {
            node_up: 0.0,
            ..Params::default()
        };
        assert!(bad.check().unwrap_err().contains("node_up"));
        let p: Params = serde_json::from_str(r#"{"skew": 30}"#).unwrap();
        assert_eq!(p.skew, 30.0);
        assert!(serde_json::from_str::<Params>(r#"{"skw": 30}"#).is_err());
    }
}
