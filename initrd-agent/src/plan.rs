//! Reading this node's route from its node plan (`etc/plan/<node>.json`) or, for a tree
//! written before those existed, from the whole clone plan (`clone-plan.json`); both are
//! written by `pxe-builder build` and fetched from the image server: who the node pulls
//! the image from and whether it relays it on. Both are read as the typed documents of
//! `netboot_proto::plan`, with their bounds: at most [`MAX_CANDIDATES`] upstreams (the
//! failover walks those, then the primary — never thousands of hops), never twice
//! through a node, upstream names must be node names, addresses IPv4 addresses (they
//! become URLs), the relay port a port.

use netboot_proto::plan::{NodePlan, Plan, PlanError, Route};
pub use netboot_proto::plan::{DEFAULT_RELAY_PORT, MAX_CANDIDATES, MAX_NODE_PLAN_BYTES};

/// A clone plan this node cannot follow: the URL it came from, with the plan's own error
/// (which node or field, why) as the source; printed as a chain it reads
/// `http://…/clone-plan.json: the upstream chain of node a loops (…)`.
#[derive(Debug, thiserror::Error)]
#[error("{url}")]
pub struct PlanRouteError {
    pub url: String,
    #[source]
    pub err: PlanError,
}

/// This node's place in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRoute {
    /// Upstream relays, nearest first: (node name, `http://ip:port`); the primary is
    /// not included (the caller appends the server it fetched the plan from).
    pub upstreams: Vec<(String, String)>,
    /// The port to relay on, when some node pulls from this one or it serves its
    /// rack's boot files (an entity's secondary, even alone in its rack: its rack and
    /// its children in the boot-file tree take them from there).
    pub relay_port: Option<u16>,
    /// How many nodes the plan has pull from this one: a relay holds (before growing its
    /// file systems and rebooting) until that many have fetched every chunk.
    pub downstream: usize,
    /// Serve the tree's boot files to the entity's nodes (it is the entity's secondary).
    pub boot_files: bool,
    /// The cluster's boot window, seconds (bounded by the plan's reader).
    pub boot_window_s: u64,
    /// With `boot_files`: peer secondaries to take them from first, nearest first:
    /// (node name, `http://ip:port`).
    pub boot_peers: Vec<(String, String)>,
}

/// This node's route in the plan `text` (fetched from `url`); `None` when the plan
/// does not list `node` (it then pulls from the primary). Errors name the URL and
/// the node or field.
pub fn route_from_plan(
    text: &str,
    node: &str,
    url: &str,
) -> Result<Option<PlanRoute>, PlanRouteError> {
    let route = Plan::from_json(text.as_bytes())
        .and_then(|plan| plan.route(node))
        .map_err(|err| PlanRouteError {
            url: url.into(),
            err,
        })?;
    Ok(route.map(plan_route))
}

/// This node's route in its node plan `text` (fetched from `url`): the plan must be
/// `node`'s. Errors name the URL and the node or field.
pub fn route_from_node_plan(
    text: &[u8],
    node: &str,
    url: &str,
) -> Result<PlanRoute, PlanRouteError> {
    NodePlan::from_json(text)
        .and_then(|plan| plan.route(node))
        .map(plan_route)
        .map_err(|err| PlanRouteError {
            url: url.into(),
            err,
        })
}

/// The agent's form of a route: relay URLs, and the port only when it relays or serves
/// boot files.
fn plan_route(r: Route) -> PlanRoute {
    PlanRoute {
        upstreams: r
            .upstreams
            .into_iter()
            .map(|(name, ip)| (name, format!("http://{ip}:{}", r.relay_port)))
            .collect(),
        relay_port: (r.downstream > 0 || r.boot_files).then_some(r.relay_port),
        downstream: r.downstream,
        boot_files: r.boot_files,
        boot_window_s: r.boot_window_s,
        boot_peers: r
            .boot_peers
            .into_iter()
            .map(|(name, ip)| (name, format!("http://{ip}:{}", r.relay_port)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://s/clone-plan.json";

    /// The error as the agent prints it: the URL, then the plan's reason.
    fn shown(e: PlanRouteError) -> String {
        format!("{:#}", anyhow::Error::new(e))
    }

    fn plan(nodes: &str, addresses: &str) -> String {
        format!(r#"{{"relay_port": 8200, "nodes": {{{nodes}}}, "addresses": {{{addresses}}}}}"#)
    }

    #[test]
    fn chain_to_the_primary_and_relaying() {
        let p = plan(
            r#""a": {"upstream": "primary", "downstream": ["b"]},
               "b": {"upstream": "a", "downstream": ["c"]},
               "c": {"upstream": "b", "downstream": []}"#,
            r#""a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3""#,
        );
        let r = route_from_plan(&p, "c", URL).unwrap().unwrap();
        assert_eq!(
            r.upstreams,
            [
                ("b".to_string(), "http://10.0.0.2:8200".to_string()),
                ("a".to_string(), "http://10.0.0.1:8200".to_string())
            ]
        );
        assert_eq!(r.relay_port, None);
        assert_eq!(r.downstream, 0);
        let r = route_from_plan(&p, "a", URL).unwrap().unwrap();
        assert!(r.upstreams.is_empty());
        assert_eq!(r.relay_port, Some(8200));
        // Issue 11: the relay's wait for its planned downstream was never used.
        assert_eq!(r.downstream, 1);
        assert_eq!(route_from_plan(&p, "zz", URL).unwrap(), None);
    }

    #[test]
    fn an_upstream_name_outside_the_rules_is_refused() {
        // Before, any string from the network became a console line ("upstreams: …").
        let p = plan(
            r#""a": {"upstream": "x\u001b[2Jy"}, "x\u001b[2Jy": {"upstream": "primary"}"#,
            r#""x\u001b[2Jy": "10.0.0.1""#,
        );
        let e = shown(route_from_plan(&p, "a", URL).unwrap_err());
        assert!(e.contains("upstream of node a"), "{e}");
    }

    #[test]
    fn a_looping_chain_is_refused_by_name() {
        // Before, a loop was followed 4097 times into a chain of repeated fallbacks.
        let p = plan(
            r#""a": {"upstream": "b"}, "b": {"upstream": "a"}"#,
            r#""a": "10.0.0.1", "b": "10.0.0.2""#,
        );
        let e = route_from_plan(&p, "a", URL).unwrap_err();
        // The plan's typed error is kept as the source, with the URL around it.
        assert_eq!(e.url, URL);
        assert!(matches!(e.err, PlanError::Loop { .. }), "{e:?}");
        let e = shown(e);
        assert!(e.contains("loops (node b names a again)"), "{e}");
    }

    #[test]
    fn addresses_and_port_must_be_what_they_claim() {
        // An address is put into a URL: `1.2.3.4@evil:80/x?` would send the node elsewhere.
        let p = plan(
            r#""a": {"upstream": "b"}, "b": {"upstream": "primary"}"#,
            r#""b": "10.0.0.2@evil.example/x?""#,
        );
        let e = shown(route_from_plan(&p, "a", URL).unwrap_err());
        assert!(e.contains("of node b is not an IPv4 address"), "{e}");
        let p = r#"{"relay_port": 1099511627776, "nodes": {"a": {"upstream": "primary"}}}"#;
        let e = shown(route_from_plan(p, "a", URL).unwrap_err());
        assert!(e.contains("relay_port 1099511627776 is not a port"), "{e}");
        let e = shown(route_from_plan("{", "a", URL).unwrap_err());
        // The JSON parser's reason follows, once.
        assert!(
            e.starts_with(&format!("{URL}: not a clone plan: ")) && e.matches("EOF").count() == 1,
            "{e}"
        );
    }

    /// An entity's secondary alone in its rack (no downstream node) still listens: its
    /// rack and its children in the boot-file tree take the boot files from there. A
    /// leaf with no downstream node does not.
    #[test]
    fn a_secondary_without_downstream_nodes_listens_for_its_boot_files() {
        let np = br#"{"version": 1, "node": "s", "relay_port": 8200, "downstream": 0,
            "boot_files": true, "upstreams": []}"#;
        let r = route_from_node_plan(np, "s", URL).unwrap();
        assert_eq!(
            (r.relay_port, r.downstream, r.boot_files),
            (Some(8200), 0, true)
        );
        let np = br#"{"version": 1, "node": "l", "relay_port": 8200, "downstream": 0,
            "upstreams": [{"node": "s", "address": "10.0.0.2"}]}"#;
        let r = route_from_node_plan(np, "l", URL).unwrap();
        assert_eq!((r.relay_port, r.boot_files), (None, false));
    }

    #[test]
    fn a_node_plan_gives_its_candidates_then_nothing_more() {
        let np = br#"{"version": 1, "node": "c", "relay_port": 8200, "downstream": 1,
            "upstreams": [{"node": "b", "address": "10.0.0.2"}, {"node": "a", "address": "10.0.0.1"}]}"#;
        let r = route_from_node_plan(np, "c", URL).unwrap();
        assert_eq!(
            r.upstreams,
            [
                ("b".to_string(), "http://10.0.0.2:8200".to_string()),
                ("a".to_string(), "http://10.0.0.1:8200".to_string())
            ]
        );
        assert_eq!((r.relay_port, r.downstream), (Some(8200), 1));
        // Another node's plan (a misplaced file) is not followed.
        let e = shown(route_from_node_plan(np, "d", URL).unwrap_err());
        assert!(e.contains("is for node \"c\", not d"), "{e}");
        let e = shown(route_from_node_plan(b"{", "c", URL).unwrap_err());
        assert!(e.starts_with(&format!("{URL}: not a clone plan")), "{e}");
    }

    #[test]
    fn the_whole_plan_gives_a_deep_node_its_nearest_candidates_only() {
        // A serial chain of 5000 (was refused past 4096 hops, and the failover would have
        // walked all of them): the node takes its nearest eight.
        let mut nodes = vec![];
        let mut addresses = vec![];
        for i in 0..5000 {
            let up = if i == 0 {
                "primary".to_string()
            } else {
                format!("n{}", i - 1)
            };
            nodes.push(format!(r#""n{i}": {{"upstream": "{up}"}}"#));
            addresses.push(format!(r#""n{i}": "10.1.{}.{}""#, i / 200, i % 200 + 1));
        }
        let p = plan(&nodes.join(","), &addresses.join(","));
        let r = route_from_plan(&p, "n4999", URL).unwrap().unwrap();
        assert_eq!(r.upstreams.len(), MAX_CANDIDATES);
        assert_eq!(r.upstreams[0].0, "n4998");
        assert_eq!(r.upstreams[7].0, "n4991");
    }
}
