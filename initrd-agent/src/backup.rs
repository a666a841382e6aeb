//! `netboot.mode=backup`: this node's disk becomes its group's next image version. The
//! agent picks the disk by the same hints as a clone ([`crate::target`]), opens it
//! read-only, and runs imgtool's capture with its output streamed to the image server's
//! upload route (no local staging: the ramdisk is small), authenticated by the one-time
//! token `pxe-builder backup` put on this node's entry (`netboot.token=`). Partition
//! selection: `netboot.partitions=1,2,4` as `imgtool capture --partitions`.
//!
//! This module owns the job's checks ([`BackupJob::from_config`]), the console and board
//! reports around the upload ([`backup`]) and `initrd-agent backup` ([`BackupArgs`], the
//! same flow without booting, for tests and rescue). The wire protocol, the token check
//! and the publish are imgtool's (`imgtool::upload`, docs/PROTOCOL.md). A failure is an
//! error returned to PID 1, which reports it and waits or reboots as configured
//! ([`crate::pid1`]): nothing here panics or waits without a bound.

use crate::config::Config;
use crate::report::Reporter;
use anyhow::Context;
use imgtool::capture::CaptureOptions;
use imgtool::disk::Disk;
use imgtool::progress::Progress;
use netboot_proto::status::Phase;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a backup needs, checked before the disk is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupJob {
    /// The image server (`netboot.server`), without a trailing `/`.
    pub server: String,
    /// The group whose next version this disk becomes (`netboot.group`).
    pub group: String,
    /// The one-time upload token (`netboot.token`).
    pub token: String,
    /// `netboot.partitions`; none: every data partition.
    pub partitions: Option<Vec<u32>>,
}

impl BackupJob {
    /// The job the (validated) configuration describes; what is missing is named.
    pub fn from_config(cfg: &Config) -> anyhow::Result<BackupJob> {
        let server = cfg
            .server
            .clone()
            .context("backup: no image server (netboot.server)")?;
        let group = cfg
            .group
            .clone()
            .context("backup: no target group (netboot.group)")?;
        let token = cfg.backup.token.clone().context(
            "backup: no upload token (netboot.token); mark the node with `pxe-builder backup NODE --group G`",
        )?;
        Ok(BackupJob {
            server,
            group,
            token,
            partitions: cfg.backup.partitions.clone(),
        })
    }

    /// The capture settings: imgtool's defaults (same format, chunking and level as a
    /// local `imgtool capture`, so the same disk gives the same image id), all cores.
    pub fn capture_options(&self) -> CaptureOptions {
        CaptureOptions {
            partitions: self.partitions.clone(),
            ..CaptureOptions::default()
        }
    }

    /// The token as the console shows it: its first 6 characters only.
    pub fn token_hint(&self) -> String {
        let n = self.token.len().min(6);
        format!("{}…", &self.token[..n])
    }
}

/// What the server published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The new version's image id (sha256 of its manifest).
    pub image_id: String,
    /// `<group>@<id12>`.
    pub version: String,
    /// The version's stable URL.
    pub url: String,
    /// Bytes sent (frames, layout, manifest).
    pub bytes_sent: u64,
}

/// `netboot.mode=backup` at boot: the target disk by hints, then [`backup`].
pub fn run(cfg: &Config, rep: &Arc<Reporter>) -> anyhow::Result<Published> {
    let job = BackupJob::from_config(cfg)?;
    let cands = crate::target::list_disks(Path::new("/sys/block"));
    let t = crate::target::select(&cands, cfg.target.as_deref())?;
    rep.say(&format!("backup source disk: {t}"));
    backup(&job, &t.path, rep)
}

/// Captures `disk` and streams it to the server as the next version of the job's group;
/// reports `capturing` (with progress), `publishing`, then `done` with the new id.
pub fn backup(job: &BackupJob, disk: &Path, rep: &Arc<Reporter>) -> anyhow::Result<Published> {
    rep.set_image(&job.group, "primary");
    rep.phase(
        Phase::Capturing,
        &format!(
            "{} -> {} group {} (token {}), partitions {}",
            disk.display(),
            job.server,
            job.group,
            job.token_hint(),
            match &job.partitions {
                Some(p) => p.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
                None => "all".into(),
            }
        ),
    );
    let dev = Disk::open_ro_direct(disk)
        .with_context(|| format!("opening {} read-only", disk.display()))?;
    let published = upload(job, &dev, disk, &progress(rep))
        .with_context(|| format!("backing up {} to {}", disk.display(), job.server))?;
    rep.phase(
        Phase::Done,
        &format!(
            "backup of {} published as {} image {} ({} bytes sent), {}",
            disk.display(),
            published.version,
            published.image_id,
            published.bytes_sent,
            published.url
        ),
    );
    Ok(published)
}

/// Capture progress to the console and the board; once every byte is read, the
/// `publishing` phase (the last frames go out, the server checks the manifest and swaps
/// the version in).
fn progress(rep: &Arc<Reporter>) -> Progress {
    let rep = rep.clone();
    let said = std::sync::atomic::AtomicBool::new(false);
    Progress::callback(Arc::new(move |what, done, total| {
        rep.progress(what, done, total);
        if total > 0 && done >= total && !said.swap(true, std::sync::atomic::Ordering::SeqCst) {
            rep.phase(
                Phase::Publishing,
                "disk read; the last chunks go out and the server checks and publishes the image",
            );
        }
    }))
}

/// imgtool's streamed capture: the one code path `imgtool capture DISK URL` uses too.
fn upload(
    job: &BackupJob,
    dev: &Disk,
    disk: &Path,
    progress: &Progress,
) -> anyhow::Result<Published> {
    let target =
        imgtool::upload::UploadTarget::parse(&format!("{}/{}", job.server, job.group), &job.token)?;
    let r =
        imgtool::upload::capture_to_server(dev, disk, &job.capture_options(), &target, progress)?;
    Ok(Published {
        image_id: r.image_id,
        version: r.version,
        url: r.url,
        bytes_sent: r.bytes_sent,
    })
}

/// `initrd-agent backup`: the boot flow's backup minus booting and networking.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Image server URL (`imgtool serve` with uploads enabled).
    #[arg(long)]
    pub server: String,
    /// The group whose next version this disk becomes.
    #[arg(long)]
    pub group: String,
    /// The one-time upload token (as `netboot.token=`).
    #[arg(long)]
    pub token: String,
    /// Source block device or disk-image file.
    #[arg(long, conflicts_with = "hint")]
    pub disk: Option<PathBuf>,
    /// Pick the disk by hints instead: serial=…,model=…,wwn=…,path=…,size>=…
    #[arg(long)]
    pub hint: Option<String>,
    /// Only these partitions, e.g. `1,2,4` (as `netboot.partitions=`; default: all).
    #[arg(long)]
    pub partitions: Option<String>,
    /// Name to report under (default: the group).
    #[arg(long)]
    pub node: Option<String>,
}

/// Runs `initrd-agent backup`; the arguments are checked as the kernel command line's
/// keys are (the same parser), and a failure is reported to the board.
pub fn command(args: BackupArgs) -> anyhow::Result<Published> {
    let mut line = format!(
        "netboot.mode=backup netboot.server={} netboot.group={} netboot.token={}",
        args.server, args.group, args.token
    );
    if let Some(p) = &args.partitions {
        line.push_str(&format!(" netboot.partitions={p}"));
    }
    if let Some(n) = &args.node {
        line.push_str(&format!(" netboot.node={n}"));
    }
    let cfg = Config::from_cmdline(&line)?;
    cfg.validate()?;
    let job = BackupJob::from_config(&cfg)?;
    let name = args.node.clone().unwrap_or_else(|| args.group.clone());
    let rep = Arc::new(Reporter::new(Some(job.server.clone()), name));
    let disk = match &args.disk {
        Some(d) => d.clone(),
        None => {
            let cands = crate::target::list_disks(Path::new("/sys/block"));
            crate::target::select(&cands, args.hint.as_deref())?.path
        }
    };
    backup(&job, &disk, &rep).inspect_err(|e| rep.phase(Phase::Failed, &format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_needs_server_group_and_token_and_says_which_is_missing() {
        let tok = "0123456789abcdef0123";
        let full = format!(
            "netboot.mode=backup netboot.server=http://s:8080/ netboot.group=compute netboot.token={tok} netboot.partitions=2,1"
        );
        let j = BackupJob::from_config(&Config::from_cmdline(&full).unwrap()).unwrap();
        assert_eq!(
            j,
            BackupJob {
                server: "http://s:8080".into(),
                group: "compute".into(),
                token: tok.into(),
                partitions: Some(vec![2, 1]),
            }
        );
        assert_eq!(j.capture_options().partitions, Some(vec![2, 1]));
        assert_eq!(
            j.capture_options().chunk_size,
            CaptureOptions::default().chunk_size
        );
        assert_eq!(j.token_hint(), "012345…");
        for (line, missing) in [
            (
                format!("netboot.group=compute netboot.token={tok}"),
                "netboot.server",
            ),
            (
                format!("netboot.server=http://s netboot.token={tok}"),
                "netboot.group",
            ),
            (
                "netboot.server=http://s netboot.group=compute".to_string(),
                "netboot.token",
            ),
        ] {
            let e = BackupJob::from_config(&Config::from_cmdline(&line).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(missing), "{line}: {e}");
        }
    }
}
