//! `[ledger]` Credits: an account's balance is its allowance and the admin's grants less what
//! its receipts in the log cost, at the prices the nodes that did the work published; a job
//! that may cost more than the account has available is refused with a clear message (nothing
//! already acknowledged is lost); a job with a maximum price runs only on a node priced at or
//! under it; an operator's earnings are what its receipts charged.

use std::time::Duration;

use weft_cluster::{Builder, job_ended, session};
use weft_compute::spec::JobSpec;
use weft_core::SecretKey;
use weft_data::Access;
use weft_jobs::JobError;
use weft_ledger::price::{DEFAULT_ALLOWANCE, MICRO};
use weft_store::Residency;

/// Prints "paid\n" and exits 0.
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "paid\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;

/// Counts for a long while (about 10¹⁰ instructions), then exits.
const SPIN: &str = r#"(module (memory (export "memory") 1)
  (func (export "_start") (local $i i64)
    (loop $l
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const 2000000000))))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_follow_the_receipts_and_work_beyond_them_is_refused() {
    // Node 2 is cheaper than the default price for fuel (1,000 micro-credits per 10⁹).
    let cheap = weft_node::Prices {
        fuel_per_g: 250,
        ..Default::default()
    };
    let cluster = Builder::new(3).prices(2, cheap).start().await;
    let cheap_id = cluster.node(2).id();
    let entry = cluster.node(0);
    for _ in 0..100 {
        if entry
            .ledger()
            .price_lists()
            .await
            .get(&cheap_id)
            .map(|p| p.fuel_per_g)
            == Some(250)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let alice = SecretKey::from_seed([51; 32]);
    let owner = entry.data().acting(Access::account(alice.clone()));
    owner
        .create_bucket("paid", Residency::default(), None, 1)
        .await
        .unwrap();
    owner
        .objects()
        .put("paid", "bin/hello.wat", HELLO.as_bytes())
        .await
        .unwrap();
    owner
        .objects()
        .put("paid", "bin/spin.wat", SPIN.as_bytes())
        .await
        .unwrap();
    let session = session(&alice);
    let before = entry
        .ledger()
        .balance(&alice.public(), 0, DEFAULT_ALLOWANCE)
        .await
        .unwrap();
    assert_eq!(before.allowance, DEFAULT_ALLOWANCE);
    assert_eq!((before.spent, before.granted), (0, 0));

    // A job with a maximum price runs on the one node priced under it.
    let spec = |out: &str, fuel: Option<u64>, max: Option<f64>| JobSpec {
        module: "paid/bin/hello.wat".into(),
        output: format!("paid/{out}"),
        fuel,
        max_price: max,
        ..JobSpec::default()
    };
    let submitted = entry
        .jobs()
        .submit(&session, &spec("cheap/", None, Some(0.0005)))
        .await
        .unwrap();
    let done = job_ended(entry, &session, &submitted.id).await;
    assert_eq!(done.state, "done", "{done:?}");
    assert_eq!(done.runner, Some(cheap_id.to_hex()));
    let placed = done.placement.unwrap();
    assert!(
        placed.filtered.contains("2 above its maximum price"),
        "{}",
        placed.filtered
    );

    // Its receipt, once in the log, costs the account what the runner charged: fuel at 250
    // micro-credits per 10⁹, rounded up.
    let fuel = done.runs[0].fuel_used;
    let charge = (u128::from(fuel) * 250).div_ceil(1_000_000_000) as u64;
    let mut after = before.clone();
    for _ in 0..150 {
        after = entry
            .ledger()
            .balance(&alice.public(), 0, DEFAULT_ALLOWANCE)
            .await
            .unwrap();
        if after.receipts >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after.receipts, 1, "{after:?}");
    assert_eq!(after.spent, charge);
    assert_eq!(after.balance(), i128::from(DEFAULT_ALLOWANCE - charge));
    for _ in 0..150 {
        if cluster.node(2).ledger().earned(&cheap_id) == charge {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let earned = cluster.node(2).ledger().work_done(&cheap_id).unwrap();
    assert_eq!(
        (earned.earned, earned.earned_jobs, earned.jobs),
        (charge, charge, 1)
    );

    // 2·10¹⁶ fuel at up to 0.001 credits per 10⁹ may cost 20,000 credits: more than the
    // account has.
    let big = spec("big/", Some(20_000_000_000_000_000), None);
    let refused = entry.jobs().submit(&session, &big).await.unwrap_err();
    assert!(matches!(refused, JobError::Credits(_)), "{refused:?}");
    let why = refused.to_string();
    assert!(
        why.contains("credits available") && why.contains("may cost up to 20000.000000"),
        "{why}"
    );
    // Nothing acknowledged was lost: the first job's outputs are still there.
    let mut out = Vec::new();
    owner
        .objects()
        .get("paid", "cheap/stdout", &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"paid\n");

    // A grant from the fabric's admin (the first node) makes room; only the admin can grant.
    assert!(
        cluster
            .node(1)
            .grant_credits(&alice.public().to_hex(), 15_000 * MICRO, "test")
            .await
            .is_err()
    );
    entry
        .grant_credits(&alice.public().to_hex(), 15_000 * MICRO, "for the big run")
        .await
        .unwrap();
    let granted = entry
        .ledger()
        .balance(&alice.public(), 0, DEFAULT_ALLOWANCE)
        .await
        .unwrap();
    assert_eq!(granted.granted, 15_000 * MICRO);
    let long = JobSpec {
        module: "paid/bin/spin.wat".into(),
        ..big.clone()
    };
    let submitted = entry.jobs().submit(&session, &long).await.unwrap();
    // While it is under way its ceiling is held: a second one does not fit.
    match entry.jobs().submit(&session, &big).await {
        Err(JobError::Credits(why)) => assert!(why.contains("held by 1 jobs"), "{why}"),
        Ok(s) => panic!("a second 20,000-credit job fit in 25,000 credits: {s:?}"),
        Err(e) => panic!("{e}"),
    }
    let (bucket, id) = submitted.id.split_once('/').unwrap();
    match entry.jobs().cancel(&session, bucket, id).await {
        Ok(_) | Err(JobError::Refused(_)) => {} // it may have ended on its own
        Err(e) => panic!("{e}"),
    }
    job_ended(entry, &session, &submitted.id).await;
    // Once it ended, its hold is given back (as soon as the listing sees it ended).
    let mut held = u64::MAX;
    for _ in 0..50 {
        held = entry.jobs().held_by(&owner).await.unwrap().1;
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 0);
}

/// Storage is billed by the nodes that hold it: each holder signs, per account, the byte-hours
/// it held the account's shards for since its last bill, and the account pays for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_is_billed_by_the_nodes_that_hold_it() {
    let cluster = Builder::new(3).start().await;
    let entry = cluster.node(0);
    let alice = SecretKey::from_seed([52; 32]);
    let owner = entry.data().acting(Access::account(alice.clone()));
    owner
        .create_bucket("kept", Residency::default(), None, 1)
        .await
        .unwrap();
    let bytes = vec![7u8; 300_000];
    owner
        .objects()
        .put("kept", "a.bin", bytes.as_slice())
        .await
        .unwrap();
    // Prepaid for a day: a credit set aside, which pays the bucket's storage.
    let now = weft_net::now_ms();
    let prepay = weft_ledger::prepay::Prepay {
        bucket: "kept".into(),
        amount: MICRO,
        from_ms: now,
        until_ms: now + 86_400_000,
    };
    entry
        .ledger()
        .prepay(owner.signer().unwrap(), &alice.public(), &prepay)
        .await
        .unwrap();
    // Nobody else can make or change an account's prepays.
    let mallory = SecretKey::from_seed([53; 32]);
    let forged = entry.data().acting(Access::account(mallory.clone()));
    assert!(
        entry
            .ledger()
            .prepay(forged.signer().unwrap(), &alice.public(), &prepay)
            .await
            .is_err()
    );
    // Each node starts its first period, holds for a while, and bills it.
    for i in 0..3 {
        let first = cluster.node(i).bill_storage_now().await.unwrap();
        assert_eq!(first.receipts, 0, "{first:?}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut billed = 0;
    let mut holders = 0;
    for i in 0..3 {
        let bill = cluster.node(i).bill_storage_now().await.unwrap();
        assert!(bill.skipped.is_none(), "{bill:?}");
        assert!(bill.until_ms - bill.from_ms >= 3_000, "{bill:?}");
        billed += bill.byte_hours;
        holders += bill.receipts;
    }
    assert!(holders >= 2, "shards on at least two nodes: {holders}");
    // About 300 kB (its shards' bytes, with parity) for about 3 s.
    assert!(
        (200..5_000).contains(&billed),
        "byte-hours billed: {billed}"
    );
    // The receipts reach the log; the account pays for them.
    let mut balance = None;
    for _ in 0..150 {
        let b = entry
            .ledger()
            .balance(&alice.public(), 0, DEFAULT_ALLOWANCE)
            .await
            .unwrap();
        if b.receipts as usize >= holders {
            balance = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let balance = balance.expect("the storage receipts settle");
    assert!(balance.spent >= holders as u64, "{balance:?}");
    let receipts = entry
        .ledger()
        .receipts_for(&alice.public(), 0, 100)
        .unwrap();
    let stored: u64 = receipts
        .iter()
        .map(|r| match &r.receipt.body.work {
            weft_ledger::Work::Storage {
                bucket, byte_hours, ..
            } => {
                assert_eq!(bucket, "kept", "billed to the bucket the object is in");
                *byte_hours
            }
            _ => 0,
        })
        .sum();
    assert_eq!(stored, billed);
    // Billed again at once, almost nothing more is due: periods never overlap.
    let again = entry.bill_storage_now().await.unwrap();
    assert!(again.byte_hours <= billed / 10, "{again:?}");

    // The prepay paid for that storage: the balance is down by what was set aside only.
    assert_eq!(balance.prepaid, MICRO, "{balance:?}");
    assert_eq!(balance.covered, balance.spent, "{balance:?}");
    assert_eq!(
        balance.balance(),
        i128::from(DEFAULT_ALLOWANCE - MICRO),
        "{balance:?}"
    );
    // What the bucket holds is kept for the term: no delete, no replacement, no removal;
    // new names are taken.
    let objects = owner.objects();
    let refused = objects.delete("kept", "a.bin").await.unwrap_err();
    assert!(
        matches!(refused, weft_data::BucketError::Kept(_))
            && refused.to_string().contains("prepaid"),
        "{refused}"
    );
    assert!(matches!(
        objects.put("kept", "a.bin", &b"new"[..]).await,
        Err(weft_data::BucketError::Kept(_))
    ));
    objects.put("kept", "b.bin", &b"new"[..]).await.unwrap();
    assert!(matches!(
        owner.delete_bucket("kept").await,
        Err(weft_data::BucketError::Kept(_))
    ));
    let mut back = Vec::new();
    objects.get("kept", "a.bin", &mut back).await.unwrap();
    assert_eq!(back, bytes);
}

/// A bucket's maximum price keeps its shards off nodes that charge more for storage (or
/// publish no price), at its writes and in the catalog row repair places by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buckets_maximum_price_keeps_its_shards_off_dearer_nodes() {
    // Node 3 charges 1 credit per GB-month, the others the default 0.1.
    let dear = weft_node::Prices {
        storage_gb_month: MICRO,
        ..Default::default()
    };
    let cluster = Builder::new(4).prices(3, dear).start().await;
    let entry = cluster.node(0);
    let dear_id = cluster.node(3).id();
    for _ in 0..100 {
        if entry.ledger().price_lists().await.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    entry.healer().refresh_prices().await;
    let alice = SecretKey::from_seed([54; 32]);
    let owner = entry.data().acting(Access::account(alice.clone()));
    let capped = Residency {
        max_price: Some(MICRO / 2),
        ..Residency::default()
    };
    let b = owner
        .create_bucket("capped", capped, None, 1)
        .await
        .unwrap();
    assert_eq!(b.max_price, Some(MICRO / 2));
    // Read back as any node reads it: the policy carries the maximum.
    let read = owner.bucket("capped").await.unwrap();
    assert_eq!(read.policy.max_price, Some(MICRO / 2));
    for round in 0..5u8 {
        let bytes = vec![round; 200_000];
        let (_, manifest) = owner
            .objects()
            .put("capped", &format!("o{round}"), bytes.as_slice())
            .await
            .unwrap();
        let manifest = manifest.expect("stored in segments");
        for seg in &manifest.segments {
            assert!(
                !seg.holders.contains(&dear_id),
                "a shard went to the node priced above the bucket's maximum"
            );
        }
        // The catalog row repair places by keeps the maximum too.
        let hash = weft_core::ContentHash::of(&manifest.encode());
        let mut entry_row = None;
        for _ in 0..50 {
            entry_row = entry.healer().registry().get(&hash).await.unwrap();
            if entry_row.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let row = entry_row.expect("a catalog row");
        assert_eq!(row.policy.max_price, Some(MICRO / 2));
    }
    // Below every node's price: refused, naming the maximum.
    let nowhere = Residency {
        max_price: Some(MICRO / 100),
        ..Residency::default()
    };
    owner
        .create_bucket("toocheap", nowhere, None, 1)
        .await
        .unwrap();
    let err = owner
        .objects()
        .put("toocheap", "x", vec![1u8; 200_000].as_slice())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("priced at most 0.010000 credits per GB-month"),
        "{err}"
    );
}
