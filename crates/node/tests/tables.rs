//! The typed, signed table under a real fabric: rows of newer formats survive old nodes, forged
//! rows are refused by every replica, malformed manifests and catalog rows written by a member
//! never panic the healing loops or reads.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde::Serialize;
use weft_cluster::{cluster, data, wait};
use weft_core::{ContentHash, NodeId, SecretKey, proto};
use weft_data::schema::{BucketId, SealedObjects};
use weft_heal::ManifestEntry;
use weft_heal::schema::{CatalogRows, catalog_part};
use weft_meta::schema::{Schema, SortKey, partition_key};
use weft_meta::table::{MetaRequest, MetaResponse};
use weft_meta::{Entry, Item, Timestamp, Value};
use weft_node::Node;
use weft_store::{Capability, Erasure, Manifest, PlacedSegment, Residency};

/// A catalog entry as a newer weft writes it: one more field at the end.
#[derive(Serialize)]
struct ManifestEntryNext {
    holders: Vec<NodeId>,
    size: u64,
    stored_bytes: u64,
    ec: Erasure,
    policy: Residency,
    created_ms: u64,
    moved: Vec<(u32, u16, NodeId)>,
    released_ms: Option<u64>,
    max_price: Option<u64>,
    tier: String,
}

/// Send rows straight to one node's replica, as a member that bypasses the table would (a
/// node's own replica is sent to by its neighbour).
async fn push(nodes: &[Node], from: usize, to: NodeId, items: Vec<Item>) -> MetaResponse {
    let mut from = &nodes[from];
    if from.id() == to {
        from = nodes.iter().find(|n| n.id() != to).unwrap();
    }
    let addr = from.fabric().record(&to).unwrap().body.addr;
    let endpoint = from.fabric().endpoint();
    let (mut send, mut recv) = endpoint.open(to, addr, proto::META).await.unwrap();
    weft_net::write_message(&mut send, &MetaRequest::Write(items))
        .await
        .unwrap();
    let _ = send.finish();
    weft_net::read_message(&mut recv, 16 << 20).await.unwrap()
}

/// A catalog entry of `size` bytes held by `holder`: a row any member may write.
fn catalog_entry(holder: NodeId, size: u64) -> ManifestEntry {
    ManifestEntry {
        holders: vec![holder],
        size,
        stored_bytes: size,
        ec: Erasure { data: 1, parity: 1 },
        policy: Residency::default(),
        created_ms: 1,
        moved: Vec::new(),
        released_ms: None,
        max_price: None,
    }
}

fn replicas<S: Schema>(nodes: &[Node], part: &S::Part) -> Vec<usize> {
    let ids = nodes[0].table().replicas_for::<S>(part);
    (0..nodes.len())
        .filter(|i| ids.contains(&nodes[*i].id()))
        .collect()
}

/// Waits (up to 10 s) until `done` holds on every replica in `reps`.
async fn settle(nodes: &[Node], reps: &[usize], done: impl Fn(&Node) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !reps.iter().all(|i| done(&nodes[*i])) {
        assert!(
            std::time::Instant::now() < deadline,
            "replicas never took the write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_rows_are_refused() {
    let (_tmp, dirs, nodes) = cluster(5, Duration::from_secs(3600)).await;
    let owner = &nodes[0];
    let buckets = owner.data().own();
    buckets
        .create_bucket("docs", Residency::default(), None, 1)
        .await
        .unwrap();
    buckets
        .objects()
        .put("docs", "a.txt", &b"first"[..])
        .await
        .unwrap();
    let bucket = BucketId {
        owner: buckets.account(),
        name: "docs".into(),
        regions: Vec::new(),
    };
    let pk = partition_key::<SealedObjects>(&bucket);
    let reps = replicas::<SealedObjects>(&nodes, &bucket);
    // A write answers at a majority; the last replica takes it a moment later.
    settle(&nodes, &reps, |n| {
        n.table().local().list(&pk, "").unwrap().len() == 1
    })
    .await;
    // The one object's row, under its sealed name.
    let rows = nodes[reps[0]].table().local().list(&pk, "").unwrap();
    assert_eq!(rows.len(), 1);
    let sk = rows[0].sk.clone();
    assert!(!sk.contains("a.txt"), "{sk}");
    let old: Entry = nodes[reps[0]]
        .table()
        .local()
        .get(&pk, &sk)
        .unwrap()
        .unwrap();
    buckets
        .objects()
        .put("docs", "a.txt", &b"second"[..])
        .await
        .unwrap();
    let honest = buckets.objects().object("docs", "a.txt").await.unwrap();
    settle(&nodes, &reps, |n| {
        n.table().local().get(&pk, &sk).unwrap().as_ref() != Some(&old)
    })
    .await;
    let honest_entry = nodes[reps[0]]
        .table()
        .local()
        .get(&pk, &sk)
        .unwrap()
        .unwrap();
    // The attacker is another member, with its own node key and its own account.
    let attacker = &nodes[1];
    let other_account = weft_net::load_or_create_key(&dirs[1].join("account.key")).unwrap();
    let account = weft_net::load_or_create_key(&dirs[0].join("account.key")).unwrap();
    let ts = |wall_ahead: u64| Timestamp {
        wall: weft_net::now_ms() + wall_ahead,
        logical: 0,
        node: attacker.id(),
    };
    let mut forged_value = honest_entry.value.clone().unwrap();
    *forged_value.last_mut().unwrap() ^= 1;
    // 1. Signed by the owner, then altered.
    let mut altered = Entry::sign(&account, &pk, &sk, ts(10), honest_entry.value.clone());
    altered.value = Some(forged_value.clone());
    // 2. No signature at all.
    let mut unsigned = Entry::sign(&account, &pk, &sk, ts(20), Some(forged_value.clone()));
    unsigned.sig = weft_core::Signature([0; 64]);
    // 3. Properly signed, but by another account's key, and by a member node's key.
    let other = Entry::sign(&other_account, &pk, &sk, ts(30), Some(forged_value.clone()));
    let by_node = Entry::sign(
        SecretKey::from_seed([7; 32]),
        &pk,
        &sk,
        ts(40),
        Some(forged_value.clone()),
    );
    let deletion = Entry::sign(&other_account, &pk, &sk, ts(50), None);
    let item = |entry: Entry| Item {
        pk: pk.clone(),
        sk: sk.clone(),
        entry,
    };
    for forged in [altered, unsigned, other, by_node, deletion] {
        for (i, n) in nodes.iter().enumerate() {
            let answer = push(&nodes, 1, n.id(), vec![item(forged.clone())]).await;
            assert!(
                matches!(&answer, MetaResponse::Error(e) if e.contains("refused")),
                "node {i} took a forged row: {answer:?}"
            );
        }
    }
    // 4. A replayed older version, correctly signed by the owner: every replica keeps the newer.
    for n in &nodes {
        push(&nodes, 1, n.id(), vec![item(old.clone())]).await;
    }
    for (i, n) in nodes.iter().enumerate() {
        let stored = n.table().local().get(&pk, &sk).unwrap();
        if reps.contains(&i) {
            assert_eq!(
                stored.as_ref(),
                Some(&honest_entry),
                "replica {i} lost the honest row"
            );
        } else {
            assert!(
                stored.is_none() || stored.as_ref() == Some(&old),
                "non-replica {i} holds a forged row"
            );
        }
    }
    // Anti-entropy does not spread anything forged either, and readers see the honest row.
    for n in &nodes {
        n.table().sync_once().await;
    }
    let theirs = nodes[0].data().own().access().clone();
    for n in &nodes {
        let as_owner = n.data().acting(theirs.clone());
        assert_eq!(
            as_owner.objects().object("docs", "a.txt").await.unwrap(),
            honest
        );
    }
    let mut out = Vec::new();
    nodes[3]
        .data()
        .own()
        .objects()
        .read_range(("docs", "a.txt"), &honest, 0, honest.size, &mut out)
        .await
        .unwrap_err(); // another account cannot unwrap the key...
    buckets
        .objects()
        .read_range(("docs", "a.txt"), &honest, 0, honest.size, &mut out)
        .await
        .unwrap(); // ...the owner can, and gets the honest bytes
    assert_eq!(out, b"second");
    // Through the table's own interface a member cannot even try.
    let err = attacker
        .table()
        .put::<SealedObjects>(&other_account, &bucket, &sk, Some(&vec![0u8; 8]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("may not write"), "{err}");
    // The bucket's name stays its owner's.
    assert!(
        attacker
            .data()
            .own()
            .create_bucket("docs", Residency::default(), None, 1)
            .await
            .is_err()
    );
    assert_eq!(
        nodes[4].data().own().bucket("docs").await.unwrap().owner,
        buckets.account()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_newer_format_are_kept() {
    let gc_delay = Duration::from_secs(1);
    let (_tmp, _dirs, nodes) = cluster(5, gc_delay).await;
    // An object nothing references: garbage as far as this build can tell, once its catalog
    // row is past the delay.
    let bytes = data(300_000);
    let (cap, manifest) = nodes[0]
        .storage()
        .put(&bytes[..], Residency::default(), None)
        .await
        .unwrap();
    let entry = nodes[0]
        .healer()
        .registry()
        .get(&cap.manifest)
        .await
        .unwrap()
        .unwrap();
    // A newer weft rewrites its catalog row with a field this build does not know.
    let newer = ManifestEntryNext {
        holders: entry.holders.clone(),
        size: entry.size,
        stored_bytes: entry.stored_bytes,
        ec: entry.ec,
        policy: entry.policy.clone(),
        created_ms: entry.created_ms,
        moved: entry.moved.clone(),
        released_ms: None,
        max_price: entry.max_price,
        tier: "cold".into(),
    };
    let mut value = vec![CatalogRows::FORMAT + 1];
    value.extend(weft_core::wire::encode(&newer));
    let part = catalog_part(&cap.manifest);
    let writer = &nodes[2];
    writer
        .table()
        .put_encoded::<CatalogRows>(
            writer.table().node_key(),
            &part,
            &cap.manifest,
            Some(value.clone()),
        )
        .await
        .unwrap();
    let pk = partition_key::<CatalogRows>(&part);
    let sk = cap.manifest.to_sort();
    // Served as it is, recognised as newer, never as absent.
    let row = nodes[4]
        .table()
        .get::<CatalogRows>(&part, &cap.manifest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.value, Some(Value::Newer(CatalogRows::FORMAT + 1)));
    assert!(
        nodes[4]
            .healer()
            .registry()
            .get(&cap.manifest)
            .await
            .is_err()
    );
    // An older write (an older timestamp) does not replace it; the newer row merges by time.
    let reps = replicas::<CatalogRows>(&nodes, &part);
    settle(&nodes, &reps, |n| {
        n.table()
            .local()
            .get(&pk, &sk)
            .unwrap()
            .and_then(|e| e.value)
            == Some(value.clone())
    })
    .await;
    let stale = Item {
        pk: pk.clone(),
        sk: sk.clone(),
        entry: Entry::sign(
            nodes[reps[0]].table().node_key(),
            &pk,
            &sk,
            Timestamp {
                wall: 1,
                logical: 0,
                node: nodes[reps[0]].id(),
            },
            Some(weft_meta::schema::encode_value::<CatalogRows>(&entry)),
        ),
    };
    push(&nodes, 0, nodes[reps[0]].id(), vec![stale]).await;
    let held = nodes[reps[0]]
        .table()
        .local()
        .get(&pk, &sk)
        .unwrap()
        .unwrap();
    assert_eq!(held.value.as_ref(), Some(&value));
    // Carried by anti-entropy: a replica that lost the row gets the very same bytes back.
    let lagging = reps[1];
    let fresh = Item {
        pk: pk.clone(),
        sk: sk.clone(),
        entry: Entry::sign(
            writer.table().node_key(),
            &pk,
            &sk,
            Timestamp {
                wall: weft_net::now_ms(),
                logical: 0,
                node: writer.id(),
            },
            Some(value.clone()),
        ),
    };
    for r in &reps {
        if *r != lagging {
            push(&nodes, 0, nodes[*r].id(), vec![fresh.clone()]).await;
        }
    }
    assert_ne!(
        nodes[lagging].table().local().get(&pk, &sk).unwrap(),
        Some(fresh.entry.clone())
    );
    for _ in 0..3 {
        for n in &nodes {
            n.table().sync_once().await;
        }
    }
    for r in &reps {
        assert_eq!(
            nodes[*r].table().local().get(&pk, &sk).unwrap(),
            Some(fresh.entry.clone()),
            "replica {r} does not hold the newer row as written"
        );
    }
    // Past the delay, neither garbage collection nor the orphan sweep deletes a shard of it.
    tokio::time::sleep(gc_delay * 3).await;
    for n in &nodes {
        n.healer().check_once().await;
        n.healer().sweep_orphans().await;
    }
    let owners: Vec<_> = nodes.iter().map(|n| n.healer().status()).collect();
    assert!(
        owners
            .iter()
            .any(|s| s.unreadable_rows > 0 && !s.last_unreadable.is_empty()),
        "no node said it left a row alone"
    );
    assert!(
        owners
            .iter()
            .all(|s| s.gc_objects == 0 && s.orphans_removed == 0)
    );
    for seg in &manifest.segments {
        for (holder, shard) in seg.holders.iter().zip(&seg.info.shards) {
            let node = nodes.iter().find(|n| n.id() == *holder).unwrap();
            assert!(
                node.storage().local().contains(shard).unwrap(),
                "a shard was deleted"
            );
        }
    }
    let mut out = Vec::new();
    nodes[3].storage().get(&cap, &mut out).await.unwrap();
    assert!(out == bytes);
}

/// A manifest with random structure: lengths that disagree, impossible codings and sizes.
fn wild_manifest(ids: Vec<NodeId>) -> impl Strategy<Value = Manifest> {
    let seg = (
        any::<u32>(),
        0u64..(8 << 20),
        0u64..(8 << 20),
        0u64..(100 << 20),
        0usize..8,
        0usize..8,
    );
    (
        any::<u64>(),
        0u64..(100 << 20),
        0usize..80,
        0usize..80,
        proptest::collection::vec(seg, 0..4),
    )
        .prop_map(move |(size, segment_size, k, m, segs)| Manifest {
            size,
            content_id: ContentHash::of(&size.to_le_bytes()),
            segment_size,
            ec: Erasure { data: k, parity: m },
            policy: Residency::default(),
            segments: segs
                .into_iter()
                .map(
                    |(index, plain, cipher, shard_len, shards, holders)| PlacedSegment {
                        info: weft_store::codec::SegmentInfo {
                            index,
                            plain_len: plain,
                            plain_hash: ContentHash::of(b"p"),
                            cipher_len: cipher,
                            shard_len,
                            shards: (0..shards).map(|i| ContentHash::of(&[i as u8])).collect(),
                        },
                        holders: (0..holders).map(|i| ids[i % ids.len()]).collect(),
                    },
                )
                .collect(),
            keyed: true,
        })
}

/// A catalog row with random contents (bad codings, moves past the coding, no holders).
fn wild_entry(holders: Vec<NodeId>) -> impl Strategy<Value = ManifestEntry> {
    (
        0usize..70,
        0usize..70,
        proptest::collection::vec((any::<u32>(), any::<u16>()), 0..5),
        any::<bool>(),
    )
        .prop_map(move |(k, m, moved, keep_holders)| ManifestEntry {
            holders: if keep_holders {
                holders.clone()
            } else {
                vec![NodeId([9; 32])]
            },
            size: 1,
            stored_bytes: 1,
            ec: Erasure { data: k, parity: m },
            policy: Residency::default(),
            created_ms: 0,
            moved: moved
                .into_iter()
                .map(|(s, i)| (s, i, NodeId([3; 32])))
                .collect(),
            released_ms: None,
            max_price: None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_manifests_never_panic() {
    let (_tmp, _dirs, nodes) = cluster(5, Duration::from_secs(1)).await;
    // Honest objects, which must stay readable.
    let mut honest = Vec::new();
    for (i, writer) in nodes.iter().take(3).enumerate() {
        let bytes = data(200_000 + i * 1000);
        let (cap, _) = writer
            .storage()
            .put(&bytes[..], Residency::default(), None)
            .await
            .unwrap();
        writer
            .data()
            .own()
            .retain_capability(&cap.manifest)
            .await
            .unwrap();
        honest.push((cap, bytes));
    }
    // A member stores malformed manifests (and random bytes) as if they were manifests, and
    // writes catalog rows for them and for random entries.
    let evil = &nodes[4];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let holders: Vec<NodeId> = nodes.iter().map(|n| n.id()).take(3).collect();
    let mut planted = Vec::new();
    for case in 0..40u32 {
        let bytes = if case % 5 == 0 {
            let noise = proptest::collection::vec(any::<u8>(), 0..300);
            noise.new_tree(&mut runner).unwrap().current()
        } else {
            let ids: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
            wild_manifest(ids)
                .new_tree(&mut runner)
                .unwrap()
                .current()
                .encode()
        };
        let hash = ContentHash::of(&bytes);
        for h in &holders {
            evil.storage()
                .put_shard(*h, hash, Arc::new(bytes.clone()))
                .await
                .unwrap();
        }
        let entry = wild_entry(holders.clone())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut entry = entry;
        if case % 2 == 0 {
            // Referenced and young: repair checks it rather than collecting it.
            entry.created_ms = weft_net::now_ms();
            evil.data().own().retain_capability(&hash).await.unwrap();
        }
        evil.table()
            .put::<CatalogRows>(
                evil.table().node_key(),
                &catalog_part(&hash),
                &hash,
                Some(&entry),
            )
            .await
            .unwrap();
        planted.push(hash);
    }
    // Repair, garbage collection, scrubbing, the orphan sweep and reads all meet them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..2 {
        for n in &nodes {
            n.healer().check_once().await;
            n.healer().scrub_once().await;
            n.healer().sweep_orphans().await;
        }
    }
    for hash in &planted {
        let cap = Capability {
            manifest: *hash,
            key: [1; 32],
            holders: holders.clone(),
            inline: None,
        };
        let mut out = Vec::new();
        assert!(nodes[1].storage().get(&cap, &mut out).await.is_err());
    }
    // The loops are alive (a check still completes) and the honest objects read back.
    let before = nodes[0].healer().status().scans;
    nodes[0].healer().check_once().await;
    assert!(nodes[0].healer().status().scans > before);
    for (cap, bytes) in &honest {
        for n in &nodes {
            let mut out = Vec::new();
            n.storage().get(cap, &mut out).await.unwrap();
            assert!(out == *bytes);
        }
    }
    wait("every node still answers", 10, || {
        nodes.iter().all(|n| n.members().len() == nodes.len())
    })
    .await;
}

/// `[wan]` An overwrite learns what it replaced in its own write's round trip: each write
/// answers the version before it (none for the first; a lagging replica may add an older one,
/// after it), whichever node writes, and a deletion answers the last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answers_the_versions_it_replaced() {
    let (_tmp, _dirs, nodes) = cluster(4, Duration::from_secs(60)).await;
    let hash = ContentHash([7; 32]);
    let part = catalog_part(&hash);
    let entry = |size: u64| catalog_entry(nodes[0].id(), size);
    let (a, b) = (nodes[1].table(), nodes[2].table());
    let (_, first) = a
        .put_returning::<CatalogRows>(a.node_key(), &part, &hash, Some(&entry(10)))
        .await
        .unwrap();
    assert!(first.is_empty(), "{first:?}");
    let (_, second) = a
        .put_returning::<CatalogRows>(a.node_key(), &part, &hash, Some(&entry(20)))
        .await
        .unwrap();
    assert_eq!(second.first(), Some(&entry(10)));
    let (_, third) = b
        .put_returning::<CatalogRows>(b.node_key(), &part, &hash, Some(&entry(30)))
        .await
        .unwrap();
    assert_eq!(third.first(), Some(&entry(20)));
    assert!(third.iter().all(|e| e.size < 30), "{third:?}");
    let (_, gone) = a
        .put_returning::<CatalogRows>(a.node_key(), &part, &hash, None)
        .await
        .unwrap();
    assert_eq!(gone.first(), Some(&entry(30)));
    let row = a.get::<CatalogRows>(&part, &hash).await.unwrap();
    assert!(row.as_ref().is_none_or(|r| r.value.is_none()), "{row:?}");
}

/// `[wan]` metadata residency: every row of a bucket held to regions — its objects (small ones
/// with their bytes), kept versions, uploads and parts — is stored only on nodes in those
/// regions, by the table's writes, its read repair and its anti-entropy alike; a node outside
/// them refuses such rows sent to it straight, and still reads them through the fabric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_bucket_held_to_regions_stay_in_them() {
    let c = weft_cluster::Builder::regions(&["eu", "eu", "us", "us", "ap", "ap"])
        .start()
        .await;
    let nodes = &c.nodes;
    let b = nodes[0].data().own();
    let eu = Residency {
        regions: vec!["eu".into()],
        jurisdictions: vec![],
        ..Default::default()
    };
    b.create_bucket("eu-rows", eu, None, 3).await.unwrap();
    let record = b.bucket("eu-rows").await.unwrap();
    assert!(record.rows_in_regions);
    let small = b"kept in an eu row".to_vec();
    let big = data(300_000);
    for i in 0..5 {
        b.objects()
            .put("eu-rows", &format!("small{i}"), &small[..])
            .await
            .unwrap();
        b.objects()
            .put("eu-rows", &format!("big{i}"), &big[..])
            .await
            .unwrap();
    }
    b.objects()
        .put("eu-rows", "small0", &b"again"[..])
        .await
        .unwrap();
    let upload = b
        .uploads()
        .create("eu-rows", "multi", Default::default())
        .await
        .unwrap();
    b.uploads()
        .put_part("eu-rows", &upload, 1, &big[..], || Ok(String::new()))
        .await
        .unwrap();
    // A node in ap reads them through the fabric.
    let ap = nodes[4].data().acting(b.access().clone());
    let mut out = Vec::new();
    ap.objects()
        .get("eu-rows", "small1", &mut out)
        .await
        .unwrap();
    assert_eq!(out, small);
    assert_eq!(ap.objects().list("eu-rows", "").await.unwrap().len(), 10);
    // Anti-entropy runs everywhere; then each node's own replica is read.
    for _ in 0..2 {
        for n in nodes {
            n.table().sync_once().await;
        }
    }
    let owner = nodes[0].data().own().account().to_hex();
    let mut in_eu = 0;
    for (i, n) in nodes.iter().enumerate() {
        let local = n.table().local();
        let mut held = Vec::new();
        let partitions = (0..weft_meta::ring::PARTITIONS).chain(local.held_partitions().unwrap());
        for p in partitions {
            for item in local.partition(p).unwrap() {
                if item.pk.contains(&owner) && item.pk.contains("eu-rows") {
                    held.push(item.pk);
                }
            }
        }
        if i < 2 {
            in_eu += held.len();
            assert!(
                held.iter()
                    .all(|pk| pk.split('/').next().unwrap().ends_with("@eu"))
            );
        } else {
            assert!(held.is_empty(), "node {i} ({:?}) holds {held:?}", n.id());
        }
    }
    // Objects (current and kept), the upload and its part.
    assert!(in_eu >= 2 * (10 + 11 + 1 + 1), "{in_eu}");
    // Sent straight to a node outside the regions, such a row is refused.
    let pk = partition_key::<SealedObjects>(&weft_data::schema::BucketId::of(&record));
    assert!(pk.starts_with("so@eu/"), "{pk}");
    let row = nodes[0]
        .table()
        .local()
        .partition(weft_meta::ring::partition_of(pk.as_bytes()))
        .unwrap()
        .into_iter()
        .find(|i| i.pk == pk)
        .unwrap();
    for ap in [4, 5] {
        let answer = push(nodes, 0, nodes[ap].id(), vec![row.clone()]).await;
        assert!(
            matches!(&answer, MetaResponse::Error(e) if e.contains("regions")),
            "{answer:?}"
        );
        assert!(
            nodes[ap]
                .table()
                .local()
                .get(&row.pk, &row.sk)
                .unwrap()
                .is_none()
        );
    }
}

/// `[wan]` A listing takes the rows from the nearest replica and only their versions from the
/// others, and still finds a newer version the nearest one missed: fetched from a replica that
/// holds it, and checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_finds_what_its_nearest_replica_missed() {
    let (_tmp, _dirs, nodes) = cluster(4, Duration::from_secs(60)).await;
    let hash = ContentHash([9; 32]);
    let part = catalog_part(&hash);
    let entry = |size: u64| catalog_entry(nodes[0].id(), size);
    let reps = replicas::<CatalogRows>(&nodes, &part);
    // The lister is a replica itself: its own copy is the nearest.
    let lister = &nodes[reps[0]];
    let t = lister.table();
    t.put::<CatalogRows>(t.node_key(), &part, &hash, Some(&entry(10)))
        .await
        .unwrap();
    let pk = partition_key::<CatalogRows>(&part);
    let sk = hash.to_sort();
    settle(&nodes, &reps, |n| {
        n.table().local().get(&pk, &sk).unwrap().is_some()
    })
    .await;
    // A newer version reaches every replica but the lister.
    let writer = &nodes[reps[1]];
    let ts = Timestamp {
        wall: weft_net::now_ms() + 1000,
        logical: 0,
        node: writer.id(),
    };
    let newer = Item {
        pk: pk.clone(),
        sk: sk.clone(),
        entry: Entry::sign(
            writer.table().node_key(),
            &pk,
            &sk,
            ts,
            Some(weft_meta::schema::encode_value::<CatalogRows>(&entry(20))),
        ),
    };
    for r in &reps[1..] {
        let answer = push(&nodes, reps[0], nodes[*r].id(), vec![newer.clone()]).await;
        assert!(matches!(answer, MetaResponse::Written), "{answer:?}");
    }
    let listed = t.list::<CatalogRows>(&part, "").await.unwrap();
    let sizes: Vec<u64> = listed
        .into_iter()
        .filter_map(|(_, r)| r.known().map(|e| e.size))
        .collect();
    assert_eq!(sizes, [20]);
    // It came from the others: the lister's own copy is still the older one.
    let own = t.local().get(&pk, &sk).unwrap().unwrap();
    assert!(own.ts < ts);
}

/// `[wan]` Read-after-write, as S3 promises it: a read that starts after a write's
/// acknowledgement sees that write (or a newer one), through any node — also while one of the
/// object row's replicas is cut off and misses writes, and through that replica right after
/// it is heard again (its own copy is stale; the read's majority is not). Small objects (kept
/// in their rows) and stored ones alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_after_an_acknowledged_write_sees_it() {
    let regions = ["eu", "eu", "us", "us", "ap"];
    let c = weft_cluster::Builder::regions(&regions)
        .wan(weft_net::WanConfig::default())
        .start()
        .await;
    let nodes = &c.nodes;
    // Node i is alone in site `<region>-<i % 2>`.
    let sites: Vec<String> = (0..regions.len())
        .map(|i| format!("{}-{}", regions[i], i % 2))
        .collect();
    let owner = c.account(0, 21);
    owner
        .create_bucket("raw", Residency::default(), None, 1)
        .await
        .unwrap();
    let bucket = BucketId {
        owner: owner.account(),
        name: "raw".into(),
        regions: Vec::new(),
    };
    let reps = replicas::<SealedObjects>(nodes, &bucket);
    // The replica to cut off, and the nodes that keep writing and reading meanwhile.
    let lagging = reps[0];
    let others: Vec<usize> = (0..nodes.len()).filter(|i| *i != lagging).collect();
    let body = |round: usize, big: bool| -> Vec<u8> {
        let len = if big { 6000 } else { 100 };
        let mut b = data(len);
        b[..8].copy_from_slice(&(round as u64).to_le_bytes());
        b
    };
    let mut round = 0;
    let check = |writer: usize, reader: usize, round: usize| {
        let (w, r) = (
            nodes[writer].data().acting(owner.access().clone()),
            nodes[reader].data().acting(owner.access().clone()),
        );
        async move {
            for big in [false, true] {
                let key = if big { "stored" } else { "small" };
                let expect = body(round, big);
                w.objects().put("raw", key, &expect[..]).await.unwrap();
                let mut out = Vec::new();
                r.objects().get("raw", key, &mut out).await.unwrap();
                assert!(
                    out == expect,
                    "round {round}: node {reader} read an older {key} after node {writer}'s write"
                );
                let listed = r.objects().list("raw", key).await.unwrap();
                assert_eq!(listed.len(), 1);
                assert_eq!(listed[0].1.size, expect.len() as u64);
            }
        }
    };
    for i in 0..nodes.len() {
        check(i, (i + 1) % nodes.len(), round).await;
        round += 1;
    }
    // One replica of the rows cut off: writes go on without it.
    let mut cut = weft_net::WanConfig::default();
    for other in sites.iter().filter(|s| **s != sites[lagging]) {
        let lost = weft_net::wan::LinkSpec {
            loss: 1.0,
            ..Default::default()
        };
        cut.links
            .push((sites[lagging].clone(), other.clone(), lost));
    }
    for n in nodes {
        n.set_wan(cut.clone()).unwrap();
    }
    // Once the others count it gone, they place shards without it (a five-node fabric has no
    // spare node for a shard whose holder does not answer).
    let gone = nodes[lagging].id();
    wait("the others count the cut-off replica gone", 30, || {
        others.iter().all(|i| {
            nodes[*i]
                .fabric()
                .members()
                .iter()
                .all(|m| m.id != gone || !m.in_ring())
        })
    })
    .await;
    for (j, w) in others.iter().enumerate() {
        check(*w, others[(j + 1) % others.len()], round).await;
        round += 1;
    }
    // Heard again: reads through it see the latest write at once, and so do writes after.
    for n in nodes {
        n.set_wan(weft_net::WanConfig::default()).unwrap();
    }
    let last = round - 1;
    let healed = std::time::Instant::now();
    let through = nodes[lagging].data().acting(owner.access().clone());
    loop {
        let mut out = Vec::new();
        match through.objects().get("raw", "stored", &mut out).await {
            Ok(_) => {
                assert!(
                    out == body(last, true),
                    "the healed replica served an old version"
                );
                break;
            }
            // Until it hears the fabric again it refuses (it does not serve what it held).
            Err(_) => assert!(
                healed.elapsed() < Duration::from_secs(30),
                "the healed node never served again"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = Vec::new();
    through
        .objects()
        .get("raw", "small", &mut out)
        .await
        .unwrap();
    assert!(out == body(last, false));
    // Writes through it once it hears every member again (it places shards by what it hears).
    wait("the healed node hears every member", 30, || {
        nodes[lagging]
            .fabric()
            .members()
            .iter()
            .all(|m| m.is_alive())
    })
    .await;
    check(lagging, others[0], round).await;
    check(others[1], lagging, round + 1).await;
}
