//! The clone plan (`clone-plan.json`): for every disk-based group, per entity the elected
//! secondary, the pipeline of secondaries (secondary k pulls from secondary k-1, the first
//! from the primary), and each node's upstream chain (who it pulls from, then who to fall
//! back to, ending with the primary). Node agents read their role from it.

use crate::model::Cluster;
use serde::Serialize;
use std::collections::BTreeMap;

/// The image server, as named in upstream chains.
pub const PRIMARY: &str = "primary";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Plan {
    pub version: u32,
    pub primary: String,
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
    /// `secondary` or `leaf`.
    pub role: String,
    /// Whom to pull from, in fallback order; always ends with `primary`.
    pub upstream: Vec<String>,
    /// Nodes that pull from this one first.
    pub downstream: Vec<String>,
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
        for (k, ep) in entities.iter().enumerate() {
            // Secondary k: previous secondaries (nearest first), then the primary.
            let mut up: Vec<String> = pipeline[..k].iter().rev().cloned().collect();
            up.push(PRIMARY.into());
            let mut down: Vec<String> = ep.members[1..].to_vec();
            if let Some(next) = pipeline.get(k + 1) {
                down.push(next.clone());
            }
            nodes.insert(
                ep.secondary.clone(),
                NodeRole {
                    group: g.name.clone(),
                    entity: ep.entity.clone(),
                    role: "secondary".into(),
                    upstream: up.clone(),
                    downstream: down,
                },
            );
            for m in &ep.members[1..] {
                let mut chain = vec![ep.secondary.clone()];
                chain.extend(up.iter().cloned());
                nodes.insert(
                    m.clone(),
                    NodeRole {
                        group: g.name.clone(),
                        entity: ep.entity.clone(),
                        role: "leaf".into(),
                        upstream: chain,
                        downstream: vec![],
                    },
                );
            }
        }
        groups.push(GroupPlan {
            group: g.name.clone(),
            image: g.image.clone(),
            pipeline,
            entities,
        });
    }
    Plan {
        version: 1,
        primary: c.settings.image_server.clone(),
        groups,
        nodes,
    }
}
