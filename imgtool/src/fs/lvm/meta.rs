//! What a parsed metadata text says about one PV: the VG's extent size, this PV's
//! `pe_start`/`pe_count` (found by its id), and where each LV's extents lie on it
//! ([`PvMap`]). LVs that are plain (visible, `striped` with one stripe — LVM's linear —
//! entirely on this PV, used by no other LV) are mapped extent by extent so their file
//! systems can be probed; every other allocation on this PV (thin pools, RAID and mirror
//! images, snapshots and their origins, caches, stripes > 1, LVs spanning other PVs,
//! types not known here) is listed as a range to scan for non-zero blocks.
//!
//! Hostile metadata is an error: extents past `pe_count`, overlapping allocations, an
//! extent area past the partition, counts that overflow. Counts are bounded
//! ([`MAX_LVS`], [`MAX_SEGMENTS`]).

use super::text::{Section, Span, Value};
use super::LvmError;

/// Logical volumes of one VG read at most (LVM's own limit is ~ 2^16 per VG in practice;
/// real groups have tens).
pub const MAX_LVS: usize = 1 << 16;
/// Segments of all LVs together read at most; each probed LV's segments are searched on
/// every read of it, and each used range is split at their boundaries.
pub const MAX_SEGMENTS: usize = 1 << 16;

fn meta(m: impl Into<String>) -> LvmError {
    LvmError::Meta(m.into())
}

/// One PV of the VG as its metadata describes it.
#[derive(Debug, Clone)]
pub struct Pv {
    /// Its key in `physical_volumes` (`pv0`): what segments name.
    pub key: String,
    /// The id without dashes.
    pub id: String,
    pub dev_size: Option<(i64, Span)>,
    /// In sectors.
    pub pe_start: u64,
    pub pe_count: u64,
    pub pe_count_span: Span,
}

/// The VG: what the probe and pvresize need of it.
#[derive(Debug, Clone)]
pub struct Vg {
    pub name: String,
    pub seqno: (i64, Span),
    /// In sectors.
    pub extent_size: u64,
    pub pvs: Vec<Pv>,
    lvs: Vec<Lv>,
}

#[derive(Debug, Clone)]
struct Lv {
    name: String,
    visible: bool,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone)]
struct Seg {
    start_extent: u64,
    extent_count: u64,
    /// `Some(stripe count)` for `striped`/`linear`.
    striped: Option<u64>,
    /// `(pv key or lv name, extent)` pairs of every array in the segment.
    areas: Vec<(String, u64)>,
    /// Every string value of the segment (names of LVs it uses: origin, pool, images…).
    strings: Vec<String>,
}

fn uint(s: &Section, key: &str, what: &str) -> Result<u64, LvmError> {
    s.int(key)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| meta(format!("{what}: no valid {key}")))
}

impl Vg {
    /// The VG of a metadata text's root: its one section.
    pub fn from_root(root: &Section) -> Result<Vg, LvmError> {
        let mut vgs = root.sections();
        let (name, vg) = vgs.next().ok_or_else(|| meta("no volume group section"))?;
        if vgs.next().is_some() {
            return Err(meta("more than one volume group section"));
        }
        let Some(Value::Int(seqno, span)) = vg.value("seqno") else {
            return Err(meta("no seqno"));
        };
        let extent_size = uint(vg, "extent_size", "the VG")?;
        if extent_size == 0 || extent_size > (1 << 32) {
            return Err(meta("extent_size out of range"));
        }
        let pvs = vg
            .section("physical_volumes")
            .ok_or_else(|| meta("no physical_volumes"))?
            .sections()
            .map(|(k, s)| read_pv(k, s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut lvs = vec![];
        let mut nsegs = 0usize;
        if let Some(l) = vg.section("logical_volumes") {
            for (k, s) in l.sections() {
                if lvs.len() >= MAX_LVS {
                    return Err(meta(format!("more than {MAX_LVS} logical volumes")));
                }
                let lv = read_lv(k, s)?;
                nsegs = nsegs.saturating_add(lv.segs.len());
                if nsegs > MAX_SEGMENTS {
                    return Err(meta(format!("more than {MAX_SEGMENTS} segments")));
                }
                lvs.push(lv);
            }
        }
        Ok(Vg {
            name: name.into(),
            seqno: (*seqno, *span),
            extent_size,
            pvs,
            lvs,
        })
    }

    /// The PV whose id (dashes removed) is `uuid`.
    pub fn pv(&self, uuid: &str) -> Option<&Pv> {
        self.pvs.iter().find(|p| p.id == uuid)
    }
}

fn read_pv(key: &str, s: &Section) -> Result<Pv, LvmError> {
    let what = format!("PV {key}");
    let Some(Value::Int(pe_count, pe_count_span)) = s.value("pe_count") else {
        return Err(meta(format!("{what}: no pe_count")));
    };
    let dev_size = match s.value("dev_size") {
        Some(Value::Int(i, sp)) => Some((*i, *sp)),
        _ => None,
    };
    Ok(Pv {
        key: key.into(),
        id: s.str("id").unwrap_or_default().replace('-', ""),
        dev_size,
        pe_start: uint(s, "pe_start", &what)?,
        pe_count: u64::try_from(*pe_count).map_err(|_| meta(format!("{what}: pe_count < 0")))?,
        pe_count_span: *pe_count_span,
    })
}

fn read_lv(name: &str, s: &Section) -> Result<Lv, LvmError> {
    let visible = match s.value("status") {
        Some(Value::Array(a, _)) => a
            .iter()
            .any(|v| matches!(v, Value::Str(x, _) if x == "VISIBLE")),
        _ => false,
    };
    let mut segs = vec![];
    for (k, seg) in s.sections() {
        if !k.starts_with("segment") {
            continue;
        }
        if segs.len() >= MAX_SEGMENTS {
            return Err(meta(format!(
                "LV {name}: more than {MAX_SEGMENTS} segments"
            )));
        }
        segs.push(read_seg(name, seg)?);
    }
    Ok(Lv {
        name: name.into(),
        visible,
        segs,
    })
}

fn read_seg(lv: &str, s: &Section) -> Result<Seg, LvmError> {
    let what = format!("LV {lv}");
    let ty = s.str("type").unwrap_or_default();
    let striped = matches!(ty, "striped" | "linear");
    let mut areas = vec![];
    let mut strings = vec![];
    for (_, item) in &s.items {
        let super::text::Item::Value(v) = item else {
            continue;
        };
        match v {
            Value::Str(x, _) => strings.push(x.clone()),
            Value::Array(a, _) => {
                for pair in a.chunks(2) {
                    if let [Value::Str(n, _), Value::Int(e, _)] = pair {
                        let e =
                            u64::try_from(*e).map_err(|_| meta(format!("{what}: extent < 0")))?;
                        areas.push((n.clone(), e));
                    }
                }
                strings.extend(a.iter().filter_map(|v| match v {
                    Value::Str(x, _) => Some(x.clone()),
                    _ => None,
                }));
            }
            _ => {}
        }
    }
    let stripes = if striped {
        let n = s.int("stripe_count").unwrap_or(1);
        Some(
            u64::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| meta(format!("{what}: stripe_count < 1")))?,
        )
    } else {
        None
    };
    Ok(Seg {
        start_extent: uint(s, "start_extent", &what)?,
        extent_count: uint(s, "extent_count", &what)?,
        striped: stripes,
        areas,
        strings,
    })
}

/// A plain LV to probe: `(LV byte offset, PV byte offset, length)` per segment, in LV
/// order, contiguous from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvMap {
    pub name: String,
    pub segs: Vec<(u64, u64, u64)>,
}

/// Where things are on this PV, in PV bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvMap {
    pub extent_bytes: u64,
    pub pe_start: u64,
    pub pe_count: u64,
    /// LVs whose file systems are probed.
    pub lvs: Vec<LvMap>,
    /// Other allocated extents: scanned for non-zero blocks. Sorted and disjoint (the
    /// guessed lengths of unknown types may overlap; merged, so each byte of the PV is
    /// scanned once at most, however many segments name it).
    pub scan: Vec<(u64, u64)>,
}

impl PvMap {
    /// The end of the extent area in PV bytes.
    pub fn data_end(&self) -> u64 {
        self.pe_start + self.pe_count * self.extent_bytes
    }
}

/// One allocation of PV extents: `[pe, pe + count)`; `exact` when its length is known
/// (striped), not when it is an upper bound for a type not understood here.
struct Alloc {
    pe: u64,
    count: u64,
    exact: bool,
}

/// Maps `vg`'s LVs onto PV `pv` (which must be one of `vg.pvs`) of a partition of
/// `part_size` bytes.
pub fn map_pv(vg: &Vg, pv: &Pv, part_size: u64) -> Result<PvMap, LvmError> {
    let eb = vg
        .extent_size
        .checked_mul(512)
        .ok_or_else(|| meta("extent size overflows"))?;
    let pe_start = pv
        .pe_start
        .checked_mul(512)
        .ok_or_else(|| meta("pe_start overflows"))?;
    pv.pe_count
        .checked_mul(eb)
        .and_then(|b| b.checked_add(pe_start))
        .filter(|e| *e <= part_size)
        .ok_or_else(|| meta("the PV's extents reach past the partition"))?;
    // LV names other LVs' segments use (an origin, a pool, images, a cow store).
    let used_by_others: std::collections::HashSet<&str> = vg
        .lvs
        .iter()
        .flat_map(|l| {
            l.segs
                .iter()
                .flat_map(|s| s.strings.iter().map(|x| x.as_str()))
        })
        .collect();
    let mut map = PvMap {
        extent_bytes: eb,
        pe_start,
        pe_count: pv.pe_count,
        lvs: vec![],
        scan: vec![],
    };
    let mut exact: Vec<(u64, u64)> = vec![];
    for lv in &vg.lvs {
        let allocs = lv_allocs(lv, &pv.key)?;
        for a in &allocs {
            let past = a.pe.checked_add(a.count).is_none_or(|e| e > pv.pe_count);
            if a.exact && past {
                return Err(meta(format!(
                    "LV {}: extents {}+{} past pe_count {}",
                    lv.name, a.pe, a.count, pv.pe_count
                )));
            }
            if a.exact {
                exact.push((a.pe, a.count));
            }
        }
        if allocs.is_empty() {
            continue;
        }
        let plain = lv.visible && !used_by_others.contains(lv.name.as_str());
        match plain
            .then(|| plain_segments(lv, &pv.key, eb, pe_start))
            .flatten()
        {
            Some(segs) => map.lvs.push(LvMap {
                name: lv.name.clone(),
                segs,
            }),
            None => {
                for a in allocs {
                    let e = a.pe.saturating_add(a.count).min(pv.pe_count);
                    if a.pe < e {
                        map.scan.push((pe_start + a.pe * eb, (e - a.pe) * eb));
                    }
                }
            }
        }
    }
    exact.sort_unstable();
    if exact.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(meta("two allocations share extents of this PV"));
    }
    map.scan = super::merged(map.scan);
    Ok(map)
}

/// The extents of this PV (`key`) an LV's segments allocate.
fn lv_allocs(lv: &Lv, key: &str) -> Result<Vec<Alloc>, LvmError> {
    let mut v = vec![];
    for s in &lv.segs {
        let per_area = match s.striped {
            Some(n) => {
                if s.extent_count % n != 0 {
                    return Err(meta(format!(
                        "LV {}: {} extents in {n} stripes",
                        lv.name, s.extent_count
                    )));
                }
                s.extent_count / n
            }
            // Not understood here: at most the segment's extent count per area (mirror
            // and pvmove areas are that long), clamped to the PV later.
            None => s.extent_count,
        };
        for (n, pe) in &s.areas {
            if n == key {
                v.push(Alloc {
                    pe: *pe,
                    count: per_area,
                    exact: s.striped.is_some(),
                });
            }
        }
    }
    Ok(v)
}

/// The LV's segments in PV bytes when it is linear on this PV alone and its segments
/// cover it from extent 0 without gaps; `None` otherwise.
fn plain_segments(lv: &Lv, key: &str, eb: u64, pe_start: u64) -> Option<Vec<(u64, u64, u64)>> {
    let mut segs: Vec<&Seg> = lv.segs.iter().collect();
    segs.sort_by_key(|s| s.start_extent);
    let mut next = 0u64;
    let mut out = vec![];
    for s in segs {
        if s.striped != Some(1) || s.start_extent != next || s.areas.len() != 1 {
            return None;
        }
        let (n, pe) = &s.areas[0];
        if n != key || s.extent_count == 0 {
            return None;
        }
        out.push((
            s.start_extent.checked_mul(eb)?,
            pe.checked_mul(eb)?.checked_add(pe_start)?,
            s.extent_count.checked_mul(eb)?,
        ));
        next = s.start_extent.checked_add(s.extent_count)?;
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::text::parse;
    use super::*;

    fn vg(lvs: &str) -> Vg {
        let t = format!(
            r#"vg0 {{
seqno = 7
extent_size = 8
physical_volumes {{
pv0 {{ id = "aaaaaa-bbbb" dev_size = 4096 pe_start = 16 pe_count = 100 }}
pv1 {{ id = "other" pe_start = 16 pe_count = 100 }}
}}
logical_volumes {{ {lvs} }}
}}"#
        );
        Vg::from_root(&parse(t.as_bytes()).unwrap()).unwrap()
    }

    fn map(lvs: &str) -> Result<PvMap, LvmError> {
        let v = vg(lvs);
        let pv = v.pv("aaaaaabbbb").unwrap().clone();
        map_pv(&v, &pv, 1 << 30)
    }

    const VIS: &str = r#"status = ["READ", "WRITE", "VISIBLE"]"#;

    #[test]
    fn a_linear_lv_in_two_segments_maps_to_its_extents() {
        let m = map(&format!(
            r#"root {{ {VIS}
segment1 {{ start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 10] }}
segment2 {{ start_extent = 2 extent_count = 3 type = "striped" stripe_count = 1 stripes = ["pv0", 0] }}
}}"#
        ))
        .unwrap();
        let eb = 4096;
        assert_eq!(m.extent_bytes, eb);
        assert_eq!(m.pe_start, 8192);
        assert_eq!(
            m.lvs,
            vec![LvMap {
                name: "root".into(),
                segs: vec![(0, 8192 + 10 * eb, 2 * eb), (2 * eb, 8192, 3 * eb)]
            }]
        );
        assert!(m.scan.is_empty());
    }

    #[test]
    fn what_is_not_plain_is_scanned() {
        let m = map(&format!(
            r#"striped2 {{ {VIS}
segment1 {{ start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripes = ["pv0", 20, "pv1", 0] }} }}
spans {{ {VIS}
segment1 {{ start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 30] }}
segment2 {{ start_extent = 1 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 5] }} }}
hidden {{ status = ["READ"]
segment1 {{ start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 40] }} }}
origin {{ {VIS}
segment1 {{ start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 50] }} }}
snap {{ {VIS}
segment1 {{ start_extent = 0 extent_count = 1 type = "snapshot" origin = "origin" cow_store = "hidden" }} }}
pvmove0 {{ status = ["LOCKED"]
segment1 {{ start_extent = 0 extent_count = 3 type = "mirror" mirror_count = 2 mirrors = ["pv0", 97, "pv1", 0] }} }}
pvmove1 {{ status = ["LOCKED"]
segment1 {{ start_extent = 0 extent_count = 2 type = "mirror" mirrors = ["pv0", 96, "pv0", 98] }} }}
"#
        ))
        .unwrap();
        assert!(m.lvs.is_empty(), "{:?}", m.lvs);
        let eb = 4096;
        let at = |pe: u64| 8192 + pe * eb;
        assert_eq!(
            m.scan,
            vec![
                (at(20), 2 * eb),
                (at(30), eb),
                (at(40), eb),
                (at(50), eb),
                // Unknown types' areas: the segment's length, clamped at pe_count, and
                // overlapping ones merged (96..98, 97..100, 98..100).
                (at(96), 4 * eb)
            ]
        );
    }

    #[test]
    fn hostile_extent_maps_are_errors() {
        let seg = |pe: u64, n: u64| {
            format!(
                r#"segment1 {{ start_extent = 0 extent_count = {n} type = "striped" stripe_count = 1 stripes = ["pv0", {pe}] }}"#
            )
        };
        // Past pe_count, wrapping, overlapping another LV.
        for lvs in [
            format!("a {{ {VIS} {} }}", seg(99, 2)),
            format!("a {{ {VIS} {} }}", seg(u64::MAX / 2, 4)),
            format!("a {{ {VIS} {} }} b {{ {VIS} {} }}", seg(0, 10), seg(9, 1)),
            format!(
                r#"a {{ {VIS} segment1 {{ start_extent = 0 extent_count = 3 type = "striped" stripe_count = 2 stripes = ["pv0", 0, "pv1", 0] }} }}"#
            ),
        ] {
            assert!(map(&lvs).is_err(), "{lvs}");
        }
        // The PV's extents past the partition.
        let v = vg("");
        let pv = v.pv("aaaaaabbbb").unwrap().clone();
        assert!(map_pv(&v, &pv, 8192 + 99 * 4096).is_err());
    }
}
