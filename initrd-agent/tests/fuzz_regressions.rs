//! Replays every kept `agent_config` fuzz input (fuzz/corpus/agent_config/ seeds and
//! fuzz/regressions/agent_config/ crashes) through the function the fuzz target calls.

use std::path::Path;

#[test]
fn agent_config_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join("agent_config")) else {
            continue;
        };
        for p in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.is_file() && !p.ends_with("README.md") {
                eprintln!("{}", p.display());
                initrd_agent::fuzzing::agent_config(&std::fs::read(&p).unwrap());
                n += 1;
            }
        }
    }
    assert!(
        n >= 3,
        "only {n} inputs: fuzz/corpus/agent_config is missing?"
    );
}

/// Replays every kept `clone_plan` input; the seeds say in their names whether the node
/// has a route in the plan (`found-…`) or the plan is refused or does not list it.
#[test]
fn clone_plan_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join("clone_plan")) else {
            continue;
        };
        for p in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            if !p.is_file() || p.ends_with("README.md") {
                continue;
            }
            eprintln!("{}", p.display());
            let found = initrd_agent::fuzzing::clone_plan(&std::fs::read(&p).unwrap());
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if kind == "corpus" {
                assert_eq!(found, name.starts_with("found-"), "{name}");
            }
            n += 1;
        }
    }
    assert!(
        n >= 4,
        "only {n} inputs: fuzz/corpus/clone_plan is missing?"
    );
}

/// Replays every kept `boot_files` input; the seeds say in their names whether the
/// manifest is accepted (`accepted-…`) or refused.
#[test]
fn boot_files_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join("boot_files")) else {
            continue;
        };
        for p in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            if !p.is_file() || p.ends_with("README.md") {
                continue;
            }
            let ok = initrd_agent::fuzzing::boot_files(&std::fs::read(&p).unwrap());
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if kind == "corpus" {
                assert_eq!(ok, name.starts_with("accepted-"), "{name}");
            }
            n += 1;
        }
    }
    assert!(
        n >= 4,
        "only {n} inputs: fuzz/corpus/boot_files is missing?"
    );
}
