//! The clone plan (`clone-plan.json`): for every disk-based group, per entity the elected
//! secondary, the pipeline order of the secondaries, and each node's upstream chain (who
//! it pulls from, then who to fall back to, ending with the primary), in the shape
//! `rack_shape` asks for ([`RackShape`]). Node agents read their role from it.

use crate::model::{Cluster, RackShape};
use serde::Serialize;
use std::collections::BTreeMap;

/// The image server, as named in upstream chains.
pub const PRIMARY: &str = "primary";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Plan {
    pub version: u32,
    pub primary: String,
    /// Port on which relaying nodes serve the image.
    pub relay_port: u16,
    /// Address of every node that appears in the plan.
    pub addresses: BTreeMap<String, String>,
    pub groups: Vec<GroupPlan>,
    /// Per node name: its role in the plan of its active group.
    pub nodes: BTreeMap<String, NodeRole>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupPlan {
    pub group: String,
    pub image: String,
    /// Secondaries in pipeline order.
    pub pipeline: Vec<String>,
    pub entities: Vec<EntityPlan>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntityPlan {
    pub entity: String,
    pub secondary: String,
    /// `configured` or `elected` (first active member of the group in the entity).
    pub secondary_chosen: String,
    /// Active members of the group in this entity, secondary first.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRole {
    pub group: String,
    pub entity: String,
    /// `secondary`, `relay` (a node of a rack chain that feeds the next) or `leaf`.
    pub role: String,
    /// Whom to pull from first: a node name, or `primary`. The fallback chain is this
    /// node's upstream, then *its* upstream, … ending with `primary` ([`Plan::chain`]);
    /// it is stored as links because written out per node it would grow with
    /// nodes × entities (20 million names for 100 000 nodes in 400 racks).
    pub upstream: String,
    /// Nodes that pull from this one first.
    pub downstream: Vec<String>,
}

impl Plan {
    /// The fallback chain of `node`: its upstream, that one's upstream, … `primary`.
    pub fn chain(&self, node: &str) -> Vec<String> {
        let mut out = vec![];
        let mut cur = node;
        while let Some(r) = self.nodes.get(cur) {
            if out.len() > self.nodes.len() {
                break; // a loop cannot happen in a plan we made; never spin on a bad file
            }
            out.push(r.upstream.clone());
            cur = &r.upstream;
        }
        if out.last().map(String::as_str) != Some(PRIMARY) {
            out.push(PRIMARY.into());
        }
        out
    }
}

pub fn clone_plan(c: &Cluster) -> Plan {
    let mut groups = vec![];
    let mut nodes = BTreeMap::new();
    for g in &c.groups {
        // Diskless groups have nothing to clone; vSMP boards boot the vSMP loader instead.
        if g.diskless || g.is_vsmp(&c.settings.vsmp_prefix) || g.active.is_empty() {
            continue;
        }
        let mut entities = vec![];
        // Entities in the order their first active member appears.
        let mut order: Vec<usize> = vec![];
        for &n in &g.active {
            let e = c.nodes[n].entity;
            if !order.contains(&e) {
                order.push(e);
            }
        }
        for &e in &order {
            let ent = &c.entities[e];
            let in_entity: Vec<usize> = g
                .active
                .iter()
                .copied()
                .filter(|&n| c.nodes[n].entity == e)
                .collect();
            let (sec, chosen) = match ent.secondary {
                Some(s) if in_entity.contains(&s) => (s, "configured"),
                _ => (in_entity[0], "elected"),
            };
            let mut members = vec![c.nodes[sec].name.clone()];
            members.extend(
                in_entity
                    .iter()
                    .filter(|&&n| n != sec)
                    .map(|&n| c.nodes[n].name.clone()),
            );
            entities.push(EntityPlan {
                entity: ent.name.clone(),
                secondary: c.nodes[sec].name.clone(),
                secondary_chosen: chosen.into(),
                members,
            });
        }
        let pipeline: Vec<String> = entities.iter().map(|e| e.secondary.clone()).collect();
        let shape = c.settings.rack_shape;
        // Each node's upstream, by the shape; downstream lists are derived from them.
        let mut order = vec![];
        for (k, ep) in entities.iter().enumerate() {
            for (j, m) in ep.members.iter().enumerate() {
                let upstream = match (j, shape) {
                    (0, _) if k == 0 => PRIMARY.to_string(),
                    // Serial: a secondary pulls from the previous rack's last node.
                    (0, RackShape::Serial) => {
                        entities[k - 1].members.last().cloned().unwrap_or_default()
                    }
                    (0, _) => pipeline[k - 1].clone(),
                    (_, RackShape::Fanout) => ep.secondary.clone(),
                    // A chain: each node pulls from the one before it.
                    _ => ep.members[j - 1].clone(),
                };
                let role = if j == 0 { "secondary" } else { "leaf" };
                order.push(m.clone());
                nodes.insert(
                    m.clone(),
                    NodeRole {
                        group: g.name.clone(),
                        entity: ep.entity.clone(),
                        role: role.into(),
                        upstream,
                        downstream: vec![],
                    },
                );
            }
        }
        for m in &order {
            let up = nodes[m].upstream.clone();
            if let Some(u) = nodes.get_mut(&up) {
                u.downstream.push(m.clone());
                if u.role == "leaf" {
                    u.role = "relay".into();
                }
            }
        }
        groups.push(GroupPlan {
            group: g.name.clone(),
            image: g.image.clone(),
            pipeline,
            entities,
        });
    }
    // By name through a map: a search of the node list per plan node was quadratic
    // (72 s of a 100 000-node build).
    let ip_of: std::collections::HashMap<&str, std::net::Ipv4Addr> =
        c.nodes.iter().map(|x| (x.name.as_str(), x.ip)).collect();
    let addresses = nodes
        .keys()
        .filter_map(|n: &String| ip_of.get(n.as_str()).map(|ip| (n.clone(), ip.to_string())))
        .collect();
    Plan {
        version: 1,
        primary: c.settings.image_server.clone(),
        relay_port: c.settings.relay_port,
        addresses,
        groups,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(shape: &str, body: &str) -> Cluster {
        let head = format!("[cluster]\nname = \"t\"\nimage_server = \"http://s\"\nserver_ip = \"10.0.0.1\"\nkernel = \"/bin/sh\"\ninitrd = \"/bin/sh\"\nrack_shape = \"{shape}\"\n");
        crate::model::parse(
            &format!("{head}{body}"),
            "t.toml",
            std::path::Path::new("/"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Three racks of three nodes (`r2`'s secondary configured: r2n3), and `extra`.
    fn racks(extra: &str) -> String {
        let mut body = String::new();
        for (e, net) in [
            ("r1", "10.1.0.0/24"),
            ("r2", "10.2.0.0/24"),
            ("r3", "10.3.0.0/24"),
        ] {
            body.push_str(&format!("[[entity]]\nname = \"{e}\"\nsubnet = \"{net}\"\n"));
            if e == "r2" {
                body.push_str("secondary = \"r2n3\"\n");
            }
        }
        body.push_str("[[group]]\nname = \"compute\"\n");
        for r in 1..=3 {
            for n in 1..=3 {
                body.push_str(&format!(
                    "[[node]]\nname = \"r{r}n{n}\"\nmac = \"52:54:00:00:0{r}:0{n}\"\nip = \"10.{r}.0.{n}\"\nentity = \"r{r}\"\ngroups = [\"compute\"]\n"
                ));
            }
        }
        body.push_str(extra);
        body
    }

    #[test]
    fn secondaries_form_a_pipeline_and_leaves_fall_back_up_the_chain() {
        let body = racks("");
        let p = clone_plan(&cluster("fanout", &body));
        let g = &p.groups[0];
        assert_eq!(g.pipeline, ["r1n1", "r2n3", "r3n1"]);
        assert_eq!(g.entities[1].secondary_chosen, "configured");
        assert_eq!(g.entities[0].secondary_chosen, "elected");
        assert_eq!(p.chain("r1n1"), ["primary"]);
        assert_eq!(p.chain("r2n3"), ["r1n1", "primary"]);
        assert_eq!(p.chain("r3n1"), ["r2n3", "r1n1", "primary"]);
        assert_eq!(p.chain("r3n2"), ["r3n1", "r2n3", "r1n1", "primary"]);
        assert_eq!(p.nodes["r3n2"].upstream, "r3n1");
        assert_eq!(p.nodes["r3n2"].role, "leaf");
        assert_eq!(p.nodes["r2n3"].downstream, ["r2n1", "r2n2", "r3n1"]);
        // Nine nodes, each with exactly one role.
        assert_eq!(p.nodes.len(), 9);
    }

    #[test]
    fn serial_is_one_chain_through_the_racks_with_one_downstream_each() {
        // A fourth rack with a single node: its secondary feeds nobody in its rack.
        let p = clone_plan(&cluster(
            "serial",
            &racks("[[entity]]\nname = \"r4\"\nsubnet = \"10.4.0.0/24\"\n[[node]]\nname = \"r4n1\"\nmac = \"52:54:00:00:04:01\"\nip = \"10.4.0.1\"\nentity = \"r4\"\ngroups = [\"compute\"]\n"),
        ));
        let order = [
            "r1n1", "r1n2", "r1n3", "r2n3", "r2n1", "r2n2", "r3n1", "r3n2", "r3n3", "r4n1",
        ];
        assert_eq!(p.groups[0].pipeline, ["r1n1", "r2n3", "r3n1", "r4n1"]);
        assert_eq!(p.nodes["r1n1"].upstream, "primary");
        for w in order.windows(2) {
            assert_eq!(p.nodes[w[1]].upstream, w[0], "{}", w[1]);
            assert_eq!(p.nodes[w[0]].downstream, [w[1]], "{}", w[0]);
        }
        assert_eq!(p.nodes["r2n3"].role, "secondary");
        assert_eq!(p.nodes["r1n3"].role, "relay");
        assert_eq!(p.nodes["r4n1"].downstream, Vec::<String>::new());
        let mut up: Vec<&str> = order[..8].iter().rev().copied().collect();
        up.push("primary");
        assert_eq!(p.chain("r3n3"), up);
    }

    #[test]
    fn chain_feeds_a_rack_chain_and_the_next_secondary() {
        let p = clone_plan(&cluster("chain", &racks("")));
        assert_eq!(p.nodes["r2n3"].upstream, "r1n1");
        assert_eq!(p.nodes["r2n3"].downstream, ["r2n1", "r3n1"]);
        assert_eq!(p.nodes["r2n1"].downstream, ["r2n2"]);
        assert_eq!(p.nodes["r2n2"].role, "leaf");
        assert_eq!(p.chain("r2n2"), ["r2n1", "r2n3", "r1n1", "primary"]);
    }
}
