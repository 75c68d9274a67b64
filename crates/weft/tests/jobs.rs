//! Jobs on a real fabric of `weft` processes, driven through the CLI as a user would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use weft_cluster::cli::*;

/// The example modules, built from `examples/wasm` into `dir`.
fn examples(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = dir.join("examples");
    let status = std::process::Command::new(repo.join("scripts/build-examples.sh"))
        .env("WEFT_EXAMPLES_DIR", &out)
        .status()
        .expect("scripts/build-examples.sh runs");
    assert!(status.success(), "building the example jobs failed");
    out
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_string())
}

/// `user`'s bucket `logs`, held to eu, with `file` stored as `name`, through `node`.
fn logs_in_eu(user: &User, node: &str, file: &Path, name: &str) {
    user.ok(&[
        "--data",
        node,
        "bucket",
        "create",
        "logs",
        "--regions",
        "eu",
    ]);
    user.ok(&["--data", node, "put", file.to_str().unwrap(), name]);
}

fn status(user: &User, node: &str, id: &str) -> Value {
    serde_json::from_str(&user.ok(&["--data", node, "job", "status", id, "--json"])).unwrap()
}

#[test]
fn a_job_runs_where_its_data_is_and_never_outside_its_residency() {
    let fabric = up(&["--sites", "eu:2,us:2,ap:2", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ids = sites(&fabric, 6);
    let ex = examples(fabric.root());
    let (alice, _) = User::with_account();
    let text = fabric.root().join("a.txt");
    // Larger than an object kept in its row, so it lives in shards a runner can be near.
    std::fs::write(
        &text,
        "the quick brown fox\njumps over the lazy dog\n".repeat(200),
    )
    .unwrap();
    logs_in_eu(&alice, &node(1), &text, "logs/2026/a.txt");
    // Submitted through a node outside eu; it must run in eu, where the shards are.
    let us = ids
        .values()
        .find(|(_, s)| s == "us")
        .map(|(n, _)| *n)
        .unwrap();
    let wasm = ex.join("wordcount.wasm");
    let through = node(us);
    let wordcount = |output: &str, more: &[&str]| {
        let mut args = vec![
            "--data",
            &through,
            "job",
            "run",
            "--module",
            wasm.to_str().unwrap(),
            "--input",
            "logs/2026/a.txt",
            "--output",
            output,
            "--json",
        ];
        args.extend_from_slice(more);
        let out = alice.ok(&args);
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let s = wordcount("logs/wc/", &[]);
    assert_eq!(s["state"], "done", "{s:#}");
    assert_eq!(s["exit_code"], 0, "{s:#}");
    assert_eq!(s["name"], "wordcount");
    let runner = s["runner"].as_str().unwrap();
    assert_eq!(ids[runner].1, "eu", "ran outside eu: {s:#}");
    let p = &s["placement"];
    assert_eq!(p["remote_bytes"], 0, "input crossed sites: {s:#}");
    assert!(
        p["local_bytes"].as_u64().unwrap() + p["site_bytes"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert!(
        p["filtered"]
            .as_str()
            .unwrap()
            .contains("4 outside its residency"),
        "{s:#}"
    );
    assert_eq!(s["runs"][0]["input_bytes"], 8800);
    assert_eq!(s["deterministic"], false);
    // The same in the deterministic profile (clocks and randomness from the job).
    let det = wordcount("logs/wc-det/", &["--deterministic"]);
    assert_eq!(
        (&det["state"], &det["deterministic"]),
        (&json_str("done"), &Value::Bool(true)),
        "{det:#}"
    );
    // The runner signed a receipt for the run; it reaches the fabric's ledger, where the
    // account checks it for itself.
    let id = s["id"].as_str().unwrap();
    let mut receipts = String::new();
    let start = Instant::now();
    let det_id = det["id"].as_str().unwrap();
    while !(receipts.contains(id) && receipts.contains(det_id))
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
        receipts = alice.ok(&["--data", &node(2), "ledger", "receipts"]);
    }
    assert!(
        receipts.contains(&format!("job {id} (attempt 0)")) && receipts.contains("exit 0"),
        "{receipts}"
    );
    let verified = alice.ok(&["--data", &node(4), "ledger", "verify"]);
    assert!(
        verified.contains("receipts    2 of your account") && verified.contains("first check"),
        "{verified}"
    );
    // The runner's operator sees the work its receipts add up to.
    let runner_dir = node(ids[runner].0);
    let start = Instant::now();
    let work = loop {
        let out = alice.ok(&["--data", &runner_dir, "ledger", "work", "--json"]);
        let work: Value = serde_json::from_str(&out).unwrap();
        if work["jobs"].as_u64().unwrap() >= 1 || start.elapsed() > Duration::from_secs(20) {
            break work;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(work["jobs"].as_u64().unwrap() >= 1, "{work:#}");
    assert!(work["bytes_in"].as_u64().unwrap() >= 8800, "{work:#}");
    let again = alice.ok(&["--data", &node(4), "ledger", "verify"]);
    assert!(again.contains("consistent with the checkpoint"), "{again}");
    // Had the ledger's history changed since (here: the checkpoint kept is made another
    // tree of its size), verify says so and fails.
    let kept = std::fs::read_dir(alice.config.path().join("ledger"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&kept).unwrap();
    let root = text.lines().nth(2).unwrap().to_string();
    let other = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    std::fs::write(&kept, text.replacen(&root, other, 1)).unwrap();
    let err = alice.fails(&["--data", &node(4), "ledger", "verify"]);
    assert!(err.contains("history changed"), "{err}");
    // Its output is an object of the bucket, readable through any node.
    let counts = fabric.root().join("counts.txt");
    alice.ok(&[
        "--data",
        &node(6),
        "get",
        "logs/wc/counts.txt",
        "-o",
        counts.to_str().unwrap(),
    ]);
    let counts = std::fs::read_to_string(&counts).unwrap();
    assert!(
        counts.contains(" 400 ") && counts.contains("/in/2026/a.txt"),
        "{counts}"
    );
    let logs = alice.ok(&["--data", &node(3), "job", "logs", s["id"].as_str().unwrap()]);
    assert_eq!(logs, counts);
    let listed = alice.ok(&["--data", &node(2), "job", "ls", "logs"]);
    assert!(listed.contains(s["id"].as_str().unwrap()), "{listed}");
    // Narrowing to a region the data may not go to leaves nowhere: refused at once.
    let err = alice.fails(&[
        "--data",
        &node(1),
        "job",
        "run",
        "--module",
        wasm.to_str().unwrap(),
        "--input",
        "logs/2026/a.txt",
        "--output",
        "logs/wc2/",
        "--region",
        "us",
    ]);
    assert!(err.contains("can run nowhere"), "{err}");
    // Bad specs and modules are explained.
    let err = alice.fails(&[
        "--data",
        &node(1),
        "job",
        "run",
        "--module",
        "nope",
        "--output",
        "logs/x/",
    ]);
    assert!(err.contains("module"), "{err}");
    let junk = fabric.root().join("junk.wasm");
    std::fs::write(&junk, b"not a module").unwrap();
    let err = alice.fails(&[
        "--data",
        &node(1),
        "job",
        "run",
        "--module",
        junk.to_str().unwrap(),
        "--output",
        "logs/junk/",
    ]);
    assert!(err.contains("not a runnable WASI"), "{err}");
    // Another account can neither see nor cancel it.
    let (mallory, _) = User::with_account();
    let id = s["id"].as_str().unwrap();
    let err = mallory.fails(&["--data", &node(1), "job", "status", id]);
    assert!(err.contains("another account"), "{err}");
    let err = mallory.fails(&["--data", &node(1), "job", "cancel", id]);
    assert!(err.contains("another account"), "{err}");
}

#[test]
fn a_killed_runner_s_job_completes_once_on_another_node_in_its_residency() {
    let fabric = up(&["--sites", "eu:3,us:2", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ids = sites(&fabric, 5);
    let ex = examples(fabric.root());
    let (alice, _) = User::with_account();
    alice.ok(&[
        "--data",
        &node(1),
        "bucket",
        "create",
        "work",
        "--regions",
        "eu",
    ]);
    let spin = ex.join("spin.wasm");
    let id = alice
        .ok(&[
            "--data",
            &node(1),
            "job",
            "run",
            "--module",
            spin.to_str().unwrap(),
            "--output",
            "work/spin/",
            "--fuel",
            "1000000000000000",
            "--detach",
            "--",
            "6",
        ])
        .trim()
        .to_string();
    let mut first = String::new();
    wait_until("the job to run", Duration::from_secs(20), || {
        let s = status(&alice, &node(1), &id);
        if s["state"] == "running" {
            first = s["runner"].as_str().unwrap().to_string();
            true
        } else {
            false
        }
    });
    assert_eq!(ids[&first].1, "eu");
    std::thread::sleep(Duration::from_secs(2));
    let (victim, _) = ids[&first].clone();
    signal(&fabric.node(victim), "-9");
    let killed = Instant::now();
    // Ask through a node that is still up (the killed one may have been its coordinator).
    let asker = node(
        (1..=5)
            .find(|&n| n != victim && ids.values().any(|v| v.0 == n && v.1 == "eu"))
            .unwrap(),
    );
    let mut again = None;
    wait_until("the job to end", Duration::from_secs(60), || {
        let s = status(&alice, &asker, &id);
        if again.is_none() && s["state"] == "running" && s["runner"] != first.as_str() {
            again = Some(killed.elapsed());
        }
        matches!(s["state"].as_str(), Some("done" | "failed" | "cancelled"))
    });
    let s = status(&alice, &asker, &id);
    assert_eq!(s["state"], "done", "{s:#}");
    assert_eq!(s["exit_code"], 0, "{s:#}");
    let runner = s["runner"].as_str().unwrap();
    assert_ne!(runner, first, "{s:#}");
    assert_eq!(ids[runner].1, "eu", "rerun outside eu: {s:#}");
    assert_eq!(s["attempt"], 1, "{s:#}");
    // One result recorded: the killed attempt never finished.
    assert_eq!(s["runs"].as_array().unwrap().len(), 1, "{s:#}");
    assert_eq!(s["failed_on"][0], first.as_str(), "{s:#}");
    eprintln!(
        "kill -9 of the runner → running again elsewhere: {:?}",
        again.unwrap_or_default()
    );
    let listed = alice.ok(&["--data", &asker, "ls", "work/spin/"]);
    assert!(listed.contains("spin.txt"), "{listed}");
}

#[test]
fn limits_and_cancellation_end_jobs_with_clear_reasons() {
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ex = examples(fabric.root());
    let (alice, _) = User::with_account();
    alice.ok(&["--data", &node(1), "bucket", "create", "lab"]);
    let spin = ex.join("spin.wasm");
    let spin = spin.to_str().unwrap();
    let via = node(2);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--data", &via, "job", "run", "--module", spin, "--output", "lab/x/",
        ];
        args.extend_from_slice(extra);
        alice.fails(&args)
    };
    let fuel = run(&["--fuel", "1000000", "--", "5"]);
    assert!(fuel.contains("fuel"), "{fuel}");
    let late = run(&["--deadline", "1s", "--fuel", "1000000000000000", "--", "30"]);
    assert!(late.contains("deadline"), "{late}");
    let greedy = run(&["--memory", "16MiB", "--", "0", "64"]);
    assert!(
        greedy.contains("more than its 16777216 bytes of memory"),
        "{greedy}"
    );
    // Cancelled while running: it stops within about a second.
    let id = alice
        .ok(&[
            "--data",
            &node(1),
            "job",
            "run",
            "--module",
            spin,
            "--output",
            "lab/c/",
            "--fuel",
            "1000000000000000",
            "--detach",
            "--",
            "60",
        ])
        .trim()
        .to_string();
    wait_until("the job to run", Duration::from_secs(20), || {
        status(&alice, &node(1), &id)["state"] == "running"
    });
    alice.ok(&["--data", &node(3), "job", "cancel", &id]);
    let s = status(&alice, &node(1), &id);
    assert_eq!(s["state"], "cancelled", "{s:#}");
    let err = alice.fails(&["--data", &node(3), "job", "cancel", &id]);
    assert!(err.contains("already ended"), "{err}");
}

/// A pipeline's run, as `weft pipeline run --json` prints it: step name → (state, job, runner).
fn steps_of(run: &Value) -> HashMap<String, (String, String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["job"].as_str().unwrap_or("").to_string(),
                    s["runner"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_pipeline_runs_end_to_end_near_its_data_and_an_unchanged_rerun_reuses_every_step() {
    let fabric = up(&["--sites", "eu:2,us:2,ap:2", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ids = sites(&fabric, 6);
    let ex = examples(fabric.root());
    let (alice, _) = User::with_account();
    alice.ok(&[
        "--data",
        &node(1),
        "bucket",
        "create",
        "logs",
        "--regions",
        "eu",
    ]);
    alice.ok(&[
        "--data",
        &node(1),
        "put",
        ex.join("access.log").to_str().unwrap(),
        "logs/raw/access.log",
    ]);
    let file = ex.join("weblog.toml");
    let pipeline = |node: &str, file: &Path, extra: &[&str]| -> Value {
        let mut args = vec![
            "--data",
            node,
            "pipeline",
            "run",
            file.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&alice.ok(&args)).unwrap()
    };
    // Submitted through a us node: every step runs in eu, next to its own inputs.
    let us = ids
        .values()
        .find(|(_, s)| s == "us")
        .map(|(n, _)| *n)
        .unwrap();
    let first = pipeline(&node(us), &file, &[]);
    let steps = steps_of(&first);
    assert_eq!(steps.len(), 4, "{first:#}");
    for (name, (state, job, runner)) in &steps {
        assert_eq!(state, "done", "{name}: {first:#}");
        assert_eq!(ids[runner].1, "eu", "{name} ran outside eu: {first:#}");
        let s = status(&alice, &node(2), job);
        assert_eq!(
            s["placement"]["remote_bytes"], 0,
            "{name}'s inputs crossed sites: {s:#}"
        );
        assert!(s["runs"][0]["input_bytes"].as_u64().unwrap() > 0, "{s:#}");
    }
    let report = fabric.root().join("report.md");
    alice.ok(&[
        "--data",
        &node(5),
        "get",
        "logs/pipelines/weblog/report/report.md",
        "-o",
        report.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(&report).unwrap();
    assert!(report.contains("430 requests"), "{report}");
    assert!(
        report.contains("- 198.51.100.66: 70 requests, 70 errors"),
        "{report}"
    );
    let jobs = |n: &str| {
        alice
            .ok(&["--data", n, "job", "ls", "logs"])
            .lines()
            .count()
    };
    let submitted = jobs(&node(1));

    // Unchanged: every step reused, no job submitted.
    let again = pipeline(&node(4), &file, &[]);
    for (name, (state, job, _)) in steps_of(&again) {
        assert_eq!(state, "reused", "{name}: {again:#}");
        assert_eq!(job, steps[&name].1, "{name} reused another run's job");
    }
    assert_eq!(jobs(&node(1)), submitted);

    // A changed argument reruns that step and what needs it, nothing else.
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = ex.join("changed.toml");
    std::fs::write(&changed, text.replace("args = [\"3\"]", "args = [\"2\"]")).unwrap();
    let third = steps_of(&pipeline(&node(1), &changed, &[]));
    let state = |s: &HashMap<String, (String, String, String)>, n: &str| s[n].0.clone();
    assert_eq!(state(&third, "extract"), "reused");
    assert_eq!(state(&third, "aggregate"), "reused");
    assert_eq!(state(&third, "anomalies"), "done");
    // The flags now say "2 sd": the report's input changed, so it runs again.
    assert_eq!(state(&third, "report"), "done");

    // A failing step fails the run, skips nothing it does not feed, and a rerun resumes there.
    let failing = ex.join("failing.toml");
    std::fs::write(
        &failing,
        text.replace("memory = \"64MiB\"", "memory = \"64MiB\"\nfuel = 1000")
            .replace("args = [\"3\"]", "args = [\"4\"]"),
    )
    .unwrap();
    let err = alice.fails(&[
        "--data",
        &node(3),
        "pipeline",
        "run",
        failing.to_str().unwrap(),
    ]);
    assert!(err.contains("failed at step report"), "{err}");
    assert!(err.contains("fuel"), "{err}");
    let shown = alice.ok(&["--data", &node(6), "pipeline", "status", "logs/weblog"]);
    assert!(shown.contains("pipeline weblog in logs: failed"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("report") && l.contains("failed")),
        "{shown}"
    );
    let fixed = ex.join("fixed.toml");
    std::fs::write(&fixed, text.replace("args = [\"3\"]", "args = [\"4\"]")).unwrap();
    let resumed = steps_of(&pipeline(&node(3), &fixed, &[]));
    assert_eq!(state(&resumed, "extract"), "reused");
    assert_eq!(state(&resumed, "aggregate"), "reused");
    assert_eq!(state(&resumed, "anomalies"), "reused");
    assert_eq!(state(&resumed, "report"), "done");

    // --from reruns a step and everything after it, even unchanged.
    let forced = steps_of(&pipeline(&node(2), &fixed, &["--from", "aggregate"]));
    assert_eq!(state(&forced, "extract"), "reused");
    assert_eq!(state(&forced, "anomalies"), "reused");
    assert_eq!(state(&forced, "aggregate"), "done");
    assert_eq!(state(&forced, "report"), "done");

    // Bad pipelines are explained before anything runs.
    let cyclic = ex.join("cyclic.toml");
    std::fs::write(
        &cyclic,
        text.replace("inputs = [\"@extract\"]", "inputs = [\"@report\"]"),
    )
    .unwrap();
    let err = alice.fails(&[
        "--data",
        &node(1),
        "pipeline",
        "run",
        cyclic.to_str().unwrap(),
    ]);
    assert!(err.contains("cycle"), "{err}");
    let err = alice.fails(&[
        "--data",
        &node(1),
        "pipeline",
        "run",
        fixed.to_str().unwrap(),
        "--from",
        "nope",
    ]);
    assert!(err.contains("no such step"), "{err}");
    // Another account sees nothing of it.
    let (mallory, _) = User::with_account();
    let err = mallory.fails(&["--data", &node(1), "pipeline", "status", "logs/weblog"]);
    assert!(err.contains("another account"), "{err}");
}

#[test]
fn stopping_a_node_stops_the_job_it_runs() {
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ids = sites(&fabric, 3);
    let ex = examples(fabric.root());
    let (alice, _) = User::with_account();
    alice.ok(&["--data", &node(1), "bucket", "create", "lab"]);
    let spin = ex.join("spin.wasm");
    let id = alice
        .ok(&[
            "--data",
            &node(1),
            "job",
            "run",
            "--module",
            spin.to_str().unwrap(),
            "--output",
            "lab/long/",
            "--fuel",
            "1000000000000000",
            "--detach",
            "--",
            "600",
        ])
        .trim()
        .to_string();
    let mut runner = 0;
    wait_until("the job to run", Duration::from_secs(20), || {
        let s = status(&alice, &node(1), &id);
        if s["state"] == "running" {
            runner = ids[s["runner"].as_str().unwrap()].0;
            true
        } else {
            false
        }
    });
    let pid: i32 = std::fs::read_to_string(fabric.node(runner).join("node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Its node stops promptly (the job's module stops with it), not after `down`'s kill -9.
    let t = Instant::now();
    ok(&["down", "--dir", fabric.root().to_str().unwrap()]);
    let took = t.elapsed();
    // Gone, or a zombie nobody reaped yet (its parent, `weft up`, has exited).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        matches!(state, None | Some("Z" | "X")),
        "the runner's process outlived `weft down`: {stat}"
    );
    assert!(took < Duration::from_secs(5), "weft down took {took:?}");
}

/// The fabric's admin sets quotas with `weft fabric quota`; an account sees its own with
/// `weft usage`; a put past the bytes quota and a job past the jobs quota fail with a clear
/// message, and what ends or is deleted frees the room again.
#[test]
fn quotas_bound_what_an_account_stores_and_runs() {
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ex = examples(fabric.root());
    let spin = ex.join("spin.wasm");
    let spin = spin.to_str().unwrap();
    let (alice, _) = User::with_account();
    let shown: Value = serde_json::from_str(&alice.ok(&["account", "show", "--json"])).unwrap();
    let id = shown["id"].as_str().unwrap().to_string();
    assert!(ok(&["--data", &node(1), "fabric", "quota"]).contains("no quotas"));
    let set = ok(&[
        "--data",
        &node(1),
        "fabric",
        "quota",
        "default",
        "--bytes",
        "1MB",
    ]);
    assert!(set.contains("bytes stored: 976.6 KiB"), "{set}");
    // Every node reads quotas at most 3 s old.
    let fresh = Duration::from_secs(4);
    let err = fails(&[
        "--data",
        &node(2),
        "fabric",
        "quota",
        "default",
        "--jobs",
        "1",
    ]);
    assert!(err.contains("admin key"), "{err}");
    alice.ok(&["--data", &node(2), "bucket", "create", "lab"]);
    std::thread::sleep(fresh);
    let file = fabric.root().join("600k");
    std::fs::write(&file, vec![7u8; 600_000]).unwrap();
    let file = file.to_str().unwrap();
    alice.ok(&["--data", &node(2), "put", file, "lab/one"]);
    let err = alice.fails(&["--data", &node(3), "put", file, "lab/two"]);
    assert!(err.contains("over quota"), "{err}");
    let usage = alice.ok(&["--data", &node(3), "usage"]);
    assert!(usage.contains("stored   585.9 KiB of 976.6 KiB"), "{usage}");
    alice.ok(&["--data", &node(2), "rm", "lab/one"]);
    alice.ok(&["--data", &node(3), "put", file, "lab/two"]);
    // Her own quota replaces the default: room for the module and its outputs, one job.
    let mine = ok(&[
        "--data",
        &node(1),
        "fabric",
        "quota",
        &id,
        "--bytes",
        "50MB",
        "--jobs",
        "1",
    ]);
    assert!(mine.contains("jobs queued or running: 1"), "{mine}");
    std::thread::sleep(fresh);
    let listed = ok(&["--data", &node(1), "fabric", "quota", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed:#}");
    let detached = |out: &str| {
        alice
            .ok(&[
                "--data",
                &node(2),
                "job",
                "run",
                "--module",
                spin,
                "--output",
                out,
                "--fuel",
                "1000000000000000",
                "--detach",
                "--",
                "60",
            ])
            .trim()
            .to_string()
    };
    let first = detached("lab/q1/");
    let err = alice.fails(&[
        "--data",
        &node(3),
        "job",
        "run",
        "--module",
        spin,
        "--output",
        "lab/q2/",
        "--detach",
        "--",
        "60",
    ]);
    assert!(
        err.contains("over quota") && err.contains("1 jobs queued or running"),
        "{err}"
    );
    alice.ok(&["--data", &node(3), "job", "cancel", &first]);
    let second = detached("lab/q3/");
    alice.ok(&["--data", &node(3), "job", "cancel", &second]);
    // Cleared, she has the default again.
    ok(&["--data", &node(1), "fabric", "quota", &id, "--clear"]);
    std::thread::sleep(fresh);
    let usage = alice.ok(&["--data", &node(1), "usage", "--json"]);
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["quota_bytes"], 1_000_000, "{usage:#}");
    assert_eq!(usage["quota_jobs"], Value::Null, "{usage:#}");
}

/// Every file below `dir` whose path contains `part`.
fn files_under(dir: &Path, part: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().contains(part) {
                out.push(p);
            }
        }
    }
    out
}

/// `weft audit --json` through `node` until nothing is pending (a job's receipts reach a
/// cosigned checkpoint within a second or two): its outcome and whether it passed.
fn audit(user: &User, node: &str) -> (Value, bool) {
    let start = Instant::now();
    loop {
        let out = user.run(&["--data", node, "audit", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "audit printed no JSON: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let pending = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["verdict"] == "pending");
        let counted = v["jobs"].as_array().unwrap().len() >= 2;
        if (!pending && counted) || start.elapsed() > Duration::from_secs(90) {
            assert_eq!(out.status.success(), v["passed"] == true, "{v:#}");
            return (v.clone(), out.status.success());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_audit_passes_an_honest_fabric_and_names_what_was_tampered() {
    let fabric = up(&["--sites", "eu:2,us:2", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ex = examples(fabric.root());
    let (alice, _) = User::with_account();
    let text = fabric.root().join("a.txt");
    std::fs::write(&text, "an audited line of text\n".repeat(400)).unwrap();
    logs_in_eu(&alice, &node(1), &text, "logs/a.txt");
    let wasm = ex.join("wordcount.wasm");
    let first = node(1);
    for (out, more) in [("logs/wc/", None), ("logs/wc-checked/", Some("2-of-3"))] {
        let mut args = vec![
            "--data",
            &first,
            "job",
            "run",
            "--module",
            wasm.to_str().unwrap(),
            "--input",
            "logs/a.txt",
            "--output",
            out,
            "--json",
        ];
        if let Some(v) = more {
            args.extend_from_slice(&["--verify", v]);
        }
        let s: Value = serde_json::from_str(&alice.ok(&args)).unwrap();
        assert_eq!(s["state"], "done", "{s:#}");
    }
    // Honest: the log walks to its checkpoint, every shard is in eu and proven, both jobs
    // are backed by their receipts.
    let (v, passed) = audit(&alice, &node(3));
    assert!(passed, "{v:#}");
    assert!(v["ledger"]["entries"].as_u64().unwrap() >= 3, "{v:#}");
    assert!(v["receipts"].as_u64().unwrap() >= 3, "{v:#}");
    assert!(v["shards"].as_u64().unwrap() >= 3, "{v:#}");
    assert_eq!(v["jobs"][0]["verdict"], "proven", "{v:#}");
    assert_eq!(v["jobs"][1]["verdict"], "proven", "{v:#}");
    let lines = alice.ok(&["--data", &node(3), "audit"]);
    assert!(
        lines.contains("audit       passed") && lines.contains("consistent with the checkpoint"),
        "{lines}"
    );
    // Reading an object back is served by a node, which signs for the bytes it served (a
    // transfer receipt, every 10 s per account) and charges the reader.
    let back = fabric.root().join("back.txt");
    alice.ok(&[
        "--data",
        &node(2),
        "get",
        "logs/a.txt",
        "-o",
        back.to_str().unwrap(),
    ]);
    wait_until("a transfer receipt", Duration::from_secs(40), || {
        let h = alice.ok(&["--data", &node(2), "ledger", "history", "--json"]);
        let h: Value = serde_json::from_str(&h).unwrap();
        h.as_array().unwrap().iter().any(|l| {
            l["kind"] == "transfer" && l["what"] == "9600 bytes" && l["amount"].as_i64() < Some(0)
        })
    });
    // Tampered storage: every shard file on one eu node overwritten in place.
    let ids = sites(&fabric, 4);
    let eu: Vec<usize> = ids
        .values()
        .filter(|(_, s)| s == "eu")
        .map(|(n, _)| *n)
        .collect();
    let victim = eu[0];
    let victim_id = ids
        .iter()
        .find(|(_, (n, _))| *n == victim)
        .unwrap()
        .0
        .clone();
    let shards = files_under(&fabric.node(victim), "/shards/");
    assert!(!shards.is_empty());
    for f in &shards {
        let len = std::fs::metadata(f).unwrap().len() as usize;
        std::fs::write(f, vec![0u8; len]).unwrap();
    }
    let (v, passed) = audit(&alice, &node(3));
    assert!(!passed, "{v:#}");
    let findings = v["findings"].to_string();
    assert!(
        findings.contains("logs/a.txt: shard")
            && findings.contains(&victim_id[..16])
            && findings.contains("no proof it holds the shard"),
        "{v:#}"
    );
    let err = alice.fails(&["--data", &node(3), "audit"]);
    assert!(err.contains("the audit failed"), "{err}");
    // The same through the HTTP API (`GET /v1/audit`), the node auditing itself.
    let out = alice.run(&["--data", &node(3), "audit", "--by-node", "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["ledger"]["entries"].as_u64().unwrap() >= 3,
        "{report:#}"
    );
    assert!(
        report["findings"].to_string().contains("logs/a.txt: shard"),
        "{report:#}"
    );
    // Tampered ledger: a byte of an entry changed in the answering node's copy.
    let bundles = files_under(&fabric.node(3), "tile/entries/");
    assert!(!bundles.is_empty());
    for b in &bundles {
        let mut bytes = std::fs::read(b).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(b, bytes).unwrap();
    }
    let (v, passed) = audit(&alice, &node(3));
    assert!(!passed, "{v:#}");
    assert!(v["ledger"].is_null(), "{v:#}");
    assert!(
        v["findings"].to_string().contains("ledger entry #"),
        "{v:#}"
    );
    let out = alice.run(&["--data", &node(3), "audit", "--by-node", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["findings"]
            .to_string()
            .contains("the node's copy of the ledger"),
        "{report:#}"
    );
}
