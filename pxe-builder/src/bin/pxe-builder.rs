//! `pxe-builder`: parses arguments and calls the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pxe_builder::{lookup, model, tree};
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
    match cli.cmd {
        Cmd::Check { cluster } => {
            let c = model::load(&cluster)?;
            tree::render(&c)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "nodes": c.nodes.len(), "entities": c.entities.len(), "groups": c.groups.len()})
                );
            } else {
                println!(
                    "{}: ok ({} nodes, {} entities, {} groups)",
                    cluster.display(),
                    c.nodes.len(),
                    c.entities.len(),
                    c.groups.len()
                );
            }
        }
        Cmd::Build { cluster, out } => {
            let c = model::load(&cluster)?;
            let s = tree::build(&c, &out).with_context(|| format!("building {}", out.display()))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "wrote {} files for {} nodes in {} entities to {}",
                    s.files, s.nodes, s.entities, s.out
                );
                for (h, e) in &s.hex_files {
                    println!("  pxelinux.cfg/{h:<8}  etc/bootopts/{h:<8}  entity {e}");
                }
            }
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
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "{}: {:.1} MB ({:.1} MB uncompressed), modules: {}",
                    out.display(),
                    summary.bytes as f64 / 1e6,
                    summary.uncompressed as f64 / 1e6,
                    summary.modules.join(" ")
                );
                if !summary.builtin.is_empty() {
                    println!("built into the kernel: {}", summary.builtin.join(" "));
                }
                if !summary.skipped.is_empty() {
                    println!(
                        "not in this kernel (skipped): {}",
                        summary.skipped.join(" ")
                    );
                }
                let keys: Vec<&str> = summary
                    .files
                    .iter()
                    .filter_map(|f| {
                        f.rsplit('/')
                            .next()
                            .filter(|_| f.starts_with("etc/netboot/trusted/"))
                    })
                    .collect();
                if keys.is_empty() {
                    println!("no trusted key: nodes check image integrity, not who made the image");
                } else {
                    println!("trusted image-signing keys: {}", keys.join(" "));
                }
            }
        }
        Cmd::Lookup { tree, ip, mac } => {
            if ip.is_none() && mac.is_none() {
                bail!("give --ip, --mac or both");
            }
            let mac = mac
                .map(|m| model::parse_mac(&m))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let l = lookup::lookup(&tree, mac, ip);
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                for (f, exists) in &l.tried {
                    let mark = if Some(f) == l.chosen.as_ref() {
                        "=> loads"
                    } else if *exists {
                        "   exists"
                    } else {
                        "   -"
                    };
                    println!("{mark:<9} {f}");
                }
                match &l.chosen {
                    None => println!("no file matches: pxelinux will fail to boot this client"),
                    Some(_) => {
                        println!("kernel:   {}", l.kernel.as_deref().unwrap_or("?"));
                        println!("initrd:   {}", l.initrd.as_deref().unwrap_or("-"));
                        println!("append:   {}", l.append.as_deref().unwrap_or(""));
                    }
                }
                if let Some(b) = &l.bootopts {
                    println!("bootopts: {b}");
                }
            }
        }
    }
    Ok(())
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
