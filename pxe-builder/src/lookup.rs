//! `lookup`: which file pxelinux (and GRUB) will load for a client, in the order they try
//! them, which one exists, and what it boots; plus the bootopts file the agent will read.

use crate::hex::pxelinux_candidates;
use netboot_proto::{bootopts, hex::hex_prefixes};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// Every file pxelinux tries, in order, and whether it exists.
    pub tried: Vec<(String, bool)>,
    /// The first that exists.
    pub chosen: Option<String>,
    /// Of the chosen file's default entry.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    /// `etc/bootopts/<HEX>` with the longest prefix of the address, as the agent reads it.
    pub bootopts: Option<String>,
}

pub fn lookup(tree: &Path, mac: Option<[u8; 6]>, ip: Option<Ipv4Addr>) -> Lookup {
    let mut tried = vec![];
    let mut chosen = None;
    for c in pxelinux_candidates(mac, ip) {
        let rel = format!("pxelinux.cfg/{c}");
        let exists = tree.join(&rel).is_file();
        if exists && chosen.is_none() {
            chosen = Some(rel.clone());
        }
        tried.push((rel, exists));
    }
    let mut l = Lookup {
        tried,
        chosen: chosen.clone(),
        kernel: None,
        initrd: None,
        append: None,
        bootopts: None,
    };
    if let Some(rel) = chosen {
        if let Ok(text) = std::fs::read_to_string(tree.join(&rel)) {
            let (k, i, a) = default_entry(&text);
            l.kernel = k;
            l.initrd = i;
            l.append = a;
        }
    }
    if let Some(ip) = ip {
        l.bootopts = hex_prefixes(ip)
            .into_iter()
            .map(|h| format!("{}/{h}", bootopts::DIR))
            .find(|p| tree.join(p).is_file());
    }
    l
}

/// `s` with control characters escaped: a tree may come from anywhere, and what lookup
/// prints must not drive the terminal.
fn printable(s: String) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .flat_map(|c| c.escape_debug().collect::<Vec<_>>())
            .collect()
    } else {
        s
    }
}

/// KERNEL, INITRD and APPEND of the `DEFAULT` label of a pxelinux config (control
/// characters escaped).
pub fn default_entry(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (k, i, a) = default_entry_raw(text);
    (k.map(printable), i.map(printable), a.map(printable))
}

fn default_entry_raw(text: &str) -> (Option<String>, Option<String>, Option<String>) {
    let mut default = None;
    let mut label = None;
    let (mut k, mut i, mut a) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim().to_string();
        match key.to_ascii_uppercase().as_str() {
            "DEFAULT" => default = Some(rest),
            "LABEL" => label = Some(rest),
            "KERNEL" | "LINUX" if label == default => k = Some(rest),
            "INITRD" if label == default => i = Some(rest),
            "APPEND" if label == default => a = Some(rest),
            _ => {}
        }
    }
    (k, i, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_lookup_reports_from_a_tree_has_no_control_characters() {
        let (k, _, a) = default_entry(
            "DEFAULT x\nLABEL x\n  KERNEL boot/vmlinuz\n  APPEND quiet \u{1b}]0;owned\u{7} x=1\n",
        );
        assert_eq!(k.as_deref(), Some("boot/vmlinuz"));
        let a = a.unwrap();
        assert!(!a.chars().any(char::is_control), "{a:?}");
        assert!(a.starts_with("quiet \\u{1b}]0;owned"), "{a}");
    }
}
