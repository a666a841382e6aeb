//! Where this node pulls the image from and whether it relays it: a [`Route`]. Without a
//! clone plan, or when the plan does not list this node, straight from the primary;
//! otherwise the plan's nearest upstreams (at most
//! [`MAX_CANDIDATES`](crate::plan::MAX_CANDIDATES), the primary last: the failover walks
//! exactly these), its relay port and its number of downstream nodes (which the relay
//! holds for). The node's own plan (`etc/plan/<node>.json`, a few hundred bytes) is
//! fetched first; the whole `clone-plan.json` only from a tree written before those
//! existed. The plans are read by [`crate::plan`]; this module fetches them and turns
//! them into a route.

use crate::config::Config;
use crate::plan::{PlanRoute, MAX_NODE_PLAN_BYTES};
use imgtool::sign::PublicKey;
use imgtool::source::{HttpSource, ImageSource};
use netboot_proto::names::{self, Kind};
use netboot_proto::plan::NodePlan;
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
    /// How long a read may stall before the upstream counts as dead. Only a live but
    /// quiet upstream reaches it: a dead one (powered off, silent) is found by TCP
    /// keepalive in about 3 s (`imgtool::source::client`), so this stays long enough for
    /// a relay that waits for its own upstream.
    pub stall: Duration,
    /// How long an upstream that has never answered is waited for (it may boot later
    /// than this node): the plan's boot window plus a margin
    /// (`imgtool::source::boot_grace`).
    pub grace: Duration,
    pub attempts: u32,
    /// Keys one of which must have signed the image (from the initrd's
    /// `/etc/netboot/trusted`, or `--trust`). Empty: integrity is checked, not origin.
    pub trusted: Vec<PublicKey>,
    /// The only image id this node accepts (`netboot.image_id=`), when set.
    pub image_id: Option<String>,
    /// Fetch the tree's boot files from the primary into RAM and serve them on the relay
    /// (this node is its entity's secondary; `crate::relay::bootfiles`).
    pub boot_files: bool,
    /// Peer secondaries to take the boot files from before the primary, nearest first:
    /// (node name, `http://ip:port`); polled while they fetch for up to `grace`.
    pub boot_peers: Vec<(String, String)>,
    /// Delta re-clone: with the image's layout on the disk, fetch only the chunks whose
    /// sha256 differs there (`netboot.delta=0`, `--full`: everything).
    pub delta: bool,
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
            grace: imgtool::source::default_grace(),
            attempts,
            trusted: vec![],
            image_id: None,
            boot_files: false,
            boot_peers: vec![],
            delta: true,
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
        route.boot_files = p.boot_files;
        route.boot_peers = p.boot_peers;
        route.grace = imgtool::source::boot_grace(Duration::from_secs(p.boot_window_s));
        route
    }

    /// `upstreams: a -> b -> primary (relaying)`, as the console and the tests read it;
    /// `(serving boot files)` for a relay with no downstream node (an entity's secondary
    /// alone in its rack).
    pub fn describe(&self) -> String {
        format!(
            "upstreams: {}{}",
            self.upstreams
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" -> "),
            match (&self.relay_listen, self.downstream) {
                (None, _) => "",
                (Some(_), 0) => " (serving boot files)",
                (Some(_), _) => " (relaying)",
            }
        )
    }
}

/// This node's route from its node plan at `server/etc/plan/<node>.json`, or (a tree
/// without node plans) from the clone plan at `server/clone-plan.json`: its nearest
/// upstreams (the primary last) and whether it relays. Without a plan, or when the node
/// is not in it, straight from the primary.
pub fn plan_route(cfg: &Config, server: &str) -> anyhow::Result<Route> {
    let Some(node) = &cfg.node else {
        return Ok(Route::primary(server, 8));
    };
    let base = server.trim_end_matches('/');
    // A name outside the rules is never put into a URL (the whole plan is read instead).
    if names::name(Kind::Node, node).is_ok() {
        // The one HTTP client's small-file read: bounded, retried, 404 = none.
        let name = NodePlan::path(node);
        let url = format!("{base}/{name}");
        let text = HttpSource::new(base)
            .read_optional(&name, MAX_NODE_PLAN_BYTES)
            .map_err(|e| anyhow::anyhow!("fetching the node plan: {e}"))?;
        if let Some(text) = text {
            let p = crate::plan::route_from_node_plan(&text, node, &url)?;
            return Ok(Route::from_plan(server, Some(p)));
        }
    }
    let url = format!("{base}/clone-plan.json");
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
        // An entity's secondary alone in its rack listens for its boot files only.
        let np = br#"{"node": "s", "relay_port": 8200, "boot_files": true}"#;
        let p = crate::plan::route_from_node_plan(np, "s", "mem:plan").unwrap();
        let s = Route::from_plan("http://s/", Some(p));
        assert_eq!(s.relay_listen.as_deref(), Some("0.0.0.0:8200"));
        assert_eq!(s.describe(), "upstreams: primary (serving boot files)");
    }

    /// A directory served over HTTP on `ip` (port chosen), holding `img/manifest` with
    /// `body`; returns the port.
    fn serve_on(ip: &str, root: &std::path::Path, body: &str) -> u16 {
        std::fs::create_dir_all(root.join("img")).unwrap();
        std::fs::write(root.join("img/manifest"), body).unwrap();
        let bound = imgtool::serve::bind(imgtool::serve::ServeOptions {
            roots: vec![root.to_path_buf()],
            listen: format!("{ip}:0"),
            max_connections: 16,
        })
        .unwrap();
        let port = bound.addr().unwrap().port();
        std::thread::spawn(move || bound.run());
        port
    }

    /// The route a node plan with `candidates` (addresses, relays on `port`) gives, and
    /// which upstream the agent's source ends up reading `manifest` from.
    fn pull(candidates: &[&str], port: u16, primary: &str) -> (Route, String, Vec<u8>) {
        let ups: Vec<String> = candidates
            .iter()
            .enumerate()
            .map(|(i, a)| format!(r#"{{"node": "u{i}", "address": "{a}"}}"#))
            .collect();
        let np = format!(
            r#"{{"node": "me", "relay_port": {port}, "upstreams": [{}]}}"#,
            ups.join(",")
        );
        let p = crate::plan::route_from_node_plan(np.as_bytes(), "me", "mem:plan").unwrap();
        let route = Route::from_plan(primary, Some(p));
        // The source the agent builds from the route (clone.rs: one URL per upstream).
        let urls = route
            .upstreams
            .iter()
            .map(|(_, b)| format!("{b}/img"))
            .collect();
        let mut source = imgtool::source::HttpSource::chain(urls, Duration::from_secs(5));
        // Not booting: an upstream that refuses is dead at once (the boot grace is 10 s).
        source.grace = Duration::ZERO;
        source.attempts = 1;
        let got = imgtool::source::ImageSource::read_file(&source, "manifest").unwrap();
        (route.clone(), source.current(), got)
    }

    #[test]
    fn the_route_comes_from_the_served_node_plan_and_an_oversized_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        let port = serve_on("127.0.0.1", &root, "m");
        let server = format!("http://127.0.0.1:{port}");
        let cfg = Config {
            node: Some("me".into()),
            ..Config::default()
        };
        // No node plan and no clone-plan.json: straight from the primary.
        assert_eq!(
            plan_route(&cfg, &server).unwrap().describe(),
            "upstreams: primary"
        );
        // Only the node plan is served (no clone-plan.json to fall back on).
        let path = root.join(NodePlan::path("me"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"node": "me", "relay_port": 8200, "downstream": 1,
                "upstreams": [{"node": "up", "address": "127.0.0.9"}]}"#,
        )
        .unwrap();
        let route = plan_route(&cfg, &server).unwrap();
        assert_eq!(route.describe(), "upstreams: up -> primary (relaying)");
        // A node plan past the bound is an error, not a truncated read.
        let mut big = vec![b' '; MAX_NODE_PLAN_BYTES as usize + 1];
        big[0] = b'{';
        std::fs::write(&path, big).unwrap();
        let e = plan_route(&cfg, &server).unwrap_err().to_string();
        assert!(e.contains("node plan"), "{e}");
    }

    #[test]
    fn a_dead_first_upstream_is_passed_for_the_next_candidate() {
        let dir = tempfile::tempdir().unwrap();
        // The second candidate serves; nothing listens on the first's address.
        let port = serve_on("127.0.0.3", &dir.path().join("u1"), "from u1");
        let primary = serve_on("127.0.0.1", &dir.path().join("p"), "from primary");
        let primary = format!("http://127.0.0.1:{primary}");
        let (route, current, got) = pull(&["127.0.0.2", "127.0.0.3"], port, &primary);
        assert_eq!(route.describe(), "upstreams: u0 -> u1 -> primary");
        assert_eq!(current, format!("http://127.0.0.3:{port}/img"));
        assert_eq!(got, b"from u1");
    }

    #[test]
    fn all_candidates_dead_the_node_pulls_from_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        let primary = serve_on("127.0.0.1", &dir.path().join("p"), "from primary");
        let primary = format!("http://127.0.0.1:{primary}");
        // Eight candidates (the most a node plan may list), none alive; the relay port is
        // one nothing listens on at their addresses.
        let dead: Vec<String> = (0..8).map(|i| format!("127.0.1.{}", i + 1)).collect();
        let dead: Vec<&str> = dead.iter().map(String::as_str).collect();
        let (route, current, got) = pull(&dead, 9, &primary);
        assert_eq!(
            route.upstreams.len(),
            9,
            "eight candidates, then the primary"
        );
        assert_eq!(current, format!("{primary}/img"));
        assert_eq!(got, b"from primary");
        // A ninth candidate is refused, not walked.
        let nine: Vec<String> = (0..9)
            .map(|i| format!(r#"{{"node": "u{i}", "address": "127.0.1.{}"}}"#, i + 1))
            .collect();
        let np = format!(r#"{{"node": "me", "upstreams": [{}]}}"#, nine.join(","));
        let e = crate::plan::route_from_node_plan(np.as_bytes(), "me", "mem:plan").unwrap_err();
        assert!(e.err.to_string().contains("at most 8"), "{}", e.err);
    }
}
