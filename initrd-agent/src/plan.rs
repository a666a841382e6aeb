//! Reading this node's route from the clone plan (`clone-plan.json`, written by
//! `pxe-builder build`, fetched from the image server): who it pulls the image from and
//! whether it relays it on. The plan comes over the network, so everything in it is
//! checked: the upstream chain is followed at most [`MAX_CHAIN`] hops and never twice
//! through a node, addresses must be IPv4 addresses (they become URLs), the relay port
//! a port.

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Relay port when the plan names none (pxe-builder's default `relay_port`).
pub const DEFAULT_RELAY_PORT: u16 = 8180;

/// Upstream hops followed at most before the primary: far more nodes than a cluster
/// description lists in one chain, and each hop is a fallback the node may try.
pub const MAX_CHAIN: usize = 4096;

/// This node's place in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRoute {
    /// Upstream relays, nearest first: (node name, `http://ip:port`); the primary is
    /// not included (the caller appends the server it fetched the plan from).
    pub upstreams: Vec<(String, String)>,
    /// The port to relay on, when some node pulls from this one.
    pub relay_port: Option<u16>,
    /// How many nodes the plan has pull from this one: a relay holds (before growing its
    /// file systems and rebooting) until that many have fetched every chunk.
    pub downstream: usize,
}

/// This node's route in the plan `text` (fetched from `url`); `None` when the plan
/// does not list `node` (it then pulls from the primary). Errors name the URL and
/// the node or field.
pub fn route_from_plan(text: &str, node: &str, url: &str) -> Result<Option<PlanRoute>, String> {
    let plan: Value =
        serde_json::from_str(text).map_err(|e| format!("{url}: not a clone plan: {e}"))?;
    let nodes = &plan["nodes"];
    if nodes.get(node).is_none() {
        return Ok(None);
    }
    let port = match plan.get("relay_port") {
        None | Some(Value::Null) => DEFAULT_RELAY_PORT,
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url}: relay_port {v} is not a port (1-65535)"))?,
    };
    let mut upstreams = vec![];
    let mut seen = BTreeSet::from([node.to_string()]);
    let mut cur = node.to_string();
    while let Some(up) = nodes[&cur]["upstream"].as_str() {
        if up == "primary" {
            break;
        }
        // A name is printed on the console and in reports: pxe-builder's rules hold.
        pxe_builder::validate::name(pxe_builder::validate::Kind::Node, up)
            .map_err(|(_, m)| format!("{url}: upstream of node {cur}: {m}"))?;
        if !seen.insert(up.to_string()) {
            return Err(format!(
                "{url}: the upstream chain of node {node} loops (node {cur} names {up} again)"
            ));
        }
        if upstreams.len() >= MAX_CHAIN {
            return Err(format!(
                "{url}: the upstream chain of node {node} is longer than {MAX_CHAIN} nodes"
            ));
        }
        let ip = plan["addresses"][up]
            .as_str()
            .ok_or_else(|| format!("{url}: no address for node {up}"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{url}: address {ip:?} of node {up} is not an IPv4 address"))?;
        upstreams.push((up.to_string(), format!("http://{ip}:{port}")));
        cur = up.to_string();
    }
    let downstream = nodes[node]["downstream"]
        .as_array()
        .map_or(0, |d| d.iter().filter(|n| n.is_string()).count());
    Ok(Some(PlanRoute {
        upstreams,
        relay_port: (downstream > 0).then_some(port),
        downstream,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://s/clone-plan.json";

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
        let e = route_from_plan(&p, "a", URL).unwrap_err();
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
        assert!(e.contains("loops (node b names a again)"), "{e}");
    }

    #[test]
    fn addresses_and_port_must_be_what_they_claim() {
        // An address is put into a URL: `1.2.3.4@evil:80/x?` would send the node elsewhere.
        let p = plan(
            r#""a": {"upstream": "b"}, "b": {"upstream": "primary"}"#,
            r#""b": "10.0.0.2@evil.example/x?""#,
        );
        let e = route_from_plan(&p, "a", URL).unwrap_err();
        assert!(e.contains("of node b is not an IPv4 address"), "{e}");
        let p = r#"{"relay_port": 1099511627776, "nodes": {"a": {"upstream": "primary"}}}"#;
        let e = route_from_plan(p, "a", URL).unwrap_err();
        assert!(e.contains("relay_port 1099511627776 is not a port"), "{e}");
        let e = route_from_plan("{", "a", URL).unwrap_err();
        assert!(e.starts_with(URL) && e.contains("not a clone plan"), "{e}");
    }
}
