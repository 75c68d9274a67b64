//! Attacks by a member the operator admitted but nobody should trust: each test makes one
//! through a [`Rogue`] (honest code, plus rows signed and requests sent at will) against a
//! fabric of honest nodes, and asserts the honest outcome — nothing lost, nothing hijacked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_cluster::{Builder, Cluster, Rogue, data};
use weft_core::{ContentHash, NodeId};
use weft_store::Residency;
use weft_store::protocol::{DELETE, DeleteRequest};

/// Every shard and manifest copy honest nodes held `before` is still on one (repair may have
/// rebuilt a copy elsewhere, and the old holder then dropped its own).
fn assert_kept(
    before: &HashMap<ContentHash, Vec<NodeId>>,
    now: &HashMap<ContentHash, Vec<NodeId>>,
    what: &str,
) {
    for h in before.keys() {
        assert!(
            now.get(h).is_some_and(|v| !v.is_empty()),
            "{what}: no honest node holds {h} any more"
        );
    }
}

/// Every node's check and orphan sweep, `rounds` times, but the rogue's.
async fn honest_housekeeping(c: &Cluster, rogue: NodeId, rounds: usize) {
    for _ in 0..rounds {
        for n in c.nodes.iter().filter(|n| n.id() != rogue) {
            n.healer().check_once().await;
            n.healer().sweep_orphans().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Which honest node holds each shard and manifest copy of the objects, from their disks.
fn held(c: &Cluster, rogue: NodeId, hashes: &[ContentHash]) -> HashMap<ContentHash, Vec<NodeId>> {
    let mut out: HashMap<ContentHash, Vec<NodeId>> = HashMap::new();
    for n in c.nodes.iter().filter(|n| n.id() != rogue) {
        for h in hashes {
            if n.storage().local().present(h).unwrap() {
                out.entry(*h).or_default().push(n.id());
            }
        }
    }
    out
}

/// [untrusted] 1: a member rewrites every catalog row of others' objects — released long ago,
/// every shard moved to itself, then deleted — and asks every holder to delete the shards.
/// The honest nodes' own garbage collection, orphan sweeps and repair run past their delays:
/// no shard an honest node held goes, and every object reads back byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_get_others_objects_deleted() {
    let delay = Duration::from_secs(2);
    let c = Builder::new(6).gc_delay(delay).start().await;
    let rogue = Rogue::new(c.node(5));
    let alice = c.account(1, 7);
    alice
        .create_bucket("photos", Residency::default(), None, 1)
        .await
        .unwrap();
    let sizes = [100_000usize, 1 << 20, (9 << 20) + 17];
    let mut objects = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        let body = data(*len);
        let key = format!("p{i}");
        alice
            .objects()
            .put("photos", &key, &body[..])
            .await
            .unwrap();
        let cap = alice.objects().capability("photos", &key).await.unwrap();
        let manifest = c.node(1).storage().manifest(&cap).await.unwrap();
        objects.push((key, body, cap.manifest, manifest));
    }
    let mut hashes = Vec::new();
    for (_, _, hash, m) in &objects {
        hashes.push(*hash);
        hashes.extend(
            m.segments
                .iter()
                .flat_map(|s| s.info.shards.iter().copied()),
        );
    }
    let before = held(&c, rogue.id(), &hashes);
    let registry = rogue.node().healer().registry();
    let members: Vec<NodeId> = c.nodes.iter().map(|n| n.id()).collect();
    let ask_everyone_to_delete = async || {
        for (_, _, hash, m) in &objects {
            let mut shards: Vec<ContentHash> = m
                .segments
                .iter()
                .flat_map(|s| s.info.shards.iter().copied())
                .collect();
            shards.push(*hash);
            for peer in members.iter().filter(|p| **p != rogue.id()) {
                let req = DeleteRequest {
                    manifest: *hash,
                    manifest_holders: members.clone(),
                    shards: shards.clone(),
                };
                let _ = rogue.ask(DELETE, *peer, &req).await;
            }
        }
    };
    tokio::time::sleep(delay).await;

    // 1. Released long ago, created at the epoch.
    for (_, _, hash, _) in &objects {
        let mut e = registry.get(hash).await.unwrap().unwrap();
        e.released_ms = Some(1);
        e.created_ms = 0;
        registry.put(hash, &e).await.unwrap();
    }
    ask_everyone_to_delete().await;
    honest_housekeeping(&c, rogue.id(), 3).await;
    assert_kept(
        &before,
        &held(&c, rogue.id(), &hashes),
        "after forged releases",
    );

    // 2. Every shard moved to the rogue (which then drops them all).
    for (_, _, hash, m) in &objects {
        let mut e = registry.get(hash).await.unwrap().unwrap();
        for seg in &m.segments {
            for i in 0..seg.info.shards.len() {
                e.set_moved(seg.info.index, i as u16, rogue.id());
            }
        }
        registry.put(hash, &e).await.unwrap();
    }
    let rogue_store = rogue.node().storage().local().clone();
    for h in &hashes {
        let _ = rogue_store.delete(h);
    }
    tokio::time::sleep(delay).await;
    honest_housekeeping(&c, rogue.id(), 3).await;
    assert_kept(
        &before,
        &held(&c, rogue.id(), &hashes),
        "after forged moves",
    );

    // 3. The rows deleted.
    for (_, _, hash, _) in &objects {
        registry.forget(hash).await.unwrap();
    }
    ask_everyone_to_delete().await;
    tokio::time::sleep(delay).await;
    honest_housekeeping(&c, rogue.id(), 3).await;
    assert_kept(
        &before,
        &held(&c, rogue.id(), &hashes),
        "after forged deletions",
    );
    // The honest nodes registered the objects again, so repair looks after them.
    let honest = c.node(2).healer().registry();
    for (_, _, hash, _) in &objects {
        assert!(
            honest.get(hash).await.unwrap().is_some(),
            "{hash} registered again"
        );
    }
    let start = Instant::now();
    for (key, body, _, _) in &objects {
        let mut out = Vec::new();
        alice.objects().get("photos", key, &mut out).await.unwrap();
        assert!(out == *body, "{key} reads back byte-identical");
    }
    assert!(start.elapsed() < Duration::from_secs(60));
}

/// [untrusted] 3: data must not disappear without an attacker. Objects registered through a
/// node that is then revoked: its catalog rows no longer verify anywhere. The partition owners
/// write them again under their own keys, so the objects are repaired (the revoked node's
/// shards rebuilt elsewhere) and orphan sweeps run again — and delete none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_nodes_objects_are_still_repaired_and_kept() {
    let delay = Duration::from_secs(1);
    let c = Builder::new(6)
        .gc_delay(delay)
        .heal(|h| h.grace = Duration::from_secs(1))
        .start()
        .await;
    let via = 3;
    let bob = c.account(via, 9);
    bob.create_bucket("notes", Residency::default(), None, 1)
        .await
        .unwrap();
    let mut objects = Vec::new();
    for i in 0..4 {
        let body = data(300_000 + i * 1000);
        let key = format!("n{i}");
        bob.objects().put("notes", &key, &body[..]).await.unwrap();
        objects.push((key, body));
    }
    let mut hashes = Vec::new();
    for (key, _) in &objects {
        hashes.push(
            bob.objects()
                .capability("notes", key)
                .await
                .unwrap()
                .manifest,
        );
    }
    let gone = c.node(via).id();
    c.node(0).revoke(&gone.to_hex()).unwrap();
    let honest: Vec<&weft_node::Node> = c.nodes.iter().filter(|n| n.id() != gone).collect();
    let start = Instant::now();
    loop {
        for n in &honest {
            n.healer().check_once().await;
        }
        // Every object's catalog row reads again, and its shards are all on nodes still in
        // the fabric.
        let mut settled = true;
        for hash in &hashes {
            let registry = honest[1].healer().registry();
            let Ok(Some(entry)) = registry.get(hash).await else {
                settled = false;
                continue;
            };
            let mut m = honest[1]
                .storage()
                .manifest_at(*hash, &entry.holders)
                .await
                .unwrap();
            entry.locations().apply(&mut m);
            settled &= m.segments.iter().all(|s| !s.holders.contains(&gone));
        }
        if settled {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the revoked node's objects were not taken over and repaired"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(delay).await;
    for n in &honest {
        n.healer().sweep_orphans().await;
        assert_eq!(
            n.healer().status().sweeps_skipped,
            0,
            "{}",
            n.healer().status().last_sweep_skip
        );
    }
    let reader = c.account(1, 9);
    for (key, body) in &objects {
        let mut out = Vec::new();
        reader.objects().get("notes", key, &mut out).await.unwrap();
        assert!(out == *body, "{key} reads back byte-identical");
    }
}

/// [untrusted] 14: anyone can send requests signed with random access-key ids, and each id
/// never seen would cost a quorum read. A node looks up at most a few such ids at once and
/// refuses the rest without a read, while keys it has found before keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_access_key_ids_cost_a_bounded_number_of_table_reads() {
    let c = Builder::new(3).start().await;
    let account = weft_core::SecretKey::from_seed([11; 32]);
    let grant = weft_data::Session::new(
        &account,
        weft_core::Scope::Account,
        true,
        weft_net::now_ms(),
        600_000,
        &[],
    )
    .to_text();
    let key = c
        .account(0, 11)
        .keys()
        .create(None, true, true, grant)
        .await
        .unwrap();
    let data = c.node(1).data().clone();
    assert!(data.access_key(&key.id).await.is_some());
    // Past the cache's few seconds, the known key is read again — during the flood.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..400u32 {
        let data = data.clone();
        flood.spawn(async move { data.access_key(&format!("WKRANDOM{i:08}")).await });
    }
    let known = data.access_key(&key.id).await;
    let mut found = 0;
    while let Some(r) = flood.join_next().await {
        found += usize::from(r.unwrap().is_some());
    }
    assert_eq!(found, 0);
    assert_eq!(
        known.map(|k| k.id),
        Some(key.id.clone()),
        "a known key under the flood"
    );
    assert!(
        data.refused_key_lookups() > 0,
        "400 unknown ids at once were all read from the table"
    );
    // Without the flood an unknown id is read (and not found), not refused.
    let before = data.refused_key_lookups();
    assert!(data.access_key("WKNOTHERE").await.is_none());
    assert_eq!(data.refused_key_lookups(), before);
}

/// [untrusted] 5: a job's runner used to receive an account-wide session that signs for every
/// bucket, holds every bucket's key and lasts a day. What a job carries now is the owner's own
/// narrow capability: a runner that keeps it and turns rogue can write only the job's output
/// bucket, read only its inputs, sign no row of any other bucket (replicas refuse it, not only
/// the node's own checks), and nothing at all once the job's time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_capability_reaches_only_its_own_buckets_and_time() {
    use weft_data::schema::{BucketId, Buckets, Objects};
    use weft_data::{BucketError, Need, Session};
    let c = Builder::new(3).start().await;
    let alice = weft_core::SecretKey::from_seed([31; 32]);
    let owner = c.account(0, 31);
    for bucket in ["data", "out", "private"] {
        owner
            .create_bucket(bucket, Residency::default(), None, 1)
            .await
            .unwrap();
        owner
            .objects()
            .put(bucket, "x", &b"before"[..])
            .await
            .unwrap();
    }
    let scope = weft_core::Scope::Own {
        write: vec!["out".into()],
        read: vec!["data".into()],
    };
    // Its time: long enough for what follows on a slow machine.
    let (made, ttl) = (Instant::now(), Duration::from_secs(12));
    let capability = Session::new(
        &alice,
        scope,
        true,
        weft_net::now_ms(),
        ttl.as_millis() as u64,
        &[],
    )
    .to_text();
    // The runner, acting with what it was handed.
    let runner = c.node(1).data().session(&capability).unwrap();
    let mut out = Vec::new();
    runner.objects().get("data", "x", &mut out).await.unwrap();
    assert_eq!(out, b"before");
    runner
        .objects()
        .put("out", "y", &b"result"[..])
        .await
        .unwrap();
    // What it may not do, refused by the node acting with it...
    assert!(matches!(
        runner.objects().put("data", "x", &b"overwritten"[..]).await,
        Err(BucketError::ReadOnly)
    ));
    assert!(matches!(
        runner.objects().get("private", "x", &mut Vec::new()).await,
        Err(BucketError::NoKey(_))
    ));
    assert!(runner.authorize("private", Need::Read).await.is_err());
    assert!(runner.delete_bucket("private").await.is_err());
    // ... and by every replica when the runner signs the rows itself.
    let signer = runner.signer().unwrap().clone();
    let table = c.node(1).table().clone();
    for bucket in ["data", "private"] {
        let part = BucketId {
            owner: alice.public(),
            name: bucket.into(),
            regions: Vec::new(),
        };
        let wiped = table.put::<Objects>(&signer, &part, "x", None).await;
        assert!(
            wiped.is_err(),
            "a row of {bucket} signed with the job's capability"
        );
        let dropped = table.put::<Buckets>(&signer, &(), bucket, None).await;
        assert!(dropped.is_err(), "the claim of {bucket} withdrawn with it");
    }
    // What a log reader shows a runner: who it is, nothing to act with.
    let shown = Session::from_text(&capability).unwrap().public_part();
    let shown = c.node(2).data().session(&shown.to_text()).unwrap();
    assert!(shown.entitled("out", Need::Read).await.is_ok());
    assert!(shown.entitled("private", Need::Read).await.is_err());
    assert!(shown.signer().is_err());
    assert!(matches!(
        shown.objects().get("out", "y", &mut Vec::new()).await,
        Err(BucketError::NoKey(_))
    ));
    // What an account-wide session (what a job used to carry) could do, the same way.
    let wide = Session::new(
        &alice,
        weft_core::Scope::Account,
        true,
        weft_net::now_ms(),
        600_000,
        &[],
    );
    let wide = c.node(1).data().session(&wide.to_text()).unwrap();
    let part = BucketId {
        owner: alice.public(),
        name: "private".into(),
        regions: Vec::new(),
    };
    table
        .put::<Objects>(wide.signer().unwrap().clone(), &part, "x", None)
        .await
        .expect("an account-wide session signs rows of every bucket");
    // Nothing once its time is up.
    assert!(made.elapsed() < ttl, "the checks above ran within its time");
    tokio::time::sleep(
        (made + ttl + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert!(c.node(2).data().session(&capability).is_err());
    let part = BucketId {
        owner: alice.public(),
        name: "out".into(),
        regions: Vec::new(),
    };
    let late = table.put::<Objects>(&signer, &part, "y", None).await;
    assert!(
        late.is_err(),
        "a row of the output bucket after the job's time"
    );
    // Every object still reads as its owner wrote it. (Rows of sealed buckets are stored
    // under sealed names, so the "x" rows signed above named no object: what mattered is who
    // replicas let sign in which bucket.)
    for (bucket, key, body) in [
        ("data", "x", &b"before"[..]),
        ("private", "x", b"before"),
        ("out", "x", b"before"),
        ("out", "y", b"result"),
    ] {
        let mut got = Vec::new();
        owner.objects().get(bucket, key, &mut got).await.unwrap();
        assert_eq!(got, body, "{bucket}/{key}");
    }
}

/// [untrusted] 1, 2, 4, 7, 11, 12 at once: the rogue's whole campaign
/// ([`weft_cluster::attacks`], what `weft-rogue` runs against real processes), twice, then
/// the honest nodes' housekeeping past every delay. Nothing lost, nothing taken, nobody down,
/// no file outside the nodes' folders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_members_whole_campaign_changes_nothing_it_does_not_own() {
    let delay = Duration::from_secs(2);
    // Disks small enough that two rounds of junk pass the rogue's share (64 MiB / 5).
    let disk = 64u64 << 20;
    let c = Builder::new(6).gc_delay(delay).disk(disk).start().await;
    let rogue = Rogue::new(c.node(5));
    let alice = c.account(1, 41);
    alice
        .create_bucket("photos", Residency::default(), None, 1)
        .await
        .unwrap();
    let mut objects = Vec::new();
    // Stored in segments (a smaller one would live in its row, with no catalog row to forge).
    for (i, len) in [5_000usize, 300_000, (5 << 20) + 3].into_iter().enumerate() {
        let body = data(len);
        let key = format!("p{i}");
        alice
            .objects()
            .put("photos", &key, &body[..])
            .await
            .unwrap();
        objects.push((key, body));
    }
    let mut hashes = Vec::new();
    for (key, _) in &objects {
        hashes.push(
            alice
                .objects()
                .capability("photos", key)
                .await
                .unwrap()
                .manifest,
        );
    }
    let _ = std::fs::remove_file("/tmp/weft-rogue-escape");
    for round in 0..2 {
        let report = rogue.campaign().await;
        assert!(report.catalog_rows >= objects.len(), "{report:?}");
        assert!(report.names_tried >= 1, "{report:?}");
        assert_eq!(report.names_taken, 0, "{report:?}");
        assert!(report.deep_rows_sent >= 5, "{report:?}");
        assert_eq!(report.deep_rows_not_refused, 0, "{report:?}");
        assert!(report.down_lies > 0, "{report:?}");
        assert!(report.job_asks > 0, "{report:?}");
        assert_eq!(report.job_asks_taken, 0, "{report:?}");
        assert_eq!(report.log_reads_answered, 0, "{report:?}");
        assert!(report.junk_sent > 0, "{report:?}");
        assert!(report.quota_rows >= 2, "{report:?}");
        assert_eq!(report.quota_rows_taken, 0, "{report:?}");
        // Five members asked to cosign the rewritten head, five handed forged receipts.
        assert!(report.ledger_asks >= 10, "{report:?}");
        assert_eq!(report.ledger_taken, 0, "{report:?}");
        for n in c.nodes.iter().take(5) {
            let junk = n.storage().local().charged(&rogue.id());
            assert!(
                junk <= disk / 5,
                "round {round}: {junk} bytes of junk on {}",
                n.id()
            );
        }
        // Right after the attacks (suspicions raised everywhere, claims sent to every node),
        // every honest node still reads the bucket as its owner's.
        for i in 0..5 {
            let b = c.account(i, 41).bucket("photos").await.unwrap();
            assert_eq!(
                b.owner,
                alice.account(),
                "round {round}: the owner through node {i}"
            );
        }
        if round == 0 {
            tokio::time::sleep(delay).await;
            honest_housekeeping(&c, rogue.id(), 2).await;
        }
    }
    // The rogue deleted every catalog row last: the honest nodes' checks (not only the
    // hourly sweeps) register the objects again, so repair keeps looking after them — also
    // those of partitions the rogue owns, which their standby checks every third pass.
    for _ in 0..3 {
        for n in c.nodes.iter().take(5) {
            n.healer().check_once().await;
        }
    }
    for hash in &hashes {
        let entry = c.node(2).healer().registry().get(hash).await.unwrap();
        assert!(entry.is_some(), "{hash} registered again by a check");
    }
    tokio::time::sleep(delay).await;
    honest_housekeeping(&c, rogue.id(), 3).await;
    // The ledger goes on past the rewritten head: an honest node's receipt is cosigned, and
    // the rogue's checkpoint is in no honest copy.
    let receipt = c
        .node(1)
        .ledger()
        .issue(
            alice.account(),
            ContentHash::of(b"after the campaign"),
            weft_ledger::Work::Transfer { bytes: 1 },
        )
        .unwrap();
    let included = c
        .node(1)
        .ledger()
        .wait_included(receipt.body.seq, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        c.node(1)
            .ledger()
            .verify_checkpoint(&included.checkpoint)
            .is_some()
    );
    for (i, node) in c.nodes.iter().enumerate().take(5) {
        let members = node.fabric().members();
        let alive = members
            .iter()
            .filter(|m| m.state == weft_node::MemberState::Alive)
            .count();
        assert_eq!(alive, 6, "node {i} sees {alive} of 6 alive");
        let reader = c.account(i, 41);
        let b = reader.bucket("photos").await.unwrap();
        assert_eq!(
            b.owner,
            alice.account(),
            "the bucket's owner, through node {i}"
        );
        for (key, body) in &objects {
            let mut out = Vec::new();
            reader.objects().get("photos", key, &mut out).await.unwrap();
            assert!(
                out == *body,
                "{key} reads back byte-identical through node {i}"
            );
        }
    }
    assert!(!std::path::Path::new("/tmp/weft-rogue-escape").exists());
    // Offers carry no capability, so a member may hold only a few reservations on a runner.
    let mut reserved = 0;
    for i in 0..8 {
        let offer = weft_jobs::protocol::JobAsk::Offer {
            key: weft_jobs::JobKey {
                owner: rogue.id(),
                bucket: "hoard".into(),
                id: format!("0000019a2b3c4d{i:02x}"),
            },
            attempt: 1,
            cpu_milli: 1,
            memory: 1,
        };
        let answer = rogue
            .ask(weft_jobs::protocol::JOB_RPC, c.node(0).id(), &offer)
            .await
            .unwrap();
        reserved += usize::from(matches!(answer, weft_jobs::protocol::JobAnswer::Reserved));
    }
    assert_eq!(reserved, 4, "reservations one member holds on a runner");
    alice
        .objects()
        .put("photos", "after", &b"still mine"[..])
        .await
        .unwrap();
}

/// [untrusted] accounts: "anyone can make an account and use storage and compute without
/// limit". An admin can make the fabric invite-only: from then on only accounts it admitted
/// act on buckets, on every node within seconds, and no member — not even by signing the
/// policy rows itself — can open it again or admit anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_only_fabric_serves_only_the_accounts_its_admin_admitted() {
    use weft_data::BucketError;
    use weft_data::policy::{AccountPass, AccountPolicy};
    use weft_data::schema::{ACCOUNTS, Passes, Policies};
    let c = Builder::new(3).start().await;
    let admin = c.node(0);
    let fresh = weft_data::policy::CHECK_TTL + Duration::from_millis(300);
    let (alice, bob) = (c.account(1, 51), c.account(2, 52));
    alice
        .create_bucket("alice-notes", Residency::default(), None, 1)
        .await
        .unwrap();
    admin.set_invite_only(true).await.unwrap();
    tokio::time::sleep(fresh).await;
    for i in 0..3 {
        let refused = c
            .account(i, 51)
            .objects()
            .put("alice-notes", "x", &b"1"[..])
            .await;
        assert!(
            matches!(refused, Err(BucketError::NotAdmitted(_))),
            "through node {i}: {refused:?}"
        );
    }
    let refused = bob
        .create_bucket("bob-notes", Residency::default(), None, 1)
        .await;
    assert!(
        matches!(refused, Err(BucketError::NotAdmitted(_))),
        "{refused:?}"
    );
    // A member signs the policy open, and a pass for bob: replicas refuse both.
    let rogue = Rogue::new(c.node(2));
    let table = rogue.node().table();
    let open = AccountPolicy {
        invite_only: false,
        set_ms: weft_net::now_ms(),
    };
    let pass = AccountPass {
        admitted_ms: weft_net::now_ms(),
    };
    assert!(
        table
            .put::<Policies>(rogue.key().clone(), &(), ACCOUNTS, Some(&open))
            .await
            .is_err()
    );
    assert!(
        table
            .put::<Passes>(rogue.key().clone(), &(), &bob.account(), Some(&pass))
            .await
            .is_err()
    );
    // Admitted, alice works through every node; dismissed, she stops again.
    admin
        .admit_account(&alice.account().to_hex(), true)
        .await
        .unwrap();
    tokio::time::sleep(fresh).await;
    for i in 0..3 {
        c.account(i, 51)
            .objects()
            .put("alice-notes", &format!("x{i}"), &b"1"[..])
            .await
            .unwrap();
    }
    assert!(
        bob.create_bucket("bob-notes", Residency::default(), None, 1)
            .await
            .is_err()
    );
    let listed = admin.accounts_policy().await.unwrap();
    assert!(listed.invite_only);
    assert_eq!(listed.admitted, vec![alice.account().to_hex()]);
    admin
        .admit_account(&alice.account().to_hex(), false)
        .await
        .unwrap();
    tokio::time::sleep(fresh).await;
    assert!(matches!(
        alice.objects().put("alice-notes", "y", &b"1"[..]).await,
        Err(BucketError::NotAdmitted(_))
    ));
    // A non-admin node cannot change the policy at all.
    assert!(c.node(1).set_invite_only(false).await.is_err());
    // Open again: anyone.
    admin.set_invite_only(false).await.unwrap();
    tokio::time::sleep(fresh).await;
    bob.create_bucket("bob-notes", Residency::default(), None, 1)
        .await
        .unwrap();
}

/// [untrusted] 14 (disks): a member stores shards no object owns on every other node, as fast
/// as they take them. Each holder takes at most the member's share (its capacity split among
/// the other members); honest writes still land; shards the catalog places are claimed and
/// stop counting against their sender; the rogue's go in the next orphan sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_fill_others_disks() {
    const MIB: u64 = 1 << 20;
    let delay = Duration::from_secs(2);
    let c = Builder::new(4).disk(24 * MIB).gc_delay(delay).start().await;
    let rogue = Rogue::new(c.node(3));
    let share = 8 * MIB; // 24 MiB among 3 other members
    let honest: Vec<NodeId> = c.nodes[..3].iter().map(|n| n.id()).collect();
    let mut junk = 0u32;
    for peer in &honest {
        let mut accepted = 0u64;
        loop {
            junk += 1;
            let mut bytes = data(MIB as usize);
            bytes[..4].copy_from_slice(&junk.to_le_bytes());
            match rogue.put_shard(*peer, &bytes).await {
                Ok(()) => accepted += MIB,
                Err(e) => {
                    assert!(e.to_string().contains("no object owns"), "{e}");
                    break;
                }
            }
            assert!(accepted <= share, "{peer} took {accepted} bytes of junk");
        }
        assert_eq!(accepted, share, "{peer}");
    }
    // Honest writes still land, with room to spare.
    let alice = c.account(1, 61);
    alice
        .create_bucket("box", Residency::default(), None, 1)
        .await
        .unwrap();
    let body = data(3 * MIB as usize);
    alice.objects().put("box", "o", &body[..]).await.unwrap();
    let mut back = Vec::new();
    alice.objects().get("box", "o", &mut back).await.unwrap();
    assert_eq!(back, body);
    // What the catalog places is claimed; the rogue's junk stays charged to it, then goes.
    let writer = c.node(1).id();
    tokio::time::sleep(delay + Duration::from_millis(500)).await;
    for n in &c.nodes[..3] {
        n.healer().claim_shards().await;
        assert_eq!(n.storage().local().charged(&writer), 0, "{}", n.id());
        assert_eq!(n.storage().local().charged(&rogue.id()), share);
    }
    for n in &c.nodes[..3] {
        n.healer().sweep_orphans().await;
        assert_eq!(n.storage().local().charged(&rogue.id()), 0, "{}", n.id());
    }
    let mut again = Vec::new();
    alice.objects().get("box", "o", &mut again).await.unwrap();
    assert_eq!(again, body);
}

/// [untrusted] accounts without limit: the fabric's admin sets quotas; an account's writes
/// stop at its quota through every node (whole objects, copies and multipart parts), open or
/// invite-only; what it deletes or aborts frees its room again. No member writes a quota or
/// another account's tally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_quota_holds_through_every_node() {
    use weft_data::BucketError;
    use weft_data::quota::{AccountQuota, Tally};
    use weft_data::schema::{Quotas, Tallies, TallyKey};
    let c = Builder::new(3).start().await;
    let admin = c.node(0);
    let alice = c.account(1, 71);
    alice
        .create_bucket("quota-box", Residency::default(), None, 1)
        .await
        .unwrap();
    let fresh = weft_data::policy::CHECK_TTL + Duration::from_millis(300);
    admin
        .set_quota(
            "default",
            Some(AccountQuota {
                bytes: Some(1_000_000),
                ..AccountQuota::default()
            }),
        )
        .await
        .unwrap();
    tokio::time::sleep(fresh).await;
    let kb600 = data(600_000);
    alice
        .objects()
        .put("quota-box", "a", &kb600[..])
        .await
        .unwrap();
    assert_eq!(alice.usage().await.unwrap(), 600_000);
    for i in 0..3 {
        let over = c
            .account(i, 71)
            .objects()
            .put("quota-box", "b", &kb600[..])
            .await;
        assert!(
            matches!(over, Err(BucketError::OverQuota(_))),
            "via {i}: {over:?}"
        );
    }
    // Overwriting in place: the old version's bytes are let go (after the write is
    // acknowledged), so it fits.
    alice
        .objects()
        .put("quota-box", "a", &data(550_000)[..])
        .await
        .unwrap();
    let mut usage = 0;
    for _ in 0..50 {
        usage = alice.usage().await.unwrap();
        if usage == 550_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(usage, 550_000);
    let rec = alice.objects().object("quota-box", "a").await.unwrap();
    let copied = alice
        .objects()
        .link(
            ("quota-box", "a"),
            &rec,
            ("quota-box", "a2"),
            Default::default(),
        )
        .await;
    assert!(
        matches!(copied, Err(BucketError::OverQuota(_))),
        "{copied:?}"
    );
    // Another account is untouched by alice's use; an override raises hers.
    let bob = c.account(2, 72);
    bob.create_bucket("bob-box", Residency::default(), None, 1)
        .await
        .unwrap();
    bob.objects().put("bob-box", "x", &kb600[..]).await.unwrap();
    admin
        .set_quota(
            &alice.account().to_hex(),
            Some(AccountQuota {
                bytes: Some(3_000_000),
                jobs: Some(2),
                ..AccountQuota::default()
            }),
        )
        .await
        .unwrap();
    tokio::time::sleep(fresh).await;
    alice
        .objects()
        .put("quota-box", "b", &kb600[..])
        .await
        .unwrap();
    // Parts count while their upload is open, and stop counting when it is aborted.
    let up = alice
        .uploads()
        .create("quota-box", "big", Default::default())
        .await
        .unwrap();
    alice
        .uploads()
        .put_part("quota-box", &up, 1, &data(1_500_000)[..], || Ok("e".into()))
        .await
        .unwrap();
    let over = alice
        .uploads()
        .put_part("quota-box", &up, 2, &kb600[..], || Ok("e".into()))
        .await;
    assert!(matches!(over, Err(BucketError::OverQuota(_))), "{over:?}");
    assert_eq!(alice.usage().await.unwrap(), 2_650_000);
    alice.uploads().abort("quota-box", &up).await.unwrap();
    assert_eq!(alice.usage().await.unwrap(), 1_150_000);
    alice.objects().delete("quota-box", "b").await.unwrap();
    assert_eq!(alice.usage().await.unwrap(), 550_000);
    // Invite-only: the same quota holds for an admitted account.
    admin.set_invite_only(true).await.unwrap();
    admin
        .admit_account(&alice.account().to_hex(), true)
        .await
        .unwrap();
    tokio::time::sleep(fresh).await;
    let over = alice
        .objects()
        .put("quota-box", "c", &data(2_600_000)[..])
        .await;
    assert!(matches!(over, Err(BucketError::OverQuota(_))), "{over:?}");
    // A member signs a quota of its own, and a tally that would wipe alice's use: refused.
    let rogue = Rogue::new(c.node(2));
    let table = rogue.node().table();
    let free = AccountQuota {
        set_ms: weft_net::now_ms(),
        allowance: Some(u64::MAX),
        ..AccountQuota::default()
    };
    assert!(
        table
            .put::<Quotas>(rogue.key().clone(), &(), "default", Some(&free))
            .await
            .is_err()
    );
    let key = TallyKey {
        owner: alice.account(),
        node: rogue.id(),
        bucket: "quota-box".into(),
    };
    let wipe = Tally {
        held: 0,
        released: u64::MAX / 2,
    };
    assert!(
        table
            .put::<Tallies>(rogue.key().clone(), &alice.account(), &key, Some(&wipe))
            .await
            .is_err()
    );
    assert_eq!(alice.usage().await.unwrap(), 550_000);
    assert!(c.node(1).set_quota("default", None).await.is_err());
}
