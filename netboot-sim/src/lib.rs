//! netboot-sim: a discrete-event model of image distribution over a cluster, to choose
//! and check distribution shapes at sizes nothing here can run (docs/DISTRIBUTION.md,
//! "The model"; validated against the netns bench in docs/BENCH.md).
//!
//! - [`params`]: link rates, image and frame size, node rates, the agent's failover
//!   timings, boot skew, failures;
//! - [`net`]: the cluster as links (who pulls from whom), read from a clone plan;
//! - [`shapes`]: generated clusters in every shape, for exploration;
//! - [`engine`]: the event queue and the model (see its doc for the rules and why the
//!   block aggregation keeps the answer);
//! - [`stats`]: totals, quantiles, delays caused by failures;
//! - [`rng`]: the seeded PRNG.

pub mod engine;
pub mod net;
pub mod params;
pub mod rng;
pub mod shapes;
pub mod stats;

use engine::{NodeOutcome, SimError};
use net::Net;
use params::Params;

/// One node alone, pulling from the primary: the reference time (no skew, no failures).
pub fn single(p: &Params) -> Result<f64, SimError> {
    let p = Params {
        skew: 0.0,
        fail_share: 0.0,
        pause_share: 0.0,
        ..p.clone()
    };
    let net = shapes::generate(1, 1, shapes::Shape::Naive);
    let out = engine::run(&net, &p)?;
    Ok(out.first().and_then(|o| o.done).unwrap_or(f64::INFINITY))
}

/// Runs `net` with `p`, and again without failures and pauses when there are any (for
/// [`stats::delays`]).
pub fn run_with_baseline(
    net: &Net,
    p: &Params,
) -> Result<(Vec<NodeOutcome>, Option<Vec<NodeOutcome>>), SimError> {
    let out = engine::run(net, p)?;
    if p.fail_share == 0.0 && p.pause_share == 0.0 {
        return Ok((out, None));
    }
    let clean = Params {
        fail_share: 0.0,
        pause_share: 0.0,
        ..p.clone()
    };
    Ok((out, Some(engine::run(net, &clean)?)))
}
