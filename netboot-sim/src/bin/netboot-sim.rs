//! `netboot-sim`: evaluates a clone plan (or a generated shape) under given parameters
//! and prints one table row per run (or JSON).

use anyhow::{bail, Context};
use clap::Parser;
use netboot_proto::plan::Plan;
use netboot_sim::engine::NodeOutcome;
use netboot_sim::net::{Net, Scheme};
use netboot_sim::params::Params;
use netboot_sim::shapes::{generate, Shape};
use netboot_sim::stats::{delays, summarize};
use std::path::PathBuf;

/// Plan files are read whole: a bound well above the 50 MB a 100 000-node plan may take.
const MAX_PLAN_BYTES: u64 = 512 << 20;

#[derive(Parser, Debug)]
#[command(
    about = "Simulate image distribution over a cluster (docs/DISTRIBUTION.md, \"The model\")"
)]
struct Args {
    /// A clone-plan.json as pxe-builder writes it.
    #[arg(long, conflicts_with = "shape")]
    plan: Option<PathBuf>,
    /// With --plan: plan (as written), naive or cmu (from the plan's groups).
    #[arg(long, default_value = "plan")]
    scheme: String,
    /// Generated shapes instead of a plan: naive, cmu, serial, chain, fanout, tree:R:F,
    /// chains:P (repeatable).
    #[arg(long)]
    shape: Vec<String>,
    /// Nodes of the generated cluster (repeatable).
    #[arg(long, default_value = "64")]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 250)]
    per_rack: usize,
    /// Parameters as JSON (fields of `Params`; missing ones take the defaults).
    #[arg(long)]
    params: Option<PathBuf>,
    /// Override one parameter: NAME=JSON-VALUE (repeatable), e.g. skew=30.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Write every node's outcome (name, start, done, died, reroutes) as CSV here (the
    /// last run's, with several shapes or sizes).
    #[arg(long, value_name = "FILE")]
    per_node: Option<PathBuf>,
}

fn params(args: &Args) -> anyhow::Result<Params> {
    let mut v = match &args.params {
        Some(f) => {
            serde_json::from_slice(&std::fs::read(f).with_context(|| format!("{}", f.display()))?)
                .with_context(|| format!("{}", f.display()))?
        }
        None => serde_json::to_value(Params::default())?,
    };
    for s in &args.set {
        let Some((k, val)) = s.split_once('=') else {
            bail!("--set {s}: expected NAME=VALUE");
        };
        let val: serde_json::Value =
            serde_json::from_str(val).with_context(|| format!("--set {s}: not a JSON value"))?;
        match v.as_object_mut() {
            Some(o) => o.insert(k.to_string(), val),
            None => bail!("parameters are not a JSON object"),
        };
    }
    let p: Params = serde_json::from_value(v).context("parameters")?;
    p.check().map_err(anyhow::Error::msg)?;
    Ok(p)
}

/// Whether the `--params` file gives field `name`.
fn params_file_sets(args: &Args, name: &str) -> anyhow::Result<bool> {
    let Some(f) = &args.params else {
        return Ok(false);
    };
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f)?)?;
    Ok(v.get(name).is_some())
}

fn read_plan(path: &PathBuf) -> anyhow::Result<Plan> {
    use std::io::Read;
    let mut text = vec![];
    std::fs::File::open(path)
        .with_context(|| format!("{}", path.display()))?
        .take(MAX_PLAN_BYTES + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > MAX_PLAN_BYTES {
        bail!("{} is larger than {MAX_PLAN_BYTES} bytes", path.display());
    }
    Plan::from_json(&text).with_context(|| format!("{}", path.display()))
}

fn write_per_node(path: &PathBuf, net: &Net, out: &[NodeOutcome]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
    );
    writeln!(f, "node,start,done,died,reroutes")?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |t| format!("{t:.4}"));
    for (name, o) in net.names.iter().zip(out) {
        writeln!(
            f,
            "{name},{:.4},{},{},{}",
            o.start,
            opt(o.done),
            opt(o.died),
            o.reroutes
        )?;
    }
    f.flush()?;
    Ok(())
}

fn report(label: &str, net: &Net, p: &Params, single: f64, args: &Args) -> anyhow::Result<()> {
    let json = args.json;
    let (out, clean) = netboot_sim::run_with_baseline(net, p)?;
    if let Some(path) = &args.per_node {
        write_per_node(path, net, &out)?;
    }
    let s = summarize(&out);
    let d = clean.map(|c| delays(&out, &c));
    let (depth, fan) = net.depth_and_fanout();
    if json {
        let line = serde_json::json!({"run": label, "depth": depth, "max_feeds": fan,
            "single": single, "summary": s, "delays": d, "params": p});
        println!("{line}");
        return Ok(());
    }
    let ratio = s.total / single;
    let vs_window = s.total / (single + p.skew);
    let dl = d.map_or("-".to_string(), |d| {
        format!(
            "max {:.1} s, p99 {:.1} s, {} nodes > 1 s",
            d.max, d.p99, d.over_1s
        )
    });
    println!(
        "| {label} | {} | {depth} | {:.2} | {:.2} | {ratio:.2}x | {vs_window:.2}x | {:.2} | {:.2} | {:.2} | {} | {} | {} | {dl} |",
        s.nodes, single, s.total, s.p50, s.p99, s.own_p99, s.died, s.reroutes, s.unfinished
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let p = params(&args)?;
    let single = netboot_sim::single(&p)?;
    if !args.json {
        println!("| run | nodes | depth | single (s) | total (s) | total/single | total/(single+skew) | p50 (s) | p99 (s) | own p99 (s) | died | reroutes | unfinished | failure delays |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    }
    if let Some(path) = &args.plan {
        let scheme = match args.scheme.as_str() {
            "plan" => Scheme::Plan,
            "naive" => Scheme::Naive,
            "cmu" => Scheme::Cmu,
            s => bail!("unknown scheme {s} (plan, naive, cmu)"),
        };
        let plan = read_plan(path)?;
        // The agents' grace follows the plan's boot window, as on the nodes, unless the
        // parameters give one.
        let mut p = p;
        if !args.set.iter().any(|s| s.starts_with("grace=")) && !params_file_sets(&args, "grace")? {
            p.grace = netboot_sim::params::grace_for_window(plan.boot_window_s);
        }
        let net = Net::from_plan(&plan, scheme)?;
        return report(&args.scheme, &net, &p, single, &args);
    }
    if args.shape.is_empty() {
        bail!("give --plan FILE or --shape SHAPE");
    }
    for n in &args.nodes {
        for s in &args.shape {
            let shape = Shape::parse(s).map_err(anyhow::Error::msg)?;
            let net = generate(*n, args.per_rack, shape);
            report(&shape.to_string(), &net, &p, single, &args)?;
        }
    }
    Ok(())
}
