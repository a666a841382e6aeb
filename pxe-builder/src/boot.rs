//! What each client boots: one [`Entry`] per node (from its active group: clone, diskless,
//! or a vSMP board) and one per entity subnet (its default group), rendered as pxelinux
//! config, GRUB config and iPXE script. Pure text; no I/O.
//!
//! Kernel command-line keys the agent reads (see `docs/BOOT.md`): `netboot.server`,
//! `netboot.node`, `netboot.entity`, `netboot.group`, `netboot.image`, `netboot.mode`
//! (`clone`, `diskless`, `vsmp`), and for vSMP boards `vsmp.role`, `vsmp.board`,
//! `vsmp.boards`, `vsmp.group`. pxelinux adds `ip=` and `BOOTIF=` (IPAPPEND 3, from the
//! DHCP lease: address, router, netmask); GRUB and iPXE entries add `netboot.mac=` and
//! `netboot.ip=` from the loader's own variables, then `ip=<address>::<gateway>:<netmask>`
//! with the entity's netmask and `gateway` (the loaders pass no mask or route themselves).

use crate::escape::{self, Refused};
use crate::model::{Cluster, Entity, Group};
use crate::plan::Layout;
use netboot_proto::bootopts::{self, NodeLine};
use netboot_proto::hex::hex_ip;
use netboot_proto::net::mac_string;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Tree paths of the files every entry refers to (the same paths on a rack secondary).
pub const KERNEL: &str = netboot_proto::bootfiles::KERNEL;
pub const INITRD: &str = netboot_proto::bootfiles::INITRD;
pub const VSMP: &str = netboot_proto::bootfiles::VSMP;

/// iPXE's download progress timeout (ms) for the kernel and initrd from the rack's
/// secondary: a secondary that is down (no ARP answer) or stalls costs a node this much
/// before it fetches from the primary; one that is up but not ready answers at once.
pub const RACK_TIMEOUT_MS: u32 = 3000;

/// One boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Comment line saying whom this is for.
    pub title: String,
    pub kernel: String,
    pub initrd: String,
    /// Kernel command-line words, in order; each writer checks and quotes every word.
    pub args: Vec<String>,
    /// Disk-based vSMP boards: keep a local-boot alternative in the menu.
    pub local_alternative: bool,
    /// The entity's network, for the `ip=` word of GRUB and iPXE lines; none for the
    /// fallback entry, which is for any client.
    pub net: Option<EntryNet>,
    /// iPXE only: try the kernel and initrd from the entity's secondary first.
    pub rack: Option<RackBoot>,
    /// iPXE only, an entity's gateway script (used by every node of the entity, its
    /// secondary too): the secondary, recognised by its address, skips `rack` (itself)
    /// and tries its own boot-file parent instead.
    pub rack_self: Option<RackSelf>,
}

/// The secondary's branch of an entity's gateway script ([`Entry::rack_self`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackSelf {
    /// The secondary's address (iPXE compares its own `${ip}` with it).
    pub ip: Ipv4Addr,
    /// Its parent in the boot-file tree; none for the tree's root (the primary).
    pub parent: Option<RackBoot>,
}

/// Where an iPXE entry fetches its kernel and initrd first: the secondary of its node's
/// entity (in the clone plan of the node's group), which serves the tree's boot files on
/// its relay port while it lives (docs/BOOT.md, "Boot files from the rack").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackBoot {
    /// The secondary's node name (for the script's comment).
    pub secondary: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl Entry {
    /// This entry with its kernel and initrd tried from `rack` first (iPXE).
    pub fn with_rack(mut self, rack: Option<RackBoot>) -> Entry {
        self.rack = rack;
        self
    }
}

/// Who serves the boot files to whom, from the clone plan: each (group, entity)'s
/// secondary, and each secondary's parent in the boot-file tree
/// (`netboot_proto::plan::boot_peer_indexes`: the first of its node plan's `boot_peers`).
#[derive(Debug, Default)]
pub struct RackSources {
    secondaries: HashMap<(usize, usize), usize>,
    parents: HashMap<usize, usize>,
}

/// [`RackSources`] of the clone plan `l`.
pub fn rack_secondaries(l: &Layout) -> RackSources {
    let mut m = RackSources::default();
    for gl in &l.groups {
        for r in &gl.racks {
            crate::work::tick(1);
            if let Some(&s) = r.members.first() {
                m.secondaries.insert((gl.group, r.entity), s);
            }
        }
    }
    let tree = l.boot_tree();
    for (k, &s) in tree.iter().enumerate() {
        crate::work::tick(1);
        if let Some(&p) = netboot_proto::plan::boot_peer_indexes(k).first() {
            m.parents.insert(s, tree[p]);
        }
    }
    m
}

impl RackSources {
    /// The secondary of (group, entity), if planned.
    pub fn secondary(&self, group: usize, entity: usize) -> Option<usize> {
        self.secondaries.get(&(group, entity)).copied()
    }

    /// Secondary `s`'s parent in the boot-file tree.
    pub fn parent(&self, s: usize) -> Option<usize> {
        self.parents.get(&s).copied()
    }
}

/// Node `m` as a rack source.
fn rack_of(c: &Cluster, m: usize) -> RackBoot {
    RackBoot {
        secondary: c.nodes[m].name.clone(),
        ip: c.nodes[m].ip,
        port: c.settings.relay_port,
    }
}

/// Node `n`'s rack source: the secondary of its entity in its active group's plan; for
/// that secondary itself its parent in the boot-file tree (a rack that reboots while
/// other racks' secondaries are up costs the primary nothing); none for the tree's root,
/// nor for a node whose group is not planned (vSMP boards).
pub fn rack_boot(c: &Cluster, sources: &RackSources, n: usize) -> Option<RackBoot> {
    let node = &c.nodes[n];
    let s = sources.secondary(node.active_group, node.entity)?;
    if s == n {
        return sources.parent(n).map(|p| rack_of(c, p));
    }
    Some(rack_of(c, s))
}

/// The gateway script of entity `e` (`ipxe/gw-<gateway>.ipxe`): its entry with its
/// default group's secondary as the rack, and that secondary's branch to its parent.
/// `None` when the entity has no gateway, or no planned secondary for its default group.
pub fn gateway_entry(c: &Cluster, sources: &RackSources, e: usize) -> Option<Entry> {
    let ent = &c.entities[e];
    ent.gateway?;
    let s = sources.secondary(ent.default_group, e)?;
    let mut entry = entity_entry(c, e).with_rack(Some(rack_of(c, s)));
    entry.rack_self = Some(RackSelf {
        ip: c.nodes[s].ip,
        parent: sources.parent(s).map(|p| rack_of(c, p)),
    });
    Some(entry)
}

/// The gateway script's tree path for gateway `gw`: iPXE asks for
/// `ipxe/gw-${gateway}.ipxe` (the DHCP router option, dotted).
pub fn gateway_script(gw: Ipv4Addr) -> String {
    format!("ipxe/gw-{gw}.ipxe")
}

/// What a node's kernel needs to reach a server beyond its subnet: its entity's netmask
/// and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryNet {
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
}

impl EntryNet {
    fn of(ent: &Entity) -> Option<EntryNet> {
        Some(EntryNet {
            netmask: ent.net.netmask(),
            gateway: ent.gateway,
        })
    }

    /// `ip=<ip>::<gateway>:<netmask>` (the kernel's nfsroot form, client:server:gw:mask;
    /// the server field empty, the gateway empty when the entity has none), `ip` being the
    /// loader's variable for the client's address. Addresses are typed: no quoting needed.
    fn ip_word(&self, ip: &str) -> String {
        let gw = self.gateway.map(|g| g.to_string()).unwrap_or_default();
        format!("ip={ip}::{gw}:{}", self.netmask)
    }
}

/// The whitespace-separated words of the description's argument settings.
fn words(parts: &[&str]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.split_whitespace())
        .map(str::to_string)
        .collect()
}

/// The arguments every entry carries: cluster, entity and group extras, then our keys.
pub(crate) fn entry_args(
    c: &Cluster,
    ent: &Entity,
    g: &Group,
    node: Option<&str>,
    mode: &str,
) -> Vec<String> {
    let mut v = words(&[&c.settings.kernel_args, &ent.args, &g.args]);
    v.push(format!("netboot.server={}", c.settings.image_server));
    if let Some(n) = node {
        v.push(format!("netboot.node={n}"));
    }
    v.push(format!("netboot.entity={}", ent.name));
    v.push(format!("netboot.group={}", g.name));
    v.push(format!("netboot.image={}", g.image));
    v.push(format!("netboot.mode={mode}"));
    if let Some(id) = &g.image_id {
        v.push(format!("netboot.image_id={id}"));
    }
    if let Some(root) = g.root.filter(|_| g.diskless) {
        v.push(format!("netboot.root={root}"));
    }
    v
}

fn group_mode(g: &Group) -> &'static str {
    if g.diskless {
        "diskless"
    } else {
        "clone"
    }
}

/// The entry of node `n`.
pub fn node_entry(c: &Cluster, n: usize) -> Entry {
    let s = &c.settings;
    let node = &c.nodes[n];
    let ent = &c.entities[node.entity];
    let g = &c.groups[node.active_group];
    if g.is_vsmp(&s.vsmp_prefix) {
        // Found by index, not by a search of the boards per board.
        let board = node.active_index + 1;
        let role = if board == 1 { "primary" } else { "secondary" };
        let boards = board_list(c, g);
        let mode = if g.diskless { "vsmp-diskless" } else { "vsmp" };
        let mut args = words(&[&s.vsmp_args]);
        args.extend([
            format!("vsmp.role={role}"),
            format!("vsmp.board={board}"),
            format!("vsmp.boards={boards}"),
            format!("vsmp.group={}", g.name),
        ]);
        args.extend(entry_args(c, ent, g, Some(&node.name), mode));
        return Entry {
            title: format!(
                "node {} ({}), vSMP group {}: board {board} of {}, {role}",
                node.name,
                ent.name,
                g.name,
                g.active.len()
            ),
            kernel: VSMP.into(),
            initrd: INITRD.into(),
            args,
            local_alternative: !g.diskless,
            net: EntryNet::of(ent),
            rack: None,
            rack_self: None,
        };
    }
    Entry {
        title: format!("node {} ({}), group {}", node.name, ent.name, g.name),
        kernel: KERNEL.into(),
        initrd: INITRD.into(),
        args: entry_args(c, ent, g, Some(&node.name), group_mode(g)),
        local_alternative: false,
        net: EntryNet::of(ent),
        rack: None,
        rack_self: None,
    }
}

/// `a,b,c`: the names of vSMP group `g`'s boards, in order. It goes on every board's
/// command line, which may hold at most [`escape::MAX_CMDLINE`] bytes: the list stops
/// once it is longer than that (such an entry is refused anyway), so a group of many
/// boards costs each board at most that much, not the whole list (boards²).
fn board_list(c: &Cluster, g: &Group) -> String {
    let mut out = String::new();
    for &a in &g.active {
        crate::work::tick(1);
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&c.nodes[a].name);
        if out.len() > escape::MAX_CMDLINE {
            break;
        }
    }
    out
}

/// The entry for nodes of entity `e` that have no file of their own.
pub fn entity_entry(c: &Cluster, e: usize) -> Entry {
    let ent = &c.entities[e];
    let g = &c.groups[ent.default_group];
    Entry {
        title: format!(
            "entity {} ({}), default group {}",
            ent.name, ent.net, g.name
        ),
        kernel: KERNEL.into(),
        initrd: INITRD.into(),
        args: entry_args(c, ent, g, None, group_mode(g)),
        local_alternative: false,
        net: EntryNet::of(ent),
        rack: None,
        rack_self: None,
    }
}

/// pxelinux config text. `IPAPPEND 3` passes `ip=` and `BOOTIF=` to the kernel. pxelinux
/// reads a directive per line and passes `APPEND`'s rest of line on as it is: every value
/// is one line ([`escape::line`]), every argument one plain word ([`escape::kernel_arg`]).
pub fn pxelinux(e: &Entry) -> Result<String, Refused> {
    let label = if e.kernel == VSMP { "vsmp" } else { "netboot" };
    let mut t = format!(
        "# {}\n# generated by pxe-builder; edit cluster.toml instead\nDEFAULT {label}\nPROMPT 0\nTIMEOUT 0\n\nLABEL {label}\n  KERNEL {}\n  INITRD {}\n  APPEND {}\n  IPAPPEND 3\n",
        escape::comment(&e.title)?,
        escape::line(&e.kernel)?,
        escape::line(&e.initrd)?,
        escape::kernel_cmdline(&e.args)?
    );
    if e.local_alternative {
        t.push_str("\n# Disk-based vSMP board: the firmware boots the local disk first; choosing network\n# boot loads this file, whose default is the vSMP entry. `local` boots the disk.\nLABEL local\n  LOCALBOOT 0\n");
    }
    Ok(t)
}

/// GRUB config text. GRUB appends nothing itself: the entry passes the MAC and address,
/// and (but for the fallback) `ip=` with the entity's netmask and gateway, which GRUB has
/// no variables for. The title and every argument are GRUB words ([`escape::grub_word`]:
/// single-quoted when GRUB's lexer would read anything in them).
pub fn grub(e: &Entry) -> Result<String, Refused> {
    escape::kernel_cmdline(&e.args)?;
    let args = e
        .args
        .iter()
        .map(|a| escape::grub_word(a))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let ip = e
        .net
        .map(|n| format!(" {}", n.ip_word("${net_default_ip}")))
        .unwrap_or_default();
    let mut t = format!(
        "# {}\n# generated by pxe-builder; edit cluster.toml instead\nset timeout=0\nset default=0\nmenuentry {} {{\n  linux /{} {args} netboot.mac=${{net_default_mac}} netboot.ip=${{net_default_ip}}{ip}\n  initrd /{}\n}}\n",
        escape::comment(&e.title)?,
        escape::grub_word(&e.title)?,
        escape::grub_word(&e.kernel)?,
        escape::grub_word(&e.initrd)?
    );
    if e.local_alternative {
        t.push_str("menuentry 'local disk' {\n  exit\n}\n");
    }
    Ok(t)
}

/// iPXE script text. iPXE cannot quote: every word is checked ([`escape::ipxe_word`]).
/// The kernel line ends with `ip=` holding the entity's netmask and gateway; the fallback,
/// which knows no entity, passes iPXE's own DHCP `${gateway}` and `${netmask}`. With a
/// [`RackBoot`], kernel and initrd are fetched from the rack's secondary first (each with
/// a [`RACK_TIMEOUT_MS`] progress timeout); any failure there — download or boot — goes
/// to `:primary`, which frees what was fetched and loads both from the primary, as an
/// entry without a rack does. Both kernel lines carry the same arguments.
pub fn ipxe(e: &Entry) -> Result<String, Refused> {
    escape::kernel_cmdline(&e.args)?;
    let args = e
        .args
        .iter()
        .map(|a| escape::ipxe_word(a))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let ip = match e.net {
        Some(n) => n.ip_word("${ip}"),
        None => "ip=${ip}::${gateway}:${netmask}".into(),
    };
    let tail = format!("{args} netboot.mac=${{mac}} netboot.ip=${{ip}} {ip}");
    let (kernel, initrd) = (escape::ipxe_word(&e.kernel)?, escape::ipxe_word(&e.initrd)?);
    let mut t = format!("#!ipxe\n# {}\n", escape::comment(&e.title)?);
    let from_rack = |r: &RackBoot, what: &str| -> Result<String, Refused> {
        let base = format!("http://{}:{}", r.ip, r.port);
        let url = |path: &str| escape::ipxe_word(&format!("{base}/{path}")).map(str::to_string);
        Ok(format!(
            "# kernel and initrd from {what} {} first, else the primary\nkernel --timeout {RACK_TIMEOUT_MS} {} {tail} || goto primary\ninitrd --timeout {RACK_TIMEOUT_MS} {} || goto primary\nboot || goto primary\n",
            escape::comment(&r.secondary)?,
            url(kernel)?,
            url(initrd)?,
        ))
    };
    if let Some(s) = &e.rack_self {
        t.push_str(&format!(
            "# the secondary itself ({}) does not ask itself\niseq ${{ip}} {} && goto self ||\n",
            s.ip, s.ip
        ));
    }
    if let Some(r) = &e.rack {
        t.push_str(&from_rack(r, "the rack: secondary")?);
    }
    if let Some(s) = &e.rack_self {
        t.push_str(":self\n");
        if let Some(p) = &s.parent {
            t.push_str(&from_rack(p, "its parent secondary")?);
        }
    }
    if e.rack.is_some() || e.rack_self.is_some() {
        t.push_str(":primary\nimgfree\n");
    }
    t.push_str(&format!(
        "kernel /{kernel} {tail}\ninitrd /{initrd}\nboot\n"
    ));
    Ok(t)
}

/// The top iPXE script: the per-MAC script, else the entity's gateway script by the
/// DHCP router (`ipxe/gw-<gateway>.ipxe`, [`gateway_entry`]: iPXE cannot match its
/// address against a hex prefix, but it knows its router), else the fallback (the agent
/// then finds its entity from `etc/bootopts/<HEX>` by its DHCP address).
pub fn ipxe_dispatch() -> String {
    "#!ipxe\n# generated by pxe-builder: per-node script by MAC, else the entity's by its gateway, else the fallback\nchain --autofree ipxe/01-${mac:hexhyp}.ipxe || chain --autofree ipxe/gw-${gateway}.ipxe || chain --autofree ipxe/default.ipxe\n".into()
}

/// The fallback iPXE script and pxelinux `default`: boot the agent with only the server.
pub fn fallback_entry(c: &Cluster) -> Entry {
    let s = &c.settings;
    let mut args = words(&[&s.kernel_args]);
    args.push(format!("netboot.server={}", s.image_server));
    args.push("netboot.mode=discover".into());
    Entry {
        title: "any client without a node or entity file".into(),
        kernel: KERNEL.into(),
        initrd: INITRD.into(),
        args,
        local_alternative: false,
        net: None,
        rack: None,
        rack_self: None,
    }
}

/// `etc/bootopts/<HEX>`: the subnet's boot options, `key=value` per line (documented in
/// `docs/BOOT.md`, written and read by `netboot_proto::bootopts`); `#` starts a comment.
/// `node=` lines (`mac,ip,name,group`) list the nodes whose address this file covers, so
/// an agent finds its name by its MAC. Every value is one line ([`escape::bootopts_value`]),
/// every `node=` field free of `,`.
pub fn bootopts(
    c: &Cluster,
    e: usize,
    members: &[usize],
    secondary: Option<&str>,
    hex: &str,
    of: usize,
) -> Result<String, Refused> {
    let mut w = bootopts_head(c, e, secondary, hex, of)?;
    for n in members.iter().map(|&i| &c.nodes[i]) {
        if hex_ip(n.ip).starts_with(hex) {
            w.node(&NodeLine {
                mac: mac_string(n.mac),
                ip: n.ip.to_string(),
                name: escape::bootopts_field(&n.name)?.to_string(),
                group: escape::bootopts_field(&c.groups[n.active_group].name)?.to_string(),
            })?;
        }
    }
    Ok(w.finish())
}

/// The comment lines and the entity's values.
fn bootopts_head(
    c: &Cluster,
    e: usize,
    secondary: Option<&str>,
    hex: &str,
    of: usize,
) -> Result<bootopts::Writer, Refused> {
    let s = &c.settings;
    let ent = &c.entities[e];
    let g = &c.groups[ent.default_group];
    let args = words(&[&s.kernel_args, &ent.args, &g.args]);
    let mut w = bootopts::Writer::new();
    w.comment(&format!(
        "boot options for entity {} ({}), file {hex} ({} of the subnet's {of} file(s))",
        escape::comment(&ent.name)?,
        ent.net,
        if of == 1 { "the only one" } else { "one" },
    ))?
    .comment("generated by pxe-builder; edit cluster.toml instead")?
    .value(bootopts::SERVER, &s.image_server)?
    .value(bootopts::ENTITY, &ent.name)?
    .value(bootopts::SUBNET, &ent.net.to_string())?;
    if let Some(gw) = ent.gateway {
        w.value(bootopts::GATEWAY, &gw.to_string())?;
    }
    w.value(bootopts::GROUP, &g.name)?
        .value(bootopts::IMAGE, &g.image)?
        .value(bootopts::MODE, group_mode(g))?
        .value(bootopts::SECONDARY, secondary.unwrap_or(""))?
        .value(bootopts::ARGS, &escape::kernel_cmdline(&args)?)?;
    if let Some(id) = &g.image_id {
        w.value(bootopts::IMAGE_ID, id)?;
    }
    if let Some(root) = g.root.filter(|_| g.diskless) {
        w.value(bootopts::ROOT, &root.to_string())?;
    }
    Ok(w)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Cluster;

    /// A valid two-node cluster (rack r1 of compute, n2 a vSMP board) to corrupt by hand:
    /// the writers must hold even when the model's checks are bypassed.
    pub(crate) fn cluster() -> Cluster {
        let text = "[cluster]\nname = \"t\"\nimage_server = \"http://10.0.0.1:8080\"\nserver_ip = \"10.0.0.1\"\nkernel = \"/bin/sh\"\ninitrd = \"/bin/sh\"\nvsmp_loader = \"/bin/sh\"\nkernel_args = \"console=ttyS0\"\n\n[[entity]]\nname = \"r1\"\nsubnet = \"10.0.0.0/24\"\ndefault_group = \"compute\"\n\n[[group]]\nname = \"compute\"\n\n[[group]]\nname = \"vSMP_g\"\n\n[[node]]\nname = \"n1\"\nmac = \"52:54:00:00:00:01\"\nip = \"10.0.0.11\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n2\"\nmac = \"52:54:00:00:00:02\"\nip = \"10.0.0.12\"\nentity = \"r1\"\ngroups = [\"vSMP_g\"]\n";
        crate::model::parse(text, "t.toml", std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn all_outputs(c: &Cluster) -> Vec<Result<String, Refused>> {
        let mut v = vec![];
        for e in [
            node_entry(c, 0),
            node_entry(c, 1),
            entity_entry(c, 0),
            fallback_entry(c),
        ] {
            v.push(pxelinux(&e));
            v.push(grub(&e));
            v.push(ipxe(&e));
        }
        v.push(bootopts(c, 0, &[0, 1], Some("n1"), "0A0000", 1));
        v
    }

    #[test]
    fn every_key_the_entries_set_is_one_a_description_may_not_set() {
        // A key pxe-builder writes but `validate::GENERATED_KEYS` lacks could be given a
        // second time through `args`, and the agent reads the last (netboot.image_id was
        // such a key: a bad value in `kernel_args` stopped every node at its console).
        let mut c = cluster();
        c.groups[0].image_id = Some("0".repeat(64));
        c.groups[1].image_id = Some("1".repeat(64));
        for e in [
            node_entry(&c, 0),
            node_entry(&c, 1),
            entity_entry(&c, 0),
            fallback_entry(&c),
        ] {
            for a in &e.args {
                let Some((k, _)) = a.split_once('=') else {
                    continue;
                };
                let ours = k.starts_with("netboot.") || k.starts_with("vsmp.") || k == "BOOTIF";
                if ours && !["netboot.done", "netboot.onerror"].contains(&k) {
                    assert!(
                        crate::validate::GENERATED_KEYS.contains(&k),
                        "{k} is written by pxe-builder but may also come from args"
                    );
                }
            }
        }
        assert!(
            crate::validate::kernel_args("k", &format!("netboot.image_id={}", "a".repeat(64)))
                .is_err()
        );
    }

    #[test]
    fn grub_and_ipxe_pass_the_entitys_mask_and_gateway_as_a_reserved_ip() {
        let mut c = cluster();
        c.entities[0].gateway = Some(Ipv4Addr::new(10, 0, 0, 254));
        let g = grub(&entity_entry(&c, 0)).unwrap();
        assert!(
            g.contains(" ip=${net_default_ip}::10.0.0.254:255.255.255.0\n"),
            "{g}"
        );
        let i = ipxe(&node_entry(&c, 0)).unwrap();
        assert!(i.contains(" ip=${ip}::10.0.0.254:255.255.255.0\n"), "{i}");
        let b = bootopts(&c, 0, &[0], None, "0A0000", 1).unwrap();
        assert!(
            b.contains("\nsubnet=10.0.0.0/24\ngateway=10.0.0.254\n"),
            "{b}"
        );
        // Without a gateway: the mask, an empty gateway field, no bootopts key.
        c.entities[0].gateway = None;
        let g = grub(&entity_entry(&c, 0)).unwrap();
        assert!(g.contains(" ip=${net_default_ip}:::255.255.255.0\n"), "{g}");
        let b = bootopts(&c, 0, &[0], None, "0A0000", 1).unwrap();
        assert!(!b.contains("gateway="), "{b}");
        // The writers add `ip=` after the description's words: a second one from `args`
        // would contradict it, so the model refuses it there.
        assert!(crate::validate::GENERATED_KEYS.contains(&"ip"));
    }

    #[test]
    fn diskless_entries_carry_the_groups_args_and_root_and_vsmp_keeps_its_role() {
        let mut c = cluster();
        c.groups[0].diskless = true;
        c.groups[0].root = Some(4);
        c.groups[0].args = "systemd.unit=multi-user.target fstab=no".into();
        c.groups[1].diskless = true;
        c.groups[1].root = Some(2);
        c.groups[1].args = "isolcpus=1".into();
        let e = node_entry(&c, 0);
        let line = pxelinux(&e).unwrap();
        for w in [
            "netboot.mode=diskless",
            "netboot.root=4",
            "systemd.unit=multi-user.target",
            "fstab=no",
        ] {
            assert!(e.args.iter().any(|a| a == w), "{w} missing: {line}");
        }
        let v = node_entry(&c, 1);
        for w in [
            "netboot.mode=vsmp-diskless",
            "netboot.root=2",
            "isolcpus=1",
            "vsmp.role=primary",
            "vsmp.board=1",
            "vsmp.boards=n2",
        ] {
            assert!(v.args.iter().any(|a| a == w), "{w} missing: {:?}", v.args);
        }
        assert!(
            !v.local_alternative,
            "a diskless board has no local disk to boot"
        );
        let b = bootopts(&c, 0, &[0], None, "0A0000", 1).unwrap();
        assert!(
            b.contains("\nmode=diskless\n") && b.contains("\nroot=4\n"),
            "{b}"
        );
        // Disk-based: no root key, and a vSMP board keeps its local alternative.
        c.groups[0].diskless = false;
        c.groups[1].diskless = false;
        assert!(!node_entry(&c, 0)
            .args
            .iter()
            .any(|a| a.starts_with("netboot.root")));
        let v = node_entry(&c, 1);
        assert!(v.args.iter().any(|a| a == "netboot.mode=vsmp") && v.local_alternative);
        assert!(!bootopts(&c, 0, &[0], None, "0A0000", 1)
            .unwrap()
            .contains("root="));
    }

    #[test]
    fn root_is_a_partition_number_of_a_diskless_group() {
        let base = "[cluster]\nname = \"t\"\nimage_server = \"http://10.0.0.1:8080\"\nserver_ip = \"10.0.0.1\"\nkernel = \"/bin/sh\"\ninitrd = \"/bin/sh\"\n\n[[entity]]\nname = \"r1\"\nsubnet = \"10.0.0.0/24\"\ndefault_group = \"g\"\n\n[[node]]\nname = \"n1\"\nmac = \"52:54:00:00:00:01\"\nip = \"10.0.0.11\"\nentity = \"r1\"\ngroups = [\"g\"]\n\n[[group]]\nname = \"g\"\n";
        let parse = |extra: &str| {
            crate::model::parse(
                &format!("{base}{extra}"),
                "t.toml",
                std::path::Path::new("/"),
            )
            .map_err(|e| e.to_string())
        };
        let c = parse("diskless = true\nroot = 4\n").unwrap();
        assert_eq!(c.groups[0].root, Some(4));
        let e = parse("root = 4\n").unwrap_err();
        assert!(e.contains("`root` is for diskless groups"), "{e}");
        let e = parse("diskless = true\nroot = 0\n").unwrap_err();
        assert!(e.contains("partition number"), "{e}");
        let e = parse("diskless = true\nargs = \"netboot.root=3\"\n").unwrap_err();
        assert!(e.contains("netboot.root"), "{e}");
    }

    #[test]
    fn a_valid_cluster_renders_everywhere() {
        for r in all_outputs(&cluster()) {
            assert!(r.is_ok(), "{r:?}");
        }
    }

    #[test]
    fn writers_refuse_hostile_values_that_bypassed_the_model() {
        type Corrupt = fn(&mut Cluster);
        let cases: &[(&str, Corrupt)] = &[
            ("entity name", |c| {
                c.entities[0].name = "r1\nLABEL evil".into()
            }),
            ("group name", |c| {
                c.groups[0].name = "compute\nKERNEL x".into()
            }),
            ("image", |c| {
                c.groups[0].image = "i\nserver=http://evil".into()
            }),
            ("node name", |c| {
                c.nodes[0].name = "n1\ndhcp-script=/x".into()
            }),
            ("image server", |c| {
                c.settings.image_server = "http://s init=/bin/sh".into()
            }),
            ("kernel args", |c| {
                c.settings.kernel_args = "x=\"a b\"".into()
            }),
            ("iPXE expansion", |c| c.entities[0].args = "${evil}".into()),
        ];
        for (what, corrupt) in cases {
            let mut c = cluster();
            corrupt(&mut c);
            let refused = all_outputs(&c).into_iter().filter(Result::is_err).count();
            assert!(refused > 0, "{what}: every writer accepted it");
            for r in all_outputs(&c).into_iter().flatten() {
                // What was written has no injected directive line.
                for bad in [
                    "LABEL evil",
                    "KERNEL x",
                    "server=http://evil",
                    "dhcp-script",
                    "init=/bin/sh",
                ] {
                    assert!(
                        !r.lines().any(|l| l.trim_start().starts_with(bad)),
                        "{what}: `{bad}` became a line of:\n{r}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_overlong_command_line_is_refused_not_cut() {
        let mut c = cluster();
        c.settings.kernel_args = (0..150)
            .map(|i| format!("opt{i:03}=value"))
            .collect::<Vec<_>>()
            .join(" ");
        let e = pxelinux(&entity_entry(&c, 0)).unwrap_err();
        assert!(e.why.contains("1792"), "{e}");
    }

    /// Three compute nodes in rack r1 (n1 its secondary) and a vSMP board, every node
    /// with files of its own.
    fn rack_cluster() -> Cluster {
        let text = "[cluster]\nname = \"t\"\nimage_server = \"http://10.0.0.1:8080\"\nserver_ip = \"10.0.0.1\"\nkernel = \"/bin/sh\"\ninitrd = \"/bin/sh\"\nvsmp_loader = \"/bin/sh\"\nnode_files = \"all\"\nrelay_port = 8200\n\n[[entity]]\nname = \"r1\"\nsubnet = \"10.0.0.0/24\"\ndefault_group = \"compute\"\n\n[[group]]\nname = \"compute\"\n\n[[group]]\nname = \"vSMP_g\"\n\n[[node]]\nname = \"n1\"\nmac = \"52:54:00:00:00:01\"\nip = \"10.0.0.11\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n2\"\nmac = \"52:54:00:00:00:02\"\nip = \"10.0.0.12\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"n3\"\nmac = \"52:54:00:00:00:03\"\nip = \"10.0.0.13\"\nentity = \"r1\"\ngroups = [\"compute\"]\n\n[[node]]\nname = \"v1\"\nmac = \"52:54:00:00:00:04\"\nip = \"10.0.0.14\"\nentity = \"r1\"\ngroups = [\"vSMP_g\"]\n";
        crate::model::parse(text, "t.toml", std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rack_entry(c: &Cluster, n: usize) -> Entry {
        let racks = rack_secondaries(&crate::plan::layout(c));
        node_entry(c, n).with_rack(rack_boot(c, &racks, n))
    }

    #[test]
    fn ipxe_tries_the_racks_secondary_then_the_primary() {
        let c = rack_cluster();
        let t = ipxe(&rack_entry(&c, 1)).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let at = |prefix: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in:\n{t}"))
        };
        // The secondary's files first, each with a short progress timeout; every failure
        // (download or boot) goes to the primary's, which come after the label.
        let rk = at("kernel --timeout 3000 http://10.0.0.11:8200/boot/vmlinuz ");
        let ri = at("initrd --timeout 3000 http://10.0.0.11:8200/boot/initrd.img || goto primary");
        let rb = at("boot || goto primary");
        let label = at(":primary");
        let free = at("imgfree");
        let pk = at("kernel /boot/vmlinuz ");
        let pi = at("initrd /boot/initrd.img");
        assert!(rk < ri && ri < rb && rb < label && label < free && free < pk && pk < pi);
        assert!(lines[rk].ends_with(" || goto primary"), "{t}");
        assert_eq!(lines.last(), Some(&"boot"));
        // Both kernel lines pass the same command line.
        let rack_args = lines[rk]
            .strip_prefix("kernel --timeout 3000 http://10.0.0.11:8200/boot/vmlinuz ")
            .and_then(|l| l.strip_suffix(" || goto primary"));
        let primary_args = lines[pk].strip_prefix("kernel /boot/vmlinuz ");
        assert_eq!(rack_args, primary_args);
        assert!(
            t.contains("# kernel and initrd from the rack: secondary n1 first"),
            "{t}"
        );
        // Without a rack the script is the primary's part alone.
        let plain = ipxe(&node_entry(&c, 1)).unwrap();
        assert!(t.ends_with(&plain[plain.find("kernel ").unwrap()..]), "{t}");
    }

    #[test]
    fn the_secondary_itself_and_unplanned_boards_boot_from_the_primary() {
        let c = rack_cluster();
        let racks = rack_secondaries(&crate::plan::layout(&c));
        assert_eq!(rack_boot(&c, &racks, 0), None, "n1 is the secondary");
        assert_eq!(rack_boot(&c, &racks, 3), None, "v1 is a vSMP board");
        assert_eq!(
            rack_boot(&c, &racks, 2).map(|r| r.secondary),
            Some("n1".into())
        );
        for n in [0, 3] {
            let t = ipxe(&rack_entry(&c, n)).unwrap();
            assert!(!t.contains("--timeout") && !t.contains("goto"), "{t}");
        }
        // The rendered tree: n2's own script tries n1; n1's node plan says it serves the
        // boot files, n2's does not.
        let tree = crate::tree::render(&c).unwrap();
        let text = |p: &str| match tree.files.get(p) {
            Some(crate::tree::Source::Text(t)) => t.clone(),
            other => panic!("{p}: {other:?}"),
        };
        assert!(
            text("ipxe/01-52-54-00-00-00-02.ipxe").contains("http://10.0.0.11:8200/boot/vmlinuz")
        );
        assert!(!text("ipxe/01-52-54-00-00-00-01.ipxe").contains("goto primary"));
        let plan = |n: &str| {
            netboot_proto::plan::NodePlan::from_json(
                text(&netboot_proto::plan::NodePlan::path(n)).as_bytes(),
            )
            .unwrap()
        };
        assert!(plan("n1").boot_files);
        assert!(!plan("n2").boot_files);
    }

    #[test]
    fn a_hostile_secondary_name_is_refused_in_the_rack_comment() {
        let mut c = rack_cluster();
        c.nodes[0].name = "n1\nchain http://evil/x".into();
        let e = rack_entry(&c, 1);
        assert!(ipxe(&e).is_err());
        // A clean one renders; the URL is made of typed parts only.
        let mut e = rack_entry(&rack_cluster(), 1);
        assert!(ipxe(&e).is_ok());
        e.kernel = "boot/vmlinuz ${evil}".into();
        assert!(ipxe(&e).is_err());
    }

    /// Racks r1..r4 of three compute nodes (secondaries r1n1..r4n1, 10.0.R.11), each
    /// behind its router 10.0.R.1.
    fn gw_cluster() -> Cluster {
        let mut t = String::from("[cluster]\nname = \"t\"\nimage_server = \"http://10.0.0.1:8080\"\nserver_ip = \"10.0.0.1\"\nkernel = \"/bin/sh\"\ninitrd = \"/bin/sh\"\nrelay_port = 8200\n\n[[group]]\nname = \"compute\"\n\n");
        for r in 1..=4 {
            t.push_str(&format!("[[entity]]\nname = \"r{r}\"\nsubnet = \"10.0.{r}.0/24\"\ngateway = \"10.0.{r}.1\"\ndefault_group = \"compute\"\n"));
            for n in 1..=3 {
                t.push_str(&format!("[[node]]\nname = \"r{r}n{n}\"\nmac = \"52:54:00:00:{r:02x}:{n:02x}\"\nip = \"10.0.{r}.{}\"\nentity = \"r{r}\"\ngroups = [\"compute\"]\n", 10 + n));
            }
        }
        crate::model::parse(&t, "t.toml", std::path::Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn default_group_nodes_find_their_rack_by_their_gateway() {
        let mut c = gw_cluster();
        // r2 and r3 behind one router (two subnets on one L3 switch): the router does not
        // tell them apart; r4 without a gateway.
        c.entities[2].gateway = c.entities[1].gateway;
        c.entities[3].gateway = None;
        let tree = crate::tree::render(&c).unwrap();
        let gw: Vec<&String> = tree
            .files
            .keys()
            .filter(|p| p.starts_with("ipxe/gw-"))
            .collect();
        assert_eq!(gw, ["ipxe/gw-10.0.1.1.ipxe"], "shared or no gateway: none");
        // Each its own router (r4 none): r1, r2, r3.
        let mut c = gw_cluster();
        c.entities[3].gateway = None;
        let tree = crate::tree::render(&c).unwrap();
        let text = |p: &str| match tree.files.get(p) {
            Some(crate::tree::Source::Text(t)) => t.clone(),
            other => panic!("{p}: {other:?}"),
        };
        let gw = tree
            .files
            .keys()
            .filter(|p| p.starts_with("ipxe/gw-"))
            .count();
        assert_eq!(gw, 3);
        assert!(
            text("boot.ipxe").contains("chain --autofree ipxe/01-${mac:hexhyp}.ipxe || chain --autofree ipxe/gw-${gateway}.ipxe || chain --autofree ipxe/default.ipxe"),
            "{}", text("boot.ipxe")
        );
        // r2's script: a node tries r2n1, r2n1 itself skips to its parent r1n1 (the root
        // of the boot-file tree), then the primary; r1's root goes to the primary.
        let t = text("ipxe/gw-10.0.2.1.ipxe");
        let ipxe_of = |ip: &str| run(&t, ip);
        assert_eq!(
            ipxe_of("10.0.2.12"),
            ["http://10.0.2.11:8200/boot/vmlinuz", "/boot/vmlinuz"]
        );
        assert_eq!(
            ipxe_of("10.0.2.11"),
            ["http://10.0.1.11:8200/boot/vmlinuz", "/boot/vmlinuz"]
        );
        assert_eq!(
            run(&text("ipxe/gw-10.0.1.1.ipxe"), "10.0.1.11"),
            ["/boot/vmlinuz"]
        );
        assert_eq!(
            run(&text("ipxe/gw-10.0.1.1.ipxe"), "10.0.1.13"),
            ["http://10.0.1.11:8200/boot/vmlinuz", "/boot/vmlinuz"]
        );
        // The same entry as the entity's hex files: its default group, no node name.
        let pk = t
            .lines()
            .find(|l| l.starts_with("kernel /boot/vmlinuz "))
            .unwrap();
        assert!(
            pk.contains("netboot.entity=r2") && !pk.contains("netboot.node="),
            "{pk}"
        );
    }

    /// The kernel URLs an iPXE script tries for a node at `ip`, in order, when every
    /// download fails (`iseq ${ip} X && goto L ||`, `|| goto L`, labels).
    fn run(script: &str, ip: &str) -> Vec<String> {
        let lines: Vec<&str> = script.lines().collect();
        let (mut pc, mut out) = (0, vec![]);
        while pc < lines.len() {
            let l = lines[pc];
            pc += 1;
            if let Some(rest) = l.strip_prefix("iseq ${ip} ") {
                let (want, label) = rest
                    .strip_suffix(" ||")
                    .unwrap()
                    .split_once(" && goto ")
                    .unwrap();
                if want == ip {
                    pc = lines
                        .iter()
                        .position(|x| *x == format!(":{label}"))
                        .unwrap()
                        + 1;
                }
            } else if let Some(rest) = l.strip_prefix("kernel ") {
                let url = rest
                    .trim_start_matches("--timeout 3000 ")
                    .split(' ')
                    .next()
                    .unwrap();
                out.push(url.to_string());
                if let Some((_, label)) = l.split_once(" || goto ") {
                    pc = lines
                        .iter()
                        .position(|x| *x == format!(":{label}"))
                        .unwrap()
                        + 1;
                }
            }
        }
        out
    }

    #[test]
    fn a_secondary_boots_from_its_parent_secondary_first() {
        let c = gw_cluster();
        let racks = rack_secondaries(&crate::plan::layout(&c));
        // r1n1 is the root; r2n1 and r3n1 hang under it, r4n1 under r2n1.
        assert_eq!(rack_boot(&c, &racks, 0), None);
        assert_eq!(
            rack_boot(&c, &racks, 3).map(|r| r.secondary),
            Some("r1n1".into())
        );
        assert_eq!(
            rack_boot(&c, &racks, 9).map(|r| r.secondary),
            Some("r2n1".into())
        );
        assert_eq!(
            rack_boot(&c, &racks, 10).map(|r| r.secondary),
            Some("r4n1".into())
        );
        let t = ipxe(&node_entry(&c, 9).with_rack(rack_boot(&c, &racks, 9))).unwrap();
        assert!(
            t.contains("# kernel and initrd from the rack: secondary r2n1 first"),
            "{t}"
        );
    }

    #[test]
    fn a_hostile_name_in_a_gateway_script_is_refused() {
        let mut c = gw_cluster();
        c.nodes[0].name = "r1n1\nchain http://evil/x".into();
        let racks = rack_secondaries(&crate::plan::layout(&c));
        // r2's script names r1n1 as its secondary's parent.
        let e = gateway_entry(&c, &racks, 1).unwrap();
        assert!(ipxe(&e).is_err());
        let e = gateway_entry(&c, &racks, 0).unwrap();
        assert!(ipxe(&e).is_err());
        assert!(crate::tree::render(&c).is_err());
        // The file name is the typed router address alone.
        assert_eq!(
            gateway_script(Ipv4Addr::new(10, 0, 2, 1)),
            "ipxe/gw-10.0.2.1.ipxe"
        );
        // No gateway: no script.
        let mut c = gw_cluster();
        c.entities[3].gateway = None;
        assert!(gateway_entry(&c, &racks, 3).is_none());
    }

    #[test]
    fn grub_quotes_a_title_with_a_quote() {
        let mut e = entity_entry(&cluster(), 0);
        e.title = "it's; reboot".into();
        let t = grub(&e).unwrap();
        assert!(t.contains(r"menuentry 'it'\''s; reboot' {"), "{t}");
        // A word GRUB would read is quoted on the linux line too (the kernel gets it as is).
        e.args.push("a;b".into());
        assert!(grub(&e).unwrap().contains(" 'a;b' netboot.mac="));
    }
}
