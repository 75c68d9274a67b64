//! `[ledger]` Verified results: a job checked 2-of-3 where one runner is a rogue member that
//! lies about its result. The majority's result stands (its outputs, read back and hashed,
//! are the ones kept), the rogue's signed receipt is kept as proof, its reputation drops and,
//! after repeated offences, it is quarantined and gets no more work.

use std::time::Duration;

use weft_cluster::{Builder, Rogue, job_ended, session};
use weft_compute::spec::JobSpec;
use weft_core::{NodeId, SecretKey};
use weft_data::Access;
use weft_ledger::fault::{Fault, Faults};
use weft_store::Residency;

/// Prints "checked\n" and exits 0.
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "checked\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;

/// Wait until `node` sees every member idle (loads travel in node records, a little late).
async fn wait_idle(node: &weft_node::Node) {
    for _ in 0..300 {
        if node.fabric().members().iter().all(|m| m.load.jobs == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the members did not all look idle within 30 s");
}

/// `[ledger]` A rogue runner's wrong results are outvoted, proven, and quarantine it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_runner_is_outvoted_proven_wrong_and_quarantined() {
    let cluster = Builder::new(4).start().await;
    let nodes: Vec<&weft_node::Node> = (0..4).map(|i| cluster.node(i)).collect();
    // With nothing else between them, the scheduler ranks idle nodes by id: the rogue is
    // the node with the lowest, so every checked job's first run is its.
    let rogue_node = nodes.iter().min_by_key(|n| n.id().0).unwrap();
    let rogue = Rogue::new(rogue_node);
    rogue.lie_about_results();
    let entry = nodes.iter().find(|n| n.id() != rogue.id()).unwrap();
    // Prices count in placement too: every node's must be known (all the same) first.
    for _ in 0..100 {
        if entry.ledger().price_lists().await.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let alice = SecretKey::from_seed([31; 32]);
    let owner = entry.data().acting(Access::account(alice.clone()));
    owner
        .create_bucket("work", Residency::default(), None, 1)
        .await
        .unwrap();
    owner
        .objects()
        .put("work", "bin/hello.wat", HELLO.as_bytes())
        .await
        .unwrap();
    let session = session(&alice);
    let spec = |out: &str| JobSpec {
        module: "work/bin/hello.wat".into(),
        output: format!("work/{out}"),
        verify: Some("2-of-3".into()),
        ..JobSpec::default()
    };

    let mut honest_result = None;
    for round in 0..3 {
        let out = format!("r{round}/");
        wait_idle(entry).await;
        let submitted = entry.jobs().submit(&session, &spec(&out)).await.unwrap();
        assert!(
            submitted.deterministic,
            "a checked job runs deterministically"
        );
        let s = job_ended(entry, &session, &submitted.id).await;
        assert_eq!(s.state, "done", "{s:?}");
        let v = s
            .verification
            .clone()
            .expect("a checked job shows its check");
        assert_eq!(v.quorum, "2-of-3");
        assert_eq!(v.verdict, "agreed");
        // Three runs on three distinct nodes, the rogue's first; it alone was wrong.
        let runners: Vec<&str> = v.runs.iter().map(|r| r.runner.as_str()).collect();
        assert_eq!(runners.len(), 3, "{v:?}");
        assert_eq!(runners[0], rogue.id().to_hex());
        assert!(runners[1] != runners[2] && !runners[1..].contains(&runners[0]));
        assert_eq!(v.wrong, vec![rogue.id().to_hex()]);
        assert_ne!(v.runs[0].result, v.result);
        assert_eq!(v.runs[1].result, v.result);
        // Every agreed result is the same (deterministic); the kept run is an honest one.
        let result = v.result.clone().unwrap();
        assert_eq!(honest_result.get_or_insert(result.clone()), &result);
        assert_ne!(s.runner.as_deref(), Some(rogue.id().to_hex().as_str()));
        // The job's outputs are the majority's: what the module printed, no rogue file, and
        // no run's own outputs left behind.
        let listed: Vec<String> = owner
            .objects()
            .list("work", &out)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, vec![format!("{out}stderr"), format!("{out}stdout")]);
        let mut stdout = Vec::new();
        owner
            .objects()
            .get("work", &format!("{out}stdout"), &mut stdout)
            .await
            .unwrap();
        assert_eq!(stdout, b"checked\n");
    }

    // The rogue's own receipts prove it wrong, to anyone who reads the table.
    let faults = entry.ledger().faults_of(&rogue.id()).await.unwrap();
    assert_eq!(faults.len(), 3);
    for f in &faults {
        assert_eq!(f.check(), Ok(rogue.id()));
    }
    // A fault the rogue forges against an honest node (its own receipts "agreeing") counts
    // for nothing.
    let victim = nodes.iter().find(|n| n.id() != rogue.id()).unwrap().id();
    let honest_receipt = faults[0].agreeing[0].clone();
    let forged = Fault {
        wrong: honest_receipt,
        agreeing: vec![faults[0].wrong.clone(), faults[1].wrong.clone()],
    };
    assert!(forged.check().is_err());
    rogue
        .node()
        .table()
        .create::<Faults>(rogue.key(), &victim, &forged.key(), &forged)
        .await
        .unwrap();
    assert!(entry.ledger().faults_of(&victim).await.unwrap().is_empty());

    // Reputation: one score from audits, uptime and verified results.
    entry.healer().check_once().await;
    let reps = entry.healer().reputation();
    let of = |id: NodeId| reps.iter().find(|r| r.node == id.to_hex()).unwrap().clone();
    let bad = of(rogue.id());
    assert_eq!(bad.wrong_results, 3);
    assert!(bad.quarantined && bad.score == 0.0, "{bad:?}");
    let good = of(victim);
    assert_eq!(good.wrong_results, 0);
    assert!(!good.quarantined && good.score == 1.0, "{good:?}");

    // Quarantined, it gets no more runs: the next checked job runs on the honest three.
    wait_idle(entry).await;
    let submitted = entry.jobs().submit(&session, &spec("r3/")).await.unwrap();
    let s = job_ended(entry, &session, &submitted.id).await;
    assert_eq!(s.state, "done", "{s:?}");
    let v = s.verification.unwrap();
    assert_eq!(v.runs.len(), 2, "two honest runs agree at once: {v:?}");
    assert!(v.runs.iter().all(|r| r.runner != rogue.id().to_hex()));
    assert!(v.wrong.is_empty());
    assert_eq!(v.result.as_ref(), honest_result.as_ref());
}
