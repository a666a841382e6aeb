//! A fast reader for *plain* TOML: the line-per-key subset that generated cluster files
//! use (`[table]` and `[[array]]` headers with bare keys; `key = value` with bare keys;
//! values that are one-line strings without escapes, decimal integers, plain decimal
//! floats, booleans, and one-line arrays of those; comments). It feeds serde directly,
//! with the same byte spans the `toml` crate gives [`toml::Spanned`] values.
//!
//! Why: at 100 000 nodes the `toml` crate spends ~0.4 s and ~200 MB on the 10.6 MB file
//! (a token vector, then a spanned tree of the whole document, then serde); this reader
//! borrows every string from the text and takes a tenth of that (docs/BENCH.md).
//!
//! It is an optimisation only, never the authority: anything outside the subset or
//! anything TOML forbids (a duplicate key or table, a control character, a `\r`, a
//! number with `_`, an escape, a multi-line value, …), and every serde error, gives
//! `None`, and the caller parses with the `toml` crate, whose diagnostics are the ones a
//! user sees. What it accepts it must read exactly as the `toml` crate does (values,
//! spans, serde behaviour): `crate::fuzzing::plain_toml` checks that on every input, and
//! `tests` below on the cases written out.
//!
//! Bounds: at most [`MAX_KEYS`] keys per table and [`MAX_ROOT`] top-level names (a
//! duplicate is found by a scan of the table; beyond these it is `None`, not quadratic).
//! Everything else is linear in the text.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::de::SpannedDeserializer;
use std::ops::Range;

/// Keys in one table (a `[cluster]` has ~20).
pub const MAX_KEYS: usize = 64;
/// Top-level names: the tables and arrays of tables (a cluster file has 4).
pub const MAX_ROOT: usize = 16;

/// Reads `text` into `T` when it is plain TOML that `T` accepts; `None` otherwise (then
/// parse with `toml::from_str`, which says what is wrong).
pub fn from_str<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Option<T> {
    let root = parse(text)?;
    let item = Item {
        span: 0..text.len(),
        value: Value::Table(root),
    };
    T::deserialize(item).ok()
}

#[derive(Debug)]
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Item<'a>>),
    Table(Table<'a>),
    /// An array of tables, made by `[[name]]` headers only.
    Tables(Vec<Item<'a>>),
}

/// A value and its bytes in the text (for a string, with its quotes).
#[derive(Debug)]
struct Item<'a> {
    span: Range<usize>,
    value: Value<'a>,
}

#[derive(Debug, Default)]
struct Table<'a> {
    entries: Vec<(&'a str, Item<'a>)>,
}

impl<'a> Table<'a> {
    /// Adds `key`; `None` when it is there already (TOML forbids it) or the table is full.
    fn insert(&mut self, key: &'a str, item: Item<'a>) -> Option<()> {
        if self.entries.len() >= MAX_KEYS || self.entries.iter().any(|(k, _)| *k == key) {
            return None;
        }
        self.entries.push((key, item));
        Some(())
    }
}

/// Where `key = value` lines go: the root, a `[table]`, or the last `[[array]]` table.
#[derive(Clone, Copy)]
enum Cursor {
    Root,
    Entry(usize),
}

/// Parses the whole text; `None` at the first thing outside the subset.
fn parse(text: &str) -> Option<Table<'_>> {
    // Control characters other than tab and newline: refused by TOML in comments and
    // strings, and `\r` (CRLF files) is left to the `toml` crate.
    if text
        .bytes()
        .any(|c| (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f)
    {
        return None;
    }
    let mut p = Parser { text, pos: 0 };
    let mut root = Table::default();
    let mut cursor = Cursor::Root;
    while let Some(c) = p.skip_ws() {
        match c {
            b'\n' => {
                p.pos += 1;
                continue;
            }
            b'#' => {}
            b'[' => cursor = p.header(&mut root)?,
            _ => {
                let key = p.bare_key()?;
                p.skip_ws();
                p.expect(b'=')?;
                p.skip_ws();
                let item = p.value()?;
                current(&mut root, cursor)?.insert(key, item)?;
            }
        }
        p.end_line()?;
    }
    Some(root)
}

/// The table `key = value` lines go to.
fn current<'t, 'a>(root: &'t mut Table<'a>, cursor: Cursor) -> Option<&'t mut Table<'a>> {
    let Cursor::Entry(i) = cursor else {
        return Some(root);
    };
    match &mut root.entries.get_mut(i)?.1.value {
        Value::Table(t) => Some(t),
        Value::Tables(ts) => match &mut ts.last_mut()?.value {
            Value::Table(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Skips spaces and tabs; the byte after them.
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t') = self.peek() {
            self.pos += 1;
        }
        self.peek()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.pos += 1)
    }

    fn starts_with(&self, s: &str) -> bool {
        self.text.as_bytes()[self.pos..].starts_with(s.as_bytes())
    }

    /// After a value or header: blanks, an optional comment, then a newline or the end.
    fn end_line(&mut self) -> Option<()> {
        if self.skip_ws() == Some(b'#') {
            let rest = &self.text.as_bytes()[self.pos..];
            self.pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        }
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.pos += 1;
                Some(())
            }
            Some(_) => None,
        }
    }

    /// `A-Za-z0-9_-`, at least one.
    fn bare_key(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while let Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-') = self.peek() {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    /// `[name]` or `[[name]]` (no blanks inside, no dotted names): defines the table, or
    /// adds one to the array, and returns where the following keys go.
    fn header(&mut self, root: &mut Table<'a>) -> Option<Cursor> {
        let start = self.pos;
        let array = self.starts_with("[[");
        self.pos += if array { 2 } else { 1 };
        let key = self.bare_key()?;
        self.expect(b']')?;
        if array {
            self.expect(b']')?;
        }
        let span = start..self.pos;
        let table = || Item {
            span: span.clone(),
            value: Value::Table(Table::default()),
        };
        if let Some(i) = root.entries.iter().position(|(k, _)| *k == key) {
            // Only another `[[name]]` may name it again.
            match (&mut root.entries[i].1.value, array) {
                (Value::Tables(ts), true) => ts.push(table()),
                _ => return None,
            }
            return Some(Cursor::Entry(i));
        }
        if root.entries.len() >= MAX_ROOT {
            return None;
        }
        let value = if array {
            Value::Tables(vec![table()])
        } else {
            Value::Table(Table::default())
        };
        root.entries.push((key, Item { span, value }));
        Some(Cursor::Entry(root.entries.len() - 1))
    }

    /// One value; after it must come a blank, a comment, a newline, `,`, `]` or the end.
    fn value(&mut self) -> Option<Item<'a>> {
        let start = self.pos;
        let value = match self.peek()? {
            b'"' => Value::Str(self.string(b'"')?),
            b'\'' => Value::Str(self.string(b'\'')?),
            b'[' => return self.array(),
            b't' if self.starts_with("true") => {
                self.pos += 4;
                Value::Bool(true)
            }
            b'f' if self.starts_with("false") => {
                self.pos += 5;
                Value::Bool(false)
            }
            b'+' | b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        };
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n' | b'#' | b',' | b']') => Some(Item {
                span: start..self.pos,
                value,
            }),
            Some(_) => None,
        }
    }

    /// A one-line string in `quote`s, without escapes (a basic string holding `\` and
    /// every multi-line string are left to the `toml` crate).
    fn string(&mut self, quote: u8) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        if bytes[self.pos..].starts_with(&[quote, quote, quote]) {
            return None;
        }
        let from = self.pos + 1;
        let len = bytes[from..].iter().position(|&c| c == quote)?;
        let s = &self.text[from..from + len];
        if s.contains('\n') || (quote == b'"' && s.contains('\\')) {
            return None;
        }
        self.pos = from + len + 1;
        Some(s)
    }

    /// A decimal integer (`i64`) or a float `digits.digits`, optionally signed, no
    /// leading zero, no `_`, no exponent.
    fn number(&mut self) -> Option<Value<'a>> {
        let start = self.pos;
        if let Some(b'+' | b'-') = self.peek() {
            self.pos += 1;
        }
        let digits = self.digits()?;
        if digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        if self.peek() != Some(b'.') {
            return self.text[start..self.pos].parse().ok().map(Value::Int);
        }
        self.pos += 1;
        self.digits()?;
        let f: f64 = self.text[start..self.pos].parse().ok()?;
        f.is_finite().then_some(Value::Float(f))
    }

    /// One or more ASCII digits.
    fn digits(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    /// `[a, b, …]` on one line, of strings, numbers and booleans (a trailing comma allowed).
    fn array(&mut self) -> Option<Item<'a>> {
        let start = self.pos;
        self.pos += 1;
        let mut items = vec![];
        loop {
            match self.skip_ws()? {
                b']' => break,
                b'[' => return None,
                _ => items.push(self.value()?),
            }
            match self.skip_ws()? {
                b',' => self.pos += 1,
                b']' => break,
                _ => return None,
            }
        }
        self.pos += 1;
        Some(Item {
            span: start..self.pos,
            value: Value::Array(items),
        })
    }
}

/// Any serde error: the caller falls back to the `toml` crate, so the message is not kept.
#[derive(Debug)]
pub struct Bail;

impl std::fmt::Display for Bail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not plain TOML")
    }
}

impl std::error::Error for Bail {}

impl de::Error for Bail {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Bail
    }
}

impl<'de> IntoDeserializer<'de, Bail> for Item<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Item<'de> {
    type Error = Bail;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        match self.value {
            Value::Str(s) => v.visit_borrowed_str(s),
            Value::Int(i) => v.visit_i64(i),
            Value::Float(f) => v.visit_f64(f),
            Value::Bool(b) => v.visit_bool(b),
            Value::Array(items) | Value::Tables(items) => {
                let mut seq = Seq(items.into_iter());
                let out = v.visit_seq(&mut seq)?;
                seq.0.next().map_or(Ok(out), |_| Err(Bail))
            }
            Value::Table(t) => {
                let mut map = Map {
                    entries: t.entries.into_iter(),
                    value: None,
                };
                let out = v.visit_map(&mut map)?;
                map.entries.next().map_or(Ok(out), |_| Err(Bail))
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Bail> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Bail> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Bail> {
        if serde_spanned::de::is_spanned(name) {
            let span = self.span.clone();
            return v.visit_map(SpannedDeserializer::new(self, span));
        }
        self.deserialize_any(v)
    }

    /// Enums (none in a cluster file today) are left to the `toml` crate.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Bail> {
        Err(Bail)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq<'de>(std::vec::IntoIter<Item<'de>>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = Bail;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Bail> {
        self.0.next().map(|i| seed.deserialize(i)).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'de> {
    entries: std::vec::IntoIter<(&'de str, Item<'de>)>,
    value: Option<Item<'de>>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = Bail;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Bail> {
        let Some((key, item)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(item);
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Bail> {
        seed.deserialize(self.value.take().ok_or(Bail)?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Option<toml::Table> {
        from_str(text)
    }

    /// Read alike by both (and accepted by the fast path).
    fn agrees(text: &str) {
        let p = plain(text).unwrap_or_else(|| panic!("not plain: {text:?}"));
        assert_eq!(p, toml::from_str::<toml::Table>(text).unwrap(), "{text:?}");
        crate::fuzzing::plain_toml(text.as_bytes());
    }

    #[test]
    fn reads_what_the_toml_crate_reads() {
        for t in [
            "",
            "\n\n# only a comment\n",
            "a = 1",
            "a = \"x\" # c\nb = 'y'\n",
            "[t]\nk = \"\"\nl = ''\n",
            "[[n]]\na = 1\n[[n]]\na = 2\n\n[[n]]\n",
            "a = [ ]\nb = [1, 2, ]\nc = [\"x\",'y' , true]\n",
            "a = -0\nb = +5\nc = 9223372036854775807\nd = -9223372036854775808\n",
            "a = 1.5\nb = -0.0\nc = +10.25\nd = 0.1\ne = 123456789.123456789\n",
            "a = true\nb = false\n",
            "\t a\t=\t\"tab\there\"\t\n",
            "k = \"ünïcödé ✓\" # ✓\n",
            "[cluster]\nname = \"x\"\n[[node]]\nname = \"n\"\n",
            "[a] # c\nx = 1\n[[b]] # c\ny = 2",
        ] {
            agrees(t);
        }
    }

    #[test]
    fn leaves_everything_else_to_the_toml_crate() {
        for t in [
            "a = 1\na = 2\n",            // duplicate key
            "[t]\n[t]\n",                // duplicate table
            "[t]\n[[t]]\n",              // table then array
            "[[t]]\n[t]\n",              // array then table
            "t = 1\n[t]\n",              // key then table
            "t = []\n[[t]]\n",           // inline array then array of tables
            "a = 1\r\n",                 // CRLF
            "a = \"\\n\"\n",             // escape
            "a = \"\"\"x\"\"\"\n",       // multi-line
            "a = '''x'''\n",             // multi-line literal
            "a = \"x\ny\"\n",            // newline in a string
            "a = \"x\u{1}\"\n",          // control character
            "# \u{7f}\n",                // DEL in a comment
            "a.b = 1\n",                 // dotted key
            "\"a\" = 1\n",               // quoted key
            "[a.b]\n",                   // dotted table
            "[ a ]\n",                   // blanks in a header
            "a = {b = 1}\n",             // inline table
            "a = [[1]]\n",               // nested array
            "a = [1,\n2]\n",             // multi-line array
            "a = 1979-05-27\n",          // date
            "a = 0x10\n",                // hex
            "a = 1_000\n",               // underscore
            "a = 01\n",                  // leading zero
            "a = 1e5\n",                 // exponent
            "a = 1.\n",                  // no fraction digits
            "a = inf\n",                 // inf
            "a = nan\n",                 // nan
            "a = 9223372036854775808\n", // overflow
            "a = 1 b = 2\n",             // two pairs on a line
            "a = \"x\"y\n",              // junk after a value
            "a = truex\n",               // not a boolean
            "a =\n",                     // no value
            "= 1\n",                     // no key
            "[]\n",                      // empty header
            "[a]x\n",                    // junk after a header
            "a = [1 2]\n",               // no comma
            "a = [,]\n",                 // comma alone
        ] {
            assert!(plain(t).is_none(), "accepted {t:?}");
            crate::fuzzing::plain_toml(t.as_bytes());
        }
    }

    #[test]
    fn bounds_keys_per_table_and_top_level_names() {
        let keys = |n: usize| (0..n).map(|i| format!("k{i} = {i}\n")).collect::<String>();
        agrees(&keys(MAX_KEYS));
        assert!(plain(&keys(MAX_KEYS + 1)).is_none());
        assert!(toml::from_str::<toml::Table>(&keys(MAX_KEYS + 1)).is_ok());
        let tables = |n: usize| (0..n).map(|i| format!("[t{i}]\n")).collect::<String>();
        agrees(&tables(MAX_ROOT));
        assert!(plain(&tables(MAX_ROOT + 1)).is_none());
    }

    /// The example cluster and every one-byte deletion, duplication and replacement of
    /// it (by a quote, `\`, `[`, `=`, `#`, a newline, a digit): the fast path reads each
    /// as the `toml` crate does, spans included, or leaves it.
    #[test]
    fn example_and_its_one_byte_edits_agree() {
        let ex = include_str!("../examples/cluster.toml");
        let (p, f) = crate::model::read_both(ex);
        assert!(p.is_some(), "the example is plain TOML");
        assert_eq!(p, f);
        // Without its comment lines (1.3 kB, not 5): every kind of line, every position.
        let bare: String = ex
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') || l.contains("= "))
            .map(|l| format!("{l}\n"))
            .collect();
        let b = bare.as_bytes();
        for i in 0..b.len() {
            let mut edits: Vec<Vec<u8>> = vec![[&b[..i], &b[i + 1..]].concat()];
            edits.push([&b[..=i], &b[i..]].concat());
            for c in [
                b'"', b'\'', b'\\', b'[', b'=', b'#', b'\n', b'7', b'.', b' ',
            ] {
                let mut e = b.to_vec();
                e[i] = c;
                edits.push(e);
            }
            for e in edits {
                crate::fuzzing::plain_toml(&e);
            }
        }
    }
}
