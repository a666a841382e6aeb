//! What the `pxe-builder` command prints for each subcommand: pure functions from the
//! library's summaries to text, so tests reach them without writing a tree. The `--json`
//! documents are the summaries' own serialisation (and [`check_json`]). The output is an
//! interface (scripts and tests read it): change it only on purpose.

use crate::model::{Cluster, AUTO_SERIAL_MAX_NODES};
use crate::plan::GroupShape;
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::Path;

/// Collects the lines a `write` step produces (writing to a `String` cannot fail).
fn text(write: impl FnOnce(&mut String) -> std::fmt::Result) -> String {
    let mut out = String::new();
    let _ = write(&mut out);
    out
}

/// `pxe-builder check`: one line, then a line per cloning group: the distribution
/// shape chosen (and why, for `auto`), its depth and its longest chain.
pub fn check(cluster: &Path, c: &Cluster, shapes: &[GroupShape]) -> String {
    text(|o| {
        writeln!(
            o,
            "{}: ok ({} nodes, {} entities, {} groups)",
            cluster.display(),
            c.nodes.len(),
            c.entities.len(),
            c.groups.len()
        )?;
        for s in shapes {
            let why = match (s.configured, s.shape) {
                ("auto", "serial") => format!(
                    " (auto: 1 full-rate stream from the primary, {} nodes <= {AUTO_SERIAL_MAX_NODES})",
                    s.nodes
                ),
                ("auto", _) if s.streams > 1 => format!(
                    " (auto: {} full-rate streams from the primary)",
                    s.streams
                ),
                ("auto", _) => format!(" (auto: {} nodes > {AUTO_SERIAL_MAX_NODES})", s.nodes),
                _ => String::new(),
            };
            let tree = match (s.roots, s.fanout) {
                (Some(r), Some(f)) => format!(", {r} from the primary, {f} under each rack"),
                _ => String::new(),
            };
            writeln!(
                o,
                "  group {}: {}{why}, {} nodes in {} racks{tree}: depth {}, longest chain {}",
                s.group, s.shape, s.nodes, s.racks, s.depth, s.max_chain
            )?;
        }
        Ok(())
    })
}

/// `pxe-builder check --json` (one line, not pretty-printed).
pub fn check_json(c: &Cluster, shapes: &[GroupShape]) -> Value {
    json!({"ok": true, "nodes": c.nodes.len(), "entities": c.entities.len(), "groups": c.groups.len(), "plan": shapes})
}

/// `pxe-builder build`: the count, then each hex-IP file and its entity.
pub fn build(s: &crate::tree::Summary) -> String {
    text(|o| {
        writeln!(
            o,
            "wrote {} files for {} nodes in {} entities to {}",
            s.files, s.nodes, s.entities, s.out
        )?;
        for (h, e) in &s.hex_files {
            writeln!(o, "  pxelinux.cfg/{h:<8}  etc/bootopts/{h:<8}  entity {e}")?;
        }
        Ok(())
    })
}

/// `pxe-builder initrd`: size, modules, and which image-signing keys the nodes trust.
pub fn initrd(out: &Path, summary: &crate::initrd::Summary) -> String {
    text(|o| {
        writeln!(
            o,
            "{}: {:.1} MB ({:.1} MB uncompressed), modules: {}",
            out.display(),
            summary.bytes as f64 / 1e6,
            summary.uncompressed as f64 / 1e6,
            summary.modules.join(" ")
        )?;
        if !summary.builtin.is_empty() {
            writeln!(o, "built into the kernel: {}", summary.builtin.join(" "))?;
        }
        if !summary.skipped.is_empty() {
            writeln!(
                o,
                "not in this kernel (skipped): {}",
                summary.skipped.join(" ")
            )?;
        }
        let keys: Vec<&str> = summary
            .files
            .iter()
            .filter_map(|f| {
                f.rsplit('/')
                    .next()
                    .filter(|_| f.starts_with("etc/netboot/trusted/"))
            })
            .collect();
        if keys.is_empty() {
            writeln!(
                o,
                "no trusted key: nodes check image integrity, not who made the image"
            )
        } else {
            writeln!(o, "trusted image-signing keys: {}", keys.join(" "))
        }
    })
}

/// `pxe-builder lookup`: every file pxelinux tries, the one it loads, what that boots.
pub fn lookup(l: &crate::lookup::Lookup) -> String {
    text(|o| {
        for (f, exists) in &l.tried {
            let mark = if Some(f) == l.chosen.as_ref() {
                "=> loads"
            } else if *exists {
                "   exists"
            } else {
                "   -"
            };
            writeln!(o, "{mark:<9} {f}")?;
        }
        match &l.chosen {
            None => writeln!(o, "no file matches: pxelinux will fail to boot this client")?,
            Some(_) => {
                writeln!(o, "kernel:   {}", l.kernel.as_deref().unwrap_or("?"))?;
                writeln!(o, "initrd:   {}", l.initrd.as_deref().unwrap_or("-"))?;
                writeln!(o, "append:   {}", l.append.as_deref().unwrap_or(""))?;
            }
        }
        if let Some(b) = &l.bootopts {
            writeln!(o, "bootopts: {b}")?;
        }
        Ok(())
    })
}
