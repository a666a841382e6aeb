//! `imgtool diff` of a node cloned onto a larger disk: restore keeps that table (the grow
//! partition spans the disk), so diff must compare the chunks instead of stopping at
//! "layout different" (issue 10, item 6). And when the table is not the one restore
//! would keep (the disk grew again after the clone), the partitions still where restore
//! puts them are compared all the same, each named equal or grown (issue 12, item 4).

mod common;
use common::*;
use std::os::unix::fs::FileExt;

/// What `imgtool diff -q image disk` prints.
fn diff_text(image: &std::path::Path, disk: &std::path::Path) -> String {
    let o = imgtool()
        .args(["diff", "-q"])
        .arg(image)
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn diff_compares_chunks_of_a_clone_on_a_larger_disk() {
    skip_unless_root!("the fixture disk is built through loop devices");
    let Captured {
        dir, image, size, ..
    } = &captured("gpt");
    let node = dir.join("node.img");
    let size = size + (64 << 20);
    std::fs::File::create(&node).unwrap().set_len(size).unwrap();
    run(imgtool().args(["restore", "-q"]).arg(image).arg(&node));
    // One byte of p2's third chunk changes on the node: diff must find exactly that chunk.
    let img = imgtool::manifest::Image::open(image).unwrap();
    let p2 = img.manifest.region("p2").unwrap();
    let at = img.layout.partition(2).unwrap().start * 512 + p2.chunks[2].offset + 100;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&node)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    drop(f);

    let (rep, code) = diff_json(image, &node);
    assert_eq!(rep["layout_equal"], false, "{rep}");
    assert_eq!(rep["layout_kept"], true, "{rep}");
    assert_placements(&rep);
    let regions = rep["regions"].as_array().unwrap();
    let names: Vec<&str> = regions.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["head", "p1", "p2", "p3", "p4"], "{rep}");
    // The partitions that were not grown hold exactly the image's bytes, but for the one
    // changed chunk.
    for r in regions
        .iter()
        .filter(|r| ["p1", "p3"].contains(&r["name"].as_str().unwrap()))
    {
        assert_eq!(r["differing"].as_array().unwrap().len(), 0, "{r}");
    }
    assert_eq!(regions[2]["differing"], serde_json::json!([2]), "{rep}");
    // The grown ext4 differs (resize2fs rewrote its metadata), so diff says "not the same".
    assert_eq!(code, Some(1));
    let text = diff_text(image, &node);
    assert!(text.contains("grown to this disk"), "{text}");
    assert!(text.contains("p2    1 of"), "{text}");
    assert!(text.contains("(partition grown on the disk)"), "{text}");

    // The node's disk grows again (a VM disk enlarged): its table no longer spans the
    // disk, so restore would rewrite it; diff still compares every partition in place.
    let f = std::fs::OpenOptions::new().write(true).open(&node).unwrap();
    f.set_len(size + (32 << 20)).unwrap();
    drop(f);
    let (rep, code) = diff_json(image, &node);
    assert_eq!(rep["layout_kept"], false, "{rep}");
    assert_placements(&rep);
    assert_eq!(
        rep["regions"][2]["differing"],
        serde_json::json!([2]),
        "{rep}"
    );
    assert_eq!(code, Some(1));
    let text = diff_text(image, &node);
    assert!(
        text.contains("layout: different (restore would rewrite"),
        "{text}"
    );
    assert!(text.contains("p2    1 of"), "{text}");
}

/// p1–p3 sit on the node as in the image, p4 (the grow partition) is larger; every
/// region was compared, and the untouched equal partitions hold the image's bytes.
fn assert_placements(rep: &serde_json::Value) {
    let placement: Vec<(&str, &str)> = rep["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["placement"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        placement,
        [
            ("head", "equal"),
            ("p1", "equal"),
            ("p2", "equal"),
            ("p3", "equal"),
            ("p4", "grown")
        ],
        "{rep}"
    );
    for r in &rep["regions"].as_array().unwrap()[..] {
        if ["p1", "p3"].contains(&r["name"].as_str().unwrap()) {
            assert_eq!(r["differing"], serde_json::json!([]), "{r}");
        }
    }
}

/// `imgtool diff --json` of `image` against `node`: the report (its stderr in the panic)
/// and the exit code.
fn diff_json(image: &std::path::Path, node: &std::path::Path) -> (serde_json::Value, Option<i32>) {
    let out = imgtool()
        .args(["diff", "--json", "-q"])
        .arg(image)
        .arg(node)
        .output()
        .unwrap();
    let rep = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (rep, out.status.code())
}
