//! Fuzz target body: called by `fuzz/fuzz_targets/cluster_toml.rs` with the fuzzer's
//! input and by `tests/fuzz_regressions.rs` with every kept input (fuzz/corpus/cluster_toml
//! seeds and fuzz/regressions/cluster_toml finds). It must return for every input: an
//! error is fine, a panic, abort or hang is a bug. See docs/FUZZING.md.

/// Inputs longer than this are cut (a cluster.toml of a few hundred nodes is a few tens
/// of KiB): the one bound every target uses, `scripts/fuzz.sh`'s `-max_len`.
pub use imgtool::fuzzing::MAX_INPUT;

/// Parses and validates the input as a cluster.toml (no file-system access: the
/// kernel, initrd and loader are taken as present), and renders every text file of
/// the tree from what it accepts (boot entries, bootopts, DHCP snippets, clone plan),
/// in memory. Returns whether it was accepted, for the replay test.
pub fn cluster_toml(data: &[u8]) -> bool {
    let data = &data[..data.len().min(MAX_INPUT)];
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(cluster) = crate::model::parse_in_memory(text, "cluster.toml") else {
        return false;
    };
    crate::tree::render(&cluster).is_ok()
}
