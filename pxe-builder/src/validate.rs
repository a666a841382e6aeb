//! What `cluster.toml` may say, as pure checks: the character set of names, the reserved
//! names, the image server URL, kernel arguments and an entity's gateway. [`crate::model`] calls these at parse
//! time and turns each refusal into a file:line:column diagnostic; the writers escape or
//! refuse again on their own ([`crate::escape`]). The rules and the reasons are in
//! `docs/BOOT.md` ("What cluster.toml accepts").

use crate::escape;
/// The naming rules are the protocol's: the agent checks what it reads by the same ones.
pub use netboot_proto::names::{image_id, name, Kind, MAX_NAME};
use netboot_proto::net::Net;
use std::net::Ipv4Addr;

/// Longest `image_server` URL: it is on every kernel command line and in every bootopts.
pub const MAX_URL: usize = 255;

/// `vsmp_prefix`: empty (no vSMP) or the start of a group name (letters, digits, `.`, `_`,
/// `-`).
pub fn vsmp_prefix(s: &str) -> Result<(), (usize, String)> {
    if let Some((i, _)) = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return Err((
            i,
            format!(
                "vsmp_prefix {} may hold only letters, digits, `.`, `_` and `-` (it starts group names)",
                escape::shown(s)
            ),
        ));
    }
    if s.len() > MAX_NAME {
        return Err((MAX_NAME, format!("vsmp_prefix is longer than {MAX_NAME}")));
    }
    Ok(())
}

fn url_err<T>(s: &str, at: usize, why: &str) -> Result<T, (usize, String)> {
    Err((
        at,
        format!(
            "image_server {} {why}; write it like http://172.20.0.100:8080 or http://images.example/root",
            escape::shown(s)
        ),
    ))
}

/// `image_server`: an absolute `http://` URL of a host (DNS name, IPv4, or `[IPv6]`), an optional port 1–65535 and an optional path of letters, digits,
/// `. _ ~ - /` and `%XX`; no user, query or fragment; at most [`MAX_URL`] bytes.
/// Each rule is one step below, checked in this order; the first broken one is reported.
pub fn image_server(s: &str) -> Result<(), (usize, String)> {
    url_text(s)?;
    let rest = url_scheme(s)?;
    let rest_at = s.len() - rest.len();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if let Some(i) = authority.find('@') {
        return url_err(
            s,
            rest_at + i,
            "has a user part (it would be on every kernel command line)",
        );
    }
    let (host, port) = url_authority(s, authority, rest_at)?;
    if !authority.starts_with('[') {
        url_host_name(s, host, rest_at)?;
    }
    if let Some((p, at)) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || !matches!(p.parse::<u32>(), Ok(1..=65535))
        {
            return url_err(s, at, "has a port that is not 1-65535");
        }
    }
    url_path(s, path, rest_at + authority.len())
}

/// The URL's length and characters: printable ASCII, at most [`MAX_URL`] bytes.
fn url_text(s: &str) -> Result<(), (usize, String)> {
    if s.len() > MAX_URL {
        return url_err(s, MAX_URL, "is longer than 255 bytes");
    }
    if let Some((i, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return url_err(
            s,
            i,
            if c.is_whitespace() || c.is_control() {
                "contains whitespace or a control character (it would add kernel arguments or bootopts keys)"
            } else {
                "contains a character that is not printable ASCII"
            },
        );
    }
    Ok(())
}

/// `http://` and what follows it; `https://` is refused with why.
fn url_scheme(s: &str) -> Result<&str, (usize, String)> {
    if s.starts_with("https://") {
        // The agent has no TLS (a ramdisk without CA certificates could not check a
        // server anyway): origin comes from signed images instead (docs/TRUST.md).
        return url_err(
            s,
            0,
            "is https://, which the node agent cannot speak (no TLS in the boot ramdisk); serve the images over http:// and sign them (docs/TRUST.md)",
        );
    }
    match s.strip_prefix("http://") {
        Some(rest) => Ok(rest),
        None => url_err(s, 0, "is not an http:// URL"),
    }
}

/// A host, and its port with the port's position in the URL.
type HostPort<'a> = (&'a str, Option<(&'a str, usize)>);

/// The host and port the authority (at `rest_at` in `s`) is made of; a bracketed host
/// must be an IPv6 address.
fn url_authority<'a>(
    s: &str,
    authority: &'a str,
    rest_at: usize,
) -> Result<HostPort<'a>, (usize, String)> {
    let Some(v6) = authority.strip_prefix('[') else {
        return Ok(match authority.split_once(':') {
            Some((h, p)) => (h, Some((p, rest_at + h.len() + 1))),
            None => (authority, None),
        });
    };
    let Some(end) = v6.find(']') else {
        return url_err(s, rest_at, "has `[` without `]`");
    };
    let h = &v6[..end];
    if h.is_empty() || h.parse::<std::net::Ipv6Addr>().is_err() {
        return url_err(s, rest_at + 1, "has a bracketed host that is not IPv6");
    }
    let after = &v6[end + 1..];
    match after.strip_prefix(':') {
        Some(p) => Ok((h, Some((p, rest_at + end + 3)))),
        None if after.is_empty() => Ok((h, None)),
        None => url_err(s, rest_at + end + 2, "has text after `]`"),
    }
}

/// A DNS name or IPv4 address: letters, digits, `.` and `-`, well formed.
fn url_host_name(s: &str, host: &str, rest_at: usize) -> Result<(), (usize, String)> {
    if host.is_empty() {
        return url_err(s, rest_at, "has no host");
    }
    if let Some(i) = host
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .map(|(i, _)| i)
    {
        return url_err(
            s,
            rest_at + i,
            "has a host with a character other than letters, digits, `.` and `-`",
        );
    }
    if host.starts_with(['.', '-']) || host.ends_with(['.', '-']) || host.contains("..") {
        return url_err(s, rest_at, "has a malformed host name");
    }
    Ok(())
}

/// The path (at `path_at` in `s`): letters, digits, `. _ ~ - /` and `%XX`, no `..`.
fn url_path(s: &str, path: &str, path_at: usize) -> Result<(), (usize, String)> {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
                i += 3;
                continue;
            }
            return url_err(s, path_at + i, "has a `%` not followed by two hex digits");
        }
        if !(c.is_ascii_alphanumeric() || b"._~-/".contains(&c)) {
            let why = match c {
                b'?' | b'#' => "has a query or fragment (the agent appends paths to it)",
                c if c.is_ascii_whitespace() || c.is_ascii_control() => {
                    "contains whitespace or a control character (it would add kernel arguments or bootopts keys)"
                }
                _ => "has a path character other than letters, digits, `. _ ~ - /` and %XX",
            };
            return url_err(s, path_at + i, why);
        }
        i += 1;
    }
    if path.split('/').any(|seg| seg == "..") {
        return url_err(s, path_at, "has a `..` path segment");
    }
    Ok(())
}

/// Keys pxe-builder puts on every command line itself; a second one from the description
/// would contradict ours (the agent reads the last).
pub const GENERATED_KEYS: &[&str] = &[
    "netboot.server",
    "netboot.node",
    "netboot.entity",
    "netboot.group",
    "netboot.image",
    "netboot.mode",
    "netboot.image_id",
    "netboot.root",
    // `pxe-builder backup` writes these on one node's entry; from the description they
    // would put a token where every client reads it.
    "netboot.token",
    "netboot.partitions",
    "netboot.mac",
    "netboot.ip",
    // pxelinux appends the DHCP lease's (IPAPPEND 3), GRUB and iPXE entries ours with the
    // entity's netmask and gateway; a description's would be dead or contradict them.
    "ip",
    "vsmp.role",
    "vsmp.board",
    "vsmp.boards",
    "vsmp.group",
    "BOOTIF",
];

/// `kernel_args`, `vsmp_args`, an entity's or a group's `args`: whitespace-separated
/// words, each an [`escape::kernel_arg`] and none a key pxe-builder sets. Returns the byte
/// index of the offending word.
pub fn kernel_args(key: &str, s: &str) -> Result<(), (usize, String)> {
    let mut at = 0;
    for w in s.split([' ', '\t']) {
        let here = at;
        at += w.len() + 1;
        if w.is_empty() {
            continue;
        }
        if let Err(e) = escape::kernel_arg(w) {
            return Err((
                here,
                format!(
                    "{key}: the word {} {}; each argument is one word of printable ASCII",
                    e.value, e.why
                ),
            ));
        }
        let k = w.split('=').next().unwrap_or(w);
        if GENERATED_KEYS.contains(&k) {
            return Err((
                here,
                format!("{key}: `{k}=` is set by pxe-builder for each entry; remove it"),
            ));
        }
    }
    Ok(())
}

/// The IPv4 address `image_server` names as its host, if it names one (a DNS name or an
/// IPv6 host gives none: where it lies cannot be known here). Call on a URL that passed
/// [`image_server`].
pub fn image_server_ipv4(s: &str) -> Option<Ipv4Addr> {
    let rest = s.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    if authority.starts_with('[') {
        return None;
    }
    authority.split(':').next()?.parse().ok()
}

/// An entity's `gateway`: an address of its subnet `net` that is neither the network's
/// nor (below /31, which has none, RFC 3021) its broadcast address. Returns why not.
pub fn gateway(net: &Net, gw: Ipv4Addr) -> Result<(), String> {
    if !net.contains(gw) {
        return Err(format!("is outside the entity's subnet {net}"));
    }
    if !net.is_host_address(gw) {
        let which = if u32::from(gw) == net.first() {
            "network"
        } else {
            "broadcast"
        };
        return Err(format!(
            "is the {which} address of subnet {net}, not a router's"
        ));
    }
    Ok(())
}

/// A path on this machine (kernel, initrd, vSMP loader, GRUB modules): it is only read
/// and copied under a fixed name, never written into a boot file, so any path will do
/// except one with control characters (which would garble the messages that name it).
pub fn local_path(key: &str, s: &str) -> Result<(), (usize, String)> {
    match s.char_indices().find(|(_, c)| c.is_control()) {
        Some((i, _)) => Err((
            i,
            format!("{key} {} contains a control character", escape::shown(s)),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random strings over an alphabet rich in the characters the syntaxes care about.
    fn random_strings() -> impl Iterator<Item = String> {
        const ALPHABET: &[char] = &[
            'a', 'Z', '0', '9', '.', '_', '-', ',', '/', ' ', '\t', '\n', '\r', '"', '\'', '\\',
            '$', '{', '}', ';', '#', '|', '&', ':', '=', '!', '*', '\u{1b}', 'é', '\u{85}',
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..20_000).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 12) as usize;
            (0..len)
                .map(|i| ALPHABET[((x >> (i * 5)) % ALPHABET.len() as u64) as usize])
                .collect()
        })
    }

    /// A name the model accepts passes every writer unchanged; whatever a writer emits
    /// for any string stays on one line.
    #[test]
    fn accepted_names_pass_every_syntax_and_no_output_gains_a_line() {
        let mut accepted = 0;
        for s in random_strings().chain(["n01".into(), "vSMP_a.b-c".into()]) {
            if name(Kind::Node, &s).is_ok() && name(Kind::Entity, &s).is_ok() {
                accepted += 1;
                assert_eq!(escape::comment(&s), Ok(s.as_str()));
                assert_eq!(escape::kernel_arg(&s), Ok(s.as_str()));
                assert_eq!(escape::line(&s), Ok(s.as_str()));
                assert_eq!(escape::grub_word(&s).unwrap(), s);
                assert_eq!(escape::ipxe_word(&s), Ok(s.as_str()));
                assert_eq!(escape::bootopts_field(&s), Ok(s.as_str()));
                assert_eq!(escape::dnsmasq_hostname(&s), Ok(s.as_str()));
                assert_eq!(escape::dnsmasq_tag(&s), Ok(s.as_str()));
                assert_eq!(escape::dhcpd_host(&s), Ok(s.as_str()));
            }
            let outputs = [
                escape::comment(&s).map(str::to_string),
                escape::kernel_arg(&s).map(str::to_string),
                escape::grub_word(&s).map(|c| c.into_owned()),
                escape::ipxe_word(&s).map(str::to_string),
                escape::bootopts_value(&s).map(str::to_string),
                escape::dnsmasq_value(&s).map(str::to_string),
                escape::dhcpd_host(&s).map(str::to_string),
                escape::dhcpd_string(&s),
            ];
            for o in outputs.into_iter().flatten() {
                assert!(!o.chars().any(char::is_control), "{s:?} -> {o:?}");
            }
            // GRUB: the quoted form reads back as the value (single quotes: literal).
            if let Ok(q) = escape::grub_word(&s) {
                assert_eq!(unquote_grub(&q), s, "{q}");
            }
            if let Ok(q) = escape::dhcpd_string(&s) {
                assert_eq!(unquote_dhcpd(&q), s, "{q}");
            }
        }
        assert!(accepted > 20, "only {accepted} random names accepted");
    }

    /// GRUB's lexer for the forms grub_word writes: plain text, '…' literal, \x escaped.
    fn unquote_grub(q: &str) -> String {
        let (mut out, mut quoted, mut chars) = (String::new(), false, q.chars());
        while let Some(c) = chars.next() {
            match c {
                '\'' => quoted = !quoted,
                '\\' if !quoted => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    }

    /// dhcpd's lexer for a string: "…" with \" and \\.
    fn unquote_dhcpd(q: &str) -> String {
        let inner = &q[1..q.len() - 1];
        let (mut out, mut chars) = (String::new(), inner.chars());
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.extend(chars.next());
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn image_server_is_a_strict_http_url() {
        for ok in [
            "http://172.20.0.100:8080",
            "http://images.example/root/",
            "http://[fd00::1]:8080/img",
            "http://h/a%20b",
            "http://s",
        ] {
            assert_eq!(image_server(ok), Ok(()), "{ok}");
        }
        for bad in [
            "ftp://x",
            "http://",
            "http://a b",
            "http://a/b c",
            "http://a/ init=/bin/sh",
            "http://a\nserver=x",
            "http://u:p@h/",
            "http://h:0",
            "http://h:99999",
            "http://h:80x",
            "http://h/?q",
            "http://h/#f",
            "http://h/%zz",
            "http://h/'x'",
            "http://h/$x",
            "http://h/../x",
            "http://[zz]/",
            "http://-h/",
            "http://h..x/",
        ] {
            assert!(image_server(bad).is_err(), "{bad:?}");
        }
        assert!(image_server(&format!("http://h/{}", "a".repeat(300))).is_err());
        // Accepted before, although no TLS is compiled into the agent (issue 11).
        let (_, m) = image_server("https://images.example/root").unwrap_err();
        assert!(m.contains("no TLS") && m.contains("sign them"), "{m}");
    }

    #[test]
    fn a_gateway_is_a_host_address_of_its_subnet() {
        let net = netboot_proto::net::parse_cidr("172.20.1.0/24").unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(gateway(&net, ip("172.20.1.1")), Ok(()));
        assert_eq!(gateway(&net, ip("172.20.1.254")), Ok(()));
        for (bad, why) in [
            ("172.20.2.1", "outside"),
            ("172.20.1.0", "network address"),
            ("172.20.1.255", "broadcast address"),
        ] {
            let e = gateway(&net, ip(bad)).unwrap_err();
            assert!(e.contains(why) && e.contains("172.20.1.0/24"), "{bad}: {e}");
        }
        let p2p = netboot_proto::net::parse_cidr("10.0.0.0/31").unwrap();
        assert_eq!(
            gateway(&p2p, ip("10.0.0.0")),
            Ok(()),
            "a /31 has no broadcast"
        );
    }

    #[test]
    fn the_image_servers_ipv4_host() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().ok();
        assert_eq!(
            image_server_ipv4("http://172.20.0.100:8080/root"),
            ip("172.20.0.100")
        );
        assert_eq!(image_server_ipv4("http://172.20.0.100"), ip("172.20.0.100"));
        assert_eq!(image_server_ipv4("http://images.example:8080"), None);
        assert_eq!(image_server_ipv4("http://[fd00::1]:8080"), None);
    }

    #[test]
    fn kernel_args_are_words_and_not_ours() {
        assert_eq!(
            kernel_args(
                "kernel_args",
                "console=ttyS0  panic=-1 netboot.done=poweroff"
            ),
            Ok(())
        );
        assert_eq!(kernel_args("k", "").map_err(|e| e.0), Ok(()));
        assert_eq!(kernel_args("k", "a x=\"b c\"").map_err(|e| e.0), Err(2));
        assert_eq!(
            kernel_args("k", "quiet netboot.server=http://evil").map_err(|e| e.0),
            Err(6)
        );
        assert!(kernel_args("k", "a\nb").is_err());
        assert!(kernel_args("k", "BOOTIF=01-00").is_err());
        assert!(kernel_args("k", "ip=dhcp").is_err());
        assert_eq!(kernel_args("k", "ipv6.disable=1 ipx=1"), Ok(()));
    }
}
