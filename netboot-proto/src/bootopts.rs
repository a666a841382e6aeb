//! `etc/bootopts/<HEX>`: a subnet's boot options, which pxe-builder writes per entity
//! (one file per hex name of its subnet's cover) and the agent fetches by the longest hex
//! prefix of its address ([`crate::hex::hex_prefixes`]) to fill what its kernel command
//! line left open (docs/BOOT.md).
//!
//! The syntax: one `key=value` per line; blank lines and lines starting with `#` are
//! comments; the reader trims keys and values. `node=mac,ip,name,group` lines (any number)
//! list the nodes whose address the file covers, so an agent finds its name by its MAC.
//! [`Writer`] writes it and refuses what [`BootOpts::parse`] would read back differently;
//! the reader lets no repeated key win ([`BootOpts::get`]).

use crate::names::shown;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Directory of the bootopts files in the boot tree (and under the image server's URL).
pub const DIR: &str = "etc/bootopts";

/// Image server URL (images, bootopts, clone plan).
pub const SERVER: &str = "server";
/// The entity's name.
pub const ENTITY: &str = "entity";
/// The entity's subnet, CIDR (the agent takes its netmask when `ip=` gave none).
pub const SUBNET: &str = "subnet";
/// The entity's default gateway (its `gateway` in cluster.toml), an IPv4 address inside
/// [`SUBNET`]; absent when the entity has none (the image server is on its subnet).
pub const GATEWAY: &str = "gateway";
/// The entity's default group.
pub const GROUP: &str = "group";
/// That group's image directory.
pub const IMAGE: &str = "image";
/// `clone` or `diskless`.
pub const MODE: &str = "mode";
/// The entity's secondary (relay) node, or empty.
pub const SECONDARY: &str = "secondary";
/// The kernel arguments of the default group's entry.
pub const ARGS: &str = "args";
/// The default group's image-id pin (only when the group has one).
pub const IMAGE_ID: &str = "image_id";
/// Delta re-clone: `0` makes the subnet's nodes restore in full even when their disk's
/// layout equals the image's; `1` (the default when absent) lets a node with an equal
/// layout fetch only the chunks its disk does not already hold. The kernel command
/// line's `netboot.delta=` wins ([`parse_switch`] reads both).
pub const DELTA: &str = "delta";
/// A diskless default group's root partition number in its image (`root = N`; only when
/// the group sets it).
pub const ROOT: &str = "root";
/// A `node=mac,ip,name,group` line.
pub const NODE: &str = "node";

/// An on/off value (`delta=`): `1`/`on`/`yes` or `0`/`off`/`no`; anything else is none.
pub fn parse_switch(v: &str) -> Option<bool> {
    match v {
        "1" | "on" | "yes" => Some(true),
        "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// One `node=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// As read: lower case (the writer writes [`crate::net::mac_string`]).
    pub mac: String,
    pub ip: String,
    pub name: String,
    pub group: String,
}

/// A parsed bootopts file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootOpts {
    pub values: BTreeMap<String, String>,
    /// `node=` lines with four fields, in file order.
    pub nodes: Vec<NodeLine>,
    /// Keys given twice with different values. pxe-builder never writes such a file; a
    /// reader that kept the first or the last would let an injected line win, so
    /// [`BootOpts::get`] answers neither.
    pub conflicts: BTreeSet<String>,
}

impl BootOpts {
    /// Reads `text` (bounded by the caller: the agent reads a fetched file of limited
    /// size). Lines that are no `key=value`, and `node=` lines without four fields, are
    /// skipped.
    pub fn parse(text: &str) -> BootOpts {
        let mut b = BootOpts::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() == NODE {
                let f: Vec<&str> = v.split(',').map(str::trim).collect();
                if let [mac, ip, name, group] = f[..] {
                    b.nodes.push(NodeLine {
                        mac: mac.to_ascii_lowercase(),
                        ip: ip.into(),
                        name: name.into(),
                        group: group.into(),
                    });
                }
            } else {
                let (k, v) = (k.trim(), v.trim());
                match b.values.get(k) {
                    Some(old) if old != v => {
                        b.conflicts.insert(k.to_string());
                    }
                    _ => {
                        b.values.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
        b
    }

    /// The value of `k`; none when empty or given twice with different values.
    pub fn get(&self, k: &str) -> Option<&str> {
        if self.conflicts.contains(k) {
            return None;
        }
        self.values
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// [`DELTA`] as a switch: none when absent, conflicting or not a switch
    /// ([`parse_switch`]).
    pub fn delta(&self) -> Option<bool> {
        parse_switch(self.get(DELTA)?)
    }

    /// [`GATEWAY`] as an address: none when absent, empty, given twice with different
    /// values ([`BootOpts::get`]) or not a dotted IPv4 address.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.get(GATEWAY)?.parse().ok()
    }

    /// The node with this MAC (any case, colon form): (name, group); none when two
    /// `node=` lines give this MAC different names or groups.
    pub fn node_by_mac(&self, mac: &str) -> Option<(&str, &str)> {
        let mac = mac.to_ascii_lowercase();
        let mut found = self
            .nodes
            .iter()
            .filter(|n| n.mac == mac)
            .map(|n| (n.name.as_str(), n.group.as_str()));
        let first = found.next()?;
        found.all(|other| other == first).then_some(first)
    }
}

/// A value the bootopts syntax cannot hold: the syntax element, the value (shown with
/// its control characters escaped, [`shown`]) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{syntax}: {value} {why}")]
pub struct Unwritable {
    pub syntax: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn unwritable<T>(syntax: &'static str, s: &str, why: &'static str) -> Result<T, Unwritable> {
    Err(Unwritable {
        syntax,
        value: shown(s),
        why,
    })
}

/// A value: one line (a newline would add a key), no surrounding whitespace (the reader
/// trims it).
pub fn check_value(s: &str) -> Result<&str, Unwritable> {
    if s.chars().any(char::is_control) {
        return unwritable(
            "bootopts",
            s,
            "contains a control character (a newline would add a key)",
        );
    }
    if s.trim() != s {
        return unwritable(
            "bootopts",
            s,
            "starts or ends with whitespace (the reader trims it)",
        );
    }
    Ok(s)
}

/// One field of a `node=mac,ip,name,group` line: a [`check_value`] value, not empty,
/// without `,` (the field separator) and without whitespace.
pub fn check_field(s: &str) -> Result<&str, Unwritable> {
    check_value(s)?;
    if s.is_empty() || s.contains(',') || s.chars().any(char::is_whitespace) {
        return unwritable(
            "bootopts node= field",
            s,
            "is empty or contains `,` or whitespace",
        );
    }
    Ok(s)
}

/// Writes a bootopts file line by line, refusing any value [`BootOpts::parse`] would not
/// read back as it was given.
#[derive(Debug, Default)]
pub struct Writer {
    text: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// `# text`: no control character (a newline would end the comment).
    pub fn comment(&mut self, text: &str) -> Result<&mut Writer, Unwritable> {
        if text.chars().any(char::is_control) {
            return unwritable(
                "comment",
                text,
                "contains a control character (a newline would end the comment)",
            );
        }
        self.text.push_str("# ");
        self.text.push_str(text);
        self.text.push('\n');
        Ok(self)
    }

    /// `key=value`. The key is one of this module's constants (not [`NODE`]).
    pub fn value(&mut self, key: &str, value: &str) -> Result<&mut Writer, Unwritable> {
        if key == NODE
            || key.is_empty()
            || key.starts_with('#')
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return unwritable("bootopts key", key, "is not a bootopts key");
        }
        let value = check_value(value)?;
        self.text.push_str(key);
        self.text.push('=');
        self.text.push_str(value);
        self.text.push('\n');
        Ok(self)
    }

    /// `node=mac,ip,name,group`.
    pub fn node(&mut self, n: &NodeLine) -> Result<&mut Writer, Unwritable> {
        let line = format!(
            "{NODE}={},{},{},{}\n",
            check_field(&n.mac)?,
            check_field(&n.ip)?,
            check_field(&n.name)?,
            check_field(&n.group)?
        );
        self.text.push_str(&line);
        Ok(self)
    }

    /// The file's text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(mac: &str, name: &str) -> NodeLine {
        NodeLine {
            mac: mac.into(),
            ip: "10.0.0.1".into(),
            name: name.into(),
            group: "g".into(),
        }
    }

    #[test]
    fn written_files_read_back_as_written() {
        let mut w = Writer::new();
        w.comment("boot options for entity r1 (10.0.0.0/24)")
            .unwrap();
        w.value(SERVER, "http://10.0.0.100:8080").unwrap();
        w.value(ENTITY, "r1").unwrap();
        w.value(SECONDARY, "").unwrap();
        w.value(ARGS, "console=ttyS0 quiet").unwrap();
        w.node(&node("52:54:00:00:00:01", "n1")).unwrap();
        w.node(&node("52:54:00:00:00:02", "n2")).unwrap();
        let text = w.finish();
        assert_eq!(
            text,
            "# boot options for entity r1 (10.0.0.0/24)\nserver=http://10.0.0.100:8080\nentity=r1\nsecondary=\nargs=console=ttyS0 quiet\nnode=52:54:00:00:00:01,10.0.0.1,n1,g\nnode=52:54:00:00:00:02,10.0.0.1,n2,g\n"
        );
        let b = BootOpts::parse(&text);
        assert_eq!(b.get(SERVER), Some("http://10.0.0.100:8080"));
        assert_eq!(b.get(ARGS), Some("console=ttyS0 quiet"));
        assert_eq!(b.get(SECONDARY), None, "empty reads as unset");
        assert_eq!(
            b.nodes,
            [
                node("52:54:00:00:00:01", "n1"),
                node("52:54:00:00:00:02", "n2")
            ]
        );
        assert_eq!(b.node_by_mac("52:54:00:00:00:02"), Some(("n2", "g")));
        assert_eq!(b.node_by_mac("52:54:00:00:00:03"), None);
    }

    #[test]
    fn the_writer_refuses_what_would_read_back_otherwise() {
        let mut w = Writer::new();
        assert!(w.value(SERVER, "http://s\nserver=http://evil").is_err());
        assert!(w.value(SERVER, " padded").is_err());
        assert!(w.value(NODE, "x").is_err());
        assert!(w.value("a=b", "x").is_err());
        assert!(w.comment("x\nserver=http://evil").is_err());
        for bad in ["a,b", "a b", "", "n/1\n"] {
            assert!(w.node(&node("52:54:00:00:00:01", bad)).is_err(), "{bad:?}");
        }
        assert_eq!(w.finish(), "", "a refused line writes nothing");
        let e = check_value("c\u{1b}[2J").unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }

    #[test]
    fn the_reader_lets_no_repeated_key_win() {
        let b = BootOpts::parse(
            "server=http://good\nentity=r1\nserver=http://evil\nentity=r1\nnode=52:54:00:00:00:01,10.0.0.1,n1,g\nnode=52:54:00:00:00:01,10.0.0.1,evil,g\n",
        );
        assert_eq!(b.get("server"), None);
        assert_eq!(b.get("entity"), Some("r1"));
        assert_eq!(b.node_by_mac("52:54:00:00:00:01"), None);
        let b = BootOpts::parse("server=http://good\nnode=52:54:00:00:00:01,10.0.0.1,n1,g\n");
        assert_eq!(b.get("server"), Some("http://good"));
        assert_eq!(b.node_by_mac("52:54:00:00:00:01"), Some(("n1", "g")));
    }

    #[test]
    fn the_gateway_reads_as_an_address_or_not_at_all() {
        let mut w = Writer::new();
        w.value(SUBNET, "172.20.1.0/24").unwrap();
        w.value(GATEWAY, "172.20.1.1").unwrap();
        let b = BootOpts::parse(&w.finish());
        assert_eq!(b.get(GATEWAY), Some("172.20.1.1"));
        assert_eq!(b.gateway(), Some(Ipv4Addr::new(172, 20, 1, 1)));
        for text in [
            "subnet=172.20.1.0/24\n",
            "gateway=\n",
            "gateway=172.20.1.1/24\n",
            "gateway=router\n",
            "gateway=172.20.1.1\ngateway=172.20.1.254\n",
        ] {
            assert_eq!(BootOpts::parse(text).gateway(), None, "{text:?}");
        }
    }

    #[test]
    fn the_delta_switch_reads_as_on_off_or_not_at_all() {
        assert_eq!(BootOpts::parse("delta=0\n").delta(), Some(false));
        assert_eq!(BootOpts::parse("delta = off\n").delta(), Some(false));
        assert_eq!(BootOpts::parse("delta=1\n").delta(), Some(true));
        assert_eq!(BootOpts::parse("group=x\n").delta(), None);
        assert_eq!(BootOpts::parse("delta=maybe\n").delta(), None);
        assert_eq!(BootOpts::parse("delta=0\ndelta=1\n").delta(), None);
    }

    #[test]
    fn hostile_lines_are_skipped() {
        let b = BootOpts::parse(
            "no equals sign\n# server=http://comment\nnode=a,b,c\nnode=a,b,c,d,e\n\u{0}=x\n  group = compute  \nNODE=52:54:00:00:00:09,1,2,3\n",
        );
        assert!(b.nodes.is_empty());
        assert_eq!(b.get("server"), None);
        assert_eq!(b.get("group"), Some("compute"));
        assert_eq!(b.get("\u{0}"), Some("x"), "kept, but no reader asks for it");
        let big = "k=v\n".repeat(100_000);
        assert_eq!(BootOpts::parse(&big).values.len(), 1);
    }
}
