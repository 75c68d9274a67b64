//! `weft bench …`: benchmarks that start real local fabrics (through `weft-cluster`, the way
//! tests do) and print figures — each a module of its own. A benchmark is a command that
//! prints what it measured, never a timed test.

mod chaos;
mod codec;
mod compute;
mod http;
mod inference;
mod ledger;
mod list;
mod membership;
mod repair;
mod s3;
mod storage;
mod wan;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use weft_api::MemberStatus;
use weft_cluster::UpOptions;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Failure detection, rejoin, coordinate accuracy, idle memory, false positives under loss
    Membership(MembershipArgs),
    /// Throughput of the object codec (hash, encrypt, erasure-code) on one core
    Codec(CodecArgs),
    /// Object put/get throughput and latency through a local fabric, with and without WAN
    Storage(StorageArgs),
    /// The S3 gateway's throughput against the native API on the same fabric
    S3(S3Args),
    /// Kill -9 a node holding shards; time the return to full redundancy and the repair rate
    Repair(RepairArgs),
    /// Write continuously through kills, restarts, corrupted shard files and a site cut off;
    /// check nothing acknowledged was lost and redundancy and residency hold
    Chaos(ChaosArgs),
    /// Time listing a large bucket, whole and by prefix
    List(ListArgs),
    /// The job scheduler core's placement rate and decision latency on one core
    Compute(ComputeArgs),
    /// The API, S3 and OpenAI servers' latency for well-behaved clients while idle and slow
    /// clients hold connections open
    Http(HttpArgs),
    /// Every path a user waits on across the default 3-site fabric (small and large puts and
    /// gets, HEAD, LIST, reads by capability, hot reads, a no-op job, an OpenAI request), each
    /// beside its physical floor; large transfers with and without WAN
    Wan(WanArgs),
    /// The ledger's transparency log on one node: durable appends/s and the time to a
    /// cosigned checkpoint, at a steady rate and saturated; proof verifications/s on one core
    Ledger(LedgerArgs),
    /// Local AI through the OpenAI-compatible API (embeddings/s, prefill and decode tokens/s,
    /// time to first token routed vs local, peak RSS) against llama.cpp and
    /// sentence-transformers on the same models
    Inference(InferenceArgs),
}

/// `weft bench http`.
#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Well-behaved requests timed per server, alone and under load
    #[arg(long, default_value_t = 300)]
    pub(crate) requests: usize,
    /// Idle clients (connect, say nothing) per server
    #[arg(long, default_value_t = 200)]
    pub(crate) idle: usize,
    /// Slow clients (a request head trickled a byte every half second) per server
    #[arg(long, default_value_t = 100)]
    pub(crate) slow: usize,
    /// Folder for the fabric's data [default: a fresh temporary one]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench wan`.
#[derive(Args, Debug)]
pub struct WanArgs {
    /// Runs of each small path (4 KiB put and get, HEAD, LIST; half as many of the others)
    #[arg(long, default_value_t = 20)]
    pub(crate) ops: usize,
    /// Size of the large objects, MiB (three put and got with WAN and without)
    #[arg(long, default_value_t = 64)]
    pub(crate) large_mib: usize,
    /// Size of the object boto3 reads on loopback, MiB (0: no boto3 run; boto3 is installed
    /// by scripts/s3-clients.sh)
    #[arg(long, default_value_t = 256)]
    pub(crate) boto3_mib: usize,
    /// Skip Garage (installed by scripts/garage.sh — from crates.io, 20-30 min the first time —
    /// and measured with boto3 beside weft on loopback)
    #[arg(long)]
    pub(crate) no_garage: bool,
    /// Folder for the fabrics' data [default: a fresh temporary one]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench inference`.
#[derive(Args, Debug)]
pub struct InferenceArgs {
    /// Short chats timed for the time to first token, per entry node
    #[arg(long, default_value_t = 50)]
    pub(crate) requests: usize,
    /// Skip the anchors (llama.cpp and sentence-transformers, installed by scripts/anchors.sh:
    /// about 5.6 GB and 11 minutes the first time)
    #[arg(long)]
    pub(crate) no_anchors: bool,
    /// Folder for the fabric's data [default: a fresh temporary one]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench compute`.
#[derive(Args, Debug)]
pub struct ComputeArgs {
    /// Simulated nodes
    #[arg(long, default_value_t = 10_000)]
    pub(crate) nodes: usize,
    /// Jobs to place
    #[arg(long, default_value_t = 100_000)]
    pub(crate) jobs: usize,
    /// Node processes of the local fabric the job service is timed on (0: skip that part)
    #[arg(long, default_value_t = 6)]
    pub(crate) fabric_nodes: usize,
    /// No-op jobs timed on it
    #[arg(long, default_value_t = 100)]
    pub(crate) runs: usize,
    /// Folder for the fabric's data [default: a fresh temporary one]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench ledger`.
#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// Entries offered per second in the steady run
    #[arg(long, default_value_t = 3000)]
    pub(crate) rate: u64,
    /// Length of the steady run, in seconds
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Entries appended as fast as they are taken, after the steady run
    #[arg(long, default_value_t = 200_000)]
    pub(crate) saturate: u64,
    /// Receipts per second offered to the ledger of an in-process fabric of 3 nodes (spread
    /// over them), for --seconds (0: skip that part)
    #[arg(long, default_value_t = 3000)]
    pub(crate) fabric_rate: u64,
    /// Folder for the log [default: a fresh temporary one, removed after]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Nodes in the fabric
    #[arg(long, default_value_t = 6)]
    pub(crate) nodes: usize,
    /// Objects in the bucket
    #[arg(long, default_value_t = 10_000)]
    pub(crate) objects: usize,
    /// Concurrent writers filling it
    #[arg(long, default_value_t = 8)]
    pub(crate) writers: usize,
    /// Folder for the fabric's data [default: a fresh folder under /tmp]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench chaos`.
#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// Nodes in the fabric, round-robin over sites eu, us, ap (at least 9)
    #[arg(long, default_value_t = 9)]
    pub(crate) nodes: usize,
    /// Seconds of churn (phases of damage, each followed by healing)
    #[arg(long, default_value_t = 300)]
    pub(crate) secs: u64,
    /// Largest object written, in KiB (sizes are random from 1 byte up)
    #[arg(long, default_value_t = 6144)]
    pub(crate) max_kib: usize,
    /// Plaintext written per second at most, in MiB
    #[arg(long, default_value_t = 4)]
    pub(crate) write_mib: u64,
    /// Grace period before a gone node's shards are rebuilt
    #[arg(long, default_value = "4s")]
    pub(crate) grace: String,
    /// Seed for the random choices, to repeat a run [default: the clock]
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Folder for the fabric's data [default: a fresh folder under /tmp, kept if the run fails]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Nodes in the fabric (at least 7: a 4+2 object needs a spare node to rebuild on)
    #[arg(long, default_value_t = 8)]
    pub(crate) nodes: usize,
    /// MiB written before the kill
    #[arg(long, default_value_t = 1024)]
    pub(crate) mib: usize,
    /// Objects they are split into
    #[arg(long, default_value_t = 8)]
    pub(crate) objects: usize,
    /// Grace period before a gone node's shards are rebuilt
    #[arg(long, default_value = "10s")]
    pub(crate) grace: String,
    /// Folder for the fabric's data [default: a fresh folder under /tmp]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench s3`.
#[derive(Args, Debug)]
pub struct S3Args {
    /// Nodes in the fabric
    #[arg(long, default_value_t = 6)]
    pub(crate) nodes: usize,
    /// Object size in MiB
    #[arg(long, default_value_t = 256)]
    pub(crate) mib: usize,
    /// Rounds (each: one put and one get both ways)
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Folder for the fabric's data [default: a fresh folder under /tmp]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench storage`.
#[derive(Args, Debug)]
pub struct StorageArgs {
    /// Nodes in the fabric
    #[arg(long, default_value_t = 6)]
    pub(crate) nodes: usize,
    /// Size of the large object in MiB
    #[arg(long, default_value_t = 256)]
    pub(crate) large_mib: usize,
    /// Small-object operations per size for the latency figures
    #[arg(long, default_value_t = 100)]
    pub(crate) ops: usize,
    /// Skip the run with emulated WAN latency
    #[arg(long)]
    pub(crate) no_wan_run: bool,
    /// Folder for the fabrics' data [default: a fresh folder under /tmp]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// `weft bench codec`.
#[derive(Args, Debug)]
pub struct CodecArgs {
    /// Erasure coding
    #[arg(long, default_value = "4+2")]
    pub(crate) ec: weft_store::Erasure,
    /// Segment size in MiB
    #[arg(long, default_value_t = 4)]
    pub(crate) segment_mib: usize,
    /// Total MiB to encode
    #[arg(long, default_value_t = 256)]
    pub(crate) total_mib: usize,
}

/// `weft bench membership`.
#[derive(Args, Debug)]
pub struct MembershipArgs {
    /// Nodes per fabric
    #[arg(long, default_value_t = 10)]
    pub(crate) nodes: usize,
    /// How many times to kill -9 a random node
    #[arg(long, default_value_t = 8)]
    pub(crate) kills: usize,
    /// Seconds after start at which coordinate accuracy is measured
    #[arg(long, default_value_t = 60)]
    pub(crate) vivaldi_secs: u64,
    /// Seconds of the lossy soak (false dead verdicts); 0 skips it
    #[arg(long, default_value_t = 300)]
    pub(crate) soak_secs: u64,
    /// Loss on every link during the soak
    #[arg(long, default_value = "5%")]
    pub(crate) loss: String,
    /// Folder for the fabrics' data [default: a fresh folder under /tmp]
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// Run a benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    // The fabrics' nodes run this very binary.
    weft_cluster::process::use_binary(std::env::current_exe()?);
    match cmd {
        BenchCommand::Membership(args) => membership::run(args),
        BenchCommand::Codec(args) => codec::run(args),
        BenchCommand::Storage(args) => storage::run(args),
        BenchCommand::S3(args) => s3::run(args),
        BenchCommand::Repair(args) => repair::run(args),
        BenchCommand::Chaos(args) => chaos::run(args),
        BenchCommand::List(args) => list::run(args),
        BenchCommand::Compute(args) => compute::run(args),
        BenchCommand::Http(args) => http::run(args),
        BenchCommand::Inference(args) => inference::run(args),
        BenchCommand::Wan(args) => wan::run(args),
        BenchCommand::Ledger(args) => ledger::run(args),
    }
}

/// A local fabric of node processes made by `weft up`.
pub(crate) type Fabric = weft_cluster::LocalFabric;

/// A local fabric in `root` with `options` (quiet), and how long it took to converge.
pub(crate) fn start(root: PathBuf, options: UpOptions) -> Result<(Fabric, Duration)> {
    Fabric::up(&options, Some(root))
}

/// `nodes` nodes in sites eu, us, ap with the default WAN (or none), `loss` on every link.
pub(crate) fn start_with(
    root: PathBuf,
    nodes: usize,
    loss: Option<String>,
    no_wan: bool,
) -> Result<(Fabric, Duration)> {
    start(
        root,
        UpOptions {
            nodes: Some(nodes),
            loss,
            no_wan,
            ..UpOptions::default()
        },
    )
}

/// The `weft` CLI (this very binary) run with `config` as its configuration: its stdout, or
/// an error with its stderr.
pub(crate) fn weft_cli(config: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .env("WEFT_CONFIG", config)
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "weft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A new read-write S3 key of node1's account, and node1's S3 endpoint (`http://…`).
pub(crate) fn s3_access(fabric: &Fabric) -> Result<(rusty_s3::Credentials, String)> {
    let key: weft_data::AccessKey = fabric.clients[0].post(
        "/v1/keys",
        &weft_api::CreateKey {
            bucket: None,
            read: true,
            write: true,
            grant: None,
        },
    )?;
    let addr = std::fs::read_to_string(fabric.dirs[0].join(weft_s3::S3_ADDR_FILE))
        .map_err(|e| anyhow::anyhow!("node1 runs no S3 gateway: {e}"))?;
    Ok((
        rusty_s3::Credentials::new(key.id, key.secret),
        format!("http://{}", addr.trim()),
    ))
}

/// The membership as node `i` of `fabric` sees it.
pub(crate) fn nodes_seen_by(fabric: &Fabric, i: usize) -> Option<Vec<MemberStatus>> {
    fabric.clients[i].get("/v1/nodes").ok()
}

pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The benchmark's working folder: `dir` if given (it must not exist yet), else a fresh one
/// under the system's temporary folder. Created empty.
pub(crate) fn fresh_dir(dir: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    let base = dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("weft-bench-{name}-{}", std::process::id()))
    });
    if base.exists() {
        bail!("{} already exists; give an empty --dir", base.display());
    }
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
