//! The cluster description (`cluster.toml`) and its validation. Parsing keeps the byte
//! span of every value; validation collects *every* problem as a [`Diagnostic`] with
//! file:line:column instead of stopping at the first, and yields a [`Cluster`] whose
//! references are indexes that are known to be valid.
//!
//! A commented example lives in `pxe-builder/examples/cluster.toml`.

use crate::validate;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

type S<T> = Spanned<T>;

/// The largest `root = N` a group may name (a GPT holds 128 entries by default; MBR
/// logical partitions number on from 5).
pub const MAX_ROOT_PARTITION: u32 = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    cluster: ClusterDef,
    #[serde(default, rename = "entity")]
    entities: Vec<EntityDef>,
    #[serde(default, rename = "group")]
    groups: Vec<GroupDef>,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterDef {
    name: S<String>,
    image_server: S<String>,
    server_ip: S<String>,
    kernel: S<String>,
    initrd: S<String>,
    #[serde(default)]
    kernel_args: Option<S<String>>,
    #[serde(default)]
    vsmp_prefix: Option<S<String>>,
    #[serde(default)]
    vsmp_loader: Option<S<String>>,
    #[serde(default)]
    vsmp_args: Option<S<String>>,
    #[serde(default)]
    grub_dir: Option<S<String>>,
    #[serde(default)]
    node_files: Option<S<String>>,
    #[serde(default = "default_relay_port")]
    relay_port: u16,
    #[serde(default)]
    rack_shape: Option<S<String>>,
    /// `tree`: how many racks hang under each rack (docs/DISTRIBUTION.md).
    #[serde(default)]
    tree_fanout: Option<S<i64>>,
    /// Link rates in Gbit/s (docs/DISTRIBUTION.md): they size the `tree` shape.
    #[serde(default)]
    node_link_gbps: Option<S<f64>>,
    #[serde(default)]
    rack_uplink_gbps: Option<S<f64>>,
    #[serde(default)]
    spine_gbps: Option<S<f64>>,
    #[serde(default)]
    primary_uplink_gbps: Option<S<f64>>,
    /// Seconds within which the nodes power on (the agents' grace, docs/DISTRIBUTION.md).
    #[serde(default)]
    boot_window_s: Option<S<i64>>,
}

fn default_relay_port() -> u16 {
    8180
}

/// `vsmp_prefix` when the description gives none (CMU's `CMU_vSMP_PREFIX`).
pub const DEFAULT_VSMP_PREFIX: &str = "vSMP_";

/// The text of an optional string setting, empty when absent.
fn text_of(v: &Option<S<String>>) -> String {
    v.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityDef {
    name: S<String>,
    subnet: S<String>,
    #[serde(default)]
    secondary: Option<S<String>>,
    #[serde(default)]
    default_group: Option<S<String>>,
    #[serde(default)]
    args: Option<S<String>>,
    #[serde(default)]
    gateway: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDef {
    name: S<String>,
    #[serde(default)]
    image: Option<S<String>>,
    #[serde(default)]
    diskless: bool,
    #[serde(default)]
    active: Vec<S<String>>,
    #[serde(default)]
    args: Option<S<String>>,
    /// Pins the image: nodes of the group clone only the image with this id.
    #[serde(default)]
    image_id: Option<S<String>>,
    /// Diskless groups: the image's partition that is the root file system.
    #[serde(default)]
    root: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDef {
    name: S<String>,
    mac: S<String>,
    ip: S<String>,
    entity: S<String>,
    #[serde(default)]
    groups: Vec<S<String>>,
    #[serde(default)]
    active_group: Option<S<String>>,
}

/// One problem in the description, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// All problems of a description.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the cluster description:\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
pub struct Invalid(pub Vec<Diagnostic>);

/// Subnets and MACs are parsed as the agent parses them (`netboot_proto::net`), with its
/// typed errors ([`BadCidr`], [`BadMac`]); a diagnostic takes their message.
pub use netboot_proto::net::{mac_string, parse_cidr, parse_mac, Net};

/// Cluster-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub image_server: String,
    pub server_ip: Ipv4Addr,
    /// Kernel and initrd files on this machine, copied into the tree.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_args: String,
    pub vsmp_prefix: String,
    pub vsmp_loader: Option<PathBuf>,
    pub vsmp_args: String,
    /// Where GRUB's x86_64-efi modules are (for the network image).
    pub grub_dir: PathBuf,
    /// Write per-node boot files for every node (`true`), or only for nodes whose boot
    /// differs from their entity's default (`false`, the default).
    pub all_node_files: bool,
    /// Port relaying nodes serve the image on.
    pub relay_port: u16,
    /// Who pulls from whom (docs/DISTRIBUTION.md).
    pub rack_shape: RackShape,
    /// `tree`: racks hung under each rack ([`DEFAULT_TREE_FANOUT`]).
    pub tree_fanout: usize,
    /// The link rates the `tree` shape is sized by.
    pub links: Links,
    /// Seconds within which the nodes power on (`boot_window_s`, 0 to
    /// `netboot_proto::plan::MAX_BOOT_WINDOW_S`, default 30): carried in the plans, a
    /// node waits that long (plus a margin) for an upstream that has not answered yet.
    pub boot_window_s: u64,
}

/// Link rates in Gbit/s (`[cluster]` `node_link_gbps`, `rack_uplink_gbps`, `spine_gbps`,
/// `primary_uplink_gbps`). They decide how many racks pull from the primary at once in
/// the `tree` shape (`crate::plan::tree_roots`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Links {
    /// A node's own link (each direction).
    pub node: f64,
    /// A rack's uplink into the spine.
    pub rack_uplink: f64,
    /// What the spine carries between any two racks (a non-blocking spine: per rack).
    pub spine: f64,
    /// The primary's (the image server's) uplink.
    pub primary: f64,
}

impl Default for Links {
    fn default() -> Links {
        Links {
            node: 10.0,
            rack_uplink: 100.0,
            spine: 100.0,
            primary: 100.0,
        }
    }
}

/// `tree_fanout` when the description gives none. From the simulator
/// (docs/DISTRIBUTION.md): at 100 000 nodes every F runs at half the link rate (every
/// node feeds at most two), F = 2 is ~30 hops shallower than F = 1 (260 against 289)
/// and, with 30 s of boot skew and 1 % of nodes dying, delayed fewer nodes (50 616
/// against 55 634) and finished sooner (144.0 s against 145.8 s); F = 3 or 4 gained
/// nothing more.
pub const DEFAULT_TREE_FANOUT: usize = 2;

/// Largest `tree_fanout` accepted.
pub const MAX_TREE_FANOUT: usize = 64;

/// `auto` picks `serial` for a group of at most this many cloning nodes when the primary
/// feeds one node at full rate, `tree` otherwise (`crate::plan::resolve_shape`). A
/// serial chain lags one frame per hop, so 1024 hops of 1 MiB frames add a quarter of
/// the time a 4 GiB image takes at the link rate (≤ 1.25×), while the tree's pipelines
/// run at half the link rate (2×); beyond ~1000 hops one failure also delays too many
/// nodes (simulated, 10 000 nodes, 1 % dead: serial 471 s, tree 163 s) — see
/// docs/DISTRIBUTION.md.
pub const AUTO_SERIAL_MAX_NODES: usize = 1024;

/// The shape of the distribution tree (`rack_shape`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RackShape {
    /// `serial` for a group of at most [`AUTO_SERIAL_MAX_NODES`] cloning nodes when the
    /// primary feeds only one node at full rate, `tree` otherwise (the default;
    /// `crate::plan::resolve_shape`).
    Auto,
    /// One chain through every rack: a rack's secondary, its nodes one after another,
    /// then the next rack's secondary. Every node feeds at most one other, so every link
    /// runs at full rate; its depth is the group's size.
    Serial,
    /// Secondaries in a pipeline (secondary k pulls from k-1), and behind each a chain of
    /// its rack's nodes: a secondary feeds two, each at half its uplink.
    Chain,
    /// Secondaries in a pipeline, every rack node pulls from its secondary.
    Fanout,
    /// A chain inside each rack, entered at its secondary; the racks in a tree: the first
    /// P racks pull from the primary (P from the link rates), rack k ≥ P hangs under rack
    /// (k−P)/F, its secondary pulling from member (k−P) mod F of that rack's chain. Every
    /// node feeds at most two others; depth ≤ rack size + F·log_F(racks).
    Tree,
}

impl RackShape {
    /// The word `rack_shape` takes for it.
    pub fn word(self) -> &'static str {
        match self {
            RackShape::Auto => "auto",
            RackShape::Serial => "serial",
            RackShape::Chain => "chain",
            RackShape::Fanout => "fanout",
            RackShape::Tree => "tree",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub net: Net,
    /// Configured secondary (node index).
    pub secondary: Option<usize>,
    /// Group booted by nodes of this subnet that have no file of their own.
    pub default_group: usize,
    pub args: String,
    /// The subnet's router (`gateway`): the nodes' default route, which every output
    /// hands out (DHCP option 3, `ip=` on GRUB and iPXE lines, bootopts). Required when a
    /// server the entries point at lies outside the subnet ([`check_routes`]).
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub image: String,
    pub diskless: bool,
    /// Active members (node indexes), in order: the first is a vSMP group's primary.
    pub active: Vec<usize>,
    /// All members.
    pub members: Vec<usize>,
    pub args: String,
    /// The only image id the group's nodes accept (`netboot.image_id`, docs/TRUST.md).
    pub image_id: Option<String>,
    /// A diskless group's root partition in its image (`netboot.root`, docs/BOOT.md).
    pub root: Option<u32>,
}

impl Group {
    pub fn is_vsmp(&self, prefix: &str) -> bool {
        !prefix.is_empty() && self.name.starts_with(prefix)
    }

    /// Whether the group's nodes fetch its image, and so have a place in the clone plan:
    /// disk-based groups clone it, diskless groups (vSMP ones too) pull its root into RAM
    /// the same way, relayed like a clone (issue 16). Disk-based vSMP boards boot the vSMP
    /// loader instead, and a group without active members has nobody to fetch it.
    pub fn clones(&self, vsmp_prefix: &str) -> bool {
        !((self.is_vsmp(vsmp_prefix) && !self.diskless) || self.active.is_empty())
    }

    /// The entities of the active members (indexes below `entities`), in the order their
    /// first active member appears: the clone plan's rack order. Linear in members (not
    /// in entities: a set of those seen, not a mark per entity for every group).
    pub fn entity_order(&self, nodes: &[Node], entities: usize) -> Vec<usize> {
        let mut seen = std::collections::HashSet::new();
        let mut order = vec![];
        for n in self.active.iter().filter_map(|&i| nodes.get(i)) {
            crate::work::tick(1);
            if n.entity < entities && seen.insert(n.entity) {
                order.push(n.entity);
            }
        }
        order
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub entity: usize,
    pub groups: Vec<usize>,
    pub active_group: usize,
    /// This node's place in its active group's `active` list (0: a vSMP group's primary
    /// board), so an entry finds its board number without searching the list.
    pub active_index: usize,
}

/// A validated cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub settings: Settings,
    pub entities: Vec<Entity>,
    pub groups: Vec<Group>,
    pub nodes: Vec<Node>,
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    /// Reports `message` at `span`. Control characters in the message (a hostile value
    /// quoted in it) are escaped: a diagnostic is one line and never drives a terminal.
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        let message: String = message.into();
        let message = if message.chars().any(char::is_control) {
            message.chars().flat_map(char::escape_default).collect()
        } else {
            message
        };
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message,
        });
    }

    /// Reports a problem at byte `index` of the string value `v`: at that very character
    /// when the file spells the value literally up to there, else at the value's start.
    fn at_char(&mut self, v: &S<String>, index: usize, message: String) {
        let span = v.span();
        let raw = self.text.get(span.clone()).unwrap_or("");
        let value = v.get_ref();
        let at = match (raw.chars().next(), value.get(..index)) {
            (Some('"' | '\''), Some(prefix)) if raw[1..].starts_with(prefix) => {
                span.start + 1 + index
            }
            _ => span.start,
        };
        self.at(at..at, message);
    }

    /// Checks a name with [`validate::name`]; false when it was reported.
    fn name(&mut self, kind: validate::Kind, v: &S<String>) -> bool {
        match validate::name(kind, v.get_ref()) {
            Ok(()) => true,
            Err((i, m)) => {
                self.at_char(v, i, m);
                false
            }
        }
    }

    /// Reports the result of one of the [`validate`] checks on `v`.
    fn check(&mut self, v: &S<String>, r: Result<(), (usize, String)>) {
        if let Err((i, m)) = r {
            self.at_char(v, i, m);
        }
    }
}

/// Every free-text value of the description against its documented character set
/// (`docs/BOOT.md`): names, the image server URL, kernel arguments, local paths. References
/// to names (`secondary`, `groups`, …) need no check of their own: they must match a
/// defined, checked name.
fn check_text(cx: &mut Ctx, f: &File) {
    use validate::Kind;
    let c = &f.cluster;
    cx.name(Kind::Cluster, &c.name);
    cx.check(
        &c.image_server,
        validate::image_server(c.image_server.get_ref()),
    );
    for (key, v) in [("kernel_args", &c.kernel_args), ("vsmp_args", &c.vsmp_args)] {
        if let Some(v) = v {
            cx.check(v, validate::kernel_args(key, v.get_ref()));
        }
    }
    if let Some(v) = &c.vsmp_prefix {
        cx.check(v, validate::vsmp_prefix(v.get_ref()));
    }
    for (key, v) in [
        ("kernel", Some(&c.kernel)),
        ("initrd", Some(&c.initrd)),
        ("vsmp_loader", c.vsmp_loader.as_ref()),
        ("grub_dir", c.grub_dir.as_ref()),
    ] {
        if let Some(v) = v {
            cx.check(v, validate::local_path(key, v.get_ref()));
        }
    }
    for e in &f.entities {
        cx.name(Kind::Entity, &e.name);
        if let Some(a) = &e.args {
            cx.check(a, validate::kernel_args("args", a.get_ref()));
        }
    }
    for g in &f.groups {
        cx.name(Kind::Group, &g.name);
        if let Some(i) = &g.image {
            cx.name(Kind::Image, i);
        } else if validate::name(Kind::Group, g.name.get_ref()).is_ok() {
            // The group's name is its image's: it must be a valid image name too.
            if let Err((i, m)) = validate::name(Kind::Image, g.name.get_ref()) {
                cx.at_char(
                    &g.name,
                    i,
                    format!("{m} (a group without `image` uses its name)"),
                );
            }
        }
        if let Some(a) = &g.args {
            cx.check(a, validate::kernel_args("args", a.get_ref()));
        }
        if let Some(id) = &g.image_id {
            cx.check(id, validate::image_id(id.get_ref()));
        }
        if let Some(r) = &g.root {
            if !g.diskless {
                cx.at(
                    r.span(),
                    "`root` is for diskless groups (a clone restores every partition)",
                );
            } else if !(1..=MAX_ROOT_PARTITION).contains(r.get_ref()) {
                cx.at(
                    r.span(),
                    format!("`root` is a partition number, 1 to {MAX_ROOT_PARTITION}"),
                );
            }
        }
    }
    // Node names are DHCP host names, which compare without case. A name in lower case
    // already (most) is borrowed, not copied.
    let mut seen: HashMap<Cow<str>, &str> = HashMap::with_capacity(f.nodes.len());
    for n in &f.nodes {
        crate::work::tick(1);
        if cx.name(Kind::Node, &n.name) {
            let name = n.name.get_ref();
            let lower = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name.as_str())
            };
            match seen.get(&lower) {
                Some(&other) if other != n.name.get_ref() => cx.at(
                    n.name.span(),
                    format!(
                        "node name `{}` differs from node `{other}` only in case; DHCP and DNS names compare without case",
                        n.name.get_ref()
                    ),
                ),
                _ => {
                    seen.insert(lower, n.name.get_ref());
                }
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// A setting that takes one of a few words; the first is the default. Anything else is
/// reported at its location and the default is used.
fn choose<T: Copy>(cx: &mut Ctx, key: &str, v: Option<&S<String>>, options: &[(&str, T)]) -> T {
    let default = options[0].1;
    let Some(v) = v else { return default };
    if let Some(&(_, t)) = options.iter().find(|(w, _)| *w == v.get_ref()) {
        return t;
    }
    let words: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
    cx.at(
        v.span(),
        format!(
            "{key} = `{}`: use {} (the first is the default)",
            v.get_ref(),
            words.join(" or ")
        ),
    );
    default
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Cluster, Invalid> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Invalid(vec![Diagnostic {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base)
}

/// Parses and validates `text` (named `file` in diagnostics; relative paths resolve
/// against `base`).
pub fn parse(text: &str, file: &str, base: &Path) -> Result<Cluster, Invalid> {
    parse_with(text, file, base, &|p| p.is_file())
}

/// [`parse`] without touching the file system: the kernel, initrd and vSMP loader are
/// taken as present (relative paths resolve against `/`). For the fuzzer
/// (`pxe_builder::fuzzing`), which must not stat paths it made up.
pub fn parse_in_memory(text: &str, file: &str) -> Result<Cluster, Invalid> {
    parse_with(text, file, Path::new("/"), &|_| true)
}

/// Validation in the order of the file's sections: the toml itself, `[cluster]`, every
/// free-text value, the names and their duplicates, entities, nodes, groups. Every step
/// reports into `cx` and goes on with a placeholder, so one run names every problem.
fn parse_with(
    text: &str,
    file: &str,
    base: &Path,
    is_file: &dyn Fn(&Path) -> bool,
) -> Result<Cluster, Invalid> {
    let mut cx = Ctx {
        file: file.to_string(),
        text,
        diags: vec![],
    };
    let Some(f) = parse_toml(&mut cx, text) else {
        return Err(Invalid(cx.diags));
    };
    let server_ip = server_ip(&mut cx, &f.cluster);
    check_text(&mut cx, &f);
    let settings = settings(&mut cx, &f.cluster, server_ip, base, is_file);
    let names = Names::index(&mut cx, &f);
    let entities = entities(&mut cx, &f.entities, &names);
    check_overlaps(&mut cx, &entities);
    let no_route = check_routes(&mut cx, &entities, &settings);
    let mut nodes = nodes(&mut cx, &f.nodes, &names, &entities);
    check_secondaries(&mut cx, &entities, &nodes, &names);
    let groups = groups(&mut cx, &f.cluster, &names, &nodes, &settings.vsmp_prefix);
    for g in &groups {
        for (i, &n) in g.active.iter().enumerate() {
            nodes[n].active_index = i;
        }
    }
    check_relay_routes(&mut cx, &entities, &nodes, &groups, &settings, no_route);
    if !cx.diags.is_empty() {
        let mut d = cx.diags;
        d.sort_by_key(|d| (d.line, d.column));
        return Err(Invalid(d));
    }
    Ok(Cluster {
        settings,
        entities: entities.into_iter().map(|e| e.entity).collect(),
        groups,
        nodes,
    })
}

/// The toml document; a syntax error or an unknown key is reported (at the key itself,
/// where serde points at its table) and ends the validation.
fn parse_toml(cx: &mut Ctx, text: &str) -> Option<File> {
    // Plain files (every generated one) the fast way; the `toml` crate reads the rest
    // and words every error (crate::plain_toml).
    if let Some(f) = crate::plain_toml::from_str(text) {
        return Some(f);
    }
    let e = match toml::from_str(text) {
        Ok(f) => return Some(f),
        Err(e) => e,
    };
    let mut span = e.span().unwrap_or(0..0);
    if let Some(key) = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        let from = span.start.min(text.len());
        let mut pos = from;
        for line in text[from..].split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
                pos += line.len() - t.len();
                span = pos..pos + key.len();
                break;
            }
            pos += line.len();
        }
    }
    cx.at(span, e.message().to_string());
    None
}

/// The document as [`crate::plain_toml`] and as the `toml` crate read it (`Debug`, every
/// span included; `None` for a refusal), for the fuzz target that checks they agree
/// (`crate::fuzzing::plain_toml`).
pub fn read_both(text: &str) -> (Option<String>, Option<String>) {
    let plain: Option<File> = crate::plain_toml::from_str(text);
    let full: Option<File> = toml::from_str(text).ok();
    (
        plain.map(|f| format!("{f:?}")),
        full.map(|f| format!("{f:?}")),
    )
}

/// `[cluster] server_ip`, or the unspecified address when it is not one (reported).
fn server_ip(cx: &mut Ctx, c: &ClusterDef) -> Ipv4Addr {
    match c.server_ip.get_ref().parse::<Ipv4Addr>() {
        Ok(ip) => ip,
        Err(_) => {
            cx.at(
                c.server_ip.span(),
                format!(
                    "server_ip `{}` is not an IPv4 address",
                    c.server_ip.get_ref()
                ),
            );
            Ipv4Addr::UNSPECIFIED
        }
    }
}

/// The rest of `[cluster]`: the word settings and the files it names (which must exist).
fn settings(
    cx: &mut Ctx,
    c: &ClusterDef,
    server_ip: Ipv4Addr,
    base: &Path,
    is_file: &dyn Fn(&Path) -> bool,
) -> Settings {
    let file_path = |s: &S<String>, what: &str, cx: &mut Ctx| {
        let p = base.join(s.get_ref());
        if !is_file(&p) {
            cx.at(
                s.span(),
                format!(
                    "{what} `{}` not found (looked at {})",
                    s.get_ref(),
                    p.display()
                ),
            );
        }
        p
    };
    let all_node_files = choose(
        cx,
        "node_files",
        c.node_files.as_ref(),
        &[("differing", false), ("all", true)],
    );
    let rack_shape = choose(
        cx,
        "rack_shape",
        c.rack_shape.as_ref(),
        &[
            ("auto", RackShape::Auto),
            ("serial", RackShape::Serial),
            ("chain", RackShape::Chain),
            ("fanout", RackShape::Fanout),
            ("tree", RackShape::Tree),
        ],
    );
    let tree_fanout = tree_fanout(cx, c.tree_fanout.as_ref());
    let links = links(cx, c);
    let boot_window_s = boot_window(cx, c.boot_window_s.as_ref());
    let kernel = file_path(&c.kernel, "kernel", cx);
    let initrd = file_path(&c.initrd, "initrd", cx);
    let vsmp_loader = c
        .vsmp_loader
        .as_ref()
        .map(|s| file_path(s, "vsmp_loader", cx));
    Settings {
        name: c.name.get_ref().clone(),
        image_server: c.image_server.get_ref().trim_end_matches('/').to_string(),
        server_ip,
        kernel,
        initrd,
        kernel_args: text_of(&c.kernel_args),
        vsmp_prefix: c
            .vsmp_prefix
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_else(|| DEFAULT_VSMP_PREFIX.into()),
        vsmp_loader,
        vsmp_args: text_of(&c.vsmp_args),
        all_node_files,
        relay_port: c.relay_port,
        rack_shape,
        tree_fanout,
        links,
        boot_window_s,
        grub_dir: PathBuf::from(
            c.grub_dir
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_else(|| "/usr/lib/grub/x86_64-efi".into()),
        ),
    }
}

/// `tree_fanout`: 1 to [`MAX_TREE_FANOUT`] (reported otherwise; the default is used).
fn tree_fanout(cx: &mut Ctx, v: Option<&S<i64>>) -> usize {
    let Some(v) = v else {
        return DEFAULT_TREE_FANOUT;
    };
    match usize::try_from(*v.get_ref()) {
        Ok(f) if (1..=MAX_TREE_FANOUT).contains(&f) => f,
        _ => {
            cx.at(
                v.span(),
                format!(
                    "tree_fanout = {}: use 1 to {MAX_TREE_FANOUT} racks under each rack",
                    v.get_ref()
                ),
            );
            DEFAULT_TREE_FANOUT
        }
    }
}

/// `boot_window_s`: 0 to `MAX_BOOT_WINDOW_S` (reported otherwise; the default is used).
fn boot_window(cx: &mut Ctx, v: Option<&S<i64>>) -> u64 {
    use netboot_proto::plan::{DEFAULT_BOOT_WINDOW_S, MAX_BOOT_WINDOW_S};
    let Some(v) = v else {
        return DEFAULT_BOOT_WINDOW_S;
    };
    match u64::try_from(*v.get_ref()) {
        Ok(w) if w <= MAX_BOOT_WINDOW_S => w,
        _ => {
            cx.at(
                v.span(),
                format!(
                    "boot_window_s = {}: seconds within which the nodes power on, 0 to {MAX_BOOT_WINDOW_S}",
                    v.get_ref()
                ),
            );
            DEFAULT_BOOT_WINDOW_S
        }
    }
}

/// The link rates of `[cluster]`: each above 0 and at most 1 000 000 Gbit/s (reported
/// otherwise; the default is used).
fn links(cx: &mut Ctx, c: &ClusterDef) -> Links {
    let mut l = Links::default();
    for (key, v, slot) in [
        ("node_link_gbps", &c.node_link_gbps, &mut l.node),
        ("rack_uplink_gbps", &c.rack_uplink_gbps, &mut l.rack_uplink),
        ("spine_gbps", &c.spine_gbps, &mut l.spine),
        (
            "primary_uplink_gbps",
            &c.primary_uplink_gbps,
            &mut l.primary,
        ),
    ] {
        let Some(v) = v else { continue };
        let g = *v.get_ref();
        if g.is_finite() && (0.001..=1e6).contains(&g) {
            *slot = g;
        } else {
            cx.at(
                v.span(),
                format!("{key} = {g}: a link rate in Gbit/s, from 0.001 (1 Mbit/s) to 1000000"),
            );
        }
    }
    l
}

/// The defined names and their indexes (duplicates reported; the first one counts).
struct Names<'f> {
    entity: HashMap<String, usize>,
    /// Every group, `default` added when the file defines none.
    group_defs: Vec<(String, Option<&'f GroupDef>)>,
    group: HashMap<String, usize>,
    default_group: usize,
    node: HashMap<&'f str, usize>,
}

impl<'f> Names<'f> {
    fn index(cx: &mut Ctx, f: &'f File) -> Names<'f> {
        let mut entity = HashMap::new();
        for (i, e) in f.entities.iter().enumerate() {
            if entity.insert(e.name.get_ref().clone(), i).is_some() {
                cx.at(
                    e.name.span(),
                    format!("duplicate entity name `{}`", e.name.get_ref()),
                );
            }
        }
        let mut group_defs: Vec<(String, Option<&GroupDef>)> = vec![];
        let mut group = HashMap::new();
        for g in &f.groups {
            if group.contains_key(g.name.get_ref()) {
                cx.at(
                    g.name.span(),
                    format!("duplicate group name `{}`", g.name.get_ref()),
                );
                continue;
            }
            group.insert(g.name.get_ref().clone(), group_defs.len());
            group_defs.push((g.name.get_ref().clone(), Some(g)));
        }
        let default_group = match group.get("default") {
            Some(&g) => g,
            None => {
                group.insert("default".into(), group_defs.len());
                group_defs.push(("default".into(), None));
                group_defs.len() - 1
            }
        };
        let mut node = HashMap::with_capacity(f.nodes.len());
        for (i, n) in f.nodes.iter().enumerate() {
            if node.insert(n.name.get_ref().as_str(), i).is_some() {
                cx.at(
                    n.name.span(),
                    format!("duplicate node name `{}`", n.name.get_ref()),
                );
            }
        }
        Names {
            entity,
            group_defs,
            group,
            default_group,
            node,
        }
    }
}

/// An entity being validated, with its definition and whether its subnet parsed.
struct EntityDraft<'f> {
    def: &'f EntityDef,
    entity: Entity,
    net_ok: bool,
}

/// `[[entity]]`: subnet (at most a /8), secondary node, default group, gateway.
fn entities<'f>(cx: &mut Ctx, defs: &'f [EntityDef], names: &Names) -> Vec<EntityDraft<'f>> {
    let mut out = vec![];
    for e in defs {
        let net = match parse_cidr(e.subnet.get_ref()) {
            Ok(n) => Some(n),
            Err(m) => {
                cx.at(e.subnet.span(), m.to_string());
                None
            }
        };
        if let Some(n) = net {
            if n.prefix < 8 {
                cx.at(
                    e.subnet.span(),
                    format!(
                        "subnet `{n}` is larger than /8; split it into entities of /8 or smaller"
                    ),
                );
            }
        }
        let secondary =
            e.secondary
                .as_ref()
                .and_then(|s| match names.node.get(s.get_ref().as_str()) {
                    Some(&i) => Some(i),
                    None => {
                        cx.at(
                            s.span(),
                            format!("secondary `{}` is not a node", s.get_ref()),
                        );
                        None
                    }
                });
        let default_group = match &e.default_group {
            None => names.default_group,
            Some(s) => match names.group.get(s.get_ref()) {
                Some(&g) => g,
                None => {
                    cx.at(
                        s.span(),
                        format!("default_group `{}` is not a group", s.get_ref()),
                    );
                    names.default_group
                }
            },
        };
        out.push(EntityDraft {
            def: e,
            entity: Entity {
                name: e.name.get_ref().clone(),
                net: net.unwrap_or(Net {
                    addr: Ipv4Addr::UNSPECIFIED,
                    prefix: 32,
                }),
                secondary,
                default_group,
                args: text_of(&e.args),
                gateway: entity_gateway(cx, e, net),
            },
            net_ok: net.is_some(),
        });
    }
    out
}

/// An entity's `gateway`: an IPv4 address inside its subnet (when that parsed), neither
/// its network nor its broadcast address ([`validate::gateway`]).
fn entity_gateway(cx: &mut Ctx, e: &EntityDef, net: Option<Net>) -> Option<Ipv4Addr> {
    let g = e.gateway.as_ref()?;
    let Ok(gw) = g.get_ref().parse::<Ipv4Addr>() else {
        cx.at(
            g.span(),
            format!(
                "gateway `{}` of entity `{}` is not an IPv4 address",
                g.get_ref(),
                e.name.get_ref()
            ),
        );
        return None;
    };
    if let Some(Err(why)) = net.map(|n| validate::gateway(&n, gw)) {
        cx.at(
            g.span(),
            format!("gateway {gw} of entity `{}` {why}", e.name.get_ref()),
        );
        return None;
    }
    Some(gw)
}

/// An entity whose nodes must reach a server outside its subnet (`server_ip`, the TFTP
/// next-server; `image_server` when its host is an IPv4 address) needs a `gateway`:
/// without one the nodes get no route to it (reported at the entity's name). Returns
/// which entities were reported.
fn check_routes(cx: &mut Ctx, entities: &[EntityDraft], s: &Settings) -> Vec<bool> {
    let mut reported = vec![false; entities.len()];
    let mut servers = vec![];
    if !s.server_ip.is_unspecified() {
        servers.push(("server_ip", s.server_ip));
    }
    let ipv4_host = validate::image_server(&s.image_server)
        .ok()
        .and_then(|()| validate::image_server_ipv4(&s.image_server));
    if let Some(ip) = ipv4_host {
        servers.push(("image_server", ip));
    }
    for (i, d) in entities.iter().enumerate() {
        let ent = &d.entity;
        if !d.net_ok || d.def.gateway.is_some() {
            continue;
        }
        if let Some((key, ip)) = servers.iter().find(|(_, ip)| !ent.net.contains(*ip)) {
            cx.at(
                d.def.name.span(),
                format!(
                    "entity `{}` has no `gateway`, but its nodes must reach {key} {ip} outside its subnet {}: add `gateway = \"<its router's address>\"` to this [[entity]]",
                    ent.name, ent.net
                ),
            );
            reported[i] = true;
        }
    }
    reported
}

/// An entity whose nodes relay a group's image to, or pull it from, another entity's
/// (the clone plan chains a group's racks: each secondary pulls from the previous rack, in
/// every `rack_shape`) talks to another subnet, so it needs a `gateway` even when the
/// servers are local: without one the relay's answers have no route back (reported at the
/// entity's name, once, naming the group and the other entity; not again where
/// [`check_routes`] already asked for the `gateway`).
fn check_relay_routes(
    cx: &mut Ctx,
    entities: &[EntityDraft],
    nodes: &[Node],
    groups: &[Group],
    s: &Settings,
    mut reported: Vec<bool>,
) {
    for g in groups.iter().filter(|g| g.clones(&s.vsmp_prefix)) {
        let order = g.entity_order(nodes, entities.len());
        for (k, &e) in order.iter().enumerate() {
            // The neighbour in the plan's rack chain: the rack it pulls from, or for the
            // first rack the one that pulls from it.
            let Some(&other) = (if k == 0 {
                order.get(1)
            } else {
                order.get(k - 1)
            }) else {
                continue;
            };
            let d = &entities[e];
            if reported[e] || !d.net_ok || d.def.gateway.is_some() {
                continue;
            }
            reported[e] = true;
            cx.at(
                d.def.name.span(),
                format!(
                    "entity `{}` has no `gateway`, but group `{}` is cloned across it and entity `{}` (another subnet: the clone plan relays between their nodes): add `gateway = \"<its router's address>\"` to this [[entity]]",
                    d.entity.name, g.name, entities[other].entity.name
                ),
            );
        }
    }
}

/// No two entities' subnets overlap (reported at the later one in the file, naming the
/// other). Two CIDR subnets overlap only when one holds the other, so a sweep in address
/// order with a stack of the subnets holding the current one finds every overlap in
/// O(E log E) (the pairwise check was E²): nested subnets are reported pair by pair
/// (at most 32 deep); of several entities with the same subnet, each is reported once,
/// against the first of them.
fn check_overlaps(cx: &mut Ctx, entities: &[EntityDraft]) {
    let mut order: Vec<usize> = (0..entities.len())
        .filter(|&i| entities[i].net_ok)
        .collect();
    let net = |i: usize| &entities[i].entity.net;
    order.sort_by_key(|&i| (net(i).first(), net(i).prefix, i));
    let mut holding: Vec<usize> = vec![];
    for i in order {
        crate::work::tick(1 + holding.len());
        while holding
            .last()
            .is_some_and(|&h| net(h).last() < net(i).first())
        {
            holding.pop();
        }
        for &h in &holding {
            let (later, other) = if h < i { (i, h) } else { (h, i) };
            let (a, b) = (&entities[later], &entities[other]);
            let msg = format!(
                "subnet {} of entity `{}` overlaps subnet {} of entity `{}`",
                a.entity.net, a.entity.name, b.entity.net, b.entity.name
            );
            cx.at(a.def.subnet.span(), msg);
        }
        if holding.last().is_some_and(|&h| net(h) == net(i)) {
            continue;
        }
        holding.push(i);
    }
}

/// `[[node]]`: address, entity, groups, in that order for each node.
fn nodes(cx: &mut Ctx, defs: &[NodeDef], names: &Names, entities: &[EntityDraft]) -> Vec<Node> {
    // Names borrowed from the file, maps sized once: 100 000 nodes (docs/BENCH.md).
    let mut macs: HashMap<[u8; 6], &str> = HashMap::with_capacity(defs.len());
    let mut ips: HashMap<Ipv4Addr, &str> = HashMap::with_capacity(defs.len());
    let mut nodes = Vec::with_capacity(defs.len());
    for n in defs {
        crate::work::tick(1 + n.groups.len());
        let mac = node_mac(cx, n, &mut macs);
        let ip = node_ip(cx, n, &mut ips);
        let entity = node_entity(cx, n, ip, names, entities);
        let (groups, active_group) = node_groups(cx, n, names);
        nodes.push(Node {
            name: n.name.get_ref().clone(),
            mac,
            ip,
            entity,
            groups,
            active_group,
            active_index: 0,
        });
    }
    nodes
}

/// A node's MAC, unique among the nodes so far.
fn node_mac<'f>(cx: &mut Ctx, n: &'f NodeDef, macs: &mut HashMap<[u8; 6], &'f str>) -> [u8; 6] {
    match parse_mac(n.mac.get_ref()) {
        Ok(m) => {
            if let Some(other) = macs.insert(m, n.name.get_ref()) {
                cx.at(
                    n.mac.span(),
                    format!(
                        "MAC {} of node `{}` is also node `{other}`'s",
                        mac_string(m),
                        n.name.get_ref()
                    ),
                );
            }
            m
        }
        Err(msg) => {
            cx.at(n.mac.span(), msg.to_string());
            [0; 6]
        }
    }
}

/// A node's IPv4 address, unique among the nodes so far.
fn node_ip<'f>(cx: &mut Ctx, n: &'f NodeDef, ips: &mut HashMap<Ipv4Addr, &'f str>) -> Ipv4Addr {
    match n.ip.get_ref().parse::<Ipv4Addr>() {
        Ok(ip) => {
            if let Some(other) = ips.insert(ip, n.name.get_ref()) {
                cx.at(
                    n.ip.span(),
                    format!(
                        "IP {ip} of node `{}` is also node `{other}`'s",
                        n.name.get_ref()
                    ),
                );
            }
            ip
        }
        Err(_) => {
            cx.at(
                n.ip.span(),
                format!("IP `{}` is not an IPv4 address", n.ip.get_ref()),
            );
            Ipv4Addr::UNSPECIFIED
        }
    }
}

/// A node's entity (index), which must hold its address; `usize::MAX` when undefined.
fn node_entity(
    cx: &mut Ctx,
    n: &NodeDef,
    ip: Ipv4Addr,
    names: &Names,
    entities: &[EntityDraft],
) -> usize {
    let Some(&e) = names.entity.get(n.entity.get_ref()) else {
        cx.at(
            n.entity.span(),
            format!(
                "entity `{}` of node `{}` is not defined",
                n.entity.get_ref(),
                n.name.get_ref()
            ),
        );
        return usize::MAX;
    };
    let d = &entities[e];
    let ent = &d.entity;
    if d.net_ok && ip != Ipv4Addr::UNSPECIFIED && !ent.net.contains(ip) {
        cx.at(
            n.ip.span(),
            format!(
                "IP {ip} of node `{}` is outside subnet {} of its entity `{}`",
                n.name.get_ref(),
                ent.net,
                ent.name
            ),
        );
    }
    if ent.gateway == Some(ip) {
        cx.at(
            n.ip.span(),
            format!(
                "IP {ip} of node `{}` is the `gateway` of its entity `{}`: the router's address is no node's (its nodes would refuse a default route through themselves at every boot)",
                n.name.get_ref(),
                ent.name
            ),
        );
    }
    e
}

/// A node's groups (`default` when it names none) and its active group, one of them.
fn node_groups(cx: &mut Ctx, n: &NodeDef, names: &Names) -> (Vec<usize>, usize) {
    let mut groups = vec![];
    for g in &n.groups {
        match names.group.get(g.get_ref()) {
            Some(&gi) => groups.push(gi),
            None => cx.at(
                g.span(),
                format!(
                    "group `{}` of node `{}` is not defined",
                    g.get_ref(),
                    n.name.get_ref()
                ),
            ),
        }
    }
    if groups.is_empty() && n.groups.is_empty() {
        groups.push(names.default_group);
    }
    let active_group = match &n.active_group {
        None => groups.first().copied().unwrap_or(names.default_group),
        Some(a) => match names.group.get(a.get_ref()) {
            Some(&gi) => {
                if !groups.contains(&gi) {
                    cx.at(
                        a.span(),
                        format!(
                            "active_group `{}` of node `{}` is not one of its groups",
                            a.get_ref(),
                            n.name.get_ref()
                        ),
                    );
                }
                gi
            }
            None => {
                cx.at(
                    a.span(),
                    format!(
                        "active_group `{}` of node `{}` is not defined",
                        a.get_ref(),
                        n.name.get_ref()
                    ),
                );
                names.default_group
            }
        },
    };
    (groups, active_group)
}

/// Secondaries belong to their entity.
fn check_secondaries(cx: &mut Ctx, entities: &[EntityDraft], nodes: &[Node], names: &Names) {
    for d in entities {
        let ent = &d.entity;
        if let (Some(s), Some(def)) = (ent.secondary, &d.def.secondary) {
            if nodes[s].entity != names.entity[ent.name.as_str()] {
                cx.at(
                    def.span(),
                    format!(
                        "secondary `{}` is not in entity `{}`",
                        nodes[s].name, ent.name
                    ),
                );
            }
        }
    }
}

/// `[[group]]` (and the implicit `default`): members, active members in order, and what
/// a vSMP group needs.
fn groups(
    cx: &mut Ctx,
    c: &ClusterDef,
    names: &Names,
    nodes: &[Node],
    vsmp_prefix: &str,
) -> Vec<Group> {
    let mut groups = vec![];
    // Members and active members of every group, in node order, in one pass over the
    // nodes (a scan of all nodes per group was groups × nodes).
    let mut members_of: Vec<Vec<usize>> = vec![vec![]; names.group_defs.len()];
    let mut active_of: Vec<Vec<usize>> = vec![vec![]; names.group_defs.len()];
    for (n, node) in nodes.iter().enumerate() {
        crate::work::tick(1 + node.groups.len());
        for &g in &node.groups {
            // A node listing a group twice is a member once.
            if let Some(m) = members_of.get_mut(g).filter(|m| m.last() != Some(&n)) {
                m.push(n);
            }
        }
        if let Some(a) = active_of.get_mut(node.active_group) {
            a.push(n);
        }
    }
    let mut listed = vec![false; nodes.len()];
    for (gi, (name, def)) in names.group_defs.iter().enumerate() {
        let members = std::mem::take(&mut members_of[gi]);
        let active = active_members(
            cx,
            gi,
            name,
            *def,
            names,
            nodes,
            &active_of[gi],
            &mut listed,
        );
        let is_vsmp = !vsmp_prefix.is_empty() && name.starts_with(vsmp_prefix);
        if let (true, Some(d)) = (is_vsmp, def) {
            if active.is_empty() {
                cx.at(
                    d.name.span(),
                    format!("vSMP group `{name}` has no active member: it needs a primary board"),
                );
            }
            if c.vsmp_loader.is_none() && !active.is_empty() {
                cx.at(
                    d.name.span(),
                    format!("vSMP group `{name}` needs `vsmp_loader` in [cluster]"),
                );
            }
        }
        groups.push(Group {
            name: name.clone(),
            image: def
                .and_then(|d| d.image.as_ref().map(|i| i.get_ref().clone()))
                .unwrap_or_else(|| name.clone()),
            diskless: def.map(|d| d.diskless).unwrap_or(false),
            active,
            members,
            args: def.map(|d| text_of(&d.args)).unwrap_or_default(),
            image_id: def.and_then(|d| d.image_id.as_ref().map(|i| i.get_ref().clone())),
            root: def.and_then(|d| d.root.as_ref().map(|r| *r.get_ref())),
        });
    }
    groups
}

/// Group `gi`'s active members: those its `active` list names (each a node whose active
/// group this is, listed once), in that order, then the other nodes active in it
/// (`active_here`, in node order). `listed` is shared by all groups: a node can be listed
/// only in its own active group, so no group sees another's marks.
#[allow(clippy::too_many_arguments)]
fn active_members(
    cx: &mut Ctx,
    gi: usize,
    name: &str,
    def: Option<&GroupDef>,
    names: &Names,
    nodes: &[Node],
    active_here: &[usize],
    listed: &mut [bool],
) -> Vec<usize> {
    let mut active = vec![];
    for a in def.map(|d| d.active.as_slice()).unwrap_or(&[]) {
        crate::work::tick(1);
        match names.node.get(a.get_ref().as_str()) {
            None => cx.at(
                a.span(),
                format!(
                    "active member `{}` of group `{name}` is not a node",
                    a.get_ref()
                ),
            ),
            Some(&n) if nodes[n].active_group != gi => cx.at(
                a.span(),
                format!(
                    "`{}` is listed active in group `{name}` but its active group is `{}`",
                    a.get_ref(),
                    names.group_defs[nodes[n].active_group].0
                ),
            ),
            Some(&n) if listed[n] => cx.at(
                a.span(),
                format!("`{}` is listed twice in group `{name}`", a.get_ref()),
            ),
            Some(&n) => {
                listed[n] = true;
                active.push(n);
            }
        }
    }
    crate::work::tick(active_here.len());
    active.extend(active_here.iter().copied().filter(|&n| !listed[n]));
    active
}
