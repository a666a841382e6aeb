//! `initrd-agent clone`: the PID 1 flow minus booting and networking, for tests and
//! rescue. Its options ([`CloneArgs`]) become a [`Route`] (the primary, or the clone
//! plan's route with `--plan`) and a target (a path, or chosen by hints), then
//! [`crate::clone::clone`] runs exactly as at boot. `initrd-agent diskless`
//! ([`DisklessArgs`]) is [`crate::diskless::run`] the same way, on the same route: the
//! options both take (server, group, plan, timers, trust) are one [`SourceArgs`],
//! flattened into each.

use crate::config::Config;
use crate::report::Reporter;
use crate::route::Route;
use anyhow::Context;
use netboot_proto::status::Phase;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the image comes from and how it is fetched: the options `clone` and `diskless`
/// share (flattened into both), which become a [`Route`].
#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// Image server URL (imgtool serve, nginx, …).
    #[arg(long)]
    pub server: String,
    /// Logical group; its image is SERVER/<image or group>/.
    #[arg(long)]
    pub group: String,
    /// Image directory name, when it differs from the group's.
    #[arg(long)]
    pub image: Option<String>,
    /// Name to report under (default: the group).
    #[arg(long)]
    pub node: Option<String>,
    /// Tries per HTTP request before giving up (a dropped transfer resumes at its chunk).
    #[arg(long, default_value_t = 8)]
    pub attempts: u32,
    /// Follow SERVER's plan (the node's plan, else clone-plan.json): pull from this node's
    /// upstream chain, and relay to its downstream nodes when it has any (needs --node).
    #[arg(long, requires = "node")]
    pub plan: bool,
    /// Seconds a read may wait for data from a live upstream (a relay waiting for its own
    /// upstream sends nothing for a while); a dead one is found by TCP keepalive in ~3 s.
    #[arg(long, default_value_t = 20)]
    pub stall: u64,
    /// A relay keeps serving until no request came for this many seconds.
    #[arg(long, default_value_t = 15)]
    pub relay_idle: u64,
    /// Refuse the image unless one of these public keys signed it (a KEY.pub file or a
    /// directory of them; repeatable). As PID 1: the initrd's /etc/netboot/trusted.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Vec<PathBuf>,
    /// Refuse any image whose id is not this one (as netboot.image_id=).
    #[arg(long)]
    pub image_id: Option<String>,
}

impl SourceArgs {
    /// The name to report under: `--node`, else the group.
    fn name(&self) -> String {
        self.node.clone().unwrap_or_else(|| self.group.clone())
    }

    /// The image directory: `--image`, else the group.
    fn image(&self) -> String {
        self.image.clone().unwrap_or_else(|| self.group.clone())
    }

    /// Checks the names as the kernel command line's are checked.
    fn validate(&self) -> anyhow::Result<()> {
        Config {
            node: Some(self.name()),
            image: Some(self.image()),
            image_id: self.image_id.clone(),
            ..Config::default()
        }
        .validate()?;
        Ok(())
    }
}

/// Clone the group's image from SERVER onto a disk (the PID 1 flow, minus booting).
#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Target block device or disk-image file.
    #[arg(long, conflicts_with = "hint")]
    pub target: Option<PathBuf>,
    /// Pick the target by hints instead: serial=…,model=…,wwn=…,path=…,size>=…
    #[arg(long)]
    pub hint: Option<String>,
    /// Seconds within which the nodes power on: an upstream that has not answered yet is
    /// waited for this long plus 5 s before the next one is tried. Default: the plan's
    /// `boot_window_s` with --plan, else 30.
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=netboot_proto::plan::MAX_BOOT_WINDOW_S))]
    pub boot_window: Option<u64>,
    /// Restore every chunk even when the disk's layout equals the image's (as
    /// netboot.delta=0); by default such a disk fetches only the chunks it lacks.
    #[arg(long)]
    pub full: bool,
}

/// Runs `initrd-agent clone`; a failure is also reported to the server's board.
pub fn clone(args: CloneArgs) -> anyhow::Result<()> {
    run(args).context("clone failed")
}

fn run(args: CloneArgs) -> anyhow::Result<()> {
    let src = &args.source;
    let name = src.name();
    let rep = Arc::new(Reporter::new(Some(src.server.clone()), name.clone()));
    let target = match &args.target {
        Some(t) => t.clone(),
        None => {
            let cands = crate::target::list_disks(Path::new("/sys/block"));
            crate::target::select(&cands, args.hint.as_deref())?.path
        }
    };
    let image = src.image();
    src.validate()?;
    let route = route(src, &name, args.boot_window, !args.full)?;
    rep.say(&route.describe());
    crate::clone::clone(&route, &image, &target, &rep).map_err(|e| {
        rep.phase(Phase::Failed, &format!("{e:#}"));
        e
    })?;
    Ok(())
}

/// The route the options give: the plan's (with `--plan`) or the primary's, with the
/// limits and the trust the options set, the boot window (`None`: the plan's or the
/// default) and whether a disk whose layout matches fetches only what it lacks.
fn route(
    args: &SourceArgs,
    name: &str,
    boot_window: Option<u64>,
    delta: bool,
) -> anyhow::Result<Route> {
    let mut route = if args.plan {
        let cfg = Config {
            node: Some(name.to_string()),
            ..Config::default()
        };
        crate::route::plan_route(&cfg, &args.server)?
    } else {
        Route::primary(&args.server, args.attempts)
    };
    route.attempts = args.attempts;
    route.stall = Duration::from_secs(args.stall);
    if let Some(w) = boot_window {
        route.grace = imgtool::source::boot_grace(Duration::from_secs(w));
    }
    route.relay_idle = Duration::from_secs(args.relay_idle);
    route.trusted = imgtool::sign::load_trusted(&args.trust)?;
    if !args.trust.is_empty() && route.trusted.is_empty() {
        anyhow::bail!(
            "--trust: no public key found in {}",
            args.trust[0].display()
        );
    }
    route.image_id = args.image_id.clone();
    route.delta = delta;
    Ok(route)
}

/// Fetch the group's root into a file and mount it, as a diskless node does before it
/// switches to it; then unmount (the file stays in --store).
#[derive(clap::Args, Debug)]
pub struct DisklessArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The image's root partition (else the one the layout or the file systems name).
    #[arg(long)]
    pub root: Option<u32>,
    /// Directory for the root's file `root.img` (a node uses a tmpfs under /run).
    #[arg(long)]
    pub store: PathBuf,
    /// Where to mount the root, read-only, for the check (default: STORE/mnt).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// Leave the root mounted (default: unmounted once checked).
    #[arg(long)]
    pub keep_mounted: bool,
    /// Read MemAvailable from this file instead of /proc/meminfo (tests).
    #[arg(long, default_value = "/proc/meminfo")]
    pub meminfo: PathBuf,
}

/// Runs `initrd-agent diskless`; a failure is also reported to the server's board.
pub fn diskless(args: DisklessArgs) -> anyhow::Result<()> {
    let src = &args.source;
    let name = src.name();
    let rep = Arc::new(Reporter::new(Some(src.server.clone()), name.clone()));
    let image = src.image();
    let run = || -> anyhow::Result<()> {
        src.validate()?;
        // The plan's boot window (or the default); a RAM root has no disk to compare.
        let route = route(src, &name, None, false)?;
        rep.say(&route.describe());
        let opts = crate::diskless::Options {
            root: args.root,
            store: args.store.clone(),
            tmpfs: false,
            mount_at: args.mount.clone().unwrap_or_else(|| args.store.join("mnt")),
            read_only: true,
            meminfo: args.meminfo.clone(),
        };
        let root = crate::diskless::run(&route, &image, &opts, &rep)?;
        rep.say(&format!(
            "root {} ({}) mounted from {} on {}; {} found",
            root.region,
            root.filesystem,
            root.device.display(),
            root.mount_at.display(),
            crate::diskless::INIT
        ));
        if !args.keep_mounted {
            crate::diskless::unmount(&root)?;
        }
        Ok(())
    };
    run()
        .map_err(|e| {
            rep.phase(Phase::Failed, &format!("{e:#}"));
            e
        })
        .context("diskless failed")
}
