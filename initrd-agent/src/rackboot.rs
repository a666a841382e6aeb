//! `initrd-agent boot-files`: serve the tree's boot files (kernel, initrd) to a rack
//! without cloning — what an entity's secondary does beside its relay
//! ([`crate::relay::bootfiles`]), as a command: for tests, the boot-storm bench, and a
//! standing rack boot server on any Linux host (the seed's ramdrive TFTP root).

use crate::relay::bootfiles::Boot;
use crate::relay::Relay;
use std::path::Path;
use std::time::Duration;

/// Fetch the boot files once from SERVER (checked against its etc/bootfiles.json) and
/// serve them from RAM at /boot/vmlinuz, /boot/initrd.img, … on LISTEN.
#[derive(clap::Args, Debug)]
pub struct BootFilesArgs {
    /// The primary (image server) URL whose boot tree holds etc/bootfiles.json.
    #[arg(long)]
    pub server: String,
    /// Address to serve on (an entity's secondary uses the plan's relay port).
    #[arg(long, default_value = "0.0.0.0:8180")]
    pub listen: String,
    /// Stop after this many seconds (default: serve until killed).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Runs `initrd-agent boot-files`: an error when the files cannot be fetched or checked.
pub fn boot_files(args: BootFilesArgs) -> anyhow::Result<()> {
    imgtool::source::check_url(&args.server)?;
    // A relay without an image (no image name matches a request): only `/boot/…`.
    let relay = Relay::new("", Path::new("/dev/null"), 0);
    let addr = relay.serve(&args.listen)?;
    eprintln!("boot-files: listening on {addr}");
    let fetch = relay.serve_boot_files(&args.server, Box::new(|l| eprintln!("boot-files: {l}")));
    fetch
        .join()
        .map_err(|_| anyhow::anyhow!("boot-files: the fetch thread panicked"))?;
    if let Boot::Failed(why) = relay.boot_files() {
        anyhow::bail!("fetching the boot files from {}: {why}", args.server);
    }
    match args.seconds {
        Some(s) => std::thread::sleep(Duration::from_secs(s)),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
    Ok(())
}
