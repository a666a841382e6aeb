//! initrd-agent as a library: PID 1 of the netboot ramdisk, and `initrd-agent clone`.
//! The binary (`main.rs`) only parses arguments and calls [`pid1::run`] or
//! [`command::clone`]; everything else is here, reachable by unit tests and fuzz targets.
//!
//! Brief overview, from the top:
//! - [`pid1`]: life as PID 1 (mounts, modules, reaping, reboot), around [`boot`]: the boot
//!   flow — [`net`] brings up the interface with the address, mask and gateway [`ipconf`]
//!   decides, [`resolve`] completes the [`config`] (kernel command line + the subnet's
//!   bootopts), [`target`] picks the disk, [`route`] reads this
//!   node's place in the clone [`plan`], and [`clone`] does the work.
//! - [`diskless`]: `netboot.mode=diskless`/`vsmp-diskless`: the image's root into RAM
//!   (the same route, trust and relay as [`clone`]), mounted, and PID 1 switched to it.
//! - [`command`]: `initrd-agent clone`, the same [`clone`] without booting, and
//!   `initrd-agent diskless`, the diskless steps up to the mounted root;
//!   [`rackboot`]: `initrd-agent boot-files`, a rack's boot files served without cloning.
//! - [`backup`]: `netboot.mode=backup` and `initrd-agent backup`: the disk captured and
//!   streamed to the server as the group's next image version (imgtool's upload).
//! - [`clone`]: load the image, check trust, restore (imgtool), grow, report; with a
//!   [`relay`] when the route makes this node one (its cache and completion logic are
//!   plain types, its HTTP face is imgtool's server).
//! - [`report`]: console lines and status posts; [`sys`]: the kernel calls no crate wraps.
//!
//! No module imports one that imports it back: the flow goes downwards in this list.

pub mod backup;
pub mod boot;
pub mod clone;
pub mod command;
pub mod config;
pub mod diskless;
pub mod ipconf;
pub mod net;
pub mod pid1;
pub mod plan;
pub mod rackboot;
pub mod relay;
pub mod report;
pub mod resolve;
pub mod route;
pub mod sys;
pub mod target;

/// Fuzz target bodies (see docs/FUZZING.md): called by `fuzz/fuzz_targets/agent_config.rs`,
/// `fuzz/fuzz_targets/clone_plan.rs` and `fuzz/fuzz_targets/boot_files.rs`, and replayed on every kept input by
/// `tests/fuzz_regressions.rs`.
pub mod fuzzing {
    use crate::config::Config;
    use netboot_proto::bootopts::BootOpts;

    /// Inputs longer than this are cut (a kernel command line is at most a few KiB, a
    /// bootopts file a few hundred lines): the one bound every target uses.
    pub use imgtool::fuzzing::MAX_INPUT;

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
            let _ = c.delta();
        }
        let _ = crate::config::normalize_mac(&cmdline);
    }

    /// `node NUL plan`: this node's route in the plan read as `clone-plan.json` and as
    /// its node plan (`etc/plan/<node>.json`), as the agent reads them after fetching
    /// them. Returns whether either gave a route, for the replay test.
    pub fn clone_plan(data: &[u8]) -> bool {
        let data = &data[..data.len().min(MAX_INPUT)];
        let (node, plan) = match data.iter().position(|b| *b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (&b"n01"[..], data),
        };
        let node = String::from_utf8_lossy(node);
        let plan = String::from_utf8_lossy(plan);
        let own = crate::plan::route_from_node_plan(plan.as_bytes(), &node, "mem:plan.json");
        matches!(
            crate::plan::route_from_plan(&plan, &node, "mem:clone-plan.json"),
            Ok(Some(_))
        ) || own.is_ok()
    }

    /// `etc/bootfiles.json` as a rack's secondary reads it before fetching anything
    /// (`netboot_proto::bootfiles::BootFiles::from_json`). Returns whether it was
    /// accepted, for the replay test; an accepted manifest is within the RAM bounds.
    pub fn boot_files(data: &[u8]) -> bool {
        use netboot_proto::bootfiles::{BootFiles, MAX_TOTAL_BYTES};
        let data = &data[..data.len().min(MAX_INPUT)];
        match BootFiles::from_json(data) {
            Ok(b) => {
                let total: u64 = b.files.iter().map(|f| f.size).sum();
                assert!(total <= MAX_TOTAL_BYTES && b.files.len() <= 3);
                true
            }
            Err(_) => false,
        }
    }
}
