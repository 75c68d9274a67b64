//! `weft bench compute`: the scheduler core's placement rate and decision latency on one core,
//! over a simulated fabric (10,000 nodes and 100,000 jobs by default), each job's inputs held by
//! a few nodes and a share of jobs restricted to one region, every placement reserving what the
//! job needs (so later jobs see the load).

use std::time::Instant;

use anyhow::{Result, bail};
use weft_compute::schedule::{InputBytes, Needs, Scheduler, simulated};

use crate::bench::{ComputeArgs, sorted};

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
    println!(
        "submit -> running and kill -9 -> running again on a local fabric: not measured yet (the job service is not built)"
    );
    Ok(())
}
