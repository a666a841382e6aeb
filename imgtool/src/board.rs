//! The status board of `imgtool serve`: what node agents report (`POST /status/<node>`)
//! and `imgtool status` shows. Everything on it came from the network, so it is bounded
//! and cleaned: node names from a fixed character set, every text field cut to a
//! documented length with control characters and escape sequences replaced (when stored
//! and again when a client reads a board), at most [`MAX_NODES`] nodes, and a node's
//! entry may only be written from that node's address (see [`Board::post`]).

use netboot_proto::plan::PlanError;
/// The report types and the bounds a board keeps are the protocol's (the agent posts
/// them): `netboot_proto::status`.
pub use netboot_proto::status::{
    sanitize, NodeStatus, Phase, Report, MAX_HISTORY, MAX_HISTORY_LINE, MAX_IMAGE, MAX_MESSAGE,
    MAX_NODE_NAME, MAX_PHASE,
};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Nodes on one board at most. A post for a further node is refused (503). With the
/// per-node bounds below a full board serialises to about 50 MB at worst (below
/// [`MAX_BOARD_BYTES`]), typically 1 KB per node.
pub const MAX_NODES: usize = 4096;

/// Largest report body accepted (a report is a few hundred bytes).
pub const MAX_REPORT_BYTES: u64 = 16 << 10;

/// Largest board `imgtool status` reads: above the worst case of a full board (test
/// `a_full_board_of_worst_case_entries_fits`).
pub const MAX_BOARD_BYTES: u64 = 64 << 20;

/// Without a clone plan, how many node names one (non-loopback) address may own. An agent
/// reports under one name per boot: its node name, or its MAC address when it knows no
/// name; 4 leaves room for a node that booted once under its MAC and once under its name,
/// and a name or two more (a renamed node), while one address can no longer claim every
/// name on the board and lock the real nodes out (their posts would be refused 403).
/// Beyond it a post for a new name is refused 429.
pub const MAX_NAMES_PER_ADDRESS: usize = 4;

/// Names a node may not report under, compared ignoring ASCII case — the same names
/// `pxe-builder check` refuses for nodes (`pxe-builder/src/validate.rs`): `primary` is
/// the root of the status tree (the image server in upstream chains); `infinite` and
/// `ignore` are dnsmasq `dhcp-host` keywords.
pub const RESERVED_NAMES: [&str; 3] = ["primary", "infinite", "ignore"];

/// The most bytes the serialised boards that `GET /status` readers still hold may take
/// together (every reader of one board version shares one copy). While the versions
/// still being read take this much, a reader gets the newest existing snapshot (which may
/// then be older than the latest report) instead of a new one, so the server's memory for
/// status bodies stays below this plus one board ([`MAX_BOARD_BYTES`]) however many
/// readers there are and however slowly they read.
pub const MAX_STATUS_SNAPSHOT_BYTES: u64 = 128 << 20;

/// A new snapshot is built at most once per this many times the last build took, so
/// serialising a large board (tens of ms) takes at most a fifth of a core, whatever the
/// rate of reads and reports; a small board is rebuilt for every read after a change.
const REBUILD_SPACING: u32 = 4;

/// A node name as the board takes it: 1 to [`MAX_NODE_NAME`] bytes of `A-Z a-z 0-9 . _ -`
/// (the cluster's name character set) or `:` (an agent that knows no node name reports
/// under its MAC address), not starting with `.` or `-`, and none of [`RESERVED_NAMES`]
/// in any case.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        && !name.starts_with(['.', '-'])
        && !RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Why a report could not be posted or a board read. A variant's message names the URL;
/// the cause (ureq's error, the body's read or parse error) is its `#[source]` and follows
/// when printed as a chain (`{:#}` through anyhow): `http://s/status: reading: …`.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The request failed: no connection, a timeout, an error status.
    #[error("{url}")]
    Http {
        url: String,
        #[source]
        err: HttpFailure,
    },
    /// The answer's body broke off.
    #[error("{url}")]
    Read {
        url: String,
        #[source]
        err: io::Error,
    },
    #[error("{url}: the board is larger than {} MiB; not a board this version of imgtool serves", MAX_BOARD_BYTES >> 20)]
    TooLarge { url: String },
    #[error("{url}: not a status board")]
    NotABoard {
        url: String,
        #[source]
        err: serde_json::Error,
    },
    /// Serialising a report (cannot fail for the report types; kept for the type).
    #[error("encoding the report")]
    Encode(#[source] serde_json::Error),
}

/// A failed ureq request, kept whole. ureq's message already carries its cause (the
/// connect or read error below it), so this error ends the chain instead of listing that
/// cause a second time; [`HttpFailure::ureq`] gives the ureq error, and its own `source`.
#[derive(Debug)]
pub struct HttpFailure(Box<ureq::Error>);

impl HttpFailure {
    pub fn ureq(&self) -> &ureq::Error {
        &self.0
    }
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HttpFailure {}

impl From<ureq::Error> for HttpFailure {
    fn from(e: ureq::Error) -> Self {
        HttpFailure(Box::new(e))
    }
}

/// Who may post for which node: the addresses in the served `clone-plan.json`.
pub type PlanAddresses = HashMap<String, IpAddr>;

/// The `addresses` of a clone plan (node name → IP), read as the agents read the plan
/// (`netboot_proto::plan`); an address that is not an IP is left out.
pub fn plan_addresses(json: &[u8]) -> Result<PlanAddresses, PlanError> {
    let p = netboot_proto::plan::Plan::from_json(json)?;
    Ok(p.addresses
        .into_iter()
        .filter_map(|(n, a)| {
            let ip = a.split('/').next()?.trim().parse::<IpAddr>().ok()?;
            Some((n, ip.to_canonical()))
        })
        .collect())
}

/// Why a post was refused: the HTTP status and a message naming the node and address.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused(pub u16, pub String);

/// The board itself.
#[derive(Default)]
pub struct Board {
    nodes: BTreeMap<String, NodeStatus>,
    /// Without a clone plan: the address each node first posted from.
    owners: HashMap<String, IpAddr>,
    /// How many names each address owns (see [`MAX_NAMES_PER_ADDRESS`]).
    owned: HashMap<IpAddr, usize>,
    /// The newest serialised board (see [`Board::snapshot`]), and whether the board
    /// changed since.
    current: Option<Arc<Vec<u8>>>,
    changed: bool,
    /// Every snapshot built that may still be held by a reader.
    built: Vec<Weak<Vec<u8>>>,
    /// When the last snapshot was built and how long that took.
    last_build: Option<(Instant, Duration)>,
}

impl Board {
    /// Records `report` for `node`, posted from `peer` at `at` seconds, if `peer` may post
    /// for it:
    /// - from the server's own host (a loopback address): any node — the admin's own
    ///   machine is trusted, and QEMU's user networking arrives from there;
    /// - with a clone plan (`plan`: `Some(Ok)`): only from the node's address in it; a
    ///   node not in the plan is refused; an unreadable plan (`Some(Err)`) refuses all;
    /// - without a plan: from the address the node first posted from (since the server
    ///   started); one address may own at most [`MAX_NAMES_PER_ADDRESS`] names (429).
    pub fn post(
        &mut self,
        node: &str,
        peer: IpAddr,
        report: &Report,
        at: f64,
        plan: Option<&Result<PlanAddresses, String>>,
    ) -> Result<(), Refused> {
        if !valid_node_name(node) {
            return Err(Refused(
                400,
                format!(
                    "node name {:?} is not 1-{MAX_NODE_NAME} characters of A-Z a-z 0-9 . _ - : \
                     (not starting with . or -), or is reserved ({})",
                    sanitize(node, MAX_NODE_NAME),
                    RESERVED_NAMES.join(", ")
                ),
            ));
        }
        let peer = peer.to_canonical();
        let loopback = peer.is_loopback();
        let mut claim = false;
        if !loopback {
            match plan {
                Some(Ok(addrs)) => match addrs.get(node) {
                    Some(a) if *a == peer => {}
                    Some(a) => {
                        return Err(Refused(
                            403,
                            format!("node {node} is at {a} in clone-plan.json; {peer} may not report for it"),
                        ))
                    }
                    None => {
                        return Err(Refused(
                            403,
                            format!("node {node} is not in clone-plan.json ({peer} reporting)"),
                        ))
                    }
                },
                Some(Err(e)) => {
                    return Err(Refused(
                        403,
                        format!("clone-plan.json is unreadable ({e}): only the server's own host may report (node {node}, from {peer})"),
                    ))
                }
                None => match self.owners.get(node) {
                    Some(a) if *a == peer => {}
                    Some(a) => {
                        return Err(Refused(
                            403,
                            format!("node {node} first reported from {a}; {peer} may not report for it"),
                        ))
                    }
                    None => {
                        let owned = self.owned.get(&peer).copied().unwrap_or(0);
                        if owned >= MAX_NAMES_PER_ADDRESS {
                            let mut names: Vec<&str> = self
                                .owners
                                .iter()
                                .filter(|(_, a)| **a == peer)
                                .map(|(n, _)| n.as_str())
                                .collect();
                            names.sort_unstable();
                            return Err(Refused(
                                429,
                                format!(
                                    "{peer} already reports for {owned} nodes ({}), the most one \
                                     address may without a clone-plan.json; node {node} not recorded",
                                    names.join(", ")
                                ),
                            ));
                        }
                        claim = true
                    }
                },
            }
        }
        if !self.nodes.contains_key(node) && self.nodes.len() >= MAX_NODES {
            return Err(Refused(
                503,
                format!("the board is full ({MAX_NODES} nodes); node {node} not recorded"),
            ));
        }
        if claim {
            self.owners.insert(node.to_string(), peer);
            *self.owned.entry(peer).or_insert(0) += 1;
        }
        self.changed = true;
        let r = report.sanitized();
        let e = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeStatus {
                node: node.to_string(),
                last: Report::default(),
                at,
                history: vec![],
            });
        if e.last.phase != r.phase || !r.message.is_empty() && e.last.message != r.message {
            let line = format!("{at:.1}s {} {}", r.phase, r.message);
            e.history.push(sanitize(line.trim_end(), MAX_HISTORY_LINE));
            if e.history.len() > MAX_HISTORY {
                e.history.remove(0);
            }
        }
        e.last = r;
        e.at = at;
        Ok(())
    }

    pub fn nodes(&self) -> &BTreeMap<String, NodeStatus> {
        &self.nodes
    }

    /// The board as `GET /status` sends it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.nodes).unwrap_or_default()
    }

    /// The board as `GET /status` sends it, shared by every reader of this version: built
    /// again only when the board changed, and then only when the snapshots still held by
    /// readers take less than [`MAX_STATUS_SNAPSHOT_BYTES`] and the last build is longer
    /// ago than [`REBUILD_SPACING`] times its duration; otherwise the newest existing
    /// snapshot is returned (a little older than the latest report).
    pub fn snapshot(&mut self) -> Arc<Vec<u8>> {
        if let Some(cur) = &self.current {
            if !self.changed {
                return cur.clone();
            }
            self.built.retain(|w| w.strong_count() > 0);
            let held: u64 = self
                .built
                .iter()
                .filter_map(|w| w.upgrade().map(|b| b.len() as u64))
                .sum();
            let too_soon = self
                .last_build
                .is_some_and(|(at, took)| at.elapsed() < took * REBUILD_SPACING);
            if held >= MAX_STATUS_SNAPSHOT_BYTES || too_soon {
                return cur.clone();
            }
        }
        let start = Instant::now();
        let snap = Arc::new(serde_json::to_vec_pretty(&self.nodes).unwrap_or_default());
        self.last_build = Some((Instant::now(), start.elapsed()));
        self.built.push(Arc::downgrade(&snap));
        self.current = Some(snap.clone());
        self.changed = false;
        snap
    }
}

/// Reads the status board of the server at `url` (at most [`MAX_BOARD_BYTES`]), cleaned
/// again here: the server may be an older or a hostile one.
pub fn fetch_status(url: &str) -> Result<BTreeMap<String, NodeStatus>, BoardError> {
    let u = format!("{}/status", url.trim_end_matches('/'));
    let r = ureq::get(&u)
        .timeout(std::time::Duration::from_secs(60))
        .call()
        .map_err(|e| BoardError::Http {
            url: u.clone(),
            err: e.into(),
        })?;
    let mut s = Vec::new();
    r.into_reader()
        .take(MAX_BOARD_BYTES + 1)
        .read_to_end(&mut s)
        .map_err(|err| BoardError::Read {
            url: u.clone(),
            err,
        })?;
    if s.len() as u64 > MAX_BOARD_BYTES {
        return Err(BoardError::TooLarge { url: u });
    }
    let board: BTreeMap<String, NodeStatus> =
        serde_json::from_slice(&s).map_err(|err| BoardError::NotABoard { url: u, err })?;
    Ok(board
        .into_iter()
        .map(|(k, v)| (sanitize(&k, MAX_NODE_NAME), v.sanitized()))
        .collect())
}

/// Sends one report; best effort (errors are returned for logging, never fatal). A fresh
/// connection each time (no pool): a kept-alive connection the server has since closed
/// would lose the report, and reports are seconds apart.
pub fn post_report(server: &str, node: &str, r: &Report) -> Result<(), BoardError> {
    let u = format!("{}/status/{node}", server.trim_end_matches('/'));
    let body = serde_json::to_string(r).map_err(BoardError::Encode)?;
    let agent = ureq::AgentBuilder::new()
        .max_idle_connections(0)
        .timeout(std::time::Duration::from_secs(3))
        .build();
    agent
        .post(&u)
        .set("Content-Type", "application/json")
        .send_string(&body)
        .map(|_| ())
        .map_err(|e| BoardError::Http {
            url: u,
            err: e.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_post_names_the_url_and_keeps_ureqs_error() {
        // A port nothing listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = format!("http://127.0.0.1:{port}");
        let e = post_report(&server, "n1", &report("restoring", "")).unwrap_err();
        let url = format!("{server}/status/n1");
        assert!(
            matches!(&e, BoardError::Http { url: u, .. } if *u == url),
            "{e:?}"
        );
        let kept = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<HttpFailure>())
            .map(|f| f.ureq().kind());
        assert_eq!(kept, Some(ureq::ErrorKind::ConnectionFailed), "{e:?}");
        // As the agent logs it: the URL, then ureq's message (with its cause), once.
        let shown = crate::error::chain(&e);
        assert!(shown.starts_with(&format!("{url}: ")), "{shown}");
        assert_eq!(shown.matches("os error").count(), 1, "{shown}");
        let e = fetch_status(&server).unwrap_err();
        assert!(
            crate::error::chain(&e).starts_with(&format!("{server}/status: ")),
            "{e}"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn report(phase: &str, message: &str) -> Report {
        Report {
            phase: phase.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn escape_sequences_never_reach_the_terminal() {
        let evil = "ok\x1b]0;owned\x07\x1b[2J\u{9b}31m\r\nrm -rf /\u{202e}txt.exe";
        let s = sanitize(evil, 200);
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(!s.contains('\u{202e}'));
        assert!(s.starts_with("ok\u{FFFD}]0;owned"), "{s:?}");
        let long = "é".repeat(1000);
        let cut = sanitize(&long, MAX_MESSAGE);
        assert!(
            cut.len() <= MAX_MESSAGE && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert_eq!(sanitize("plain", 5), "plain");
    }

    #[test]
    fn the_board_reserves_the_names_the_cluster_reserves_for_nodes() {
        let cluster: Vec<&str> = netboot_proto::names::Kind::Node
            .reserved()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(cluster, RESERVED_NAMES);
    }

    #[test]
    fn node_names_are_checked() {
        for ok in ["n07", "rack1-n2", "a.b_c", "52:54:00:00:00:07"] {
            assert!(valid_node_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "n\n",
            "-x",
            ".hidden",
            "primary",
            "Primary",
            "PRIMARY",
            "infinite",
            "Ignore",
            &"x".repeat(65),
        ] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn with_a_plan_only_the_nodes_address_may_post() {
        let plan = plan_addresses(br#"{"addresses":{"n1":"10.0.0.1","n2":"10.0.0.2"}}"#)
            .map_err(|e| e.to_string());
        let plan = Some(&plan);
        let mut b = Board::default();
        let r = report("restoring", "");
        assert_eq!(b.post("n1", ip("10.0.0.1"), &r, 1.0, plan), Ok(()));
        let e = b.post("n1", ip("10.0.0.2"), &r, 1.0, plan).unwrap_err();
        assert_eq!(e.0, 403);
        assert!(e.1.contains("n1") && e.1.contains("10.0.0.2"), "{}", e.1);
        let e = b.post("n9", ip("10.0.0.9"), &r, 1.0, plan).unwrap_err();
        assert!(e.1.contains("not in clone-plan.json"), "{}", e.1);
        // The server's own host may post for anyone (QEMU user networking comes from it).
        assert_eq!(b.post("n2", ip("127.0.0.1"), &r, 1.0, plan), Ok(()));
        assert_eq!(b.post("n2", ip("::ffff:10.0.0.2"), &r, 1.0, plan), Ok(()));
        let bad = Err("expected value".to_string());
        assert_eq!(
            b.post("n1", ip("10.0.0.1"), &r, 1.0, Some(&bad))
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(b.nodes().len(), 2);
    }

    #[test]
    fn without_a_plan_a_node_belongs_to_its_first_address() {
        let mut b = Board::default();
        let r = report("booting", "");
        assert_eq!(b.post("n1", ip("10.0.0.1"), &r, 1.0, None), Ok(()));
        assert_eq!(b.post("n1", ip("10.0.0.1"), &r, 2.0, None), Ok(()));
        let e = b.post("n1", ip("10.0.0.66"), &report("done", "fake"), 3.0, None);
        assert_eq!(e.unwrap_err().0, 403);
        assert_eq!(b.nodes()["n1"].last.phase, "booting");
    }

    #[test]
    fn without_a_plan_one_address_cannot_claim_every_name() {
        let mut b = Board::default();
        let r = report("booting", "");
        let squatter = ip("10.0.0.66");
        let mut refused = None;
        for i in 0..MAX_NODES {
            if let Err(e) = b.post(&format!("n{i}"), squatter, &r, 1.0, None) {
                refused = Some((i, e));
                break;
            }
        }
        let (i, e) = refused.expect("one address claimed every name on the board");
        assert_eq!((i, e.0), (MAX_NAMES_PER_ADDRESS, 429), "{}", e.1);
        assert!(
            e.1.contains("10.0.0.66") && e.1.contains("n0, n1, n2, n3") && e.1.contains("n4"),
            "{}",
            e.1
        );
        // The real n4 still reports; the squatter's own names keep working.
        assert_eq!(b.post("n4", ip("10.0.0.4"), &r, 2.0, None), Ok(()));
        assert_eq!(b.post("n0", squatter, &r, 2.0, None), Ok(()));
        // The server's own host is not counted.
        for i in 0..10 {
            assert_eq!(
                b.post(&format!("q{i}"), ip("127.0.0.1"), &r, 2.0, None),
                Ok(())
            );
        }
    }

    #[test]
    fn readers_of_one_board_version_share_one_snapshot() {
        let mut b = Board::default();
        let r = report("booting", "");
        b.post("n1", ip("127.0.0.1"), &r, 1.0, None).unwrap();
        let s1 = b.snapshot();
        let s2 = b.snapshot();
        assert!(Arc::ptr_eq(&s1, &s2));
        assert_eq!(s1.as_slice(), b.to_json().as_bytes());
        // A change gives a new snapshot (a small board is rebuilt at once)…
        std::thread::sleep(Duration::from_millis(5));
        b.post("n2", ip("127.0.0.1"), &r, 2.0, None).unwrap();
        let s3 = b.snapshot();
        assert!(!Arc::ptr_eq(&s1, &s3));
        assert_eq!(s3.as_slice(), b.to_json().as_bytes());
        // …unless the versions still held take the whole budget: then the newest one.
        let big = Arc::new(vec![b' '; MAX_STATUS_SNAPSHOT_BYTES as usize]);
        b.built.push(Arc::downgrade(&big));
        b.post("n3", ip("127.0.0.1"), &r, 3.0, None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(Arc::ptr_eq(&b.snapshot(), &s3));
        drop(big);
        let s4 = b.snapshot();
        assert!(String::from_utf8_lossy(&s4).contains("n3"));
    }

    #[test]
    fn the_board_is_bounded_in_nodes_and_bytes() {
        // Worst-case entries: every text at its bound, every character needing a JSON
        // escape, the history full.
        let mut b = Board::default();
        let worst = |i: usize| Report {
            phase: format!("{i}{}", "\"".repeat(100)).into(),
            done: u64::MAX,
            total: u64::MAX,
            message: format!("{i}{}", "\\".repeat(10_000)),
            upstream: "\"".repeat(100),
            image: "\"".repeat(1000),
            chunks: Some(netboot_proto::status::ChunkCounts {
                total: u64::MAX,
                checked: u64::MAX,
                skipped: u64::MAX,
                fetched: u64::MAX,
                fetched_bytes: u64::MAX,
                payload_bytes: u64::MAX,
            }),
        };
        let name = |i: usize| format!("{i:0>64}");
        for i in 0..MAX_HISTORY + 5 {
            b.post(&name(0), ip("127.0.0.1"), &worst(i), 1e300, None)
                .unwrap();
        }
        let entry = b.nodes[&name(0)].clone();
        assert_eq!(entry.history.len(), MAX_HISTORY);
        assert!(entry.last.message.len() <= MAX_MESSAGE);
        for i in 1..MAX_NODES {
            let mut e = entry.clone();
            e.node = name(i);
            b.nodes.insert(name(i), e);
        }
        let e = b
            .post("one-more", ip("127.0.0.1"), &worst(0), 1.0, None)
            .unwrap_err();
        assert_eq!(e.0, 503);
        let size = b.to_json().len() as u64;
        assert!(size <= MAX_BOARD_BYTES, "{size} bytes");
    }
}
