//! `pxe-builder backup NODE --group G`: marks one node of a built tree for a network
//! backup. The node's own entries (`pxelinux.cfg/01-<mac>`, `boot/grub/grub.cfg-01-<mac>`,
//! `ipxe/01-<mac>.ipxe`) get `netboot.mode=backup`, the target group and a fresh one-time
//! upload token; the token also goes into the tokens file `imgtool serve --tokens` reads
//! (written first, so a node that boots the new entry always finds its token valid).
//! Each file is replaced atomically (written beside it, then renamed): a loader reading
//! it sees the old or the new entry, never a mix. `--clear` puts the node's usual entry
//! back (or removes its own files when it boots the subnet's) and revokes its token.
//!
//! The token is never written into a file the tree serves to anyone else: not into a
//! subnet's bootopts, not into the tree at all apart from this node's entries; the tokens
//! file must lie outside the tree ([`BackupError::TokensInTree`]). The node's entries are
//! still served by TFTP/HTTP to any client that asks for them by name, so the token line
//! binds the token to the node's address (`<group> <token> <ip>`): `imgtool serve` takes
//! it from that address only (docs/PROTOCOL.md, "Upload tokens"). This module owns the
//! backup entry ([`backup_entry`]), the tokens file's edit ([`tokens_with`]) and the
//! marking itself ([`mark`], [`clear`]); the other entries are [`crate::boot`]'s.

use crate::boot::{self, Entry};
use crate::escape::Refused;
use crate::hex::mac_file;
use crate::model::Cluster;
use serde::Serialize;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Largest tokens file read back (one line per marked node: a few hundred KiB at most).
pub const MAX_TOKENS_FILE: u64 = 16 << 20;

/// Random bytes in a token (48 hex digits: what `imgtool serve` takes, 16-128 of
/// `[A-Za-z0-9_-]`).
pub const TOKEN_BYTES: usize = 24;

/// The comment line `mark` writes before a node's token line, so `--clear` and a later
/// mark find (and replace) the node's own line.
const MARK_PREFIX: &str = "# pxe-builder backup node=";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no node named `{0}` in the cluster description")]
    NoNode(String),
    #[error("no group named `{0}` in the cluster description")]
    NoGroup(String),
    #[error("group `{group}` is {why}: a backup makes a disk image for a disk-based group")]
    NotDiskGroup { group: String, why: &'static str },
    #[error("the tokens file {tokens} lies inside the boot tree {tree}, which TFTP and HTTP serve to any client: keep it outside (e.g. /etc/netboot/upload-tokens)")]
    TokensInTree { tokens: PathBuf, tree: PathBuf },
    #[error("{0} is no boot tree (no pxelinux.cfg/): run `pxe-builder build` first")]
    NoTree(PathBuf),
    #[error("{path} is larger than {MAX_TOKENS_FILE} bytes; not a tokens file")]
    TokensTooLarge { path: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{path}: {err}")]
    Refused { path: String, err: Refused },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |err| BackupError::Io { what, path, err }
}

/// What a mark or a clear did (printed by the command; the token itself is not: it is
/// in the tokens file and the node's entries only).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Marked {
    pub node: String,
    /// The target group; none after `--clear`.
    pub group: Option<String>,
    pub tokens: String,
    /// Tree files written (relative paths).
    pub written: Vec<String>,
    /// Tree files removed (`--clear` of a node that boots its subnet's entry).
    pub removed: Vec<String>,
}

impl Marked {
    /// The command's text output.
    pub fn render(&self) -> String {
        let mut t = match &self.group {
            Some(g) => format!(
                "node {} marked for backup into group {g}: its next network boot captures its disk and uploads it.\nupload token added to {} (one-time; keep that file outside the tree)\n",
                self.node, self.tokens
            ),
            None => format!(
                "node {}: backup entry removed, token revoked in {}\n",
                self.node, self.tokens
            ),
        };
        for w in &self.written {
            t.push_str(&format!("  wrote   {w}\n"));
        }
        for r in &self.removed {
            t.push_str(&format!("  removed {r}\n"));
        }
        t
    }
}

/// The tree paths of node `n`'s own entries, with their text.
fn node_files(c: &Cluster, n: usize, e: &Entry) -> Result<Vec<(String, String)>, BackupError> {
    let mf = mac_file(c.nodes[n].mac);
    let files = [
        (format!("pxelinux.cfg/{mf}"), boot::pxelinux(e)),
        (format!("boot/grub/grub.cfg-{mf}"), boot::grub(e)),
        (format!("ipxe/{mf}.ipxe"), boot::ipxe(e)),
    ];
    files
        .into_iter()
        .map(|(path, text)| match text {
            Ok(t) => Ok((path, t)),
            Err(err) => Err(BackupError::Refused { path, err }),
        })
        .collect()
}

/// Node `n`'s backup entry: its usual entity arguments, group `g`'s, then
/// `netboot.mode=backup`, the group, the token and the partitions. A `local` alternative
/// (pxelinux `LOCALBOOT`, GRUB `exit`) is kept in the menu for the console.
pub fn backup_entry(
    c: &Cluster,
    n: usize,
    g: usize,
    token: &str,
    partitions: Option<&[u32]>,
) -> Entry {
    let node = &c.nodes[n];
    let ent = &c.entities[node.entity];
    let grp = &c.groups[g];
    let mut args: Vec<String> = boot::entry_args(c, ent, grp, Some(&node.name), "backup")
        .into_iter()
        .filter(|a| !a.starts_with("netboot.image_id="))
        .collect();
    args.push(format!("netboot.token={token}"));
    if let Some(p) = partitions {
        let list: Vec<String> = p.iter().map(u32::to_string).collect();
        args.push(format!("netboot.partitions={}", list.join(",")));
    }
    Entry {
        title: format!(
            "node {} ({}), BACKUP of its disk into group {}",
            node.name, ent.name, grp.name
        ),
        kernel: boot::KERNEL.into(),
        initrd: boot::INITRD.into(),
        args,
        local_alternative: true,
        net: boot::node_entry(c, n).net,
        // Kernel and initrd from the primary: a backup is one node, not a rack's storm.
        rack: None,
        rack_self: None,
    }
}

/// A fresh token: [`TOKEN_BYTES`] from the kernel's random source, as hex.
pub fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The tokens file `text` with node `node`'s marked line removed (a previous mark, or
/// `--clear`), and `add` (`(group, token, node's address)`) appended under its mark
/// comment. Lines that are not this node's are kept as they are.
pub fn tokens_with(text: &str, node: &str, add: Option<(&str, &str, Ipv4Addr)>) -> String {
    let mark = format!("{MARK_PREFIX}{node}");
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim_end() == mark {
            lines.next(); // the token line under it
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if let Some((group, token, ip)) = add {
        out.push_str(&format!("{mark}\n{group} {token} {ip}\n"));
    }
    out
}

/// Index of the node and of the group, and the group checked as a backup target.
fn find(
    c: &Cluster,
    node: &str,
    group: Option<&str>,
) -> Result<(usize, Option<usize>), BackupError> {
    let n = c
        .nodes
        .iter()
        .position(|x| x.name == node)
        .ok_or_else(|| BackupError::NoNode(node.into()))?;
    let Some(group) = group else {
        return Ok((n, None));
    };
    let g = c
        .groups
        .iter()
        .position(|x| x.name == group)
        .ok_or_else(|| BackupError::NoGroup(group.into()))?;
    let grp = &c.groups[g];
    let why = if grp.diskless {
        Some("diskless")
    } else if grp.is_vsmp(&c.settings.vsmp_prefix) {
        Some("a vSMP group")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(BackupError::NotDiskGroup {
            group: group.into(),
            why,
        });
    }
    Ok((n, Some(g)))
}

/// The tree must be one (`pxelinux.cfg/`), and the tokens file must lie outside it.
fn check_places(tree: &Path, tokens: &Path) -> Result<(), BackupError> {
    if !tree.join("pxelinux.cfg").is_dir() {
        return Err(BackupError::NoTree(tree.to_path_buf()));
    }
    let real_tree = tree.canonicalize().map_err(io("resolving", tree))?;
    let dir = tokens
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let real_dir = dir.canonicalize().map_err(io("resolving", dir))?;
    if real_dir.starts_with(&real_tree) {
        return Err(BackupError::TokensInTree {
            tokens: tokens.to_path_buf(),
            tree: tree.to_path_buf(),
        });
    }
    Ok(())
}

/// Reads the tokens file (empty when absent), bounded by [`MAX_TOKENS_FILE`].
fn read_tokens(path: &Path) -> Result<String, BackupError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let mut text = String::new();
    f.take(MAX_TOKENS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io("reading", path))?;
    if text.len() as u64 > MAX_TOKENS_FILE {
        return Err(BackupError::TokensTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// Replaces `path` with `text`: written and synced beside it, then renamed over it.
/// The temporary file has a random name and is created new (`O_CREAT|O_EXCL`, which
/// also refuses a symlink: nothing left there is followed or reused); when `path` exists its owner and mode
/// carry over (the tokens file may belong to the user `imgtool serve` runs as).
fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), BackupError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut r = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .map_err(io("reading", Path::new("/dev/urandom")))?;
    let rand: String = r.iter().map(|x| format!("{x:02x}")).collect();
    let tmp = path.with_file_name(format!(".{name}.backup-{rand}"));
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let old = std::fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    let result = (|| {
        if let Some(m) = &old {
            // Owner first (chown may clear set-id bits), then the mode.
            let new = f.metadata().map_err(io("reading", &tmp))?;
            if (new.uid(), new.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))
                    .map_err(io("giving the old owner to", &tmp))?;
            }
            f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(io("giving the old mode to", &tmp))?;
        }
        f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("renaming into place", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Marks node `node` for a backup into `group`: a fresh token into `tokens` (mode 0600),
/// then the node's three entries in `tree`.
pub fn mark(
    c: &Cluster,
    tree: &Path,
    tokens: &Path,
    node: &str,
    group: &str,
    partitions: Option<&[u32]>,
) -> Result<Marked, BackupError> {
    let (n, g) = find(c, node, Some(group))?;
    let g = g.ok_or_else(|| BackupError::NoGroup(group.into()))?;
    check_places(tree, tokens)?;
    let token = new_token().map_err(io("reading", Path::new("/dev/urandom")))?;
    let e = backup_entry(c, n, g, &token, partitions);
    // Rendered (and so checked) before anything is written.
    let files = node_files(c, n, &e)?;
    let text = tokens_with(
        &read_tokens(tokens)?,
        node,
        Some((group, &token, c.nodes[n].ip)),
    );
    write_atomic(tokens, &text, 0o600)?;
    let mut written = vec![];
    for (rel, text) in files {
        write_atomic(&tree.join(&rel), &text, 0o644)?;
        written.push(rel);
    }
    Ok(Marked {
        node: node.into(),
        group: Some(group.into()),
        tokens: tokens.display().to_string(),
        written,
        removed: vec![],
    })
}

/// Undoes [`mark`]: the node's usual entries back (or its own files removed when it
/// boots its subnet's entry, [`crate::tree::needs_own_file`]), then its token revoked.
pub fn clear(c: &Cluster, tree: &Path, tokens: &Path, node: &str) -> Result<Marked, BackupError> {
    let (n, _) = find(c, node, None)?;
    check_places(tree, tokens)?;
    let files = node_files(c, n, &boot::node_entry(c, n))?;
    let (mut written, mut removed) = (vec![], vec![]);
    for (rel, text) in files {
        let path = tree.join(&rel);
        if crate::tree::needs_own_file(c, n) {
            write_atomic(&path, &text, 0o644)?;
            written.push(rel);
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(rel),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &path)(e)),
            }
        }
    }
    let text = tokens_with(&read_tokens(tokens)?, node, None);
    write_atomic(tokens, &text, 0o600)?;
    Ok(Marked {
        node: node.into(),
        group: None,
        tokens: tokens.display().to_string(),
        written,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::tests::cluster;

    #[test]
    fn the_backup_entry_names_mode_group_token_and_partitions_on_every_loader() {
        let c = cluster();
        let tok = "ab".repeat(24);
        let e = backup_entry(&c, 0, 0, &tok, Some(&[1, 3]));
        let files = node_files(&c, 0, &e).unwrap();
        assert_eq!(
            files.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
            [
                "pxelinux.cfg/01-52-54-00-00-00-01",
                "boot/grub/grub.cfg-01-52-54-00-00-00-01",
                "ipxe/01-52-54-00-00-00-01.ipxe"
            ]
        );
        for (path, text) in &files {
            for w in [
                "netboot.mode=backup",
                "netboot.group=compute",
                "netboot.node=n1",
                &format!("netboot.token={tok}"),
                "netboot.partitions=1,3",
            ] {
                assert!(text.contains(w), "{path}: {w} missing:\n{text}");
            }
            assert!(!text.contains("netboot.mode=clone"), "{path}");
        }
        assert!(files[0].1.contains("LOCALBOOT 0"), "{}", files[0].1);
        // No partitions: the key is left out (the agent captures every data partition).
        let e = backup_entry(&c, 0, 0, &tok, None);
        assert!(!e.args.iter().any(|a| a.starts_with("netboot.partitions")));
    }

    #[test]
    fn a_group_pin_is_not_carried_into_the_backup_entry() {
        let mut c = cluster();
        c.groups[0].image_id = Some("cd".repeat(32));
        let e = backup_entry(&c, 0, 0, &"ab".repeat(24), None);
        assert!(!e.args.iter().any(|a| a.starts_with("netboot.image_id")));
    }

    #[test]
    fn tokens_file_keeps_other_lines_and_replaces_the_nodes_own() {
        let t = tokens_with(
            "# site tokens\ngpu 0123456789abcdef0123\n",
            "n1",
            Some(("compute", "t1t1t1t1t1t1t1t1", "10.0.0.9".parse().unwrap())),
        );
        assert_eq!(
            t,
            "# site tokens\ngpu 0123456789abcdef0123\n# pxe-builder backup node=n1\ncompute t1t1t1t1t1t1t1t1 10.0.0.9\n"
        );
        let t2 = tokens_with(
            &t,
            "n1",
            Some(("compute", "t2t2t2t2t2t2t2t2", "10.0.0.9".parse().unwrap())),
        );
        assert!(!t2.contains("t1t1") && t2.contains("t2t2"), "{t2}");
        assert_eq!(t2.matches(MARK_PREFIX).count(), 1);
        // Another node's mark is not touched; clearing leaves the site's lines.
        let t3 = tokens_with(
            &t2,
            "n10",
            Some(("compute", "t3t3t3t3t3t3t3t3", "10.0.0.9".parse().unwrap())),
        );
        let cleared = tokens_with(&t3, "n1", None);
        assert_eq!(
            cleared,
            "# site tokens\ngpu 0123456789abcdef0123\n# pxe-builder backup node=n10\ncompute t3t3t3t3t3t3t3t3 10.0.0.9\n"
        );
    }

    #[test]
    fn tokens_are_fresh_hex_of_the_servers_charset() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn only_disk_groups_of_known_nodes_are_targets() {
        let c = cluster();
        assert!(matches!(
            find(&c, "nx", Some("compute")),
            Err(BackupError::NoNode(_))
        ));
        assert!(matches!(
            find(&c, "n1", Some("gx")),
            Err(BackupError::NoGroup(_))
        ));
        assert!(matches!(
            find(&c, "n1", Some("vSMP_g")),
            Err(BackupError::NotDiskGroup { .. })
        ));
        assert_eq!(find(&c, "n1", Some("compute")).unwrap(), (0, Some(0)));
    }

    #[test]
    fn mark_then_clear_on_a_tree_and_the_tokens_file_outside_it() {
        let c = cluster();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("pxelinux.cfg")).unwrap();
        // Inside the tree: refused, nothing written.
        let inside = tree.join(".upload-tokens");
        let e = mark(&c, &tree, &inside, "n1", "compute", None).unwrap_err();
        assert!(matches!(e, BackupError::TokensInTree { .. }), "{e}");
        assert!(!inside.exists());
        assert!(!tree.join("pxelinux.cfg/01-52-54-00-00-00-01").exists());
        let tokens = dir.path().join("upload-tokens");
        let m = mark(&c, &tree, &tokens, "n1", "compute", Some(&[2])).unwrap();
        assert_eq!(m.written.len(), 3);
        let t = std::fs::read_to_string(&tokens).unwrap();
        // The token is bound to the node's address (its entry is readable by anyone).
        let line = t.lines().last().unwrap();
        let ip = c.nodes[0].ip.to_string();
        let token = line
            .strip_prefix("compute ")
            .and_then(|l| l.strip_suffix(&format!(" {ip}")))
            .unwrap_or_else(|| panic!("{line}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pxe = std::fs::read_to_string(tree.join("pxelinux.cfg/01-52-54-00-00-00-01")).unwrap();
        assert!(pxe.contains(&format!("netboot.token={token}")), "{pxe}");
        // Nothing but the node's entries and the tokens file carries the token.
        for f in walk(dir.path()) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let own = f.to_string_lossy().contains("01-52-54-00-00-00-01") || f == tokens;
            assert!(own || !text.contains(token), "{}", f.display());
        }
        // A second mark replaces the token; clear removes the node's files (n1 boots its
        // subnet's entry) and its line.
        mark(&c, &tree, &tokens, "n1", "compute", None).unwrap();
        let t2 = std::fs::read_to_string(&tokens).unwrap();
        assert!(!t2.contains(token) && t2.lines().count() == 2, "{t2}");
        let m = clear(&c, &tree, &tokens, "n1").unwrap();
        assert_eq!(m.removed.len(), 3);
        assert!(!tree.join("pxelinux.cfg/01-52-54-00-00-00-01").exists());
        assert_eq!(std::fs::read_to_string(&tokens).unwrap(), "");
        // n2 (a vSMP board) has files of its own: clear writes them back.
        mark(&c, &tree, &tokens, "n2", "compute", None).unwrap();
        let m = clear(&c, &tree, &tokens, "n2").unwrap();
        assert_eq!(m.written.len(), 3);
        let pxe = std::fs::read_to_string(tree.join("pxelinux.cfg/01-52-54-00-00-00-02")).unwrap();
        assert!(
            pxe.contains("netboot.mode=vsmp") && !pxe.contains("netboot.token"),
            "{pxe}"
        );
    }

    #[test]
    fn write_atomic_keeps_the_old_mode_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("upload-tokens");
        write_atomic(&tokens, "a\n", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        // The admin made it readable by imgtool serve's group: a mark keeps that.
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&tokens, "b\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&tokens).unwrap(), "b\n");
        assert_eq!(
            std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // A file planted under the old pid-based temporary name is neither followed nor
        // reused (the name is random now), and nothing is left beside the file.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let old_tmp = dir
            .path()
            .join(format!(".upload-tokens.backup-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();
        write_atomic(&tokens, "c\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        std::fs::remove_file(&old_tmp).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    fn walk(d: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
