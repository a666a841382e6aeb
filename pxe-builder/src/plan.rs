//! Building the clone plan (`clone-plan.json`) from the cluster: for every disk-based
//! group, per entity the elected secondary, the pipeline order of the secondaries, and
//! each node's upstream and downstream, in the shape `rack_shape` asks for
//! ([`RackShape`]). The document itself (its types, its upstream walk, how a node reads
//! its route) is the protocol's: `netboot_proto::plan`.

use crate::model::{Cluster, Group, RackShape};
use netboot_proto::plan::{
    EntityPlan, GroupPlan, NodeRole, Plan, CHOSEN_CONFIGURED, CHOSEN_ELECTED, PRIMARY, ROLE_LEAF,
    ROLE_RELAY, ROLE_SECONDARY, VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// The plan of cluster `c`: one [`GroupPlan`] per group that clones, every active member's
/// [`NodeRole`], and the addresses of the nodes in it.
pub fn clone_plan(c: &Cluster) -> Plan {
    let mut groups = vec![];
    let mut nodes = BTreeMap::new();
    for g in c
        .groups
        .iter()
        .filter(|g| g.clones(&c.settings.vsmp_prefix))
    {
        let entities: Vec<EntityPlan> = g
            .entity_order(&c.nodes, c.entities.len())
            .into_iter()
            .map(|e| entity_plan(c, g, e))
            .collect();
        let pipeline: Vec<String> = entities.iter().map(|e| e.secondary.clone()).collect();
        let order = assign_upstreams(g, &entities, &pipeline, c.settings.rack_shape, &mut nodes);
        link_downstream(&order, &mut nodes);
        groups.push(GroupPlan {
            group: g.name.clone(),
            image: g.image.clone(),
            pipeline,
            entities,
        });
    }
    Plan {
        version: VERSION,
        primary: c.settings.image_server.clone(),
        relay_port: c.settings.relay_port,
        addresses: addresses(c, &nodes),
        groups,
        nodes,
    }
}

/// Entity `e`'s part of `g`'s plan: its secondary (the configured one when it is an active
/// member of `g` here, else the first active member) and its members, secondary first.
fn entity_plan(c: &Cluster, g: &Group, e: usize) -> EntityPlan {
    let ent = &c.entities[e];
    let in_entity: Vec<usize> = g
        .active
        .iter()
        .copied()
        .filter(|&n| c.nodes[n].entity == e)
        .collect();
    let (sec, chosen) = match ent.secondary {
        Some(s) if in_entity.contains(&s) => (s, CHOSEN_CONFIGURED),
        _ => (in_entity[0], CHOSEN_ELECTED),
    };
    let mut members = vec![c.nodes[sec].name.clone()];
    members.extend(
        in_entity
            .iter()
            .filter(|&&n| n != sec)
            .map(|&n| c.nodes[n].name.clone()),
    );
    EntityPlan {
        entity: ent.name.clone(),
        secondary: c.nodes[sec].name.clone(),
        secondary_chosen: chosen.into(),
        members,
    }
}

/// Whom member `j` of entity `k` pulls from first, by the shape.
fn upstream_of(
    shape: RackShape,
    entities: &[EntityPlan],
    pipeline: &[String],
    k: usize,
    j: usize,
) -> String {
    let ep = &entities[k];
    match (j, shape) {
        (0, _) if k == 0 => PRIMARY.to_string(),
        // Serial: a secondary pulls from the previous rack's last node.
        (0, RackShape::Serial) => entities[k - 1].members.last().cloned().unwrap_or_default(),
        (0, _) => pipeline[k - 1].clone(),
        (_, RackShape::Fanout) => ep.secondary.clone(),
        // A chain: each node pulls from the one before it.
        _ => ep.members[j - 1].clone(),
    }
}

/// Enters every member of `g`'s plan into `nodes` with its upstream (downstream lists
/// empty; secondaries as such, the others leaves). Returns the members in plan order.
fn assign_upstreams(
    g: &Group,
    entities: &[EntityPlan],
    pipeline: &[String],
    shape: RackShape,
    nodes: &mut BTreeMap<String, NodeRole>,
) -> Vec<String> {
    let mut order = vec![];
    for (k, ep) in entities.iter().enumerate() {
        for (j, m) in ep.members.iter().enumerate() {
            let role = if j == 0 { ROLE_SECONDARY } else { ROLE_LEAF };
            order.push(m.clone());
            nodes.insert(
                m.clone(),
                NodeRole {
                    group: g.name.clone(),
                    entity: ep.entity.clone(),
                    role: role.into(),
                    upstream: upstream_of(shape, entities, pipeline, k, j),
                    downstream: vec![],
                },
            );
        }
    }
    order
}

/// Derives the downstream lists from the upstreams, in plan order; a leaf that feeds
/// another node becomes a relay.
fn link_downstream(order: &[String], nodes: &mut BTreeMap<String, NodeRole>) {
    for m in order {
        let up = nodes[m].upstream.clone();
        if let Some(u) = nodes.get_mut(&up) {
            u.downstream.push(m.clone());
            if u.role == ROLE_LEAF {
                u.role = ROLE_RELAY.into();
            }
        }
    }
}

/// The address of every node in the plan. By name through a map: a search of the node
/// list per plan node was quadratic (72 s of a 100 000-node build).
fn addresses(c: &Cluster, nodes: &BTreeMap<String, NodeRole>) -> BTreeMap<String, String> {
    let ip_of: HashMap<&str, Ipv4Addr> = c.nodes.iter().map(|x| (x.name.as_str(), x.ip)).collect();
    nodes
        .keys()
        .filter_map(|n| ip_of.get(n.as_str()).map(|ip| (n.clone(), ip.to_string())))
        .collect()
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
            body.push_str(&format!(
                "[[entity]]\nname = \"{e}\"\nsubnet = \"{net}\"\ngateway = \"{}\"\n",
                net.replace(".0/24", ".254")
            ));
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
        assert_eq!(p.chain("r1n1").unwrap(), ["primary"]);
        assert_eq!(p.chain("r2n3").unwrap(), ["r1n1", "primary"]);
        assert_eq!(p.chain("r3n1").unwrap(), ["r2n3", "r1n1", "primary"]);
        assert_eq!(
            p.chain("r3n2").unwrap(),
            ["r3n1", "r2n3", "r1n1", "primary"]
        );
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
            &racks("[[entity]]\nname = \"r4\"\nsubnet = \"10.4.0.0/24\"\ngateway = \"10.4.0.254\"\n[[node]]\nname = \"r4n1\"\nmac = \"52:54:00:00:04:01\"\nip = \"10.4.0.1\"\nentity = \"r4\"\ngroups = [\"compute\"]\n"),
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
        assert_eq!(p.chain("r3n3").unwrap(), up);
    }

    #[test]
    fn chain_feeds_a_rack_chain_and_the_next_secondary() {
        let p = clone_plan(&cluster("chain", &racks("")));
        assert_eq!(p.nodes["r2n3"].upstream, "r1n1");
        assert_eq!(p.nodes["r2n3"].downstream, ["r2n1", "r3n1"]);
        assert_eq!(p.nodes["r2n1"].downstream, ["r2n2"]);
        assert_eq!(p.nodes["r2n2"].role, "leaf");
        assert_eq!(
            p.chain("r2n2").unwrap(),
            ["r2n1", "r2n3", "r1n1", "primary"]
        );
    }

    /// 64 nodes in 8 racks, the third rack's secondary configured.
    fn racks_of_8() -> String {
        let mut body = String::new();
        for r in 1..=8 {
            body.push_str(&format!(
                "[[entity]]\nname = \"rack{r}\"\nsubnet = \"10.{r}.0.0/24\"\ngateway = \"10.{r}.0.254\"\n"
            ));
            if r == 3 {
                body.push_str("secondary = \"r3n5\"\n");
            }
        }
        body.push_str("[[group]]\nname = \"compute\"\n");
        for r in 1..=8 {
            for n in 1..=8 {
                body.push_str(&format!(
                    "[[node]]\nname = \"r{r}n{n}\"\nmac = \"52:54:00:00:{r:02x}:{n:02x}\"\nip = \"10.{r}.0.{}\"\nentity = \"rack{r}\"\ngroups = [\"compute\"]\n",
                    n + 10
                ));
            }
        }
        body
    }

    #[test]
    fn a_64_node_plan_reads_back_as_written_and_routes_every_node() {
        for shape in ["serial", "chain", "fanout"] {
            let p = clone_plan(&cluster(shape, &racks_of_8()));
            assert_eq!(p.nodes.len(), 64, "{shape}");
            let text = serde_json::to_string_pretty(&p).unwrap();
            let back = Plan::from_json(text.as_bytes()).unwrap();
            assert_eq!(back, p, "{shape}");
            assert_eq!(
                serde_json::to_string_pretty(&back).unwrap(),
                text,
                "{shape}"
            );
            for (name, role) in &p.nodes {
                // What a node reads is what the plan says: its chain, and how many nodes
                // it must serve (issue 11: this was never read).
                let r = back.route(name).unwrap().unwrap();
                assert_eq!(r.downstream, role.downstream.len(), "{shape} {name}");
                let chain = back.chain(name).unwrap();
                assert_eq!(chain.last().map(String::as_str), Some(PRIMARY));
                let names: Vec<&str> = r.upstreams.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, chain[..chain.len() - 1], "{shape} {name}");
                for (n, ip) in &r.upstreams {
                    assert_eq!(p.addresses[n], ip.to_string());
                }
            }
        }
    }
}
