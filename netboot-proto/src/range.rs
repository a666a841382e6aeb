//! The HTTP `Range: bytes=…` header, as `imgtool serve` and a relaying node answer it: one
//! range (a multi-range request gets the whole file), against a file of known length.
//! What is not a byte range at all is ignored (serve everything); a byte range no byte of
//! the file satisfies, or one that does not parse, is [`Unsatisfiable`] (416).

/// A `Range` header that no byte of the file satisfies (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("range not satisfiable")]
pub struct Unsatisfiable;

/// Parses a single-range `Range: bytes=…` header against a file of `len` bytes: the first
/// and last byte, both inclusive and inside the file. `Ok(None)`: no usable range (serve
/// everything).
pub fn parse_range(h: &str, len: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| Unsatisfiable)?, len.saturating_sub(1)),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| Unsatisfiable)?;
            let e: u64 = e.parse().map_err(|_| Unsatisfiable)?;
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len || end < start {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(parse_range("bytes=-10", 1000), Ok(Some((990, 999))));
        assert_eq!(parse_range("bytes=990-2000", 1000), Ok(Some((990, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=5-1", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range("items=0-1", 1000), Ok(None));
    }

    #[test]
    fn hostile_ranges_are_refused_not_wrapped() {
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=-0",
            "bytes=x-1",
            "bytes=1-y",
            "bytes=--5",
            "bytes=18446744073709551616-",
            "bytes=0-18446744073709551616",
            "bytes=\u{0}-1",
        ] {
            assert_eq!(parse_range(bad, 1000), Err(Unsatisfiable), "{bad:?}");
        }
        // Every answer lies inside the file, whatever the numbers.
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 10),
            Ok(Some((0, 9)))
        );
        assert_eq!(
            parse_range("bytes=-18446744073709551615", 10),
            Ok(Some((0, 9)))
        );
        assert_eq!(parse_range("bytes=0-", 0), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=-1", 0), Err(Unsatisfiable));
    }
}
