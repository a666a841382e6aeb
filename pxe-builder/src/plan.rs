//! Building the clone plan from the cluster: for every disk-based group, per entity the
//! elected secondary, the pipeline order of the secondaries, and each node's upstream and
//! downstream, in the shape `rack_shape` asks for ([`RackShape`]; `auto` resolved per
//! group by [`resolve_shape`]). It is built once as indexes ([`Layout`]), in time linear
//! in the nodes (no search by name anywhere: every step counts [`crate::work::tick`]),
//! and written two ways: the whole `clone-plan.json` ([`plan_of`]) and each node's
//! bounded `etc/plan/<node>.json` ([`node_plans`]). The documents themselves (their types,
//! the bounded reading a node applies) are the protocol's: `netboot_proto::plan`.

use crate::model::{Cluster, Links, RackShape, AUTO_SERIAL_MAX_NODES, MAX_TREE_FANOUT};
use crate::work::tick;
use netboot_proto::plan::{
    boot_peer_indexes, Candidate, EntityPlan, GroupPlan, NodePlan, NodeRole, Plan,
    CHOSEN_CONFIGURED, CHOSEN_ELECTED, MAX_CANDIDATES, PRIMARY, ROLE_LEAF, ROLE_RELAY,
    ROLE_SECONDARY, VERSION,
};
use std::collections::{BTreeMap, HashMap};

/// Where a node pulls from first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    Primary,
    Node(usize),
}

/// One entity's part of a group's plan: its members (node indexes), secondary first.
#[derive(Debug, Clone)]
pub struct Rack {
    pub entity: usize,
    /// [`CHOSEN_CONFIGURED`] or [`CHOSEN_ELECTED`].
    pub chosen: &'static str,
    pub members: Vec<usize>,
}

/// One cloning group's plan: its racks in pipeline order and the shape they form.
#[derive(Debug, Clone)]
pub struct GroupLayout {
    pub group: usize,
    /// The shape used (never [`RackShape::Auto`]).
    pub shape: RackShape,
    pub racks: Vec<Rack>,
    /// `tree`: racks that pull from the primary, and racks under each rack.
    pub roots: usize,
    pub fanout: usize,
}

/// The clone plan as node indexes: per node (of the cluster) its upstream, downstream
/// and role, when it is in the plan.
#[derive(Debug, Clone)]
pub struct Layout {
    pub groups: Vec<GroupLayout>,
    up: Vec<Option<Up>>,
    down: Vec<Vec<usize>>,
    role: Vec<&'static str>,
    /// Group (index into `groups`) of each node in the plan.
    in_group: Vec<usize>,
    /// Nodes in plan order (racks in order, members in order).
    order: Vec<usize>,
}

/// The shape group `g` is cloned in: `rack_shape`, with `auto` resolved by the group's
/// size and the primary's full-rate streams ([`primary_streams`]): `serial` when the
/// primary can feed only one node at its full rate and the group has at most
/// [`AUTO_SERIAL_MAX_NODES`] cloning nodes (a single chain at the full link rate, its lag
/// of one frame per hop still small), `tree` otherwise (several rack chains straight
/// from the primary, the other racks in pipelines under them: bounded depth).
/// docs/DISTRIBUTION.md has the numbers (from the simulator).
pub fn resolve_shape(shape: RackShape, nodes: usize, streams: usize) -> RackShape {
    match shape {
        RackShape::Auto if streams <= 1 && nodes <= AUTO_SERIAL_MAX_NODES => RackShape::Serial,
        RackShape::Auto => RackShape::Tree,
        s => s,
    }
}

/// How many nodes the primary feeds at a node link's full rate: as many streams as its
/// uplink and the spine carry (⌊min(primary, spine) / node⌋: 100/10 = 10), at least 1.
pub fn primary_streams(links: &Links) -> usize {
    let streams = (links.primary.min(links.spine) / links.node).floor();
    if streams.is_finite() && streams >= 1.0 {
        streams.min(usize::MAX as f64) as usize
    } else {
        1
    }
}

/// `tree`: how many racks pull from the primary at once — [`primary_streams`], at most
/// `racks`.
pub fn tree_roots(links: &Links, racks: usize) -> usize {
    primary_streams(links).clamp(1, racks.max(1))
}

/// `tree`: racks under each rack — `tree_fanout`, but no more child streams (each at half
/// the node link) than the rack's uplink carries: F ≤ 2 × rack uplink / node link.
pub fn tree_fanout(configured: usize, links: &Links) -> usize {
    let cap = (2.0 * links.rack_uplink / links.node).floor();
    let cap = if cap.is_finite() && cap >= 1.0 {
        cap.min(MAX_TREE_FANOUT as f64) as usize
    } else {
        1
    };
    configured.clamp(1, cap)
}

/// The plan of cluster `c` as indexes.
pub fn layout(c: &Cluster) -> Layout {
    let n = c.nodes.len();
    let mut l = Layout {
        groups: vec![],
        up: vec![None; n],
        down: vec![vec![]; n],
        role: vec![ROLE_LEAF; n],
        in_group: vec![0; n],
        order: vec![],
    };
    for (gi, g) in c.groups.iter().enumerate() {
        tick(1);
        if !g.clones(&c.settings.vsmp_prefix) {
            continue;
        }
        let racks = racks(c, gi);
        let shape = resolve_shape(
            c.settings.rack_shape,
            g.active.len(),
            primary_streams(&c.settings.links),
        );
        let gl = GroupLayout {
            group: gi,
            shape,
            roots: tree_roots(&c.settings.links, racks.len()),
            // A rack of fewer members than the fan-out would hang the extra child racks
            // all on its last node; no more children per rack than its smallest has members.
            fanout: tree_fanout(c.settings.tree_fanout, &c.settings.links)
                .min(racks.iter().map(|r| r.members.len()).min().unwrap_or(1))
                .max(1),
            racks,
        };
        let k = l.groups.len();
        assign(&mut l, &gl, k);
        l.groups.push(gl);
    }
    l
}

/// Group `gi`'s racks in the order their first active member appears, each with its
/// secondary (the configured one when it is an active member of the group there, else
/// the first active member) first. One pass over the active members.
fn racks(c: &Cluster, gi: usize) -> Vec<Rack> {
    let g = &c.groups[gi];
    let mut slot: HashMap<usize, usize> = HashMap::new();
    let mut racks: Vec<Rack> = vec![];
    for &n in &g.active {
        tick(1);
        let e = c.nodes[n].entity;
        let k = *slot.entry(e).or_insert_with(|| {
            racks.push(Rack {
                entity: e,
                chosen: CHOSEN_ELECTED,
                members: vec![],
            });
            racks.len() - 1
        });
        racks[k].members.push(n);
    }
    for r in &mut racks {
        tick(1);
        let configured = c.entities[r.entity].secondary.and_then(|s| {
            // Active in this group and in this entity: then it is among the members.
            let node = &c.nodes[s];
            (node.active_group == gi && node.entity == r.entity).then_some(s)
        });
        if let Some(s) = configured {
            r.chosen = CHOSEN_CONFIGURED;
            if let Some(pos) = r.members.iter().position(|&m| m == s) {
                tick(pos);
                let s = r.members.remove(pos);
                r.members.insert(0, s);
            }
        }
    }
    racks
}

/// Whom member `j` of rack `k` pulls from first, by the group's shape.
fn upstream_of(gl: &GroupLayout, k: usize, j: usize) -> Up {
    let racks = &gl.racks;
    let rack = &racks[k];
    let node = |k: usize, j: usize| Up::Node(racks[k].members[j]);
    match (j, gl.shape) {
        (0, RackShape::Tree) if k < gl.roots => Up::Primary,
        (0, RackShape::Tree) => {
            // Rack k hangs under rack p, its secondary pulling from member i of p's chain:
            // each node of p feeds its successor and at most one child rack.
            let (p, i) = ((k - gl.roots) / gl.fanout, (k - gl.roots) % gl.fanout);
            node(p, i.min(racks[p].members.len() - 1))
        }
        (0, _) if k == 0 => Up::Primary,
        // Serial: a secondary pulls from the previous rack's last node.
        (0, RackShape::Serial) => node(k - 1, racks[k - 1].members.len() - 1),
        (0, _) => node(k - 1, 0),
        (_, RackShape::Fanout) => Up::Node(rack.members[0]),
        // A chain: each node pulls from the one before it.
        _ => node(k, j - 1),
    }
}

/// Enters group `gl`'s members into the layout: upstream, role, and (in plan order) the
/// upstream's downstream list; a leaf that feeds another node becomes a relay.
fn assign(l: &mut Layout, gl: &GroupLayout, k: usize) {
    let start = l.order.len();
    for (r, rack) in gl.racks.iter().enumerate() {
        for (j, &m) in rack.members.iter().enumerate() {
            tick(1);
            let up = upstream_of(gl, r, j);
            l.up[m] = Some(up);
            l.in_group[m] = k;
            if j == 0 {
                l.role[m] = ROLE_SECONDARY;
            }
            l.order.push(m);
        }
    }
    for &m in &l.order[start..] {
        tick(1);
        if let Some(Up::Node(u)) = l.up[m] {
            l.down[u].push(m);
            if l.role[u] == ROLE_LEAF {
                l.role[u] = ROLE_RELAY;
            }
        }
    }
}

impl Layout {
    /// The entities' secondaries in plan order: the nodes of the boot-file tree
    /// (`netboot_proto::plan::boot_peer_indexes`), as `Plan::boot_tree` reads them from
    /// `clone-plan.json`.
    pub fn boot_tree(&self) -> Vec<usize> {
        self.order
            .iter()
            .copied()
            .filter(|&m| {
                tick(1);
                self.role[m] == ROLE_SECONDARY
            })
            .collect()
    }

    /// Per node (of the cluster): its boot-file peers, nearest first, when it is a
    /// secondary ([`Layout::boot_tree`]); empty otherwise.
    pub fn boot_peers(&self) -> Vec<Vec<usize>> {
        let tree = self.boot_tree();
        let mut out = vec![vec![]; self.up.len()];
        for (k, &s) in tree.iter().enumerate() {
            tick(1);
            out[s] = boot_peer_indexes(k).into_iter().map(|i| tree[i]).collect();
        }
        out
    }

    /// Node `n`'s first [`MAX_CANDIDATES`] upstreams, nearest first (the primary not
    /// included).
    pub fn candidates(&self, n: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut cur = n;
        while out.len() < MAX_CANDIDATES {
            tick(1);
            match self.up.get(cur).copied().flatten() {
                Some(Up::Node(u)) if u != n && !out.contains(&u) => {
                    out.push(u);
                    cur = u;
                }
                _ => break,
            }
        }
        out
    }

    /// Per group: depth (nodes on the longest path from the primary) and the longest
    /// cut-through chain (a run of nodes each feeding only the next: one stall anywhere
    /// in it delays every node below it in the run).
    pub fn depths(&self) -> Vec<(usize, usize)> {
        let mut depth = vec![0usize; self.up.len()];
        let mut run = vec![0usize; self.up.len()];
        let mut out = vec![(0, 0); self.groups.len()];
        // Upstreams come before their downstream in plan order in every shape.
        for &m in &self.order {
            tick(1);
            let (d, r) = match self.up[m] {
                Some(Up::Node(u)) if self.down[u].len() == 1 => (depth[u] + 1, run[u] + 1),
                Some(Up::Node(u)) => (depth[u] + 1, 1),
                _ => (1, 1),
            };
            depth[m] = d;
            run[m] = r;
            let g = &mut out[self.in_group[m]];
            *g = (g.0.max(d), g.1.max(r));
        }
        out
    }
}

/// What `pxe-builder check` says of a group's plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupShape {
    pub group: String,
    /// The shape used, and `rack_shape` as configured (`auto`, or the same word).
    pub shape: &'static str,
    pub configured: &'static str,
    pub nodes: usize,
    pub racks: usize,
    /// Nodes the primary feeds at full rate ([`primary_streams`]).
    pub streams: usize,
    /// `tree`: racks pulling from the primary, and racks under each rack.
    pub roots: Option<usize>,
    pub fanout: Option<usize>,
    /// Nodes on the longest path from the primary.
    pub depth: usize,
    /// The longest cut-through chain (nodes each feeding only the next).
    pub max_chain: usize,
}

/// Per cloning group: the shape chosen, its depth and its longest chain.
pub fn shapes(c: &Cluster, l: &Layout) -> Vec<GroupShape> {
    l.groups
        .iter()
        .zip(l.depths())
        .map(|(gl, (depth, max_chain))| {
            let tree = gl.shape == RackShape::Tree;
            GroupShape {
                group: c.groups[gl.group].name.clone(),
                shape: gl.shape.word(),
                configured: c.settings.rack_shape.word(),
                nodes: gl.racks.iter().map(|r| r.members.len()).sum(),
                racks: gl.racks.len(),
                streams: primary_streams(&c.settings.links),
                roots: tree.then_some(gl.roots),
                fanout: tree.then_some(gl.fanout),
                depth,
                max_chain,
            }
        })
        .collect()
}

/// The plan of cluster `c`: one [`GroupPlan`] per group that clones, every active member's
/// [`NodeRole`], and the addresses of the nodes in it.
pub fn clone_plan(c: &Cluster) -> Plan {
    plan_of(c, &layout(c))
}

/// The whole plan document of layout `l`.
pub fn plan_of(c: &Cluster, l: &Layout) -> Plan {
    let name = |n: usize| c.nodes[n].name.clone();
    let mut groups = vec![];
    for gl in &l.groups {
        let g = &c.groups[gl.group];
        let entities: Vec<EntityPlan> = gl
            .racks
            .iter()
            .map(|r| {
                tick(r.members.len());
                EntityPlan {
                    entity: c.entities[r.entity].name.clone(),
                    secondary: name(r.members[0]),
                    secondary_chosen: r.chosen.into(),
                    members: r.members.iter().map(|&m| name(m)).collect(),
                }
            })
            .collect();
        groups.push(GroupPlan {
            group: g.name.clone(),
            image: g.image.clone(),
            pipeline: entities.iter().map(|e| e.secondary.clone()).collect(),
            entities,
        });
    }
    let mut nodes = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    for &m in &l.order {
        tick(1);
        let gl = &l.groups[l.in_group[m]];
        let upstream = match l.up[m] {
            Some(Up::Node(u)) => name(u),
            _ => PRIMARY.to_string(),
        };
        nodes.insert(
            name(m),
            NodeRole {
                group: c.groups[gl.group].name.clone(),
                entity: c.entities[c.nodes[m].entity].name.clone(),
                role: l.role[m].into(),
                upstream,
                downstream: l.down[m].iter().map(|&d| name(d)).collect(),
            },
        );
        addresses.insert(name(m), c.nodes[m].ip.to_string());
    }
    Plan {
        version: VERSION,
        primary: c.settings.image_server.clone(),
        relay_port: c.settings.relay_port,
        addresses,
        groups,
        nodes,
        boot_window_s: c.settings.boot_window_s,
    }
}

/// Every planned node's own bounded plan (`etc/plan/<node>.json`), in plan order.
pub fn node_plans(c: &Cluster, l: &Layout) -> Vec<NodePlan> {
    let candidate = |u: usize| Candidate {
        node: c.nodes[u].name.clone(),
        address: c.nodes[u].ip.to_string(),
    };
    let mut boot_peers = l.boot_peers();
    l.order
        .iter()
        .map(|&m| {
            let g = &c.groups[l.groups[l.in_group[m]].group];
            NodePlan {
                version: VERSION,
                node: c.nodes[m].name.clone(),
                group: g.name.clone(),
                image: g.image.clone(),
                entity: c.entities[c.nodes[m].entity].name.clone(),
                role: l.role[m].into(),
                upstreams: l.candidates(m).into_iter().map(candidate).collect(),
                downstream: l.down[m].len(),
                relay_port: c.settings.relay_port,
                // An entity's secondary serves the boot files to its rack (docs/BOOT.md).
                boot_files: l.role[m] == ROLE_SECONDARY,
                boot_window_s: c.settings.boot_window_s,
                // ... taken from peer secondaries first (netboot_proto::plan).
                boot_peers: std::mem::take(&mut boot_peers[m])
                    .into_iter()
                    .map(candidate)
                    .collect(),
            }
        })
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
        for shape in ["serial", "chain", "fanout", "tree", "auto"] {
            let c = cluster(shape, &racks_of_8());
            let l = layout(&c);
            let p = plan_of(&c, &l);
            let own: BTreeMap<String, NodePlan> = node_plans(&c, &l)
                .into_iter()
                .map(|np| (np.node.clone(), np))
                .collect();
            assert_eq!(own.len(), 64, "{shape}");
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
                // The nearest MAX_CANDIDATES of the chain, then the primary.
                let names: Vec<&str> = r.upstreams.iter().map(|(n, _)| n.as_str()).collect();
                let k = (chain.len() - 1).min(MAX_CANDIDATES);
                assert_eq!(names, chain[..k], "{shape} {name}");
                // The node's own plan file gives the same route, through JSON.
                let text = serde_json::to_string(&own[name]).unwrap();
                let np = NodePlan::from_json(text.as_bytes()).unwrap();
                assert_eq!(np.route(name).unwrap(), r, "{shape} {name}");
                for (n, ip) in &r.upstreams {
                    assert_eq!(p.addresses[n], ip.to_string());
                }
            }
        }
    }

    #[test]
    fn secondaries_take_the_boot_files_from_a_bounded_acyclic_tree_of_peers() {
        let c = crate::model::parse_in_memory(&generated(20_000, "auto"), "big.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        let l = layout(&c);
        let p = plan_of(&c, &l);
        let plans: BTreeMap<String, NodePlan> = node_plans(&c, &l)
            .into_iter()
            .map(|np| (np.node.clone(), np))
            .collect();
        let secondaries = plans.values().filter(|np| np.boot_files).count();
        assert!(secondaries > 80, "{secondaries} secondaries");
        let mut roots = 0;
        for np in plans.values() {
            if !np.boot_files {
                assert!(np.boot_peers.is_empty(), "{}", np.node);
                continue;
            }
            assert!(np.boot_peers.len() <= MAX_CANDIDATES, "{}", np.node);
            roots += usize::from(np.boot_peers.is_empty());
            // Each peer is a secondary; walking the nearest peers reaches the root (whose
            // list is empty: the primary) without passing a node twice.
            let mut seen = vec![np.node.as_str()];
            let mut cur = np;
            while let Some(up) = cur.boot_peers.first() {
                assert!(!seen.contains(&up.node.as_str()), "{} loops", np.node);
                seen.push(&up.node);
                cur = &plans[&up.node];
                assert!(cur.boot_files, "{} is no secondary", up.node);
            }
            // The whole plan gives the same list.
            let r = p.route(&np.node).unwrap().unwrap();
            let names: Vec<&str> = r.boot_peers.iter().map(|(n, _)| n.as_str()).collect();
            let own: Vec<&str> = np.boot_peers.iter().map(|c| c.node.as_str()).collect();
            assert_eq!(names, own, "{}", np.node);
        }
        assert_eq!(roots, 1, "one secondary takes them from the primary");
    }

    /// A generated cluster like `bench/pxe-builder.sh`'s: `nodes` nodes, 250 per /24
    /// entity, 4 groups (every 50th node boots another rack's), a vSMP group of 8 boards.
    fn generated(nodes: usize, shape: &str) -> String {
        let mut t = format!("[cluster]\nname = \"big\"\nimage_server = \"http://10.255.0.1:8080\"\nserver_ip = \"10.255.0.1\"\nkernel = \"k\"\ninitrd = \"i\"\nvsmp_loader = \"v\"\nrack_shape = \"{shape}\"\n");
        for g in 0..4 {
            t.push_str(&format!("[[group]]\nname = \"g{g}\"\n"));
        }
        t.push_str("[[group]]\nname = \"vSMP_0\"\nactive = [\"n7\", \"n3\", \"n260\", \"n1\", \"n520\", \"n2\", \"n9\", \"n11\"]\n");
        let racks = nodes.div_ceil(250);
        for e in 0..racks {
            let (a, b) = (e / 256, e % 256);
            t.push_str(&format!("[[entity]]\nname = \"rack{e}\"\nsubnet = \"10.{a}.{b}.0/24\"\ngateway = \"10.{a}.{b}.254\"\ndefault_group = \"g{}\"\n", e % 4));
        }
        for n in 0..nodes {
            let (e, h) = (n / 250, n % 250 + 1);
            let (a, b) = (e / 256, e % 256);
            let g = match n {
                1 | 2 | 3 | 7 | 9 | 11 | 260 | 520 => "vSMP_0".to_string(),
                n if n % 50 == 0 => format!("g{}", (e + 1) % 4),
                _ => format!("g{}", e % 4),
            };
            t.push_str(&format!("[[node]]\nname = \"n{n}\"\nmac = \"52:54:00:{:02x}:{:02x}:{:02x}\"\nip = \"10.{a}.{b}.{h}\"\nentity = \"rack{e}\"\ngroups = [\"{g}\"]\n", n >> 16 & 255, n >> 8 & 255, n & 255));
        }
        t
    }

    /// The steps (`crate::work`) of checking and rendering a generated cluster.
    fn steps(nodes: usize, shape: &str) -> u64 {
        let text = generated(nodes, shape);
        crate::work::take();
        let c = crate::model::parse_in_memory(&text, "big.toml").unwrap_or_else(|e| panic!("{e}"));
        let t = crate::tree::render(&c).unwrap();
        assert_eq!(c.nodes.len(), nodes);
        assert!(
            t.files.len() > nodes,
            "every planned node has its plan file"
        );
        crate::work::take()
    }

    #[test]
    fn work_grows_linearly_with_the_nodes() {
        // Issue 13: a search of the node list per node made 100 000 nodes take 18 s.
        // Every loop of check and build counts its steps; doubling the nodes must about
        // double them (a quadratic step would quadruple its share), and a node must cost
        // a bounded number of steps, in each shape.
        for shape in ["auto", "serial", "tree", "fanout"] {
            let (a, b) = (steps(10_000, shape), steps(20_000, shape));
            let ratio = b as f64 / a as f64;
            assert!(
                (1.9..=2.1).contains(&ratio),
                "{shape}: {a} steps for 10 000 nodes, {b} for 20 000 (× {ratio:.3})"
            );
            assert!(b < 40 * 20_000, "{shape}: {b} steps for 20 000 nodes");
        }
    }

    #[test]
    fn auto_is_serial_for_a_small_group_and_a_bounded_tree_for_a_large_one() {
        let c = crate::model::parse_in_memory(&generated(8000, "auto"), "big.toml").unwrap();
        let l = layout(&c);
        let s = shapes(&c, &l);
        // 8000 nodes in 32 racks, 4 groups of about 2000 in 16 racks each (every 50th
        // node boots the next rack's group): trees; the vSMP group clones not.
        assert_eq!(s.len(), 4);
        for g in &s {
            assert_eq!((g.shape, g.configured), ("tree", "auto"), "{g:?}");
            assert_eq!((g.roots, g.fanout), (Some(10), Some(2)), "{g:?}");
            // 10 racks from the primary (100 G / 10 G), the other 6 under them, at their
            // first or second node: a rack's chain of up to 250, plus at most two.
            assert!(g.depth <= 250 + 2 && g.max_chain <= 250, "{g:?}");
        }
        // The primary's uplink no faster than a node's: one stream, so serial up to 1024
        // nodes (the netns bench's case), a tree beyond.
        let one = |n| {
            generated(n, "auto").replacen("[[group]]", "primary_uplink_gbps = 10\n[[group]]", 1)
        };
        let c = crate::model::parse_in_memory(&one(2000), "big.toml").unwrap();
        for g in shapes(&c, &layout(&c)) {
            assert_eq!((g.shape, g.streams), ("serial", 1), "{g:?}");
            assert_eq!(g.depth, g.nodes, "{g:?}");
        }
        let c = crate::model::parse_in_memory(&one(8000), "big.toml").unwrap();
        for g in shapes(&c, &layout(&c)) {
            assert_eq!((g.shape, g.roots), ("tree", Some(1)), "{g:?}");
            // One pipeline of 16 rack heads, each rack a chain behind its head.
            assert!(g.depth <= 250 + 15, "{g:?}");
        }
    }

    /// One group over `racks` racks of `per_rack` nodes; 3 racks from the primary (30 G
    /// over 10 G node links) and `tree_fanout = fanout`.
    fn tree_racks(racks: usize, per_rack: usize, fanout: usize) -> String {
        let mut body = String::from("[[group]]\nname = \"compute\"\n");
        for r in 0..racks {
            body.push_str(&format!("[[entity]]\nname = \"rack{r}\"\nsubnet = \"10.{r}.0.0/24\"\ngateway = \"10.{r}.0.254\"\n"));
            for n in 0..per_rack {
                body.push_str(&format!("[[node]]\nname = \"r{r}n{n}\"\nmac = \"52:54:00:00:{r:02x}:{n:02x}\"\nip = \"10.{r}.0.{}\"\nentity = \"rack{r}\"\ngroups = [\"compute\"]\n", n + 1));
            }
        }
        body.replacen(
            "[[group]]",
            &format!("primary_uplink_gbps = 30\ntree_fanout = {fanout}\n[[group]]"),
            1,
        )
    }

    #[test]
    fn a_tree_over_racks_smaller_than_its_fanout_still_feeds_each_node_at_most_two() {
        // Review: racks of one node with tree_fanout = 4 hung every child rack of a parent
        // on its only node (it fed up to four racks, each at a quarter of its link).
        let c = cluster("tree", &tree_racks(30, 1, 4));
        let p = clone_plan(&c);
        for (n, role) in &p.nodes {
            assert!(
                role.downstream.len() <= 2,
                "{n} feeds {:?}",
                role.downstream
            );
        }
        assert_eq!(shapes(&c, &layout(&c))[0].fanout, Some(1));
    }

    #[test]
    fn tree_feeds_each_node_at_most_two_and_hangs_racks_under_early_members() {
        // 40 racks of 10 in one group; links: primary 30 G / node 10 G = 3 racks from the
        // primary; fan-out 2.
        let c = cluster("tree", &tree_racks(40, 10, 2));
        let p = clone_plan(&c);
        for r in 0..3 {
            assert_eq!(p.nodes[&format!("r{r}n0")].upstream, PRIMARY);
        }
        // Rack k >= 3 hangs under rack (k-3)/2, at its member (k-3)%2.
        assert_eq!(p.nodes["r3n0"].upstream, "r0n0");
        assert_eq!(p.nodes["r4n0"].upstream, "r0n1");
        assert_eq!(p.nodes["r39n0"].upstream, "r18n0");
        assert_eq!(p.nodes["r0n1"].downstream, ["r0n2", "r4n0"]);
        assert_eq!(p.nodes["r4n0"].role, "secondary");
        for (n, role) in &p.nodes {
            assert!(
                role.downstream.len() <= 2,
                "{n} feeds {:?}",
                role.downstream
            );
        }
        // Depth: a rack's chain plus at most two positions per level.
        let s = shapes(&c, &layout(&c));
        assert_eq!((s[0].roots, s[0].fanout), (Some(3), Some(2)));
        assert!(s[0].depth <= 10 + 2 * 5, "{:?}", s[0]);
        // Every node's own plan: at most 8 candidates, nearest first.
        let own = node_plans(&c, &layout(&c));
        let last = own.iter().find(|np| np.node == "r39n9").unwrap();
        let names: Vec<&str> = last.upstreams.iter().map(|u| u.node.as_str()).collect();
        assert_eq!(
            names,
            ["r39n8", "r39n7", "r39n6", "r39n5", "r39n4", "r39n3", "r39n2", "r39n1"]
        );
        let head = own.iter().find(|np| np.node == "r39n0").unwrap();
        let names: Vec<&str> = head.upstreams.iter().map(|u| u.node.as_str()).collect();
        assert_eq!(names, ["r18n0", "r7n1", "r7n0", "r2n0"]);
    }
}
