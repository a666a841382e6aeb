//! The naming rules both sides check: pxe-builder when it reads `cluster.toml` (and
//! reports a refusal at its file:line:column), the agent when it reads the names its
//! kernel command line, the subnet's bootopts and the clone plan give it (they go into
//! URLs, status reports and the console). The rules and the reasons are in `docs/BOOT.md`
//! ("What cluster.toml accepts").

/// The dnsmasq tag pxe-builder's DHCP snippets set for UEFI clients; no entity may be
/// named so.
pub const EFI_TAG: &str = "efi-x86_64";

/// Longest name: one DNS label, as dnsmasq and dhcpd host names are.
pub const MAX_NAME: usize = 63;

/// What a name names; each kind has its own reserved words.
/// The image server, as named in the clone plan's upstream chains: no node may take it.
pub const PRIMARY: &str = "primary";

/// The clone plan's file name, in the boot tree and under the image server's URL: no
/// image may take it. (`plan::FILE` re-exports it.)
pub const PLAN_FILE: &str = "clone-plan.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Node,
    Entity,
    Group,
    Image,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster name",
            Kind::Node => "node name",
            Kind::Entity => "entity name",
            Kind::Group => "group name",
            Kind::Image => "image name",
        }
    }

    /// Names this kind may not take, and why (compared ignoring ASCII case).
    pub fn reserved(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Node => &[
                (PRIMARY, "the clone plan's name for the image server"),
                ("infinite", "a dnsmasq dhcp-host keyword (lease time)"),
                ("ignore", "a dnsmasq dhcp-host keyword (ignore this host)"),
            ],
            Kind::Entity => &[
                (EFI_TAG, "the dnsmasq tag pxe-builder sets for UEFI clients"),
                ("known", "a tag dnsmasq sets itself"),
                ("known-othernet", "a tag dnsmasq sets itself"),
            ],
            // Image directories sit beside the boot tree and the status board in the URL
            // space of `imgtool serve`.
            Kind::Image => &[
                ("status", "the status board's URL (/status)"),
                ("upload", "the upload URL of `imgtool serve` (/upload/)"),
                ("etc", "a directory of the boot tree"),
                ("boot", "a directory of the boot tree"),
                ("dhcp", "a directory of the boot tree"),
                ("ipxe", "a directory of the boot tree"),
                ("pxelinux.cfg", "a directory of the boot tree"),
                (PLAN_FILE, "a file of the boot tree"),
                ("boot.ipxe", "a file of the boot tree"),
                ("pxelinux.0", "a file of the boot tree"),
                ("ldlinux.c32", "a file of the boot tree"),
            ],
            Kind::Cluster | Kind::Group => &[],
        }
    }
}

/// A name: a letter, then letters, digits, `.`, `_` or `-`, at most [`MAX_NAME`] bytes; no
/// `..` and no `.` at the end (dhcpd host names); not reserved for its kind. Returns the
/// byte index of the first offending character (for the column) and the message.
pub fn name(kind: Kind, s: &str) -> Result<(), (usize, String)> {
    let what = kind.word();
    let rule = "use a letter, then letters, digits, `.`, `_` or `-`";
    if s.is_empty() {
        return Err((0, format!("{what} is empty: {rule}")));
    }
    if let Some((i, c)) = s.char_indices().find(|&(i, c)| {
        !(c.is_ascii_alphanumeric() || (i > 0 && "._-".contains(c)))
            || (i == 0 && !c.is_ascii_alphabetic())
    }) {
        let found = if c.is_control() || c.is_whitespace() {
            format!("{:?}", c)
        } else {
            format!("`{c}`")
        };
        let hint = match c {
            '/' | ',' => " (it would split status URLs and bootopts node= fields)",
            '\n' | '\r' => " (a newline would start a new directive in the boot files)",
            '"' | '{' | '}' | ';' => " (it would end a DHCP server statement)",
            _ => "",
        };
        return Err((
            i,
            format!(
                "{what} {} has {found} at character {}{hint}: {rule}",
                shown(s),
                s[..i].chars().count() + 1
            ),
        ));
    }
    if s.len() > MAX_NAME {
        return Err((
            MAX_NAME,
            format!(
                "{what} `{s}` is {} characters long; at most {MAX_NAME} (a DNS label)",
                s.len()
            ),
        ));
    }
    if let Some(i) = s.find("..") {
        return Err((
            i,
            format!("{what} `{s}` has `..`: {rule}, no two dots in a row"),
        ));
    }
    if s.ends_with('.') {
        return Err((s.len() - 1, format!("{what} `{s}` ends with `.`")));
    }
    if let Some((w, why)) = kind
        .reserved()
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(s))
    {
        return Err((0, format!("{what} `{s}` is reserved: `{w}` is {why}")));
    }
    Ok(())
}

/// A group's `image_id` pin: the image id as `imgtool inspect` prints it, 64 lower-case
/// hex digits (the sha256 of the canonical manifest).
pub fn image_id(s: &str) -> Result<(), (usize, String)> {
    if let Some(i) = s.find(|c: char| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err((
            i,
            "`image_id` must be the image's id: 64 lower-case hex digits (imgtool inspect)".into(),
        ));
    }
    if s.len() != 64 {
        return Err((
            s.len(),
            format!("`image_id` has {} hex digits; an image id has 64", s.len()),
        ));
    }
    Ok(())
}

/// `s` quoted for a message: control characters, quotes and backslashes escaped (Rust's
/// `escape_debug`), cut at 80 characters, so a hostile value cannot drive the terminal
/// that shows the error.
pub fn shown(s: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == 80 {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_the_documented_set() {
        for ok in [
            "n01",
            "rack1",
            "vSMP_big",
            "compute-debug",
            "a.b",
            "A",
            &"x".repeat(63),
        ] {
            assert_eq!(name(Kind::Node, ok), Ok(()), "{ok}");
        }
        for (bad, at) in [
            ("", 0),
            ("1n", 0),
            ("_x", 0),
            ("r1\nLABEL evil", 2),
            ("n/1", 1),
            ("n,1", 1),
            ("a b", 1),
            ("n1\"{", 2),
            ("né", 1),
            ("a..b", 1),
            ("a.", 1),
        ] {
            assert_eq!(name(Kind::Group, bad).map_err(|e| e.0), Err(at), "{bad:?}");
        }
        assert!(name(Kind::Node, &"x".repeat(64)).is_err());
        let e = name(Kind::Node, "Primary").unwrap_err().1;
        assert!(e.contains("reserved"), "{e}");
        assert!(name(Kind::Group, "primary").is_ok());
        assert!(name(Kind::Image, "status").is_err());
        // `imgtool serve` answers /upload/ itself: an image so named would be shadowed.
        assert!(name(Kind::Image, "Upload").is_err());
        assert!(name(Kind::Entity, "efi-x86_64").is_err());
        let m = name(Kind::Node, "a\u{1b}[2J").unwrap_err().1;
        assert!(!m.chars().any(char::is_control), "{m:?}");
    }

    #[test]
    fn image_ids_are_64_lower_case_hex_digits() {
        assert_eq!(image_id(&"0a".repeat(32)), Ok(()));
        for bad in ["", "abc", &"A".repeat(64), &"a".repeat(65), &"g".repeat(64)] {
            assert!(image_id(bad).is_err(), "{bad:?}");
        }
        let e = image_id("abc").unwrap_err().1;
        assert!(e.contains("64"), "{e}");
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\nb\u{1b}"), "\"a\\nb\\u{1b}\"");
        assert!(shown(&"x".repeat(1000)).ends_with("…\""));
    }
}
