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
