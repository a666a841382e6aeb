//! The upload protocol's wire forms as pure functions (fuzzed by `fuzz_targets/upload_wire.rs`):
//! which request a method and path under `/upload/` are ([`parse_route`]), the
//! `chunk_size` of a new session ([`parse_begin_query`]), a frame's headers
//! ([`FrameHeaders::parse`]), the bearer token ([`bearer`], [`check_token`]) and the
//! session id. Nothing here touches a file or a socket; docs/PROTOCOL.md ("Upload") is
//! the description of the protocol.
//!
//! Paths are taken as sent: no percent-decoding is done, and any `%`, `\`, `..`, empty or
//! dot-leading segment is refused, so no form of a path can name a file: the server
//! builds every file name it writes itself (`head.zst`, `p<N>.zst`, `layout`,
//! `manifest`) from the parsed numbers.

use netboot_proto::names::{name, Kind};

/// Where every upload request goes.
pub const PREFIX: &str = "/upload/";

/// Hex digits of a session id (128 random bits).
pub const SESSION_HEX: usize = 32;

/// A token is 16 to 128 characters of `A-Z a-z 0-9 _ -`.
pub const MIN_TOKEN: usize = 16;
pub const MAX_TOKEN: usize = 128;

/// Highest partition number a region may have (the GPT reader's entry bound).
pub const MAX_PARTITION: u32 = crate::table::MAX_GPT_ENTRIES;

/// Most chunks one upload may send (all regions together). A manifest holds at most
/// ~160 000 chunks ([`crate::limits::MAX_MANIFEST_BYTES`]); this bounds what the server
/// records per session (about 200 bytes a chunk).
pub const MAX_CHUNKS: usize = 1 << 18;

/// Why a request is not an upload request the server understands (answered 400, or 404
/// for a path that is no upload route).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("no such upload route: {0}")]
    NoRoute(String),
    #[error("{0}")]
    Bad(String),
}

/// A region as the upload names it: the disk head or partition N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionName {
    Head,
    Partition(u32),
}

impl RegionName {
    /// The region's name in the manifest (`head`, `p<N>`).
    pub fn name(self) -> String {
        match self {
            RegionName::Head => "head".into(),
            RegionName::Partition(n) => format!("p{n}"),
        }
    }

    /// Its payload file, as capture names it (`head.zst`, `p<N>.zst`).
    pub fn payload(self) -> String {
        format!("{}.zst", self.name())
    }

    /// `head` or `p<N>` with N in 1..=[`MAX_PARTITION`], digits only, no leading zero.
    pub fn parse(s: &str) -> Result<RegionName, WireError> {
        if s == "head" {
            return Ok(RegionName::Head);
        }
        let bad = || WireError::Bad(format!("region {:?} is neither `head` nor `p<N>`", cut(s)));
        let digits = s.strip_prefix('p').ok_or_else(bad)?;
        let n = decimal(digits).ok_or_else(bad)?;
        match u32::try_from(n) {
            Ok(n) if (1..=MAX_PARTITION).contains(&n) => Ok(RegionName::Partition(n)),
            _ => Err(WireError::Bad(format!(
                "partition number {n} is outside 1..={MAX_PARTITION}"
            ))),
        }
    }
}

/// What an upload request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST /upload/<group>`: start a session.
    Begin { group: &'a str },
    /// `PUT /upload/<group>/<session>/<region>/<index>`: one chunk's frame.
    Frame {
        group: &'a str,
        session: &'a str,
        region: RegionName,
        index: usize,
    },
    /// `PUT /upload/<group>/<session>/layout`.
    Layout { group: &'a str, session: &'a str },
    /// `PUT /upload/<group>/<session>/manifest`: the last request; publishes.
    Manifest { group: &'a str, session: &'a str },
    /// `DELETE /upload/<group>/<session>`: give up, nothing published.
    Abort { group: &'a str, session: &'a str },
}

impl Route<'_> {
    /// The group the request is for.
    pub fn group(&self) -> &str {
        match self {
            Route::Begin { group }
            | Route::Frame { group, .. }
            | Route::Layout { group, .. }
            | Route::Manifest { group, .. }
            | Route::Abort { group, .. } => group,
        }
    }
}

/// Parses an upload request's method and path (without its query).
pub fn parse_route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, WireError> {
    let rest = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| WireError::NoRoute(cut(path)))?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() > 4 {
        return Err(WireError::NoRoute(cut(path)));
    }
    for p in &parts {
        if p.is_empty() || p.starts_with('.') || p.contains(['%', '\\', '\0']) {
            return Err(WireError::Bad(format!(
                "path segment {:?} refused (empty, dot-leading, %-encoded or a backslash)",
                cut(p)
            )));
        }
    }
    let group = parts[0];
    name(Kind::Image, group).map_err(|(_, why)| WireError::Bad(why))?;
    if parts.len() >= 2 {
        check_session(parts[1])?;
    }
    let route = match (method, &parts[..]) {
        ("POST", [_]) => Route::Begin { group },
        ("DELETE", [_, session]) => Route::Abort { group, session },
        ("PUT", [_, session, "layout"]) => Route::Layout { group, session },
        ("PUT", [_, session, "manifest"]) => Route::Manifest { group, session },
        ("PUT", [_, session, region, index]) => {
            let region = RegionName::parse(region)?;
            let index = decimal(index)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < MAX_CHUNKS)
                .ok_or_else(|| {
                    WireError::Bad(format!(
                        "chunk index {:?} is not a number below {MAX_CHUNKS}",
                        cut(index)
                    ))
                })?;
            Route::Frame {
                group,
                session,
                region,
                index,
            }
        }
        _ => return Err(WireError::NoRoute(format!("{method} {}", cut(path)))),
    };
    Ok(route)
}

/// A session id: [`SESSION_HEX`] lower-case hex digits.
pub fn check_session(s: &str) -> Result<(), WireError> {
    if s.len() == SESSION_HEX && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(WireError::Bad(format!(
            "session id {:?} is not {SESSION_HEX} lower-case hex digits",
            cut(s)
        )))
    }
}

/// The `chunk_size` of `POST /upload/<group>?chunk_size=N` (1..=[`crate::chunk::MAX_CHUNK`];
/// other query fields are ignored). It bounds every frame of the session.
pub fn parse_begin_query(query: &str) -> Result<u64, WireError> {
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("chunk_size="))
        .ok_or_else(|| WireError::Bad("POST /upload/<group> needs ?chunk_size=N".into()))?;
    decimal(value)
        .filter(|n| (1..=crate::chunk::MAX_CHUNK).contains(n))
        .ok_or_else(|| {
            WireError::Bad(format!(
                "chunk_size {:?} is not a number in 1..={}",
                cut(value),
                crate::chunk::MAX_CHUNK
            ))
        })
}

/// A frame's description, from its request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeaders {
    /// Where the frame goes in its region's payload file.
    pub payload_offset: u64,
    /// Raw bytes the frame decompresses to.
    pub raw_length: u64,
    /// sha256 of the raw bytes (64 lower-case hex digits), if the client declared it.
    /// Absent (what our client sends), the server's raw check computes it and the
    /// commit fills it into the manifest: the client does not hash the raw bytes a
    /// second time (docs/PROTOCOL.md, "Upload").
    pub raw_sha256: Option<String>,
    /// sha256 of the frame.
    pub frame_sha256: String,
}

pub const H_PAYLOAD_OFFSET: &str = "X-Payload-Offset";
pub const H_RAW_LENGTH: &str = "X-Raw-Length";
pub const H_RAW_SHA256: &str = "X-Raw-Sha256";
pub const H_FRAME_SHA256: &str = "X-Frame-Sha256";

impl FrameHeaders {
    /// Reads the headers through `get` (a request's header lookup); `raw_length` must be
    /// in 1..=`chunk_size`; [`H_RAW_SHA256`] is optional, but if sent it must be a sha256.
    pub fn parse<'h>(
        get: impl Fn(&str) -> Option<&'h str>,
        chunk_size: u64,
    ) -> Result<FrameHeaders, WireError> {
        let field = |k: &str| {
            get(k)
                .map(str::trim)
                .ok_or_else(|| WireError::Bad(format!("header {k} missing")))
        };
        let number = |k: &str| {
            let v = field(k)?;
            decimal(v).ok_or_else(|| {
                WireError::Bad(format!("header {k}: {:?} is not a decimal number", cut(v)))
            })
        };
        let sha = |k: &str| {
            let v = field(k)?;
            if v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                Ok(v.to_string())
            } else {
                Err(WireError::Bad(format!(
                    "header {k}: {:?} is not 64 lower-case hex digits",
                    cut(v)
                )))
            }
        };
        let raw_length = number(H_RAW_LENGTH)?;
        if raw_length == 0 || raw_length > chunk_size {
            return Err(WireError::Bad(format!(
                "header {H_RAW_LENGTH}: {raw_length} is not in 1..={chunk_size} (the session's chunk_size)"
            )));
        }
        Ok(FrameHeaders {
            payload_offset: number(H_PAYLOAD_OFFSET)?,
            raw_length,
            raw_sha256: match get(H_RAW_SHA256) {
                None => None,
                Some(_) => Some(sha(H_RAW_SHA256)?),
            },
            frame_sha256: sha(H_FRAME_SHA256)?,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A token's syntax: [`MIN_TOKEN`]..=[`MAX_TOKEN`] characters of `A-Z a-z 0-9 _ -`.
pub fn check_token(t: &str) -> Result<(), String> {
    if !(MIN_TOKEN..=MAX_TOKEN).contains(&t.len()) {
        return Err(format!(
            "a token has {MIN_TOKEN} to {MAX_TOKEN} characters, this one {}",
            t.len()
        ));
    }
    match t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(format!(
            "a token is made of A-Z a-z 0-9 _ -, this one has {:?}",
            c
        )),
        None => Ok(()),
    }
}

/// A plain decimal number: 1 to 20 ASCII digits (no sign, no space, no leading zero),
/// fitting u64: one number has one spelling.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty()
        || s.len() > 20
        || (s.len() > 1 && s.starts_with('0'))
        || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// `s` cut to 80 bytes at a character boundary, for messages.
pub(crate) fn cut(s: &str) -> String {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn routes_parse_and_paths_that_could_name_a_file_do_not() {
        assert_eq!(
            parse_route("POST", "/upload/compute"),
            Ok(Route::Begin { group: "compute" })
        );
        assert_eq!(
            parse_route("PUT", &format!("/upload/compute/{S}/p2/7")),
            Ok(Route::Frame {
                group: "compute",
                session: S,
                region: RegionName::Partition(2),
                index: 7
            })
        );
        assert!(matches!(
            parse_route("PUT", &format!("/upload/compute/{S}/manifest")),
            Ok(Route::Manifest { .. })
        ));
        assert!(matches!(
            parse_route("DELETE", &format!("/upload/compute/{S}")),
            Ok(Route::Abort { .. })
        ));
        for bad in [
            "/upload/../etc".to_string(),
            "/upload/%2e%2e/x".into(),
            "/upload/compute%2F..".into(),
            "/upload//etc/passwd".into(),
            "/upload/.upload".into(),
            "/upload/com pute".into(),
            "/upload/compute@abc".into(),
            format!("/upload/compute/{S}/../../x/1"),
            format!("/upload/compute/{S}/p2/..%2f..%2fx"),
            format!("/upload/compute/{S}/p02/1"),
            format!("/upload/compute/{S}/p0/1"),
            format!("/upload/compute/{S}/p99999999999/1"),
            format!("/upload/compute/{S}/head/+1"),
            format!("/upload/compute/{S}/head/{MAX_CHUNKS}"),
            format!("/upload/compute/{}/layout", S.to_uppercase()),
            "/upload/compute/../../../tmp/layout".into(),
        ] {
            assert!(parse_route("PUT", &bad).is_err(), "{bad}");
            assert!(parse_route("POST", &bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_route("GET", "/upload/compute"),
            Err(WireError::NoRoute(_))
        ));
        assert!(matches!(
            parse_route("POST", "/status/x"),
            Err(WireError::NoRoute(_))
        ));
    }

    #[test]
    fn frame_headers_are_bounded_numbers_and_hashes() {
        let sha = "a".repeat(64);
        let h = |k: &str| match k {
            H_PAYLOAD_OFFSET => Some("4096"),
            H_RAW_LENGTH => Some("100"),
            H_RAW_SHA256 | H_FRAME_SHA256 => Some(sha.as_str()),
            _ => None,
        };
        let f = FrameHeaders::parse(h, 1 << 20).unwrap();
        assert_eq!((f.payload_offset, f.raw_length), (4096, 100));
        assert_eq!(f.raw_sha256.as_deref(), Some(sha.as_str()));
        // The raw sha256 may be left to the server; the frame's may not.
        let undeclared = |k: &str| if k == H_RAW_SHA256 { None } else { h(k) };
        assert_eq!(
            FrameHeaders::parse(undeclared, 1 << 20).unwrap().raw_sha256,
            None
        );
        let no_frame_sum = |k: &str| if k == H_FRAME_SHA256 { None } else { h(k) };
        assert!(FrameHeaders::parse(no_frame_sum, 1 << 20).is_err());
        let empty = |k: &str| if k == H_RAW_SHA256 { Some("") } else { h(k) };
        assert!(
            FrameHeaders::parse(empty, 1 << 20).is_err(),
            "sent means checked"
        );
        assert!(
            FrameHeaders::parse(h, 99).is_err(),
            "raw length over chunk_size"
        );
        let no_sha = |k: &str| if k == H_RAW_SHA256 { Some("AB") } else { h(k) };
        assert!(FrameHeaders::parse(no_sha, 1 << 20).is_err());
        let neg = |k: &str| {
            if k == H_PAYLOAD_OFFSET {
                Some("-1")
            } else {
                h(k)
            }
        };
        assert!(FrameHeaders::parse(neg, 1 << 20).is_err());
        let huge = |k: &str| {
            if k == H_PAYLOAD_OFFSET {
                Some("99999999999999999999")
            } else {
                h(k)
            }
        };
        assert!(FrameHeaders::parse(huge, 1 << 20).is_err());
    }

    #[test]
    fn begin_query_tokens_and_bearer() {
        assert_eq!(parse_begin_query("chunk_size=8388608"), Ok(8 << 20));
        assert!(parse_begin_query("chunk_size=0").is_err());
        assert!(parse_begin_query(&format!("chunk_size={}", (64 << 20) + 1)).is_err());
        assert!(parse_begin_query("").is_err());
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
        assert!(check_token("abcdefghijklmnop").is_ok());
        assert!(check_token("short").is_err());
        assert!(check_token("abcdefghijklmnop/").is_err());
        assert!(check_token(&"a".repeat(129)).is_err());
    }
}
