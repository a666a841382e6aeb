//! Image versions under an image root: every published image is an immutable directory
//! `ROOT/<group>@<id12>/` (`id12`: the first 12 hex digits of its image id), and
//! `ROOT/<group>` is a relative symbolic link to the current one. A static HTTP server
//! (nginx) serves both paths as they are: `/<group>/manifest` is the current version,
//! `/<group>@<id12>/…` one version for good. Publishing and rollback replace the link
//! with `rename(2)` of a new link over it, so a reader sees the old or the new version,
//! never a mix; a client pins its reads to the version it started with ([`pin_url`],
//! [`pinned_url`]).
//!
//! Owns: naming versions, listing them ([`list`]), making one current ([`publish`],
//! [`rollback`]), removing old ones ([`prune`]) and pinning a URL. Receiving an upload
//! is [`crate::upload`]'s; it stages into `ROOT/.upload/` (never served: dot-names are
//! not) and calls [`publish`]. A group directory from before versions (a plain
//! `ROOT/<group>/`) is served as it is and becomes the version `<group>@<its id12>` at
//! its group's first publish (exchanged with the new link by `renameat2(RENAME_EXCHANGE)`).

use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES};
use crate::source::{HttpSource, ImageSource};
use netboot_proto::names::{name, Kind};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The staging directory in an image root (uploads, the used-tokens record, links being
/// swapped, versions being removed).
pub const STAGING: &str = ".upload";

/// Hex digits of the image id in a version's name.
pub const ID_PREFIX: usize = 12;

/// Versions kept besides the current one by default (`--keep`).
pub const DEFAULT_KEEP: usize = 3;

/// `<group>@<first 12 hex digits of the id>`.
pub fn version_name(group: &str, image_id: &str) -> String {
    let end = image_id.len().min(ID_PREFIX);
    format!("{group}@{}", &image_id[..end])
}

/// One version of a group.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Its directory name (`compute@3f2a…`); for a group from before versions, the
    /// group's own name.
    pub name: String,
    pub image_id: String,
    /// When it was published (its manifest's modification time), Unix seconds.
    pub published: u64,
    /// The same to the nanosecond: the order of versions (two publishes within a
    /// second are still ordered).
    #[serde(skip)]
    pub modified: SystemTime,
    /// Bytes of its files.
    pub bytes: u64,
    pub current: bool,
}

/// A group and its versions, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub group: String,
    /// The current version's name, when the group has one.
    pub current: Option<String>,
    /// A plain directory from before versions (it is its only version).
    pub unversioned: bool,
    pub versions: Vec<Version>,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    image_id: String,
}

/// The image id a manifest's bytes declare, when it is one (64 lower-case hex digits).
fn declared_id(manifest: &[u8]) -> Option<String> {
    let id = serde_json::from_slice::<IdOnly>(manifest).ok()?.image_id;
    netboot_proto::names::image_id(&id).ok()?;
    Some(id)
}

/// The image id in `dir/manifest` and the manifest's modification time.
fn read_id(dir: &Path) -> Result<(String, SystemTime)> {
    let path = dir.join(MANIFEST_FILE);
    let f = std::fs::File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
    let modified = f
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut bytes = vec![];
    f.take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading", &path, e))?;
    let id = declared_id(&bytes).ok_or_else(|| Error::Corrupt {
        path: path.clone(),
        msg: "no image id (64 lower-case hex digits) in it".into(),
    })?;
    Ok((id, modified))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .fold(0u64, |a, m| a.saturating_add(m.len()))
        })
        .unwrap_or(0)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What an entry of the root is.
enum Entry {
    /// `<group>@<id12>` directory.
    Version(String),
    /// `<group>` link to a version.
    Current(String),
    /// `<group>` plain image directory.
    Plain,
}

fn classify(root: &Path, file: &str) -> Option<(String, Entry)> {
    if file.starts_with('.') {
        return None;
    }
    let path = root.join(file);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if let Some((group, id)) = file.split_once('@') {
        let ok = name(Kind::Image, group).is_ok()
            && id.len() == ID_PREFIX
            && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return (ok && meta.is_dir()).then(|| (group.to_string(), Entry::Version(file.into())));
    }
    name(Kind::Image, file).ok()?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&path).ok()?;
        let target = target.to_str()?.to_string();
        let is_ours = target
            .split_once('@')
            .is_some_and(|(g, _)| g == file && !target.contains('/'));
        return is_ours.then(|| (file.to_string(), Entry::Current(target)));
    }
    (meta.is_dir() && path.join(MANIFEST_FILE).is_file()).then(|| (file.to_string(), Entry::Plain))
}

/// Every group under `root` with its versions, by group name; versions newest first.
/// Entries that are neither (other files, dot-names, unreadable manifests) are skipped.
pub fn list(root: &Path) -> Result<Vec<Group>> {
    let mut groups: std::collections::BTreeMap<String, Group> = Default::default();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io("listing", root, e))?;
    for e in entries.flatten() {
        let Some(file) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some((group, entry)) = classify(root, &file) else {
            continue;
        };
        let g = groups.entry(group.clone()).or_insert_with(|| Group {
            group,
            current: None,
            unversioned: false,
            versions: vec![],
        });
        let version_dir = match entry {
            Entry::Current(target) => {
                g.current = Some(target);
                continue;
            }
            Entry::Plain => {
                g.unversioned = true;
                g.current = Some(file.clone());
                file
            }
            Entry::Version(v) => v,
        };
        let dir = root.join(&version_dir);
        let Ok((image_id, modified)) = read_id(&dir) else {
            continue;
        };
        g.versions.push(Version {
            name: version_dir,
            image_id,
            published: unix(modified),
            modified,
            bytes: dir_bytes(&dir),
            current: false,
        });
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    for g in &mut out {
        g.versions
            .sort_by(|a, b| (b.modified, &b.name).cmp(&(a.modified, &a.name)));
        for v in &mut g.versions {
            v.current = g.current.as_deref() == Some(v.name.as_str());
        }
    }
    out.retain(|g| !g.versions.is_empty() || g.current.is_some());
    Ok(out)
}

/// The versions of one group (an error naming the root when it has none).
pub fn group(root: &Path, group: &str) -> Result<Group> {
    list(root)?
        .into_iter()
        .find(|g| g.group == group)
        .ok_or_else(|| {
            Error::Selection(format!(
                "{}: no group {group} (imgtool images lists the groups)",
                root.display()
            ))
        })
}

fn staging(root: &Path) -> Result<PathBuf> {
    let s = root.join(STAGING);
    std::fs::create_dir_all(&s).map_err(|e| Error::io("creating", &s, e))?;
    Ok(s)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

/// A unique name in the staging directory.
fn scratch(root: &Path, what: &str) -> Result<PathBuf> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).map_err(|e| {
        Error::io(
            "drawing a random name in",
            root,
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(staging(root)?.join(format!("{what}-{}", hex::encode(r))))
}

/// Makes `version` (a directory name in `root`) the current version of `group`: a new
/// link renamed over `ROOT/<group>`. A plain directory there (from before versions)
/// becomes the version `<group>@<its id12>` (exchanged atomically with the new link,
/// then renamed); anything else there is refused.
pub fn set_current(root: &Path, group: &str, version: &str) -> Result<()> {
    name(Kind::Image, group).map_err(|(_, why)| Error::Selection(why))?;
    let link = root.join(group);
    let tmp = scratch(root, &format!("link-{group}"))?;
    std::os::unix::fs::symlink(version, &tmp).map_err(|e| Error::io("linking", &tmp, e))?;
    let meta = std::fs::symlink_metadata(&link);
    let swapped = match meta {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::rename(&tmp, &link).map_err(|e| Error::io("making current", &link, e))
        }
        Err(e) => Err(Error::io("reading", &link, e)),
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::rename(&tmp, &link).map_err(|e| Error::io("making current", &link, e))
        }
        Ok(m) if m.is_dir() => adopt_plain(root, group, &link, &tmp),
        Ok(_) => Err(Error::Selection(format!(
            "{} is neither a version link nor an image directory; move it away",
            link.display()
        ))),
    };
    if swapped.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    swapped?;
    sync_dir(root)
}

/// `ROOT/<group>` is a plain image directory: exchange it with the new link `tmp`, then
/// keep it as the version it is.
fn adopt_plain(root: &Path, group: &str, link: &Path, tmp: &Path) -> Result<()> {
    let (id, _) = read_id(link).map_err(|e| {
        Error::Selection(format!(
            "{} is a directory without a readable image ({}); move it away first",
            link.display(),
            e.chain()
        ))
    })?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        tmp,
        rustix::fs::CWD,
        link,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::io("exchanging with the new link", link, e.into()))?;
    let old = root.join(version_name(group, &id));
    if old.exists() {
        // The same image is already kept as a version.
        std::fs::remove_dir_all(tmp).map_err(|e| Error::io("removing", tmp, e))
    } else {
        std::fs::rename(tmp, &old).map_err(|e| Error::io("keeping as a version", &old, e))
    }
}

/// Publishes the complete, checked image directory `staged` (inside `root`'s staging
/// directory) as the version of `group` with id `image_id` and makes it current.
/// Returns the version's name. An image already kept as that version replaces nothing
/// (its id names the same bytes): `staged` is removed and the version made current.
pub fn publish(root: &Path, group: &str, staged: &Path, image_id: &str) -> Result<String> {
    let version = version_name(group, image_id);
    let dest = root.join(&version);
    if std::fs::symlink_metadata(&dest).is_ok() {
        let (have, _) = read_id(&dest)?;
        if have != image_id {
            return Err(Error::Selection(format!(
                "{} holds image {have}, not {image_id} (the first {ID_PREFIX} hex digits collide); not published",
                dest.display()
            )));
        }
        std::fs::remove_dir_all(staged).map_err(|e| Error::io("removing", staged, e))?;
        // Published again now: it becomes the newest version.
        let m = dest.join(MANIFEST_FILE);
        std::fs::File::options()
            .write(true)
            .open(&m)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(|e| Error::io("dating", &m, e))?;
    } else {
        std::fs::rename(staged, &dest).map_err(|e| Error::io("publishing", &dest, e))?;
        sync_dir(root)?;
    }
    set_current(root, group, &version)?;
    Ok(version)
}

/// Makes another version of `group` current: `to` (a version name, `<group>@<hex>` or
/// a prefix of its image id of at least 4 digits, matching one version), or by default
/// the newest version published before the current one. Returns (from, to).
pub fn rollback(root: &Path, group: &str, to: Option<&str>) -> Result<(String, String)> {
    let g = self::group(root, group)?;
    let current = g.versions.iter().find(|v| v.current);
    let from = g.current.clone().unwrap_or_default();
    let target = match to {
        Some(want) => pick(&g, want)?,
        None => {
            let cur = current.ok_or_else(|| {
                Error::Selection(format!(
                    "group {group} has no current version to roll back from; name one"
                ))
            })?;
            g.versions
                .iter()
                .find(|v| (v.modified, &v.name) < (cur.modified, &cur.name))
                .ok_or_else(|| {
                    Error::Selection(format!(
                        "group {group}: no version older than the current {}",
                        cur.name
                    ))
                })?
        }
    };
    if g.unversioned {
        return Err(Error::Selection(format!(
            "group {group} is a plain directory from before versions; publish a version first"
        )));
    }
    set_current(root, group, &target.name)?;
    Ok((from, target.name.clone()))
}

fn pick<'g>(g: &'g Group, want: &str) -> Result<&'g Version> {
    let hex = want.strip_prefix(&format!("{}@", g.group)).unwrap_or(want);
    let ok = hex.len() >= 4 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let found: Vec<&Version> = if ok {
        g.versions
            .iter()
            .filter(|v| v.image_id.starts_with(hex))
            .collect()
    } else {
        vec![]
    };
    match found[..] {
        [v] => Ok(v),
        [] => Err(Error::Selection(format!(
            "group {}: no version {want} (it has {})",
            g.group,
            g.versions
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(Error::Selection(format!(
            "group {}: {want} names {} versions; give more digits",
            g.group,
            found.len()
        ))),
    }
}

/// Removes, in every group (or only `only`), the versions that are not current beyond
/// the `keep` newest. Each is renamed into the staging directory first (it disappears
/// from the URL space at once), then deleted. Returns the removed versions' names.
pub fn prune(root: &Path, only: Option<&str>, keep: usize) -> Result<Vec<String>> {
    let mut removed = vec![];
    for g in list(root)? {
        if only.is_some_and(|o| o != g.group) || g.unversioned {
            continue;
        }
        for v in g.versions.iter().filter(|v| !v.current).skip(keep) {
            let from = root.join(&v.name);
            let trash = scratch(root, &format!("pruned-{}", v.name))?;
            std::fs::rename(&from, &trash).map_err(|e| Error::io("removing", &from, e))?;
            std::fs::remove_dir_all(&trash).map_err(|e| Error::io("removing", &trash, e))?;
            removed.push(v.name.clone());
        }
    }
    Ok(removed)
}

/// The version URL that serves the same manifest as `url` (`http://server/<group>`),
/// given the `manifest` bytes read from `url`: `http://server/<group>@<id12>` when that
/// version directory serves a byte-identical manifest, else `None` (a server without
/// versions, an older one, or a URL that already names a version). Every later read of
/// a restore goes to the pinned URL, so a version published meanwhile cannot mix in.
pub fn pinned_url(url: &str, manifest: &[u8]) -> Option<String> {
    let trimmed = url.trim_end_matches('/');
    let (base, group) = trimmed.rsplit_once('/')?;
    name(Kind::Image, group).ok()?;
    let id = declared_id(manifest)?;
    let pinned = format!("{base}/{}", version_name(group, &id));
    let mut source = HttpSource::new(&pinned);
    source.attempts = 2;
    match source.read_file(MANIFEST_FILE) {
        Ok(same) if same == manifest => Some(pinned),
        _ => None,
    }
}

/// [`pinned_url`] for a client that has not read the manifest yet (the node agent, before
/// it builds its chain of upstreams): reads `url/manifest` and returns the version URL,
/// or `url` itself when the server has no such version.
pub fn pin_url(url: &str) -> Result<String> {
    crate::source::check_url(url).map_err(|e| Error::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let manifest = HttpSource::new(url)
        .read_file(MANIFEST_FILE)
        .map_err(Error::Source)?;
    Ok(pinned_url(url, &manifest).unwrap_or_else(|| url.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_version(root: &Path, group: &str, id_digit: char, mtime: u64) -> String {
        let id: String = std::iter::repeat_n(id_digit, 64).collect();
        let dir = root.join(version_name(group, &id));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(MANIFEST_FILE),
            format!("{{\"image_id\":\"{id}\"}}"),
        )
        .unwrap();
        set_published(&dir, mtime);
        id
    }

    fn set_published(dir: &Path, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::File::options()
            .write(true)
            .open(dir.join(MANIFEST_FILE))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn current(root: &Path, group: &str) -> String {
        std::fs::read_link(root.join(group))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn publish_rollback_and_prune_move_the_link_and_keep_n() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        // A plain directory from before versions becomes a version at the first publish.
        std::fs::create_dir_all(root.join("compute")).unwrap();
        let id_a: String = "a".repeat(64);
        std::fs::write(
            root.join("compute/manifest"),
            format!("{{\"image_id\":\"{id_a}\"}}"),
        )
        .unwrap();
        let id_b = fake_version(root, "x", 'b', 2000);
        std::fs::remove_dir_all(root.join("x@bbbbbbbbbbbb")).unwrap();
        let staged = root.join(".upload/s1");
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(
            staged.join("manifest"),
            format!("{{\"image_id\":\"{id_b}\"}}"),
        )
        .unwrap();
        let v = publish(root, "compute", &staged, &id_b).unwrap();
        assert_eq!(v, "compute@bbbbbbbbbbbb");
        assert_eq!(current(root, "compute"), v);
        assert!(root.join("compute@aaaaaaaaaaaa/manifest").is_file());
        assert!(!staged.exists());
        // Served through the link.
        assert!(std::fs::read_to_string(root.join("compute/manifest"))
            .unwrap()
            .contains(&id_b));
        // Listing: both versions, b current.
        let g = group(root, "compute").unwrap();
        assert_eq!(g.versions.len(), 2);
        assert_eq!(g.current.as_deref(), Some(v.as_str()));
        assert!(g.versions.iter().any(|x| x.current && x.image_id == id_b));
        set_published(&root.join("compute@aaaaaaaaaaaa"), 1000);
        set_published(&root.join("compute@bbbbbbbbbbbb"), 2000);
        // Three more, then roll back by default to the one before the current.
        for (c, t) in [('c', 3000), ('d', 4000), ('e', 5000)] {
            let id = fake_version(root, "compute", c, t);
            set_current(root, "compute", &version_name("compute", &id)).unwrap();
        }
        assert_eq!(current(root, "compute"), "compute@eeeeeeeeeeee");
        let (from, to) = rollback(root, "compute", None).unwrap();
        assert_eq!(
            (from.as_str(), to.as_str()),
            ("compute@eeeeeeeeeeee", "compute@dddddddddddd")
        );
        let (_, to) = rollback(root, "compute", Some("cccc")).unwrap();
        assert_eq!(to, "compute@cccccccccccc");
        assert!(rollback(root, "compute", Some("ffff")).is_err());
        assert!(rollback(root, "compute", Some("../etc")).is_err());
        // Prune keeps the current (c) and the 2 newest others (e, d).
        let mut removed = prune(root, None, 2).unwrap();
        removed.sort();
        let g = group(root, "compute").unwrap();
        let names: Vec<&str> = g.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "compute@eeeeeeeeeeee",
                "compute@dddddddddddd",
                "compute@cccccccccccc"
            ]
        );
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(current(root, "compute"), "compute@cccccccccccc");
    }

    #[test]
    fn only_our_names_count_as_versions() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fake_version(root, "g", 'a', 1000);
        std::fs::create_dir_all(root.join("g@nothex000000")).unwrap();
        std::fs::create_dir_all(root.join(".upload/g@aaaaaaaaaaaa")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("h")).unwrap();
        let all = list(root).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].versions.len(), 1);
        assert_eq!(all[0].current, None);
    }
}
