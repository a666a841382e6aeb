//! The checks an image source makes before and after a request, as pure functions: which
//! URLs this build fetches ([`check_url`]), which ranges it asks for ([`check_range`]) and
//! which answers to a range it takes ([`range_reply`]). Each refusal is a typed error
//! whose message says what was refused and why; they carry no source (nothing below
//! them failed). The HTTP requests themselves are `super`'s.

use crate::chunk::MAX_FRAME;

/// An image URL this build will not fetch from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{url}: https:// is not supported (no TLS in this build or the boot ramdisk); serve the images over http:// and sign them (docs/TRUST.md)")]
    Https { url: String },
    #[error("{url}: not an http:// URL")]
    NotHttp { url: String },
}

/// A range not asked for, or an answer to a range request not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("refusing to read {len} bytes at {offset}: more than one frame ({MAX_FRAME} bytes at most) or past 2^64")]
    TooLarge { offset: u64, len: u64 },
    #[error("HTTP {status} to a Range request (expected 206)")]
    Status { status: u16 },
    #[error("transfer encoding {encoding:?} where a Content-Length was expected")]
    TransferEncoding { encoding: String },
    #[error("no Content-Length in the response")]
    NoContentLength,
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    #[error("Content-Range {content_range:?} in a 206 answer to {asked}")]
    BadContentRange {
        content_range: String,
        asked: String,
    },
    #[error("Content-Range {content_range:?} with Content-Length {length} does not match the range asked for ({asked})")]
    Mismatch {
        content_range: String,
        length: u64,
        asked: String,
    },
}

/// An image server URL this build can fetch from: `http://` only. No TLS is compiled
/// in (a boot ramdisk has no CA certificates to check a server with anyway); origin comes
/// from signed images (docs/TRUST.md). The error says so instead of a bare connect failure.
pub fn check_url(url: &str) -> Result<(), UrlError> {
    if url.starts_with("https://") {
        return Err(UrlError::Https { url: url.into() });
    }
    if !url.starts_with("http://") {
        return Err(UrlError::NotHttp { url: url.into() });
    }
    Ok(())
}

/// A range read allocates what it is asked for: at most one frame
/// ([`crate::chunk::MAX_FRAME`]), and `offset + len` must not overflow.
pub(super) fn check_range(offset: u64, len: u64) -> Result<(), RangeError> {
    if len > MAX_FRAME || offset.checked_add(len).is_none() {
        return Err(RangeError::TooLarge { offset, len });
    }
    Ok(())
}

/// The framing headers of an answer to `Range: bytes=o-(o+l-1)`.
pub(crate) struct RangeReply {
    pub status: u16,
    pub content_length: Option<String>,
    pub content_range: Option<String>,
    pub transfer_encoding: Option<String>,
}

/// How many body bytes of an answer to a request for `l` bytes at `o` to read, or why the
/// answer is refused. A `206` must carry a `Content-Range` starting at `o`, no longer
/// than asked (shorter is a file that ends sooner: `read_optional` asks for one byte
/// more than it accepts) and a `Content-Length` equal to it; a `200` (a server that
/// ignores `Range`) is only taken for `o = 0`, and only its first `l` bytes. Bodies must
/// have a `Content-Length`: a chunked or close-delimited body could not be bounded
/// before it is read.
pub(crate) fn range_reply(r: &RangeReply, o: u64, l: u64) -> Result<u64, RangeError> {
    let l = l.max(1);
    if !(r.status == 206 || r.status == 200 && o == 0) {
        return Err(RangeError::Status { status: r.status });
    }
    if let Some(te) = r.transfer_encoding.as_deref() {
        if !te.trim().eq_ignore_ascii_case("identity") {
            return Err(RangeError::TransferEncoding {
                encoding: te.into(),
            });
        }
    }
    let Some(cl) = r.content_length.as_deref() else {
        return Err(RangeError::NoContentLength);
    };
    let n: u64 = cl
        .trim()
        .parse()
        .map_err(|_| RangeError::BadContentLength(cl.into()))?;
    if r.status == 200 {
        return Ok(n.min(l));
    }
    let asked = format!("bytes {o}-{}", o.saturating_add(l - 1));
    let cr = r.content_range.as_deref().unwrap_or("");
    let (start, end) = parse_content_range(cr).ok_or_else(|| RangeError::BadContentRange {
        content_range: cr.into(),
        asked: asked.clone(),
    })?;
    if start != o || end - start >= l || end - start + 1 != n {
        return Err(RangeError::Mismatch {
            content_range: cr.into(),
            length: n,
            asked,
        });
    }
    Ok(n)
}

/// `bytes a-b/total` (total may be `*`) → (a, b) with a ≤ b.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    if total.trim() != "*" {
        let total: u64 = total.trim().parse().ok()?;
        if b >= total {
            return None;
        }
    }
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, cl: Option<&str>, cr: Option<&str>) -> RangeReply {
        RangeReply {
            status,
            content_length: cl.map(str::to_string),
            content_range: cr.map(str::to_string),
            transfer_encoding: None,
        }
    }

    #[test]
    fn only_plain_http_urls_are_fetched() {
        assert_eq!(check_url("http://s:8080/img"), Ok(()));
        let e = check_url("https://s/img").unwrap_err();
        assert_eq!(
            e,
            UrlError::Https {
                url: "https://s/img".into()
            }
        );
        assert!(e
            .to_string()
            .starts_with("https://s/img: https:// is not supported"));
        assert_eq!(
            check_url("ftp://s/img").unwrap_err().to_string(),
            "ftp://s/img: not an http:// URL"
        );
    }

    #[test]
    fn a_range_is_one_frame_at_most_and_never_wraps() {
        assert_eq!(check_range(u64::MAX - 10, 10), Ok(()));
        assert_eq!(
            check_range(u64::MAX - 10, 11),
            Err(RangeError::TooLarge {
                offset: u64::MAX - 10,
                len: 11
            })
        );
        let e = check_range(0, MAX_FRAME + 1).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("refusing to read {} bytes at 0", MAX_FRAME + 1)),
            "{e}"
        );
    }

    #[test]
    fn an_answer_is_taken_only_as_asked() {
        // 100 bytes at 1000: exactly that, or a shorter tail of the file.
        let ok = reply(206, Some("100"), Some("bytes 1000-1099/5000"));
        assert_eq!(range_reply(&ok, 1000, 100), Ok(100));
        let tail = reply(206, Some("10"), Some("bytes 1000-1009/1010"));
        assert_eq!(range_reply(&tail, 1000, 100), Ok(10));
        // A server ignoring Range: only from offset 0, and only what was asked.
        assert_eq!(
            range_reply(&reply(200, Some("5000"), None), 0, 100),
            Ok(100)
        );
        assert_eq!(
            range_reply(&reply(200, Some("5000"), None), 1000, 100),
            Err(RangeError::Status { status: 200 })
        );
        let shifted = reply(206, Some("100"), Some("bytes 1001-1100/5000"));
        assert_eq!(
            range_reply(&shifted, 1000, 100).unwrap_err().to_string(),
            "Content-Range \"bytes 1001-1100/5000\" with Content-Length 100 does not match the range asked for (bytes 1000-1099)"
        );
        assert_eq!(
            range_reply(&reply(206, None, Some("bytes 0-9/10")), 0, 10),
            Err(RangeError::NoContentLength)
        );
        assert_eq!(
            range_reply(&reply(206, Some("x"), Some("bytes 0-9/10")), 0, 10),
            Err(RangeError::BadContentLength("x".into()))
        );
        assert!(matches!(
            range_reply(&reply(206, Some("10"), Some("bytes 9-0/10")), 0, 10),
            Err(RangeError::BadContentRange { .. })
        ));
        let mut chunked = reply(206, Some("10"), Some("bytes 0-9/10"));
        chunked.transfer_encoding = Some("chunked".into());
        assert!(matches!(
            range_reply(&chunked, 0, 10),
            Err(RangeError::TransferEncoding { .. })
        ));
    }
}
