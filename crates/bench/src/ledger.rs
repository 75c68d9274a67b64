//! `weft bench ledger`: the transparency log the fabric's ledger is built on, on one node —
//! durable appends per second and the time from an append to a checkpoint cosigned by
//! witnesses (at a steady offered rate, then saturated), and inclusion- and consistency-proof
//! verifications per second on one core.
//!
//! Then the same through the fabric: receipts issued on the nodes of an in-process fabric of
//! three (loopback, no WAN emulation) until each is in a checkpoint more than half of the other
//! members cosigned — handed to the sequencer, written as a batch row, the head replaced by a
//! conditional write, every witness checking the entries itself.
//!
//! The log is `weft-tlog`'s: entries written as tlog-tiles files on this machine's disk and
//! synced before their checkpoint is published, the checkpoint signed as a C2SP note and
//! cosigned by two witnesses that each check a consistency proof from the last size they
//! cosigned. Here the witnesses run in the same process (no network); entries are the size of
//! a receipt.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_core::SecretKey;
use weft_tlog::{
    Checkpoint, Log, Note, Signer, Witness, leaf_hash, verify_consistency, verify_inclusion,
};

use crate::{LedgerArgs, fresh_dir, pct, sorted};

const ORIGIN: &str = "weft.bench/ledger";
/// About the size of a signed job receipt.
const ENTRY: usize = 256;

#[derive(Default)]
struct Queue {
    pending: Vec<(Vec<u8>, Instant)>,
    done: bool,
}

struct Round {
    entries: usize,
    /// Each entry's time from submission to its cosigned checkpoint.
    waits: Vec<f64>,
    took: Duration,
}

/// The sequencer: takes everything pending, integrates it, signs, gets both cosignatures,
/// publishes; again as soon as more is pending.
fn sequence(
    log: &mut Log,
    queue: &(Mutex<Queue>, Condvar),
    witnesses: &mut [Witness],
) -> Result<Vec<Round>> {
    let signer = Signer::new(ORIGIN, SecretKey::from_seed([1; 32]))?;
    let mut rounds = Vec::new();
    loop {
        let batch = {
            let (lock, cv) = queue;
            let mut q = lock.lock().map_err(|_| anyhow::anyhow!("queue poisoned"))?;
            while q.pending.is_empty() && !q.done {
                q = cv.wait(q).map_err(|_| anyhow::anyhow!("queue poisoned"))?;
            }
            if q.pending.is_empty() {
                return Ok(rounds);
            }
            std::mem::take(&mut q.pending)
        };
        let start = Instant::now();
        let entries: Vec<&[u8]> = batch.iter().map(|(e, _)| e.as_slice()).collect();
        log.integrate(&entries)?;
        let text = Checkpoint {
            origin: ORIGIN.into(),
            size: log.size(),
            root: log.root(),
            extensions: vec![],
        }
        .text();
        let mut note = signer.sign(&text)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for w in witnesses.iter_mut() {
            let old = w.state()[ORIGIN].size;
            let proof = log.proof_to_integrated(old)?;
            note.add(w.add_checkpoint(&note.encode(), old, &proof, now)?);
        }
        log.publish(&note)?;
        let end = Instant::now();
        rounds.push(Round {
            entries: batch.len(),
            waits: batch
                .iter()
                .map(|(_, at)| (end - *at).as_secs_f64() * 1e3)
                .collect(),
            took: end - start,
        });
    }
}

fn witnesses() -> Result<Vec<Witness>> {
    let log = Signer::new(ORIGIN, SecretKey::from_seed([1; 32]))?.verifier();
    (2u8..4)
        .map(|seed| {
            let mut w = Witness::new(
                Signer::new(&format!("witness-{seed}"), SecretKey::from_seed([seed; 32]))?,
                BTreeMap::new(),
            );
            w.watch(ORIGIN, &log);
            Ok(w)
        })
        .collect()
}

/// Offer `rate` entries per second (0: as fast as the sequencer takes them, at most `max`
/// pending) for `count` entries; the rounds the sequencer made.
fn run_load(
    log: &mut Log,
    witnesses: &mut [Witness],
    rate: u64,
    count: u64,
    first: u64,
) -> Result<(Vec<Round>, Duration)> {
    let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
    let producer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut entry = vec![0u8; ENTRY];
            for i in 0..count {
                if rate > 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                } else {
                    // Saturated: keep at most 64k pending, as a server's queue would.
                    loop {
                        let q = queue
                            .0
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if q.pending.len() < 65_536 {
                            break;
                        }
                        drop(q);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                entry[..8].copy_from_slice(&(first + i).to_be_bytes());
                let (lock, cv) = &*queue;
                let mut q = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                q.pending.push((entry.clone(), Instant::now()));
                cv.notify_one();
            }
            let (lock, cv) = &*queue;
            lock.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .done = true;
            cv.notify_one();
        })
    };
    let start = Instant::now();
    let rounds = sequence(log, &queue, witnesses)?;
    let took = start.elapsed();
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))?;
    Ok((rounds, took))
}

fn report(label: &str, rounds: &[Round], took: Duration) {
    let n: usize = rounds.iter().map(|r| r.entries).sum();
    let waits = sorted(
        rounds
            .iter()
            .flat_map(|r| r.waits.iter().copied())
            .collect(),
    );
    let round_ms = sorted(rounds.iter().map(|r| r.took.as_secs_f64() * 1e3).collect());
    println!(
        "  {label}: {n} entries in {:.2} s = {:.0} appends/s durable, {} checkpoints of {:.0} entries on average",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        rounds.len(),
        n as f64 / rounds.len().max(1) as f64,
    );
    println!(
        "    append → cosigned checkpoint: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (a round: integrate + sync + sign + 2 cosignatures + publish, p50 {:.1} ms, p99 {:.1} ms)",
        pct(&waits, 0.5),
        pct(&waits, 0.99),
        waits.last().copied().unwrap_or(f64::NAN),
        pct(&round_ms, 0.5),
        pct(&round_ms, 0.99),
    );
}

/// Run it.
pub fn run(args: LedgerArgs) -> Result<()> {
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let dir = fresh_dir(&args.dir, "ledger")?;
    let mut log = Log::open(&dir.join("log")).context("opening the log")?;
    let mut ws = witnesses()?;
    println!(
        "weft bench ledger: one node's transparency log in {} ({}-byte entries; synced tiles, a signed checkpoint, 2 witnesses cosigning in process)",
        dir.display(),
        ENTRY
    );
    println!(
        "  anchors: Tessera POSIX ~2,900 appends/s, Trillian v1 ~60/s; goal ≥ 3,000/s with a checkpoint ≤ 1 s"
    );
    let count = args.rate * args.seconds;
    let (rounds, took) = run_load(&mut log, &mut ws, args.rate, count, 0)?;
    report(
        &format!("offered {}/s for {} s", args.rate, args.seconds),
        &rounds,
        took,
    );
    let (rounds, took) = run_load(&mut log, &mut ws, 0, args.saturate, count)?;
    report("saturated", &rounds, took);

    // Proof verification on one core, from proofs the log serves.
    let size = log.size();
    let root = log.root();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut proofs = Vec::new();
    for _ in 0..1000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let index = state % size;
        let leaf = leaf_hash(&log.entry(index)?);
        proofs.push((index, leaf, log.inclusion_proof(index, size)?));
    }
    let mut verified = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for (index, leaf, proof) in &proofs {
            if !verify_inclusion(*index, size, leaf, proof, &root) {
                bail!("an inclusion proof of entry {index} did not verify");
            }
        }
        verified += proofs.len() as u64;
    }
    let rate = verified as f64 / start.elapsed().as_secs_f64();
    let avg_len = proofs.iter().map(|p| p.2.len()).sum::<usize>() as f64 / proofs.len() as f64;
    println!(
        "  inclusion proofs in a log of {size}: {rate:.0} verifications/s on one core ({avg_len:.1} hashes each; goal ≥ 200,000/s)"
    );
    let mut consistency = Vec::new();
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let old = 1 + state % size;
        consistency.push((old, log.root_at(old)?, log.consistency_proof(old, size)?));
    }
    let mut verified = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        for (old, old_root, proof) in &consistency {
            if !verify_consistency(*old, size, old_root, &root, proof) {
                bail!("a consistency proof from {old} did not verify");
            }
        }
        verified += consistency.len() as u64;
    }
    println!(
        "  consistency proofs to it: {:.0} verifications/s on one core",
        verified as f64 / start.elapsed().as_secs_f64()
    );
    if args.fabric_rate > 0 {
        fabric(args.fabric_rate, args.seconds)?;
    }
    audit_walk()?;
    deterministic_overhead()?;
    verified_cost()?;
    let checkpoint = log.checkpoint().unwrap_or_default().to_string();
    let note = Note::parse(&checkpoint)?;
    println!(
        "  the last checkpoint ({} signatures):",
        note.signatures.len()
    );
    for line in checkpoint.lines() {
        println!("    {line}");
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// `weft audit`'s walk on one core: signed job receipts of 4 nodes' chains, each read (its
/// signature checked), chained and hashed into the tree, then checked against the root.
fn audit_walk() -> Result<()> {
    use weft_core::ContentHash;
    use weft_ledger::audit::Walk;
    use weft_ledger::receipt::{RECEIPT_FORMAT, ReceiptBody};
    use weft_ledger::{Receipt, Work};
    const N: u64 = 20_000;
    let keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed([i; 32])).collect();
    let mut prev = vec![ContentHash([0; 32]); keys.len()];
    let mut entries = Vec::with_capacity(N as usize);
    for i in 0..N {
        let k = (i % keys.len() as u64) as usize;
        let receipt = Receipt::sign_priced(
            &keys[k],
            ReceiptBody {
                format: RECEIPT_FORMAT,
                node: keys[k].public(),
                seq: i / keys.len() as u64,
                prev: prev[k],
                at_ms: i,
                account: keys[(k + 1) % keys.len()].public(),
                request: ContentHash([9; 32]),
                work: Work::Job {
                    job: format!("bench/{i:016x}"),
                    attempt: 0,
                    module: ContentHash([1; 32]),
                    result: ContentHash([2; 32]),
                    fuel: 1_000_000,
                    bytes_in: 100,
                    bytes_out: 10,
                    wall_ms: 3,
                    exit: Some(0),
                },
            },
            1_000,
        );
        prev[k] = receipt.hash();
        entries.push(receipt.to_entry());
    }
    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
    let checkpoint = weft_tlog::Checkpoint {
        origin: "bench".into(),
        size: N,
        root: weft_tlog::root_of(&leaves),
        extensions: Vec::new(),
    };
    let start = Instant::now();
    let mut walk = Walk::new();
    for (i, e) in entries.iter().enumerate() {
        walk.push(i as u64, e).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    walk.finish(&checkpoint)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = start.elapsed().as_secs_f64();
    println!(
        "  audit walk (weft audit): {N} receipts read, signature-checked, chained and hashed to the root in {:.2} s: {:.0} entries/s on one core",
        took,
        N as f64 / took
    );
    Ok(())
}

/// Receipts offered at `rate` per second across an in-process fabric of 3 nodes for `seconds`:
/// durable receipts/s and the time from issuing one to its node seeing it in a cosigned
/// checkpoint.
fn fabric(rate: u64, seconds: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let c = weft_cluster::Builder::new(3).start().await;
        let account = SecretKey::from_seed([3; 32]).public();
        let count = rate * seconds;
        let per_node = count / 3;
        let start = Instant::now();
        let mut issued_at: Vec<Vec<Instant>> = vec![Vec::new(); 3];
        let mut seen = [0u64; 3];
        let mut waits = Vec::new();
        let mut i = 0u64;
        let mut last_settled = start;
        while seen.iter().sum::<u64>() < per_node * 3 {
            // Issue what is due by now, round robin.
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(per_node * 3);
            while i < due {
                let n = (i % 3) as usize;
                c.node(n)
                    .ledger()
                    .issue(
                        account,
                        weft_core::ContentHash::of(&i.to_be_bytes()),
                        weft_ledger::Work::Transfer { bytes: i },
                    )
                    .map_err(|e| anyhow::anyhow!("issuing a receipt: {e}"))?;
                issued_at[n].push(Instant::now());
                i += 1;
            }
            for (n, node) in c.nodes.iter().enumerate() {
                let included = node.ledger().status().included;
                while seen[n] < included {
                    waits.push(issued_at[n][seen[n] as usize].elapsed().as_secs_f64() * 1e3);
                    seen[n] += 1;
                    last_settled = Instant::now();
                }
            }
            if last_settled.elapsed() > Duration::from_secs(30) {
                bail!("no receipt settled for 30 s (seen {seen:?})");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = start.elapsed();
        let waits = sorted(waits);
        let size = c.node(0).ledger().status().size;
        println!(
            "  through a fabric of 3 (in process, loopback): {} receipts offered at {rate}/s settled in {:.2} s = {:.0}/s; issue → in a cosigned checkpoint p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (log size {size})",
            waits.len(),
            took.as_secs_f64(),
            waits.len() as f64 / took.as_secs_f64(),
            pct(&waits, 0.5),
            pct(&waits, 0.99),
            waits.last().copied().unwrap_or(f64::NAN),
        );
        for i in 0..3 {
            c.node(i).shutdown().await;
        }
        Ok(())
    })
}

/// An integer workload: 60 million rounds of xorshift.
const INTEGER: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (local $x i64) (local $i i32)
    (local.set $x (i64.const 88172645463325252))
    (loop $l
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 60000000))))
    (i64.store (i32.const 0) (local.get $x))))"#;

/// A float workload: 30 million rounds of multiply-add, division and square root.
const FLOAT: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (local $x f64) (local $y f64) (local $i i32)
    (local.set $x (f64.const 0.5))
    (local.set $y (f64.const 1.5))
    (loop $l
      (local.set $x (f64.add (f64.mul (local.get $x) (f64.const 1.0000001)) (f64.const 0.25)))
      (local.set $y (f64.sqrt (f64.add (f64.div (local.get $x) (local.get $y)) (f64.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 30000000))))
    (f64.store (i32.const 0) (f64.add (local.get $x) (local.get $y)))))"#;

/// The median wall time of 3 runs of `wat` on `rt` under `profile`.
fn timed(
    rt: &weft_compute::runtime::Runtime,
    wat: &str,
    profile: weft_compute::runtime::Profile,
) -> Result<f64> {
    use weft_compute::runtime::{Limits, RunSpec};
    let module = rt.module(wat.as_bytes())?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let dir = tempfile_dir()?;
        let spec = RunSpec {
            args: vec![],
            env: vec![],
            inputs: None,
            output: dir.join("out"),
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            limits: Limits {
                fuel: 1 << 40,
                memory: 16 << 20,
                deadline: Duration::from_secs(300),
            },
            profile,
            cancel: None,
        };
        let out = rt.run("bench", &module, &spec)?;
        times.push(out.wall.as_secs_f64());
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(sorted(times)[1])
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "weft-bench-det-{}-{}",
        std::process::id(),
        weft_net::now_ms()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The deterministic profile (canonical floats, clocks and randomness from the job) against
/// the same engine without it (the CPU's own NaN bits, the host's clocks), on one core.
fn deterministic_overhead() -> Result<()> {
    use weft_compute::runtime::{Profile, Runtime};
    let deterministic = Runtime::new()?;
    let native = Runtime::with_native_floats()?;
    let profile = Profile::Deterministic {
        seed: [7; 32],
        epoch_ms: 0,
    };
    for (name, wat, goal) in [("integer", INTEGER, 30.0), ("float", FLOAT, 100.0)] {
        let with = timed(&deterministic, wat, profile)?;
        let without = timed(&native, wat, Profile::Native)?;
        println!(
            "  deterministic profile, {name} workload: {:.0} ms vs {:.0} ms without = {:+.1} % (goal ≤ +{goal:.0} %)",
            with * 1e3,
            without * 1e3,
            (with / without - 1.0) * 100.0
        );
    }
    Ok(())
}

/// A job's module work, once and checked 2-of-3 on an in-process fabric of 4 (honest runners:
/// two runs agree): the summed attempt times (claim to recorded result, on each runner), the
/// fuel, and submit → done as the client waits.
fn verified_cost() -> Result<()> {
    use weft_compute::spec::JobSpec;
    use weft_core::Scope;
    use weft_data::{Access, Session};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let c = weft_cluster::Builder::new(4).start().await;
        let node = c.node(0);
        let alice = SecretKey::from_seed([41; 32]);
        let owner = node.data().acting(Access::account(alice.clone()));
        owner
            .create_bucket("bench", weft_store::Residency::default(), None, 1)
            .await?;
        owner
            .objects()
            .put("bench", "bin/integer.wat", INTEGER.as_bytes())
            .await?;
        let session =
            Session::new(&alice, Scope::Account, true, weft_net::now_ms(), 3_600_000, &[])
                .to_text();
        let mut figures: Vec<(f64, f64, f64, usize)> = Vec::new();
        for (i, verify) in ["none", "2-of-3", "none", "2-of-3", "none", "2-of-3"]
            .iter()
            .enumerate()
        {
            let spec = JobSpec {
                module: "bench/bin/integer.wat".into(),
                output: format!("bench/out/{i}/"),
                deterministic: true,
                verify: Some((*verify).into()),
                ..JobSpec::default()
            };
            let start = Instant::now();
            let submitted = node.jobs().submit(&session, &spec).await?;
            let (bucket, id) = submitted
                .id
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("a job id without a bucket"))?;
            let status = loop {
                let s = node.jobs().status(&session, bucket, id).await?;
                if matches!(s.state.as_str(), "done" | "failed" | "cancelled") {
                    break s;
                }
                if start.elapsed() > Duration::from_secs(300) {
                    bail!("job {} did not end in 5 minutes", s.id);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if status.state != "done" {
                bail!("job {} {}: {:?}", status.id, status.state, status.error);
            }
            let wall = start.elapsed().as_secs_f64();
            let attempts: f64 = status
                .runs
                .iter()
                .map(|r| r.ended_ms.saturating_sub(r.started_ms) as f64 / 1e3)
                .sum();
            let fuel: f64 = status.runs.iter().map(|r| r.fuel_used as f64).sum();
            figures.push((wall, attempts, fuel, status.runs.len()));
        }
        let median = |checked: bool, f: fn(&(f64, f64, f64, usize)) -> f64| {
            let v: Vec<f64> = figures
                .iter()
                .enumerate()
                .filter(|(i, _)| (i % 2 == 1) == checked)
                .map(|(_, x)| f(x))
                .collect();
            sorted(v)[1]
        };
        let (once_att, checked_att) = (median(false, |x| x.1), median(true, |x| x.1));
        let (once_wall, checked_wall) = (median(false, |x| x.0), median(true, |x| x.0));
        let (once_fuel, checked_fuel) = (median(false, |x| x.2), median(true, |x| x.2));
        let runs = figures.iter().skip(1).step_by(2).map(|x| x.3).max().unwrap_or(0);
        println!(
            "  2-of-3 verified job (fabric of 4 in process, honest runners, {runs} runs): runner time {:.0} ms vs {:.0} ms once = {:.2}× (goal ≤ 2.1×); fuel {:.2}×; submit → done {:.0} ms vs {:.0} ms = {:.2}× (runs one after another)",
            checked_att * 1e3,
            once_att * 1e3,
            checked_att / once_att,
            checked_fuel / once_fuel,
            checked_wall * 1e3,
            once_wall * 1e3,
            checked_wall / once_wall,
        );
        for i in 0..4 {
            c.node(i).shutdown().await;
        }
        Ok(())
    })
}
