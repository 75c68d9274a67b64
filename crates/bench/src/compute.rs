//! `weft bench compute`: the scheduler core's placement rate and decision latency on one core,
//! over a simulated fabric (10,000 nodes and 100,000 jobs by default), each job's inputs held by
//! a few nodes and a share of jobs restricted to one region, every placement reserving what the
//! job needs (so later jobs see the load). Then, on a real local fabric of node processes
//! (6 by default, loopback, no WAN emulation): submit → running and submit → done of no-op
//! jobs submitted through every node in turn, and the time from `kill -9` of a job's runner
//! to the job running again on another node.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_api::ApiClient;
use weft_compute::schedule::{InputBytes, Needs, Scheduler, simulated};
use weft_compute::spec::JobSpec;
use weft_jobs::JobStatus;

use crate::{ComputeArgs, fresh_dir, pct, sorted};

/// A job that does nothing.
const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// A job that counts to 2^33 (several seconds): one to kill the runner of.
const LONG: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (local $i i64)
    (loop $l
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const 8589934592))))))"#;

/// Run it.
pub fn run(args: ComputeArgs) -> Result<()> {
    if args.nodes == 0 || args.jobs == 0 {
        bail!("--nodes and --jobs must be at least 1");
    }
    let (sites, regions) = (30u32, 3u32);
    let nodes = simulated(args.nodes, sites, regions, 64_000, 256 << 30);
    let ids: Vec<_> = nodes.iter().map(|n| n.id).collect();
    let mut scheduler = Scheduler::new(nodes);
    // Jobs: 100 milli-cores and 64 MiB each; inputs on 6 nodes (an erasure-coded object's shard
    // holders), a third of the jobs restricted to region 1, one in ten with a "near" target.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let jobs: Vec<Needs> = (0..args.jobs)
        .map(|j| {
            let held = (0..6)
                .map(|_| (ids[(next() as usize) % ids.len()], 4 << 20))
                .collect();
            Needs {
                cpu: 100,
                memory: 64 << 20,
                regions: if j % 3 == 0 { vec![1] } else { vec![] },
                inputs: InputBytes { held },
                ..Needs::default()
            }
        })
        .collect();
    println!(
        "weft bench compute: scheduler core on one core, {} simulated nodes in {sites} sites / {regions} regions, {} jobs (inputs on 6 nodes each, 1/3 restricted to one region)",
        args.nodes, args.jobs
    );
    let mut latencies = Vec::with_capacity(jobs.len());
    let (mut placed, mut local, mut unplaced) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for job in &jobs {
        let t = Instant::now();
        let ranking = scheduler.rank(job, 3);
        if let Some(best) = ranking.choices.first() {
            let node = best.node;
            if best.local_bytes > 0 {
                local += 1;
            }
            scheduler.reserve(&node, job);
            placed += 1;
        } else {
            unplaced += 1;
        }
        latencies.push(t.elapsed().as_secs_f64());
    }
    let secs = start.elapsed().as_secs_f64();
    let latencies = sorted(latencies);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] * 1e6;
    println!(
        "placements: {placed} in {secs:.2} s = {:.0} placements/s (goal >= 10,000/s); decision p50 {:.1} us, p99 {:.1} us",
        placed as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
    println!("placed on a node holding input shards: {local} of {placed}; not placed: {unplaced}");
    if args.fabric_nodes == 0 {
        return Ok(());
    }
    let base = fresh_dir(&args.dir, "compute")?;
    let result = fabric_figures(&base, &args);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn state_of(api: &ApiClient, id: &str) -> Result<JobStatus> {
    let (bucket, id) = weft_jobs::parse_reference(id)?;
    Ok(api.get(&format!("/v1/jobs/{bucket}/{id}"))?)
}

fn ended(s: &JobStatus) -> bool {
    matches!(s.state.as_str(), "done" | "failed" | "cancelled")
}

fn fabric_figures(base: &std::path::Path, args: &ComputeArgs) -> Result<()> {
    let n = args.fabric_nodes;
    let (mut fabric, _) = crate::start_with(base.join("fabric"), n, None, true)?;
    // node1's own account, through a session on every node.
    let account = weft_net::load_or_create_key(&fabric.dirs[0].join("account.key"))?;
    let session = weft_data::Session::new(
        &account,
        weft_core::Scope::Account,
        true,
        weft_net::now_ms(),
        3_600_000,
        &["bench"],
    );
    let mut clients: Vec<ApiClient> = fabric
        .dirs
        .iter()
        .map(|d| {
            let addr = std::fs::read_to_string(d.join(weft_api::API_ADDR_FILE))?;
            Ok(ApiClient::new(addr.trim(), "").with_session(session.to_text()))
        })
        .collect::<Result<_>>()?;
    let _: weft_data::BucketRecord = fabric.clients[0].post(
        "/v1/buckets",
        &weft_api::CreateBucket {
            name: "bench".into(),
            ..Default::default()
        },
    )?;
    for (key, text) in [("noop.wat", NOOP), ("long.wat", LONG)] {
        let _: weft_api::PutAnswer =
            clients[0].upload_put(&format!("/v1/b/bench/{key}"), &mut text.as_bytes())?;
    }
    let spec = |module: &str, out: &str| JobSpec {
        module: format!("bench/{module}"),
        output: format!("bench/{out}/"),
        cpu: Some(0.1),
        memory: Some("16MiB".into()),
        fuel: Some(1 << 40),
        ..JobSpec::default()
    };
    // Warm up: every node compiles the module once.
    for (i, api) in clients.iter().enumerate() {
        let s: JobStatus = api.post("/v1/jobs", &spec("noop.wat", &format!("warm{i}")))?;
        while !ended(&state_of(api, &s.id)?) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (mut to_running, mut to_done) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        let api = &clients[i % n];
        let t = Instant::now();
        let wall = weft_net::now_ms();
        let s: JobStatus = api.post("/v1/jobs", &spec("noop.wat", &format!("noop{i}")))?;
        let s = loop {
            let s = state_of(api, &s.id)?;
            if ended(&s) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        to_done.push(t.elapsed().as_secs_f64());
        if s.state != "done" {
            bail!("no-op job {} ended {}: {:?}", s.id, s.state, s.error);
        }
        // Running from when the runner's claim was stamped (same machine, same clock).
        let started = s.started_ms.context("a done job has a start")?;
        to_running.push(started.saturating_sub(wall) as f64 / 1e3);
    }
    let (to_running, to_done) = (sorted(to_running), sorted(to_done));
    println!(
        "fabric: {n} node processes on loopback (no WAN emulation), {} no-op jobs submitted through each node in turn",
        args.runs
    );
    println!(
        "submit -> running: p50 {:.1} ms, p99 {:.1} ms (goal p99 <= 250 ms); submit -> done: p50 {:.1} ms, p99 {:.1} ms",
        pct(&to_running, 0.5) * 1e3,
        pct(&to_running, 0.99) * 1e3,
        pct(&to_done, 0.5) * 1e3,
        pct(&to_done, 0.99) * 1e3
    );
    // Kill -9 the runner of a long job, three times (the victim restarts after each).
    let mut rerun = Vec::new();
    for round in 0..3 {
        let via = round % n;
        let s: JobStatus =
            clients[via].post("/v1/jobs", &spec("long.wat", &format!("long{round}")))?;
        let runner = loop {
            let st = state_of(&clients[via], &s.id)?;
            if st.state == "running" {
                break st.runner.context("a running job has a runner")?;
            }
            if ended(&st) {
                bail!(
                    "the long job ended before it could be killed: {:?}",
                    st.error
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let victim = (0..n)
            .find(|&i| {
                fabric.clients[i]
                    .get::<weft_node::NodeStatus>("/v1/status")
                    .is_ok_and(|st| st.id == runner)
            })
            .context("the runner is one of the fabric's nodes")?;
        std::thread::sleep(Duration::from_millis(500));
        fabric.kill(victim, libc::SIGKILL).context("runner pid")?;
        let killed = Instant::now();
        let asker = &clients[(victim + 1) % n];
        loop {
            let st = state_of(asker, &s.id)?;
            if st.state == "running" && st.runner.as_deref() != Some(runner.as_str()) {
                rerun.push(killed.elapsed().as_secs_f64());
                break;
            }
            if ended(&st) && st.state != "done" {
                bail!("the killed job ended {}: {:?}", st.state, st.error);
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("the killed runner's job did not run again within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = clients[(victim + 1) % n].post::<_, JobStatus>(
            &format!(
                "/v1/jobs/bench/{}/cancel",
                weft_jobs::parse_reference(&s.id)?.1
            ),
            &(),
        );
        fabric.restart(victim)?;
        let addr = std::fs::read_to_string(fabric.dirs[victim].join(weft_api::API_ADDR_FILE))?;
        clients[victim] = ApiClient::new(addr.trim(), "").with_session(session.to_text());
    }
    let shown: Vec<String> = rerun.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "kill -9 of the runner -> running again on another node: {} s (its lease is {} s; it is requeued 1 s after the lease lapses)",
        shown.join(", "),
        weft_compute::lease::LEASE_MS / 1000
    );
    Ok(())
}
