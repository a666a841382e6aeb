//! `netboot.mode=diskless` and `vsmp-diskless`: the group's image booted from RAM. The
//! image is loaded and checked exactly as for a clone ([`crate::clone`]: the same route,
//! failover, trust and relay), then only its root partition's region is restored —
//! into a sparse file on a tmpfs, each chunk verified (imgtool's
//! [`restore_region`](imgtool::ramroot::restore_region)) — attached to a loop device,
//! mounted, and, as PID 1, switched to: `/dev`, `/proc`, `/sys` and `/run` move into the
//! new root, it becomes `/`, and the image's own `/sbin/init` is executed in this process
//! (PID 1 handing over). No local disk is opened in this mode.
//!
//! Why a tmpfs file and a loop device, not zram (docs/AGENT.md, "Diskless"): it works on
//! any kernel (the loop module is already in the initrd for growing XFS, and the test
//! host has no zram), the file holds exactly the region's used bytes (it is sparse), so
//! the memory check compares exact numbers instead of a guessed compression ratio.
//!
//! Memory is checked after the image's manifest is read (a few KiB) and before any
//! payload is fetched: the root's used bytes, the relay's frame cache when this node
//! relays to downstream nodes, the rack's boot files when it serves them (an entity's
//! secondary: the sizes the primary's manifest lists, read before the check; the files
//! are fetched after it), the restore pipeline's frames, and [`BOOT_RESERVE`] for the
//! booted system must fit `MemAvailable`.
//!
//! The steps are functions below; [`run`] lists them. [`boot`] is the PID-1 entry,
//! `initrd-agent diskless` ([`crate::command::diskless`]) the command form, which stops
//! once the root is mounted and checked.

use crate::clone::{
    holding, load_image, open_relay, open_source, relay_cache_bytes, released, Upstreams,
};
use crate::config::Config;
use crate::relay::bootfiles::BootDuty;
use crate::relay::Relay;
use crate::report::Reporter;
use crate::route::Route;
use anyhow::Context;
use imgtool::disk::Disk;
use imgtool::manifest::Region;
use imgtool::mount::LoopDevice;
use imgtool::progress::Progress;
use netboot_proto::status::Phase;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MountFlags, UnmountFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Memory the booted system needs besides its root (systemd, udev, a login): refused
/// below this, rather than booting a node that then runs out of memory at once.
pub const BOOT_RESERVE: u64 = 128 << 20;

/// Where PID 1 keeps the root's file: a tmpfs mounted here, under `/run` so that it moves
/// into the booted system with `/run` (visible there, not hidden under the new root).
pub const RAM_STORE: &str = "/run/netboot/ramroot";

/// Where PID 1 mounts the root before switching to it.
pub const NEW_ROOT: &str = "/newroot";

/// The program the booted system starts with, inside its root.
pub const INIT: &str = "/sbin/init";

/// Where the root's file lives and how far to go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The partition to boot (`netboot.root=`, `--root`); `None`: [`imgtool::ramroot::pick_root`].
    pub root: Option<u32>,
    /// Directory of the root's file (`root.img`).
    pub store: PathBuf,
    /// Mount a tmpfs of the root's size on `store` first (PID 1).
    pub tmpfs: bool,
    /// Where the root is mounted.
    pub mount_at: PathBuf,
    /// Mount read-only (the command form only checks it).
    pub read_only: bool,
    /// `MemAvailable` as `/proc/meminfo` says (a test may pass another text).
    pub meminfo: PathBuf,
}

impl Options {
    /// PID 1's: tmpfs under `/run`, mounted read-write on [`NEW_ROOT`].
    pub fn pid1(root: Option<u32>) -> Options {
        Options {
            root,
            store: PathBuf::from(RAM_STORE),
            tmpfs: true,
            mount_at: PathBuf::from(NEW_ROOT),
            read_only: false,
            meminfo: PathBuf::from("/proc/meminfo"),
        }
    }
}

/// The root, restored and mounted.
#[derive(Debug)]
pub struct RamRoot {
    /// The root's file (in RAM under PID 1).
    pub file: PathBuf,
    /// The loop device it is mounted from.
    pub device: PathBuf,
    pub mount_at: PathBuf,
    /// Its region (`p4`), file system and used bytes.
    pub region: String,
    pub filesystem: String,
    pub used_bytes: u64,
}

/// PID 1, `netboot.mode=diskless` / `vsmp-diskless`: the root into RAM, then the switch to
/// its `/sbin/init`. Returns only on an error.
pub fn boot(cfg: &Config, route: &Route, image: &str, rep: &Arc<Reporter>) -> anyhow::Result<()> {
    let vsmp: Vec<String> = std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| w.starts_with("vsmp."))
        .map(str::to_string)
        .collect();
    if !vsmp.is_empty() {
        rep.say(&format!(
            "vSMP board, kept for the booted system: {}",
            vsmp.join(" ")
        ));
    }
    let root = run(route, image, &Options::pid1(cfg.root), rep)?;
    switch_root(&root.mount_at, rep)?;
    Ok(())
}

/// The diskless steps up to a mounted, checked root: relay, image, root region, memory,
/// RAM file, restore, mount, `/sbin/init` found, hold for downstream nodes, report.
pub fn run(
    route: &Route,
    image: &str,
    opts: &Options,
    rep: &Arc<Reporter>,
) -> anyhow::Result<RamRoot> {
    let up = Upstreams::new(route, image);
    let url = up.first_url();
    rep.set_image(image, up.first_name());
    std::fs::create_dir_all(&opts.store)
        .with_context(|| format!("creating {}", opts.store.display()))?;
    let file = opts.store.join("root.img");
    // Listening from the start, as a clone's relay: downstream nodes that boot at the same
    // time find it. Evicted frames are re-read from the RAM file (region base 0). An
    // entity's secondary reads its boot files' manifest here; the files themselves are
    // fetched only once the memory check has counted them.
    let (relay, duty) = match open_relay(route, image, &file, rep)? {
        Some((relay, duty)) => (Some(relay), duty),
        None => (None, None),
    };
    rep.phase(Phase::Layout, &format!("reading image {url} (diskless)"));
    let source = open_source(route, &up, rep)?;
    let img = load_image(route, source, relay.as_ref(), &url, rep)?;
    let region = imgtool::ramroot::pick_root(&img, opts.root)?.clone();
    let available = mem_available(&std::fs::read_to_string(&opts.meminfo).unwrap_or_default());
    let buffers = Buffers::new(
        relay.as_ref().map_or(0, |_| relay_cache_bytes(route)),
        duty.as_ref().map_or(0, BootDuty::bytes),
        img.manifest.chunk_size,
    );
    let checked = check_memory(&region, &buffers, available);
    if let (Some(relay), Some(duty)) = (&relay, duty) {
        match &checked {
            Ok(()) => {
                let rep = rep.clone();
                duty.start(relay, Box::new(move |line| rep.say(line)));
            }
            Err(_) => duty.abandon(relay, "its diskless boot was refused (not enough memory)"),
        }
    }
    checked?;
    rep.say(&format!(
        "root: partition {} ({}, {} MiB used of {} MiB) into RAM",
        region.number,
        region.filesystem,
        mib(region.used_bytes),
        mib(region.size)
    ));
    if opts.tmpfs {
        mount_tmpfs(&opts.store, region.size)?;
    }
    if let Some(relay) = &relay {
        relay.count_only(&region.name);
        relay.set_base(&region.name, 0);
    }
    restore(&img, &region, &file, relay.as_ref(), rep)?;
    let root = mount_root(&file, &region, opts)?;
    check_init(&root.mount_at)?;
    hold(route, relay.as_ref(), rep);
    rep.phase(
        Phase::Done,
        &format!(
            "image {} root {} ({}) in RAM, verified, mounted on {} ({} payload bytes fetched)",
            &img.id()[..12],
            region.name,
            region.filesystem,
            root.mount_at.display(),
            img.source.bytes_fetched()
        ),
    );
    Ok(root)
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let v = l.strip_prefix("MemAvailable:")?.trim();
        let kib: u64 = v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// What a diskless boot holds in memory besides the root's bytes and [`BOOT_RESERVE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Buffers {
    /// The relay's frame cache (when relaying to downstream nodes; none for a relay that
    /// only serves boot files).
    pub relay_cache: u64,
    /// The rack's boot files (an entity's secondary serves them from RAM; fetched while
    /// the root is restored): the sizes its primary's manifest lists, read before the
    /// check (0 when there is none: it then serves none).
    pub boot_files: u64,
    /// The restore pipeline's frames in flight: two per worker (read, and queued), each up
    /// to the chunk's largest frame.
    pub pipeline: u64,
}

impl Buffers {
    /// The buffers of this boot: the relay's frame cache (`relay_cache` bytes, 0 without
    /// one), the boot files' bytes (`boot_files`, bounded here by the manifest's
    /// [`MAX_TOTAL_BYTES`](netboot_proto::bootfiles::MAX_TOTAL_BYTES) whatever the caller
    /// passes), and the image's `chunk_size` (at most `MAX_CHUNK`, checked when the
    /// manifest was read).
    pub fn new(relay_cache: usize, boot_files: u64, chunk_size: u64) -> Buffers {
        let threads = imgtool::pool::threads(0) as u64;
        let frame = imgtool::chunk::frame_bound(chunk_size.min(imgtool::chunk::MAX_CHUNK));
        Buffers {
            relay_cache: relay_cache as u64,
            boot_files: boot_files.min(netboot_proto::bootfiles::MAX_TOTAL_BYTES),
            pipeline: threads.saturating_mul(frame).saturating_mul(2),
        }
    }
}

/// Refuses, before any payload is fetched, a root that does not fit: its used bytes, the
/// [`Buffers`] and [`BOOT_RESERVE`], against `MemAvailable`.
pub fn check_memory(region: &Region, b: &Buffers, available: Option<u64>) -> anyhow::Result<()> {
    let need = region
        .used_bytes
        .saturating_add(b.relay_cache)
        .saturating_add(b.boot_files)
        .saturating_add(b.pipeline)
        .saturating_add(BOOT_RESERVE);
    let Some(avail) = available else {
        anyhow::bail!("refusing the diskless boot before fetching: /proc/meminfo gives no MemAvailable, so the {} MiB the root needs cannot be checked", mib(need));
    };
    if avail < need {
        let mut extra = String::new();
        for (bytes, what) in [
            (b.relay_cache, "relay cache"),
            (b.boot_files, "rack boot files"),
            (b.pipeline, "restore buffers"),
        ] {
            if bytes > 0 {
                extra.push_str(&format!(" + {} MiB {what}", mib(bytes)));
            }
        }
        anyhow::bail!(
            "refusing the diskless boot before fetching: not enough memory: needed {} MiB (root partition {} {}: {} MiB used{extra} + {} MiB for the booted system), available {} MiB (MemAvailable)",
            mib(need),
            region.number,
            region.filesystem,
            mib(region.used_bytes),
            mib(BOOT_RESERVE),
            mib(avail)
        );
    }
    Ok(())
}

/// A tmpfs on `dir` big enough for the root's file (its size, in whole MiB; the file is
/// sparse: only what is written takes memory), private to this mode.
fn mount_tmpfs(dir: &Path, size: u64) -> anyhow::Result<()> {
    let data = std::ffi::CString::new(format!("size={}m,mode=0700", mib(size).max(1)))
        .context("tmpfs options")?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("mounting a tmpfs on {} for the root", dir.display()))
}

/// The root's region into `file` (sized to the partition, sparse), every chunk verified,
/// the relay fed each verified frame.
fn restore(
    img: &imgtool::manifest::Image,
    region: &Region,
    file: &Path,
    relay: Option<&Arc<Relay>>,
    rep: &Arc<Reporter>,
) -> anyhow::Result<u64> {
    std::fs::File::create(file)
        .and_then(|f| f.set_len(region.size))
        .with_context(|| {
            format!(
                "creating {} ({} bytes, sparse)",
                file.display(),
                region.size
            )
        })?;
    let disk = Disk::open_rw(file).with_context(|| format!("opening {}", file.display()))?;
    let hook: Option<imgtool::restore::ChunkHook> = relay.map(|r| {
        let r = r.clone();
        Arc::new(move |reg: &Region, i: usize, frame: Vec<u8>| r.chunk_done(reg, i, frame))
            as imgtool::restore::ChunkHook
    });
    let progress = {
        let rep = rep.clone();
        Progress::callback(Arc::new(move |what, done, total| {
            rep.progress(what, done, total)
        }))
    };
    rep.phase(Phase::Restoring, &format!("{} into RAM", region.name));
    let n = imgtool::ramroot::restore_region(img, region, &disk, file, hook.as_ref(), 0, &progress)
        .with_context(|| {
            format!(
                "restoring {} of {} into RAM; nothing booted",
                region.name,
                img.location()
            )
        })?;
    Ok(n)
}

/// The file on a loop device, mounted as its file system.
fn mount_root(file: &Path, region: &Region, opts: &Options) -> anyhow::Result<RamRoot> {
    let lo = LoopDevice::attach(file, 0, region.size, &format!("the root ({})", region.name))?;
    std::fs::create_dir_all(&opts.mount_at)
        .with_context(|| format!("creating {}", opts.mount_at.display()))?;
    let mut flags = MountFlags::empty();
    if opts.read_only {
        flags |= MountFlags::RDONLY;
    }
    rustix::mount::mount(
        lo.path(),
        &opts.mount_at,
        region.filesystem.as_str(),
        flags,
        c"",
    )
    .map_err(std::io::Error::from)
    .with_context(|| {
        format!(
            "mounting {} ({}) on {} (is the {} module loaded?)",
            lo.path().display(),
            region.filesystem,
            opts.mount_at.display(),
            region.filesystem
        )
    })?;
    // The mount holds the loop device now; dropping the handle leaves it attached until
    // the unmount (autoclear).
    Ok(RamRoot {
        file: file.to_path_buf(),
        device: lo.path().to_path_buf(),
        mount_at: opts.mount_at.clone(),
        region: region.name.clone(),
        filesystem: region.filesystem.clone(),
        used_bytes: region.used_bytes,
    })
}

/// The root has an executable [`INIT`], its symlinks resolved inside the root
/// (`RESOLVE_IN_ROOT`: `/sbin` → `usr/sbin`, `init` → `/lib/systemd/systemd`).
pub fn check_init(root: &Path) -> anyhow::Result<()> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("opening {}", root.display()))?;
    let init = rustix::fs::openat2(
        &dir,
        INIT.trim_start_matches('/'),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("the image's root has no {INIT}: nothing to boot"))?;
    let st = rustix::fs::fstat(&init).map_err(std::io::Error::from)?;
    let regular = (st.st_mode & libc::S_IFMT) == libc::S_IFREG;
    if !regular || st.st_mode & 0o111 == 0 {
        anyhow::bail!("the image's {INIT} is not an executable file: nothing to boot");
    }
    Ok(())
}

/// A relay holds until its downstream nodes have the root (or the idle fallback), as a
/// clone's does before it reboots: after the switch this process is the booted system.
/// One with no downstream node (it serves only boot files) holds until no request came
/// for the idle fallback: its boot-tree children may be fetching from it.
fn hold(route: &Route, relay: Option<&Arc<Relay>>, rep: &Reporter) {
    let Some(relay) = relay else {
        return;
    };
    rep.say(&holding(route.downstream, route.relay_idle, "", "the root"));
    let why = crate::clone::hold_relay(relay, route);
    rep.say(&released(why, route.downstream, route.relay_idle));
    rep.say(&format!("relay served {} bytes", relay.served_bytes()));
}

/// Unmounts the command form's root (the loop device detaches with it).
pub fn unmount(root: &RamRoot) -> anyhow::Result<()> {
    rustix::mount::unmount(&root.mount_at, UnmountFlags::empty())
        .map_err(std::io::Error::from)
        .with_context(|| format!("unmounting {}", root.mount_at.display()))
}

/// PID 1 hands over: the kernel file systems move into `new`, `new` becomes `/`, and the
/// image's [`INIT`] replaces this process (the initramfs's files stay: a few MiB). Returns
/// only on an error.
fn switch_root(new: &Path, rep: &Reporter) -> anyhow::Result<()> {
    for d in ["dev", "proc", "sys", "run"] {
        let to = new.join(d);
        if !to.is_dir() {
            rep.say(&format!("the image has no /{d}: not moved"));
            continue;
        }
        rustix::mount::mount_move(format!("/{d}").as_str(), &to)
            .map_err(std::io::Error::from)
            .with_context(|| format!("moving /{d} into {}", new.display()))?;
    }
    // The agent's /tmp is of no use to the booted system.
    let _ = rustix::mount::unmount("/tmp", UnmountFlags::DETACH);
    rep.say(&format!(
        "switching root to {} and starting {INIT}",
        new.display()
    ));
    rustix::process::chdir(new)
        .map_err(std::io::Error::from)
        .context("chdir to the new root")?;
    rustix::mount::mount_move(".", "/")
        .map_err(std::io::Error::from)
        .context("moving the new root onto /")?;
    rustix::process::chroot(".")
        .map_err(std::io::Error::from)
        .context("chroot")?;
    rustix::process::chdir("/")
        .map_err(std::io::Error::from)
        .context("chdir /")?;
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(INIT).exec();
    Err(anyhow::anyhow!("executing {INIT} of the image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgtool::fs::Fill;

    fn region(used: u64) -> Region {
        Region {
            name: "p4".into(),
            number: 4,
            size: 2 << 30,
            filesystem: "ext4".into(),
            uuid: None,
            label: None,
            fs_size: 2 << 30,
            used_bytes: used,
            fill: Fill::Keep,
            payload: "p4.zst".into(),
            chunks: vec![],
        }
    }

    #[test]
    fn mem_available_is_read_in_bytes() {
        let m = "MemTotal:        1012344 kB\nMemFree:          900000 kB\nMemAvailable:     851968 kB\n";
        assert_eq!(mem_available(m), Some(851968 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
        assert_eq!(
            mem_available("MemAvailable: 99999999999999999999 kB\n"),
            None
        );
    }

    #[test]
    fn too_little_memory_is_refused_with_the_numbers() {
        let r = region(400 << 20);
        let none = Buffers::default();
        // 400 + 128 = 528 MiB needed.
        assert!(check_memory(&r, &none, Some(528 << 20)).is_ok());
        let e = check_memory(&r, &none, Some(300 << 20))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needed 528 MiB")
                && e.contains("available 300 MiB")
                && e.contains("400 MiB used"),
            "{e}"
        );
        // A relay also keeps its frame cache.
        let relay = Buffers {
            relay_cache: crate::clone::RELAY_CACHE_BYTES as u64,
            ..Buffers::default()
        };
        let e = check_memory(&r, &relay, Some(528 << 20))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needed 592 MiB") && e.contains("relay cache"),
            "{e}"
        );
        assert!(check_memory(&r, &none, None)
            .unwrap_err()
            .to_string()
            .contains("MemAvailable"));
    }

    /// Review S4 #5: an entity's secondary holds the rack's boot files and the restore
    /// pipeline holds two frames per worker; both count. The boot files count as the
    /// primary's manifest lists them (their real sizes), not as the manifest's bound.
    #[test]
    fn boot_files_and_restore_buffers_are_counted() {
        let r = region(400 << 20);
        let b = Buffers::new(crate::clone::RELAY_CACHE_BYTES, 30 << 20, 8 << 20);
        let threads = imgtool::pool::threads(0) as u64;
        assert_eq!(b.boot_files, 30 << 20);
        assert_eq!(
            b.pipeline,
            threads * 2 * imgtool::chunk::frame_bound(8 << 20)
        );
        // Enough for root + relay cache + the booted system, not for the boot files too.
        let e = check_memory(&r, &b, Some(592 << 20))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("+ 30 MiB rack boot files") && e.contains("MiB restore buffers"),
            "{e}"
        );
        let need = (400u64 << 20) + (64 << 20) + (30 << 20) + b.pipeline + (128 << 20);
        assert!(check_memory(&r, &b, Some(need)).is_ok());
        assert!(check_memory(&r, &b, Some(need - 1)).is_err());
        // Never more than the manifest's bound, whatever is passed.
        assert_eq!(Buffers::new(0, u64::MAX, 8 << 20).boot_files, 384 << 20);
        // A relay that only serves boot files (no downstream node) keeps no frame cache.
        let b = Buffers::new(0, 30 << 20, 8 << 20);
        let e = check_memory(&r, &b, Some(400 << 20))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("relay cache"), "{e}");
        // No manifest (or no relay): nothing for boot files.
        assert_eq!(Buffers::new(0, 0, 8 << 20).boot_files, 0);
    }

    /// The reserve is sized by the manifest the primary serves: the files it lists, read
    /// before the memory check (and before any file); no manifest, nothing reserved and
    /// no boot files served.
    #[test]
    fn the_boot_file_reserve_is_the_manifests_files() {
        use crate::relay::bootfiles::{Boot, Sources};
        use netboot_proto::bootfiles::{BootFile, BootFiles, FILE, INITRD, KERNEL, VERSION};
        let dir = tempfile::tempdir().unwrap();
        let bound = imgtool::serve::bind(imgtool::serve::ServeOptions {
            roots: vec![dir.path().to_path_buf()],
            listen: "127.0.0.1:0".into(),
            max_connections: 16,
        })
        .unwrap();
        let server = format!("http://127.0.0.1:{}", bound.addr().unwrap().port());
        std::thread::spawn(move || bound.run());
        let relay = Relay::new("img", Path::new("/nonexistent"), 0);
        // None served: no duty, nothing reserved, the relay says why to its peers.
        let said = std::sync::Mutex::new(vec![]);
        let duty = relay.prepare_boot_files(Sources::primary(&server), &|l| {
            said.lock().unwrap().push(l.to_string())
        });
        assert!(duty.is_none());
        let said = said.into_inner().unwrap();
        assert!(
            said[0].starts_with("not serving boot files")
                && said[0].contains("no memory kept for them"),
            "{said:?}"
        );
        assert!(matches!(relay.boot_files(), Boot::Failed(_)));
        // A manifest of a 12 MiB kernel and a 5 MiB initrd (the files need not be there
        // yet: only the manifest is read).
        let m = BootFiles {
            version: VERSION,
            files: vec![
                BootFile {
                    path: KERNEL.into(),
                    size: 12 << 20,
                    sha256: "ab".repeat(32),
                },
                BootFile {
                    path: INITRD.into(),
                    size: 5 << 20,
                    sha256: "cd".repeat(32),
                },
            ],
        };
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        let duty = relay
            .prepare_boot_files(Sources::primary(&server), &|_| {})
            .unwrap();
        assert_eq!(duty.bytes(), 17 << 20);
        // Peers asking meanwhile are told to wait, not to pass over it.
        assert!(matches!(relay.boot_files(), Boot::Fetching));
        let b = Buffers::new(0, duty.bytes(), 8 << 20);
        assert_eq!(b.boot_files, 17 << 20);
        let e = check_memory(&region(400 << 20), &b, Some(1 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("+ 17 MiB rack boot files"), "{e}");
        // Refused: the relay stops telling peers to wait.
        duty.abandon(&relay, "refused");
        assert!(matches!(relay.boot_files(), Boot::Failed(_)));
        // Review S6: the node stops on an error before its memory check (the duty is
        // dropped, neither started nor abandoned): the same, peers pass over it.
        let duty = relay
            .prepare_boot_files(Sources::primary(&server), &|_| {})
            .unwrap();
        assert!(matches!(relay.boot_files(), Boot::Fetching));
        drop(duty);
        assert!(
            matches!(relay.boot_files(), Boot::Failed(ref why) if why.contains("stopped")),
            "{:?}",
            relay.boot_files()
        );
    }
}
