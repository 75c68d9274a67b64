//! Objects across an in-process fabric of real nodes (QUIC on loopback, real shard stores).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_cluster::{Builder, Cluster};
use weft_core::ContentHash;
use weft_heal::ManifestEntry;
use weft_heal::schema::CatalogRows;
use weft_node::{MemberState, Node};
use weft_store::{Capability, Erasure, Residency, StorageError};

async fn cluster(regions: &[&str]) -> Cluster {
    Builder::regions(regions).start().await
}

async fn cluster_with(regions: &[&str], wan: Option<weft_net::WanConfig>) -> Cluster {
    match wan {
        Some(wan) => Builder::regions(regions).wan(wan).start().await,
        None => cluster(regions).await,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u64 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn put(
    node: &Node,
    bytes: &[u8],
    policy: Residency,
    ec: Option<Erasure>,
) -> Result<Capability, StorageError> {
    node.storage()
        .put(bytes, policy, ec)
        .await
        .map(|(cap, _)| cap)
}

async fn get(
    node: &Node,
    cap: &Capability,
) -> Result<(Vec<u8>, weft_store::ReadReport), StorageError> {
    let mut out = Vec::new();
    let report = node.storage().get(cap, &mut out).await?;
    Ok((out, report))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_between_nodes_and_survive_two_losses() {
    let c = cluster(&["eu", "eu", "us", "us", "ap", "ap"]).await;
    let sizes = [0usize, 1, 4 << 20, (9 << 20) + 12345];
    let mut caps = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let bytes = data(*size, i as u8 + 1);
        let cap = put(&c.nodes[0], &bytes, Residency::default(), None)
            .await
            .unwrap();
        let (back, _) = get(&c.nodes[3], &cap).await.unwrap();
        assert!(back == bytes, "size {size} did not round-trip");
        // The capability survives its text form.
        assert_eq!(Capability::from_text(&cap.to_text()).unwrap(), cap);
        caps.push((cap, bytes));
    }
    let manifest = c.nodes[1].storage().manifest(&caps[3].0).await.unwrap();
    assert_eq!(manifest.ec, Erasure { data: 4, parity: 2 });
    for seg in &manifest.segments {
        let mut holders = seg.holders.clone();
        holders.sort();
        holders.dedup();
        assert_eq!(
            holders.len(),
            6,
            "a segment's shards must sit on distinct nodes"
        );
    }
    // Any two nodes down: every object still reads (4+2).
    c.nodes[1].shutdown().await;
    c.nodes[4].shutdown().await;
    for (cap, bytes) in &caps {
        let (back, _) = get(&c.nodes[2], cap).await.unwrap();
        assert!(back == *bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_reported_and_read_around() {
    let c = cluster(&["eu", "eu", "us", "us"]).await;
    let bytes = data(3 << 20, 9);
    let cap = put(
        &c.nodes[0],
        &bytes,
        Residency::default(),
        Some(Erasure { data: 2, parity: 2 }),
    )
    .await
    .unwrap();
    let manifest = c.nodes[0].storage().manifest(&cap).await.unwrap();
    // Flip a bit in every copy of shard 0 of segment 0 that node 1.. holds on disk.
    let seg = &manifest.segments[0];
    let victim = seg.holders[0];
    let idx = c.nodes.iter().position(|n| n.id() == victim).unwrap();
    let hex = seg.info.shards[0].to_hex();
    let path = c.dirs[idx]
        .join("store/shards")
        .join(&hex[..2])
        .join(&hex[2..]);
    let mut raw = std::fs::read(&path).unwrap();
    raw[100] ^= 0x01;
    std::fs::write(&path, &raw).unwrap();
    // Read from the corrupt holder itself: it tries its own copy first (nearest), detects the
    // mismatch, reports itself, and completes the read from the others.
    let (back, report) = get(&c.nodes[idx], &cap).await.unwrap();
    assert!(back == bytes);
    assert!(report.bad_holders.contains(&victim.to_hex()), "{report:?}");
    assert!(
        report
            .sources
            .keys()
            .all(|n| *n != victim.to_hex() || report.sources[n] > 0)
    );
    assert!(!matches!(
        c.nodes[idx].storage().local().get(&seg.info.shards[0]),
        Ok(Some(_))
    ));
    // A manifest altered on disk is detected too, and the other copies serve.
    for (i, dir) in c.dirs.iter().enumerate() {
        let hex = cap.manifest.to_hex();
        let p = dir.join("store/shards").join(&hex[..2]).join(&hex[2..]);
        if p.exists() && c.nodes[i].id() == cap.holders[0] {
            let mut raw = std::fs::read(&p).unwrap();
            raw[5] ^= 0x80;
            std::fs::write(&p, &raw).unwrap();
        }
    }
    let (back, _) = get(&c.nodes[3], &cap).await.unwrap();
    assert!(back == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residency_holds_and_providers_never_see_plaintext() {
    let c = cluster(&["eu", "eu", "eu", "us", "us", "ap"]).await;
    let marker = b"WEFT-PLAINTEXT-MARKER";
    let bytes: Vec<u8> = marker.iter().copied().cycle().take(2 << 20).collect();
    let eu_only = Residency {
        regions: vec!["eu".into()],
        jurisdictions: vec![],
        ..Default::default()
    };
    let cap = put(&c.nodes[4], &bytes, eu_only.clone(), None)
        .await
        .unwrap();
    let manifest = c.nodes[4].storage().manifest(&cap).await.unwrap();
    let eu: Vec<_> = c.nodes[..3].iter().map(|n| n.id()).collect();
    for seg in &manifest.segments {
        assert!(
            seg.holders.iter().all(|h| eu.contains(h)),
            "a shard left the eu"
        );
    }
    assert!(
        cap.holders.iter().all(|h| eu.contains(h)),
        "the manifest left the eu"
    );
    assert_eq!(manifest.ec, Erasure { data: 2, parity: 1 });
    // More shards than eu nodes: refused, not placed elsewhere.
    let err = put(
        &c.nodes[0],
        &bytes,
        eu_only,
        Some(Erasure { data: 4, parity: 2 }),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("residency"), "{err}");
    let (back, _) = get(&c.nodes[5], &cap).await.unwrap();
    assert!(back == bytes);
    // No shard file on any node contains the marker.
    for dir in &c.dirs {
        for entry in walk(&dir.join("store/shards")) {
            let content = std::fs::read(&entry).unwrap();
            assert!(
                !content.windows(marker.len()).any(|w| w == marker),
                "plaintext in {entry:?}"
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_fetch_from_their_own_site_when_it_holds_enough_shards() {
    // Two regions 40 ms apart (one way). Sites: eu-0, eu-1, us-0, us-1 (two nodes each in eu).
    let links = ["eu-0", "eu-1", "us-0", "us-1"];
    let mut spec = Vec::new();
    for a in links {
        for b in links {
            if a < b && a[..2] != b[..2] {
                spec.push((
                    a.to_string(),
                    b.to_string(),
                    weft_net::LinkSpec {
                        delay_ms: 40.0,
                        jitter_ms: 0.0,
                        loss: 0.0,
                    },
                ));
            }
        }
    }
    let wan = weft_net::WanConfig {
        links: spec,
        loss: 0.0,
    };
    let c = cluster_with(&["eu", "eu", "eu", "eu", "us", "us", "us", "us"], Some(wan)).await;
    // Wait until every node's coordinates tell eu from us.
    let start = Instant::now();
    let settled = |c: &Cluster| {
        c.nodes.iter().enumerate().all(|(i, a)| {
            c.nodes.iter().enumerate().all(|(j, b)| {
                i == j
                    || a.fabric().estimated_rtt(&b.id()).is_some_and(|d| {
                        let far = (i < 4) != (j < 4);
                        if far {
                            d > Duration::from_millis(50)
                        } else {
                            d < Duration::from_millis(30)
                        }
                    })
            })
        })
    };
    while !settled(&c) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "coordinates did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bytes = data(6 << 20, 3);
    // 2+2 over four sites: two shards in eu, two in us — each region alone holds k.
    let cap = put(
        &c.nodes[4],
        &bytes,
        Residency::default(),
        Some(Erasure { data: 2, parity: 2 }),
    )
    .await
    .unwrap();
    let eu: Vec<String> = c.nodes[..4].iter().map(|n| n.id().to_hex()).collect();
    let manifest = c.nodes[0].storage().manifest(&cap).await.unwrap();
    for seg in &manifest.segments {
        let in_eu = seg
            .holders
            .iter()
            .filter(|h| eu.contains(&h.to_hex()))
            .count();
        assert_eq!(in_eu, 2, "placement should spread over the four sites");
    }
    // Pick an eu reader that holds no shard itself, so every byte crosses the network.
    let reader = c.nodes[..4]
        .iter()
        .find(|n| {
            manifest
                .segments
                .iter()
                .all(|s| !s.holders.contains(&n.id()))
        })
        .unwrap_or(&c.nodes[0]);
    // Hedging (asking one more holder when a fetch is slow) is a separate mechanism; turn it
    // off here so a busy test machine cannot make it look like a locality failure.
    let patient = reader
        .storage()
        .clone()
        .with_hedge_after(Duration::from_secs(60));
    let mut back = Vec::new();
    let report = patient.get(&cap, &mut back).await.unwrap();
    assert!(back == bytes);
    let from_us: u64 = report
        .sources
        .iter()
        .filter(|(n, _)| !eu.contains(n))
        .map(|(_, b)| *b)
        .sum();
    let total: u64 = report.sources.values().sum();
    assert_eq!(
        from_us, 0,
        "{from_us} of {total} shard bytes came from the far region"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_fetch_only_the_segments_they_need() {
    let c = cluster(&["eu", "eu", "us", "us"]).await;
    let bytes = data((12 << 20) + 5, 4);
    let cap = put(
        &c.nodes[0],
        &bytes,
        Residency::default(),
        Some(Erasure { data: 2, parity: 2 }),
    )
    .await
    .unwrap();
    let manifest = c.nodes[1].storage().manifest(&cap).await.unwrap();
    assert_eq!(manifest.segments.len(), 4);
    for (start, end) in [
        (0u64, 10u64),
        (4 << 20, (4 << 20) + 1),
        ((4 << 20) - 3, (4 << 20) + 3),
        (12 << 20, (12 << 20) + 5),
        (100, 100),
    ] {
        let mut out = Vec::new();
        let report = c.nodes[1]
            .storage()
            .read_range(&cap, &manifest, start, end, &mut out)
            .await
            .unwrap();
        assert!(
            out == bytes[start as usize..end as usize],
            "range {start}..{end}"
        );
        let segments_touched = if start == end {
            0
        } else {
            ((end - 1) >> 22) - (start >> 22) + 1
        };
        let fetched: u64 = report.sources.values().sum();
        let per_segment = 2 * manifest.segments[0].info.shard_len;
        assert!(
            fetched <= segments_touched * per_segment + per_segment,
            "range {start}..{end} fetched {fetched} bytes"
        );
    }
}

fn count(node: &Node, state: MemberState) -> usize {
    node.members().iter().filter(|m| m.state == state).count()
}

fn alive(node: &Node) -> usize {
    count(node, MemberState::Alive)
}

/// Every node's view, for failure messages.
fn views(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            let row: Vec<String> = n
                .members()
                .iter()
                .map(|m| format!("{}={}", m.id.short(), m.state.as_str()))
                .collect();
            format!("{}: {}", n.id().short(), row.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_for(what: &str, secs: u64, nodes: &[Node], mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}\n{}",
            views(nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_fabric_takes_writes_on_both_sides_and_converges_after_healing() {
    let regions = ["eu", "eu", "us", "us", "ap", "ap"];
    let c = cluster_with(&regions, Some(weft_net::WanConfig::default())).await;
    // Builder::regions puts node i in site `<region>-<i % 2>`.
    let sites: Vec<String> = (0..regions.len())
        .map(|i| format!("{}-{}", regions[i], i % 2))
        .collect();
    // Cut eu (nodes 0, 1) off from us and ap: every datagram between them is dropped.
    let mut cut = weft_net::WanConfig::default();
    for (i, a) in sites.iter().enumerate() {
        for (j, b) in sites.iter().enumerate() {
            if regions[i] == "eu" && regions[j] != "eu" {
                let lost = weft_net::wan::LinkSpec {
                    loss: 1.0,
                    ..Default::default()
                };
                cut.links.push((a.clone(), b.clone(), lost));
            }
        }
    }
    // A partition none of whose replicas is in eu: what eu accepts while cut off lives on
    // non-replicas and must be handed over after healing.
    // The rows are catalog rows (which any member may write) of objects that do not exist.
    let eu = [c.nodes[0].id(), c.nodes[1].id()];
    let part = (0..=255u8)
        .find(|p| {
            let reps = c.nodes[0].table().replicas_for::<CatalogRows>(p);
            !reps.iter().any(|r| eu.contains(r))
        })
        .unwrap();
    let pk = weft_meta::schema::partition_key::<CatalogRows>(&part);
    let key = |name: &str| {
        let mut h = ContentHash::of(name.as_bytes());
        h.0[0] = part;
        h
    };
    let row = |size: u64| ManifestEntry {
        holders: Vec::new(),
        size,
        stored_bytes: 0,
        ec: Erasure { data: 1, parity: 1 },
        policy: Residency::default(),
        created_ms: weft_net::now_ms(),
        moved: Vec::new(),
        released_ms: None,
        max_price: None,
    };
    let put = |n: &Node, name: &str, size: u64| {
        let (t, k, r) = (n.table().clone(), key(name), row(size));
        async move {
            t.put::<CatalogRows>(t.node_key(), &part, &k, Some(&r))
                .await
                .unwrap()
        }
    };
    let (left, right) = (&c.nodes[0], &c.nodes[3]);
    put(left, "k", 1).await;
    for n in &c.nodes {
        n.set_wan(cut.clone()).unwrap();
    }
    // Wait until each side has declared the other dead (not merely suspect): a heal while
    // suspicions are still pending is a different scenario (a flap), not a split.
    wait_for(
        "the sides did not declare each other dead",
        30,
        &c.nodes,
        || {
            c.nodes[..2]
                .iter()
                .all(|n| alive(n) == 2 && count(n, MemberState::Dead) == 4)
                && c.nodes[2..]
                    .iter()
                    .all(|n| alive(n) == 4 && count(n, MemberState::Dead) == 2)
        },
    )
    .await;
    // Each side keeps taking writes on its own replicas.
    put(left, "k", 2).await;
    put(&c.nodes[1], "only-left", 10).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    put(right, "k", 3).await;
    put(&c.nodes[4], "only-right", 20).await;
    // Heal.
    for n in &c.nodes {
        n.set_wan(weft_net::WanConfig::default()).unwrap();
    }
    wait_for("the fabric did not re-form", 60, &c.nodes, || {
        c.nodes.iter().all(|n| alive(n) == regions.len())
    })
    .await;
    // Anti-entropy alone (no reads, which would repair) brings the replicas together.
    let p = weft_meta::ring::partition_of(pk.as_bytes());
    let size_of = |e: Option<weft_meta::Entry>| {
        let entry = weft_meta::schema::decode_row::<CatalogRows>(&e?).known()?;
        Some(entry.size)
    };
    let start = Instant::now();
    loop {
        for n in &c.nodes {
            n.table().sync_once().await;
        }
        let replicas = c.nodes[0].table().replicas_of(p);
        let converged = c
            .nodes
            .iter()
            .filter(|n| replicas.contains(&n.id()))
            .all(|n| {
                let local = n.table().local();
                let value = |name: &str| size_of(local.get(&pk, &key(name).to_hex()).unwrap());
                value("k") == Some(3)
                    && value("only-left").is_some()
                    && value("only-right").is_some()
            });
        if converged {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "replicas did not converge"
        );
    }
    for n in &c.nodes {
        let mut sizes: Vec<u64> = n
            .table()
            .list::<CatalogRows>(&part, "")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(_, r)| Some(r.known()?.size))
            .collect();
        sizes.sort();
        assert_eq!(sizes, [3, 10, 20]);
        let k = n
            .table()
            .get::<CatalogRows>(&part, &key("k"))
            .await
            .unwrap();
        assert_eq!(k.and_then(|r| r.known()).map(|e| e.size), Some(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_keep_the_versions_they_are_told_to() {
    let c = cluster(&["eu", "eu", "us", "us"]).await;
    let b = c.nodes[1].data().own();
    assert!(
        b.create_bucket("zero", Residency::default(), None, 0)
            .await
            .is_err()
    );
    b.create_bucket("docs", Residency::default(), None, 2)
        .await
        .unwrap();
    let mut written = Vec::new();
    for i in 0..3u8 {
        let bytes = data(1000 + i as usize, i + 7);
        let (record, _) = b.objects().put("docs", "a.txt", &bytes[..]).await.unwrap();
        written.push((record.version, bytes));
    }
    // The two newest are kept, newest first; the oldest was pruned.
    let kept: Vec<String> = b
        .objects()
        .versions("docs", "a.txt")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(kept, [written[2].0.clone(), written[1].0.clone()]);
    let read = |v: &str| {
        let v = v.to_string();
        async move {
            let r = b.objects().version("docs", "a.txt", &v).await?;
            let mut out = Vec::new();
            b.objects()
                .read_range(("docs", "a.txt"), &r, 0, r.size, &mut out)
                .await?;
            Ok::<_, weft_data::BucketError>(out)
        }
    };
    assert_eq!(read(&written[1].0).await.unwrap(), written[1].1);
    assert!(matches!(
        read(&written[0].0).await,
        Err(weft_data::BucketError::NoVersion(..))
    ));
    // Deleting the object leaves kept versions readable; a non-empty bucket cannot go.
    b.objects().delete("docs", "a.txt").await.unwrap();
    assert_eq!(read(&written[2].0).await.unwrap(), written[2].1);
    b.objects().put("docs", "b", &b"x"[..]).await.unwrap();
    assert!(matches!(
        b.delete_bucket("docs").await,
        Err(weft_data::BucketError::NotEmpty(_))
    ));
    b.objects().delete("docs", "b").await.unwrap();
    b.delete_bucket("docs").await.unwrap();
    assert!(b.bucket("docs").await.is_err());
}

/// `[wan]` small objects: one of at most `INLINE_MAX` bytes is kept in its row (no manifest,
/// no shards), read back by name and by a shared capability, and is never plaintext on any
/// node's disk; one byte more is stored in segments; a bucket held to regions keeps them in
/// its rows too (held to the same regions); a bucket held to a jurisdiction never does (rows
/// are not placed by jurisdiction), and a copy of a kept one into it is stored there under
/// its residency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_live_sealed_in_their_rows_only_where_residency_allows() {
    let c = cluster(&["eu", "eu", "us", "us"]).await;
    let b = c.nodes[1].data().own();
    b.create_bucket("small", Residency::default(), None, 1)
        .await
        .unwrap();
    let eu = Residency {
        regions: vec!["eu".into()],
        jurisdictions: vec![],
        ..Default::default()
    };
    b.create_bucket("eu-only", eu, None, 1).await.unwrap();
    let eu_law = Residency {
        regions: vec![],
        jurisdictions: vec!["EU".into()],
        ..Default::default()
    };
    b.create_bucket("eu-law", eu_law.clone(), None, 1)
        .await
        .unwrap();
    let marker = b"WEFT-INLINE-PLAINTEXT";
    let body: Vec<u8> = marker.iter().copied().cycle().take(3000).collect();
    let (record, manifest) = b.objects().put("small", "s", &body[..]).await.unwrap();
    assert!(record.is_inline() && manifest.is_none(), "{record:?}");
    assert_eq!(record.manifest, ContentHash([0; 32]));
    let read = |bucket: &'static str, key: &'static str| async move {
        let mut out = Vec::new();
        b.objects().get(bucket, key, &mut out).await.unwrap();
        out
    };
    assert_eq!(read("small", "s").await, body);
    let mut part = Vec::new();
    b.objects()
        .read_range(("small", "s"), &record, 10, 30, &mut part)
        .await
        .unwrap();
    assert_eq!(part, body[10..30]);
    // Another node of the fabric, acting for the same account, reads it too.
    let other = c.nodes[3].data().acting(b.access().clone());
    let mut out = Vec::new();
    other.objects().get("small", "s", &mut out).await.unwrap();
    assert_eq!(out, body);
    // Exactly at the limit it stays in its row; one byte more is stored in segments.
    let edge = data(weft_data::INLINE_MAX, 3);
    let (r, m) = b.objects().put("small", "edge", &edge[..]).await.unwrap();
    assert!(r.is_inline() && m.is_none());
    let over = data(weft_data::INLINE_MAX + 1, 4);
    let (r, m) = b.objects().put("small", "over", &over[..]).await.unwrap();
    assert!(!r.is_inline() && m.is_some());
    assert_eq!(read("small", "edge").await, edge);
    assert_eq!(read("small", "over").await, over);
    // Overwritten by a stored one and back, it reads as the newest.
    b.objects().put("small", "edge", &over[..]).await.unwrap();
    assert_eq!(read("small", "edge").await, over);
    b.objects().put("small", "edge", &edge[..]).await.unwrap();
    assert_eq!(read("small", "edge").await, edge);
    // A bucket held to regions keeps it in its rows, which are held there too.
    let (r, m) = b.objects().put("eu-only", "s", &body[..]).await.unwrap();
    assert!(r.is_inline() && m.is_none());
    assert_eq!(read("eu-only", "s").await, body);
    // One held to a jurisdiction stores even a small object in segments, under its residency.
    let (r, m) = b.objects().put("eu-law", "s", &body[..]).await.unwrap();
    assert!(!r.is_inline());
    assert_eq!(m.unwrap().policy, eu_law);
    // A copy of a kept one into it is stored there, under its residency.
    let copied = b
        .objects()
        .link(
            ("small", "s"),
            &record,
            ("eu-law", "copy"),
            weft_data::ObjectAttrs::default(),
        )
        .await
        .unwrap();
    assert!(!copied.is_inline());
    let cap = b
        .objects()
        .capability_of("eu-law", "copy", &copied)
        .unwrap();
    let m = c.nodes[1].storage().manifest(&cap).await.unwrap();
    assert_eq!(m.policy, eu_law);
    assert_eq!(read("eu-law", "copy").await, body);
    // Shared by capability, a kept one is carried by it (sealed), and reads the same anywhere.
    let cap = b.objects().capability("small", "s").await.unwrap();
    assert!(cap.inline.is_some());
    let text = cap.to_text();
    assert!(text.starts_with("weft-cap2-"), "{text}");
    let cap = Capability::from_text(&text).unwrap();
    let (back, _) = get(&c.nodes[2], &cap).await.unwrap();
    assert_eq!(back, body);
    assert!(matches!(
        c.nodes[2].storage().manifest(&cap).await,
        Err(StorageError::Inline(_))
    ));
    // Altered, it does not open; a stored object's capability keeps its first form.
    let mut bad = cap.clone();
    bad.inline.as_mut().unwrap()[5] ^= 1;
    assert!(matches!(
        get(&c.nodes[2], &bad).await,
        Err(StorageError::InlineCorrupt)
    ));
    let stored = b.objects().capability("small", "over").await.unwrap();
    assert!(stored.to_text().starts_with("weft-cap1-"));
    // Never plaintext on any node's disk: rows, shards or anything else.
    for dir in &c.dirs {
        for entry in walk(dir) {
            let Ok(content) = std::fs::read(&entry) else {
                continue;
            };
            assert!(
                !content.windows(marker.len()).any(|w| w == marker),
                "plaintext in {entry:?}"
            );
        }
    }
}

/// `[wan]` A site reading an object held mostly elsewhere keeps the far shards hot, at the
/// site's home for each: the next reader in the site gets them inside the site, concurrent
/// readers cause one fetch per shard, what is kept is the encrypted shard (in memory, never on
/// disk), and a site outside the object's regions keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_copies_stay_in_their_objects_regions_and_are_never_plaintext() {
    let link = |a: &str, b: &str, ms: f64| {
        let spec = weft_net::LinkSpec {
            delay_ms: ms,
            jitter_ms: 0.0,
            loss: 0.0,
        };
        (a.to_string(), b.to_string(), spec)
    };
    let wan = weft_net::WanConfig {
        links: vec![
            link("eu", "us", 10.0),
            link("eu", "ap", 40.0),
            link("us", "ap", 30.0),
        ],
        loss: 0.0,
    };
    let c = Builder::sites(&[("eu", 2), ("us", 2), ("ap", 2)])
        .wan(wan)
        .start()
        .await;
    // Every eu node sees us nearer than ap (so both pick the same far shards).
    let start = Instant::now();
    while !c.nodes[..2].iter().all(|a| {
        let est = |j: usize| a.fabric().estimated_rtt(&c.nodes[j].id());
        [2, 3].iter().all(|&u| {
            [4, 5]
                .iter()
                .all(|&p| matches!((est(u), est(p)), (Some(u), Some(p)) if u + Duration::from_millis(20) < p))
        })
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "coordinates did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marker = b"WEFT-HOT-PLAINTEXT-MARKER";
    let object = |len: usize| -> Vec<u8> { marker.iter().copied().cycle().take(len).collect() };
    let eu: Vec<_> = c.nodes[..2].iter().map(|n| n.id()).collect();
    let hot = |nodes: &[Node]| -> usize { nodes.iter().map(|n| n.storage().hot_bytes()).sum() };
    let fetched = |nodes: &[Node]| -> u64 { nodes.iter().map(|n| n.storage().hot_fetched()).sum() };
    // Anywhere: 4+2 over six nodes, two shards a site, so eu's readers need two from afar.
    let bytes = object(1 << 20);
    let cap = put(&c.nodes[2], &bytes, Residency::default(), None)
        .await
        .unwrap();
    let manifest = c.nodes[0].storage().manifest(&cap).await.unwrap();
    assert_eq!(manifest.ec, Erasure { data: 4, parity: 2 });
    let far: Vec<ContentHash> = manifest
        .segments
        .iter()
        .flat_map(|s| s.info.shards.iter().zip(&s.holders))
        .filter(|(_, h)| !eu.contains(h))
        .map(|(s, _)| *s)
        .collect();
    let back = patient_get(&c.nodes[0], &cap).await;
    assert!(back == bytes);
    let kept = hot(&c.nodes[..2]);
    assert!(kept > 0, "eu kept nothing of what it read from afar");
    assert_eq!(fetched(&c.nodes[..2]), 2);
    for n in &c.nodes[..2] {
        for (hash, shard) in n.storage().hot_shards() {
            assert_eq!(ContentHash::of(&shard), hash);
            assert!(far.contains(&hash), "a shard eu holds itself was kept hot");
            assert!(!shard.windows(marker.len()).any(|w| w == marker));
        }
    }
    // The site's other node reads it too: served inside the site, nothing fetched again.
    let back = patient_get(&c.nodes[1], &cap).await;
    assert!(back == bytes);
    assert_eq!(hot(&c.nodes[..2]), kept);
    assert_eq!(fetched(&c.nodes[..2]), 2);
    // Four readers at once in eu, of an object none has read: one fetch a far shard.
    let bytes = object(1 << 20);
    let cap = put(&c.nodes[3], &bytes, Residency::default(), None)
        .await
        .unwrap();
    let mut readers = tokio::task::JoinSet::new();
    for i in [0, 1, 0, 1] {
        let (node, cap) = (c.nodes[i].clone(), cap.clone());
        readers.spawn(async move { patient_get(&node, &cap).await });
    }
    while let Some(back) = readers.join_next().await {
        assert!(back.unwrap() == bytes);
    }
    assert_eq!(fetched(&c.nodes[..2]), 4);
    // Held to eu and us and read from ap: ap may not keep it, and nothing is kept there.
    let eu_us = Residency {
        regions: vec!["eu".into(), "us".into()],
        jurisdictions: vec![],
        ..Default::default()
    };
    let cap = put(&c.nodes[0], &object(1 << 20), eu_us, None)
        .await
        .unwrap();
    for n in &c.nodes[4..] {
        for _ in 0..2 {
            patient_get(n, &cap).await;
        }
    }
    assert_eq!(
        hot(&c.nodes[4..]),
        0,
        "ap kept shards of an object held to eu and us"
    );
    assert_eq!(fetched(&c.nodes[4..]), 0);
    // No file on any node holds the plaintext.
    for dir in &c.dirs {
        for entry in walk(dir) {
            let content = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !content.windows(marker.len()).any(|w| w == marker),
                "plaintext in {entry:?}"
            );
        }
    }
}

/// Read `cap` through `node` without hedging (a slow first fetch on a busy test machine would
/// otherwise ask one more source, and these tests count fetches).
async fn patient_get(node: &Node, cap: &Capability) -> Vec<u8> {
    let mut out = Vec::new();
    node.storage()
        .clone()
        .with_hedge_after(Duration::from_secs(60))
        .get(cap, &mut out)
        .await
        .unwrap();
    out
}
