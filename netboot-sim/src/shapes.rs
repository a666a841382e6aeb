//! Generated clusters for exploring shapes before (or without) pxe-builder writing them:
//! `n` nodes in racks of `per_rack`, each rack entered at its first node (its
//! secondary), with the shapes pxe-builder writes (`serial`, `chain`, `fanout`), the
//! reference schemes (naive, CMU) and the bounded-depth candidates (`tree`, `chains`).

use crate::net::Net;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Everyone from the primary.
    Naive,
    /// CMU's two store-and-forward phases.
    Cmu,
    /// One chain through all racks (`rack_shape = "serial"`).
    Serial,
    /// Secondaries in a pipeline, a chain behind each (`"chain"`).
    Chain,
    /// Secondaries in a pipeline, each rack's nodes from its secondary (`"fanout"`).
    Fanout,
    /// Rack chains in a tree: the primary feeds `roots` rack secondaries; further racks
    /// hang `fanout` under each rack, each from a different member of its chain (breadth
    /// first), so every node feeds at most two.
    Tree { roots: u32, fanout: u32 },
    /// `count` parallel serial chains from the primary, each through a contiguous run
    /// of racks.
    Chains { count: u32 },
}

impl Shape {
    /// `naive`, `cmu`, `serial`, `chain`, `fanout`, `tree:R:F`, `chains:P`.
    pub fn parse(s: &str) -> Result<Shape, String> {
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{s}: {v} is not a number"))
        };
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            ["naive"] => Shape::Naive,
            ["cmu"] => Shape::Cmu,
            ["serial"] => Shape::Serial,
            ["chain"] => Shape::Chain,
            ["fanout"] => Shape::Fanout,
            ["tree", r, f] => Shape::Tree {
                roots: num(r)?.max(1),
                fanout: num(f)?.max(1),
            },
            ["chains", p] => Shape::Chains {
                count: num(p)?.max(1),
            },
            _ => return Err(format!("unknown shape {s}")),
        })
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Naive => write!(f, "naive"),
            Shape::Cmu => write!(f, "cmu"),
            Shape::Serial => write!(f, "serial"),
            Shape::Chain => write!(f, "chain"),
            Shape::Fanout => write!(f, "fanout"),
            Shape::Tree { roots, fanout } => write!(f, "tree:{roots}:{fanout}"),
            Shape::Chains { count } => write!(f, "chains:{count}"),
        }
    }
}

/// `n` nodes (`n0`, `n1`, …) in racks of `per_rack`, linked as `shape` says.
pub fn generate(n: usize, per_rack: usize, shape: Shape) -> Net {
    if n == 0 {
        // No nodes, no racks (`last(racks - 1)` below would underflow); the engine
        // refuses an empty net.
        return Net {
            names: vec![],
            rack: vec![],
            upstream: vec![],
            gate: vec![],
        };
    }
    let per_rack = per_rack.max(1);
    let racks = n.div_ceil(per_rack);
    let mut net = Net {
        names: (0..n).map(|i| format!("n{i}")).collect(),
        rack: (0..n).map(|i| (i / per_rack) as u32).collect(),
        upstream: vec![None; n],
        gate: vec![None; n],
    };
    let head = |r: usize| (r * per_rack) as u32;
    let last = |r: usize| (((r + 1) * per_rack).min(n) - 1) as u32;
    // Rack chains: every node but the head pulls from the one before it.
    let rack_chains = |net: &mut Net| {
        for i in 0..n {
            if i % per_rack != 0 {
                net.upstream[i] = Some(i as u32 - 1);
            }
        }
    };
    match shape {
        Shape::Naive => {}
        Shape::Serial => {
            rack_chains(&mut net);
            for r in 1..racks {
                net.upstream[head(r) as usize] = Some(last(r - 1));
            }
        }
        Shape::Chain | Shape::Fanout | Shape::Cmu => {
            for r in 1..racks {
                net.upstream[head(r) as usize] = Some(head(r - 1));
            }
            if shape == Shape::Chain {
                rack_chains(&mut net);
            } else {
                for i in 0..n {
                    if i % per_rack != 0 {
                        net.upstream[i] = Some(head(i / per_rack));
                    }
                }
            }
            if shape == Shape::Cmu {
                let last_head = head(racks - 1);
                for i in 0..n {
                    net.gate[i] = if i % per_rack == 0 {
                        net.upstream[i]
                    } else {
                        Some(last_head)
                    };
                }
            }
        }
        Shape::Tree { roots, fanout } => {
            // pxe-builder's rule (branch scale, 1de1709): rack k >= roots hangs under rack
            // p = (k - roots) / fanout, its secondary pulling from member (k - roots) % fanout
            // of p's chain; so no node feeds more than two.
            rack_chains(&mut net);
            let (roots, fanout) = (roots.max(1) as usize, fanout.max(1) as usize);
            for r in roots..racks {
                let p = (r - roots) / fanout;
                let member = (head(p) as usize + (r - roots) % fanout).min(last(p) as usize);
                net.upstream[head(r) as usize] = Some(member as u32);
            }
        }
        Shape::Chains { count } => {
            rack_chains(&mut net);
            let count = (count.max(1) as usize).min(racks.max(1));
            // Chain k holds racks [k*racks/count, (k+1)*racks/count).
            for k in 0..count {
                let (a, b) = (k * racks / count, (k + 1) * racks / count);
                for r in a + 1..b {
                    net.upstream[head(r) as usize] = Some(last(r - 1));
                }
            }
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nodes_is_an_empty_net_in_every_shape() {
        for shape in [
            Shape::Naive,
            Shape::Cmu,
            Shape::Serial,
            Shape::Chain,
            Shape::Fanout,
        ] {
            assert_eq!(generate(0, 250, shape).names.len(), 0);
        }
    }

    #[test]
    fn shapes_link_as_documented() {
        let s = generate(6, 3, Shape::Serial);
        assert_eq!(
            s.upstream,
            [None, Some(0), Some(1), Some(2), Some(3), Some(4)]
        );
        let c = generate(6, 3, Shape::Chain);
        assert_eq!(
            c.upstream,
            [None, Some(0), Some(1), Some(0), Some(3), Some(4)]
        );
        let f = generate(6, 3, Shape::Fanout);
        assert_eq!(
            f.upstream,
            [None, Some(0), Some(0), Some(0), Some(3), Some(3)]
        );
        let m = generate(6, 3, Shape::Cmu);
        assert_eq!(m.gate, [None, Some(3), Some(3), Some(0), Some(3), Some(3)]);
        // 5 racks of 2: heads 0,2,4,6,8; one root (rack 0) with fan-out 2: racks 1 and 2
        // hang under rack 0's members 0 and 1, racks 3 and 4 under rack 1's.
        let t = generate(
            10,
            2,
            Shape::Tree {
                roots: 1,
                fanout: 2,
            },
        );
        assert_eq!(t.upstream[2], Some(0));
        assert_eq!(t.upstream[4], Some(1));
        assert_eq!(t.upstream[6], Some(2));
        assert_eq!(t.upstream[8], Some(3));
        assert_eq!(t.depth_and_fanout(), (5, 2));
        let p = generate(8, 2, Shape::Chains { count: 2 });
        assert_eq!(
            p.upstream,
            [
                None,
                Some(0),
                Some(1),
                Some(2),
                None,
                Some(4),
                Some(5),
                Some(6)
            ]
        );
        for s in [
            "naive",
            "cmu",
            "serial",
            "chain",
            "fanout",
            "tree:4:2",
            "chains:10",
        ] {
            assert_eq!(Shape::parse(s).unwrap().to_string(), s);
        }
        assert!(Shape::parse("tree:x:2").is_err());
    }
}
