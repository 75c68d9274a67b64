//! `weft job`: run WebAssembly jobs on the fabric, near their data.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_api::{ApiClient, LogChunk};
use weft_compute::spec::{JobSpec, Source};
use weft_core::Scope;
use weft_data::Session;
use weft_jobs::{JobStatus, parse_reference};

use crate::account::Actor;
use crate::objects::path_escape;

/// `weft job ...`.
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Run a job: from a spec file (TOML) and/or flags; waits for it unless --detach
    Run(Box<RunArgs>),
    /// List jobs (of one bucket, or of every bucket of the account), newest first
    Ls {
        /// Only this bucket's jobs
        bucket: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a job: its state, where it runs and why that node, input bytes read locally and
    /// across sites, its attempts
    Status {
        /// BUCKET/ID, as `weft job run` printed
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a job's stdout (or stderr), while it runs or after
    Logs {
        /// BUCKET/ID
        id: String,
        /// Keep printing as it runs, until it ends
        #[arg(short, long)]
        follow: bool,
        /// Stderr instead of stdout
        #[arg(long)]
        stderr: bool,
    },
    /// Cancel a job (a running attempt stops within about a second)
    Cancel {
        /// BUCKET/ID
        id: String,
    },
}

/// `weft job run`.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// A job spec (TOML); flags add to it or override it
    spec: Option<PathBuf>,
    /// The module: a local .wasm file (uploaded), BUCKET/KEY, or a capability
    #[arg(long)]
    module: Option<String>,
    /// An input: BUCKET/KEY or a capability (repeat for more)
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// Where outputs go: BUCKET/PREFIX
    #[arg(long)]
    output: Option<String>,
    /// An argument for the module (repeat; or put them after `--`)
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
    /// An environment variable NAME=VALUE (repeat)
    #[arg(long = "env")]
    env: Vec<String>,
    /// Cores (fractions allowed; default 1)
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory, e.g. 256MiB
    #[arg(long)]
    memory: Option<String>,
    /// CPU budget in units of fuel (about one per WebAssembly instruction)
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall deadline, e.g. 90s, 10m
    #[arg(long)]
    deadline: Option<String>,
    /// Retries after a failed or lost attempt
    #[arg(long)]
    retries: Option<u32>,
    /// A region it may run in (repeat; narrows its buckets' residency)
    #[arg(long = "region")]
    regions: Vec<String>,
    /// A jurisdiction it may run in (repeat)
    #[arg(long = "jurisdiction")]
    jurisdictions: Vec<String>,
    /// A label its node must have, KEY=VALUE (repeat)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Run near node:<id>, site:<name> or me
    #[arg(long)]
    near: Option<String>,
    /// A name for it
    #[arg(long)]
    name: Option<String>,
    /// Run in the deterministic profile: clocks and randomness from the job, so every run of
    /// it, on any node, gives the same outputs
    #[arg(long)]
    deterministic: bool,
    /// Check its result on several nodes: K-of-N (e.g. 2-of-3: run on distinct nodes until 2
    /// agree, at most 3 runs) or spot:P% (checked 2-of-3 with probability P); implies
    /// --deterministic
    #[arg(long, value_name = "POLICY")]
    verify: Option<String>,
    /// The most it may cost per 10^9 fuel, in credits: it never runs on a node that charges
    /// more
    #[arg(long, value_name = "CREDITS")]
    max_price: Option<f64>,
    /// Return once it is submitted, printing its id
    #[arg(long)]
    detach: bool,
    /// Print the final status as JSON (its stdout is not printed)
    #[arg(long)]
    json: bool,
    /// Arguments for the module
    #[arg(last = true)]
    rest: Vec<String>,
}

fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {i:?}: give NAME=VALUE"))
        })
        .collect()
}

/// The spec from the file and flags.
fn spec_of(a: &RunArgs) -> Result<JobSpec> {
    let mut spec = match &a.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read job spec {}", path.display()))?;
            toml::from_str::<JobSpec>(&text)
                .with_context(|| format!("job spec {} is not valid", path.display()))?
        }
        None => JobSpec::default(),
    };
    if let Some(m) = &a.module {
        spec.module = m.clone();
    }
    if spec.module.is_empty() {
        bail!("no module: give a spec file or --module FILE|BUCKET/KEY|CAPABILITY");
    }
    spec.inputs.extend(a.inputs.iter().cloned());
    if let Some(o) = &a.output {
        spec.output = o.clone();
    }
    if spec.output.is_empty() {
        bail!("no output: give --output BUCKET/PREFIX (or `output` in the spec)");
    }
    spec.args.extend(a.args.iter().cloned());
    spec.args.extend(a.rest.iter().cloned());
    spec.env.extend(pairs(&a.env, "--env")?);
    spec.labels.extend(pairs(&a.labels, "--label")?);
    spec.regions.extend(a.regions.iter().cloned());
    spec.jurisdictions.extend(a.jurisdictions.iter().cloned());
    macro_rules! set {
        ($($f:ident),*) => { $( if a.$f.is_some() { spec.$f = a.$f.clone(); } )* };
    }
    set!(
        cpu, memory, fuel, deadline, retries, near, name, verify, max_price
    );
    spec.deterministic |= a.deterministic;
    // A local module file is resolved against the spec file's directory.
    if let (Some(path), Ok(job)) = (&a.spec, spec.validate())
        && let Source::File(f) = &job.module
        && a.module.is_none()
        && !std::path::Path::new(f).is_absolute()
        && let Some(dir) = path.parent()
    {
        spec.module = dir.join(f).display().to_string();
    }
    Ok(spec)
}

/// A client whose session is the job's own narrow capability: it signs rows of the output
/// bucket only, opens the input buckets read-only, and lasts as long as the job may take.
fn client_for(who: &Actor, spec: &JobSpec) -> Result<ApiClient> {
    let job = spec.validate()?;
    let mut read: Vec<&str> = Vec::new();
    for s in job.inputs.iter().chain(std::iter::once(&job.module)) {
        if let Source::Object { bucket, .. } = s
            && *bucket != job.output_bucket
            && !read.contains(&bucket.as_str())
        {
            read.push(bucket);
        }
    }
    // Long enough for every attempt to run to its deadline.
    let ttl = job.limits.deadline.saturating_mul(job.retries + 1);
    session_client(who, &[job.output_bucket.as_str()], &read, ttl)
}

/// How long past its work's own time a job's capability lasts: for waiting in a queue while
/// the fabric is busy. A job still queued after that can no longer start (its runner's rows
/// would be refused); submit it again.
pub(crate) const QUEUE_ALLOWANCE: Duration = Duration::from_secs(3600);

/// A client whose session is the account's own narrow capability for work on its buckets:
/// signing rows of `write` only, opening `write` and `read`, for `ttl` plus
/// [`QUEUE_ALLOWANCE`]; a granted session when the one bucket written is another account's
/// that shares it.
pub(crate) fn session_client(
    who: &Actor,
    write: &[&str],
    read: &[&str],
    ttl: Duration,
) -> Result<ApiClient> {
    let key = who.account_key()?;
    if let [bucket] = write
        && let Some(granted) = who.granted(&key, bucket, true)?
    {
        return Ok(who.anonymous()?.with_session(granted.to_text()));
    }
    let ttl = ttl.saturating_add(QUEUE_ALLOWANCE);
    let scope = Scope::Own {
        write: write.iter().map(|b| b.to_string()).collect(),
        read: read.iter().map(|b| b.to_string()).collect(),
    };
    let session = Session::new(
        &key,
        scope,
        true,
        weft_net::now_ms(),
        ttl.as_millis() as u64,
        &[],
    );
    Ok(who.anonymous()?.with_session(session.to_text()))
}

/// Upload a local module into the output bucket, named by its hash: once — a module already
/// there is used as it is (so its object, and its content id, stay the same across runs).
pub(crate) fn upload_module(api: &ApiClient, file: &str, bucket: &str) -> Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read module {file}"))?;
    let key = format!(".weft/modules/{}.wasm", blake3::hash(&bytes).to_hex());
    let there: Vec<weft_api::ListedObject> = api.get(&format!(
        "/v1/b/{}?prefix={}",
        path_escape(bucket),
        path_escape(&key)
    ))?;
    if !there
        .iter()
        .any(|o| o.key == key && o.size == bytes.len() as u64)
    {
        let path = format!("/v1/b/{}/{}", path_escape(bucket), path_escape(&key));
        let _: weft_api::PutAnswer = api.upload_put(&path, &mut bytes.as_slice())?;
    }
    Ok(format!("{bucket}/{key}"))
}

pub(crate) fn job_path(id: &str) -> Result<String> {
    let (bucket, id) = parse_reference(id)?;
    Ok(format!("/v1/jobs/{}/{id}", path_escape(&bucket)))
}

fn bucket_of(id: &str) -> Result<String> {
    Ok(parse_reference(id)?.0)
}

/// Run a job command.
pub fn run(who: &Actor, cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Run(a) => run_job(who, *a),
        JobCommand::Ls { bucket, json } => {
            let api = match &bucket {
                Some(b) => who.client(false, &[b])?,
                None => who.client(false, &[])?,
            };
            let path = match &bucket {
                Some(b) => format!("/v1/jobs?bucket={}", path_escape(b)),
                None => "/v1/jobs".to_string(),
            };
            let jobs: Vec<JobStatus> = api.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            println!(
                "{:<32} {:<16} {:<10} {:>7} {:<12} {:>6}",
                "ID", "NAME", "STATE", "ATTEMPT", "RUNNER", "EXIT"
            );
            for j in jobs {
                println!(
                    "{:<32} {:<16} {:<10} {:>7} {:<12} {:>6}",
                    j.id,
                    j.name,
                    j.state,
                    format!("{}/{}", j.attempt + 1, j.attempts_allowed),
                    j.runner.as_deref().map_or("-", |r| &r[..12]),
                    j.exit_code.map_or("-".into(), |c| c.to_string())
                );
            }
            Ok(())
        }
        JobCommand::Status { id, json } => {
            let api = who.client(false, &[&bucket_of(&id)?])?;
            let s: JobStatus = api.get(&job_path(&id)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(())
        }
        JobCommand::Logs { id, follow, stderr } => {
            let api = who.client(false, &[&bucket_of(&id)?])?;
            let mut out = std::io::stdout().lock();
            follow_logs(&api, &id, stderr, follow, &mut out)?;
            Ok(())
        }
        JobCommand::Cancel { id } => {
            let api = who.client(true, &[&bucket_of(&id)?])?;
            let s: JobStatus = api.post(&format!("{}/cancel", job_path(&id)?), &())?;
            eprintln!("cancelled {} ({})", s.id, s.name);
            Ok(())
        }
    }
}

/// Print a job's log from the start; with `follow`, until it ends.
fn follow_logs(
    api: &ApiClient,
    id: &str,
    stderr: bool,
    follow: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut offset = 0u64;
    loop {
        let chunk: LogChunk = api.get(&format!(
            "{}/logs?stderr={stderr}&offset={offset}",
            job_path(id)?
        ))?;
        let bytes = chunk.bytes();
        out.write_all(&bytes)?;
        out.flush()?;
        offset = chunk.next;
        if !follow || (!chunk.running && bytes.is_empty()) {
            return Ok(());
        }
        if bytes.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn run_job(who: &Actor, a: RunArgs) -> Result<()> {
    let mut spec = spec_of(&a)?;
    let job = spec.validate()?;
    let api = client_for(who, &spec)?;
    if let Source::File(f) = &job.module {
        // Named after its file, not the hash it is stored under.
        spec.name.get_or_insert_with(|| job.name.clone());
        spec.module = upload_module(&api, f, &job.output_bucket)?;
    }
    let submitted = Instant::now();
    let s: JobStatus = api.post("/v1/jobs", &spec)?;
    if a.detach {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            println!("{}", s.id);
        }
        return Ok(());
    }
    eprintln!(
        "submitted {} ({}); `weft job status {}` shows it",
        s.id, s.name, s.id
    );
    let path = job_path(&s.id)?;
    let mut shown_running = false;
    let s = loop {
        let s: JobStatus = api.get(&path)?;
        if s.state == "running" && !shown_running && !a.json {
            shown_running = true;
            eprintln!(
                "running on {} after {:.0} ms",
                s.runner.as_deref().map_or("?", |r| &r[..12]),
                submitted.elapsed().as_secs_f64() * 1e3
            );
        }
        if matches!(s.state.as_str(), "done" | "failed" | "cancelled") {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        let mut out = std::io::stdout().lock();
        follow_logs(&api, &s.id, false, false, &mut out)?;
        eprintln!(
            "{} {} in {:.2} s{}",
            s.id,
            s.state,
            submitted.elapsed().as_secs_f64(),
            s.runs.last().map_or(String::new(), |r| format!(
                " (ran {} ms on {}, {} input bytes; outputs under {})",
                r.wall_ms,
                &r.runner[..12],
                r.input_bytes,
                s.output
            ))
        );
    }
    match (s.state.as_str(), s.exit_code) {
        ("done", Some(0)) => Ok(()),
        ("done", Some(code)) => bail!("job {} exited with code {code}", s.id),
        ("failed", _) => bail!(
            "job {} failed: {}",
            s.id,
            s.error.as_deref().unwrap_or("no reason recorded")
        ),
        _ => bail!("job {} was {}", s.id, s.state),
    }
}

fn print_status(s: &JobStatus) {
    let short = |n: &str| n.get(..12).unwrap_or(n).to_string();
    println!("job        {} ({})", s.id, s.name);
    println!(
        "state      {}  (attempt {} of {})",
        s.state,
        s.attempt + 1,
        s.attempts_allowed
    );
    if let Some(e) = &s.error {
        println!("error      {e}");
    }
    if let Some(c) = s.exit_code {
        println!("exit code  {c}");
    }
    println!("module     {}", s.module);
    for i in &s.inputs {
        println!("input      {i}");
    }
    println!("output     {}", s.output);
    if !s.regions.is_empty() || !s.jurisdictions.is_empty() {
        println!(
            "may run in regions [{}] jurisdictions [{}]",
            s.regions.join(","),
            s.jurisdictions.join(",")
        );
    }
    println!(
        "coordinator {}  standby {}",
        short(&s.coordinator),
        s.standby.as_deref().map_or("-".into(), short)
    );
    if let Some(p) = &s.placement {
        println!(
            "runner     {}: score {:.1} among {} feasible nodes",
            short(&p.runner),
            p.score,
            p.candidates
        );
        println!(
            "  inputs   {} bytes on the runner, {} in its site, {} across sites (est. transfer {} ms)",
            p.local_bytes, p.site_bytes, p.remote_bytes, p.transfer_ms
        );
        if !p.filtered.is_empty() && p.filtered != "no nodes" {
            println!("  left out {}", p.filtered);
        }
        for (n, why) in &p.refused {
            println!("  refused  by {}: {why}", short(n));
        }
    }
    for r in &s.runs {
        println!(
            "attempt {}  on {}: {} ms, {} fuel, {} input bytes, {} outputs",
            r.attempt + 1,
            short(&r.runner),
            r.wall_ms,
            r.fuel_used,
            r.input_bytes,
            r.outputs.len()
        );
        for (k, size) in &r.outputs {
            println!("    {k} ({size} bytes)");
        }
    }
    if !s.failed_on.is_empty() {
        let nodes: Vec<String> = s.failed_on.iter().map(|n| short(n)).collect();
        println!("failed on  {}", nodes.join(", "));
    }
    if let Some(v) = &s.verification {
        println!(
            "verified   {} {}{}",
            v.quorum,
            v.verdict,
            v.result
                .as_deref()
                .map_or(String::new(), |r| format!(" on result {}", short(r)))
        );
        for c in &v.runs {
            println!(
                "  run {}    on {} ({}): result {}",
                c.attempt + 1,
                short(&c.runner),
                c.site,
                c.result
                    .as_deref()
                    .map_or("(receipt does not verify)".into(), short)
            );
        }
        for w in &v.wrong {
            println!(
                "  WRONG    {} signed another result (kept as proof)",
                short(w)
            );
        }
    }
}
