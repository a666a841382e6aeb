//! The boot tree: every file `pxe-builder build` writes, assembled in memory as a sorted
//! map (so the same cluster gives the same bytes), then written beside the output
//! directory and swapped into place, so an error leaves the old tree as it was.
//!
//! ```text
//! pxelinux.0, ldlinux.c32            from the system's syslinux/pxelinux packages
//! boot/vmlinuz, boot/initrd.img      the netboot kernel and initrd (copied)
//! boot/vsmp                          the vSMP loader, when configured
//! pxelinux.cfg/01-<mac>              per node; pxelinux.cfg/<HEX> per entity subnet; default
//! etc/bootopts/<HEX>                 per entity subnet: key=value boot options
//! etc/bootfiles.json                 size and sha256 of each boot file (rack secondaries check)
//! boot/grub/x86_64-efi/core.efi ...  GRUB's network image (grub-mknetdir)
//! boot/grub/grub.cfg-01-<mac>, grub.cfg-<HEX>, grub.cfg
//! boot.ipxe, ipxe/01-<mac>.ipxe, ipxe/default.ipxe
//! ipxe/gw-<gateway>.ipxe               per entity with a gateway of its own (its rack first)
//! dhcp/dnsmasq.conf, dhcp/dhcpd.conf    snippets to include in a site's DHCP server config
//! dhcp/dhcpd-subnets.conf              dhcpd subnet declarations, for a site that has none
//! clone-plan.json                      the whole clone plan
//! etc/plan/<node>.json                 each planned node's bounded part of it
//! ```

use crate::boot::{self, Entry};
use crate::hex::{hex_cover, mac_file};
use crate::model::Cluster;
use crate::plan::{layout, node_plans, plan_of, shapes, GroupShape, Layout};
use netboot_proto::plan::NodePlan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's packages put the syslinux files.
pub const PXELINUX: &str = "/usr/lib/PXELINUX/pxelinux.0";
pub const LDLINUX: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path} not found: install the Debian package `{package}`")]
    Missing {
        path: PathBuf,
        package: &'static str,
    },
    /// The cause is in the message and deliberately not a `#[source]`: printed as a chain
    /// (`{:#}`) it would otherwise appear twice.
    #[error("{what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("grub-mknetdir failed: {0}")]
    Grub(String),
    /// A value the file's syntax cannot hold (the model's checks should have refused it).
    #[error("{path}: {err}")]
    Refused {
        path: String,
        err: crate::escape::Refused,
    },
    #[error("--out {0} exists and is not a directory: give a directory (it is replaced as a whole), nothing was written")]
    OutNotDirectory(PathBuf),
    #[error("--out {0} is a symbolic link: give the directory it points to (the link itself would be replaced), nothing was written")]
    OutSymlink(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |err| BuildError::Io { what, path, err }
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    Text(String),
    Copy(PathBuf),
}

/// The assembled tree: relative path → source.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: BTreeMap<String, Source>,
    pub hex_files: Vec<(String, String)>,
    /// Each cloning group's shape, depth and longest chain (what `check` prints).
    pub shapes: Vec<GroupShape>,
}

impl Tree {
    /// Adds a rendered file; a refusal names the file it was for.
    fn text(
        &mut self,
        path: String,
        text: Result<String, crate::escape::Refused>,
    ) -> Result<(), BuildError> {
        match text {
            Ok(text) => {
                self.files.insert(path, Source::Text(text));
                Ok(())
            }
            Err(err) => Err(BuildError::Refused { path, err }),
        }
    }
}

/// A node gets files of its own only when it boots something other than its entity's
/// default: another group, or a vSMP board. Everyone else boots the subnet's hex file and
/// finds its name in the subnet's bootopts (CMU's model: boot options per subnet). On this
/// project's machines one small file costs ~85 µs to create, so 100 000 per-node files
/// alone would take 8.5 s.
pub fn needs_own_file(c: &Cluster, n: usize) -> bool {
    let node = &c.nodes[n];
    c.settings.all_node_files
        || node.active_group != c.entities[node.entity].default_group
        || c.groups[node.active_group].is_vsmp(&c.settings.vsmp_prefix)
}

/// Assembles every file of the tree (no I/O except checking sources exist).
pub fn assemble(c: &Cluster) -> Result<Tree, BuildError> {
    let mut t = render(c)?;
    for (path, pkg) in [(PXELINUX, "pxelinux"), (LDLINUX, "syslinux-common")] {
        let p = PathBuf::from(path);
        if !p.is_file() {
            return Err(BuildError::Missing {
                path: p,
                package: pkg,
            });
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        t.files.insert(name, Source::Copy(p));
    }
    t.files
        .insert(boot::KERNEL.into(), Source::Copy(c.settings.kernel.clone()));
    t.files
        .insert(boot::INITRD.into(), Source::Copy(c.settings.initrd.clone()));
    if let Some(l) = &c.settings.vsmp_loader {
        t.files.insert(boot::VSMP.into(), Source::Copy(l.clone()));
    }
    t.text(
        netboot_proto::bootfiles::FILE.into(),
        Ok(crate::bootfiles::manifest(c)?),
    )?;
    Ok(t)
}

/// Renders every text file of the tree (no I/O): what `build` writes.
pub fn render(c: &Cluster) -> Result<Tree, BuildError> {
    render_with(c, true)
}

/// What `check` runs after the model: every text file a writer could refuse (an overlong
/// command line), so such a value is reported before any build, and the plan's shapes;
/// not the JSON documents (`clone-plan.json`, the node plans), which serde_json writes
/// for any value — at 100 000 nodes that is 70 MB of text, half of `check`'s time.
pub fn check(c: &Cluster) -> Result<Tree, BuildError> {
    render_with(c, false)
}

/// A part of the tree rendered on its own thread.
type Part = fn(&Cluster, &Layout) -> Result<Tree, BuildError>;

/// The boot files on this thread; the DHCP snippets with the shapes, and for `build` the
/// clone plan and the node plans, each on a thread of its own: they are independent,
/// and at 100 000 nodes each is a good part of `check` or `build` (docs/BENCH.md). The
/// tree is a sorted map, so its bytes do not depend on which part ends first; of two
/// refusals, the first in that order is reported (as when one thread wrote them all).
fn render_with(c: &Cluster, json: bool) -> Result<Tree, BuildError> {
    let l = &layout(c);
    let mut parts: Vec<Part> = vec![side_files];
    if json {
        parts.extend([plan_file as Part, node_plan_files]);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| s.spawn(move || (part(c, l), crate::work::take())))
            .collect();
        let boot = boot_files(c, l);
        let done: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        let mut t = boot?;
        for (part, steps) in done {
            crate::work::tick(steps as usize);
            let part = part?;
            t.files.extend(part.files);
            t.shapes.extend(part.shapes);
        }
        Ok(t)
    })
}

/// Per-node and per-subnet boot files (pxelinux, GRUB, iPXE, bootopts) and the defaults.
fn boot_files(c: &Cluster, l: &Layout) -> Result<Tree, BuildError> {
    let mut t = Tree::default();
    let racks = boot::rack_secondaries(l);
    for (i, n) in c.nodes.iter().enumerate() {
        crate::work::tick(1);
        if !needs_own_file(c, i) {
            continue;
        }
        let e = boot::node_entry(c, i).with_rack(boot::rack_boot(c, &racks, i));
        let mf = mac_file(n.mac);
        t.text(format!("pxelinux.cfg/{mf}"), boot::pxelinux(&e))?;
        t.text(format!("boot/grub/grub.cfg-{mf}"), boot::grub(&e))?;
        t.text(format!("ipxe/{mf}.ipxe"), boot::ipxe(&e))?;
    }
    let mut by_entity: Vec<Vec<usize>> = vec![vec![]; c.entities.len()];
    for (i, n) in c.nodes.iter().enumerate() {
        crate::work::tick(1);
        by_entity[n.entity].push(i);
    }
    // (group, entity) → its secondary in the plan, looked up per entity (a search of
    // the plan's groups and their entities per entity was quadratic in entities).
    let mut secondaries: HashMap<(usize, usize), usize> = HashMap::new();
    for gl in &l.groups {
        for r in &gl.racks {
            crate::work::tick(1);
            secondaries.insert((gl.group, r.entity), r.members[0]);
        }
    }
    for (i, ent) in c.entities.iter().enumerate() {
        crate::work::tick(1);
        let e: Entry = boot::entity_entry(c, i);
        let secondary = secondaries
            .get(&(ent.default_group, i))
            .copied()
            .or(ent.secondary)
            .map(|s| c.nodes[s].name.clone());
        let cover = hex_cover(ent.net.first(), ent.net.last());
        for h in &cover {
            t.text(format!("pxelinux.cfg/{h}"), boot::pxelinux(&e))?;
            t.text(format!("boot/grub/grub.cfg-{h}"), boot::grub(&e))?;
            t.text(
                format!("etc/bootopts/{h}"),
                boot::bootopts(c, i, &by_entity[i], secondary.as_deref(), h, cover.len()),
            )?;
            t.hex_files.push((h.clone(), ent.name.clone()));
        }
    }
    gateway_scripts(c, &racks, &mut t)?;
    let fb = boot::fallback_entry(c);
    t.text("pxelinux.cfg/default".into(), boot::pxelinux(&fb))?;
    t.text("boot/grub/grub.cfg".into(), boot::grub(&fb))?;
    t.text("ipxe/default.ipxe".into(), boot::ipxe(&fb))?;
    t.text("boot.ipxe".into(), Ok(boot::ipxe_dispatch()))?;
    Ok(t)
}

/// `ipxe/gw-<gateway>.ipxe` for each entity whose gateway no other entity shares (a
/// shared router cannot tell the entities apart: their nodes load `ipxe/default.ipxe`).
fn gateway_scripts(c: &Cluster, racks: &boot::RackSources, t: &mut Tree) -> Result<(), BuildError> {
    let mut users: HashMap<std::net::Ipv4Addr, usize> = HashMap::new();
    for ent in &c.entities {
        crate::work::tick(1);
        if let Some(gw) = ent.gateway {
            *users.entry(gw).or_default() += 1;
        }
    }
    for (i, ent) in c.entities.iter().enumerate() {
        crate::work::tick(1);
        let Some(gw) = ent.gateway.filter(|gw| users.get(gw) == Some(&1)) else {
            continue;
        };
        if let Some(e) = boot::gateway_entry(c, racks, i) {
            t.text(boot::gateway_script(gw), boot::ipxe(&e))?;
        }
    }
    Ok(())
}

/// The DHCP snippets and each cloning group's shape.
fn side_files(c: &Cluster, l: &Layout) -> Result<Tree, BuildError> {
    let mut t = Tree::default();
    t.text("dhcp/dnsmasq.conf".into(), crate::dhcp::dnsmasq(c))?;
    t.text("dhcp/dhcpd.conf".into(), crate::dhcp::dhcpd(c))?;
    t.text(
        "dhcp/dhcpd-subnets.conf".into(),
        crate::dhcp::dhcpd_subnets(c),
    )?;
    t.shapes = shapes(c, l);
    Ok(t)
}

/// `clone-plan.json`. JSON: serde_json escapes every string it writes.
fn plan_file(c: &Cluster, l: &Layout) -> Result<Tree, BuildError> {
    let mut t = Tree::default();
    let mut pj = serde_json::to_string_pretty(&plan_of(c, l)).unwrap_or_default();
    pj.push('\n');
    t.text("clone-plan.json".into(), Ok(pj))?;
    Ok(t)
}

/// Every planned node's `etc/plan/<node>.json`.
fn node_plan_files(c: &Cluster, l: &Layout) -> Result<Tree, BuildError> {
    let mut t = Tree::default();
    for np in node_plans(c, l) {
        crate::work::tick(1);
        // Compact: half the bytes of pretty JSON (100 000 files); `jq .` shows one.
        let mut text = serde_json::to_string(&np).unwrap_or_default();
        text.push('\n');
        t.text(NodePlan::path(&np.node), Ok(text))?;
    }
    Ok(t)
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub out: String,
    pub files: usize,
    pub nodes: usize,
    pub entities: usize,
    pub groups: usize,
    pub hex_files: Vec<(String, String)>,
    pub grub_image: bool,
}

/// Builds the tree into `out`: written into a sibling staging directory, then swapped in.
pub fn build(c: &Cluster, out: &Path) -> Result<Summary, BuildError> {
    check_out(out)?;
    let t0 = std::time::Instant::now();
    let timing = std::env::var_os("PXE_BUILDER_TIMING").is_some();
    let Tree {
        files, hex_files, ..
    } = assemble(c)?;
    let count = files.len();
    if timing {
        eprintln!("assemble: {:?}", t0.elapsed());
    }
    let grub_dir = &c.settings.grub_dir;
    if !grub_dir.join("moddep.lst").is_file() {
        return Err(BuildError::Missing {
            path: grub_dir.clone(),
            package: "grub-efi-amd64-bin",
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "tree".into());
    let stage = parent.join(format!(".{name}.building-{}", std::process::id()));
    let result = (|| {
        if stage.exists() {
            std::fs::remove_dir_all(&stage).map_err(io("removing", &stage))?;
        }
        std::fs::create_dir_all(&stage).map_err(io("creating", &stage))?;
        write_files(files, &stage)?;
        if timing {
            eprintln!("written: {:?}", t0.elapsed());
        }
        grub_netdir(grub_dir, &stage)?;
        if timing {
            eprintln!("grub: {:?}", t0.elapsed());
        }
        swap_into_place(&stage, out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result?;
    Ok(Summary {
        out: out.display().to_string(),
        files: count,
        nodes: c.nodes.len(),
        entities: c.entities.len(),
        groups: c.groups.len(),
        hex_files,
        grub_image: true,
    })
}

/// `out` must be absent or a directory: the swap replaces it as a whole, and swapping a
/// regular file (or a symbolic link) away would leave the user's file under the staging
/// name, then delete it.
fn check_out(out: &Path) -> Result<(), BuildError> {
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BuildError::Io {
            what: "inspecting",
            path: out.to_path_buf(),
            err: e,
        }),
        Ok(m) if m.file_type().is_symlink() => Err(BuildError::OutSymlink(out.to_path_buf())),
        Ok(m) if !m.is_dir() => Err(BuildError::OutNotDirectory(out.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

/// Writes every file of `files` under `root`; each file's text is freed by the thread
/// that wrote it (at 100 000 nodes, freeing the tree at the end was ~4 % of a build).
fn write_files(files: BTreeMap<String, Source>, root: &Path) -> Result<(), BuildError> {
    let mut dirs: Vec<PathBuf> = files
        .keys()
        .filter_map(|k| Path::new(k).parent().map(|p| root.join(p)))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(io("creating", d))?;
    }
    // One writer per core: file creation dominates, and two writers beat one here
    // (1.9 s against 3.4 s for 7 800 files on this project's VM disk).
    let mut entries: Vec<(String, Source)> = files.into_iter().collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let per = entries.len().div_ceil(threads).max(1);
    let mut parts = vec![];
    while !entries.is_empty() {
        let rest = entries.split_off(per.min(entries.len()));
        parts.push(std::mem::replace(&mut entries, rest));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || -> Result<(), BuildError> {
                    for (rel, src) in part {
                        let dst = root.join(rel);
                        match src {
                            Source::Text(t) => {
                                std::fs::write(&dst, t).map_err(io("writing", &dst))?
                            }
                            Source::Copy(from) => {
                                std::fs::copy(&from, &dst).map_err(io("copying", &from))?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => {
                    return Err(BuildError::Io {
                        what: "writing",
                        path: root.to_path_buf(),
                        err: std::io::Error::other("writer thread panicked"),
                    })
                }
            }
        }
        Ok(())
    })
}

/// GRUB's network image and modules under `boot/grub/x86_64-efi/`.
fn grub_netdir(grub_dir: &Path, root: &Path) -> Result<(), BuildError> {
    let out = Command::new("grub-mknetdir")
        .arg(format!("--net-directory={}", root.display()))
        .arg("--subdir=boot/grub")
        .arg("-d")
        .arg(grub_dir)
        .output()
        .map_err(|e| {
            BuildError::Grub(format!(
                "cannot run grub-mknetdir ({e}); install the Debian package `grub-common`"
            ))
        })?;
    if !out.status.success() {
        return Err(BuildError::Grub(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Replaces `out` with `stage` atomically when possible (`renameat2(RENAME_EXCHANGE)`),
/// then removes the old tree.
fn swap_into_place(stage: &Path, out: &Path) -> Result<(), BuildError> {
    if !out.exists() {
        return std::fs::rename(stage, out).map_err(io("renaming into place", out));
    }
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, stage, CWD, out, RenameFlags::EXCHANGE).map_err(|e| BuildError::Io {
        what: "swapping the new tree into",
        path: out.to_path_buf(),
        err: e.into(),
    })?;
    // `stage` now holds the previous tree.
    std::fs::remove_dir_all(stage).map_err(io("removing the previous tree", stage))
}
