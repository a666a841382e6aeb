//! A fast reader for *plain* TOML: the line-per-key subset that generated cluster files
//! use (`[table]` and `[[array]]` headers with bare keys; `key = value` with bare keys;
//! values that are one-line strings without escapes, decimal integers, plain decimal
//! floats, booleans, and one-line arrays of those; comments). It feeds serde directly,
//! with the same byte spans the `toml` crate gives [`toml::Spanned`] values.
//!
//! Why: at 100 000 nodes the `toml` crate spends ~0.4 s and ~200 MB on the 10.6 MB file
//! (a token vector, then a spanned tree of the whole document, then serde); this reader
//! keeps three flat vectors (keys, array elements, the top level), borrows every string
//! from the text, and takes a fraction of that (docs/BENCH.md).
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
    let doc = parse(text)?;
    let root = Item {
        span: 0..text.len(),
        value: Value::Root,
    };
    T::deserialize(De {
        doc: &doc,
        item: &root,
    })
    .ok()
}

#[derive(Debug)]
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Elements `Doc::items[range]`.
    Array(Range<usize>),
    /// Keys `Doc::entries[range]`: a table's keys are one run (its lines follow its
    /// header, and no table is opened twice).
    Table(Range<usize>),
    /// An array of tables (each a `Table`), made by `[[name]]` headers only:
    /// `Doc::arrays[index]`. (No value owns memory, so the document drops in one go.)
    Tables(usize),
    /// The top level, `Doc::root`.
    Root,
}

/// A value and its bytes in the text (for a string, with its quotes).
#[derive(Debug)]
struct Item<'a> {
    span: Range<usize>,
    value: Value<'a>,
}

/// The whole document in three flat vectors.
#[derive(Debug, Default)]
struct Doc<'a> {
    /// Top-level keys and tables.
    root: Vec<(&'a str, Item<'a>)>,
    /// Every table's keys, table after table.
    entries: Vec<(&'a str, Item<'a>)>,
    /// Every array's elements, array after array.
    items: Vec<Item<'a>>,
    /// The arrays of tables (at most [`MAX_ROOT`]).
    arrays: Vec<Vec<Item<'a>>>,
}

impl<'a> Doc<'a> {
    /// The key run of the table `key = value` lines go to (`None`: the top level).
    fn current(&mut self, cursor: Option<usize>) -> Option<Option<&mut Range<usize>>> {
        let Some(i) = cursor else {
            return Some(None);
        };
        let item = &mut self.root.get_mut(i)?.1;
        let value = match &mut item.value {
            Value::Tables(k) => &mut self.arrays.get_mut(*k)?.last_mut()?.value,
            v => v,
        };
        match value {
            Value::Table(r) => Some(Some(r)),
            _ => None,
        }
    }

    /// Adds `key = item` where `cursor` points; `None` when the key is there already
    /// (TOML forbids it) or the table is full.
    fn insert(&mut self, cursor: Option<usize>, key: &'a str, item: Item<'a>) -> Option<()> {
        let run = match self.current(cursor)? {
            Some(r) => {
                r.end += 1;
                r.start..r.end - 1
            }
            None => {
                let keys = self.root.iter().map(|(k, _)| *k);
                if self.root.len() >= MAX_ROOT || keys.clone().any(|k| k == key) {
                    return None;
                }
                self.root.push((key, item));
                return Some(());
            }
        };
        // The run is the last one: its new key goes at the end of `entries`.
        let keys = self.entries.get(run.clone())?;
        if run.end != self.entries.len() || keys.len() >= MAX_KEYS {
            return None;
        }
        if keys.iter().any(|(k, _)| *k == key) {
            return None;
        }
        self.entries.push((key, item));
        Some(())
    }
}

/// Parses the whole text; `None` at the first thing outside the subset.
fn parse(text: &str) -> Option<Doc<'_>> {
    // Control characters other than tab and newline: refused by TOML in comments and
    // strings, and `\r` (CRLF files) is left to the `toml` crate.
    if text
        .bytes()
        .any(|c| (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f)
    {
        return None;
    }
    let mut p = Parser { text, pos: 0 };
    let mut doc = Doc::default();
    // Where keys go: the top level, or the table (or last table of the array) at this
    // index of `doc.root`.
    let mut cursor = None;
    while let Some(c) = p.skip_ws() {
        match c {
            b'\n' => {
                p.pos += 1;
                continue;
            }
            b'#' => {}
            b'[' => cursor = Some(p.header(&mut doc)?),
            _ => {
                let key = p.bare_key()?;
                p.skip_ws();
                p.expect(b'=')?;
                p.skip_ws();
                let item = p.value(&mut doc.items)?;
                doc.insert(cursor, key, item)?;
            }
        }
        p.end_line()?;
    }
    Some(doc)
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
    /// adds one to the array, and returns its index in `doc.root` (where the following
    /// keys go). Its keys start at the end of `doc.entries`.
    fn header(&mut self, doc: &mut Doc<'a>) -> Option<usize> {
        let start = self.pos;
        let array = self.starts_with("[[");
        self.pos += if array { 2 } else { 1 };
        let key = self.bare_key()?;
        self.expect(b']')?;
        if array {
            self.expect(b']')?;
        }
        let span = start..self.pos;
        let at = doc.entries.len();
        let table = || Item {
            span: span.clone(),
            value: Value::Table(at..at),
        };
        if let Some(i) = doc.root.iter().position(|(k, _)| *k == key) {
            // Only another `[[name]]` may name it again.
            match (&doc.root[i].1.value, array) {
                (Value::Tables(k), true) => doc.arrays.get_mut(*k)?.push(table()),
                _ => return None,
            }
            return Some(i);
        }
        if doc.root.len() >= MAX_ROOT {
            return None;
        }
        let item = if array {
            doc.arrays.push(vec![table()]);
            Item {
                span: span.clone(),
                value: Value::Tables(doc.arrays.len() - 1),
            }
        } else {
            table()
        };
        doc.root.push((key, item));
        Some(doc.root.len() - 1)
    }

    /// One value (an array's elements go to `items`); after it must come a blank, a
    /// comment, a newline, `,`, `]` or the end.
    fn value(&mut self, items: &mut Vec<Item<'a>>) -> Option<Item<'a>> {
        let start = self.pos;
        let value = match self.peek()? {
            b'"' => Value::Str(self.string(b'"')?),
            b'\'' => Value::Str(self.string(b'\'')?),
            b'[' => return self.array(items),
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

    /// `[a, b, …]` on one line, of strings, numbers and booleans (a trailing comma
    /// allowed); its elements are the run it adds to `items` (no array nests in one).
    fn array(&mut self, items: &mut Vec<Item<'a>>) -> Option<Item<'a>> {
        let start = self.pos;
        let first = items.len();
        self.pos += 1;
        loop {
            match self.skip_ws()? {
                b']' => break,
                b'[' => return None,
                _ => {
                    let item = self.value(items)?;
                    items.push(item);
                }
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
            value: Value::Array(first..items.len()),
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

/// The serde view of one item of the document.
#[derive(Clone, Copy)]
struct De<'t, 'a> {
    doc: &'t Doc<'a>,
    item: &'t Item<'a>,
}

impl<'t, 'a> IntoDeserializer<'a, Bail> for De<'t, 'a> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'t, 'a> de::Deserializer<'a> for De<'t, 'a> {
    type Error = Bail;

    fn deserialize_any<V: Visitor<'a>>(self, v: V) -> Result<V::Value, Bail> {
        let doc = self.doc;
        match &self.item.value {
            Value::Str(s) => v.visit_borrowed_str(s),
            Value::Int(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Array(r) => seq(doc, doc.items.get(r.clone()).ok_or(Bail)?, v),
            Value::Tables(k) => seq(doc, doc.arrays.get(*k).ok_or(Bail)?, v),
            Value::Table(r) => map(doc, doc.entries.get(r.clone()).ok_or(Bail)?, v),
            Value::Root => map(doc, &doc.root, v),
        }
    }

    fn deserialize_option<V: Visitor<'a>>(self, v: V) -> Result<V::Value, Bail> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Bail> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Bail> {
        if serde_spanned::de::is_spanned(name) {
            return v.visit_map(SpannedDeserializer::new(self, self.item.span.clone()));
        }
        self.deserialize_any(v)
    }

    /// Enums (none in a cluster file today) are left to the `toml` crate.
    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Bail> {
        Err(Bail)
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'a>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// `items` to `v` as a sequence, every one taken.
fn seq<'t, 'a, V: Visitor<'a>>(
    doc: &'t Doc<'a>,
    items: &'t [Item<'a>],
    v: V,
) -> Result<V::Value, Bail> {
    let mut s = Seq {
        doc,
        items: items.iter(),
    };
    let out = v.visit_seq(&mut s)?;
    s.items.next().map_or(Ok(out), |_| Err(Bail))
}

/// `entries` to `v` as a map, every one taken.
fn map<'t, 'a, V: Visitor<'a>>(
    doc: &'t Doc<'a>,
    entries: &'t [(&'a str, Item<'a>)],
    v: V,
) -> Result<V::Value, Bail> {
    let mut m = Map {
        doc,
        entries: entries.iter(),
        value: None,
    };
    let out = v.visit_map(&mut m)?;
    m.entries.next().map_or(Ok(out), |_| Err(Bail))
}

struct Seq<'t, 'a> {
    doc: &'t Doc<'a>,
    items: std::slice::Iter<'t, Item<'a>>,
}

impl<'t, 'a> SeqAccess<'a> for Seq<'t, 'a> {
    type Error = Bail;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Bail> {
        let doc = self.doc;
        self.items
            .next()
            .map(|item| seed.deserialize(De { doc, item }))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'t, 'a> {
    doc: &'t Doc<'a>,
    entries: std::slice::Iter<'t, (&'a str, Item<'a>)>,
    value: Option<&'t Item<'a>>,
}

impl<'t, 'a> MapAccess<'a> for Map<'t, 'a> {
    type Error = Bail;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>, Bail> {
        let Some((key, item)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(item);
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Bail> {
        let item = self.value.take().ok_or(Bail)?;
        seed.deserialize(De {
            doc: self.doc,
            item,
        })
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
            "top = 0\n[a]\nk = 1\n[[n]]\nk = 2\nl = [3]\n[[n]]\nk = 4\n[b]\nk = [5, 6]\n",
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
        let keys = |n: usize| {
            let keys: String = (0..n).map(|i| format!("k{i} = {i}\n")).collect();
            format!("[t]\n{keys}")
        };
        agrees(&keys(MAX_KEYS));
        assert!(plain(&keys(MAX_KEYS + 1)).is_none());
        assert!(toml::from_str::<toml::Table>(&keys(MAX_KEYS + 1)).is_ok());
        let tables = |n: usize| (0..n).map(|i| format!("[t{i}]\n")).collect::<String>();
        agrees(&tables(MAX_ROOT));
        assert!(plain(&tables(MAX_ROOT + 1)).is_none());
        let top = |n: usize| (0..n).map(|i| format!("k{i} = {i}\n")).collect::<String>();
        agrees(&top(MAX_ROOT));
        assert!(plain(&top(MAX_ROOT + 1)).is_none());
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

    /// A longer differential pass than the fuzzer's CI budget, without the fuzzer:
    /// 30 000 random two-byte edits of the generated 40-node seed (`cargo test -p
    /// pxe-builder --lib plain_toml -- --ignored`).
    #[test]
    #[ignore]
    fn random_edits_agree() {
        let seed = include_str!("../../fuzz/corpus/plain_toml/generated-40-nodes");
        let b = seed.as_bytes();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let alphabet = b"\"'\\[]=#\n .,-+0179aetfx_{}";
        for _ in 0..30_000 {
            let mut e = b.to_vec();
            for _ in 0..2 {
                let at = next(e.len());
                match next(3) {
                    0 => e[at] = alphabet[next(alphabet.len())],
                    1 => e.insert(at, alphabet[next(alphabet.len())]),
                    _ => {
                        e.remove(at);
                    }
                }
            }
            crate::fuzzing::plain_toml(&e);
        }
    }
}
