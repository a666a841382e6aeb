//! Upload tokens: the file `imgtool serve --tokens FILE` reads (which group each token may
//! upload to; re-read when it changes, so pxe-builder can add tokens to a running server)
//! and the record of spent tokens (`ROOT/.upload/used-tokens`, kept across restarts): a
//! token is spent when an upload made with it publishes, and refused from then on.
//! Tokens are compared and recorded as their sha256, never written out in clear.
//!
//! File format (docs/PROTOCOL.md, "Upload"): one `<group> <token> [<ip>]` per line, `#`
//! starts a comment line, blank lines are skipped; a token listed for two groups is an
//! error. With `<ip>` the token is taken only from that client address: a token that
//! pxe-builder writes into a node's boot entry is readable by any client of the boot
//! network (TFTP/HTTP serve the entry to anyone), so it is bound to the node's address.
//! Without `<ip>` any client may use it (an admin's `imgtool capture DISK http://…`).
//!
//! A tokens file that cannot be read or parsed revokes every token (fail closed): a
//! half-edited file must not keep tokens valid that the edit revoked.

use super::wire::check_token;
use netboot_proto::names::{name, Kind};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Largest tokens file read (a token line is under 200 bytes: ~80 000 tokens).
pub const MAX_TOKENS_FILE: u64 = 16 << 20;

/// Largest used-tokens record read at start (a line is ~150 bytes: ~400 000 uploads).
pub const MAX_USED_FILE: u64 = 64 << 20;

/// The used-tokens record's name, in the staging directory.
pub const USED_FILE: &str = "used-tokens";

/// A token's key: its sha256, hex.
pub fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A line of the tokens file that is not `<group> <token>`.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{}: {err}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{}: larger than {MAX_TOKENS_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// What a token allows: uploads into `group`, from `ip` only when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub group: String,
    pub ip: Option<IpAddr>,
}

/// Parses a tokens file: `token key → grant`.
pub fn parse_tokens(path: &Path, text: &str) -> Result<HashMap<String, Grant>, TokensError> {
    let mut out: HashMap<String, Grant> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |msg: String| TokensError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(group), Some(token), ip, None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(err("expected `<group> <token> [<ip>]`".into()));
        };
        name(Kind::Image, group).map_err(|(_, why)| err(why))?;
        check_token(token).map_err(err)?;
        let ip = match ip {
            None => None,
            Some(w) => Some(
                w.parse::<IpAddr>()
                    .map_err(|_| err(format!("{w:?} is not an IP address")))?,
            ),
        };
        let grant = Grant {
            group: group.to_string(),
            ip,
        };
        match out.insert(token_key(token), grant) {
            Some(other) if other.group != group => {
                return Err(err(format!(
                    "this token is also listed for group {}: a token is for one group",
                    other.group
                )))
            }
            Some(other) if other.ip != ip => {
                return Err(err(
                    "this token is listed twice with different addresses".into()
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The tokens file, re-read when its modification time or size changes.
pub struct TokenFile {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    tokens: HashMap<String, Grant>,
}

impl TokenFile {
    /// Reads `path` once (an unreadable or malformed file is an error at start).
    pub fn open(path: &Path) -> Result<TokenFile, TokensError> {
        let mut t = TokenFile {
            path: path.to_path_buf(),
            stamp: None,
            tokens: HashMap::new(),
        };
        t.refresh()?;
        Ok(t)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file when it changed. On an error no token is valid until the file
    /// reads well again (fail closed: the bad edit may have revoked some).
    pub fn refresh(&mut self) -> Result<(), TokensError> {
        let r = self.reread();
        if r.is_err() {
            self.tokens.clear();
            self.stamp = None;
        }
        r
    }

    fn reread(&mut self) -> Result<(), TokensError> {
        let read_err = |err| TokensError::Read {
            path: self.path.clone(),
            err,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if self.stamp == Some(stamp) {
            return Ok(());
        }
        let mut bytes = vec![];
        std::fs::File::open(&self.path)
            .and_then(|f| f.take(MAX_TOKENS_FILE + 1).read_to_end(&mut bytes))
            .map_err(|err| TokensError::Read {
                path: self.path.clone(),
                err,
            })?;
        if bytes.len() as u64 > MAX_TOKENS_FILE {
            return Err(TokensError::TooLarge {
                path: self.path.clone(),
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        self.tokens = parse_tokens(&self.path, &text)?;
        self.stamp = Some(stamp);
        Ok(())
    }

    /// What a token (by its key) allows.
    pub fn grant(&self, key: &str) -> Option<&Grant> {
        self.tokens.get(key)
    }
}

/// The spent tokens (their keys), loaded from and appended to `<staging>/used-tokens`.
pub struct UsedTokens {
    path: PathBuf,
    keys: HashSet<String>,
}

impl UsedTokens {
    /// Loads the record (none yet: empty). Lines are `<key> <group> <image id> <unix time>`.
    pub fn open(path: &Path) -> std::io::Result<UsedTokens> {
        let mut keys = HashSet::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                let mut bytes = vec![];
                f.take(MAX_USED_FILE + 1).read_to_end(&mut bytes)?;
                if bytes.len() as u64 > MAX_USED_FILE {
                    return Err(std::io::Error::other(format!(
                        "{}: larger than {MAX_USED_FILE} bytes; archive it and start a new one",
                        path.display()
                    )));
                }
                for line in String::from_utf8_lossy(&bytes).lines() {
                    if let Some(k) = line.split_whitespace().next() {
                        keys.insert(k.to_string());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(UsedTokens {
            path: path.to_path_buf(),
            keys,
        })
    }

    pub fn is_spent(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Records `key` as spent (in memory first, so it is refused even when the record
    /// cannot be written; the error says the record did not reach the disk).
    pub fn spend(&mut self, key: &str, group: &str, image_id: &str) -> std::io::Result<()> {
        self.keys.insert(key.to_string());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(format!("{key} {group} {image_id} {now}\n").as_bytes())?;
        f.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokens_file_maps_tokens_to_groups_and_names_a_bad_line() {
        let p = Path::new("/t");
        let m = parse_tokens(
            p,
            "# made by pxe-builder\n\ncompute abcdefghijklmnop0123\nstorage  ZYXWVUTSRQPONMLK_-99 \n",
        )
        .unwrap();
        assert_eq!(
            m.get(&token_key("abcdefghijklmnop0123")),
            Some(&Grant {
                group: "compute".into(),
                ip: None
            })
        );
        assert_eq!(m.len(), 2);
        let m = parse_tokens(p, "compute abcdefghijklmnop0123 10.0.0.5\n").unwrap();
        assert_eq!(
            m.get(&token_key("abcdefghijklmnop0123")).and_then(|g| g.ip),
            Some("10.0.0.5".parse().unwrap())
        );
        let e = parse_tokens(
            p,
            "compute abcdefghijklmnop0123\nstorage abcdefghijklmnop0123\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/t:2: ") && e.contains("also listed"), "{e}");
        for bad in [
            "compute",
            "compute short",
            "../x abcdefghijklmnop0123",
            "a b c",
            "compute abcdefghijklmnop0123 node1",
            "compute abcdefghijklmnop0123 10.0.0.5 x",
        ] {
            assert!(parse_tokens(p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_tokens_file_revokes_every_token() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("tokens");
        std::fs::write(&path, "compute abcdefghijklmnop0123\n").unwrap();
        let mut t = TokenFile::open(&path).unwrap();
        let key = token_key("abcdefghijklmnop0123");
        assert!(t.grant(&key).is_some());
        // A half-written edit (the token line cut): the token must not stay valid.
        std::fs::write(&path, "compute abcdefghijklmnop0123\nstorage\n").unwrap();
        assert!(t.refresh().is_err());
        assert!(t.grant(&key).is_none());
        std::fs::write(&path, "compute abcdefghijklmnop0123\n# ok again\n").unwrap();
        t.refresh().unwrap();
        assert!(t.grant(&key).is_some());
    }

    #[test]
    fn a_spent_token_stays_spent_across_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(USED_FILE);
        let key = token_key("abcdefghijklmnop0123");
        let mut u = UsedTokens::open(&path).unwrap();
        assert!(!u.is_spent(&key));
        u.spend(&key, "compute", &"a".repeat(64)).unwrap();
        assert!(u.is_spent(&key));
        let again = UsedTokens::open(&path).unwrap();
        assert!(again.is_spent(&key));
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains("abcdefghijklmnop0123"));
    }
}
