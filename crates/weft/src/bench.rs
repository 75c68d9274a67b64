//! `weft bench ...`: benchmarks that start real local fabrics and print figures.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_api::ApiClient;
use weft_api::MemberStatus;
use weft_fabric::MemberState;
use weft_node::NodeStatus;

use crate::local::{self, UpArgs};

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
    /// Local AI through the OpenAI-compatible API (embeddings/s, prefill and decode tokens/s,
    /// time to first token routed vs local, peak RSS) against llama.cpp and
    /// sentence-transformers on the same models
    Inference(InferenceArgs),
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
    ec: weft_store::Erasure,
    /// Segment size in MiB
    #[arg(long, default_value_t = 4)]
    segment_mib: usize,
    /// Total MiB to encode
    #[arg(long, default_value_t = 256)]
    total_mib: usize,
}

/// `weft bench membership`.
#[derive(Args, Debug)]
pub struct MembershipArgs {
    /// Nodes per fabric
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// How many times to kill -9 a random node
    #[arg(long, default_value_t = 8)]
    kills: usize,
    /// Seconds after start at which coordinate accuracy is measured
    #[arg(long, default_value_t = 60)]
    vivaldi_secs: u64,
    /// Seconds of the lossy soak (false dead verdicts); 0 skips it
    #[arg(long, default_value_t = 300)]
    soak_secs: u64,
    /// Loss on every link during the soak
    #[arg(long, default_value = "5%")]
    loss: String,
    /// Folder for the fabrics' data [default: a fresh folder under /tmp]
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Run a benchmark.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Membership(args) => membership(args),
        BenchCommand::Codec(args) => codec(args),
        BenchCommand::Storage(args) => crate::bench_storage::run(args),
        BenchCommand::S3(args) => crate::bench_s3::run(args),
        BenchCommand::Repair(args) => crate::bench_repair::run(args),
        BenchCommand::Chaos(args) => crate::bench_chaos::run(args),
        BenchCommand::List(args) => crate::bench_list::run(args),
        BenchCommand::Compute(args) => crate::bench_compute::run(args),
        BenchCommand::Inference(args) => crate::bench_inference::run(args),
    }
}

pub(crate) struct Fabric {
    pub(crate) root: PathBuf,
    pub(crate) dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
    pub(crate) clients: Vec<ApiClient>,
}

impl Fabric {
    pub(crate) fn start(
        root: PathBuf,
        nodes: usize,
        loss: Option<String>,
    ) -> Result<(Fabric, Duration)> {
        Self::start_with(root, nodes, loss, false)
    }

    pub(crate) fn start_with(
        root: PathBuf,
        nodes: usize,
        loss: Option<String>,
        no_wan: bool,
    ) -> Result<(Fabric, Duration)> {
        Self::start_up(UpArgs {
            nodes: Some(nodes),
            loss,
            no_wan,
            ..UpArgs::quiet_in(root)
        })
    }

    pub(crate) fn start_up(args: UpArgs) -> Result<(Fabric, Duration)> {
        let root = args.dir.clone().context("a fabric folder")?;
        let started = Instant::now();
        let (_, dirs, children) = local::start_fabric(&args)?;
        let mut fabric = Fabric {
            root,
            dirs,
            children: children.into_iter().map(Some).collect(),
            clients: Vec::new(),
        };
        local::wait_converged(&fabric.dirs, Duration::from_secs(60))?;
        let took = started.elapsed();
        fabric.clients = fabric
            .dirs
            .iter()
            .map(|d| ApiClient::for_data_dir(d))
            .collect::<Result<_, _>>()?;
        Ok((fabric, took))
    }

    /// Start node `i` again (after a kill) and wait for its API.
    pub(crate) fn restart(&mut self, i: usize) -> Result<()> {
        self.children[i] = Some(local::spawn_node(&self.dirs[i])?);
        self.clients[i] = local::wait_api(&self.dirs[i], Duration::from_secs(60))?;
        Ok(())
    }

    /// Reap a node process the benchmark killed.
    pub(crate) fn forget_child(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.wait();
        }
    }

    fn nodes_seen_by(&self, i: usize) -> Option<Vec<MemberStatus>> {
        self.clients[i].get("/v1/nodes").ok()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let _ = local::stop_fabric(&self.root);
        for c in self.children.iter_mut().flatten() {
            let _ = c.wait();
        }
    }
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

/// A small xorshift generator: the benchmark needs variety, not cryptography.
struct Xorshift(u64);
impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn membership(args: MembershipArgs) -> Result<()> {
    if args.nodes < 3 {
        bail!("--nodes must be at least 3");
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("weft-bench-{}", std::process::id())));
    if base.exists() {
        bail!("{} already exists; give an empty --dir", base.display());
    }
    std::fs::create_dir_all(&base)?;
    println!(
        "weft bench membership: {} node processes on loopback, sites eu/us/ap, one-way WAN eu-us 40ms, eu-ap 80ms, us-ap 60ms (±2ms), 1ms inside a site",
        args.nodes
    );

    let (mut fabric, formed) = Fabric::start(base.join("wan"), args.nodes, None)?;
    println!(
        "formation: every node sees all {} alive after {:.2}s",
        args.nodes,
        formed.as_secs_f64()
    );
    let started = Instant::now();

    // Coordinates.
    let wait = Duration::from_secs(args.vivaldi_secs).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let (mut errors, mut inter, mut intra) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..fabric.dirs.len() {
        let rows = fabric.nodes_seen_by(i).unwrap_or_default();
        let my_site = rows.iter().find(|m| m.is_self).map(|m| m.site.clone());
        for m in &rows {
            if let (false, Some(est), Some(real)) = (m.is_self, m.est_rtt_ms, m.measured_rtt_ms)
                && real > 0.0
            {
                let e = (est - real).abs() / real;
                errors.push(e);
                if my_site.as_deref() == Some(m.site.as_str()) {
                    intra.push(e);
                } else {
                    inter.push(e);
                }
            }
        }
    }
    let (errors, inter, intra) = (sorted(errors), sorted(inter), sorted(intra));
    let viv_median = pct(&errors, 0.5);
    println!(
        "vivaldi after {}s: relative RTT error median {:.1}%, p90 {:.1}% over {} ordered pairs  [goal median <= 10%: {}]",
        args.vivaldi_secs,
        viv_median * 100.0,
        pct(&errors, 0.9) * 100.0,
        errors.len(),
        verdict(viv_median <= 0.10)
    );
    println!(
        "  between sites: median {:.1}%, p90 {:.1}% ({} pairs); inside a site (RTT ~2-4ms): median {:.1}%, p90 {:.1}% ({} pairs)",
        pct(&inter, 0.5) * 100.0,
        pct(&inter, 0.9) * 100.0,
        inter.len(),
        pct(&intra, 0.5) * 100.0,
        pct(&intra, 0.9) * 100.0,
        intra.len()
    );

    // Idle memory.
    let rss = sorted(
        fabric
            .clients
            .iter()
            .filter_map(|c| c.get::<NodeStatus>("/v1/status").ok())
            .map(|s| s.rss_bytes as f64 / 1e6)
            .collect(),
    );
    println!(
        "idle RSS per node: median {:.1} MB, max {:.1} MB  [goal <= 40 MB: {}]",
        pct(&rss, 0.5),
        pct(&rss, 1.0),
        verdict(pct(&rss, 1.0) <= 40.0)
    );

    // Failure detection and rejoin.
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let (mut all_dead, mut first_dead, mut rejoin) = (Vec::new(), Vec::new(), Vec::new());
    let mut same_id = 0;
    for round in 0..args.kills {
        let victim = 1 + rng.below(fabric.dirs.len() - 1);
        let id = fabric.clients[victim].get::<NodeStatus>("/v1/status")?.id;
        let pid = local::running_pid(&fabric.dirs[victim]).context("victim not running")?;
        // SAFETY: kill(2) on a pid of a node process this benchmark started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let t0 = Instant::now();
        if let Some(mut c) = fabric.children[victim].take() {
            let _ = c.wait();
        }
        let others: Vec<usize> = (0..fabric.dirs.len()).filter(|&i| i != victim).collect();
        let mut seen: Vec<Option<Duration>> = vec![None; others.len()];
        while seen.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(30) {
            for (k, &i) in others.iter().enumerate() {
                if seen[k].is_none()
                    && fabric.nodes_seen_by(i).is_some_and(|rows| {
                        rows.iter()
                            .any(|m| m.id == id && m.state == MemberState::Dead)
                    })
                {
                    seen[k] = Some(t0.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let times: Vec<f64> = seen
            .iter()
            .map(|s| s.map_or(f64::INFINITY, |d| d.as_secs_f64()))
            .collect();
        let worst = times.iter().copied().fold(0.0, f64::max);
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        all_dead.push(worst);
        first_dead.push(best);
        // Restart it and wait until everyone sees it alive again.
        fabric.children[victim] = Some(local::spawn_node(&fabric.dirs[victim])?);
        let t1 = Instant::now();
        let mut back = false;
        while t1.elapsed() < Duration::from_secs(30) {
            back = others.iter().all(|&i| {
                fabric.nodes_seen_by(i).is_some_and(|rows| {
                    rows.iter().any(|m| {
                        m.id == id
                            && m.state == MemberState::Alive
                            && m.uptime_secs.is_some_and(|u| u < 60.0)
                    })
                })
            });
            if back {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let new_id = ApiClient::for_data_dir(&fabric.dirs[victim])
            .ok()
            .and_then(|c| c.get::<NodeStatus>("/v1/status").ok())
            .map(|s| s.id);
        if new_id.as_deref() == Some(id.as_str()) {
            same_id += 1;
        }
        if let Ok(c) = ApiClient::for_data_dir(&fabric.dirs[victim]) {
            fabric.clients[victim] = c;
        }
        rejoin.push(if back {
            t1.elapsed().as_secs_f64()
        } else {
            f64::INFINITY
        });
        println!(
            "  kill {}/{}: node{} dead everywhere after {:.2}s (first {:.2}s); restarted, alive everywhere after {:.2}s",
            round + 1,
            args.kills,
            victim + 1,
            worst,
            best,
            rejoin[rejoin.len() - 1]
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let (all_dead, first_dead, rejoin) = (sorted(all_dead), sorted(first_dead), sorted(rejoin));
    println!(
        "failure detection over {} kills (kill -9 until every other node says dead): median {:.2}s, max {:.2}s; first detection median {:.2}s  [goal median <= 3s, max <= 6s: {}]",
        args.kills,
        pct(&all_dead, 0.5),
        pct(&all_dead, 1.0),
        pct(&first_dead, 0.5),
        verdict(pct(&all_dead, 0.5) <= 3.0 && pct(&all_dead, 1.0) <= 6.0)
    );
    println!(
        "rejoin after restart: median {:.2}s, max {:.2}s; same node id {}/{}",
        pct(&rejoin, 0.5),
        pct(&rejoin, 1.0),
        same_id,
        args.kills
    );
    drop(fabric);

    if args.soak_secs > 0 {
        soak(&base, &args)?;
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn total_dead_verdicts(fabric: &Fabric) -> Result<u64> {
    let mut total = 0;
    for c in &fabric.clients {
        total += c.get::<NodeStatus>("/v1/status")?.dead_verdicts;
    }
    Ok(total)
}

fn soak(base: &Path, args: &MembershipArgs) -> Result<()> {
    let (fabric, _) = Fabric::start(base.join("soak"), args.nodes, Some(args.loss.clone()))?;
    let before = total_dead_verdicts(&fabric)?;
    let start = Instant::now();
    let mut suspect_sightings = 0usize;
    while start.elapsed() < Duration::from_secs(args.soak_secs) {
        std::thread::sleep(Duration::from_secs(5));
        for i in 0..fabric.dirs.len() {
            suspect_sightings += fabric
                .nodes_seen_by(i)
                .unwrap_or_default()
                .iter()
                .filter(|m| m.state == MemberState::Suspect)
                .count();
        }
    }
    let after = total_dead_verdicts(&fabric)?;
    let dropped: u64 = fabric
        .clients
        .iter()
        .filter_map(|c| c.get::<NodeStatus>("/v1/status").ok())
        .map(|s| s.wan_dropped)
        .sum();
    let false_dead = after - before;
    println!(
        "false dead verdicts: {} over {}s of {} live nodes with {} loss on every link ({} datagrams dropped; suspect seen in {} of {} samples)  [goal 0: {}]",
        false_dead,
        args.soak_secs,
        args.nodes,
        args.loss,
        dropped,
        suspect_sightings,
        fabric.dirs.len() * fabric.dirs.len() * (args.soak_secs as usize / 5),
        verdict(false_dead == 0)
    );
    Ok(())
}

fn codec(args: CodecArgs) -> Result<()> {
    use weft_store::{ObjectKey, decode_segment, encode_segment};
    if args.segment_mib == 0 || args.total_mib < args.segment_mib {
        bail!("--segment-mib must be positive and at most --total-mib");
    }
    let key = ObjectKey([0x5a; 32]);
    let segment: Vec<u8> = (0..args.segment_mib << 20)
        .map(|i| (i * 131 % 251) as u8)
        .collect();
    let rounds = args.total_mib / args.segment_mib;
    let bytes = (rounds * segment.len()) as f64;
    let start = Instant::now();
    let mut last = None;
    for i in 0..rounds {
        last = Some(encode_segment(&key, i as u32, &segment, args.ec)?);
    }
    let encode = start.elapsed().as_secs_f64();
    let seg = last.context("no segment encoded")?;
    // Decode the hardest way: all parity used, as many data shards lost as there is parity.
    let lost = args.ec.parity.min(args.ec.data);
    let supplied: Vec<(usize, &[u8])> = (lost..args.ec.total())
        .map(|i| (i, seg.shards[i].as_slice()))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        decode_segment(&key, &seg.info, args.ec, &supplied)?;
    }
    let decode = start.elapsed().as_secs_f64();
    let fast: Vec<(usize, &[u8])> = (0..args.ec.data)
        .map(|i| (i, seg.shards[i].as_slice()))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        decode_segment(&key, &seg.info, args.ec, &fast)?;
    }
    let plain = start.elapsed().as_secs_f64();
    println!(
        "weft bench codec: {} MiB in {} MiB segments, {} erasure coding, one thread",
        args.total_mib, args.segment_mib, args.ec
    );
    println!(
        "encode (BLAKE3 + AES-256-GCM + RS + shard hashes): {:.0} MB/s",
        bytes / encode / 1e6
    );
    println!(
        "decode from data shards (verify + decrypt + BLAKE3):  {:.0} MB/s",
        bytes / plain / 1e6
    );
    println!(
        "decode with {lost} data shards lost (RS reconstruct):   {:.0} MB/s",
        bytes / decode / 1e6
    );
    Ok(())
}
