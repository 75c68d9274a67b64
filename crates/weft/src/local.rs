//! `weft up` / `weft down`: a multi-site fabric of node processes on this machine.
//!
//! Each node is a real `weft run` process with its own data directory under one folder
//! (`nodeN/`), its own UDP port on loopback and, unless disabled, WAN emulation between the
//! emulated sites. The first node creates the fabric; the others are admitted with invites
//! exactly as remote machines would be.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use weft_api::MemberStatus;
use weft_api::{ApiClient, InviteAnswer, InviteParams};
use weft_cluster::process::{node_dirs, running_pid, stop_fabric, wait_api, wait_converged};
use weft_core::{Invite, Placement};
use weft_node::DataDir;

use crate::config::{NodeFile, OpenAiFile, RepairFile, SwimFile, WanFile, check_wan_links};

/// Sites used when none are given.
const DEFAULT_SITES: [&str; 3] = ["eu", "us", "ap"];
/// One-way delays between the default sites.
const DEFAULT_WAN: &str = "eu-us=40ms:2ms,eu-ap=80ms:2ms,us-ap=60ms:2ms";
/// One-way delay inside a site.
const INTRA_SITE: &str = "1ms";

/// `weft up`.
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of nodes [default: 6, or the sum of --sites]
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Sites and node counts, e.g. eu:3,us:2,ap:2 [default: eu, us, ap round-robin]
    #[arg(long)]
    pub sites: Option<String>,
    /// One-way delays between sites: a-b=DELAY[:JITTER[:LOSS%]],... [default: eu-us=40ms,eu-ap=80ms,us-ap=60ms]
    #[arg(long)]
    pub wan: Option<String>,
    /// Extra loss on every link, e.g. 5%
    #[arg(long)]
    pub loss: Option<String>,
    /// Turn WAN emulation off (plain loopback)
    #[arg(long, conflicts_with_all = ["wan", "loss"])]
    pub no_wan: bool,
    /// Folder for the nodes' data [default: ~/.weft/local]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds to wait for every node to see every other alive
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// How long a node may be gone before repair rebuilds its shards elsewhere [default: 5m]
    #[arg(long)]
    pub repair_grace: Option<String>,
    /// Time between each node's checks of the objects it owns [default: 30s]
    #[arg(long)]
    pub repair_interval: Option<String>,
    /// Time between each node's scrubbing passes over its shards [default: 1h]
    #[arg(long)]
    pub scrub_interval: Option<String>,
    /// Scrubbing rate in MiB/s per node (0 turns scrubbing off) [default: 16]
    #[arg(long)]
    pub scrub_mib: Option<u64>,
    /// How long an object no one references any more is kept before its shards are deleted
    /// [default: 1h]
    #[arg(long)]
    pub gc_delay: Option<String>,
    /// Requests each node takes per model it serves (running and waiting) before it answers
    /// "busy" (HTTP 429) [default: 8]
    #[arg(long)]
    pub inference_queue: Option<u32>,
    /// Print nothing but errors
    #[arg(long, hide = true)]
    pub quiet: bool,
}

/// `weft down`.
#[derive(Args, Debug)]
pub struct DownArgs {
    /// Folder given to `weft up` [default: ~/.weft/local]
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Where `weft up` puts nodes by default.
pub fn default_dir() -> PathBuf {
    crate::home().join(".weft").join("local")
}

/// A planned node: its site.
fn plan_sites(args: &UpArgs) -> Result<Vec<String>> {
    let mut sites = Vec::new();
    if let Some(spec) = &args.sites {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, count) = item.split_once(':').unwrap_or((item, "1"));
            let count: usize = count
                .parse()
                .with_context(|| format!("--sites {item:?}: expected SITE:COUNT, e.g. eu:3"))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("--sites {item:?}: site names are letters, digits and '_'");
            }
            sites.extend(std::iter::repeat_n(name.to_string(), count));
        }
        if let Some(n) = args.nodes
            && n != sites.len()
        {
            bail!(
                "--nodes {n} disagrees with --sites, which adds up to {}",
                sites.len()
            );
        }
    } else {
        let n = args.nodes.unwrap_or(6);
        sites = (0..n)
            .map(|i| DEFAULT_SITES[i % DEFAULT_SITES.len()].to_string())
            .collect();
    }
    if sites.is_empty() {
        bail!("a fabric needs at least one node");
    }
    if sites.len() > 64 {
        bail!(
            "--nodes {}: a local fabric is limited to 64 nodes",
            sites.len()
        );
    }
    Ok(sites)
}

fn wan_file(args: &UpArgs, sites: &[String]) -> Result<Option<WanFile>> {
    if args.no_wan {
        return Ok(None);
    }
    let mut links = args.wan.clone().unwrap_or_else(|| DEFAULT_WAN.to_string());
    check_wan_links(&links)?;
    let mut distinct: Vec<&String> = sites.iter().collect();
    distinct.sort();
    distinct.dedup();
    for s in distinct {
        if !links.contains(&format!("{s}-{s}=")) {
            links.push_str(&format!(",{s}-{s}={INTRA_SITE}"));
        }
    }
    if let Some(loss) = &args.loss {
        weft_net::wan::parse_percent(loss).map_err(|e| anyhow::anyhow!("--loss: {e}"))?;
    }
    Ok(Some(WanFile {
        links,
        loss: args.loss.clone(),
    }))
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start `weft run` for `dir` in the background (this executable).
fn spawn_node(dir: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the weft executable")?;
    weft_cluster::process::spawn_node(&exe, dir)
}

/// Create (or restart) a local fabric. Returns the node directories and their child processes.
pub fn start_fabric(args: &UpArgs) -> Result<(PathBuf, Vec<PathBuf>, Vec<Child>)> {
    let root = args.dir.clone().unwrap_or_else(default_dir);
    let existing = node_dirs(&root);
    let mut children = Vec::new();
    if !existing.is_empty() {
        if args.nodes.is_some() || args.sites.is_some() || args.wan.is_some() {
            bail!(
                "{} already holds a local fabric of {} nodes; `weft down --dir {0}` and remove it to make a new one, or run `weft up` without layout flags to restart it",
                root.display(),
                existing.len()
            );
        }
        for dir in &existing {
            if running_pid(dir).is_none() {
                children.push(spawn_node(dir)?);
            }
        }
        return Ok((root, existing, children));
    }
    let sites = plan_sites(args)?;
    let wan = wan_file(args, &sites)?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let placement = |site: &str| Placement {
        site: site.to_string(),
        region: site.to_string(),
        jurisdiction: site.to_ascii_uppercase(),
    };
    let repair = RepairFile {
        grace: args.repair_grace.clone(),
        interval: args.repair_interval.clone(),
        scrub_interval: args.scrub_interval.clone(),
        scrub_mib: args.scrub_mib,
        gc_delay: args.gc_delay.clone(),
        ..RepairFile::default()
    };
    repair.config()?;
    let config = |port: u16| NodeFile {
        listen: Some(format!("127.0.0.1:{port}")),
        log: Some("info".into()),
        wan: wan.clone(),
        swim: SwimFile::default(),
        repair: repair.clone(),
        openai: OpenAiFile {
            queue: args.inference_queue,
            ..OpenAiFile::default()
        },
        ..NodeFile::default()
    };
    let mut dirs = Vec::new();
    let first = root.join("node1");
    let dir = DataDir::open(&first)?;
    config(free_udp_port()?).save(&first)?;
    weft_node::init_fabric(&dir, placement(&sites[0]), weft_net::now_ms())?;
    children.push(spawn_node(&first)?);
    dirs.push(first.clone());
    let admin = wait_api(&first, Duration::from_secs(30))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for (i, site) in sites.iter().enumerate().skip(1) {
        let path = root.join(format!("node{}", i + 1));
        let dir = DataDir::open(&path)?;
        config(free_udp_port()?).save(&path)?;
        let p = placement(site);
        let answer: InviteAnswer = admin.post(
            "/v1/invites",
            &InviteParams {
                site: p.site.clone(),
                region: p.region.clone(),
                jurisdiction: p.jurisdiction.clone(),
                roles: vec!["storage".into(), "compute".into(), "inference".into()],
                ttl_secs: 600,
            },
        )?;
        let invite = Invite::from_text(&answer.invite)?;
        let key = dir.node_key()?;
        let cert = runtime.block_on(weft_node::redeem(&invite, &key, p))?;
        dir.save_membership(&invite.body.admin, &invite.body.bootstrap, &cert)?;
        children.push(spawn_node(&path)?);
        dirs.push(path);
    }
    Ok((root, dirs, children))
}

/// `weft up`.
pub fn up(args: UpArgs) -> Result<()> {
    let (root, dirs, _children) = start_fabric(&args)?;
    let took = wait_converged(&dirs, Duration::from_secs(args.timeout))?;
    if args.quiet {
        return Ok(());
    }
    let admin = ApiClient::for_data_dir(&dirs[0])?;
    // Give the network coordinates a few seconds to settle so the table's estimates mean
    // something: until the median estimate is within 10% of the measured RTT (at most 15s).
    let settle = Instant::now();
    let mut rows: Vec<MemberStatus> = admin.get("/v1/nodes")?;
    while settle.elapsed() < Duration::from_secs(15) && !coordinates_settled(&rows) {
        std::thread::sleep(Duration::from_millis(500));
        rows = admin.get("/v1/nodes")?;
    }
    let sites = rows
        .iter()
        .map(|m| m.site.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    println!(
        "local fabric up: {} nodes in {} sites, every node sees every other alive ({:.1}s)\n",
        dirs.len(),
        sites.len(),
        took.as_secs_f64()
    );
    print!(
        "{}",
        crate::ops::nodes_table(&rows, &Default::default(), &Default::default())
    );
    let wan = NodeFile::load(&dirs[0])?.wan;
    if let Some(w) = wan {
        println!(
            "\nWAN emulation (one-way): {}{}",
            w.links,
            w.loss.map(|l| format!(", loss {l}")).unwrap_or_default()
        );
    }
    let d = root.display();
    println!("\nnodes' data and logs: {d}/nodeN/ (node.log)");
    println!("see the fabric:        weft nodes            (or: weft --data {d}/node3 nodes)");
    println!("one node's status:     weft --data {d}/node2 status");
    println!("add a node by hand:    weft --data {d}/node1 invite --site eu");
    println!("your account:          weft account create   (once; keep the phrase it shows)");
    println!("store and read:        weft bucket create photos; weft put FILE photos/KEY");
    if let Ok(addr) = std::fs::read_to_string(dirs[0].join(weft_s3::S3_ADDR_FILE)) {
        println!(
            "S3 on node1:           http://{}  (credentials: weft key create; they work on every node)",
            addr.trim()
        );
    }
    if let Ok(addr) = std::fs::read_to_string(dirs[0].join(weft_openai::OPENAI_ADDR_FILE)) {
        println!(
            "OpenAI API on node1:   http://{}/v1  (key: the OPENAI_API_KEY line of weft key create; models: weft model add)",
            addr.trim()
        );
    }
    println!(
        "stop everything:       weft down{}",
        if args.dir.is_some() {
            format!(" --dir {d}")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn coordinates_settled(rows: &[MemberStatus]) -> bool {
    let mut errors: Vec<f64> = Vec::new();
    for m in rows.iter().filter(|m| !m.is_self) {
        match (m.est_rtt_ms, m.measured_rtt_ms) {
            (Some(est), Some(real)) if real > 0.0 => errors.push((est - real).abs() / real),
            _ => return false,
        }
    }
    errors.sort_by(f64::total_cmp);
    errors.get(errors.len() / 2).is_none_or(|e| *e <= 0.10)
}

/// `weft down`.
pub fn down(args: DownArgs) -> Result<()> {
    let root = args.dir.unwrap_or_else(default_dir);
    if node_dirs(&root).is_empty() {
        bail!("no local fabric in {}", root.display());
    }
    let n = stop_fabric(&root)?;
    println!(
        "stopped {n} node(s) in {} (data kept; `weft up` restarts them)",
        root.display()
    );
    Ok(())
}
