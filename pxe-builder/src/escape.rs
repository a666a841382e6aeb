//! Quoting and refusal for every syntax pxe-builder writes: one function per syntax. The
//! model refuses hostile names, URLs and arguments at parse time ([`crate::validate`]);
//! these functions are the second wall: a writer passes every value from the description
//! through the function of its syntax, which either quotes it the way that syntax's own
//! parser reads it back or refuses it. What each syntax holds is in `docs/BOOT.md`.
//!
//! Nothing here writes files; a [`Refused`] names the syntax, the value (escaped, so a
//! terminal never sees its control characters) and why.

use std::borrow::Cow;

/// Longest kernel command line a boot entry may carry, in bytes. Linux on x86 keeps 2047
/// bytes (`COMMAND_LINE_SIZE` 2048 with the NUL) and drops the rest silently, and the
/// loaders add their own words after ours (pxelinux `BOOT_IMAGE=`, `initrd=`, `ip=` and
/// `BOOTIF=`, about 140 bytes; GRUB `BOOT_IMAGE=` and our `netboot.mac=`/`netboot.ip=`/`ip=`,
/// at most about 140 too):
/// 1792 leaves 255 bytes for them, so our `netboot.*` keys at the end are never cut off.
pub const MAX_CMDLINE: usize = 1792;

/// A value a syntax cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{syntax}: {value} {why}")]
pub struct Refused {
    /// The output syntax (`pxelinux`, `GRUB`, `iPXE`, `bootopts`, `dnsmasq`, …).
    pub syntax: &'static str,
    /// The value, shown with its control characters escaped ([`shown`]).
    pub value: String,
    pub why: &'static str,
}

/// The bootopts writer's refusals are this module's.
impl From<netboot_proto::bootopts::Unwritable> for Refused {
    fn from(u: netboot_proto::bootopts::Unwritable) -> Refused {
        Refused {
            syntax: u.syntax,
            value: u.value,
            why: u.why,
        }
    }
}

fn refuse<T>(syntax: &'static str, value: &str, why: &'static str) -> Result<T, Refused> {
    Err(Refused {
        syntax,
        value: shown(value),
        why,
    })
}

/// `s` quoted for a message (`escape_debug`, cut at 80 characters); the agent shows names
/// the same way.
pub use netboot_proto::names::shown;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Text after `#` on a comment line (pxelinux, GRUB, iPXE, bootopts, dnsmasq, dhcpd): a
/// newline would end the comment and make the rest a directive, so no control character.
pub fn comment(s: &str) -> Result<&str, Refused> {
    if has_control(s) {
        return refuse(
            "comment",
            s,
            "contains a control character (a newline would end the comment)",
        );
    }
    Ok(s)
}

/// Characters a kernel argument may not contain besides whitespace and control
/// characters, and why: the kernel and the loaders each parse them their own way.
const KERNEL_ARG_FORBIDDEN: &[(char, &str)] = &[
    (
        '"',
        "contains `\"` (the kernel and GRUB parse quotes differently)",
    ),
    ('\'', "contains `'` (GRUB parses quotes)"),
    ('\\', "contains `\\` (GRUB parses backslash escapes)"),
    ('$', "contains `$` (GRUB and iPXE expand variables)"),
    ('`', "contains a backquote"),
];

/// One word of a kernel command line, as every loader passes it on unchanged: printable
/// ASCII without space, quotes, backslash, `$` or backquote; not starting with `#` (an
/// iPXE comment) and not `;`, `||` or `&&` (iPXE command separators).
pub fn kernel_arg(s: &str) -> Result<&str, Refused> {
    const SYNTAX: &str = "kernel argument";
    if s.is_empty() {
        return refuse(SYNTAX, s, "is empty");
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return refuse(
            SYNTAX,
            s,
            if c.is_whitespace() || c.is_control() {
                "contains whitespace or a control character (it would split the command line or end the line)"
            } else {
                "contains a character that is not printable ASCII"
            },
        );
    }
    if let Some((_, why)) = KERNEL_ARG_FORBIDDEN.iter().find(|(c, _)| s.contains(*c)) {
        return refuse(SYNTAX, s, why);
    }
    if s.starts_with('#') {
        return refuse(
            SYNTAX,
            s,
            "starts with `#` (iPXE reads the rest as a comment)",
        );
    }
    if matches!(s, ";" | "||" | "&&") {
        return refuse(SYNTAX, s, "is an iPXE command separator");
    }
    Ok(s)
}

/// The words of a boot entry joined into one command line: each word a [`kernel_arg`],
/// the whole at most [`MAX_CMDLINE`] bytes.
pub fn kernel_cmdline(words: &[String]) -> Result<String, Refused> {
    for w in words {
        kernel_arg(w)?;
    }
    let line = words.join(" ");
    if line.len() > MAX_CMDLINE {
        return refuse(
            "kernel command line",
            &line,
            "is longer than 1792 bytes: the kernel would cut off the netboot.* keys at its end",
        );
    }
    Ok(line)
}

/// A value of a line-oriented directive (pxelinux `KERNEL`, `INITRD`, `APPEND`; a GRUB or
/// iPXE path): one line, no control characters, nothing the line reader trims away.
pub fn line(s: &str) -> Result<&str, Refused> {
    if has_control(s) {
        return refuse("config line", s, "contains a control character");
    }
    if s.trim() != s {
        return refuse(
            "config line",
            s,
            "starts or ends with whitespace (readers trim it)",
        );
    }
    Ok(s)
}

/// Characters GRUB's lexer reads literally outside quotes.
fn grub_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.,:/=+@%-".contains(c)
}

/// One GRUB word: unchanged when every character is literal to GRUB, else single-quoted
/// (nothing is special inside GRUB's single quotes) with each `'` written as `'\''`.
/// Control characters are refused: a newline inside quotes would still reach the kernel.
pub fn grub_word(s: &str) -> Result<Cow<'_, str>, Refused> {
    if has_control(s) {
        return refuse("GRUB", s, "contains a control character");
    }
    if !s.is_empty() && s.chars().all(grub_plain) {
        return Ok(Cow::Borrowed(s));
    }
    Ok(Cow::Owned(format!("'{}'", s.replace('\'', r"'\''"))))
}

/// One iPXE word. iPXE has no quoting: a script line is split at whitespace, every word
/// has `${…}` expanded, a word starting with `#` starts a comment and `;`, `||`, `&&` end
/// the command. So such words are refused, not quoted.
pub fn ipxe_word(s: &str) -> Result<&str, Refused> {
    if s.is_empty() {
        return refuse("iPXE", s, "is empty");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse(
            "iPXE",
            s,
            "contains whitespace or a control character (iPXE has no quoting)",
        );
    }
    if s.contains('$') {
        return refuse("iPXE", s, "contains `$` (iPXE expands ${…} settings)");
    }
    if s.starts_with('#') || matches!(s, ";" | "||" | "&&") {
        return refuse("iPXE", s, "would be read as a comment or command separator");
    }
    Ok(s)
}

/// A `key=value` line of `etc/bootopts/<HEX>`: the reader splits lines and trims values,
/// so a value holds no control character and no surrounding whitespace (the rule is the
/// format's: `netboot_proto::bootopts::check_value`).
pub fn bootopts_value(s: &str) -> Result<&str, Refused> {
    Ok(netboot_proto::bootopts::check_value(s)?)
}

/// One field of a bootopts `node=mac,ip,name,group` line: a [`bootopts_value`] without
/// `,` (the field separator) and without whitespace
/// (`netboot_proto::bootopts::check_field`).
pub fn bootopts_field(s: &str) -> Result<&str, Refused> {
    Ok(netboot_proto::bootopts::check_field(s)?)
}

/// A value in a dnsmasq option (`dhcp-host=`, `dhcp-range=`, `dhcp-boot=`): dnsmasq splits
/// at `,`, reads `"` and `\` as quoting, takes `#` after whitespace as a comment and ends
/// the option at the newline; none of those may appear.
pub fn dnsmasq_value(s: &str) -> Result<&str, Refused> {
    if s.is_empty() {
        return refuse("dnsmasq", s, "is empty");
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || ",#\"\\".contains(c))
    {
        return refuse(
            "dnsmasq",
            s,
            "contains whitespace, a control character, `,`, `#`, `\"` or `\\`",
        );
    }
    Ok(s)
}

/// The name field of `dhcp-host=`: dnsmasq decides what a field is by its look (digits
/// are a lease time, `infinite` and `ignore` are keywords, `:` a MAC or `id:`), so a name
/// is letters, digits, `.`, `_`, `-`, starting with a letter, and not a keyword.
pub fn dnsmasq_hostname(s: &str) -> Result<&str, Refused> {
    dnsmasq_value(s)?;
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return refuse(
            "dnsmasq host name",
            s,
            "must be letters, digits, `.`, `_`, `-`, starting with a letter",
        );
    }
    if s.eq_ignore_ascii_case("infinite") || s.eq_ignore_ascii_case("ignore") {
        return refuse("dnsmasq host name", s, "is a dhcp-host keyword");
    }
    Ok(s)
}

/// A dnsmasq tag set by `set:` and tested by `tag:`: a [`dnsmasq_value`] without `:` and
/// not starting with `!` (negation).
pub fn dnsmasq_tag(s: &str) -> Result<&str, Refused> {
    dnsmasq_value(s)?;
    if s.contains(':') || s.starts_with('!') {
        return refuse("dnsmasq tag", s, "contains `:` or starts with `!`");
    }
    Ok(s)
}

/// An ISC dhcpd host declaration name. dhcpd takes no quoted string there, only dotted
/// identifiers: runs of letters, digits, `_`, `-` separated by single dots.
pub fn dhcpd_host(s: &str) -> Result<&str, Refused> {
    let ok = !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !ok {
        return refuse(
            "ISC dhcpd host name",
            s,
            "must be letters, digits, `_`, `-` with single dots between",
        );
    }
    Ok(s)
}

/// An ISC dhcpd string: double-quoted, `"` and `\` escaped with a backslash as dhcpd's
/// lexer reads them; control characters refused.
pub fn dhcpd_string(s: &str) -> Result<String, Refused> {
    if has_control(s) {
        return refuse("ISC dhcpd", s, "contains a control character");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings an attacker or a typo puts into cluster.toml.
    const HOSTILE: &[&str] = &[
        "r1\nLABEL evil\n  KERNEL http://evil/x",
        "c\nserver=http://evil:8080",
        "n1\ndhcp-script=/tmp/x",
        "n1\"; } host evil { hardware ethernet 00:00:00:00:00:01; } #",
        "a\rb",
        "a\u{1b}[2Jb",
        "x\u{85}y",
    ];

    #[test]
    fn every_syntax_refuses_a_newline_and_other_control_characters() {
        for s in HOSTILE.iter().filter(|s| has_control(s)) {
            assert!(comment(s).is_err(), "{s:?}");
            assert!(kernel_arg(s).is_err(), "{s:?}");
            assert!(line(s).is_err(), "{s:?}");
            assert!(grub_word(s).is_err(), "{s:?}");
            assert!(ipxe_word(s).is_err(), "{s:?}");
            assert!(bootopts_value(s).is_err(), "{s:?}");
            assert!(bootopts_field(s).is_err(), "{s:?}");
            assert!(dnsmasq_value(s).is_err(), "{s:?}");
            assert!(dnsmasq_hostname(s).is_err(), "{s:?}");
            assert!(dhcpd_host(s).is_err(), "{s:?}");
            assert!(dhcpd_string(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn refusals_show_the_value_escaped() {
        let e = comment("x\u{1b}]0;pwned\u{7}\nLABEL").unwrap_err();
        let m = e.to_string();
        assert!(!m.chars().any(char::is_control), "{m:?}");
        assert!(m.contains(r"\u{1b}") && m.contains(r"\n"), "{m}");
        assert!(shown(&"a".repeat(500)).len() < 100);
    }

    #[test]
    fn kernel_args_are_single_unquoted_words() {
        for ok in [
            "console=ttyS0,115200n8",
            "root=UUID=0b1c-2d",
            "init=/bin/sh",
            "panic=-1",
            "--",
            "a;b",
        ] {
            assert_eq!(kernel_arg(ok), Ok(ok));
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "x=\"a b\"",
            "it's",
            r"a\b",
            "${net0/mac}",
            "`id`",
            "#c",
            "||",
            "&&",
            ";",
            "é",
        ] {
            assert!(kernel_arg(bad).is_err(), "{bad:?}");
        }
        let long: Vec<String> = (0..200).map(|i| format!("arg{i:05}=x")).collect();
        assert!(kernel_cmdline(&long).is_err());
        assert_eq!(
            kernel_cmdline(&["a=1".into(), "b".into()]).unwrap(),
            "a=1 b"
        );
    }

    #[test]
    fn grub_quotes_what_its_lexer_would_read() {
        assert_eq!(
            grub_word("console=ttyS0,115200").unwrap(),
            "console=ttyS0,115200"
        );
        assert_eq!(grub_word("a;b").unwrap(), "'a;b'");
        assert_eq!(grub_word("${x}").unwrap(), "'${x}'");
        assert_eq!(grub_word("node n01 (rack1)").unwrap(), "'node n01 (rack1)'");
        assert_eq!(grub_word("it's").unwrap(), r"'it'\''s'");
        assert_eq!(grub_word("").unwrap(), "''");
        assert_eq!(grub_word("'; reboot; '").unwrap(), r"''\''; reboot; '\'''");
    }

    #[test]
    fn ipxe_refuses_what_it_cannot_quote() {
        assert_eq!(ipxe_word("console=ttyS0"), Ok("console=ttyS0"));
        for bad in [
            "a b",
            "${mac}",
            "#x",
            "||",
            "&&",
            ";",
            "",
            "a\nchain http://evil",
        ] {
            assert!(ipxe_word(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bootopts_values_keep_one_line_and_fields_no_comma() {
        assert_eq!(
            bootopts_value("console=ttyS0 quiet"),
            Ok("console=ttyS0 quiet")
        );
        assert_eq!(bootopts_value(""), Ok(""));
        assert!(bootopts_value("c\nserver=http://evil").is_err());
        assert!(bootopts_value(" padded").is_err());
        assert_eq!(bootopts_field("n01"), Ok("n01"));
        for bad in ["a,b", "a b", "", "n/1\n"] {
            assert!(bootopts_field(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dnsmasq_values_names_and_tags() {
        assert_eq!(
            dnsmasq_value("boot/grub/x86_64-efi/core.efi"),
            Ok("boot/grub/x86_64-efi/core.efi")
        );
        for bad in [
            "a,b",
            "a b",
            "a#b",
            "\"a\"",
            r"a\b",
            "",
            "n1\ndhcp-script=/tmp/x",
        ] {
            assert!(dnsmasq_value(bad).is_err(), "{bad:?}");
        }
        assert_eq!(dnsmasq_hostname("vSMP_n1.r2-x"), Ok("vSMP_n1.r2-x"));
        for bad in ["12h", "1.2.3.4", "infinite", "IGNORE", "a:b", "-a", "a*"] {
            assert!(dnsmasq_hostname(bad).is_err(), "{bad:?}");
        }
        assert_eq!(dnsmasq_tag("rack1"), Ok("rack1"));
        assert!(dnsmasq_tag("tag:x").is_err());
        assert!(dnsmasq_tag("!x").is_err());
    }

    #[test]
    fn dhcpd_host_names_and_strings() {
        for ok in ["n01", "vSMP_n1", "a.b-c", "1n"] {
            assert_eq!(dhcpd_host(ok), Ok(ok));
        }
        for bad in ["a..b", ".a", "a.", "a\"b", "a b", "a{", "a;b", ""] {
            assert!(dhcpd_host(bad).is_err(), "{bad:?}");
        }
        assert_eq!(dhcpd_string("pxelinux.0").unwrap(), "\"pxelinux.0\"");
        assert_eq!(dhcpd_string(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
    }
}
