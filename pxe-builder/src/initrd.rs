//! The boot initrd: a newc cpio ([`crate::cpio`]), zstd-compressed, holding the static
//! `initrd-agent` as `/init`, the kernel modules it needs in dependency order (listed in
//! `/etc/netboot/modules` for the agent's `finit_module`), e2fsprogs (`e2fsck`,
//! `resize2fs`, `mke2fs`) with the shared libraries `ldd` names, busybox for DHCP, and
//! the public keys the node trusts to sign images ([`TRUSTED_DIR`], `docs/TRUST.md`).
//! Inputs are read in a fixed order and every timestamp is zero, so the same inputs give
//! the same bytes.

use crate::cpio::Cpio;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Drivers a node needs to reach the network and its disks, loaded when the kernel has
/// them as modules (built-in ones need nothing; absent ones are listed as skipped).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "bnxt_en",
    "mlx5_core",
    "nvme",
    "ahci",
    "sd_mod",
    // Restore grows XFS and btrfs while mounted, from a loop device over the partition's
    // bytes (imgtool's `mount`): the node has no other way to reach them before the
    // partition table is written.
    "loop",
    "xfs",
    "btrfs",
];

/// Where the initrd holds trusted image-signing public keys, one `<key id>.pub` each. The
/// agent refuses any image not signed by one of them when the directory has any.
pub use netboot_proto::initrd::TRUSTED_DIR;

pub const TOOLS: &[&str] = &["/sbin/e2fsck", "/sbin/resize2fs", "/sbin/mke2fs"];

#[derive(Debug, Clone)]
pub struct Spec {
    pub agent: PathBuf,
    pub kernel_release: String,
    pub modules_root: PathBuf,
    /// Requested modules: an error when one is neither a module nor built in.
    pub modules: Vec<String>,
    /// Tried when present in the kernel, silently skipped otherwise.
    pub optional_modules: Vec<String>,
    pub tools: Vec<PathBuf>,
    pub busybox: Option<PathBuf>,
    /// Public keys (`imgtool keygen`'s `KEY.pub`) copied to [`TRUSTED_DIR`].
    pub trusted: Vec<PathBuf>,
}

impl Spec {
    /// The usual spec for a kernel file named `vmlinuz-<release>`: modules from
    /// `modules_root/<release>` (`required` must exist, [`DEFAULT_MODULES`] when present),
    /// e2fsprogs, and the system's static busybox.
    pub fn for_kernel(
        agent: &Path,
        kernel: &Path,
        modules_root: &Path,
        required: Vec<String>,
    ) -> Result<Spec, InitrdError> {
        let name = kernel
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let release = name.strip_prefix("vmlinuz-").ok_or_else(|| {
            InitrdError::Other(format!(
                "{}: expected a kernel named vmlinuz-<release>",
                kernel.display()
            ))
        })?;
        Ok(Spec {
            agent: agent.to_path_buf(),
            kernel_release: release.to_string(),
            modules_root: modules_root.to_path_buf(),
            modules: required,
            optional_modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            tools: TOOLS.iter().map(PathBuf::from).collect(),
            busybox: ["/bin/busybox", "/usr/bin/busybox"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
            trusted: vec![],
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub bytes: usize,
    pub uncompressed: usize,
    pub modules: Vec<String>,
    pub builtin: Vec<String>,
    pub skipped: Vec<String>,
    pub files: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module `{0}` is neither a module nor built into kernel {1} (see {2})")]
    NoModule(String, String, PathBuf),
    #[error("{0}")]
    Other(String),
}

fn read(p: &Path) -> Result<Vec<u8>, InitrdError> {
    std::fs::read(p).map_err(|source| InitrdError::Read {
        path: p.to_path_buf(),
        source,
    })
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Modules resolved: files in load order, names built into the kernel, names absent.
pub type Resolved = (Vec<String>, Vec<String>, Vec<String>);

/// Resolves modules to their files in load order (dependencies first).
pub fn resolve_modules(spec: &Spec) -> Result<Resolved, InitrdError> {
    let dir = spec.modules_root.join(&spec.kernel_release);
    let dep_path = dir.join("modules.dep");
    if !dep_path.exists() && spec.modules.is_empty() {
        // A kernel with everything built in (kernel-config/netboot.config) has no modules.
        return Ok((vec![], vec![], spec.optional_modules.clone()));
    }
    let dep_text = String::from_utf8_lossy(&read(&dep_path)?).to_string();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((m, d)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module_name(m),
            (
                m.to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let builtin_text = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtins: BTreeSet<String> = builtin_text.lines().map(module_name).collect();
    let by_path: BTreeMap<String, String> = deps
        .iter()
        .map(|(n, (p, _))| (p.clone(), n.clone()))
        .collect();
    let mut order: Vec<String> = vec![];
    let mut seen = BTreeSet::new();
    fn visit(
        path: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        by_path: &BTreeMap<String, String>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(path.to_string()) {
            return;
        }
        if let Some((_, ds)) = by_path.get(path).and_then(|n| deps.get(n)) {
            // modules.dep lists a module's dependencies nearest first; load the farthest first.
            for d in ds.iter().rev() {
                visit(d, deps, by_path, seen, order);
            }
        }
        order.push(path.to_string());
    }
    let (mut builtin, mut skipped) = (vec![], vec![]);
    for (m, required) in spec
        .modules
        .iter()
        .map(|m| (m, true))
        .chain(spec.optional_modules.iter().map(|m| (m, false)))
    {
        let name = m.replace('-', "_");
        match deps.get(&name) {
            Some((p, _)) => visit(p, &deps, &by_path, &mut seen, &mut order),
            None if builtins.contains(&name) => builtin.push(name),
            None if required => {
                return Err(InitrdError::NoModule(
                    m.clone(),
                    spec.kernel_release.clone(),
                    dep_path,
                ))
            }
            None => skipped.push(name),
        }
    }
    Ok((order, builtin, skipped))
}

/// Shared libraries (and the loader) `ldd` reports for `bin`.
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>, InitrdError> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| InitrdError::Other(format!("running ldd {}: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = vec![];
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            v.push(PathBuf::from(p));
        }
    }
    Ok(v)
}

fn add_dirs(c: &mut Cpio, made: &mut BTreeSet<String>, path: &str) -> Result<(), InitrdError> {
    let mut acc = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        if made.insert(acc.clone()) {
            c.dir(&acc).map_err(|e| InitrdError::Other(e.to_string()))?;
        }
    }
    Ok(())
}

/// Builds the compressed initrd.
pub fn build(spec: &Spec) -> Result<(Vec<u8>, Summary), InitrdError> {
    let other = |e: std::io::Error| InitrdError::Other(e.to_string());
    let mut c = Cpio::new();
    let mut made = BTreeSet::new();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "etc/netboot",
        "bin",
        "sbin",
    ] {
        made.insert(d.to_string());
        c.dir(d).map_err(other)?;
    }
    c.char_device("dev/console", 0o600, 5, 1).map_err(other)?;
    c.char_device("dev/null", 0o666, 1, 3).map_err(other)?;
    c.symlink("etc/mtab", "/proc/mounts").map_err(other)?;
    c.file("init", 0o755, &read(&spec.agent)?).map_err(other)?;
    let mut files = vec!["init".to_string()];
    let (mods, builtin, skipped) = resolve_modules(spec)?;
    let mut list =
        String::from("# kernel modules, in load order (written by pxe-builder initrd)\n");
    for m in &mods {
        let rel = format!("lib/modules/{}/{m}", spec.kernel_release);
        add_dirs(&mut c, &mut made, &rel)?;
        let bytes = read(&spec.modules_root.join(&spec.kernel_release).join(m))?;
        c.file(&rel, 0o644, &bytes).map_err(other)?;
        list.push_str(&format!("/{rel}\n"));
        files.push(rel);
    }
    c.file("etc/netboot/modules", 0o644, list.as_bytes())
        .map_err(other)?;
    let mut libs = BTreeSet::new();
    for t in &spec.tools {
        let rel = t.display().to_string();
        add_dirs(&mut c, &mut made, &rel)?;
        c.file(rel.trim_start_matches('/'), 0o755, &read(t)?)
            .map_err(other)?;
        files.push(rel.trim_start_matches('/').to_string());
        libs.extend(shared_libs(t)?);
    }
    for l in libs {
        let rel = l.display().to_string();
        add_dirs(&mut c, &mut made, &rel)?;
        c.file(rel.trim_start_matches('/'), 0o755, &read(&l)?)
            .map_err(other)?;
        files.push(rel.trim_start_matches('/').to_string());
    }
    // Loaded exactly as a node will load them (format, key id, count): a key the agent
    // would refuse is refused here, at build time, not at every node's boot. A secret key
    // is refused with advice; duplicates are dropped.
    let keys = imgtool::sign::load_trusted(&spec.trusted)
        .map_err(|e| InitrdError::Other(format!("--trust: {e}")))?;
    for k in keys {
        let rel = format!("{}/{}.pub", TRUSTED_DIR.trim_start_matches('/'), k.id);
        add_dirs(&mut c, &mut made, &rel)?;
        c.file(&rel, 0o644, k.to_text().as_bytes()).map_err(other)?;
        files.push(rel);
    }
    if let Some(bb) = &spec.busybox {
        c.file("bin/busybox", 0o755, &read(bb)?).map_err(other)?;
        files.push("bin/busybox".into());
    }
    let raw = c.finish();
    let z = zstd::bulk::compress(&raw, 19).map_err(other)?;
    let summary = Summary {
        bytes: z.len(),
        uncompressed: raw.len(),
        modules: mods.iter().map(|m| module_name(m)).collect(),
        builtin,
        skipped,
        files,
    };
    Ok((z, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_resolve_dependencies_first() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("6.1-test");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(
            k.join("modules.dep"),
            "kernel/v/virtio.ko:\nkernel/v/virtio_ring.ko:\nkernel/n/failover.ko:\nkernel/n/net_failover.ko: kernel/n/failover.ko\nkernel/n/virtio_net.ko: kernel/n/net_failover.ko kernel/n/failover.ko kernel/v/virtio.ko kernel/v/virtio_ring.ko\n",
        )
        .unwrap();
        std::fs::write(k.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let spec = Spec {
            agent: PathBuf::new(),
            kernel_release: "6.1-test".into(),
            modules_root: d.path().to_path_buf(),
            modules: vec!["virtio-net".into(), "ext4".into()],
            optional_modules: vec!["igb".into()],
            tools: vec![],
            busybox: None,
            trusted: vec![],
        };
        let (order, builtin, skipped) = resolve_modules(&spec).unwrap();
        assert_eq!(
            order,
            [
                "kernel/v/virtio_ring.ko",
                "kernel/v/virtio.ko",
                "kernel/n/failover.ko",
                "kernel/n/net_failover.ko",
                "kernel/n/virtio_net.ko"
            ]
        );
        assert_eq!(builtin, ["ext4"]);
        assert_eq!(skipped, ["igb"]);
        let mut bad = spec.clone();
        bad.modules = vec!["nope".into()];
        assert!(matches!(
            resolve_modules(&bad),
            Err(InitrdError::NoModule(..))
        ));
    }

    #[test]
    fn trusted_keys_go_into_the_initrd_and_secret_keys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let agent = d.path().join("agent");
        std::fs::write(&agent, b"\x7fELF").unwrap();
        let site = imgtool::sign::keygen(&d.path().join("site")).unwrap();
        let public = imgtool::sign::public_path(&d.path().join("site"));
        let key = std::fs::read_to_string(&public).unwrap();
        let spec = Spec {
            agent: agent.clone(),
            kernel_release: "none".into(),
            modules_root: d.path().join("no-modules"),
            modules: vec![],
            optional_modules: vec![],
            tools: vec![],
            busybox: None,
            trusted: vec![public.clone(), public.clone()],
        };
        let (z, summary) = build(&spec).unwrap();
        let id = site.public("").id;
        let path = &format!("etc/netboot/trusted/{id}.pub");
        assert_eq!(
            summary.files.iter().filter(|f| *f == path).count(),
            1,
            "{:?}",
            summary.files
        );
        let raw = zstd::bulk::decompress(&z, 64 << 20).unwrap();
        let at = raw
            .windows(path.len())
            .position(|w| w == path.as_bytes())
            .expect("key path in the cpio");
        assert!(
            raw[at..].windows(key.len()).any(|w| w == key.as_bytes()),
            "key bytes in the cpio"
        );

        let secret = d.path().join("site");
        // A damaged key body, which the header check alone let through into the initrd
        // (every node then refused to clone at boot).
        let damaged = d.path().join("damaged.pub");
        let mut lines: Vec<String> = key.lines().map(str::to_string).collect();
        let body = lines.last_mut().unwrap();
        let first = if body.starts_with('0') { "1" } else { "0" };
        body.replace_range(0..1, first);
        std::fs::write(&damaged, lines.join("\n") + "\n").unwrap();
        for (bad, want) in [
            (&secret, &["SECRET"][..]),
            (&agent, &["not a"][..]),
            // Either the bytes are no curve point, or they are another key than the id.
            (&damaged, &["not a valid ed25519", "damaged or edited"][..]),
        ] {
            let mut s = spec.clone();
            s.trusted = vec![bad.clone()];
            let e = build(&s).unwrap_err().to_string();
            assert!(
                want.iter().any(|w| e.contains(w)) && e.contains(&bad.display().to_string()),
                "{e}"
            );
        }
    }
}
