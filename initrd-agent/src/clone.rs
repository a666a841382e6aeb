//! The clone itself, the same for PID 1 and for `initrd-agent clone`: load the image
//! (manifest, layout) from the server, compare layouts, restore chunk by chunk with
//! per-chunk sha256 (imgtool's restore: table rewritten only when it differs, table and
//! first MiB last), read everything back, grow, report. With trusted keys (or a pinned
//! image id) the image is checked right after it is loaded, before anything is written.

use crate::relay::Relay;
use crate::report::Reporter;
use imgtool::disk::Disk;
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::restore::{restore, RestoreOptions, RestoreReport};
use imgtool::sign::PublicKey;
use imgtool::source::HttpSource;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where to pull from and whether to relay.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upstreams in fallback order: (name, base URL); the last is the primary.
    pub upstreams: Vec<(String, String)>,
    /// Serve the image to downstream nodes on this address (a secondary / relay).
    pub relay_listen: Option<String>,
    /// Downstream nodes the plan gives this relay: it holds its grow, and its exit, until
    /// each of them has fetched every chunk (or, failing that, `relay_idle` of silence).
    pub downstream: usize,
    /// A relay's fallback: it stops waiting for downstream after this long without requests.
    pub relay_idle: Duration,
    /// How long a read may stall before the upstream counts as dead.
    pub stall: Duration,
    pub attempts: u32,
    /// Keys one of which must have signed the image (from the initrd's
    /// `/etc/netboot/trusted`, or `--trust`). Empty: integrity is checked, not origin.
    pub trusted: Vec<PublicKey>,
    /// The only image id this node accepts (`netboot.image_id=`), when set.
    pub image_id: Option<String>,
}

impl Route {
    /// Straight from the primary.
    pub fn primary(server: &str, attempts: u32) -> Route {
        Route {
            upstreams: vec![("primary".into(), server.trim_end_matches('/').to_string())],
            relay_listen: None,
            downstream: 0,
            relay_idle: Duration::from_secs(15),
            stall: Duration::from_secs(20),
            attempts,
            trusted: vec![],
            image_id: None,
        }
    }
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

/// Clones `image` onto `target` along `route`.
pub fn clone(
    route: &Route,
    image: &str,
    target: &Path,
    rep: &Arc<Reporter>,
) -> anyhow::Result<RestoreReport> {
    let urls: Vec<String> = route
        .upstreams
        .iter()
        .map(|(_, b)| format!("{b}/{image}"))
        .collect();
    let names: Vec<String> = route.upstreams.iter().map(|(n, _)| n.clone()).collect();
    let url = urls.first().cloned().unwrap_or_default();
    rep.set_image(
        image,
        names.first().map(String::as_str).unwrap_or("primary"),
    );
    // A relay listens from the start, so downstream nodes that boot at the same time find
    // it; their requests wait until it has the image.
    let relay = match &route.relay_listen {
        Some(listen) => {
            let relay = Relay::new(image, target, 64 << 20);
            let addr = relay.serve(listen)?;
            rep.say(&format!(
                "relaying image {image} to downstream nodes on {addr}"
            ));
            Some(relay)
        }
        None => None,
    };
    rep.phase("layout", &format!("reading image {url}"));
    for u in &urls {
        imgtool::source::check_url(u).map_err(anyhow::Error::msg)?;
    }
    let mut source = HttpSource::chain(urls.clone(), route.stall);
    source.attempts = route.attempts;
    {
        let (rep, urls, names) = (rep.clone(), urls.clone(), names.clone());
        source.on_switch(Box::new(move |from, to, why| {
            let name = |u: &str| {
                urls.iter()
                    .position(|x| x == u)
                    .and_then(|i| names.get(i).cloned())
                    .unwrap_or_else(|| u.to_string())
            };
            rep.set_image("", &name(to));
            rep.phase(
                "rerouted",
                &format!(
                    "upstream {} failed ({why}); now pulling from {}",
                    name(from),
                    name(to)
                ),
            );
        }));
    }
    let source: Arc<dyn imgtool::source::ImageSource> = Arc::new(source);
    let files = Image::fetch_files(source.as_ref())
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("loading image {url}: {}", e.chain()))?;
    // A node that checks signatures reads the image's signature file, and so does every
    // relay, whether it checks or not: its downstream nodes may (a missing file does not
    // move the source up its chain, see `ImageSource::read_optional`).
    let signature = (!route.trusted.is_empty() || relay.is_some())
        .then(|| imgtool::sign::read_signature_file(source.as_ref()));
    if let Some(relay) = &relay {
        // Passed on as fetched: downstream nodes check it themselves.
        relay.set_signature(signature.as_ref().and_then(|s| s.as_ref().ok()).cloned());
        relay.set_files(files.clone());
    }
    let signature = signature.filter(|_| !route.trusted.is_empty());
    let img = Image::from_files(source, &files)
        .map_err(|e| anyhow::anyhow!("loading image {url}: {}", e.chain()))?;
    check_trust(route, &img, signature, rep)?;
    rep.set_image(image, &names[0]);
    // Downstream nodes get manifest and layout at once: each step this node takes before
    // would add to the lag of every node below it in the chain.
    if let Some(relay) = &relay {
        relay.set_image(&img);
    }
    let disk = Disk::open_rw_direct(target)
        .map_err(|e| anyhow::anyhow!("opening target disk: {}", e.chain()))?;
    let plan = imgtool::restore::plan(&img, &disk, target).map_err(|e| anyhow::anyhow!("{e}"))?;
    if plan.keep_table {
        rep.phase(
            "layout",
            &format!(
                "layout matches image {}: partition table kept, no repartitioning",
                &img.id()[..12]
            ),
        );
    } else {
        rep.phase(
            "partitioning",
            &format!(
                "layout differs ({}); repartitioning {}",
                plan.reasons.join("; "),
                target.display()
            ),
        );
    }
    if let Some(relay) = &relay {
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
    let r2 = rep.clone();
    let progress = Progress::callback(Arc::new(move |what, done, total| {
        r2.progress(what, done, total)
    }));
    let mut opts = RestoreOptions {
        verify: true,
        ..Default::default()
    };
    if let Some(relay) = &relay {
        let (a, b) = (relay.clone(), relay.clone());
        let (idle, expected) = (route.relay_idle, route.downstream);
        opts.on_chunk = Some(Arc::new(move |r, i, frame| a.chunk_done(r, i, frame)));
        let rep2 = rep.clone();
        opts.before_grow = Some(Arc::new(move || {
            rep2.say(&format!(
                "holding before growing until {expected} downstream node(s) have every chunk ({}s idle fallback)",
                idle.as_secs()
            ));
            b.wait_downstream(expected, idle);
        }));
    }
    let report = restore(&img, &disk, &opts, &progress)
        .map_err(|e| anyhow::anyhow!("restoring {url} onto {}: {}", target.display(), e.chain()))?;
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
    if let Some(relay) = &relay {
        relay.wait_downstream(route.downstream, route.relay_idle);
        rep.say(&format!("relay served {} bytes", relay.served_bytes()));
    }
    rep.phase(
        "done",
        &format!(
            "image {} on {} verified ({} payload bytes fetched)",
            &img.id()[..12],
            target.display(),
            img.source.bytes_fetched()
        ),
    );
    Ok(report)
}
