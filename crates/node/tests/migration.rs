//! A data directory from before rows were signed keeps working: its unsigned rows are set
//! aside, and each node re-signs what it owns (its account's buckets and objects, catalog
//! entries, references), so every object reads back by name and nothing becomes garbage.

use std::time::{Duration, Instant};

use weft_cluster::{Builder, data};
use weft_core::wire;
use weft_meta::{LegacyEntry, LocalTable, Timestamp};
use weft_node::Node;
use weft_store::Residency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_from_before_signed_rows_are_migrated() {
    let gc_delay = Duration::from_secs(1);
    let cluster = Builder::new(4).gc_delay(gc_delay).start().await;
    let settings: Vec<_> = (0..4).map(|i| cluster.settings(i)).collect();
    let (_tmp, dirs, nodes) = cluster.into_parts();
    let b = nodes[0].data().own();
    b.create_bucket("old", Residency::default(), None, 1)
        .await
        .unwrap();
    // Both stored in segments, as every object was then (none was kept in its row).
    let (big, small) = (data(1 << 20), data(weft_data::INLINE_MAX + 100));
    b.objects().put("old", "a", &big[..]).await.unwrap();
    b.objects().put("old", "dir/b", &small[..]).await.unwrap();
    let bucket = b.bucket("old").await.unwrap();
    let objects = [
        ("a", b.objects().object("old", "a").await.unwrap()),
        ("dir/b", b.objects().object("old", "dir/b").await.unwrap()),
    ];
    let registry = nodes[0].healer().registry();
    let mut catalog = Vec::new();
    for (_, r) in &objects {
        catalog.push((
            r.manifest,
            registry.get(&r.manifest).await.unwrap().unwrap(),
        ));
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr()).collect();
    for n in &nodes {
        n.shutdown().await;
    }
    drop(nodes);
    // Rewrite every replica as the version before signed rows left it: unsigned rows under
    // the old key shapes, the same on every node.
    let ts = Timestamp {
        wall: weft_net::now_ms(),
        logical: 0,
        node: weft_core::NodeId([1; 32]),
    };
    let old = |value: Vec<u8>| LegacyEntry {
        ts,
        value: Some(value),
    };
    for dir in &dirs {
        std::fs::remove_file(dir.join("meta.redb")).unwrap();
        let _ = std::fs::remove_file(dir.join("migrated-rows"));
        let t = LocalTable::open(&dir.join("meta.redb")).unwrap();
        // Then a bucket record had no `sealed` field (a struct encodes as its fields in order).
        let v1 = (
            &bucket.name,
            bucket.owner,
            &bucket.policy,
            bucket.ec,
            bucket.versions,
            bucket.created_ms,
        );
        t.import_legacy("buckets", "old", &old(wire::encode(&v1)))
            .unwrap();
        for (key, r) in &objects {
            // Then an object record had no `inline` field.
            let v1 = (
                r.manifest,
                &r.holders,
                r.size,
                r.content_id,
                &r.wrapped_key,
                r.created_ms,
                &r.version,
                &r.attrs,
                &r.parts,
            );
            assert!(!r.is_inline());
            t.import_legacy("obj/old", key, &old(wire::encode(&v1)))
                .unwrap();
            t.import_legacy(
                &format!("r/{}", r.manifest.to_hex()),
                &format!("v/old/{key}/{}", r.version),
                &old(Vec::new()),
            )
            .unwrap();
        }
        for (hash, entry) in &catalog {
            t.import_legacy(
                &format!("m/{:02x}", hash.0[0]),
                &hash.to_hex(),
                &old(wire::encode(entry)),
            )
            .unwrap();
        }
    }
    // The new version starts on the old directories.
    let mut nodes: Vec<Node> = Vec::new();
    for (s, addr) in settings.into_iter().zip(&addrs) {
        let mut s = s;
        s.listen = *addr;
        nodes.push(Node::start(s).await.unwrap());
    }
    let start = Instant::now();
    while !dirs.iter().all(|d| d.join("migrated-rows").exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the nodes did not migrate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Everything reads back by name through the owner, and lists through any node.
    let b = nodes[0].data().own();
    // A migrated bucket keeps plain rows (it was made before rows were sealed).
    let plain = weft_data::BucketRecord {
        sealed: false,
        ..bucket.clone()
    };
    assert_eq!(b.bucket("old").await.unwrap(), plain);
    let mut out = Vec::new();
    b.objects().get("old", "a", &mut out).await.unwrap();
    assert!(out == big);
    let mut out = Vec::new();
    b.objects().get("old", "dir/b", &mut out).await.unwrap();
    assert_eq!(out, small);
    let listed: Vec<String> = nodes[2]
        .data()
        .acting(b.access().clone())
        .objects()
        .list("old", "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, ["a", "dir/b"]);
    // Their bytes are still referenced and catalogued: past the delay nothing is collected.
    tokio::time::sleep(gc_delay * 2).await;
    for n in &nodes {
        n.healer().check_once().await;
    }
    for (hash, _) in &catalog {
        let (live, _) = nodes[1].healer().registry().refs(hash).await.unwrap();
        assert!(live > 0, "a migrated object lost its reference");
        assert!(
            nodes[1]
                .healer()
                .registry()
                .get(hash)
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(nodes.iter().all(|n| n.healer().status().gc_objects == 0));
    let mut out = Vec::new();
    b.objects().get("old", "a", &mut out).await.unwrap();
    assert!(out == big);
    // The unsigned rows are set aside, never served as rows.
    assert!(
        nodes[3]
            .table()
            .local()
            .get("buckets", "old")
            .unwrap()
            .is_none()
    );
    for n in &nodes {
        n.shutdown().await;
    }
}
