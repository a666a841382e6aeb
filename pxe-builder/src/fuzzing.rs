//! Fuzz target bodies: called by `fuzz/fuzz_targets/cluster_toml.rs` and
//! `fuzz/fuzz_targets/plain_toml.rs` with the fuzzer's input and by
//! `tests/fuzz_regressions.rs` with every kept input (fuzz/corpus/<target> seeds and
//! fuzz/regressions/<target> finds). They must return for every input: an error is fine,
//! a panic, abort or hang is a bug. See docs/FUZZING.md.

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

/// The differential check of [`crate::plain_toml`]: whatever it accepts, the `toml` crate
/// must read alike — as a generic table (values, types, tables, arrays) and as the cluster
/// file's types (every field and every span). A refusal by the fast path is always fine
/// (the `toml` crate then reads the text). Panics on a disagreement.
pub fn plain_toml(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(plain) = crate::plain_toml::from_str::<toml::Table>(text) {
        let full = toml::from_str::<toml::Table>(text);
        assert_eq!(
            Some(&plain),
            full.as_ref().ok(),
            "plain_toml read a table the toml crate reads otherwise: {full:?}"
        );
    }
    let (plain, full) = crate::model::read_both(text);
    if plain.is_some() {
        assert_eq!(plain, full, "plain_toml read a cluster file otherwise");
    }
}
