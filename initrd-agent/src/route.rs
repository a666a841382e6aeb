//! Where this node pulls the image from and whether it relays it: a [`Route`]. Without a
//! clone plan, or when the plan does not list this node, straight from the primary;
//! otherwise the plan's upstream chain (nearest first, the primary last), its relay port
//! and its number of downstream nodes (which the relay holds for). The plan is read by
//! [`crate::plan`]; this module fetches it and turns it into a route.

use crate::config::Config;
use crate::plan::PlanRoute;
use imgtool::sign::PublicKey;
use std::time::Duration;

/// Where to pull from and whether to relay.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upstreams in fallback order: (name, base URL); the last is the primary.
    pub upstreams: Vec<(String, String)>,
    /// Serve the image to downstream nodes on this address (a secondary / relay).
    pub relay_listen: Option<String>,
    /// Downstream nodes the plan gives this relay: it holds its grow, and its exit, until
    /// each of them has fetched every chunk (or, failing that, `relay_idle` of silence).
    pub downstream: usize,
    /// A relay's fallback: it stops waiting for downstream after this long without requests.
    pub relay_idle: Duration,
    /// How long a read may stall before the upstream counts as dead.
    pub stall: Duration,
    pub attempts: u32,
    /// Keys one of which must have signed the image (from the initrd's
    /// `/etc/netboot/trusted`, or `--trust`). Empty: integrity is checked, not origin.
    pub trusted: Vec<PublicKey>,
    /// The only image id this node accepts (`netboot.image_id=`), when set.
    pub image_id: Option<String>,
}

impl Route {
    /// Straight from the primary.
    pub fn primary(server: &str, attempts: u32) -> Route {
        Route {
            upstreams: vec![("primary".into(), server.trim_end_matches('/').to_string())],
            relay_listen: None,
            downstream: 0,
            relay_idle: Duration::from_secs(15),
            stall: Duration::from_secs(20),
            attempts,
            trusted: vec![],
            image_id: None,
        }
    }

    /// The route the plan gives this node (`None`: not in the plan), the primary being
    /// `server`.
    pub fn from_plan(server: &str, plan: Option<PlanRoute>) -> Route {
        let mut route = Route::primary(server, 8);
        let Some(p) = plan else {
            return route;
        };
        let mut chain = p.upstreams;
        chain.push(("primary".into(), server.trim_end_matches('/').to_string()));
        route.upstreams = chain;
        route.relay_listen = p.relay_port.map(|port| format!("0.0.0.0:{port}"));
        route.downstream = p.downstream;
        route
    }

    /// `upstreams: a -> b -> primary (relaying)`, as the console and the tests read it.
    pub fn describe(&self) -> String {
        format!(
            "upstreams: {}{}",
            self.upstreams
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" -> "),
            if self.relay_listen.is_some() {
                " (relaying)"
            } else {
                ""
            }
        )
    }
}

/// This node's route from the clone plan at `server/clone-plan.json`: its upstream chain
/// (nearest first, the primary last) and whether it relays. Without a plan, or when the
/// node is not in it, straight from the primary.
pub fn plan_route(cfg: &Config, server: &str) -> anyhow::Result<Route> {
    let Some(node) = &cfg.node else {
        return Ok(Route::primary(server, 8));
    };
    let url = format!("{}/clone-plan.json", server.trim_end_matches('/'));
    let text = match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => r
            .into_string()
            .map_err(|e| anyhow::anyhow!("{url}: reading the clone plan: {e}"))?,
        Err(ureq::Error::Status(404, _)) => return Ok(Route::primary(server, 8)),
        Err(e) => anyhow::bail!("fetching the clone plan {url}: {e}"),
    };
    let p = crate::plan::route_from_plan(&text, node, &url)?;
    Ok(Route::from_plan(server, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_relay_knows_its_downstream_count() {
        let plan = r#"{"relay_port": 8200,
            "nodes": {"a": {"upstream": "primary", "downstream": ["b", "c"]},
                      "b": {"upstream": "a", "downstream": []},
                      "c": {"upstream": "a"}},
            "addresses": {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}}"#;
        let route = |n| {
            let p = crate::plan::route_from_plan(plan, n, "mem:plan").unwrap();
            Route::from_plan("http://s/", p)
        };
        let a = route("a");
        assert_eq!(a.describe(), "upstreams: primary (relaying)");
        assert_eq!(a.relay_listen.as_deref(), Some("0.0.0.0:8200"));
        // Issue 11: this stayed 0, and every relay waited out its idle fallback.
        assert_eq!(a.downstream, 2);
        let b = route("b");
        assert_eq!(b.describe(), "upstreams: a -> primary");
        assert_eq!(b.upstreams[0].1, "http://10.0.0.1:8200");
        assert_eq!(b.upstreams[1].1, "http://s");
        assert_eq!((b.downstream, b.relay_listen), (0, None));
        let z = route("z");
        assert_eq!(z.describe(), "upstreams: primary");
    }
}
