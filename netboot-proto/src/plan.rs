//! The clone plan (`clone-plan.json`): for every disk-based group, per entity the elected
//! secondary, the pipeline order of the secondaries, and each node's upstream (who it
//! pulls from first) and downstream (who pulls from it). `pxe-builder build` writes it
//! ([`Plan`] serialised with `serde_json::to_string_pretty`); node agents read their
//! route from it ([`Plan::route`]) and `imgtool serve` the nodes' addresses (who may
//! report for a node).
//!
//! A plan read by a node came over the network, so reading it is bounded: fields left out
//! take their defaults and unknown fields are ignored (as the untyped reader did), but a
//! field of the wrong type refuses the plan; the upstream walk stops at [`MAX_CHAIN`] hops
//! and never passes a node twice ([`PlanError`]); the names and addresses a route uses are
//! checked (they become console lines and URLs).

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
}

/// A node's route in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upstream relays, nearest first, with their addresses; the primary is not included.
    pub upstreams: Vec<(String, Ipv4Addr)>,
    /// The port relays serve on (this node's own, when it relays).
    pub relay_port: u16,
    /// How many nodes pull from this one first: a relay holds (before growing its file
    /// systems and rebooting) until that many have fetched every chunk.
    pub downstream: usize,
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

    /// `node`'s route: its upstream relays with their (IPv4) addresses, nearest first, and
    /// how many nodes pull from it. `None` when the plan does not list `node` (it then
    /// pulls from the primary). Each upstream's name must be a node name by
    /// [`names::name`]: it is printed on the console and in reports.
    pub fn route(&self, node: &str) -> Result<Option<Route>, PlanError> {
        let Some(role) = self.nodes.get(node) else {
            return Ok(None);
        };
        let chain = self.upstreams(node)?;
        let mut upstreams = Vec::with_capacity(chain.len());
        let mut from = node;
        for up in chain {
            names::name(Kind::Node, up).map_err(|(_, message)| PlanError::Name {
                node: from.into(),
                message,
            })?;
            let address = self
                .addresses
                .get(up)
                .ok_or_else(|| PlanError::NoAddress { node: up.into() })?;
            let ip: Ipv4Addr = address.parse().map_err(|_| PlanError::BadAddress {
                node: up.into(),
                address: address.clone(),
            })?;
            upstreams.push((up.to_string(), ip));
            from = up;
        }
        Ok(Some(Route {
            upstreams,
            relay_port: self.relay_port,
            downstream: role.downstream.len(),
        }))
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
}
