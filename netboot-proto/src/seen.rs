//! "Have you seen U?": the query a node sends to the next candidate of its chain while it
//! waits for an upstream U that has never answered it, and the answer.
//!
//! Every relay (and `imgtool serve`) remembers which peer addresses fetched the image
//! from it and which of them said they were done (`GET /<image>/.done`), in a
//! [`SeenSet`] bounded to [`MAX_SEEN`] addresses (the oldest dropped). A relay listens
//! before it makes its first request upstream, so an upstream that fetched from anyone
//! had booted and was listening: when it is silent or refuses now it is gone (dead,
//! restarted into its OS, finished), never "not booted yet", and the node need not wait
//! out the boot grace on it.
//!
//! Wire: `GET /<image>/.seen/<address>` (the address as the asker knows U: its plan
//! address) → `200` with a JSON [`SeenAnswer`], at most [`MAX_ANSWER_BYTES`]. The answer
//! comes from the network: it is read with that bound and parsed into the type, unknown
//! fields ignored (a newer server may say more); anything else is an error, and the
//! asker then keeps waiting as if it had no answer. The answer only decides *when* a node
//! moves up its chain, never what it fetches or how it verifies it.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The path segment under `/<image>/` that carries the query (payload names never start
/// with `.`).
pub const SEEN_DIR: &str = ".seen";

/// The largest answer a node reads (a real one is under 30 bytes).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Addresses a [`SeenSet`] remembers at most: more than a rack's nodes and every address
/// that may fetch from one relay after reroutes, and at most a few MiB. Beyond it the
/// oldest address is dropped (it then answers `seen: false`: the asker waits as before).
pub const MAX_SEEN: usize = 65_536;

/// What a relay or the primary knows of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeenAnswer {
    /// The address fetched from here (so it had booted and was listening).
    pub seen: bool,
    /// It said it holds every chunk (`.done`): it finished.
    #[serde(default)]
    pub done: bool,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeenError {
    #[error("answer longer than {MAX_ANSWER_BYTES} bytes")]
    TooLong,
    #[error("not a seen answer: {0}")]
    Parse(String),
}

impl SeenAnswer {
    /// Parses an answer that came from the network (bounded, typed).
    pub fn parse(bytes: &[u8]) -> Result<SeenAnswer, SeenError> {
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(SeenError::TooLong);
        }
        // An object only (serde would also take a struct as an array of its fields).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(SeenError::Parse("not a JSON object".into()));
        }
        serde_json::from_slice(bytes).map_err(|e| SeenError::Parse(e.to_string()))
    }

    /// The answer's body.
    pub fn to_json(&self) -> String {
        format!("{{\"seen\":{},\"done\":{}}}\n", self.seen, self.done)
    }
}

/// The address a query asks about: `name` is the path under `/<image>/`
/// (`.seen/10.0.0.12`); `None` when it is not a query. An address that does not parse
/// is `Some(Err(()))` (answered `400`).
pub fn parse_query(name: &str) -> Option<Result<IpAddr, ()>> {
    let addr = name.strip_prefix(SEEN_DIR)?.strip_prefix('/')?;
    Some(
        addr.parse::<IpAddr>()
            .map(|a| a.to_canonical())
            .map_err(|_| ()),
    )
}

/// The query's path under an image's URL (`<image url>/` + this).
pub fn query_path(addr: IpAddr) -> String {
    format!("{SEEN_DIR}/{addr}")
}

/// The query parameter that bounds how long ago a fetch may have been to count: the
/// asker's own run (its age plus its boot grace), so that a long-lived server does not
/// answer from an earlier clone run.
pub const WITHIN: &str = "within";

/// The most [`parse_within`] gives (a larger or malformed value counts as this much).
pub const MAX_WITHIN: Duration = Duration::from_secs(24 * 3600);

/// [`query_path`] with `?within=<seconds>` (rounded up).
pub fn query_path_within(addr: IpAddr, within: Duration) -> String {
    let secs = within
        .as_secs()
        .saturating_add(u64::from(within.subsec_nanos() > 0))
        .min(MAX_WITHIN.as_secs());
    format!("{}?{WITHIN}={secs}", query_path(addr))
}

/// The `within` bound of a query's URL (`…?within=30`), at most [`MAX_WITHIN`]; `None`
/// when the URL has none or it is not a number of seconds.
pub fn parse_within(url: &str) -> Option<Duration> {
    let (_, query) = url.split_once('?')?;
    let v = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(WITHIN)?.strip_prefix('='))?;
    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = v.parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_WITHIN))
}

/// Addresses that fetched from here, and whether each said it was done; at most `cap`
/// of them (the oldest first seen is dropped first).
#[derive(Debug)]
pub struct SeenSet {
    /// Per address: whether it said it was done, and when it was last heard of.
    done: HashMap<IpAddr, (bool, Instant)>,
    order: VecDeque<IpAddr>,
    cap: usize,
}

impl Default for SeenSet {
    fn default() -> SeenSet {
        SeenSet::new(MAX_SEEN)
    }
}

impl SeenSet {
    /// A set of at most `cap` addresses (at least 1).
    pub fn new(cap: usize) -> SeenSet {
        SeenSet {
            done: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// `addr` fetched something of the image from here.
    pub fn fetched(&mut self, addr: IpAddr) {
        self.note(addr.to_canonical(), false);
    }

    /// `addr` said it holds every chunk (it also counts as seen).
    pub fn finished(&mut self, addr: IpAddr) {
        self.note(addr.to_canonical(), true);
    }

    fn note(&mut self, addr: IpAddr, done: bool) {
        let now = Instant::now();
        if let Some((d, last)) = self.done.get_mut(&addr) {
            *d |= done;
            *last = now;
            return;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.done.remove(&old);
            }
        }
        self.order.push_back(addr);
        self.done.insert(addr, (done, now));
    }

    /// What is known of `addr`.
    pub fn answer(&self, addr: IpAddr) -> SeenAnswer {
        self.answer_within(addr, None)
    }

    /// What is known of `addr`, counting only what was heard of it within `ttl` (`None`:
    /// however long ago). A long-lived server (`imgtool serve`) answers this way: an
    /// address heard of in an earlier clone run says nothing about this one.
    pub fn answer_within(&self, addr: IpAddr, ttl: Option<Duration>) -> SeenAnswer {
        match self.done.get(&addr.to_canonical()) {
            Some(&(done, last)) if ttl.is_none_or(|t| last.elapsed() <= t) => {
                SeenAnswer { seen: true, done }
            }
            _ => SeenAnswer::default(),
        }
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/seen_answer.rs`, docs/FUZZING.md): the
/// input as an answer (an accepted one must read back the same from its own JSON) and as
/// a query path (an accepted address must make the same path again). Returns whether the
/// answer was accepted. Inputs are cut to 64 KiB.
pub fn fuzz(data: &[u8]) -> bool {
    let data = &data[..data.len().min(64 << 10)];
    let accepted = match SeenAnswer::parse(data) {
        Ok(a) => {
            assert_eq!(SeenAnswer::parse(a.to_json().as_bytes()), Ok(a));
            true
        }
        Err(_) => false,
    };
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(Ok(addr)) = parse_query(text) {
            assert_eq!(parse_query(&query_path(addr)), Some(Ok(addr)));
        }
        if let Some(w) = parse_within(text) {
            assert!(w <= MAX_WITHIN);
            assert_eq!(parse_within(&format!("?{WITHIN}={}", w.as_secs())), Some(w));
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_set_is_bounded_and_drops_the_oldest() {
        let mut s = SeenSet::new(3);
        for n in 1..=3 {
            s.fetched(ip(n));
        }
        // Seen again: no new entry, no reordering.
        s.fetched(ip(1));
        s.finished(ip(2));
        assert_eq!(s.len(), 3);
        s.fetched(ip(4));
        assert_eq!(s.len(), 3);
        assert_eq!(s.answer(ip(1)), SeenAnswer::default());
        assert_eq!(
            s.answer(ip(2)),
            SeenAnswer {
                seen: true,
                done: true
            }
        );
        assert_eq!(
            s.answer(ip(4)),
            SeenAnswer {
                seen: true,
                done: false
            }
        );
        // A node that only says it is done was seen too; done never goes back.
        s.finished(ip(5));
        s.fetched(ip(5));
        assert!(s.answer(ip(5)).seen && s.answer(ip(5)).done);
        // The default bound, filled past it: never more than MAX_SEEN entries.
        let mut big = SeenSet::default();
        for n in 0..(MAX_SEEN as u32 + 10) {
            big.fetched(ip(n));
        }
        assert_eq!(big.len(), MAX_SEEN);
        assert!(!big.answer(ip(0)).seen && big.answer(ip(MAX_SEEN as u32 + 9)).seen);
    }

    #[test]
    fn a_server_can_count_only_what_it_heard_lately() {
        let mut s = SeenSet::default();
        s.fetched(ip(1));
        assert!(s.answer_within(ip(1), Some(Duration::from_secs(60))).seen);
        std::thread::sleep(Duration::from_millis(1500));
        // Heard of 1.5 s ago: not within the last second (nothing can make it sooner).
        assert!(!s.answer_within(ip(1), Some(Duration::from_secs(1))).seen);
        assert!(s.answer(ip(1)).seen);
        // Heard of again: counts again (unless this thread stalls for a whole second
        // between the two lines).
        s.fetched(ip(1));
        assert!(s.answer_within(ip(1), Some(Duration::from_secs(1))).seen);
    }

    #[test]
    fn v4_mapped_addresses_are_the_same_node() {
        let mut s = SeenSet::default();
        s.fetched("::ffff:10.0.0.7".parse().unwrap());
        assert!(s.answer("10.0.0.7".parse().unwrap()).seen);
    }

    #[test]
    fn answers_are_parsed_typed_and_bounded() {
        let a = SeenAnswer {
            seen: true,
            done: false,
        };
        assert_eq!(SeenAnswer::parse(a.to_json().as_bytes()), Ok(a));
        // Unknown fields are ignored, `done` may be missing.
        assert_eq!(
            SeenAnswer::parse(br#"{"seen":true,"since":12}"#),
            Ok(SeenAnswer {
                seen: true,
                done: false
            })
        );
        for bad in [
            &b""[..],
            b"{}",
            b"{\"seen\":\"yes\"}",
            b"[true]",
            b"seen",
            b"{\"seen\":true",
        ] {
            assert!(SeenAnswer::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!(
            "{{\"seen\":true,\"x\":\"{}\"}}",
            "a".repeat(MAX_ANSWER_BYTES)
        );
        assert_eq!(SeenAnswer::parse(long.as_bytes()), Err(SeenError::TooLong));
    }

    #[test]
    fn a_query_can_bound_how_long_ago_counts() {
        let a: IpAddr = "10.0.0.12".parse().unwrap();
        let url = query_path_within(a, Duration::from_millis(35_200));
        assert_eq!(url, ".seen/10.0.0.12?within=36");
        assert_eq!(parse_query(url.split('?').next().unwrap()), Some(Ok(a)));
        assert_eq!(parse_within(&url), Some(Duration::from_secs(36)));
        assert_eq!(
            parse_within("/g/.seen/10.0.0.1?x=1&within=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_within("/g/.seen/10.0.0.1?within=99999999999"),
            Some(MAX_WITHIN)
        );
        for bad in [
            "/g/.seen/10.0.0.1",
            "?within=",
            "?within=-1",
            "?within=1e3",
            "?within=1x",
            "?withinx=3",
            "?within=9999999999999",
        ] {
            assert_eq!(parse_within(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_name_one_address() {
        let a: IpAddr = "10.0.0.12".parse().unwrap();
        assert_eq!(parse_query(&query_path(a)), Some(Ok(a)));
        assert_eq!(parse_query(".seen/not-an-ip"), Some(Err(())));
        assert_eq!(parse_query(".seen/10.0.0.1/x"), Some(Err(())));
        assert_eq!(parse_query("manifest"), None);
        assert_eq!(parse_query(".seen"), None);
        assert_eq!(parse_query(".seenx/10.0.0.1"), None);
    }
}
