//! What the `imgtool` command prints: each subcommand's text (tables, the restore plan,
//! the status tree) and the JSON documents that are not a report type's own
//! serialisation. Pure functions from reports to text or JSON values, so tests reach
//! them without a disk; the binary only prints what they return. The output is an
//! interface (scripts parse `--json`, people and tests read the text): change it only
//! on purpose.

use crate::board::NodeStatus;
use crate::diff::{DiffReport, Placement};
use crate::manifest::{Image, Manifest};
use crate::restore::RestoreReport;
use crate::upload::UploadReport;
use crate::verify::VerifyReport;
use crate::versions::Group;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

/// Collects the lines a `write` step produces (writing to a `String` cannot fail).
fn text(write: impl FnOnce(&mut String) -> std::fmt::Result) -> String {
    let mut out = String::new();
    let _ = write(&mut out);
    out
}

/// `n` bytes for people: `512 B`, `1.5 GiB`.
pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `imgtool capture`: a line per region, then the image id.
pub fn capture(m: &Manifest, image_dir: &Path) -> String {
    regions(m) + &format!("image {} written to {}\n", m.image_id, image_dir.display())
}

/// `imgtool capture DISK URL`: a line per region, then what was published.
pub fn upload(rep: &UploadReport) -> String {
    regions(&rep.manifest)
        + &format!(
            "image {} uploaded ({} sent) and published as {} ({})\n",
            rep.image_id,
            human(rep.bytes_sent),
            rep.version,
            rep.url
        )
}

/// `imgtool capture DISK URL --json`.
pub fn upload_json(rep: &UploadReport) -> Value {
    let mut v = capture_json(&rep.manifest, Path::new(""));
    if let Some(o) = v.as_object_mut() {
        o.remove("image_dir");
        o.insert("version".into(), json!(rep.version));
        o.insert("url".into(), json!(rep.url));
        o.insert("bytes_sent".into(), json!(rep.bytes_sent));
    }
    v
}

/// `imgtool images`: per group its versions, newest first, the current one marked `*`.
pub fn images(groups: &[Group]) -> String {
    text(|o| {
        if groups.is_empty() {
            writeln!(o, "no images")?;
        }
        for g in groups {
            let note = if g.unversioned {
                " (a plain directory, no versions yet)"
            } else if g.current.is_none() {
                " (no current version)"
            } else {
                ""
            };
            writeln!(o, "{}{note}", g.group)?;
            for v in &g.versions {
                writeln!(
                    o,
                    "  {} {:<28} {}  {}  {:>10}",
                    if v.current { "*" } else { " " },
                    v.name,
                    &v.image_id,
                    utc(v.published),
                    human(v.bytes)
                )?;
            }
        }
        Ok(())
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (the civil calendar, no time zone data).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The region lines of `capture` and `upload`.
fn regions(m: &Manifest) -> String {
    text(|o| {
        for r in &m.regions {
            writeln!(
                o,
                "{:<5} {:<8} {:>10} used -> {:>10} ({} chunks)",
                r.name,
                r.filesystem,
                human(r.used_bytes),
                human(r.compressed_bytes()),
                r.chunks.len()
            )?;
        }
        Ok(())
    })
}

/// `imgtool capture --json`.
pub fn capture_json(m: &Manifest, image_dir: &Path) -> Value {
    json!({
        "image_dir": image_dir, "image_id": m.image_id,
        "regions": m.regions.iter().map(|r| json!({
            "name": r.name, "filesystem": r.filesystem, "uuid": r.uuid, "label": r.label,
            "used_bytes": r.used_bytes, "compressed_bytes": r.compressed_bytes(), "chunks": r.chunks.len()
        })).collect::<Vec<_>>()
    })
}

/// The plan part of `restore` and `export`: what happens to the table, the partitions,
/// the regions.
pub fn restore_plan(report: &RestoreReport) -> String {
    let plan = &report.plan;
    text(|o| {
        if plan.keep_table {
            writeln!(
                o,
                "table: kept (the disk's {} table equals the image's)",
                plan.layout.table
            )?;
        } else {
            writeln!(o, "table: rewritten as {} because:", plan.layout.table)?;
            for r in &plan.reasons {
                writeln!(o, "  - {r}")?;
            }
        }
        if let Some(beyond) = plan.mbr_capped {
            writeln!(
                o,
                "  MBR reaches 2^32 sectors: the grow partition is capped there, {} at the end of the disk unused",
                human(beyond)
            )?;
        }
        let ss = plan.layout.sector_size as u64;
        for p in &plan.layout.partitions {
            writeln!(
                o,
                "  {:>3}  start {:>10}  size {:>10}  {:>10}  type {}",
                p.number,
                p.start,
                p.size,
                human(p.size * ss),
                p.type_
            )?;
        }
        for r in &report.regions {
            let grown = match r.grown {
                Some((a, b)) => format!(", grown {} -> {}", human(a), human(b)),
                None => String::new(),
            };
            let mut free = String::new();
            let done = if report.dry_run {
                "to clear"
            } else {
                "cleared"
            };
            if r.wiped_bytes > 0 {
                free += &format!(
                    ", old signature areas {done}: {} in {} range(s)",
                    human(r.wiped_bytes),
                    r.wipe.len()
                );
            }
            if r.zeroed_bytes > 0 {
                let done = if report.dry_run { "to zero" } else { "zeroed" };
                free += &format!(", free space {done}: {}", human(r.zeroed_bytes));
            }
            writeln!(
                o,
                "  {:<5} {:<8} {} of data{grown}{free}",
                r.name,
                r.filesystem,
                human(r.bytes)
            )?;
        }
        Ok(())
    })
}

/// Who claims to have signed an image: (key id, whether the line is for this image id).
/// Not checked (`verify --trust KEY.pub` does). No signature file is an empty list.
pub fn signers(img: &Image) -> Result<Vec<(String, bool)>, String> {
    match crate::sign::read_signature_file(img.source.as_ref()) {
        Err(_) => Ok(vec![]),
        Ok(bytes) => crate::sign::Signatures::parse(&bytes, "signature")
            .map(|s| {
                s.lines
                    .into_iter()
                    .map(|l| (l.key_id, l.image_id == img.manifest.image_id))
                    .collect()
            })
            .map_err(|e| e.to_string()),
    }
}

/// `imgtool inspect --json`.
pub fn inspect_json(img: &Image, signers: &Result<Vec<(String, bool)>, String>) -> Value {
    let m = &img.manifest;
    let signatures = match signers {
        Ok(v) => json!(v
            .iter()
            .map(|(k, this)| json!({"key_id": k, "this_image": this}))
            .collect::<Vec<_>>()),
        Err(e) => json!({ "error": e }),
    };
    json!({
        "image_id": m.image_id, "version": m.version, "chunk_size": m.chunk_size, "level": m.level,
        "signatures": signatures,
        "layout": img.layout,
        "regions": m.regions.iter().map(|r| json!({
            "name": r.name, "number": r.number, "filesystem": r.filesystem, "uuid": r.uuid,
            "label": r.label, "size": r.size, "fs_size": r.fs_size, "used_bytes": r.used_bytes,
            "compressed_bytes": r.compressed_bytes(), "chunks": r.chunks.len(), "payload": r.payload
        })).collect::<Vec<_>>()
    })
}

/// `imgtool inspect`: id, signatures, format, the layout's table, the regions' table.
pub fn inspect(img: &Image, signers: &Result<Vec<(String, bool)>, String>) -> String {
    let m = &img.manifest;
    text(|o| {
        writeln!(o, "image      {}", m.image_id)?;
        inspect_signers(o, signers)?;
        writeln!(
            o,
            "format     version {}, chunks up to {}, zstd level {}",
            m.version,
            human(m.chunk_size),
            m.level
        )?;
        inspect_layout(o, img)?;
        inspect_regions(o, m)
    })
}

fn inspect_signers(
    o: &mut String,
    signers: &Result<Vec<(String, bool)>, String>,
) -> std::fmt::Result {
    match signers {
        Ok(v) if v.is_empty() => writeln!(o, "signature  none"),
        Ok(v) => writeln!(
            o,
            "signature  {} (unchecked: `imgtool verify --trust KEY.pub` checks them)",
            v.iter()
                .map(|(k, this)| if *this {
                    format!("key {k}")
                } else {
                    format!("key {k} (for another image id)")
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => writeln!(o, "signature  unreadable: {e}"),
    }
}

fn inspect_layout(o: &mut String, img: &Image) -> std::fmt::Result {
    let l = &img.layout;
    writeln!(
        o,
        "layout     {} table, {}-byte sectors, disk {} ({} bytes), grow partition {}",
        l.table,
        l.sector_size,
        human(l.disk_size),
        l.disk_size,
        l.grow.map(|g| g.to_string()).unwrap_or("-".into())
    )?;
    writeln!(
        o,
        "  #  start        size         bytes      type                                   fs"
    )?;
    for p in &l.partitions {
        writeln!(
            o,
            "{:>3}  {:<12} {:<12} {:>10} {:<38} {}",
            p.number,
            p.start,
            p.size,
            human(p.size * l.sector_size as u64),
            p.type_,
            p.filesystem.as_deref().unwrap_or(if p.is_extended() {
                "(extended)"
            } else {
                "(not captured)"
            })
        )?;
    }
    Ok(())
}

fn inspect_regions(o: &mut String, m: &Manifest) -> std::fmt::Result {
    writeln!(
        o,
        "region fs       uuid                                 label        used       stored     chunks"
    )?;
    for r in &m.regions {
        writeln!(
            o,
            "{:<6} {:<8} {:<36} {:<12} {:>10} {:>10} {:>6}",
            r.name,
            r.filesystem,
            r.uuid.as_deref().unwrap_or("-"),
            r.label.as_deref().unwrap_or("-"),
            human(r.used_bytes),
            human(r.compressed_bytes()),
            r.chunks.len()
        )?;
    }
    Ok(())
}

/// `imgtool verify`: one line.
pub fn verify(rep: &VerifyReport) -> String {
    format!(
        "image {} OK: {} chunks in {} regions, {} raw, {} stored\n",
        rep.image_id,
        rep.chunks,
        rep.regions,
        human(rep.raw_bytes),
        human(rep.compressed_bytes)
    )
}

/// `imgtool diff`: the layout's verdict and why, then the differing chunks per region.
pub fn diff(rep: &DiffReport) -> String {
    text(|o| {
        if rep.layout_equal {
            writeln!(o, "layout: equal")?;
        } else if rep.layout_kept {
            writeln!(
                o,
                "layout: the image's, grown to this disk (restore keeps it)"
            )?;
            for d in &rep.layout_differences {
                writeln!(o, "  - {d}")?;
            }
        } else {
            writeln!(
                o,
                "layout: different (restore would rewrite the table); partitions still where the image puts them are compared"
            )?;
            for d in &rep.layout_differences {
                writeln!(o, "  - {d}")?;
            }
        }
        for r in &rep.regions {
            let how = match r.placement {
                Placement::Equal => "",
                Placement::Grown => " (partition grown on the disk)",
                Placement::NotCompared => {
                    let why = r.reason.as_deref().unwrap_or("not placed as restore would");
                    writeln!(o, "{:<5} not compared: {why}", r.name)?;
                    continue;
                }
            };
            writeln!(
                o,
                "{:<5} {} of {} chunks differ ({}){how}",
                r.name,
                r.differing.len(),
                r.chunks,
                human(r.differing_bytes)
            )?;
        }
        Ok(())
    })
}

/// The status board as the distribution tree: who feeds whom, then each node's progress;
/// failed nodes and re-routings are marked. A node that is its upstream's only downstream
/// is printed under it at the same depth, marked `→` (a 64-node chain stays one column).
/// Nodes no walk from `primary` reaches (a loop of upstreams) follow at depth 1.
pub fn status_tree(board: &BTreeMap<String, NodeStatus>) -> String {
    let mut children: BTreeMap<String, Vec<&NodeStatus>> = BTreeMap::new();
    for n in board.values() {
        let up = if n.last.upstream.is_empty() {
            "primary"
        } else {
            n.last.upstream.as_str()
        };
        let up = if up != "primary" && !board.contains_key(up) {
            "primary"
        } else {
            up
        };
        children.entry(up.to_string()).or_default().push(n);
    }
    let mut out = String::from("primary\n");
    let mut seen = BTreeSet::new();
    walk("primary", 1, &children, &mut seen, &mut out);
    for n in board.values() {
        if !seen.contains(&n.node) {
            out.push_str(&status_line(n, 1, false));
        }
    }
    out
}

/// The nodes `name` feeds, depth first.
fn walk(
    name: &str,
    depth: usize,
    children: &BTreeMap<String, Vec<&NodeStatus>>,
    seen: &mut BTreeSet<String>,
    out: &mut String,
) {
    let kids = children.get(name).map(|v| v.as_slice()).unwrap_or(&[]);
    // An only child continues its upstream's column.
    let fed = kids.len() == 1 && name != "primary";
    let at = if fed { depth - 1 } else { depth };
    for n in kids {
        if seen.insert(n.node.clone()) {
            out.push_str(&status_line(n, at, fed));
            walk(&n.node, at + 1, children, seen, out);
        }
    }
}

/// One node of the tree: `  → n1 [FAILED restoring 40%] message`.
fn status_line(n: &NodeStatus, depth: usize, fed: bool) -> String {
    let pct = if n.last.total > 0 {
        format!("{:.0}%", 100.0 * n.last.done as f64 / n.last.total as f64)
    } else {
        String::new()
    };
    let mark = match n.last.phase.as_str() {
        "failed" => "FAILED ",
        _ if n.history.iter().any(|h| h.contains("rerouted")) => "rerouted ",
        _ => "",
    };
    format!(
        "{:indent$}{}{} [{}{} {}] {}\n",
        "",
        if fed { "→ " } else { "" },
        n.node,
        mark,
        n.last.phase,
        pct,
        n.last.message,
        indent = depth * 2
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_795_000_000 + 61), "2026-11-18 11:07:41 UTC");
    }
    use super::*;

    /// A board entry as an agent would leave it (built from JSON, the board's own form).
    fn node(name: &str, upstream: &str, phase: &str, done: u64, history: &[&str]) -> NodeStatus {
        serde_json::from_value(json!({
            "node": name, "at": 1.0, "history": history,
            "last": {"phase": phase, "done": done, "total": 4, "message": "m", "upstream": upstream},
        }))
        .unwrap()
    }

    #[test]
    fn the_status_tree_keeps_a_chain_in_one_column_and_marks_failures() {
        let board: BTreeMap<String, NodeStatus> = [
            node("r1n1", "primary", "relaying", 4, &[]),
            node("r1n2", "r1n1", "restoring", 2, &[]),
            node("r1n3", "r1n2", "failed", 1, &[]),
            node("r2n1", "", "done", 4, &["rerouted: upstream x failed"]),
            node("r2n2", "r2n1", "done", 4, &[]),
            node("r2n3", "r2n1", "done", 4, &[]),
        ]
        .into_iter()
        .map(|n| (n.node.clone(), n))
        .collect();
        assert_eq!(
            status_tree(&board),
            "primary\n  r1n1 [relaying 100%] m\n  → r1n2 [restoring 50%] m\n  → r1n3 [FAILED failed 25%] m\n  r2n1 [rerouted done 100%] m\n    r2n2 [done 100%] m\n    r2n3 [done 100%] m\n"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
