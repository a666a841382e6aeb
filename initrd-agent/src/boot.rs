//! The boot flow of a node, once PID 1 has the machine ready ([`crate::pid1`]): bring up
//! the network ([`crate::net::bring_up`]), complete the configuration from the subnet's
//! bootopts ([`crate::resolve`]) and add the network settings they complete (a gateway:
//! [`crate::net::apply_bootopts`]), then do what the mode says — `clone`: pick the target
//! disk ([`crate::target`]), find the route in the clone plan ([`crate::route`]), load the
//! initrd's trusted keys, and clone ([`crate::clone`]); `diskless` and `vsmp-diskless`:
//! the same route and keys, then the root into RAM and the switch to it
//! ([`crate::diskless`]); `backup`: capture the disk and stream it to the server as the
//! group's next version ([`crate::backup`]).

use crate::config::Config;
use crate::report::Reporter;
use std::sync::Arc;

/// Runs the boot flow on `cfg` (from the kernel command line); the reporter learns the
/// server and the node's name once they are known.
pub fn run(cfg: &mut Config, rep: &mut Arc<Reporter>) -> anyhow::Result<()> {
    let mut link = crate::net::bring_up(cfg, rep)?;
    crate::resolve::resolve(cfg, rep)?;
    crate::net::apply_bootopts(&mut link, cfg, rep)?;
    if let Some(r) = Arc::get_mut(rep) {
        r.set_server(
            cfg.server.clone(),
            cfg.node
                .clone()
                .unwrap_or_else(|| cfg.mac.clone().unwrap_or_default()),
        );
    }
    match cfg.mode.as_str() {
        "clone" => clone(cfg, rep),
        "diskless" | "vsmp-diskless" => diskless(cfg, rep),
        "backup" => crate::backup::run(cfg, rep).map(|_| ()),
        other => anyhow::bail!(
            "netboot.mode={other} is not handled by this agent version (it clones disk-based groups and boots diskless ones); boot this node with a clone or diskless entry"
        ),
    }
}

/// `netboot.mode=clone`: the group's image onto the chosen disk, along the plan's route.
fn clone(cfg: &Config, rep: &Arc<Reporter>) -> anyhow::Result<()> {
    let server = cfg
        .server
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no image server"))?;
    let image = cfg
        .image_name()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no group or image for this node"))?;
    let cands = crate::target::list_disks(std::path::Path::new("/sys/block"));
    let t = crate::target::select(&cands, cfg.target.as_deref())?;
    rep.say(&format!("target disk: {t}"));
    let mut route = crate::route::plan_route(cfg, &server)?;
    route.trusted = trusted_keys(rep)?;
    route.image_id = cfg.image_id.clone();
    route.delta = cfg.delta();
    crate::clone::clone(&route, &image, &t.path, rep)?;
    Ok(())
}

/// `netboot.mode=diskless` / `vsmp-diskless`: the group's root into RAM along the plan's
/// route, then the switch to its init ([`crate::diskless`]); no local disk is touched.
fn diskless(cfg: &Config, rep: &Arc<Reporter>) -> anyhow::Result<()> {
    let server = cfg
        .server
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no image server"))?;
    let image = cfg
        .image_name()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no group or image for this node"))?;
    let mut route = crate::route::plan_route(cfg, &server)?;
    route.trusted = trusted_keys(rep)?;
    route.image_id = cfg.image_id.clone();
    crate::diskless::boot(cfg, &route, &image, rep)
}

/// The initrd's trusted image-signing keys (`pxe-builder initrd --trust`). A key that
/// cannot be read stops the clone: dropping it silently would turn the check off.
fn trusted_keys(rep: &Reporter) -> anyhow::Result<Vec<imgtool::sign::PublicKey>> {
    let dir = std::path::Path::new(netboot_proto::initrd::TRUSTED_DIR);
    if !dir.is_dir() {
        rep.say("no trusted keys in this initrd: images are checked for integrity, not origin");
        return Ok(vec![]);
    }
    let keys = imgtool::sign::load_trusted(&[dir.to_path_buf()])?;
    if keys.is_empty() {
        rep.say(&format!(
            "{} holds no key: images are checked for integrity, not origin",
            dir.display()
        ));
        return Ok(keys);
    }
    rep.say(&format!(
        "trusted image-signing keys: {}",
        keys.iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(keys)
}
