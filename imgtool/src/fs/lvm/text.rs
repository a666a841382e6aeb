//! LVM2's text configuration format, as the metadata areas hold it: `name { … }`
//! sections, `key = value` items whose value is an integer, a float, a string (with `\`
//! escapes) or a flat array of those, and `#` comments. Only parsing lives here; what the
//! values mean is [`super::meta`]'s.
//!
//! Input is hostile: the parser is iterative over tokens and recursive only over
//! sections, which nest at most [`MAX_DEPTH`] deep; the whole tree holds at most
//! [`MAX_NODES`] items and array elements; anything else (an unterminated string, a
//! nested array, a missing `}`) is an error, never a panic.

use thiserror::Error;

/// Sections nest at most this deep. Real metadata nests 4 deep (VG → `logical_volumes` →
/// LV → segment); the bound keeps the recursion's stack small.
pub const MAX_DEPTH: usize = 16;

/// Items, sections and array elements in one text at most. A VG of 1 000 LVs with a few
/// segments each has ~40 000; a 4 MiB text cannot hold more than ~1.4 M tokens anyway.
pub const MAX_NODES: usize = 1 << 20;

/// Why a text was not accepted; `at` is a byte offset into it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TextError {
    /// LVM metadata text: {what} at byte {at}
    #[error("LVM metadata text: {what} at byte {at}")]
    Syntax { what: &'static str, at: usize },
    /// LVM metadata text: sections nest deeper than MAX_DEPTH
    #[error("LVM metadata text: sections nest deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: usize },
    /// LVM metadata text: more than MAX_NODES items
    #[error("LVM metadata text: more than {MAX_NODES} items")]
    TooMany,
}

/// A scalar or array value, with the byte span of its text (for in-place edits).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64, Span),
    /// A number that is not a 64-bit integer (`1.5`, or too large): kept as its text.
    Other(String, Span),
    Str(String, Span),
    Array(Vec<Value>, Span),
}

/// Byte range `[start, end)` of a value in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// One item of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Value(Value),
    Section(Section),
}

/// A section: its items in text order (keys may repeat; lookups take the first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub items: Vec<(String, Item)>,
}

impl Section {
    /// The first item named `key`.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Item::Section(s) => Some(s),
            Item::Value(_) => None,
        }
    }
    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key)? {
            Item::Value(v) => Some(v),
            Item::Section(_) => None,
        }
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            Value::Int(i, _) => Some(*i),
            _ => None,
        }
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key)? {
            Value::Str(s, _) => Some(s),
            _ => None,
        }
    }
    /// The subsections, in text order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, v)| match v {
            Item::Section(s) => Some((k.as_str(), s)),
            Item::Value(_) => None,
        })
    }
}

/// Parses a whole text (a trailing NUL, as metadata areas store it, ends the text).
pub fn parse(text: &[u8]) -> Result<Section, TextError> {
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let mut p = Parser {
        t: &text[..end],
        pos: 0,
        nodes: 0,
    };
    let root = p.section(0)?;
    if p.pos < p.t.len() {
        return Err(p.err("'}' without a section"));
    }
    Ok(root)
}

struct Parser<'a> {
    t: &'a [u8],
    pos: usize,
    nodes: usize,
}

/// Bytes that end a bare word.
fn special(b: u8) -> bool {
    matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b'=' | b'"' | b'#') || b.is_ascii_whitespace()
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> TextError {
        TextError::Syntax { what, at: self.pos }
    }

    fn count(&mut self) -> Result<(), TextError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(TextError::TooMany);
        }
        Ok(())
    }

    /// Skips white space and comments; the next byte, if any.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.t.get(self.pos) {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else if b == b'#' {
                while self.t.get(self.pos).is_some_and(|c| *c != b'\n') {
                    self.pos += 1;
                }
            } else {
                return Some(b);
            }
        }
        None
    }

    /// Items until `}` (depth > 0, consumed) or the end of the text (depth 0).
    fn section(&mut self, depth: usize) -> Result<Section, TextError> {
        if depth > MAX_DEPTH {
            return Err(TextError::TooDeep { at: self.pos });
        }
        let mut s = Section::default();
        loop {
            match self.peek() {
                None if depth == 0 => return Ok(s),
                None => return Err(self.err("unterminated section")),
                Some(b'}') if depth > 0 => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(b'}') => return Ok(s),
                Some(_) => {}
            }
            let key = self.word().ok_or_else(|| self.err("expected a name"))?;
            self.count()?;
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let sub = self.section(depth + 1)?;
                    s.items.push((key, Item::Section(sub)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    let v = self.value()?;
                    s.items.push((key, Item::Value(v)));
                }
                _ => return Err(self.err("expected '=' or '{' after a name")),
            }
        }
    }

    /// A bare word (name or number), `None` when there is none here.
    fn word(&mut self) -> Option<String> {
        let start = self.pos;
        while self.t.get(self.pos).is_some_and(|b| !special(*b)) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.t[start..self.pos]).into())
    }

    fn value(&mut self) -> Result<Value, TextError> {
        match self.peek() {
            Some(b'[') => self.array(),
            _ => self.scalar(),
        }
    }

    fn array(&mut self) -> Result<Value, TextError> {
        let start = self.pos;
        self.pos += 1;
        let mut v = vec![];
        // After an element a ',' or the ']' must follow; after '[' or ',' an element
        // (or, right after '[', the ']' of an empty array).
        let mut after_elem = false;
        loop {
            match self.peek() {
                Some(b']') if after_elem || v.is_empty() => {
                    self.pos += 1;
                    let span = Span {
                        start,
                        end: self.pos,
                    };
                    return Ok(Value::Array(v, span));
                }
                None => return Err(self.err("unterminated array")),
                Some(b',') if after_elem => {
                    self.pos += 1;
                    after_elem = false;
                }
                Some(b'[') => return Err(self.err("nested array")),
                Some(_) if after_elem => return Err(self.err("expected ',' or ']'")),
                Some(_) => {
                    self.count()?;
                    v.push(self.scalar()?);
                    after_elem = true;
                }
            }
        }
    }

    fn scalar(&mut self) -> Result<Value, TextError> {
        match self.peek() {
            Some(b'"') => self.string(),
            None => Err(self.err("missing value")),
            Some(_) => {
                let start = self.pos;
                let w = self.word().ok_or_else(|| self.err("expected a value"))?;
                let span = Span {
                    start,
                    end: self.pos,
                };
                if !w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
                    return Err(TextError::Syntax {
                        what: "a value is neither a number nor a string",
                        at: start,
                    });
                }
                Ok(match w.parse::<i64>() {
                    Ok(i) => Value::Int(i, span),
                    Err(_) => Value::Other(w, span),
                })
            }
        }
    }

    /// A `"…"` string; `\x` stands for `x` (LVM escapes `"` and `\` this way).
    fn string(&mut self) -> Result<Value, TextError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = vec![];
        loop {
            match self.t.get(self.pos) {
                None => {
                    return Err(TextError::Syntax {
                        what: "unterminated string",
                        at: start,
                    })
                }
                Some(b'"') => {
                    self.pos += 1;
                    let span = Span {
                        start,
                        end: self.pos,
                    };
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into(), span));
                }
                Some(b'\\') => {
                    let c = self.t.get(self.pos + 1).ok_or(TextError::Syntax {
                        what: "unterminated string",
                        at: start,
                    })?;
                    out.push(*c);
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(*c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"vg0 {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ"]
flags = []
extent_size = 8192 # 4 MiB
physical_volumes {
pv0 {
id = "x"
pe_count = 49
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
description = "say \"hi\" \\ there"
creation_time = 1795936433	# Sun
"#;

    #[test]
    fn parses_sections_values_arrays_comments_and_escapes() {
        let root = parse(SAMPLE.as_bytes()).unwrap();
        let vg = root.section("vg0").unwrap();
        assert_eq!(vg.str("id"), Some("abc"));
        assert_eq!(vg.int("seqno"), Some(3));
        assert_eq!(vg.int("extent_size"), Some(8192));
        match vg.value("status") {
            Some(Value::Array(a, _)) => assert_eq!(a.len(), 2),
            v => panic!("{v:?}"),
        }
        assert!(matches!(vg.value("flags"), Some(Value::Array(a, _)) if a.is_empty()));
        let pv = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv.int("pe_count"), Some(49));
        assert_eq!(root.str("description"), Some(r#"say "hi" \ there"#));
        // The span of an integer is its digits, for in-place edits.
        let Some(Value::Int(_, s)) = vg.value("seqno") else {
            panic!()
        };
        assert_eq!(&SAMPLE[s.start..s.end], "3");
    }

    #[test]
    fn a_trailing_nul_ends_the_text() {
        let mut t = b"a = 1\n".to_vec();
        t.extend_from_slice(b"\0garbage {{{");
        assert_eq!(parse(&t).unwrap().int("a"), Some(1));
    }

    #[test]
    fn hostile_texts_are_errors() {
        let deep = "a {".repeat(100_000);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(TextError::TooDeep { .. })
        ));
        let huge = format!("a = [{}0]", "0,".repeat(MAX_NODES + 1));
        assert_eq!(parse(huge.as_bytes()), Err(TextError::TooMany));
        for bad in [
            "a = \"never ends",
            "a = \"ends in a backslash\\",
            "a = [1, 2",
            "a = [[1]]",
            "a { b = 1",
            "}",
            "a = ",
            "a b",
            "a = {",
            "a = bare",
            "a = [1,,2]",
            "a = [1 2]",
            "a = [,]",
            "a = [1,]",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn numbers_that_do_not_fit_are_kept_as_text() {
        let root = parse(b"a = 99999999999999999999\nb = 1.5\nc = -3").unwrap();
        assert!(matches!(root.value("a"), Some(Value::Other(..))));
        assert!(matches!(root.value("b"), Some(Value::Other(..))));
        assert_eq!(root.int("c"), Some(-3));
    }
}
