//! The clone plan (`clone-plan.json`): for every disk-based group, per entity the elected
//! secondary, the pipeline order of the secondaries, and each node's upstream (who it
//! pulls from first) and downstream (who pulls from it). `pxe-builder build` writes it
//! ([`Plan`] serialised with `serde_json::to_string_pretty`); node agents read their
//! route from it ([`Plan::route`]) and `imgtool serve` the nodes' addresses (who may
//! report for a node).
//!
//! Beside it, each node's own bounded part ([`NodePlan`], `etc/plan/<node>.json`): its
//! first [`MAX_CANDIDATES`] upstreams with their addresses, its downstream count and the
//! relay port — what a node needs, a few hundred bytes, where the whole plan of 100 000
//! nodes is tens of MB (and every node fetching it a boot storm on the primary).
//!
//! A plan read by a node came over the network, so reading it is bounded: fields left out
//! take their defaults and unknown fields are ignored (as the untyped reader did), but a
//! field of the wrong type refuses the plan; the upstream walk stops at [`MAX_CHAIN`] hops
//! and never passes a node twice ([`PlanError`]); a node's route takes at most
//! [`MAX_CANDIDATES`] upstreams (then the primary); the names and addresses a route uses
//! are checked (they become console lines and URLs).

use crate::names::{self, Kind};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The plan's file name (a reserved image name, so it lives in [`crate::names`]).
pub use crate::names::PLAN_FILE as FILE;

/// The version pxe-builder writes.
pub const VERSION: u32 = 1;

/// The image server, as named in upstream chains (a reserved node name).
pub use crate::names::PRIMARY;

/// Relay port when the plan names none (pxe-builder's default `relay_port`).
pub const DEFAULT_RELAY_PORT: u16 = 8180;

/// Upstream hops followed at most before the primary: far more nodes than a cluster
/// description lists in one chain, and each hop is a fallback the node may try.
pub const MAX_CHAIN: usize = 4096;

/// Upstreams a node's route holds at most, nearest first; after them it pulls from the
/// primary. A node fails over to the next one only when its current upstream stopped
/// (dead, or not booted within the grace), so eight in a row failing is already far
/// beyond a 1 % failure rate (1e-16), and walking further is only time lost.
pub const MAX_CANDIDATES: usize = 8;

/// Peer secondaries a secondary's node plan lists at most to take the boot files from
/// before the primary ([`NodePlan::boot_peers`], [`boot_peer_indexes`]): its ancestors in
/// the boot-file tree, nearest first. A binary tree of 8 levels holds 511 secondaries; in
/// a larger one the root's nearest descendants are skipped and the primary follows the
/// eighth ancestor, which only costs a copy when all eight failed.
pub const MAX_BOOT_PEERS: usize = MAX_CANDIDATES;

/// The boot-file tree over the entities' secondaries in plan order (groups in order, their
/// entities in order; [`ROLE_SECONDARY`] nodes only): secondary `k` takes the boot files
/// from secondary `(k - 1) / 2` first, then from that one's parent, … the root (`0`),
/// then the primary. The indexes of `k`'s peers, nearest first, at most
/// [`MAX_BOOT_PEERS`]; none for the root.
///
/// Why a binary tree: a secondary holds the whole files before it serves them (each is
/// checked against the manifest first), so the rounds count, not the chain's links: a
/// tree of R secondaries takes about log2(R) rounds, a chain R. Each secondary sends at
/// most two peers a copy besides its own rack; a wider tree would take fewer rounds
/// but load each secondary's link with more peers while its rack boots from it too.
pub fn boot_peer_indexes(k: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut cur = k;
    while cur > 0 && out.len() < MAX_BOOT_PEERS {
        cur = (cur - 1) / 2;
        out.push(cur);
    }
    out
}

/// The cluster's boot window when cluster.toml gives none (`[cluster] boot_window_s`):
/// nodes are expected to power on within this many seconds of each other.
pub const DEFAULT_BOOT_WINDOW_S: u64 = 30;

/// The longest boot window a plan may give (an hour): a node waits about this long for an
/// upstream that has never answered before it pulls from the next one, so a larger value
/// (a typo, a hostile plan) would park nodes for hours.
pub const MAX_BOOT_WINDOW_S: u64 = 3600;

/// The directory of the node plans in the boot tree (`etc/plan/<node>.json`, served by
/// `imgtool serve` with the rest of `etc/`). Keyed by node name, as the plan is: a node
/// knows its name on every path (`netboot.node=`, bootopts, `clone --node`), and node
/// names are safe file names (a letter, then `[A-Za-z0-9._-]`, no `..`).
pub const NODE_PLAN_DIR: &str = "etc/plan";

/// The most a node reads of its node plan: eight candidates of 63-byte names and their
/// addresses are under 2 KiB.
pub const MAX_NODE_PLAN_BYTES: u64 = 64 * 1024;

/// [`NodeRole::role`] of an entity's secondary (it pulls from another entity).
pub const ROLE_SECONDARY: &str = "secondary";
/// [`NodeRole::role`] of a node of a rack chain that feeds the next.
pub const ROLE_RELAY: &str = "relay";
/// [`NodeRole::role`] of a node nobody pulls from.
pub const ROLE_LEAF: &str = "leaf";

/// [`EntityPlan::secondary_chosen`]: the entity's `secondary` setting.
pub const CHOSEN_CONFIGURED: &str = "configured";
/// [`EntityPlan::secondary_chosen`]: the first active member of the group in the entity.
pub const CHOSEN_ELECTED: &str = "elected";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Plan {
    pub version: u32,
    pub primary: String,
    /// Port on which relaying nodes serve the image (1-65535; missing or `null`:
    /// [`DEFAULT_RELAY_PORT`]).
    #[serde(deserialize_with = "relay_port")]
    pub relay_port: u16,
    /// Address of every node that appears in the plan.
    pub addresses: BTreeMap<String, String>,
    pub groups: Vec<GroupPlan>,
    /// Per node name: its role in the plan of its active group.
    pub nodes: BTreeMap<String, NodeRole>,
    /// The cluster's boot window in seconds (0 to [`MAX_BOOT_WINDOW_S`]; missing or
    /// `null`: [`DEFAULT_BOOT_WINDOW_S`]). A node waits this long (plus a margin) for an
    /// upstream that has never answered, as it may simply boot later.
    #[serde(deserialize_with = "boot_window_s")]
    pub boot_window_s: u64,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            version: VERSION,
            primary: String::new(),
            relay_port: DEFAULT_RELAY_PORT,
            addresses: BTreeMap::new(),
            groups: vec![],
            nodes: BTreeMap::new(),
            boot_window_s: DEFAULT_BOOT_WINDOW_S,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GroupPlan {
    pub group: String,
    pub image: String,
    /// Secondaries in pipeline order.
    pub pipeline: Vec<String>,
    pub entities: Vec<EntityPlan>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EntityPlan {
    pub entity: String,
    pub secondary: String,
    /// [`CHOSEN_CONFIGURED`] or [`CHOSEN_ELECTED`].
    pub secondary_chosen: String,
    /// Active members of the group in this entity, secondary first.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NodeRole {
    pub group: String,
    pub entity: String,
    /// [`ROLE_SECONDARY`], [`ROLE_RELAY`] or [`ROLE_LEAF`] (informative: the agent goes
    /// by `upstream` and `downstream`).
    pub role: String,
    /// Whom to pull from first: a node name, or [`PRIMARY`] (empty or missing: the
    /// primary too). The fallback chain is this node's upstream, then *its* upstream, …
    /// ending with `primary` ([`Plan::chain`]); it is stored as links because written out
    /// per node it would grow with nodes × entities (20 million names for 100 000 nodes
    /// in 400 racks).
    #[serde(deserialize_with = "null_is_default")]
    pub upstream: String,
    /// Nodes that pull from this one first.
    #[serde(deserialize_with = "null_is_default")]
    pub downstream: Vec<String>,
}

/// A `null` where a node's `upstream` or `downstream` belongs reads as the field's
/// default (the primary; no downstream), as the untyped reader before this crate took
/// it: a plan tool that writes `null` for "none" must not stop every node of the cluster.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `relay_port`: a port, with the old reader's message for anything else.
fn relay_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(DEFAULT_RELAY_PORT);
    }
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| serde::de::Error::custom(format!("relay_port {v} is not a port (1-65535)")))
}

fn boot_window_s<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(DEFAULT_BOOT_WINDOW_S);
    }
    v.as_u64()
        .filter(|s| *s <= MAX_BOOT_WINDOW_S)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "boot_window_s {v} is not 0 to {MAX_BOOT_WINDOW_S} seconds"
            ))
        })
}

/// Why a plan, or a node's route in it, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("not a clone plan")]
    Json(#[from] serde_json::Error),
    #[error("the upstream chain of node {node} loops (node {at} names {again} again)")]
    Loop {
        node: String,
        at: String,
        again: String,
    },
    #[error("the upstream chain of node {node} is longer than {MAX_CHAIN} nodes")]
    TooLong { node: String },
    #[error("upstream of node {node}: {message}")]
    Name { node: String, message: String },
    #[error("no address for node {node}")]
    NoAddress { node: String },
    #[error("address {address:?} of node {node} is not an IPv4 address")]
    BadAddress { node: String, address: String },
    #[error("the node plan is for node {found:?}, not {node}")]
    WrongNode { node: String, found: String },
    #[error("the node plan of {node} lists {count} upstreams; at most {MAX_CANDIDATES} are read")]
    TooManyCandidates { node: String, count: usize },
    #[error("the node plan of {node} lists {again} twice (or itself) as an upstream")]
    Repeated { node: String, again: String },
    #[error(
        "the node plan of {node} lists {count} boot-file peers; at most {MAX_BOOT_PEERS} are read"
    )]
    TooManyBootPeers { node: String, count: usize },
    #[error("the node plan of {node} lists {again} twice (or itself) as a boot-file peer")]
    RepeatedBootPeer { node: String, again: String },
}

/// One upstream candidate of a [`NodePlan`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Candidate {
    pub node: String,
    /// Its IPv4 address (it becomes the relay's URL).
    pub address: String,
}

/// `etc/plan/<node>.json`: one node's part of the plan, bounded ([`MAX_CANDIDATES`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NodePlan {
    pub version: u32,
    pub node: String,
    pub group: String,
    pub image: String,
    pub entity: String,
    /// As [`NodeRole::role`] (informative).
    pub role: String,
    /// Whom to pull from, nearest first: the node's upstream, that one's upstream, … at
    /// most [`MAX_CANDIDATES`]; the primary is not listed (it is always the last).
    pub upstreams: Vec<Candidate>,
    /// How many nodes pull from this one first (the relay holds for them).
    pub downstream: usize,
    #[serde(deserialize_with = "relay_port")]
    pub relay_port: u16,
    /// This node is its entity's secondary: it fetches the tree's boot files
    /// ([`crate::bootfiles`]) once from the primary and serves them to its entity's nodes
    /// on its relay (their iPXE scripts try it first). Missing: `false`.
    pub boot_files: bool,
    /// As [`Plan::boot_window_s`].
    #[serde(deserialize_with = "boot_window_s")]
    pub boot_window_s: u64,
    /// With `boot_files`: the peer secondaries to take the boot files from before the
    /// primary, nearest first ([`boot_peer_indexes`]), at most [`MAX_BOOT_PEERS`].
    /// Missing (a plan written before them) or `null`: none, the primary alone. Not
    /// written when empty (every node but the secondaries: 100 000 node plans).
    #[serde(
        deserialize_with = "null_is_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub boot_peers: Vec<Candidate>,
}

impl Default for NodePlan {
    fn default() -> NodePlan {
        NodePlan {
            version: VERSION,
            node: String::new(),
            group: String::new(),
            image: String::new(),
            entity: String::new(),
            role: String::new(),
            upstreams: vec![],
            downstream: 0,
            relay_port: DEFAULT_RELAY_PORT,
            boot_files: false,
            boot_window_s: DEFAULT_BOOT_WINDOW_S,
            boot_peers: vec![],
        }
    }
}

impl NodePlan {
    /// Where node `node`'s plan lives, relative to the boot tree (or the server).
    pub fn path(node: &str) -> String {
        format!("{NODE_PLAN_DIR}/{node}.json")
    }

    /// Reads a node plan (at most [`MAX_NODE_PLAN_BYTES`] is the caller's to enforce).
    pub fn from_json(text: &[u8]) -> Result<NodePlan, PlanError> {
        Ok(serde_json::from_slice(text)?)
    }

    /// The route this plan gives `node`: the plan must be `node`'s, list at most
    /// [`MAX_CANDIDATES`] upstreams, none twice nor `node` itself, each a node name with
    /// an IPv4 address.
    pub fn route(&self, node: &str) -> Result<Route, PlanError> {
        if self.node != node {
            return Err(PlanError::WrongNode {
                node: node.into(),
                found: self.node.chars().take(64).collect(),
            });
        }
        if self.upstreams.len() > MAX_CANDIDATES {
            return Err(PlanError::TooManyCandidates {
                node: node.into(),
                count: self.upstreams.len(),
            });
        }
        let mut seen = BTreeSet::from([node]);
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        let mut from = node;
        for c in &self.upstreams {
            let ip = checked_upstream(from, &c.node, Some(&c.address))?;
            if !seen.insert(&c.node) {
                return Err(PlanError::Repeated {
                    node: node.into(),
                    again: c.node.clone(),
                });
            }
            upstreams.push((c.node.clone(), ip));
            from = &c.node;
        }
        Ok(Route {
            upstreams,
            relay_port: self.relay_port,
            downstream: self.downstream,
            boot_files: self.boot_files,
            boot_window_s: self.boot_window_s,
            boot_peers: self.checked_boot_peers(node)?,
        })
    }

    /// [`NodePlan::boot_peers`] as a route uses them: at most [`MAX_BOOT_PEERS`], none
    /// twice nor `node` itself, each a node name with an IPv4 address.
    fn checked_boot_peers(&self, node: &str) -> Result<Vec<(String, Ipv4Addr)>, PlanError> {
        if self.boot_peers.len() > MAX_BOOT_PEERS {
            return Err(PlanError::TooManyBootPeers {
                node: node.into(),
                count: self.boot_peers.len(),
            });
        }
        let mut seen = BTreeSet::from([node]);
        let mut out = Vec::with_capacity(self.boot_peers.len());
        for c in &self.boot_peers {
            let ip = checked_upstream(node, &c.node, Some(&c.address))?;
            if !seen.insert(&c.node) {
                return Err(PlanError::RepeatedBootPeer {
                    node: node.into(),
                    again: c.node.clone(),
                });
            }
            out.push((c.node.clone(), ip));
        }
        Ok(out)
    }
}

/// Upstream `up` (named by `from`) as a route may use it: a node name by [`names::name`]
/// (it is printed on the console and in reports), with an IPv4 address.
fn checked_upstream(from: &str, up: &str, address: Option<&String>) -> Result<Ipv4Addr, PlanError> {
    names::name(Kind::Node, up).map_err(|(_, message)| PlanError::Name {
        node: from.into(),
        message,
    })?;
    let address = address.ok_or_else(|| PlanError::NoAddress { node: up.into() })?;
    address.parse().map_err(|_| PlanError::BadAddress {
        node: up.into(),
        address: address.clone(),
    })
}

/// A node's route in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upstream relays, nearest first, with their addresses, at most [`MAX_CANDIDATES`];
    /// the primary is not included.
    pub upstreams: Vec<(String, Ipv4Addr)>,
    /// The port relays serve on (this node's own, when it relays).
    pub relay_port: u16,
    /// How many nodes pull from this one first: a relay holds (before growing its file
    /// systems and rebooting) until that many have fetched every chunk.
    pub downstream: usize,
    /// Serve the tree's boot files to the entity's nodes ([`NodePlan::boot_files`]; from
    /// `clone-plan.json`: the node is an entity's secondary, [`ROLE_SECONDARY`]).
    pub boot_files: bool,
    /// The cluster's boot window ([`Plan::boot_window_s`]), at most [`MAX_BOOT_WINDOW_S`].
    pub boot_window_s: u64,
    /// With `boot_files`: peer secondaries to take the boot files from before the
    /// primary, nearest first, with their addresses ([`boot_peer_indexes`]), at most
    /// [`MAX_BOOT_PEERS`].
    pub boot_peers: Vec<(String, Ipv4Addr)>,
}

impl Plan {
    /// Reads a plan (`clone-plan.json`'s bytes); see the module's rules.
    pub fn from_json(text: &[u8]) -> Result<Plan, PlanError> {
        Ok(serde_json::from_slice(text)?)
    }

    /// The upstreams of `node`, nearest first, without the primary: its upstream, that
    /// one's upstream, … until `primary` (or an empty upstream), or a node the plan does
    /// not list (the last one named). A loop, or more than [`MAX_CHAIN`] hops, is an
    /// error naming the node.
    pub fn upstreams(&self, node: &str) -> Result<Vec<&str>, PlanError> {
        let mut out = vec![];
        let mut seen = BTreeSet::from([node]);
        let mut cur = node;
        while let Some(r) = self.nodes.get(cur) {
            let up = r.upstream.as_str();
            if up.is_empty() || up == PRIMARY {
                break;
            }
            if !seen.insert(up) {
                return Err(PlanError::Loop {
                    node: node.into(),
                    at: cur.into(),
                    again: up.into(),
                });
            }
            if out.len() >= MAX_CHAIN {
                return Err(PlanError::TooLong { node: node.into() });
            }
            out.push(up);
            cur = up;
        }
        Ok(out)
    }

    /// The fallback chain of `node`: its upstream, that one's upstream, … `primary`
    /// ([`Plan::upstreams`], then [`PRIMARY`]). A node the plan does not list pulls from
    /// the primary alone.
    pub fn chain(&self, node: &str) -> Result<Vec<String>, PlanError> {
        let mut out: Vec<String> = self
            .upstreams(node)?
            .into_iter()
            .map(str::to_string)
            .collect();
        out.push(PRIMARY.into());
        Ok(out)
    }

    /// The first [`MAX_CANDIDATES`] upstreams of `node`, nearest first (its
    /// [`Plan::upstreams`] cut there; a loop within them is refused by name, one further
    /// up is never reached).
    pub fn candidates(&self, node: &str) -> Result<Vec<&str>, PlanError> {
        let mut out = vec![];
        let mut seen = BTreeSet::from([node]);
        let mut cur = node;
        while let Some(r) = self.nodes.get(cur) {
            let up = r.upstream.as_str();
            if up.is_empty() || up == PRIMARY || out.len() == MAX_CANDIDATES {
                break;
            }
            if !seen.insert(up) {
                return Err(PlanError::Loop {
                    node: node.into(),
                    at: cur.into(),
                    again: up.into(),
                });
            }
            out.push(up);
            cur = up;
        }
        Ok(out)
    }

    /// `node`'s route: its first [`MAX_CANDIDATES`] upstream relays with their (IPv4)
    /// addresses, nearest first ([`Plan::candidates`]; the primary follows them), and how
    /// many nodes pull from it. `None` when the plan does not list `node` (it then pulls
    /// from the primary). Each upstream's name must be a node name by [`names::name`]: it
    /// is printed on the console and in reports. The same route as the node's
    /// [`NodePlan`] gives.
    pub fn route(&self, node: &str) -> Result<Option<Route>, PlanError> {
        let Some(role) = self.nodes.get(node) else {
            return Ok(None);
        };
        let chain = self.candidates(node)?;
        let mut upstreams = Vec::with_capacity(chain.len());
        let mut from = node;
        for up in chain {
            let ip = checked_upstream(from, up, self.addresses.get(up))?;
            upstreams.push((up.to_string(), ip));
            from = up;
        }
        let boot_files = role.role == ROLE_SECONDARY;
        Ok(Some(Route {
            upstreams,
            relay_port: self.relay_port,
            downstream: role.downstream.len(),
            boot_files,
            boot_window_s: self.boot_window_s,
            boot_peers: if boot_files {
                self.boot_peers(node)?
            } else {
                vec![]
            },
        }))
    }

    /// The entities' secondaries in plan order ([`boot_peer_indexes`]' list): each
    /// entity's `secondary` whose role is [`ROLE_SECONDARY`], once.
    pub fn boot_tree(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.groups
            .iter()
            .flat_map(|g| g.entities.iter().map(|e| e.secondary.as_str()))
            .filter(|s| self.nodes.get(*s).is_some_and(|r| r.role == ROLE_SECONDARY))
            .filter(|s| seen.insert(*s))
            .collect()
    }

    /// Secondary `node`'s boot-file peers with their addresses, nearest first (the same
    /// list its [`NodePlan::boot_peers`] holds); none when it is not in the tree.
    fn boot_peers(&self, node: &str) -> Result<Vec<(String, Ipv4Addr)>, PlanError> {
        let tree = self.boot_tree();
        let Some(k) = tree.iter().position(|s| *s == node) else {
            return Ok(vec![]);
        };
        boot_peer_indexes(k)
            .into_iter()
            .map(|i| {
                let peer = tree[i];
                Ok((
                    peer.to_string(),
                    checked_upstream(node, peer, self.addresses.get(peer))?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(upstream: &str, downstream: &[&str]) -> NodeRole {
        NodeRole {
            group: "compute".into(),
            entity: "r1".into(),
            role: if downstream.is_empty() {
                ROLE_LEAF
            } else {
                ROLE_RELAY
            }
            .into(),
            upstream: upstream.into(),
            downstream: downstream.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `a` ← `b` ← `c` (a pulls from the primary).
    fn abc() -> Plan {
        Plan {
            primary: "http://10.0.0.100:8080".into(),
            relay_port: 8200,
            addresses: [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]
                .into_iter()
                .map(|(n, a)| (n.into(), a.into()))
                .collect(),
            groups: vec![GroupPlan {
                group: "compute".into(),
                image: "compute".into(),
                pipeline: vec!["a".into()],
                entities: vec![EntityPlan {
                    entity: "r1".into(),
                    secondary: "a".into(),
                    secondary_chosen: CHOSEN_ELECTED.into(),
                    members: vec!["a".into(), "b".into(), "c".into()],
                }],
            }],
            nodes: [
                ("a", role(PRIMARY, &["b"])),
                ("b", role("a", &["c"])),
                ("c", role("b", &[])),
            ]
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn a_plan_round_trips_byte_for_byte() {
        let p = abc();
        let text = serde_json::to_string_pretty(&p).unwrap();
        let back = Plan::from_json(text.as_bytes()).unwrap();
        assert_eq!(back, p);
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);
        // The field order pxe-builder has always written.
        let keys: Vec<usize> = [
            "\"version\"",
            "\"primary\"",
            "\"relay_port\"",
            "\"addresses\"",
            "\"groups\"",
            "\"nodes\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn chains_and_routes() {
        let p = abc();
        assert_eq!(p.chain("c").unwrap(), ["b", "a", "primary"]);
        assert_eq!(p.chain("a").unwrap(), ["primary"]);
        assert_eq!(p.chain("zz").unwrap(), ["primary"]);
        let r = p.route("c").unwrap().unwrap();
        assert_eq!(
            r.upstreams,
            [
                ("b".to_string(), Ipv4Addr::new(10, 0, 0, 2)),
                ("a".to_string(), Ipv4Addr::new(10, 0, 0, 1))
            ]
        );
        assert_eq!((r.relay_port, r.downstream), (8200, 0));
        let r = p.route("a").unwrap().unwrap();
        assert!(r.upstreams.is_empty());
        assert_eq!(r.downstream, 1, "issue 11: a relay knows its downstream");
        assert!(p.route("zz").unwrap().is_none());
    }

    #[test]
    fn a_null_upstream_or_downstream_reads_as_none() {
        let text = br#"{"addresses": {"a": "10.0.0.1"},
            "nodes": {"a": {"upstream": null, "downstream": null},
                      "b": {"upstream": "a", "downstream": null}}}"#;
        let p = Plan::from_json(text).unwrap();
        assert_eq!(p.chain("a").unwrap(), ["primary"]);
        assert_eq!(p.chain("b").unwrap(), ["a", "primary"]);
        let r = p.route("a").unwrap().unwrap();
        assert!(r.upstreams.is_empty());
        assert_eq!(r.downstream, 0);
    }

    #[test]
    fn a_loop_ends_with_an_error_naming_it() {
        let mut p = abc();
        p.nodes.get_mut("a").unwrap().upstream = "c".into();
        let e = p.chain("c").unwrap_err().to_string();
        assert_eq!(
            e,
            "the upstream chain of node c loops (node a names c again)"
        );
        let e = p.route("b").unwrap_err().to_string();
        assert!(e.contains("loops (node c names b again)"), "{e}");
        // A node naming itself.
        p.nodes.get_mut("a").unwrap().upstream = "a".into();
        let e = p.chain("a").unwrap_err().to_string();
        assert!(e.contains("node a names a again"), "{e}");
    }

    #[test]
    fn a_missing_upstream_ends_the_chain_there() {
        // `b` names `x`, which the plan does not list: the chain is x, then the primary.
        let mut p = abc();
        p.nodes.get_mut("b").unwrap().upstream = "x".into();
        assert_eq!(p.chain("c").unwrap(), ["b", "x", "primary"]);
        // Without an address the route is refused, naming the node.
        let e = p.route("c").unwrap_err().to_string();
        assert_eq!(e, "no address for node x");
        p.addresses.insert("x".into(), "10.0.0.9".into());
        assert_eq!(p.route("c").unwrap().unwrap().upstreams.len(), 2);
        // An empty or missing upstream is the primary.
        let p = Plan::from_json(
            br#"{"nodes": {"a": {}, "b": {"upstream": "a"}}, "addresses": {"a": "10.0.0.1"}}"#,
        )
        .unwrap();
        assert_eq!(p.chain("b").unwrap(), ["a", "primary"]);
        assert_eq!(p.relay_port, DEFAULT_RELAY_PORT);
    }

    #[test]
    fn a_chain_longer_than_the_bound_is_refused() {
        let mut p = Plan::default();
        for i in 0..=MAX_CHAIN + 1 {
            p.nodes
                .insert(format!("n{i}"), role(&format!("n{}", i + 1), &[]));
        }
        let e = p.chain("n0").unwrap_err().to_string();
        assert!(e.contains(&format!("longer than {MAX_CHAIN} nodes")), "{e}");
        // One hop shorter is fine.
        p.nodes.get_mut(&format!("n{MAX_CHAIN}")).unwrap().upstream = PRIMARY.into();
        assert_eq!(p.chain("n0").unwrap().len(), MAX_CHAIN + 1);
    }

    #[test]
    fn hostile_plans_are_refused_by_name() {
        let e = Plan::from_json(b"{").unwrap_err().to_string();
        assert!(e.starts_with("not a clone plan"), "{e}");
        for (port, ok) in [
            ("null", Some(DEFAULT_RELAY_PORT)),
            ("1", Some(1)),
            ("65535", Some(65535)),
            ("0", None),
            ("65536", None),
            ("-1", None),
            ("1.5", None),
            ("\"8180\"", None),
            ("1099511627776", None),
        ] {
            let text = format!(r#"{{"relay_port": {port}}}"#);
            match (Plan::from_json(text.as_bytes()), ok) {
                (Ok(p), Some(want)) => assert_eq!(p.relay_port, want, "{port}"),
                (Err(e), None) => {
                    // The message is the context; the JSON parser's reason is the source.
                    let e = format!("{e}: {}", std::error::Error::source(&e).unwrap());
                    assert!(
                        e.contains(&format!("relay_port {port} is not a port")),
                        "{e}"
                    )
                }
                (r, _) => panic!("relay_port {port}: {r:?}"),
            }
        }
        // Unknown fields are ignored; fields of the wrong type refuse the plan.
        assert!(Plan::from_json(br#"{"future": [1, 2], "nodes": {}}"#).is_ok());
        for bad in [
            r#"{"nodes": []}"#,
            r#"{"nodes": {"a": {"upstream": 5}}}"#,
            r#"{"nodes": {"a": {"downstream": [1]}}}"#,
            r#"{"addresses": {"a": 1}}"#,
            r#"{"version": -1}"#,
        ] {
            assert!(Plan::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
        // Names and addresses on the route are checked before they are used.
        let mut p = abc();
        p.addresses
            .insert("b".into(), "10.0.0.2@evil.example/x?".into());
        let e = p.route("c").unwrap_err().to_string();
        assert!(e.contains("of node b is not an IPv4 address"), "{e}");
        let mut p = abc();
        p.nodes.get_mut("c").unwrap().upstream = "x\u{1b}[2Jy".into();
        p.nodes.insert("x\u{1b}[2Jy".into(), role(PRIMARY, &[]));
        let e = p.route("c").unwrap_err().to_string();
        assert!(e.starts_with("upstream of node c:"), "{e}");
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }

    /// `n0` ← `n1` ← … ← `n{len-1}`, `n0` pulling from the primary, each with an address.
    fn line_of(len: usize) -> Plan {
        let mut p = Plan::default();
        for i in 0..len {
            let up = if i == 0 {
                PRIMARY.to_string()
            } else {
                format!("n{}", i - 1)
            };
            p.nodes.insert(format!("n{i}"), role(&up, &[]));
            p.addresses
                .insert(format!("n{i}"), format!("10.0.{}.{}", i / 200, i % 200 + 1));
        }
        p
    }

    #[test]
    fn a_route_holds_at_most_max_candidates_upstreams_however_deep_the_node() {
        // 100 000 nodes in one serial chain: the whole chain was walked (and refused
        // beyond 4096 hops); now a node takes its nearest eight, then the primary.
        let p = line_of(6000);
        let r = p.route("n5999").unwrap().unwrap();
        let names: Vec<&str> = r.upstreams.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["n5998", "n5997", "n5996", "n5995", "n5994", "n5993", "n5992", "n5991"]
        );
        assert_eq!(p.candidates("n3").unwrap(), ["n2", "n1", "n0"]);
        assert!(p.chain("n5999").is_err(), "the whole walk keeps its bound");
        // A loop within the candidates is still refused by name.
        let mut p = line_of(4);
        p.nodes.get_mut("n0").unwrap().upstream = "n2".into();
        let e = p.route("n2").unwrap_err().to_string();
        assert!(e.contains("loops (node n0 names n2 again)"), "{e}");
    }

    fn node_plan(upstreams: &[(&str, &str)]) -> NodePlan {
        NodePlan {
            node: "c".into(),
            group: "compute".into(),
            image: "compute".into(),
            entity: "r1".into(),
            role: ROLE_LEAF.into(),
            upstreams: upstreams
                .iter()
                .map(|(n, a)| Candidate {
                    node: n.to_string(),
                    address: a.to_string(),
                })
                .collect(),
            downstream: 2,
            relay_port: 8200,
            boot_window_s: 45,
            ..NodePlan::default()
        }
    }

    #[test]
    fn a_node_plan_round_trips_and_gives_the_route_the_whole_plan_gives() {
        let np = node_plan(&[("b", "10.0.0.2"), ("a", "10.0.0.1")]);
        let text = serde_json::to_string_pretty(&np).unwrap();
        let back = NodePlan::from_json(text.as_bytes()).unwrap();
        assert_eq!(back, np);
        let r = back.route("c").unwrap();
        assert_eq!(r.upstreams, abc().route("c").unwrap().unwrap().upstreams);
        assert_eq!((r.relay_port, r.downstream), (8200, 2));
        assert_eq!(NodePlan::path("c"), "etc/plan/c.json");
        // Fields left out take their defaults, as in the whole plan.
        let r = NodePlan::from_json(br#"{"node": "c"}"#)
            .unwrap()
            .route("c")
            .unwrap();
        assert!(r.upstreams.is_empty());
        assert_eq!((r.relay_port, r.downstream), (DEFAULT_RELAY_PORT, 0));
        assert_eq!(r.boot_window_s, DEFAULT_BOOT_WINDOW_S);
    }

    #[test]
    fn the_boot_window_is_carried_and_bounded() {
        let r = node_plan(&[]).route("c").unwrap();
        assert_eq!(r.boot_window_s, 45);
        let np = |w: &str| {
            NodePlan::from_json(format!(r#"{{"node": "c", "boot_window_s": {w}}}"#).as_bytes())
        };
        assert_eq!(np("0").unwrap().boot_window_s, 0);
        assert_eq!(np("null").unwrap().boot_window_s, DEFAULT_BOOT_WINDOW_S);
        assert_eq!(np("3600").unwrap().boot_window_s, MAX_BOOT_WINDOW_S);
        for bad in ["3601", "-1", "1.5", "\"30\"", "18446744073709551616"] {
            let e = np(bad).unwrap_err();
            assert!(matches!(e, PlanError::Json(_)), "{bad}: {e:?}");
        }
        let Err(PlanError::Json(e)) = np("99999") else {
            panic!("an hour and more taken")
        };
        let e = e.to_string();
        assert!(
            e.contains("boot_window_s 99999 is not 0 to 3600 seconds"),
            "{e}"
        );
        // The whole plan carries it too (trees written before node plans).
        let mut p = abc();
        p.boot_window_s = 120;
        let back = Plan::from_json(serde_json::to_string(&p).unwrap().as_bytes()).unwrap();
        assert_eq!(back.route("c").unwrap().unwrap().boot_window_s, 120);
        assert_eq!(
            abc().route("c").unwrap().unwrap().boot_window_s,
            DEFAULT_BOOT_WINDOW_S
        );
    }

    #[test]
    fn hostile_node_plans_are_refused_by_name() {
        let e = node_plan(&[]).route("d").unwrap_err().to_string();
        assert_eq!(e, "the node plan is for node \"c\", not d");
        let nine: Vec<(String, String)> = (0..9)
            .map(|i| (format!("u{i}"), format!("10.0.1.{i}")))
            .collect();
        let nine: Vec<(&str, &str)> = nine.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
        let e = node_plan(&nine).route("c").unwrap_err().to_string();
        assert!(e.contains("lists 9 upstreams; at most 8"), "{e}");
        assert!(node_plan(&nine[..8]).route("c").is_ok());
        for bad in [
            &[("b", "10.0.0.2"), ("b", "10.0.0.2")][..],
            &[("c", "10.0.0.3")][..],
        ] {
            let e = node_plan(bad).route("c").unwrap_err().to_string();
            assert!(e.contains("twice (or itself)"), "{e}");
        }
        let e = node_plan(&[("b", "10.0.0.2@evil.example/x?")])
            .route("c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("of node b is not an IPv4 address"), "{e}");
        let e = node_plan(&[("x\u{1b}[2Jy", "10.0.0.2")])
            .route("c")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("upstream of node c:") && !e.chars().any(char::is_control));
        for bad in [
            r#"{"upstreams": {}}"#,
            r#"{"upstreams": [{"node": 1}]}"#,
            r#"{"downstream": -1}"#,
            r#"{"relay_port": 0}"#,
        ] {
            assert!(NodePlan::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_boot_file_tree_is_bounded_acyclic_and_ends_at_the_primary() {
        assert!(
            boot_peer_indexes(0).is_empty(),
            "the root takes them from the primary"
        );
        assert_eq!(boot_peer_indexes(1), [0]);
        assert_eq!(boot_peer_indexes(2), [0]);
        assert_eq!(boot_peer_indexes(3), [1, 0]);
        assert_eq!(boot_peer_indexes(6), [2, 0]);
        for k in 0..5000 {
            let peers = boot_peer_indexes(k);
            assert!(peers.len() <= MAX_BOOT_PEERS, "{k}: {peers:?}");
            // Every peer comes earlier (no cycle), nearest first, none twice.
            assert!(peers.iter().all(|&p| p < k), "{k}: {peers:?}");
            assert!(peers.windows(2).all(|w| w[1] < w[0]), "{k}: {peers:?}");
            // Each secondary is the nearest peer of at most two others.
            if k < 2500 {
                let children = (0..5000)
                    .filter(|&j| boot_peer_indexes(j).first() == Some(&k))
                    .count();
                assert!(children <= 2, "{k} feeds {children}");
            }
        }
        // A deep secondary lists its eight nearest ancestors; the primary follows.
        assert_eq!(boot_peer_indexes(4000).len(), MAX_BOOT_PEERS);
        assert!(boot_peer_indexes(510).ends_with(&[0]));
    }

    /// Four racks of compute (secondaries s0..s3) and a vSMP-like board that is no
    /// secondary.
    fn four_racks() -> Plan {
        let mut p = Plan {
            primary: "http://10.0.0.100:8080".into(),
            ..Plan::default()
        };
        let mut entities = vec![];
        for r in 0..4 {
            let s = format!("s{r}");
            p.addresses.insert(s.clone(), format!("10.0.{r}.1"));
            p.nodes.insert(
                s.clone(),
                NodeRole {
                    role: ROLE_SECONDARY.into(),
                    upstream: if r == 0 {
                        PRIMARY.into()
                    } else {
                        format!("s{}", r - 1)
                    },
                    ..NodeRole::default()
                },
            );
            entities.push(EntityPlan {
                entity: format!("r{r}"),
                secondary: s.clone(),
                members: vec![s],
                ..EntityPlan::default()
            });
        }
        p.groups.push(GroupPlan {
            group: "compute".into(),
            entities,
            ..GroupPlan::default()
        });
        p
    }

    #[test]
    fn the_whole_plan_gives_each_secondary_its_boot_peers() {
        let p = four_racks();
        assert_eq!(p.boot_tree(), ["s0", "s1", "s2", "s3"]);
        let peers = |n: &str| p.route(n).unwrap().unwrap().boot_peers;
        assert!(peers("s0").is_empty());
        assert_eq!(
            peers("s1"),
            [("s0".to_string(), Ipv4Addr::new(10, 0, 0, 1))]
        );
        assert_eq!(
            peers("s3"),
            [
                ("s1".to_string(), Ipv4Addr::new(10, 0, 1, 1)),
                ("s0".to_string(), Ipv4Addr::new(10, 0, 0, 1))
            ]
        );
        // A node that is no secondary has none.
        let mut p = abc();
        assert!(p.route("c").unwrap().unwrap().boot_peers.is_empty());
        p.nodes.get_mut("a").unwrap().role = ROLE_SECONDARY.into();
        assert_eq!(p.boot_tree(), ["a"]);
        // A peer without an address is refused by name.
        let mut p = four_racks();
        p.addresses.remove("s0");
        let e = p.route("s1").unwrap_err().to_string();
        assert_eq!(e, "no address for node s0");
    }

    #[test]
    fn a_node_plans_boot_peers_are_bounded_and_old_plans_still_load() {
        let peer = |n: &str, a: &str| Candidate {
            node: n.into(),
            address: a.into(),
        };
        let with = |peers: Vec<Candidate>| NodePlan {
            boot_files: true,
            boot_peers: peers,
            ..node_plan(&[])
        };
        let np = with(vec![peer("s1", "10.0.1.1"), peer("s0", "10.0.0.1")]);
        let back = NodePlan::from_json(serde_json::to_string(&np).unwrap().as_bytes()).unwrap();
        assert_eq!(back, np);
        assert_eq!(
            back.route("c").unwrap().boot_peers,
            [
                ("s1".to_string(), Ipv4Addr::new(10, 0, 1, 1)),
                ("s0".to_string(), Ipv4Addr::new(10, 0, 0, 1))
            ]
        );
        // A plan written before boot peers (or with null) loads: the primary alone.
        for text in [
            r#"{"node": "c", "boot_files": true}"#,
            r#"{"node": "c", "boot_files": true, "boot_peers": null}"#,
        ] {
            let r = NodePlan::from_json(text.as_bytes())
                .unwrap()
                .route("c")
                .unwrap();
            assert!(r.boot_files && r.boot_peers.is_empty(), "{text}");
        }
        let nine = (0..9)
            .map(|i| peer(&format!("s{i}"), &format!("10.0.{i}.1")))
            .collect();
        let e = with(nine).route("c").unwrap_err().to_string();
        assert!(e.contains("lists 9 boot-file peers; at most 8"), "{e}");
        for bad in [
            vec![peer("s0", "10.0.0.1"), peer("s0", "10.0.0.1")],
            vec![peer("c", "10.0.0.3")],
        ] {
            let e = with(bad).route("c").unwrap_err().to_string();
            assert!(e.contains("twice (or itself) as a boot-file peer"), "{e}");
        }
        let e = with(vec![peer("s0", "10.0.0.1:80/x")])
            .route("c")
            .unwrap_err();
        assert!(e.to_string().contains("not an IPv4 address"), "{e}");
        let e = with(vec![peer("s\n0", "10.0.0.1")]).route("c").unwrap_err();
        assert!(matches!(e, PlanError::Name { .. }), "{e}");
        assert!(NodePlan::from_json(br#"{"boot_peers": [{"node": 1}]}"#).is_err());
    }
}
