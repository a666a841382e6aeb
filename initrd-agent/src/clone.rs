//! The clone itself, the same for PID 1 and for `initrd-agent clone`: load the image
//! (manifest, layout) from the server, compare layouts, restore chunk by chunk with
//! per-chunk sha256 (imgtool's restore: table rewritten only when it differs, table and
//! first MiB last), read everything back, grow, report. With trusted keys (or a pinned
//! image id) the image is checked right after it is loaded, before anything is written.
//! A relay (when the route says so) listens from the start, is fed every verified chunk,
//! and holds the grow and the exit for its downstream nodes.
//!
//! [`clone`] is the list of steps; each is a function below.

use crate::relay::bootfiles::{BootDuty, Sources};
use crate::relay::{Relay, Released};
use crate::report::Reporter;
use crate::route::Route;
use anyhow::Context;
use imgtool::disk::Disk;
use imgtool::layout::Plan;
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::restore::{restore, RestoreOptions, RestoreReport};
use imgtool::source::{HttpSource, ImageSource};
use netboot_proto::status::{ChunkCounts, Phase};
use std::path::Path;
use std::sync::Arc;

/// Memory a relay may keep frames in (older ones are re-read from the disk).
pub const RELAY_CACHE_BYTES: usize = 64 << 20;

/// The image's URL at each upstream, and the upstreams' names, in fallback order.
pub(crate) struct Upstreams {
    urls: Vec<String>,
    names: Vec<String>,
}

impl Upstreams {
    pub(crate) fn new(route: &Route, image: &str) -> Upstreams {
        Upstreams {
            urls: route
                .upstreams
                .iter()
                .map(|(_, b)| format!("{b}/{image}"))
                .collect(),
            names: route.upstreams.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// The nearest upstream's URL (for messages).
    pub(crate) fn first_url(&self) -> String {
        self.urls.first().cloned().unwrap_or_default()
    }

    pub(crate) fn first_name(&self) -> &str {
        self.names.first().map(String::as_str).unwrap_or("primary")
    }

    /// When this node pulls from the primary itself: the image URL pinned to the version
    /// the primary serves now (`<image>@<id12>`, `imgtool::versions::pin_url`), so a
    /// version published while this node clones changes no file under it. A server
    /// without versions (a plain directory, nginx) or a failed read leaves the URL as it
    /// is; the image load that follows reports and retries the server's errors. A relay
    /// serves the version it pinned for itself, so relayed nodes are left alone.
    fn pinned(mut self, rep: &Reporter) -> Upstreams {
        if self.names.len() == 1 && self.first_name() == "primary" {
            if let Some(u) = self.urls.first_mut() {
                match imgtool::versions::pin_url(u) {
                    Ok(p) if p != *u => {
                        rep.say(&format!("image pinned to the version served now: {p}"));
                        *u = p;
                    }
                    _ => {}
                }
            }
        }
        self
    }
}

/// Clones `image` onto `target` along `route`.
pub fn clone(
    route: &Route,
    image: &str,
    target: &Path,
    rep: &Arc<Reporter>,
) -> anyhow::Result<RestoreReport> {
    // A relay listens from the start, so downstream nodes that boot at the same time find
    // it; their requests wait until it has the image. Before this node's first request
    // for the image anywhere (the pin reads the manifest): a node that fetched from an
    // upstream is listening, which "have you seen U?" relies on (netboot_proto::seen).
    let relay = start_relay(route, image, target, rep)?;
    let up = Upstreams::new(route, image).pinned(rep);
    let url = up.first_url();
    rep.set_image(image, up.first_name());
    rep.phase(Phase::Layout, &format!("reading image {url}"));
    let http = open_source(route, &up, rep)?;
    let source: Arc<dyn ImageSource> = http.clone();
    if let Some(relay) = &relay {
        // A frame its disk cannot give back (a skipped chunk changed since) comes from here.
        relay.set_source(source.clone());
    }
    let img = load_image(route, source, relay.as_ref(), &url, rep)?;
    let disk = Disk::open_rw_direct(target).context("opening target disk")?;
    let plan = plan_target(&img, &disk, target, rep)?;
    if let Some(relay) = &relay {
        give_relay_bases(relay, &img, &plan);
    }
    let opts = restore_options(route, relay.as_ref(), &http, &up, rep);
    let progress = {
        let rep = rep.clone();
        Progress::callback(Arc::new(move |what, done, total| {
            rep.progress(what, done, total)
        }))
    };
    let report = restore(&img, &disk, &opts, &progress)
        .with_context(|| format!("restoring {url} onto {}", target.display()))?;
    say_counts(&img, &report, rep);
    say_grown(&report, rep);
    // The relay held (and said why) before growing, in `restore_options`'s hook. It holds
    // again before this node reports done and reboots: a downstream node that came or
    // retried while the file systems grew (minutes for a large e2fsck) is served to the
    // end rather than cut off. Usually this returns at once; only a real wait is said.
    if let Some(relay) = &relay {
        let start = std::time::Instant::now();
        let why = hold_relay(relay, route);
        if start.elapsed() >= std::time::Duration::from_millis(100) {
            rep.say(&format!(
                "after growing, {}",
                released(why, route.downstream, route.relay_idle)
            ));
        }
        let (disk, upstream) = relay.remade_frames();
        rep.say(&format!(
            "relay served {} bytes ({disk} frames made from this disk, {upstream} fetched again from upstream)",
            relay.served_bytes()
        ));
    }
    rep.phase(
        Phase::Done,
        &format!(
            "image {} on {} verified ({} payload bytes fetched)",
            &img.id()[..12],
            target.display(),
            img.source.bytes_fetched()
        ),
    );
    Ok(report)
}

/// The relay, listening, when the route makes this node one; an entity's secondary also
/// fetches (in the background: the manifest, then the files) and serves its rack's boot
/// files from the start.
pub(crate) fn start_relay(
    route: &Route,
    image: &str,
    target: &Path,
    rep: &Arc<Reporter>,
) -> anyhow::Result<Option<Arc<Relay>>> {
    let Some(relay) = listen_relay(route, image, target, rep)? else {
        return Ok(None);
    };
    if let Some(src) = boot_sources(route) {
        let rep = rep.clone();
        relay.serve_boot_files(src, Box::new(move |line| rep.say(line)));
    }
    Ok(Some(relay))
}

/// The frame cache of this node's relay: [`RELAY_CACHE_BYTES`] when the plan gives it
/// downstream nodes, none when it listens only for its rack's boot files (an entity's
/// secondary alone in its rack: nobody pulls the image from it).
pub(crate) fn relay_cache_bytes(route: &Route) -> usize {
    if route.downstream > 0 {
        RELAY_CACHE_BYTES
    } else {
        0
    }
}

/// The relay, listening, when the route makes this node one (it has downstream nodes,
/// or it is its entity's secondary); for an entity's secondary, its boot files' duty
/// with their manifest read from the primary now (`None`: it serves none, said), the
/// files not fetched yet ([`BootDuty::start`]): a diskless node counts them first.
pub(crate) fn open_relay(
    route: &Route,
    image: &str,
    target: &Path,
    rep: &Arc<Reporter>,
) -> anyhow::Result<Option<(Arc<Relay>, Option<BootDuty>)>> {
    let Some(relay) = listen_relay(route, image, target, rep)? else {
        return Ok(None);
    };
    let duty = boot_sources(route).and_then(|src| relay.prepare_boot_files(src, &|l| rep.say(l)));
    Ok(Some((relay, duty)))
}

/// The relay listening on the route's address, its frame cache sized by
/// [`relay_cache_bytes`]; `None` when the route makes this node none.
fn listen_relay(
    route: &Route,
    image: &str,
    target: &Path,
    rep: &Reporter,
) -> anyhow::Result<Option<Arc<Relay>>> {
    let Some(listen) = &route.relay_listen else {
        return Ok(None);
    };
    let relay = Relay::new(image, target, relay_cache_bytes(route));
    if boot_sources(route).is_some() {
        relay.expect_boot_files();
    }
    let addr = match relay.serve(listen) {
        Ok(addr) => addr,
        // Nobody pulls the image from it: serving boot files is a help its rack can do
        // without (they boot from the primary), not a reason to fail the node.
        Err(e) if route.downstream == 0 => {
            rep.say(&format!(
                "not serving boot files (the rack boots from the primary): cannot listen on {listen}: {e:#}"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if route.downstream > 0 {
        rep.say(&format!(
            "relaying image {image} to downstream nodes on {addr}"
        ));
    } else {
        rep.say(&format!(
            "listening on {addr} for the rack's boot files (no downstream node in the plan: no frame cache)"
        ));
    }
    Ok(Some(relay))
}

/// Where an entity's secondary takes its rack's boot files from: its peer secondaries,
/// then the primary (the route's last upstream); they are served for as long as the
/// relay lives (docs/BOOT.md). `None` for any other node.
fn boot_sources(route: &Route) -> Option<Sources> {
    match (route.boot_files, route.upstreams.last()) {
        (true, Some((_, primary))) => Some(Sources {
            primary: primary.clone(),
            peers: route.boot_peers.clone(),
            window: route.grace,
        }),
        _ => None,
    }
}

/// The image source over the upstream chain; a move up the chain is reported
/// (`rerouted`) with the upstreams' names.
pub(crate) fn open_source(
    route: &Route,
    up: &Upstreams,
    rep: &Arc<Reporter>,
) -> anyhow::Result<Arc<HttpSource>> {
    for u in &up.urls {
        imgtool::source::check_url(u)?;
    }
    let mut source = HttpSource::chain(up.urls.clone(), route.stall);
    source.attempts = route.attempts;
    source.grace = route.grace;
    let (rep, urls, names) = (rep.clone(), up.urls.clone(), up.names.clone());
    source.on_switch(Box::new(move |from, to, why| {
        let name = |u: &str| {
            urls.iter()
                .position(|x| x == u)
                .and_then(|i| names.get(i).cloned())
                .unwrap_or_else(|| u.to_string())
        };
        rep.set_upstream(&name(to));
        rep.phase(
            Phase::Rerouted,
            &format!(
                "upstream {} failed ({why}); now pulling from {}",
                name(from),
                name(to)
            ),
        );
    }));
    Ok(Arc::new(source))
}

/// Fetches and parses the image, passing its files on to the relay as soon as they are
/// here, and checks it against the pin and the trusted keys.
pub(crate) fn load_image(
    route: &Route,
    source: Arc<dyn ImageSource>,
    relay: Option<&Arc<Relay>>,
    url: &str,
    rep: &Reporter,
) -> anyhow::Result<Image> {
    let files = Image::fetch_files(source.as_ref())
        .map(Arc::new)
        .with_context(|| format!("loading image {url}"))?;
    // A node that checks signatures reads the image's signature file, and so does every
    // relay, whether it checks or not: its downstream nodes may (a missing file does not
    // move the source up its chain, see `ImageSource::read_optional`).
    let signature = (!route.trusted.is_empty() || relay.is_some())
        .then(|| imgtool::sign::read_signature_file(source.as_ref()));
    if let Some(relay) = relay {
        // Passed on as fetched: downstream nodes check it themselves.
        relay.set_signature(signature.as_ref().and_then(|s| s.as_ref().ok()).cloned());
        relay.set_files(files.clone());
    }
    let signature = signature.filter(|_| !route.trusted.is_empty());
    let img = Image::from_files(source, &files).with_context(|| format!("loading image {url}"))?;
    check_trust(route, &img, signature, rep)?;
    // Downstream nodes get manifest and layout at once: each step this node takes before
    // would add to the lag of every node below it in the chain.
    if let Some(relay) = relay {
        relay.set_image(&img);
    }
    Ok(img)
}

/// The image must be the pinned one and signed by a trusted key, when the route says so;
/// otherwise the clone stops here, before the target is even opened.
fn check_trust(
    route: &Route,
    img: &Image,
    signature: Option<Result<Vec<u8>, String>>,
    rep: &Reporter,
) -> anyhow::Result<()> {
    if let Some(pin) = &route.image_id {
        imgtool::sign::check_pin(img, pin)?;
    }
    if let Some(file) = signature {
        let k = imgtool::sign::check_signatures(
            &route.trusted,
            &img.location(),
            img.id(),
            file.as_deref().map_err(Clone::clone),
        )
        .map_err(|e| anyhow::anyhow!("refusing to clone, nothing written: {e}"))?;
        rep.say(&format!(
            "image {} is signed by trusted {k}",
            &img.id()[..12]
        ));
    }
    Ok(())
}

/// Compares the target's layout with the image's and says what will happen to it.
fn plan_target(img: &Image, disk: &Disk, target: &Path, rep: &Reporter) -> anyhow::Result<Plan> {
    let plan = imgtool::restore::plan(img, disk, target)?;
    if plan.keep_table {
        rep.phase(
            Phase::Layout,
            &format!(
                "layout matches image {}: partition table kept, no repartitioning",
                &img.id()[..12]
            ),
        );
    } else {
        rep.phase(
            Phase::Partitioning,
            &format!(
                "layout differs ({}); repartitioning {}",
                plan.reasons.join("; "),
                target.display()
            ),
        );
    }
    Ok(plan)
}

/// Tells the relay where each region lies on the local disk (to re-read evicted frames).
fn give_relay_bases(relay: &Relay, img: &Image, plan: &Plan) {
    let ss = plan.layout.sector_size as u64;
    for r in &img.manifest.regions {
        let base = plan
            .layout
            .partition(r.number)
            .map(|p| p.start * ss)
            .unwrap_or(0);
        relay.set_base(&r.name, base);
    }
}

/// Verify everything; a relay is fed every verified chunk and holds before growing.
/// Once every chunk is here, a node pulling from a relay tells it so (a node whose disk
/// held most of the image never fetches every chunk, and the relay holds for it).
fn restore_options(
    route: &Route,
    relay: Option<&Arc<Relay>>,
    source: &Arc<HttpSource>,
    up: &Upstreams,
    rep: &Arc<Reporter>,
) -> RestoreOptions {
    let mut opts = RestoreOptions {
        verify: true,
        delta: route.delta,
        ..Default::default()
    };
    let (source, primary) = (source.clone(), up.urls.last().cloned().unwrap_or_default());
    let (idle, expected) = (route.relay_idle, route.downstream);
    let (relay, rep, held) = (relay.cloned(), rep.clone(), route.clone());
    if let Some(a) = relay.clone() {
        let b = a.clone();
        opts.on_chunk = Some(Arc::new(move |r, i, frame| a.chunk_done(r, i, frame)));
        // Skipped chunks are on this disk: served from there (checked, see `relay`).
        opts.on_skip = Some(Arc::new(move |r, i| b.chunk_skipped(r, i)));
    }
    opts.before_grow = Some(Arc::new(move || {
        tell_upstream_done(&source.current(), &primary, &rep);
        let Some(relay) = &relay else { return };
        rep.say(&holding(expected, idle, "before growing ", "every chunk"));
        let why = hold_relay(relay, &held);
        rep.say(&released(why, expected, idle));
    }));
    opts
}

/// Tells the relay this node pulls from (`current`, the image's URL there) that it has
/// every chunk: `GET <current>/.done`. Not the primary (it keeps no such count), and
/// best effort: a relay that does not hear it holds until its idle fallback.
fn tell_upstream_done(current: &str, primary: &str, rep: &Reporter) {
    if current.is_empty() || current == primary {
        return;
    }
    let url = format!("{current}/{}", crate::relay::DONE);
    if let Err(e) = ureq::get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .call()
    {
        rep.say(&format!(
            "could not tell {url} that every chunk is here: {e}"
        ));
    }
}

/// The console line saying what a relay holds for: its `expected` downstream nodes to
/// have `what`, or — none planned, it only serves boot files — `idle` without a request.
/// `when` is said after `holding ` (`before growing `, or empty).
pub(crate) fn holding(
    expected: usize,
    idle: std::time::Duration,
    when: &str,
    what: &str,
) -> String {
    if expected == 0 {
        format!(
            "holding {when}while the boot files are asked for (no downstream node planned; released after {}s without a boot-file request, at the latest after the boot window and that)",
            idle.as_secs()
        )
    } else {
        format!(
            "holding {when}until {expected} downstream node(s) have {what} ({}s idle fallback)",
            idle.as_secs()
        )
    }
}

/// The console line saying why a relay stopped holding.
pub(crate) fn released(why: Released, expected: usize, idle: std::time::Duration) -> String {
    match why {
        Released::AllServed => {
            format!("relay released: all {expected} downstream node(s) have every chunk")
        }
        Released::Idle if expected == 0 => format!(
            "relay released: no boot file asked for in {}s",
            idle.as_secs()
        ),
        Released::Idle => format!(
            "relay released: no request for {}s ({expected} downstream node(s) planned)",
            idle.as_secs()
        ),
        Released::NoBootFiles => "relay released: it has no boot files to serve".into(),
        Released::Bounded => {
            "relay released: boot files still asked for, but this node has held as long as it may (boot window + idle time)".into()
        }
    }
}

/// Holds the relay before this node goes on (grows, reports done, switches root): until
/// its planned downstream nodes have every chunk (or the idle fallback), or — none
/// planned, it only serves its rack's boot files — until they are no longer asked for,
/// at most the boot window and the idle time ([`Relay::wait_boot_files`]).
pub(crate) fn hold_relay(relay: &Relay, route: &Route) -> Released {
    if route.downstream == 0 {
        relay.wait_boot_files(route.relay_idle, route.grace + route.relay_idle)
    } else {
        relay.wait_downstream(route.downstream, route.relay_idle)
    }
}

/// The restore's chunk counts, on the console (`delta: …` or `full restore (why): …`) and
/// in every report from now on (the final `done` carries them to the board).
fn say_counts(img: &Image, report: &RestoreReport, rep: &Reporter) {
    let chunks = |r: &imgtool::manifest::Region| r.chunks.len() as u64;
    let c = &report.chunks;
    let counts = ChunkCounts {
        total: img.manifest.regions.iter().map(chunks).sum(),
        checked: c.checked as u64,
        skipped: c.skipped as u64,
        fetched: c.fetched as u64,
        // What went over the wire (retries included), as the `done` line says.
        fetched_bytes: img.source.bytes_fetched(),
        payload_bytes: img
            .manifest
            .regions
            .iter()
            .flat_map(|r| &r.chunks)
            .map(|c| c.compressed_length)
            .sum(),
    };
    let how = match &report.full_reason {
        Some(why) => format!("full restore ({why})"),
        None => "delta".to_string(),
    };
    rep.say(&format!("{how}: {}", counts.summary()));
    rep.set_chunks(counts);
}

fn say_grown(report: &RestoreReport, rep: &Reporter) {
    for r in &report.regions {
        if let Some((a, b)) = r.grown {
            rep.say(&format!(
                "{}: {} grown from {} to {} MiB",
                r.name,
                r.filesystem,
                a >> 20,
                b >> 20
            ));
        }
    }
}
