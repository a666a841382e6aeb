//! Choosing the disk to clone onto: every whole disk in `/sys/block` (not loop, ram,
//! zram, optical, device-mapper or md devices), filtered by hints
//! `serial=…,model=…,wwn=…,path=…,size>=…`; without hints, the first non-removable disk.
//! A hint that matches nothing, or more than one disk, is refused with the candidates
//! ([`SelectError`]).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    pub model: String,
    pub serial: String,
    pub wwn: String,
    pub removable: bool,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:.1} GB, model `{}`, serial `{}`{}{})",
            self.path.display(),
            self.size as f64 / 1e9,
            self.model,
            self.serial,
            if self.wwn.is_empty() {
                String::new()
            } else {
                format!(", wwn `{}`", self.wwn)
            },
            if self.removable { ", removable" } else { "" }
        )
    }
}

/// Why no target disk was chosen. The messages list the disks seen (one per line), so
/// the console says which hint to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no non-removable disk to clone onto; disks seen:\n{}", list(.seen))]
    NoDisk { seen: Vec<Candidate> },
    #[error("target hint `{hint}` is not key=value (serial=, model=, wwn=, path=, size>=)")]
    NotKeyValue { hint: String },
    #[error("unknown target hint `{key}` (serial=, model=, wwn=, path=, size>=)")]
    UnknownHint { key: String },
    #[error("no disk matches the target hints `{hints}`; candidates:\n{}", list(.candidates))]
    NoMatch {
        hints: String,
        candidates: Vec<Candidate>,
    },
    #[error("the target hints `{hints}` match {} disks; refusing to guess. Make them unique (serial= is best):\n{}", .matching.len(), list(.matching))]
    Ambiguous {
        hints: String,
        matching: Vec<Candidate>,
    },
}

/// Disks one per line, indented, for [`SelectError`]'s messages.
fn list(v: &[Candidate]) -> String {
    if v.is_empty() {
        "  (no disks found)".to_string()
    } else {
        v.iter()
            .map(|c| format!("  {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whole disks under `sys_block` (normally `/sys/block`), device nodes under `/dev`.
pub fn list_disks(sys_block: &Path) -> Vec<Candidate> {
    let skip = ["loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"];
    let mut v = vec![];
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if skip.iter().any(|s| name.starts_with(s)) {
            continue;
        }
        let d = e.path();
        let sectors: u64 = read(&d.join("size")).parse().unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let serial = [d.join("device/serial"), d.join("serial")]
            .iter()
            .map(|p| read(p))
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        let wwn = [d.join("wwid"), d.join("device/wwid")]
            .iter()
            .map(|p| read(p))
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        v.push(Candidate {
            path: PathBuf::from("/dev").join(&name),
            size: sectors * 512,
            model: read(&d.join("device/model")),
            serial,
            wwn,
            removable: read(&d.join("removable")) == "1",
        });
    }
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, m) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    n.parse::<f64>().ok().map(|x| (x * m as f64) as u64)
}

/// Picks the target among `cands` by `hints`.
pub fn select(cands: &[Candidate], hints: Option<&str>) -> Result<Candidate, SelectError> {
    let Some(hints) = hints.filter(|h| !h.trim().is_empty()) else {
        return cands
            .iter()
            .find(|c| !c.removable)
            .cloned()
            .ok_or_else(|| SelectError::NoDisk {
                seen: cands.to_vec(),
            });
    };
    let mut matching: Vec<Candidate> = cands.to_vec();
    for h in hints.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (key, op, val) = if let Some((k, v)) = h.split_once(">=") {
            (k.trim(), ">=", v.trim())
        } else if let Some((k, v)) = h.split_once('=') {
            (k.trim(), "=", v.trim())
        } else {
            return Err(SelectError::NotKeyValue { hint: h.into() });
        };
        matching.retain(|c| match (key, op) {
            ("serial", "=") => c.serial == val,
            ("model", "=") => c.model.to_lowercase().contains(&val.to_lowercase()),
            ("wwn", "=") => c.wwn.eq_ignore_ascii_case(val) || c.wwn.ends_with(val),
            ("path", "=") => {
                let want = std::fs::canonicalize(val).unwrap_or_else(|_| PathBuf::from(val));
                c.path == want
            }
            ("size", ">=") => parse_size(val).is_some_and(|min| c.size >= min),
            _ => false,
        });
        if !["serial", "model", "wwn", "path", "size"].contains(&key) {
            return Err(SelectError::UnknownHint { key: key.into() });
        }
    }
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(SelectError::NoMatch {
            hints: hints.into(),
            candidates: cands.to_vec(),
        }),
        _ => Err(SelectError::Ambiguous {
            hints: hints.into(),
            matching,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disks() -> Vec<Candidate> {
        let c = |p: &str, size: u64, model: &str, serial: &str, rem: bool| Candidate {
            path: PathBuf::from(p),
            size,
            model: model.into(),
            serial: serial.into(),
            wwn: String::new(),
            removable: rem,
        };
        vec![
            c("/dev/nvme0n1", 960 << 30, "SAMSUNG MZ7", "S1", false),
            c("/dev/nvme1n1", 960 << 30, "SAMSUNG MZ7", "S2", false),
            c("/dev/sda", 16 << 30, "USB Stick", "U1", true),
        ]
    }

    #[test]
    fn hints_select_exactly_one_or_explain() {
        let d = disks();
        assert_eq!(
            select(&d, None).unwrap().path,
            PathBuf::from("/dev/nvme0n1")
        );
        assert_eq!(
            select(&d, Some("serial=S2")).unwrap().path,
            PathBuf::from("/dev/nvme1n1")
        );
        let e = select(&d, Some("model=samsung")).unwrap_err().to_string();
        assert!(
            e.contains("match 2 disks") && e.contains("/dev/nvme1n1"),
            "{e}"
        );
        let e = select(&d, Some("serial=nope")).unwrap_err().to_string();
        assert!(
            e.contains("no disk matches") && e.contains("/dev/sda"),
            "{e}"
        );
        assert_eq!(
            select(&d, Some("size>=100G,serial=S1")).unwrap().serial,
            "S1"
        );
        assert_eq!(
            select(&d, Some("color=red")),
            Err(SelectError::UnknownHint {
                key: "color".into()
            })
        );
        assert_eq!(
            select(&d[2..], None),
            Err(SelectError::NoDisk {
                seen: d[2..].to_vec()
            })
        );
        assert_eq!(
            select(&[], Some("serial=S1")).unwrap_err().to_string(),
            "no disk matches the target hints `serial=S1`; candidates:\n  (no disks found)"
        );
    }
}
