//! `imgtool`: parses arguments and calls the library. Errors become exit codes here.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use imgtool::capture::{capture, CaptureOptions};
use imgtool::disk::{usage, Disk};
use imgtool::manifest::Image;
use imgtool::progress::Progress;
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
    /// Capture DISK (block device or raw disk-image file) into a new IMAGE_DIR.
    ///
    /// Stores the partition table, the first MiB (boot code) and, per partition, only the
    /// used blocks: ext2/3/4 from their block bitmaps, FAT from its allocation table, swap as
    /// its header (UUID and label); other contents as their non-zero 64 KiB blocks. Same
    /// disk, same options => same bytes and same image id.
    Capture {
        disk: PathBuf,
        image_dir: PathBuf,
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
    },
    /// Restore IMAGE_DIR onto TARGET (block device or disk-image file).
    ///
    /// An equal partition table (same kind, sector size, starts, sizes, types) is kept;
    /// otherwise fixed partitions are laid out as captured and the grow partition (the last)
    /// takes the rest of the disk, its ext4 grown to fit. Refuses, before writing anything,
    /// a mounted target, a too-small disk, a different logical sector size, and an image
    /// whose payload does not match its manifest. The table and the first MiB go last.
    Restore {
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
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Refuse the image unless one of these public keys signed it (a KEY.pub file or a
        /// directory of them; repeatable). Checked before anything is written.
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
    },
    /// Show an image's layout, partitions, sizes and id.
    Inspect { image_dir: PathBuf },
    /// Decompress every chunk and check its sha256; names the first bad chunk.
    Verify {
        image_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Also require a signature by one of these public keys (a KEY.pub file or a
        /// directory of them; repeatable).
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
    },
    /// Make a new ed25519 signing key: KEY (secret, mode 0600, for `sign`) and KEY.pub
    /// (public, for `verify --trust` and `pxe-builder initrd --trust`). Never overwrites.
    Keygen { key: PathBuf },
    /// Sign IMAGE_DIR with KEY: adds this key's line to IMAGE_DIR/signature. The signature
    /// covers the image id, so manifest, layout and every chunk. Several keys may sign one
    /// image (key rotation); run `imgtool verify` first.
    Sign {
        image_dir: PathBuf,
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Compare an image with a disk: layout equal or not (and why); for an equal layout,
    /// which chunks differ. Exit 0 when identical, 1 when different, 2 on error.
    Diff {
        image_dir: PathBuf,
        disk: PathBuf,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
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
    Serve {
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
    },
    /// Show the distribution tree from a running `imgtool serve`: who feeds whom (a node
    /// that is its upstream's only downstream continues its column, marked →), each
    /// node's phase, progress and errors; failed and re-routed nodes are marked.
    /// `--json` prints the raw board.
    Status {
        #[arg(long)]
        server: String,
    },
    /// Write a sparse raw disk file for a VM (`qemu -drive file=OUT,format=raw`).
    Export {
        image_dir: PathBuf,
        out: PathBuf,
        /// Disk size, e.g. `20G` (default: the master's size). Larger grows the last partition.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
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

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_plan(report: &imgtool::restore::RestoreReport) {
    let plan = &report.plan;
    if plan.keep_table {
        println!(
            "table: kept (the disk's {} table equals the image's)",
            plan.layout.table
        );
    } else {
        println!("table: rewritten as {} because:", plan.layout.table);
        for r in &plan.reasons {
            println!("  - {r}");
        }
    }
    let ss = plan.layout.sector_size as u64;
    for p in &plan.layout.partitions {
        println!(
            "  {:>3}  start {:>10}  size {:>10}  {:>10}  type {}",
            p.number,
            p.start,
            p.size,
            human(p.size * ss),
            p.type_
        );
    }
    for r in &report.regions {
        let grown = match r.grown {
            Some((a, b)) => format!(", grown {} -> {}", human(a), human(b)),
            None => String::new(),
        };
        println!(
            "  {:<5} {:<8} {} of data{grown}",
            r.name,
            r.filesystem,
            human(r.bytes)
        );
    }
}

/// The status board as the distribution tree: who feeds whom, then each node's progress;
/// failed nodes and re-routings are marked. A node that is its upstream's only downstream
/// is printed under it at the same depth, marked `→` (a 64-node chain stays one column).
fn print_status_tree(board: &std::collections::BTreeMap<String, imgtool::serve::NodeStatus>) {
    use std::collections::BTreeMap;
    let mut children: BTreeMap<String, Vec<&imgtool::serve::NodeStatus>> = BTreeMap::new();
    for n in board.values() {
        let up = if n.last.upstream.is_empty() {
            "primary"
        } else {
            n.last.upstream.as_str()
        };
        let up = if up != "primary" && !board.contains_key(up) {
            "primary"
        } else {
            up
        };
        children.entry(up.to_string()).or_default().push(n);
    }
    fn line(n: &imgtool::serve::NodeStatus, depth: usize, fed: bool) -> String {
        let pct = if n.last.total > 0 {
            format!("{:.0}%", 100.0 * n.last.done as f64 / n.last.total as f64)
        } else {
            String::new()
        };
        let mark = match n.last.phase.as_str() {
            "failed" => "FAILED ",
            _ if n.history.iter().any(|h| h.contains("rerouted")) => "rerouted ",
            _ => "",
        };
        format!(
            "{:indent$}{}{} [{}{} {}] {}",
            "",
            if fed { "→ " } else { "" },
            n.node,
            mark,
            n.last.phase,
            pct,
            n.last.message,
            indent = depth * 2
        )
    }
    fn walk(
        name: &str,
        depth: usize,
        children: &std::collections::BTreeMap<String, Vec<&imgtool::serve::NodeStatus>>,
        seen: &mut std::collections::BTreeSet<String>,
    ) {
        let kids = children.get(name).map(|v| v.as_slice()).unwrap_or(&[]);
        // An only child continues its upstream's column.
        let fed = kids.len() == 1 && name != "primary";
        let at = if fed { depth - 1 } else { depth };
        for n in kids {
            if seen.insert(n.node.clone()) {
                println!("{}", line(n, at, fed));
                walk(&n.node, at + 1, children, seen);
            }
        }
    }
    println!("primary");
    let mut seen = std::collections::BTreeSet::new();
    walk("primary", 1, &children, &mut seen);
    for n in board.values() {
        if !seen.contains(&n.node) {
            println!("{}", line(n, 1, false));
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let progress = Progress::auto(cli.quiet || cli.json);
    match cli.cmd {
        Cmd::Capture {
            disk,
            image_dir,
            partitions,
            level,
            threads,
            raw,
            force,
            chunk_size,
        } => {
            let u = usage(&disk);
            if u.mounted_rw() && !force {
                bail!(
                    "refusing to capture {}: {}. Unmount it (or remount read-only), or pass --force to copy a live file system",
                    disk.display(),
                    u.describe()
                );
            }
            let dev = Disk::open_ro_direct(&disk)?;
            let opts = CaptureOptions {
                partitions,
                raw,
                level,
                threads,
                chunk_size,
            };
            let m = capture(&dev, &disk, &image_dir, &opts, &progress).with_context(|| {
                format!("capturing {} into {}", disk.display(), image_dir.display())
            })?;
            if cli.json {
                print_json(&serde_json::json!({
                    "image_dir": image_dir, "image_id": m.image_id,
                    "regions": m.regions.iter().map(|r| serde_json::json!({
                        "name": r.name, "filesystem": r.filesystem, "uuid": r.uuid, "label": r.label,
                        "used_bytes": r.used_bytes, "compressed_bytes": r.compressed_bytes(), "chunks": r.chunks.len()
                    })).collect::<Vec<_>>()
                }))?;
            } else {
                for r in &m.regions {
                    println!(
                        "{:<5} {:<8} {:>10} used -> {:>10} ({} chunks)",
                        r.name,
                        r.filesystem,
                        human(r.used_bytes),
                        human(r.compressed_bytes()),
                        r.chunks.len()
                    );
                }
                println!("image {} written to {}", m.image_id, image_dir.display());
            }
        }
        Cmd::Restore {
            image_dir,
            target,
            partitions,
            dry_run,
            verify,
            threads,
            trust,
        } => {
            let img = open_image(&image_dir)?;
            check_trust(&img, &trust, cli.json)?;
            let dev = if dry_run {
                Disk::open_ro(&target)?
            } else {
                Disk::open_rw_direct(&target)?
            };
            let opts = RestoreOptions {
                partitions,
                dry_run,
                threads,
                verify,
                ..Default::default()
            };
            let rep = restore(&img, &dev, &opts, &progress).with_context(|| {
                format!(
                    "restoring {} onto {}",
                    image_dir.display(),
                    target.display()
                )
            })?;
            if cli.json {
                print_json(&rep)?;
            } else {
                print_plan(&rep);
                if dry_run {
                    println!("dry run: nothing was written to {}", target.display());
                } else {
                    println!("restored image {} onto {}", rep.image_id, target.display());
                }
            }
        }
        Cmd::Serve {
            image_root,
            tree,
            listen,
            max_connections,
        } => {
            let mut roots = vec![image_root];
            roots.extend(tree);
            for r in &roots {
                if !r.is_dir() {
                    bail!("{} is not a directory", r.display());
                }
            }
            imgtool::serve::serve(imgtool::serve::ServeOptions {
                roots,
                listen,
                max_connections,
            })
            .map_err(anyhow::Error::msg)?;
        }
        Cmd::Status { server } => {
            let board = imgtool::serve::fetch_status(&server).map_err(anyhow::Error::msg)?;
            if cli.json {
                print_json(&board)?;
            } else if board.is_empty() {
                println!("no node has reported to {server} yet");
            } else {
                print_status_tree(&board);
            }
        }
        Cmd::Inspect { image_dir } => {
            let img = open_image(&image_dir)?;
            let m = &img.manifest;
            // Who claims to have signed it (not checked here: `verify --trust KEY.pub` does).
            let signers: Result<Vec<(String, bool)>, String> =
                match imgtool::sign::read_signature_file(img.source.as_ref()) {
                    Err(_) => Ok(vec![]),
                    Ok(bytes) => imgtool::sign::Signatures::parse(&bytes, "signature")
                        .map(|s| {
                            s.lines
                                .into_iter()
                                .map(|l| (l.key_id, l.image_id == m.image_id))
                                .collect()
                        })
                        .map_err(|e| e.to_string()),
                };
            if cli.json {
                let signatures = match &signers {
                    Ok(v) => serde_json::json!(v
                        .iter()
                        .map(|(k, this)| serde_json::json!({"key_id": k, "this_image": this}))
                        .collect::<Vec<_>>()),
                    Err(e) => serde_json::json!({ "error": e }),
                };
                print_json(&serde_json::json!({
                    "image_id": m.image_id, "version": m.version, "chunk_size": m.chunk_size, "level": m.level,
                    "signatures": signatures,
                    "layout": img.layout,
                    "regions": m.regions.iter().map(|r| serde_json::json!({
                        "name": r.name, "number": r.number, "filesystem": r.filesystem, "uuid": r.uuid,
                        "label": r.label, "size": r.size, "fs_size": r.fs_size, "used_bytes": r.used_bytes,
                        "compressed_bytes": r.compressed_bytes(), "chunks": r.chunks.len(), "payload": r.payload
                    })).collect::<Vec<_>>()
                }))?;
            } else {
                let l = &img.layout;
                println!("image      {}", m.image_id);
                match &signers {
                    Ok(v) if v.is_empty() => println!("signature  none"),
                    Ok(v) => println!(
                        "signature  {} (unchecked: `imgtool verify --trust KEY.pub` checks them)",
                        v.iter()
                            .map(|(k, this)| if *this {
                                format!("key {k}")
                            } else {
                                format!("key {k} (for another image id)")
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Err(e) => println!("signature  unreadable: {e}"),
                }
                println!(
                    "format     version {}, chunks up to {}, zstd level {}",
                    m.version,
                    human(m.chunk_size),
                    m.level
                );
                println!(
                    "layout     {} table, {}-byte sectors, disk {} ({} bytes), grow partition {}",
                    l.table,
                    l.sector_size,
                    human(l.disk_size),
                    l.disk_size,
                    l.grow.map(|g| g.to_string()).unwrap_or("-".into())
                );
                println!("  #  start        size         bytes      type                                   fs");
                for p in &l.partitions {
                    println!(
                        "{:>3}  {:<12} {:<12} {:>10} {:<38} {}",
                        p.number,
                        p.start,
                        p.size,
                        human(p.size * l.sector_size as u64),
                        p.type_,
                        p.filesystem.as_deref().unwrap_or(if p.is_extended() {
                            "(extended)"
                        } else {
                            "(not captured)"
                        })
                    );
                }
                println!("region fs       uuid                                 label        used       stored     chunks");
                for r in &m.regions {
                    println!(
                        "{:<6} {:<8} {:<36} {:<12} {:>10} {:>10} {:>6}",
                        r.name,
                        r.filesystem,
                        r.uuid.as_deref().unwrap_or("-"),
                        r.label.as_deref().unwrap_or("-"),
                        human(r.used_bytes),
                        human(r.compressed_bytes()),
                        r.chunks.len()
                    );
                }
            }
        }
        Cmd::Verify {
            image_dir,
            threads,
            trust,
        } => {
            let img = open_image(&image_dir)?;
            check_trust(&img, &trust, cli.json)?;
            let rep = imgtool::verify::verify(&img, threads, &progress)
                .with_context(|| format!("verifying {}", image_dir.display()))?;
            if cli.json {
                print_json(&rep)?;
            } else {
                println!(
                    "image {} OK: {} chunks in {} regions, {} raw, {} stored",
                    rep.image_id,
                    rep.chunks,
                    rep.regions,
                    human(rep.raw_bytes),
                    human(rep.compressed_bytes)
                );
            }
        }
        Cmd::Keygen { key } => {
            let k = imgtool::sign::keygen(&key)?;
            let public = imgtool::sign::public_path(&key);
            if cli.json {
                print_json(&serde_json::json!({
                    "key_id": k.id, "secret": key, "public": public,
                }))?;
            } else {
                println!(
                    "key {} written: {} (secret, keep it off the nodes) and {} (public)",
                    k.id,
                    key.display(),
                    public.display()
                );
            }
        }
        Cmd::Sign { image_dir, key } => {
            let k = imgtool::sign::SecretKey::load(&key)?;
            let (id, stale) = imgtool::sign::sign_dir(&image_dir, &k)
                .with_context(|| format!("signing {}", image_dir.display()))?;
            if cli.json {
                print_json(&serde_json::json!({
                    "image_id": id, "key_id": k.id, "stale_dropped": stale,
                }))?;
            } else {
                if stale > 0 {
                    println!("dropped {stale} signature(s) of an earlier image id");
                }
                println!(
                    "image {id} signed by key {} ({})",
                    k.id,
                    image_dir.join(imgtool::sign::SIGNATURE_FILE).display()
                );
            }
        }
        Cmd::Diff {
            image_dir,
            disk,
            threads,
        } => {
            let img = open_image(&image_dir)?;
            let dev = Disk::open_ro(&disk)?;
            let rep = imgtool::diff::diff(&img, &dev, threads, &progress)?;
            let same = rep.layout_kept && rep.regions.iter().all(|r| r.differing.is_empty());
            if cli.json {
                print_json(&rep)?;
            } else {
                if rep.layout_equal {
                    println!("layout: equal");
                } else if rep.layout_kept {
                    println!("layout: the image's, grown to this disk (restore keeps it)");
                    for d in &rep.layout_differences {
                        println!("  - {d}");
                    }
                } else {
                    println!("layout: different");
                    for d in &rep.layout_differences {
                        println!("  - {d}");
                    }
                }
                for r in &rep.regions {
                    println!(
                        "{:<5} {} of {} chunks differ ({})",
                        r.name,
                        r.differing.len(),
                        r.chunks,
                        human(r.differing_bytes)
                    );
                }
            }
            return Ok(if same {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Cmd::Export {
            image_dir,
            out,
            size,
            threads,
        } => {
            let img = open_image(&image_dir)?;
            let size = size.unwrap_or(img.layout.disk_size);
            if out.exists() {
                bail!("{} already exists; export writes a new file", out.display());
            }
            let f = std::fs::File::create_new(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.set_len(size)
                .with_context(|| format!("sizing {} to {size} bytes", out.display()))?;
            drop(f);
            let res = (|| -> Result<_> {
                let dev = Disk::open_rw_direct(&out)?;
                Ok(restore(
                    &img,
                    &dev,
                    &RestoreOptions {
                        partitions: None,
                        dry_run: false,
                        threads,
                        verify: false,
                        ..Default::default()
                    },
                    &progress,
                )?)
            })();
            match res {
                Ok(rep) => {
                    if cli.json {
                        print_json(&rep)?;
                    } else {
                        print_plan(&rep);
                        println!(
                            "exported image {} to {} ({} sparse)",
                            rep.image_id,
                            out.display(),
                            human(size)
                        );
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&out);
                    return Err(e.context(format!(
                        "exporting {} to {}",
                        image_dir.display(),
                        out.display()
                    )));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
