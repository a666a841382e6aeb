//! `imgtool`: parses arguments, calls the library (one function per subcommand) and
//! prints what [`imgtool::render`] makes of the result. Errors become exit codes here.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use imgtool::capture::{capture, CaptureOptions};
use imgtool::disk::{usage, Disk};
use imgtool::manifest::Image;
use imgtool::progress::Progress;
use imgtool::render;
use imgtool::restore::{restore, RestoreOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Capture a master disk into a logical-group image, and inspect, verify, diff, restore
/// and export such images.
///
/// An image is a directory: `layout` (the partition table), `manifest` (chunks and their
/// sha256; its own sha256 is the image id) and one zstd payload per partition holding only
/// the blocks the file system uses.
///
/// Typical use:
///   imgtool capture /dev/sda /srv/images/compute      # on the master, unmounted
///   imgtool capture /dev/sda http://server:8080/compute --token-file T   # upload a new version
///   imgtool images /srv/images && imgtool rollback /srv/images compute
///   imgtool verify /srv/images/compute
///   imgtool restore /srv/images/compute /dev/nvme0n1 --dry-run
///   imgtool export /srv/images/compute vm.raw --size 20G
///   imgtool keygen /root/netboot-site && imgtool sign /srv/images/compute --key /root/netboot-site
///   imgtool verify /srv/images/compute --trust /root/netboot-site.pub
#[derive(Parser)]
#[command(name = "imgtool", version, verbatim_doc_comment)]
struct Cli {
    /// Print a JSON document on stdout instead of text (and no progress bars).
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Capture DISK (block device or raw disk-image file) into a new IMAGE_DIR, or upload
    /// it to `imgtool serve` (IMAGE_DIR = http://server:port/GROUP, with a token).
    ///
    /// Stores the partition table, the first MiB (boot code) and, per partition, only the
    /// used blocks: ext2/3/4 from their block bitmaps, FAT from its allocation table, swap as
    /// its header (UUID and label); other contents as their non-zero 64 KiB blocks. Same
    /// disk, same options => same bytes and same image id.
    ///
    /// An upload streams each chunk while capturing (nothing staged locally); the server
    /// checks every chunk as it arrives and publishes the image as a new version of GROUP
    /// (GROUP@<id12>, made current). A cut or refused upload publishes nothing; run it again.
    Capture(CaptureArgs),
    /// Restore IMAGE_DIR onto TARGET (block device or disk-image file).
    ///
    /// An equal partition table (same kind, sector size, starts, sizes, types) is kept;
    /// otherwise fixed partitions are laid out as captured and the grow partition (the last)
    /// takes the rest of the disk, its ext4 grown to fit. Refuses, before writing anything,
    /// a mounted target, a too-small disk, a different logical sector size, and an image
    /// whose payload does not match its manifest. The table and the first MiB go last.
    Restore(RestoreArgs),
    /// Show an image's layout, partitions, sizes and id.
    Inspect(InspectArgs),
    /// Decompress every chunk and check its sha256; names the first bad chunk.
    Verify(VerifyArgs),
    /// Make a new ed25519 signing key: KEY (secret, mode 0600, for `sign`) and KEY.pub
    /// (public, for `verify --trust` and `pxe-builder initrd --trust`). Never overwrites.
    Keygen(KeygenArgs),
    /// Sign IMAGE_DIR with KEY: adds this key's line to IMAGE_DIR/signature. The signature
    /// covers the image id, so manifest, layout and every chunk. Several keys may sign one
    /// image (key rotation); run `imgtool verify` first.
    Sign(SignArgs),
    /// Compare an image with a disk: layout equal or not (and why); for an equal layout,
    /// which chunks differ. Exit 0 when identical, 1 when different, 2 on error.
    Diff(DiffArgs),
    /// Serve images over HTTP (Range requests) and collect node status reports.
    ///
    /// Files are looked up under IMAGE_ROOT, then under each --tree (a pxe-builder tree, for
    /// etc/bootopts and clone-plan.json). Agents POST to /status/<node>; GET /status, or
    /// `imgtool status --server URL`, shows the board. nginx or any static server serving
    /// the same directories works as a pull-only primary.
    ///
    /// Limits (docs/DISTRIBUTION.md): only files whose real path is inside a root; request
    /// heads 16 KiB / 64 fields (431); a head within 15 s of the accept or the previous
    /// response, also the keep-alive idle limit; request bodies 16 KiB (413); a client
    /// taking less than 128 KiB/s over 30 s of waiting for it is disconnected;
    /// --max-connections. Status board: at most 4096 nodes; with a clone-plan.json a node
    /// may report only from its address in it, without one an address may own 4 node
    /// names; the server's own host (loopback) may report for any node. Anyone who can
    /// reach the server can read every file under the roots and the board.
    Serve(ServeArgs),
    /// Show the distribution tree from a running `imgtool serve`: who feeds whom (a node
    /// that is its upstream's only downstream continues its column, marked →), each
    /// node's phase, progress and errors; failed and re-routed nodes are marked.
    /// `--json` prints the raw board.
    Status(StatusArgs),
    /// Write a sparse raw disk file for a VM (`qemu -drive file=OUT,format=raw`).
    Export(ExportArgs),
    /// List the groups under an image root, their versions (name, image id, date, size)
    /// and which is current (*).
    Images(ImagesArgs),
    /// Make another version of GROUP current: VERSION (GROUP@<hex> or a prefix of its
    /// image id), or by default the newest one older than the current. Clones started
    /// before finish with the version they started with.
    Rollback(RollbackArgs),
    /// Remove old versions: in every group (or --group), all but the current one and the
    /// --keep newest others.
    Prune(PruneArgs),
}

#[derive(Args)]
struct ImagesArgs {
    /// The image root (default: the current directory).
    #[arg(default_value = ".")]
    root: PathBuf,
}

#[derive(Args)]
struct RollbackArgs {
    root: PathBuf,
    group: String,
    version: Option<String>,
}

#[derive(Args)]
struct PruneArgs {
    root: PathBuf,
    /// Versions kept besides the current one.
    #[arg(long, default_value_t = imgtool::versions::DEFAULT_KEEP)]
    keep: usize,
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
}

#[derive(Args)]
struct CaptureArgs {
    disk: PathBuf,
    /// A new image directory, or http://server:port/GROUP to upload to `imgtool serve`.
    image_dir: PathBuf,
    /// Upload token (for an http:// destination); prefer --token-file (a command line is
    /// visible to other users of this machine).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the upload token (its first line).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Only these partitions, e.g. `1,2,4` (default: all).
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<u32>>,
    /// zstd level (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Compression threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Store partition N whole, ignoring its file system (repeatable).
    #[arg(long)]
    raw: Vec<u32>,
    /// Raw bytes per chunk, a power of two from 64K to 64M. Smaller chunks compress a
    /// little worse but cut the per-hop latency of relayed distribution.
    #[arg(long, default_value = "8M", value_parser = parse_chunk_size)]
    chunk_size: u64,
    /// Capture even though a partition is mounted read-write (the copy may be inconsistent).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct RestoreArgs {
    image_dir: PathBuf,
    target: PathBuf,
    /// Only these partitions (default: all in the image).
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<u32>>,
    /// Print the plan and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Read every chunk back after writing and check its sha256.
    #[arg(long)]
    verify: bool,
    /// Fetch and write every chunk. By default, when the target's table equals the
    /// image's, each chunk is first hashed on the target and only differing chunks are
    /// fetched and written (delta re-clone).
    #[arg(long)]
    full: bool,
    /// An MBR image on a disk past 2 TiB (2^32 sectors): accept the grow partition capped
    /// at MBR's last sector, the rest of the disk unused (refused without it).
    #[arg(long)]
    mbr_cap: bool,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Refuse the image unless one of these public keys signed it (a KEY.pub file or a
    /// directory of them; repeatable). Checked before anything is written.
    #[arg(long, value_name = "KEY.pub")]
    trust: Vec<PathBuf>,
}

#[derive(Args)]
struct InspectArgs {
    image_dir: PathBuf,
}

#[derive(Args)]
struct VerifyArgs {
    image_dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also require a signature by one of these public keys (a KEY.pub file or a
    /// directory of them; repeatable).
    #[arg(long, value_name = "KEY.pub")]
    trust: Vec<PathBuf>,
}

#[derive(Args)]
struct KeygenArgs {
    key: PathBuf,
}

#[derive(Args)]
struct SignArgs {
    image_dir: PathBuf,
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
}

#[derive(Args)]
struct DiffArgs {
    image_dir: PathBuf,
    disk: PathBuf,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct ServeArgs {
    image_root: PathBuf,
    /// Also serve this boot tree (repeatable).
    #[arg(long)]
    tree: Vec<PathBuf>,
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: String,
    /// Open connections at most (each has its own thread); at the bound the
    /// longest-idle connection is closed, else the slowest reader taking under 512 KiB/s,
    /// else the new one is answered 503.
    #[arg(long, default_value_t = imgtool::httpd::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Take uploads (`imgtool capture DISK http://…/GROUP`) with the tokens in FILE
    /// (`<group> <token>` lines; re-read when it changes). It must not be servable: keep
    /// it outside the roots or give it a name starting with `.`.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Versions kept besides the current one after each upload publishes.
    #[arg(long, default_value_t = imgtool::versions::DEFAULT_KEEP)]
    keep: usize,
    /// Bytes one upload may send, e.g. 200G.
    #[arg(long, default_value = "1T", value_parser = parse_size)]
    max_upload_bytes: u64,
}

#[derive(Args)]
struct StatusArgs {
    #[arg(long)]
    server: String,
}

#[derive(Args)]
struct ExportArgs {
    image_dir: PathBuf,
    out: PathBuf,
    /// Disk size, e.g. `20G` (default: the master's size). Larger grows the last partition.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// An image directory, or an `http://` URL of one on any HTTP server.
fn open_image(p: &std::path::Path) -> Result<Image> {
    let s = p.to_string_lossy();
    let img = if s.starts_with("http://") || s.starts_with("https://") {
        Image::fetch(&s)?
    } else {
        Image::open(p)?
    };
    Ok(img)
}

/// With `--trust` keys: the image must be signed by one of them (before anything else).
fn check_trust(img: &Image, trust: &[PathBuf], quiet: bool) -> Result<()> {
    if trust.is_empty() {
        return Ok(());
    }
    let keys = imgtool::sign::load_trusted(trust)?;
    if keys.is_empty() {
        bail!(
            "--trust {}: no public key found (a directory is read for *.pub files)",
            trust[0].display()
        );
    }
    let k = imgtool::sign::verify_image(&keys, img)?;
    if !quiet {
        eprintln!("image {} is signed by trusted {k}", img.id());
    }
    Ok(())
}

fn parse_chunk_size(s: &str) -> std::result::Result<u64, String> {
    let n = parse_size(s)?;
    if !n.is_power_of_two() || !(64 << 10..=imgtool::chunk::MAX_CHUNK).contains(&n) {
        return Err(format!(
            "chunk size `{s}` must be a power of two from 64K to 64M"
        ));
    }
    Ok(n)
}

/// The largest size accepted on the command line: 1 EiB, far beyond any disk, and small
/// enough that sector arithmetic on it cannot overflow.
const MAX_SIZE: u64 = 1 << 60;

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a size like 512M, 20G, 1.5T or 21474836480");
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    // Digits with at most one decimal point: no sign, exponent, `inf` or `NaN`.
    let dots = num.chars().filter(|c| *c == '.').count();
    if num.is_empty() || dots > 1 || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let n = match num.parse::<u64>() {
        Ok(n) => n.checked_mul(mult),
        Err(_) => {
            let f: f64 = num.parse().map_err(|_| bad())?;
            let bytes = f * mult as f64;
            (bytes.is_finite() && bytes < MAX_SIZE as f64).then_some(bytes as u64)
        }
    };
    match n {
        Some(0) => Err(format!("size `{s}` must be positive")),
        Some(n) if n <= MAX_SIZE => Ok(n),
        _ => Err(format!(
            "size `{s}` is larger than the 1 EiB this tool accepts"
        )),
    }
}

/// How a subcommand prints: JSON documents or text, and its progress bars.
struct Out {
    json: bool,
    progress: Progress,
}

impl Out {
    /// Prints `value` as pretty JSON with `--json`, else the text `render` makes.
    fn print<T: serde::Serialize>(&self, value: &T, render: impl FnOnce() -> String) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            print!("{}", render());
        }
        Ok(())
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let out = Out {
        json: cli.json,
        progress: Progress::auto(cli.quiet || cli.json),
    };
    match cli.cmd {
        Cmd::Capture(a) => capture_cmd(a, &out)?,
        Cmd::Restore(a) => restore_cmd(a, &out)?,
        Cmd::Serve(a) => serve_cmd(a)?,
        Cmd::Status(a) => status_cmd(a, &out)?,
        Cmd::Inspect(a) => inspect_cmd(a, &out)?,
        Cmd::Verify(a) => verify_cmd(a, &out)?,
        Cmd::Keygen(a) => keygen_cmd(a, &out)?,
        Cmd::Sign(a) => sign_cmd(a, &out)?,
        Cmd::Diff(a) => return diff_cmd(a, &out),
        Cmd::Export(a) => export_cmd(a, &out)?,
        Cmd::Images(a) => images_cmd(a, &out)?,
        Cmd::Rollback(a) => rollback_cmd(a, &out)?,
        Cmd::Prune(a) => prune_cmd(a, &out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn capture_cmd(a: CaptureArgs, out: &Out) -> Result<()> {
    let u = usage(&a.disk);
    if u.mounted_rw() && !a.force {
        bail!(
            "refusing to capture {}: {}. Unmount it (or remount read-only), or pass --force to copy a live file system",
            a.disk.display(),
            u.describe()
        );
    }
    let dev = Disk::open_ro_direct(&a.disk)?;
    let opts = CaptureOptions {
        partitions: a.partitions,
        raw: a.raw,
        level: a.level,
        threads: a.threads,
        chunk_size: a.chunk_size,
        ..CaptureOptions::default()
    };
    let dest = a.image_dir.to_string_lossy().into_owned();
    if dest.starts_with("http://") || dest.starts_with("https://") {
        let token = upload_token(a.token.as_deref(), a.token_file.as_deref())?;
        let target = imgtool::upload::UploadTarget::parse(&dest, &token)?;
        let rep = imgtool::upload::capture_to_server(&dev, &a.disk, &opts, &target, &out.progress)
            .with_context(|| format!("uploading {} to {dest}", a.disk.display()))?;
        return out.print(&render::upload_json(&rep), || render::upload(&rep));
    }
    if a.token.is_some() || a.token_file.is_some() {
        bail!("--token and --token-file are for an upload (http://server:port/GROUP)");
    }
    let m = capture(&dev, &a.disk, &a.image_dir, &opts, &out.progress).with_context(|| {
        format!(
            "capturing {} into {}",
            a.disk.display(),
            a.image_dir.display()
        )
    })?;
    out.print(&render::capture_json(&m, &a.image_dir), || {
        render::capture(&m, &a.image_dir)
    })
}

/// The upload token of `--token` or `--token-file` (its first line).
fn upload_token(token: Option<&str>, file: Option<&std::path::Path>) -> Result<String> {
    match (token, file) {
        (Some(t), _) => Ok(t.to_string()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading the token file {}", f.display()))?;
            Ok(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => bail!("an upload needs --token-file FILE (or --token T)"),
    }
}

fn images_cmd(a: ImagesArgs, out: &Out) -> Result<()> {
    let groups = imgtool::versions::list(&a.root)?;
    out.print(&groups, || render::images(&groups))
}

fn rollback_cmd(a: RollbackArgs, out: &Out) -> Result<()> {
    let (from, to) = imgtool::versions::rollback(&a.root, &a.group, a.version.as_deref())?;
    let doc = serde_json::json!({ "group": a.group, "from": from, "current": to });
    out.print(&doc, || {
        format!("{}: current version {to} (was {from})\n", a.group)
    })
}

fn prune_cmd(a: PruneArgs, out: &Out) -> Result<()> {
    let gone = imgtool::versions::prune(&a.root, a.group.as_deref(), a.keep)?;
    out.print(&serde_json::json!({ "removed": gone }), || {
        if gone.is_empty() {
            "nothing to prune\n".to_string()
        } else {
            format!("removed {}\n", gone.join(", "))
        }
    })
}

fn restore_cmd(a: RestoreArgs, out: &Out) -> Result<()> {
    let img = open_image(&a.image_dir)?;
    check_trust(&img, &a.trust, out.json)?;
    let dev = if a.dry_run {
        Disk::open_ro(&a.target)?
    } else {
        Disk::open_rw_direct(&a.target)?
    };
    let opts = RestoreOptions {
        partitions: a.partitions,
        dry_run: a.dry_run,
        threads: a.threads,
        verify: a.verify,
        mbr_cap: a.mbr_cap,
        delta: !a.full,
        ..Default::default()
    };
    let rep = restore(&img, &dev, &opts, &out.progress).with_context(|| {
        format!(
            "restoring {} onto {}",
            a.image_dir.display(),
            a.target.display()
        )
    })?;
    out.print(&rep, || {
        let done = if a.dry_run {
            format!("dry run: nothing was written to {}\n", a.target.display())
        } else {
            format!(
                "restored image {} onto {}\n",
                rep.image_id,
                a.target.display()
            )
        };
        render::restore_plan(&rep) + &done
    })
}

fn serve_cmd(a: ServeArgs) -> Result<()> {
    let mut roots = vec![a.image_root];
    roots.extend(a.tree);
    for r in &roots {
        if !r.is_dir() {
            bail!("{} is not a directory", r.display());
        }
    }
    let uploads = a.tokens.map(|tokens| imgtool::upload::UploadOptions {
        tokens,
        keep: a.keep,
        max_upload_bytes: a.max_upload_bytes,
    });
    let opts = imgtool::serve::ServeOptions {
        roots,
        listen: a.listen,
        max_connections: a.max_connections,
    };
    imgtool::serve::bind_with_uploads(opts, uploads)?.run()?;
    Ok(())
}

fn status_cmd(a: StatusArgs, out: &Out) -> Result<()> {
    let board = imgtool::serve::fetch_status(&a.server)?;
    out.print(&board, || {
        if board.is_empty() {
            format!("no node has reported to {} yet\n", a.server)
        } else {
            render::status_tree(&board)
        }
    })
}

fn inspect_cmd(a: InspectArgs, out: &Out) -> Result<()> {
    let img = open_image(&a.image_dir)?;
    let signers = render::signers(&img);
    out.print(&render::inspect_json(&img, &signers), || {
        render::inspect(&img, &signers)
    })
}

fn verify_cmd(a: VerifyArgs, out: &Out) -> Result<()> {
    let img = open_image(&a.image_dir)?;
    check_trust(&img, &a.trust, out.json)?;
    let rep = imgtool::verify::verify(&img, a.threads, &out.progress)
        .with_context(|| format!("verifying {}", a.image_dir.display()))?;
    out.print(&rep, || render::verify(&rep))
}

fn keygen_cmd(a: KeygenArgs, out: &Out) -> Result<()> {
    let k = imgtool::sign::keygen(&a.key)?;
    let public = imgtool::sign::public_path(&a.key);
    let doc = serde_json::json!({ "key_id": k.id, "secret": a.key, "public": public });
    out.print(&doc, || {
        format!(
            "key {} written: {} (secret, keep it off the nodes) and {} (public)\n",
            k.id,
            a.key.display(),
            public.display()
        )
    })
}

fn sign_cmd(a: SignArgs, out: &Out) -> Result<()> {
    let k = imgtool::sign::SecretKey::load(&a.key)?;
    let (id, stale) = imgtool::sign::sign_dir(&a.image_dir, &k)
        .with_context(|| format!("signing {}", a.image_dir.display()))?;
    let doc = serde_json::json!({ "image_id": id, "key_id": k.id, "stale_dropped": stale });
    out.print(&doc, || {
        let dropped = if stale > 0 {
            format!("dropped {stale} signature(s) of an earlier image id\n")
        } else {
            String::new()
        };
        let file = a.image_dir.join(imgtool::sign::SIGNATURE_FILE);
        format!(
            "{dropped}image {id} signed by key {} ({})\n",
            k.id,
            file.display()
        )
    })
}

/// Exit 0 when the disk holds the image, 1 when it differs.
fn diff_cmd(a: DiffArgs, out: &Out) -> Result<ExitCode> {
    let img = open_image(&a.image_dir)?;
    let dev = Disk::open_ro(&a.disk)?;
    let rep = imgtool::diff::diff(&img, &dev, a.threads, &out.progress)?;
    let same = rep.same();
    out.print(&rep, || render::diff(&rep))?;
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Restores into a new sparse file; the file is removed again when that fails.
fn export_cmd(a: ExportArgs, out: &Out) -> Result<()> {
    let img = open_image(&a.image_dir)?;
    let size = a.size.unwrap_or(img.layout.disk_size);
    if a.out.exists() {
        bail!(
            "{} already exists; export writes a new file",
            a.out.display()
        );
    }
    let f = std::fs::File::create_new(&a.out)
        .with_context(|| format!("creating {}", a.out.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {} to {size} bytes", a.out.display()))?;
    drop(f);
    let res = (|| -> Result<_> {
        let dev = Disk::open_rw_direct(&a.out)?;
        let opts = RestoreOptions {
            partitions: None,
            dry_run: false,
            threads: a.threads,
            verify: false,
            ..Default::default()
        };
        Ok(restore(&img, &dev, &opts, &out.progress)?)
    })();
    let rep = match res {
        Ok(rep) => rep,
        Err(e) => {
            let _ = std::fs::remove_file(&a.out);
            return Err(e.context(format!(
                "exporting {} to {}",
                a.image_dir.display(),
                a.out.display()
            )));
        }
    };
    out.print(&rep, || {
        format!(
            "{}exported image {} to {} ({} sparse)\n",
            render::restore_plan(&rep),
            rep.image_id,
            a.out.display(),
            render::human(size)
        )
    })
}

fn main() -> ExitCode {
    imgtool::disk::keep_freed_memory();
    let cli = Cli::parse();
    match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imgtool: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_exactly_and_refuse_what_is_not_a_size() {
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("21474836480"), Ok(21474836480));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        // Issue 10: `inf` and `NaN` went through f64 and became u64::MAX or 0.
        for bad in [
            "inf", "NaN", "infG", "-1G", "1e3M", "", "G", "1.2.3M", "0", "0.0T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("2000000T").is_err());
    }
}
