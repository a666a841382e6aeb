//! Replays every kept `cluster_toml` fuzz input (fuzz/corpus/cluster_toml/ seeds and
//! fuzz/regressions/cluster_toml/ finds) through the function the fuzz target calls, so
//! each stays a regression test without the fuzzer; and checks the seeds are what they
//! claim (a seed that no longer parses would leave the fuzzer starting from noise).

use std::path::{Path, PathBuf};

fn inputs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut v = vec![];
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join("cluster_toml")) else {
            continue;
        };
        v.extend(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !p.ends_with("README.md")),
        );
    }
    v.sort();
    v
}

#[test]
fn cluster_toml_inputs() {
    let files = inputs();
    assert!(
        files.len() >= 6,
        "only {} inputs: fuzz/corpus/cluster_toml is missing?",
        files.len()
    );
    for p in &files {
        eprintln!("{}", p.display());
        let data = std::fs::read(p).unwrap();
        let accepted = pxe_builder::fuzzing::cluster_toml(&data);
        let name = p.file_name().unwrap().to_string_lossy();
        // The seeds say in their names whether the description is valid.
        if p.parent().unwrap().ends_with("corpus/cluster_toml") {
            let want = name.starts_with("example");
            assert_eq!(accepted, want, "{name}: accepted {accepted}");
        }
    }
}

/// The in-memory parse reports what the file-based one does, line and column included.
#[test]
fn in_memory_parse_reports_like_the_file_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/cluster_toml");
    let text = std::fs::read_to_string(root.join("hostile-newline-in-entity-name")).unwrap();
    let e = pxe_builder::model::parse_in_memory(&text, "cluster.toml")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("cluster.toml:"), "{e}");
    assert!(e.contains("rack1"), "{e}");
}

/// Replays the `plain_toml` inputs, and the `cluster_toml` ones (the same format),
/// through the differential check of the fast TOML path; the generated seeds must take
/// the fast path (a seed it refuses would leave the fuzzer comparing nothing).
#[test]
fn plain_toml_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = inputs();
    for kind in ["corpus", "regressions"] {
        if let Ok(dir) = std::fs::read_dir(root.join(kind).join("plain_toml")) {
            files.extend(dir.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    for p in &files {
        pxe_builder::fuzzing::plain_toml(&std::fs::read(p).unwrap());
    }
    for seed in ["example", "generated-40-nodes", "values"] {
        let text = std::fs::read_to_string(root.join("corpus/plain_toml").join(seed)).unwrap();
        assert!(
            pxe_builder::plain_toml::from_str::<toml::Table>(&text).is_some(),
            "{seed} is plain TOML"
        );
    }
}
