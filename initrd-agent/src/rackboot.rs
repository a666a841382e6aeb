//! `initrd-agent boot-files`: serve the tree's boot files (kernel, initrd) to a rack
//! without cloning — what an entity's secondary does beside its relay
//! ([`crate::relay::bootfiles`]), as a command: for tests, the boot-storm bench, and a
//! standing rack boot server on any Linux host (the seed's ramdrive TFTP root). With
//! `--peer`, it takes the files from other secondaries first, as a secondary's agent does
//! with its plan's `boot_peers`.

use crate::relay::bootfiles::{Boot, Sources};
use crate::relay::Relay;
use std::path::Path;
use std::time::Duration;

/// Fetch the boot files once — from the first PEER that serves them, else from SERVER —
/// check them against SERVER's etc/bootfiles.json and serve them from RAM at
/// /boot/vmlinuz, /boot/initrd.img, … on LISTEN.
#[derive(clap::Args, Debug)]
pub struct BootFilesArgs {
    /// The primary (image server) URL whose boot tree holds etc/bootfiles.json.
    #[arg(long)]
    pub server: String,
    /// Address to serve on (an entity's secondary uses the plan's relay port).
    #[arg(long, default_value = "0.0.0.0:8180")]
    pub listen: String,
    /// A peer secondary's base URL (`http://ip:port`) to take the boot files from before
    /// SERVER; repeat it, nearest first. One still fetching them (503) is polled for up
    /// to --window seconds; one that refuses, is silent or serves other bytes is skipped.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Seconds to poll a peer that is still fetching (the plan's boot window).
    #[arg(long, default_value_t = netboot_proto::plan::DEFAULT_BOOT_WINDOW_S)]
    pub window: u64,
    /// Stop after this many seconds (default: serve until killed).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Runs `initrd-agent boot-files`: an error when the files cannot be fetched or checked.
pub fn boot_files(args: BootFilesArgs) -> anyhow::Result<()> {
    imgtool::source::check_url(&args.server)?;
    if args.peers.len() > netboot_proto::plan::MAX_BOOT_PEERS {
        anyhow::bail!(
            "{} --peer given; at most {} are tried",
            args.peers.len(),
            netboot_proto::plan::MAX_BOOT_PEERS
        );
    }
    for p in &args.peers {
        imgtool::source::check_url(p)?;
    }
    let src = Sources {
        primary: args.server.clone(),
        // A peer is named by its URL (no node name here).
        peers: args.peers.iter().map(|p| (p.clone(), p.clone())).collect(),
        window: Duration::from_secs(args.window.min(netboot_proto::plan::MAX_BOOT_WINDOW_S)),
    };
    let (relay, addr) = listen(&args.listen)?;
    eprintln!("boot-files: listening on {addr}");
    let fetch = relay.serve_boot_files(src, Box::new(|l| eprintln!("boot-files: {l}")));
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

/// A relay without an image (no image name matches a request: only `/boot/…`) listening
/// on `addr`, telling peers to retry until its boot files are here — set before it
/// listens: a peer that asked in between would be told there are none (`404`) and pass
/// it over for good.
fn listen(addr: &str) -> anyhow::Result<(std::sync::Arc<Relay>, std::net::SocketAddr)> {
    let relay = Relay::new("", Path::new("/dev/null"), 0);
    relay.expect_boot_files();
    let at = relay.serve(addr)?;
    Ok((relay, at))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    #[test]
    fn a_peer_asking_the_moment_it_listens_is_told_to_retry() {
        let (_relay, addr) = super::listen("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /boot/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        assert!(got.to_ascii_lowercase().contains("retry-after: 1"), "{got}");
    }
}
