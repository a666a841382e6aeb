//! The cluster as the simulator sees it: nodes with their rack, whom each pulls from
//! first (its plan upstream; the fallback chain is that node's upstream, and so on), and
//! for CMU's store-and-forward phases whom it waits for before it starts. Built from a
//! clone plan ([`Net::from_plan`]) or generated ([`crate::shapes`]).

use netboot_proto::plan::{Plan, PRIMARY};
use std::collections::HashMap;

/// Whom a node pulls from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    Primary,
    Node(u32),
}

/// How to read a plan's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// As the plan says (every node at once, cut-through).
    Plan,
    /// Every node pulls from the primary.
    Naive,
    /// CMU's two phases: secondaries one after another in pipeline order, each complete
    /// before the next starts; then every rack's nodes from their secondary.
    Cmu,
}

#[derive(Debug, Clone, Default)]
pub struct Net {
    pub names: Vec<String>,
    pub rack: Vec<u32>,
    pub upstream: Vec<Option<u32>>,
    /// Start only when this node is done (store-and-forward phases).
    pub gate: Vec<Option<u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the plan has no nodes")]
    Empty,
    #[error("the upstream links loop through node {0}")]
    Loop(String),
    #[error("more than 2^32 nodes")]
    TooMany,
}

impl Net {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn up(&self, i: usize) -> Up {
        match self.upstream.get(i).copied().flatten() {
            Some(u) => Up::Node(u),
            None => Up::Primary,
        }
    }

    /// Reads a plan: nodes in the plan's (name) order, racks by entity, upstream links by
    /// name (an empty, `primary` or unknown name is the primary). `Naive` and `Cmu`
    /// replace the links from the plan's groups (pipeline order, entity members).
    pub fn from_plan(plan: &Plan, scheme: Scheme) -> Result<Net, NetError> {
        if plan.nodes.is_empty() {
            return Err(NetError::Empty);
        }
        u32::try_from(plan.nodes.len()).map_err(|_| NetError::TooMany)?;
        let index: HashMap<&str, u32> = plan
            .nodes
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let mut racks: HashMap<&str, u32> = HashMap::new();
        let mut net = Net::default();
        for (name, role) in &plan.nodes {
            let next = racks.len() as u32;
            net.rack
                .push(*racks.entry(role.entity.as_str()).or_insert(next));
            net.names.push(name.clone());
            let up = role.upstream.as_str();
            net.upstream.push(if up == PRIMARY {
                None
            } else {
                index.get(up).copied()
            });
            net.gate.push(None);
        }
        match scheme {
            Scheme::Plan => {}
            Scheme::Naive => net.upstream.iter_mut().for_each(|u| *u = None),
            Scheme::Cmu => net.cmu(plan, &index),
        }
        net.check()?;
        Ok(net)
    }

    fn cmu(&mut self, plan: &Plan, index: &HashMap<&str, u32>) {
        for g in &plan.groups {
            let heads: Vec<u32> = g
                .pipeline
                .iter()
                .filter_map(|s| index.get(s.as_str()).copied())
                .collect();
            let mut prev = None;
            for &h in &heads {
                self.upstream[h as usize] = prev;
                self.gate[h as usize] = prev;
                prev = Some(h);
            }
            for e in &g.entities {
                let Some(&sec) = index.get(e.secondary.as_str()) else {
                    continue;
                };
                for m in &e.members {
                    if let Some(&i) = index.get(m.as_str()) {
                        if i != sec {
                            self.upstream[i as usize] = Some(sec);
                            self.gate[i as usize] = prev;
                        }
                    }
                }
            }
        }
    }

    /// Refuses upstream (and gate) links that loop: the agent refuses such a plan, and
    /// the simulator would wait forever. Linear: each node is coloured once.
    pub fn check(&self) -> Result<(), NetError> {
        if self.is_empty() {
            return Err(NetError::Empty);
        }
        for links in [&self.upstream, &self.gate] {
            // 0 unvisited, 1 on the current walk, 2 known to reach the primary.
            let mut colour = vec![0u8; self.len()];
            for start in 0..self.len() {
                let mut walk = vec![];
                let mut cur = Some(start as u32);
                while let Some(c) = cur {
                    match colour.get(c as usize).copied() {
                        Some(0) => {
                            colour[c as usize] = 1;
                            walk.push(c);
                            cur = links[c as usize];
                        }
                        Some(1) => return Err(NetError::Loop(self.names[c as usize].clone())),
                        _ => break,
                    }
                }
                for w in walk {
                    colour[w as usize] = 2;
                }
            }
        }
        Ok(())
    }

    /// Depth of every node (hops from the primary along the first upstreams) and the
    /// largest number of nodes any node feeds first.
    pub fn depth_and_fanout(&self) -> (usize, usize) {
        let mut depth = vec![usize::MAX; self.len()];
        let mut kids = vec![0usize; self.len()];
        for i in 0..self.len() {
            if let Some(u) = self.upstream[i] {
                kids[u as usize] += 1;
            }
            let mut walk = vec![];
            let mut cur = Some(i as u32);
            let mut base = 0;
            while let Some(c) = cur {
                if depth[c as usize] != usize::MAX {
                    base = depth[c as usize];
                    break;
                }
                walk.push(c);
                cur = self.upstream[c as usize];
            }
            for (k, w) in walk.iter().rev().enumerate() {
                depth[*w as usize] = base + k + 1;
            }
        }
        (
            depth.into_iter().max().unwrap_or(0),
            kids.into_iter().max().unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netboot_proto::plan::{EntityPlan, GroupPlan, NodeRole};

    fn plan() -> Plan {
        let role = |e: &str, up: &str| NodeRole {
            entity: e.into(),
            upstream: up.into(),
            ..NodeRole::default()
        };
        let mut p = Plan::default();
        p.nodes.insert("a".into(), role("r1", "primary"));
        p.nodes.insert("b".into(), role("r1", "a"));
        p.nodes.insert("c".into(), role("r2", "b"));
        p.nodes.insert("d".into(), role("r2", "c"));
        p.groups.push(GroupPlan {
            pipeline: vec!["a".into(), "c".into()],
            entities: vec![
                EntityPlan {
                    entity: "r1".into(),
                    secondary: "a".into(),
                    members: vec!["a".into(), "b".into()],
                    ..EntityPlan::default()
                },
                EntityPlan {
                    entity: "r2".into(),
                    secondary: "c".into(),
                    members: vec!["c".into(), "d".into()],
                    ..EntityPlan::default()
                },
            ],
            ..GroupPlan::default()
        });
        p
    }

    #[test]
    fn plans_read_as_links_and_schemes() {
        let p = plan();
        let n = Net::from_plan(&p, Scheme::Plan).unwrap();
        assert_eq!(n.upstream, [None, Some(0), Some(1), Some(2)]);
        assert_eq!(n.rack, [0, 0, 1, 1]);
        assert_eq!(n.depth_and_fanout(), (4, 1));
        let n = Net::from_plan(&p, Scheme::Naive).unwrap();
        assert!(n.upstream.iter().all(Option::is_none));
        let n = Net::from_plan(&p, Scheme::Cmu).unwrap();
        // c after a; b and d from their secondary once c (the last secondary) is done.
        assert_eq!(n.upstream, [None, Some(0), Some(0), Some(2)]);
        assert_eq!(n.gate, [None, Some(2), Some(0), Some(2)]);
    }

    #[test]
    fn a_loop_is_refused() {
        let mut p = plan();
        p.nodes.get_mut("a").unwrap().upstream = "d".into();
        let e = Net::from_plan(&p, Scheme::Plan).unwrap_err().to_string();
        assert!(e.contains("loop"), "{e}");
        assert!(Net::from_plan(&Plan::default(), Scheme::Plan).is_err());
    }
}
