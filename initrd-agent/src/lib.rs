//! The agent's pure parts as a library, so fuzz targets and tests outside the binary can
//! reach them: [`config`] (kernel command line and bootopts), [`plan`] (this node's
//! route in the clone plan). Everything that touches the machine stays in the binary
//! (`main.rs`).

pub mod config;
pub mod plan;

/// Fuzz target bodies (see docs/FUZZING.md): called by `fuzz/fuzz_targets/agent_config.rs`
/// and `fuzz/fuzz_targets/clone_plan.rs`, and replayed on every kept input by
/// `tests/fuzz_regressions.rs`.
pub mod fuzzing {
    use crate::config::Config;
    use netboot_proto::bootopts::BootOpts;

    /// Inputs longer than this are cut (a kernel command line is at most a few KiB, a
    /// bootopts file a few hundred lines).
    pub const MAX_INPUT: usize = 64 << 10;

    /// `cmdline NUL bootopts`: parses the command line, the bootopts file, and merges
    /// them as the agent does at boot.
    pub fn agent_config(data: &[u8]) {
        let data = &data[..data.len().min(MAX_INPUT)];
        let (cmdline, bootopts) = match data.iter().position(|b| *b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        let cmdline = String::from_utf8_lossy(cmdline);
        let bootopts = String::from_utf8_lossy(bootopts);
        let b = BootOpts::parse(&bootopts);
        if let Ok(mut c) = Config::from_cmdline(&cmdline) {
            c.merge_bootopts(&b);
            let _ = c.image_name();
        }
        let _ = crate::config::normalize_mac(&cmdline);
    }

    /// `node NUL clone-plan.json`: this node's route in the plan, as the agent reads it
    /// after fetching the plan. Returns whether a route was found, for the replay test.
    pub fn clone_plan(data: &[u8]) -> bool {
        let data = &data[..data.len().min(MAX_INPUT)];
        let (node, plan) = match data.iter().position(|b| *b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (&b"n01"[..], data),
        };
        let node = String::from_utf8_lossy(node);
        let plan = String::from_utf8_lossy(plan);
        matches!(
            crate::plan::route_from_plan(&plan, &node, "mem:clone-plan.json"),
            Ok(Some(_))
        )
    }
}
