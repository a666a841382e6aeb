//! Status reports: what a node agent `POST`s to `/status/<node>` of `imgtool serve`
//! ([`Report`]), and what `GET /status` answers per node ([`NodeStatus`]). Everything here
//! comes from the network on the reading side, so the bounds a board keeps are here too
//! ([`MAX_MESSAGE`], …, [`sanitize`]): a board cleans what it stores, and a client cleans
//! again what a board sends.
//!
//! The phase is a [`Phase`]: the phases today's agent sends have a variant each; any
//! other text (an older or newer agent, a hostile one) is kept as [`Phase::Other`], so a
//! board takes a report it does not understand just as it did when phases were strings.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest `message` kept (bytes; longer ones are cut, marked `…`). An agent's messages
/// are one line: a phase detail or an error chain.
pub const MAX_MESSAGE: usize = 512;

/// Longest `phase` (bytes).
pub const MAX_PHASE: usize = 32;

/// Longest `image` (bytes).
pub const MAX_IMAGE: usize = 128;

/// Longest node name on a board (bytes), and longest `upstream`.
pub const MAX_NODE_NAME: usize = 64;

/// Earlier phases and messages kept per node.
pub const MAX_HISTORY: usize = 32;

/// Longest history line (bytes).
pub const MAX_HISTORY_LINE: usize = 160;

/// Where a node is, as its agent reports it. On the wire a lower-case string (the
/// variant's [`Phase::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reading the image's layout, or the layout matched and the table is kept.
    Layout,
    /// The local table differs from the image's: repartitioning.
    Partitioning,
    /// Checking the image's frames before the first write (progress).
    Checking,
    /// Writing the image (progress).
    Restoring,
    /// Reading back what was written (progress).
    Verifying,
    /// The upstream failed; pulling from the next one up the chain.
    Rerouted,
    /// Backup: reading the disk, compressing and streaming the image to the server
    /// (progress: raw bytes read of the selected partitions).
    Capturing,
    /// Backup: every byte sent; the server checks the manifest and publishes the version.
    Publishing,
    /// The clone is finished and verified, or the backup published (final).
    Done,
    /// The clone or backup stopped with an error (final).
    Failed,
    /// Any other text: kept as it came (a board stores it cut to [`MAX_PHASE`]).
    Other(String),
}

impl Phase {
    /// Every phase with a variant, for tests and documentation.
    pub const KNOWN: [Phase; 10] = [
        Phase::Layout,
        Phase::Partitioning,
        Phase::Checking,
        Phase::Restoring,
        Phase::Verifying,
        Phase::Rerouted,
        Phase::Capturing,
        Phase::Publishing,
        Phase::Done,
        Phase::Failed,
    ];

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Phase::Layout => "layout",
            Phase::Partitioning => "partitioning",
            Phase::Checking => "checking",
            Phase::Restoring => "restoring",
            Phase::Verifying => "verifying",
            Phase::Rerouted => "rerouted",
            Phase::Capturing => "capturing",
            Phase::Publishing => "publishing",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Other(s) => s,
        }
    }

    /// `done` or `failed`: the node moves on (reboots, or waits at its console) after it.
    pub fn is_final(&self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }
}

/// No phase yet: the empty string (a board's new entry, before its first report).
impl Default for Phase {
    fn default() -> Phase {
        Phase::Other(String::new())
    }
}

impl From<&str> for Phase {
    fn from(s: &str) -> Phase {
        Phase::KNOWN
            .into_iter()
            .find(|p| p.as_str() == s)
            .unwrap_or_else(|| Phase::Other(s.to_string()))
    }
}

impl From<String> for Phase {
    fn from(s: String) -> Phase {
        match Phase::from(s.as_str()) {
            Phase::Other(_) => Phase::Other(s),
            known => known,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Phase {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Phase {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Phase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Phase, D::Error> {
        String::deserialize(d).map(Phase::from)
    }
}

/// What an agent reports (the body of `POST /status/<node>`). Fields other than `phase`
/// may be left out; unknown fields are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub phase: Phase,
    /// Progress within the phase (bytes).
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub message: String,
    /// Who the node pulls from (`primary` or a node name).
    #[serde(default)]
    pub upstream: String,
    #[serde(default)]
    pub image: String,
    /// What the restore checked, skipped and fetched so far ([`ChunkCounts`]); absent
    /// until the node knows (and from agents before delta re-clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkCounts>,
}

/// A restore's chunk counts: a node whose disk already holds most of the image (a
/// re-clone, issue 14) checks every chunk on its disk, skips those whose sha256 already
/// matches and fetches only the rest. Numbers only, so nothing here needs cleaning; a
/// board shows them as they came (a hostile agent can only lie about itself).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Chunks of the image (every one is checked or fetched).
    #[serde(default)]
    pub total: u64,
    /// Chunks whose bytes on the disk were hashed and compared.
    #[serde(default)]
    pub checked: u64,
    /// Chunks already correct on the disk: neither fetched nor written.
    #[serde(default)]
    pub skipped: u64,
    /// Chunks fetched from the upstream (verified and written).
    #[serde(default)]
    pub fetched: u64,
    /// Payload (compressed) bytes fetched.
    #[serde(default)]
    pub fetched_bytes: u64,
    /// The image's whole payload (compressed bytes): what a full clone fetches.
    #[serde(default)]
    pub payload_bytes: u64,
}

impl ChunkCounts {
    /// `fetched_bytes` as a share of `payload_bytes`, in percent (0 for an empty image).
    pub fn fetched_percent(&self) -> f64 {
        if self.payload_bytes == 0 {
            return 0.0;
        }
        100.0 * self.fetched_bytes as f64 / self.payload_bytes as f64
    }

    /// `42 chunks: 40 checked, 38 skipped, 4 fetched (1.2 MiB of 301.0 MiB payload, 0.4 %)`:
    /// the console's and the board's line.
    pub fn summary(&self) -> String {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        format!(
            "{} chunks: {} checked, {} skipped, {} fetched ({:.1} MiB of {:.1} MiB payload, {:.1} %)",
            self.total,
            self.checked,
            self.skipped,
            self.fetched,
            mib(self.fetched_bytes),
            mib(self.payload_bytes),
            self.fetched_percent()
        )
    }
}

impl Report {
    /// The report with every text field cleaned and cut to its bound ([`sanitize`]).
    pub fn sanitized(&self) -> Report {
        Report {
            phase: Phase::from(sanitize(self.phase.as_str(), MAX_PHASE)),
            done: self.done,
            total: self.total,
            message: sanitize(&self.message, MAX_MESSAGE),
            upstream: sanitize(&self.upstream, MAX_NODE_NAME),
            image: sanitize(&self.image, MAX_IMAGE),
            chunks: self.chunks,
        }
    }
}

/// A node's entry on the board (`GET /status` answers a JSON object of them by name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub node: String,
    pub last: Report,
    /// Seconds since the server started, at the last report.
    pub at: f64,
    /// Earlier phases and messages, oldest first (at most [`MAX_HISTORY`]).
    pub history: Vec<String>,
}

impl NodeStatus {
    /// The entry with every text cleaned and cut to its bound, and at most
    /// [`MAX_HISTORY`] history lines (the newest).
    pub fn sanitized(&self) -> NodeStatus {
        NodeStatus {
            node: sanitize(&self.node, MAX_NODE_NAME),
            last: self.last.sanitized(),
            at: self.at,
            history: self
                .history
                .iter()
                .rev()
                .take(MAX_HISTORY)
                .rev()
                .map(|h| sanitize(h, MAX_HISTORY_LINE))
                .collect(),
        }
    }
}

/// `s` safe to print on a terminal, at most `max` bytes: line breaks and tabs become
/// spaces; other control characters (C0, DEL, C1 — hence every escape sequence's ESC or
/// CSI) and bidirectional-text overrides become `�`; a longer text is cut at a character
/// boundary and ends with `…`.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            '\u{200E}'
            | '\u{200F}'
            | '\u{061C}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' => '\u{FFFD}',
            c => c,
        };
        if out.len() + c.len_utf8() > max {
            while !out.is_empty() && out.len() + '…'.len_utf8() > max {
                out.pop();
            }
            if max >= '…'.len_utf8() {
                out.push('…');
            }
            return out;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_keep_their_wire_strings() {
        let wire = [
            "layout",
            "partitioning",
            "checking",
            "restoring",
            "verifying",
            "rerouted",
            "capturing",
            "publishing",
            "done",
            "failed",
        ];
        for (p, w) in Phase::KNOWN.iter().zip(wire) {
            assert_eq!(p.as_str(), w);
            assert_eq!(serde_json::to_string(p).unwrap(), format!("\"{w}\""));
            assert_eq!(
                serde_json::from_str::<Phase>(&format!("\"{w}\"")).unwrap(),
                *p
            );
        }
        assert!(Phase::Done.is_final() && Phase::Failed.is_final());
        assert!(!Phase::Rerouted.is_final() && !Phase::from("booting").is_final());
    }

    #[test]
    fn an_unknown_phase_is_kept_as_it_came() {
        let r: Report = serde_json::from_str(r#"{"phase":"growing","extra":1}"#).unwrap();
        assert_eq!(r.phase, Phase::Other("growing".into()));
        assert_eq!(serde_json::to_string(&r.phase).unwrap(), "\"growing\"");
        assert_eq!(r.phase, "growing");
        // A known string always reads as its variant, never as Other.
        assert_eq!(Phase::from("failed".to_string()), Phase::Failed);
        // An escape sequence in a phase is cleaned and the phase cut to its bound.
        let r: Report =
            serde_json::from_str(&format!(r#"{{"phase":"x\u001b[2J{}"}}"#, "y".repeat(100)))
                .unwrap();
        let s = r.sanitized();
        assert!(s.phase.as_str().len() <= MAX_PHASE);
        assert!(!s.phase.as_str().chars().any(char::is_control));
    }

    #[test]
    fn reports_and_entries_round_trip() {
        let r = Report {
            phase: Phase::Restoring,
            done: 1 << 40,
            total: u64::MAX,
            message: "r1: 3 of 9 chunks \"quoted\" é".into(),
            upstream: "r1n1".into(),
            image: "compute".into(),
            chunks: Some(ChunkCounts {
                total: 9,
                checked: 9,
                skipped: 6,
                fetched: 3,
                fetched_bytes: 3 << 20,
                payload_bytes: 9 << 20,
            }),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
        let n = NodeStatus {
            node: "n1".into(),
            last: r,
            at: 12.5,
            history: vec!["1.0s layout reading image".into()],
        };
        let text = serde_json::to_string_pretty(&n).unwrap();
        assert_eq!(serde_json::from_str::<NodeStatus>(&text).unwrap(), n);
    }

    #[test]
    fn chunk_counts_are_optional_and_typed() {
        // A report from an agent before delta re-clone has none, and none is sent.
        let r: Report = serde_json::from_str(r#"{"phase":"done"}"#).unwrap();
        assert_eq!(r.chunks, None);
        assert!(!serde_json::to_string(&r).unwrap().contains("chunks"));
        let r: Report = serde_json::from_str(
            r#"{"phase":"done","chunks":{"total":100,"checked":100,"skipped":99,"fetched":1,"fetched_bytes":1048576,"payload_bytes":209715200}}"#,
        )
        .unwrap();
        let c = r.sanitized().chunks.unwrap();
        assert_eq!((c.checked, c.skipped, c.fetched), (100, 99, 1));
        assert_eq!(
            c.summary(),
            "100 chunks: 100 checked, 99 skipped, 1 fetched (1.0 MiB of 200.0 MiB payload, 0.5 %)"
        );
        // Counts must be numbers.
        assert!(
            serde_json::from_str::<Report>(r#"{"phase":"x","chunks":{"fetched":-1}}"#).is_err()
        );
        assert_eq!(ChunkCounts::default().fetched_percent(), 0.0);
    }

    #[test]
    fn hostile_reports_are_refused_or_bounded() {
        // No phase, or a phase of the wrong type: not a report.
        for bad in [
            r#"{}"#,
            r#"{"phase":5}"#,
            r#"{"phase":"x","done":-1}"#,
            r#"{"phase":"x","done":18446744073709551616}"#,
        ] {
            assert!(serde_json::from_str::<Report>(bad).is_err(), "{bad}");
        }
        let long = Report {
            phase: Phase::Other("p".repeat(10_000)),
            message: "é".repeat(10_000),
            upstream: "u".repeat(10_000),
            image: "i".repeat(10_000),
            ..Default::default()
        }
        .sanitized();
        assert!(long.phase.as_str().len() <= MAX_PHASE);
        assert!(long.message.len() <= MAX_MESSAGE && long.message.ends_with('…'));
        assert!(long.upstream.len() <= MAX_NODE_NAME);
        assert!(long.image.len() <= MAX_IMAGE);
        let n = NodeStatus {
            node: "n".repeat(1000),
            last: Report::default(),
            at: 0.0,
            history: (0..1000).map(|i| format!("{i}\u{1b}[2J")).collect(),
        }
        .sanitized();
        assert_eq!(n.history.len(), MAX_HISTORY);
        assert_eq!(n.history[MAX_HISTORY - 1], "999\u{FFFD}[2J");
        assert!(n.node.len() <= MAX_NODE_NAME);
    }
}
