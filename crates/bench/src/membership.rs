//! `weft bench membership`: failure detection, rejoin, coordinate accuracy, idle memory, and
//! false positives under loss, on local fabrics of node processes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_api::ApiClient;
use weft_node::{MemberState, NodeStatus};

use crate::{Fabric, MembershipArgs, nodes_seen_by, pct, sorted, verdict};

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

pub(crate) fn run(args: MembershipArgs) -> Result<()> {
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

    let (mut fabric, formed) = crate::start_with(base.join("wan"), args.nodes, None, false)?;
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
        let rows = nodes_seen_by(&fabric, i).unwrap_or_default();
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
        fabric
            .kill(victim, libc::SIGKILL)
            .context("victim not running")?;
        let t0 = Instant::now();
        let others: Vec<usize> = (0..fabric.dirs.len()).filter(|&i| i != victim).collect();
        let mut seen: Vec<Option<Duration>> = vec![None; others.len()];
        while seen.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(30) {
            for (k, &i) in others.iter().enumerate() {
                if seen[k].is_none()
                    && nodes_seen_by(&fabric, i).is_some_and(|rows| {
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
        fabric.spawn(victim)?;
        let t1 = Instant::now();
        let mut back = false;
        while t1.elapsed() < Duration::from_secs(30) {
            back = others.iter().all(|&i| {
                nodes_seen_by(&fabric, i).is_some_and(|rows| {
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
    let (fabric, _) = crate::start_with(
        base.join("soak"),
        args.nodes,
        Some(args.loss.clone()),
        false,
    )?;
    let before = total_dead_verdicts(&fabric)?;
    let start = Instant::now();
    let mut suspect_sightings = 0usize;
    while start.elapsed() < Duration::from_secs(args.soak_secs) {
        std::thread::sleep(Duration::from_secs(5));
        for i in 0..fabric.dirs.len() {
            suspect_sightings += nodes_seen_by(&fabric, i)
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
