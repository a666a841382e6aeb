//! initrd-agent: PID 1 of the netboot ramdisk, or an ordinary command for tests and
//! rescue (`initrd-agent clone --server URL --group G --target DEV`). This file parses
//! and dispatches; everything else is the `initrd_agent` library.

use clap::{Parser, Subcommand};
use initrd_agent::command::{CloneArgs, DisklessArgs};
use std::process::ExitCode;

/// Netboot agent: clones a logical-group image onto this node's disk.
///
/// As PID 1 of the boot ramdisk it reads the kernel command line (netboot.server,
/// netboot.group, BOOTIF, ip=, …) and the subnet's etc/bootopts, brings up the network,
/// picks the target disk, clones, reports to the server, and reboots.
#[derive(Parser)]
#[command(name = "initrd-agent", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Clone the group's image from SERVER onto a disk (the PID 1 flow, minus booting).
    Clone(CloneArgs),
    /// Serve the boot tree's kernel and initrd to a rack from RAM (fetched once, checked).
    BootFiles(initrd_agent::rackboot::BootFilesArgs),
    /// Fetch the group's root into a file and mount it, as a diskless node does before
    /// switching to it (tests, rescue).
    Diskless(DisklessArgs),
    /// Capture a disk and upload it as the group's next image version (the backup mode).
    Backup(initrd_agent::backup::BackupArgs),
}

fn main() -> ExitCode {
    imgtool::disk::keep_freed_memory();
    if initrd_agent::pid1::is_pid1() {
        initrd_agent::pid1::run();
    }
    let result = match Cli::parse().cmd {
        Cmd::Clone(args) => initrd_agent::command::clone(args),
        Cmd::BootFiles(args) => initrd_agent::rackboot::boot_files(args),
        Cmd::Diskless(args) => initrd_agent::command::diskless(args),
        Cmd::Backup(args) => initrd_agent::backup::command(args).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("initrd-agent: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
