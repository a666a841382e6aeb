//! Figures from a run: finish times of the surviving nodes (total, p50, p99), the time
//! each node took from its own start, who did not finish, and — against a run without
//! failures — how much the failures delayed whom.

use crate::engine::NodeOutcome;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub nodes: usize,
    pub died: usize,
    /// Nodes that did not die and did not finish (must be 0).
    pub unfinished: usize,
    /// Last finish of a surviving node, from time 0 (the first possible boot).
    pub total: f64,
    pub p50: f64,
    pub p99: f64,
    /// p99 of (finish − own start).
    pub own_p99: f64,
    pub reroutes: u64,
}

/// The `q` quantile (0..=1) of sorted values (nearest rank); 0 for none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub fn summarize(out: &[NodeOutcome]) -> Summary {
    let done = sorted(out.iter().filter_map(|o| o.done).collect());
    let own = sorted(
        out.iter()
            .filter_map(|o| o.done.map(|d| d - o.start))
            .collect(),
    );
    Summary {
        nodes: out.len(),
        died: out.iter().filter(|o| o.died.is_some()).count(),
        unfinished: out
            .iter()
            .filter(|o| o.died.is_none() && o.done.is_none())
            .count(),
        total: done.last().copied().unwrap_or(0.0),
        p50: quantile(&done, 0.5),
        p99: quantile(&done, 0.99),
        own_p99: quantile(&own, 0.99),
        reroutes: out.iter().map(|o| u64::from(o.reroutes)).sum(),
    }
}

/// What the failures cost: per surviving node, its finish minus its finish in the same
/// run (same boots) without failures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delays {
    pub max: f64,
    pub p99: f64,
    /// Surviving nodes delayed by more than one second.
    pub over_1s: usize,
}

pub fn delays(with: &[NodeOutcome], without: &[NodeOutcome]) -> Delays {
    let d = sorted(
        with.iter()
            .zip(without)
            .filter_map(|(a, b)| Some((a.done? - b.done?).max(0.0)))
            .collect(),
    );
    Delays {
        max: d.last().copied().unwrap_or(0.0),
        p99: quantile(&d, 0.99),
        over_1s: d.iter().filter(|x| **x > 1.0).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
