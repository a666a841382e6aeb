//! `pxe-builder`: parses arguments, calls the library and prints what
//! [`pxe_builder::render`] makes of the result.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pxe_builder::{lookup, model, render, tree};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Build the complete PXE/TFTP boot tree of a cluster from one cluster.toml.
///
/// The tree holds pxelinux (BIOS) and GRUB (UEFI) files per node (01-<mac>) and per subnet
/// (upper-case hex IP prefixes, the exact minimal cover of each entity's subnet), the
/// subnets' etc/bootopts, vSMP board entries, iPXE scripts, dnsmasq and ISC dhcpd
/// snippets, and clone-plan.json. See pxe-builder/examples/cluster.toml.
///
///   pxe-builder check cluster.toml
///   pxe-builder build --cluster cluster.toml --out /srv/tftp
///   pxe-builder lookup --tree /srv/tftp --mac 52:54:00:12:34:56 --ip 172.20.0.5
#[derive(Parser)]
#[command(name = "pxe-builder", version, verbatim_doc_comment)]
struct Cli {
    /// Print a JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate cluster.toml; report every problem with file:line:column, then render the
    /// boot files in memory (a value an output cannot hold is reported with its file).
    /// Prints each cloning group's distribution shape, its depth and its longest chain.
    Check { cluster: PathBuf },
    /// Write the boot tree to OUT (built beside it, then swapped in: on error OUT is unchanged).
    Build {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the boot initrd: the static agent as /init, kernel modules (dependency order),
    /// e2fsprogs with their libraries, busybox; zstd-compressed, reproducible.
    Initrd {
        /// The static initrd-agent binary (scripts/build-agent.sh prints its path).
        #[arg(long)]
        agent: PathBuf,
        /// The boot kernel, /boot/vmlinuz-<release>; its release picks /lib/modules/<release>.
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// A module that must be in the initrd (repeatable); the defaults are added when present.
        #[arg(long)]
        module: Vec<String>,
        #[arg(long, default_value = "/lib/modules")]
        modules_root: PathBuf,
        /// A public key (`imgtool keygen`'s KEY.pub) whose signature the nodes require on
        /// every image they clone (repeatable; see docs/TRUST.md). Without it nodes check
        /// integrity only.
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
    },
    /// Mark NODE of a built tree for a network backup into GROUP: its entries boot the
    /// agent in backup mode with a fresh one-time upload token, which is also added to
    /// the tokens file `imgtool serve --tokens` reads (keep it outside the tree).
    /// `--clear` puts the node's usual entries back and revokes the token (docs/BOOT.md).
    Backup {
        node: String,
        #[arg(long, required_unless_present = "clear")]
        group: Option<String>,
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        tree: PathBuf,
        /// The upload tokens file (`imgtool serve --tokens`), outside the tree.
        #[arg(long)]
        tokens: PathBuf,
        /// Only these partitions, e.g. `1,2,4` (as `imgtool capture --partitions`).
        #[arg(long, value_delimiter = ',')]
        partitions: Option<Vec<u32>>,
        /// Undo the mark: the usual entries back, the token revoked.
        #[arg(long, conflicts_with_all = ["group", "partitions"])]
        clear: bool,
    },
    /// Show which files pxelinux tries for a client, which one it loads, and what it boots.
    Lookup {
        #[arg(long)]
        tree: PathBuf,
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        #[arg(long)]
        mac: Option<String>,
    },
}

fn run(cli: Cli) -> Result<()> {
    let text = match cli.cmd {
        Cmd::Check { cluster } => {
            let t0 = std::time::Instant::now();
            let timing = std::env::var_os("PXE_BUILDER_TIMING").is_some();
            let c = model::load(&cluster)?;
            if timing {
                eprintln!("model: {:?}", t0.elapsed());
            }
            let t = tree::check(&c)?;
            if timing {
                eprintln!("render: {:?}", t0.elapsed());
            }
            let text = if cli.json {
                format!("{}\n", render::check_json(&c, &t.shapes))
            } else {
                render::check(&cluster, &c, &t.shapes)
            };
            // The process ends next: freeing 100 000 nodes' worth is wasted time.
            std::mem::forget((c, t));
            text
        }
        Cmd::Build { cluster, out } => {
            let c = model::load(&cluster)?;
            let s = tree::build(&c, &out).with_context(|| format!("building {}", out.display()))?;
            std::mem::forget(c);
            json_or(cli.json, &s, || render::build(&s))?
        }
        Cmd::Initrd {
            agent,
            kernel,
            out,
            module,
            modules_root,
            trust,
        } => {
            let mut spec =
                pxe_builder::initrd::Spec::for_kernel(&agent, &kernel, &modules_root, module)?;
            spec.trusted = trust;
            let (bytes, summary) = pxe_builder::initrd::build(&spec)?;
            std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            json_or(cli.json, &summary, || render::initrd(&out, &summary))?
        }
        Cmd::Backup {
            node,
            group,
            cluster,
            tree,
            tokens,
            partitions,
            clear,
        } => {
            let c = model::load(&cluster)?;
            let m = match (clear, group) {
                (false, Some(g)) => {
                    pxe_builder::backup::mark(&c, &tree, &tokens, &node, &g, partitions.as_deref())?
                }
                _ => pxe_builder::backup::clear(&c, &tree, &tokens, &node)?,
            };
            json_or(cli.json, &m, || m.render())?
        }
        Cmd::Lookup { tree, ip, mac } => {
            if ip.is_none() && mac.is_none() {
                bail!("give --ip, --mac or both");
            }
            let mac = mac.map(|m| model::parse_mac(&m)).transpose()?;
            let l = lookup::lookup(&tree, mac, ip);
            json_or(cli.json, &l, || render::lookup(&l))?
        }
    };
    print!("{text}");
    Ok(())
}

/// `value` as pretty JSON with `--json`, else the text `render` makes.
fn json_or<T: serde::Serialize>(
    json: bool,
    value: &T,
    render: impl FnOnce() -> String,
) -> Result<String> {
    Ok(if json {
        serde_json::to_string_pretty(value)? + "\n"
    } else {
        render()
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pxe-builder: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
