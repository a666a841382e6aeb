//! initrd-agent: PID 1 of the netboot ramdisk, or an ordinary command for tests and
//! rescue (`initrd-agent clone --server URL --group G --target DEV`). Both run the same
//! clone flow (`clone.rs`).

mod clone;
use initrd_agent::config;
mod net;
mod pid1;
mod relay;
mod report;
mod target;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::Config;
use report::Reporter;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    Clone {
        /// Image server URL (imgtool serve, nginx, …).
        #[arg(long)]
        server: String,
        /// Logical group; its image is SERVER/<image or group>/.
        #[arg(long)]
        group: String,
        /// Image directory name, when it differs from the group's.
        #[arg(long)]
        image: Option<String>,
        /// Target block device or disk-image file.
        #[arg(long, conflicts_with = "hint")]
        target: Option<PathBuf>,
        /// Pick the target by hints instead: serial=…,model=…,wwn=…,path=…,size>=…
        #[arg(long)]
        hint: Option<String>,
        /// Name to report under (default: the group).
        #[arg(long)]
        node: Option<String>,
        /// Tries per HTTP request before giving up (a dropped transfer resumes at its chunk).
        #[arg(long, default_value_t = 8)]
        attempts: u32,
        /// Follow SERVER/clone-plan.json: pull from this node's upstream chain, and relay to
        /// its downstream nodes when it has any (needs --node).
        #[arg(long, requires = "node")]
        plan: bool,
        /// Seconds a read may stall before an upstream counts as dead.
        #[arg(long, default_value_t = 20)]
        stall: u64,
        /// A relay keeps serving until no request came for this many seconds.
        #[arg(long, default_value_t = 15)]
        relay_idle: u64,
        /// Refuse the image unless one of these public keys signed it (a KEY.pub file or a
        /// directory of them; repeatable). As PID 1: the initrd's /etc/netboot/trusted.
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
        /// Refuse any image whose id is not this one (as netboot.image_id=).
        #[arg(long)]
        image_id: Option<String>,
    },
}

/// Brings up the boot interface (from BOOTIF / netboot.mac, else the first NIC).
pub(crate) fn bring_up_network(cfg: &mut Config, rep: &Reporter) -> anyhow::Result<()> {
    let t = Duration::from_secs(cfg.link_timeout);
    let iface = match &cfg.mac {
        Some(mac) => net::wait_iface(mac, t).map_err(anyhow::Error::msg)?,
        None => {
            std::thread::sleep(Duration::from_secs(2));
            let (i, mac) = net::first_iface().ok_or_else(|| {
                anyhow::anyhow!("no network interface found; is the NIC's driver in the initrd?")
            })?;
            cfg.mac = Some(mac);
            i
        }
    };
    net::up(&iface).map_err(anyhow::Error::msg)?;
    net::wait_link(&iface, t).map_err(anyhow::Error::msg)?;
    let addr = match cfg.address {
        Some(a) => a,
        None => {
            rep.say(&format!(
                "no ip= on the command line: asking DHCP on {iface}"
            ));
            let a = net::dhcp(&iface).map_err(anyhow::Error::msg)?;
            cfg.address = Some(a);
            a
        }
    };
    net::configure(&iface, &addr).map_err(anyhow::Error::msg)?;
    rep.say(&format!(
        "network: {iface} ({}) {}/{} gateway {}",
        cfg.mac.as_deref().unwrap_or("?"),
        addr.ip,
        addr.netmask.map(|m| m.to_string()).unwrap_or("-".into()),
        addr.gateway.map(|g| g.to_string()).unwrap_or("-".into())
    ));
    Ok(())
}

/// Completes the configuration from the subnet's bootopts (longest hex prefix of our
/// address, the rule pxelinux used to pick our boot file).
pub(crate) fn resolve_config(cfg: &mut Config, rep: &Reporter) -> anyhow::Result<()> {
    let server = cfg
        .server
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no netboot.server on the kernel command line: the boot entry must name the image server"))?;
    if let Some(a) = cfg.address {
        let hex = netboot_proto::hex::hex_ip(a.ip);
        for k in (1..=8).rev() {
            let url = format!("{server}/etc/bootopts/{}", &hex[..k]);
            match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
                Ok(r) => {
                    let text = r.into_string().unwrap_or_default();
                    cfg.merge_bootopts(&netboot_proto::bootopts::BootOpts::parse(&text));
                    rep.say(&format!("boot options: {url}"));
                    break;
                }
                Err(ureq::Error::Status(404, _)) => continue,
                Err(e) => {
                    rep.say(&format!(
                        "boot options unavailable ({e}); using the command line only"
                    ));
                    break;
                }
            }
        }
    }
    // Bootopts came over the network: nothing of it is used before it is checked.
    cfg.validate().map_err(anyhow::Error::msg)?;
    rep.say(&format!(
        "node {} entity {} group {} image {} mode {}",
        cfg.node.as_deref().unwrap_or("?"),
        cfg.entity.as_deref().unwrap_or("?"),
        cfg.group.as_deref().unwrap_or("?"),
        cfg.image_name().unwrap_or("?"),
        cfg.mode
    ));
    Ok(())
}

/// This node's route from the clone plan at `server/clone-plan.json`: its upstream chain
/// (nearest first, the primary last) and whether it relays. Without a plan, or when the
/// node is not in it, straight from the primary.
pub(crate) fn plan_route(cfg: &Config, server: &str) -> anyhow::Result<clone::Route> {
    let mut route = clone::Route::primary(server, 8);
    let Some(node) = &cfg.node else {
        return Ok(route);
    };
    let url = format!("{}/clone-plan.json", server.trim_end_matches('/'));
    let text = match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => r
            .into_string()
            .map_err(|e| anyhow::anyhow!("{url}: reading the clone plan: {e}"))?,
        Err(ureq::Error::Status(404, _)) => return Ok(route),
        Err(e) => anyhow::bail!("fetching the clone plan {url}: {e}"),
    };
    let Some(p) =
        initrd_agent::plan::route_from_plan(&text, node, &url).map_err(anyhow::Error::msg)?
    else {
        return Ok(route);
    };
    let mut chain = p.upstreams;
    chain.push(("primary".into(), server.trim_end_matches('/').to_string()));
    route.upstreams = chain;
    route.relay_listen = p.relay_port.map(|port| format!("0.0.0.0:{port}"));
    route.downstream = p.downstream;
    Ok(route)
}

fn main() -> std::process::ExitCode {
    imgtool::disk::keep_freed_memory();
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } == 1 {
        pid1::run();
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Clone {
            server,
            group,
            image,
            target,
            hint,
            node,
            attempts,
            plan,
            stall,
            relay_idle,
            trust,
            image_id,
        } => (|| -> anyhow::Result<()> {
            let name = node.unwrap_or_else(|| group.clone());
            let rep = Arc::new(Reporter::new(Some(server.clone()), name.clone()));
            let target = match target {
                Some(t) => t,
                None => {
                    let cands = target::list_disks(std::path::Path::new("/sys/block"));
                    target::select(&cands, hint.as_deref())
                        .map_err(anyhow::Error::msg)?
                        .path
                }
            };
            let image = image.unwrap_or(group);
            Config {
                node: Some(name.clone()),
                image: Some(image.clone()),
                image_id: image_id.clone(),
                ..Config::default()
            }
            .validate()
            .map_err(anyhow::Error::msg)?;
            let mut route = if plan {
                let cfg = Config {
                    node: Some(name.clone()),
                    ..Config::default()
                };
                plan_route(&cfg, &server)?
            } else {
                clone::Route::primary(&server, attempts)
            };
            route.attempts = attempts;
            route.stall = Duration::from_secs(stall);
            route.relay_idle = Duration::from_secs(relay_idle);
            route.trusted = imgtool::sign::load_trusted(&trust)?;
            if !trust.is_empty() && route.trusted.is_empty() {
                anyhow::bail!("--trust: no public key found in {}", trust[0].display());
            }
            route.image_id = image_id;
            rep.say(&format!(
                "upstreams: {}{}",
                route
                    .upstreams
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> "),
                if route.relay_listen.is_some() {
                    " (relaying)"
                } else {
                    ""
                }
            ));
            clone::clone(&route, &image, &target, &rep).map_err(|e| {
                rep.phase("failed", &format!("{e:#}"));
                e
            })?;
            Ok(())
        })()
        .context("clone failed"),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("initrd-agent: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
