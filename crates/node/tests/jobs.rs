//! A job over bucket objects, run by a node for an account: inputs fetched from the fabric,
//! outputs and logs written back as objects; another account's buckets are refused before
//! anything runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weft_cluster::cluster;
use weft_compute::runtime::{Limits, Profile, RunError, Runtime};
use weft_compute::spec::Source;
use weft_core::SecretKey;
use weft_data::{Access, BucketError};
use weft_jobs::{Job, RunnerError, deterministic_profile, run_job};
use weft_store::Residency;

fn wordcount() -> Vec<u8> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir: PathBuf = tempfile::tempdir().unwrap().keep();
    let status = std::process::Command::new(repo.join("scripts/build-examples.sh"))
        .env("WEFT_EXAMPLES_DIR", &dir)
        .status()
        .expect("scripts/build-examples.sh runs");
    assert!(status.success(), "building the example jobs failed");
    std::fs::read(dir.join("wordcount.wasm")).unwrap()
}

/// A job of `bucket`'s module object `module` over `inputs`, writing under `prefix`.
fn object_job(name: &str, bucket: &str, module: &str, inputs: Vec<Source>, prefix: &str) -> Job {
    Job {
        name: name.into(),
        module: Source::Object {
            bucket: bucket.into(),
            key: module.into(),
        },
        args: vec![],
        env: vec![],
        inputs,
        output_bucket: bucket.into(),
        output_prefix: prefix.into(),
        cpu_milli: 1000,
        limits: limits(),
        retries: 0,
        regions: vec![],
        jurisdictions: vec![],
        labels: Default::default(),
        near: None,
    }
}

fn limits() -> Limits {
    Limits {
        fuel: 5_000_000_000,
        memory: 64 << 20,
        deadline: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reads_bucket_objects_and_writes_its_outputs_back() {
    let (_tmp, _dirs, nodes) = cluster(3, Duration::from_secs(3600)).await;
    let alice = SecretKey::from_seed([21; 32]);
    let writer = nodes[0].data().acting(Access::account(alice.clone()));
    writer
        .create_bucket("logs", Residency::default(), None, 1)
        .await
        .unwrap();
    writer
        .objects()
        .put("logs", "2026/a.txt", &b"one two three\nfour five\n"[..])
        .await
        .unwrap();
    writer
        .objects()
        .put("logs", "2026/b.txt", &b"six\n"[..])
        .await
        .unwrap();
    writer
        .objects()
        .put("logs", "bin/wordcount.wasm", &wordcount()[..])
        .await
        .unwrap();
    let input = |key: &str| Source::Object {
        bucket: "logs".into(),
        key: key.into(),
    };
    let job = object_job(
        "wordcount",
        "logs",
        "bin/wordcount.wasm",
        vec![input("2026/a.txt"), input("2026/b.txt")],
        "jobs/wc1/",
    );
    // Run by another node than the one that wrote the inputs.
    let runtime = Runtime::new().unwrap();
    let runner = nodes[2].data().acting(Access::account(alice.clone()));
    let work = tempfile::tempdir().unwrap();
    let report = run_job(&runner, &runtime, &job, Profile::Native, None, work.path())
        .await
        .unwrap();
    assert_eq!(report.outcome.exit_code, 0);
    assert_eq!(report.input_bytes, 28);
    let keys: Vec<&str> = report.outputs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["jobs/wc1/counts.txt", "jobs/wc1/stdout", "jobs/wc1/stderr"]
    );
    let mut counts = Vec::new();
    writer
        .objects()
        .get("logs", "jobs/wc1/counts.txt", &mut counts)
        .await
        .unwrap();
    let counts = String::from_utf8(counts).unwrap();
    assert!(
        counts.lines().last().unwrap().ends_with("28 total"),
        "{counts}"
    );
    assert!(counts.contains("/in/2026/a.txt"), "{counts}");
    // Another account's bucket: refused before anything runs or is written.
    let mallory = nodes[1]
        .data()
        .acting(Access::account(SecretKey::from_seed([22; 32])));
    mallory
        .create_bucket("mine", Residency::default(), None, 1)
        .await
        .unwrap();
    let stolen = Job {
        output_bucket: "mine".into(),
        output_prefix: "loot/".into(),
        ..job.clone()
    };
    let refused = run_job(
        &mallory,
        &runtime,
        &stolen,
        Profile::Native,
        None,
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    assert!(
        matches!(refused, Err(RunnerError::Bucket(BucketError::NotOwner(_)))),
        "{refused:?}"
    );
    assert!(mallory.objects().list("mine", "").await.unwrap().is_empty());
    // A job that runs out of fuel ends with that reason; its logs are kept.
    let starved = Job {
        output_prefix: "jobs/wc2/".into(),
        limits: Limits {
            fuel: 1_000,
            ..limits()
        },
        ..job
    };
    let ended = run_job(
        &runner,
        &runtime,
        &starved,
        Profile::Native,
        None,
        tempfile::tempdir().unwrap().path(),
    )
    .await;
    assert!(
        matches!(ended, Err(RunnerError::Run(RunError::OutOfFuel { .. }))),
        "{ended:?}"
    );
    let kept = writer.objects().list("logs", "jobs/wc2/").await.unwrap();
    let kept: Vec<&str> = kept.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kept, ["jobs/wc2/stderr", "jobs/wc2/stdout"]);
}

/// Reads the clocks and the randomness and prints them (and a NaN the hardware leaves open).
const CLOCKS_AND_DICE: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (f64.store (i32.const 0) (f64.div (f64.const 0) (f64.const 0)))
        (drop (call $random (i32.const 8) (i32.const 32)))
        (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 40)))
        (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 48)))
        (i32.store (i32.const 100) (i32.const 0))
        (i32.store (i32.const 104) (i32.const 56))
        (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 200)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_job_commits_to_the_same_result_on_every_node() {
    let (_tmp, _dirs, nodes) = cluster(3, Duration::from_secs(3600)).await;
    let alice = SecretKey::from_seed([21; 32]);
    let writer = nodes[0].data().acting(Access::account(alice.clone()));
    writer
        .create_bucket("jobs", Residency::default(), None, 1)
        .await
        .unwrap();
    writer
        .objects()
        .put("jobs", "bin/dice.wat", CLOCKS_AND_DICE.as_bytes())
        .await
        .unwrap();
    let job = object_job("dice", "jobs", "bin/dice.wat", vec![], "out/");
    let profile = deterministic_profile("jobs/0190a3b4c5d6e7f8", 1_765_000_000_000);
    let mut results = Vec::new();
    for node in &nodes {
        let runner = node.data().acting(Access::account(alice.clone()));
        let runtime = Runtime::new().unwrap();
        let work = tempfile::tempdir().unwrap();
        let report = run_job(&runner, &runtime, &job, profile, None, work.path())
            .await
            .unwrap();
        assert_eq!(report.outcome.exit_code, 0);
        results.push(report.result);
    }
    // Written elsewhere (as a verification run would), the same result.
    let elsewhere = Job {
        output_prefix: "verify/1/".into(),
        ..job.clone()
    };
    let runner = nodes[0].data().acting(Access::account(alice.clone()));
    let runtime = Runtime::new().unwrap();
    let moved = run_job(
        &runner,
        &runtime,
        &elsewhere,
        profile,
        None,
        tempfile::tempdir().unwrap().path(),
    )
    .await
    .unwrap();
    results.push(moved.result);
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    // The host's clocks and randomness: another result every run.
    let runner = nodes[1].data().acting(Access::account(alice.clone()));
    let runtime = Runtime::new().unwrap();
    let native = run_job(
        &runner,
        &runtime,
        &job,
        Profile::Native,
        None,
        tempfile::tempdir().unwrap().path(),
    )
    .await
    .unwrap();
    assert_ne!(native.result, results[0]);
}
