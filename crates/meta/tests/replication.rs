//! The replicated table across in-process nodes: quorum, concurrent writers, divergence healed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_core::{CertBody, FabricId, MembershipCert, Placement, Role, SecretKey};
use weft_fabric::{Fabric, FabricConfig, MemberState};
use weft_meta::{Entry, Item, LocalTable, MetaError, Row, Rules, Schema, Table, Timestamp, Writer};
use weft_net::{Endpoint, EndpointConfig, Trust};

/// Test rows: any member node writes them.
struct Kv;
impl Schema for Kv {
    const KIND: &'static str = "kv";
    const WRITER: Writer = Writer::Member;
    const FORMAT: u8 = 1;
    type Part = str;
    type Sort = str;
    type Value = String;
    fn partition(part: &str) -> String {
        part.into()
    }
}

/// Name claims: the first key to claim a name holds it.
struct Names;
impl Schema for Names {
    const KIND: &'static str = "names";
    const WRITER: Writer = Writer::FirstClaim;
    const FORMAT: u8 = 1;
    type Part = ();
    type Sort = str;
    type Value = String;
    fn partition(_: &()) -> String {
        String::new()
    }
}

/// Counters kept by read-modify-write; concurrent versions join by taking the larger.
struct Counter;
impl Schema for Counter {
    const KIND: &'static str = "ctr";
    const WRITER: Writer = Writer::Member;
    const FORMAT: u8 = 1;
    type Part = str;
    type Sort = str;
    type Value = std::collections::BTreeSet<u32>;
    fn partition(part: &str) -> String {
        part.into()
    }
    fn join(mut newer: Self::Value, older: &Self::Value) -> Self::Value {
        newer.extend(older.iter().copied());
        newer
    }
}

fn rules() -> Rules {
    let mut r = Rules::new();
    r.add(Kv::KIND, Kv::WRITER);
    r.add(Counter::KIND, Counter::WRITER);
    r.add(Names::KIND, Names::WRITER);
    r
}

struct Node {
    key: SecretKey,
    table: Table,
    local: Arc<LocalTable>,
    endpoint: Endpoint,
    fabric: Fabric,
}

fn start(
    admin: &SecretKey,
    seed: u8,
    site: &str,
    bootstrap: Vec<std::net::SocketAddr>,
    dir: &std::path::Path,
) -> Node {
    let key = SecretKey::from_seed([seed; 32]);
    let cert = MembershipCert::issue(
        admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: key.public(),
            placement: Placement {
                site: site.into(),
                region: site.into(),
                jurisdiction: String::new(),
            },
            roles: Role::defaults(),
            issued_at: 0,
            expires_at: u64::MAX,
        },
    );
    let endpoint = Endpoint::bind(EndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        key: key.clone(),
        membership: Some(cert.clone()),
        trust: Arc::new(Trust::new(admin.public())),
        accept_guests: false,
        wan: None,
    })
    .unwrap();
    let mut cfg = FabricConfig::new(
        key.clone(),
        cert,
        endpoint.local_addr().unwrap(),
        weft_net::now_ms(),
    );
    cfg.bootstrap = bootstrap;
    let fabric = Fabric::start(endpoint.clone(), cfg);
    let local = Arc::new(LocalTable::open(&dir.join(format!("meta-{seed}.redb"))).unwrap());
    // Anti-entropy is driven by hand in these tests.
    let table = Table::start(
        endpoint.clone(),
        fabric.clone(),
        local.clone(),
        key.clone(),
        rules(),
        Duration::from_secs(3600),
    );
    Node {
        key,
        table,
        local,
        endpoint,
        fabric,
    }
}

async fn cluster(n: u8, dir: &std::path::Path) -> Vec<Node> {
    let admin = SecretKey::from_seed([200; 32]);
    let first = start(&admin, 1, "s1", vec![], dir);
    let seed = first.endpoint.local_addr().unwrap();
    let mut nodes = vec![first];
    for i in 2..=n {
        nodes.push(start(
            &admin,
            i,
            &format!("s{}", (i - 1) % 3 + 1),
            vec![seed],
            dir,
        ));
    }
    let t = Instant::now();
    while !nodes.iter().all(|node| {
        let m = node.fabric.members();
        m.len() == n as usize
            && m.iter()
                .all(|s| s.state == MemberState::Alive && s.uptime.is_some())
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

fn value(e: &Option<Row<String>>) -> Option<String> {
    e.clone().and_then(|r| r.known())
}

fn raw(e: &Option<Entry>) -> Option<Vec<u8>> {
    e.as_ref()
        .and_then(|e| e.value.clone())
        .map(|v| v[1..].to_vec())
}

fn enc(s: &str) -> Vec<u8> {
    weft_core::wire::encode(&s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_and_reads_from_any_node_survive_a_replica_loss() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(5, dir.path()).await;
    nodes[0]
        .table
        .put::<Kv>(&nodes[0].key, "bucket-a", "k1", Some(&"v1".into()))
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(
            value(&n.table.get::<Kv>("bucket-a", "k1").await.unwrap()),
            Some("v1".into())
        );
    }
    // Stop one replica of the partition: writes and reads still reach a majority.
    let p = weft_meta::ring::partition_of(b"kv/bucket-a");
    let reps = nodes[0].table.replicas_of(p);
    let down = nodes.iter().position(|n| n.fabric.id() == reps[0]).unwrap();
    nodes[down].endpoint.shutdown().await;
    let writer = nodes
        .iter()
        .enumerate()
        .find(|(i, _)| *i != down)
        .unwrap()
        .1;
    writer
        .table
        .put::<Kv>(&writer.key, "bucket-a", "k1", Some(&"v2".into()))
        .await
        .unwrap();
    writer
        .table
        .put::<Kv>(&writer.key, "bucket-a", "k2", None)
        .await
        .unwrap();
    let reader = nodes
        .iter()
        .enumerate()
        .rfind(|(i, _)| *i != down)
        .unwrap()
        .1;
    assert_eq!(
        value(&reader.table.get::<Kv>("bucket-a", "k1").await.unwrap()),
        Some("v2".into())
    );
    let listed: Vec<String> = reader
        .table
        .list::<Kv>("bucket-a", "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, vec!["k1"], "a deleted row must not be listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_converge_to_one_value_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(4, dir.path()).await;
    let writes = nodes.iter().enumerate().map(|(i, n)| {
        let (t, key) = (n.table.clone(), n.key.clone());
        async move {
            t.put::<Kv>(&key, "shared", "key", Some(&format!("from-{i}")))
                .await
                .unwrap()
        }
    });
    let stamps: Vec<Timestamp> = futures_join(writes).await;
    let winner = stamps
        .iter()
        .enumerate()
        .max_by_key(|(_, t)| **t)
        .unwrap()
        .0;
    for n in &nodes {
        n.table.sync_once().await;
    }
    let p = weft_meta::ring::partition_of(b"kv/shared");
    for n in &nodes {
        if nodes[0].table.replicas_of(p).contains(&n.fabric.id()) {
            assert_eq!(
                raw(&n.local.get("kv/shared", "key").unwrap()),
                Some(enc(&format!("from-{winner}"))),
                "replica disagrees"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_diverged_during_a_partition_converge_after_healing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, dir.path()).await;
    // During a partition each side accepted different writes (applied straight to replicas).
    let ts = |wall, n: &Node| Timestamp {
        wall,
        logical: 0,
        node: n.fabric.id(),
    };
    let item = |n: &Node, sk: &str, v: &str, t| {
        let mut value = vec![1];
        value.extend(enc(v));
        Item {
            pk: "kv/b".into(),
            sk: sk.into(),
            entry: Entry::sign(&n.key, "kv/b", sk, t, Some(value)),
        }
    };
    let anyone = |_: &Item, _: Option<&Entry>| Ok(());
    let n = &nodes;
    n[0].local
        .merge(
            &[
                item(&n[0], "x", "left", ts(10, &n[0])),
                item(&n[0], "only-left", "1", ts(11, &n[0])),
            ],
            &anyone,
        )
        .unwrap();
    n[1].local
        .merge(
            &[
                item(&n[1], "x", "right", ts(20, &n[1])),
                item(&n[1], "only-right", "2", ts(12, &n[1])),
            ],
            &anyone,
        )
        .unwrap();
    n[2].local
        .merge(&[item(&n[2], "x", "old", ts(5, &n[2]))], &anyone)
        .unwrap();
    // Healed: anti-entropy runs until every replica holds the same rows.
    let p = weft_meta::ring::partition_of(b"kv/b");
    let t = Instant::now();
    while !(nodes
        .iter()
        .all(|n| n.local.digest(p).unwrap() == nodes[0].local.digest(p).unwrap()))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "replicas did not converge"
        );
        for n in &nodes {
            n.table.sync_once().await;
        }
    }
    for n in &nodes {
        assert_eq!(raw(&n.local.get("kv/b", "x").unwrap()), Some(enc("right")));
        assert_eq!(n.local.list("kv/b", "only").unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_are_exclusive_and_concurrent_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(4, dir.path()).await;
    // Create-if-absent: of four concurrent creators, exactly one wins.
    let creates = nodes.iter().enumerate().map(|(i, n)| {
        let (t, key) = (n.table.clone(), n.key.clone());
        async move {
            t.create::<Names>(&key, &(), "photos", &format!("from-{i}"))
                .await
        }
    });
    let results = futures_join(creates).await;
    let won: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(MetaError::Conflict))),
        "{results:?}"
    );
    for n in &nodes {
        n.table.sync_once().await;
    }
    for n in &nodes {
        let row = n.table.get::<Names>(&(), "photos").await.unwrap();
        assert_eq!(
            row.and_then(|r| r.known()),
            Some(format!("from-{}", won[0]))
        );
    }
    // The claim holds against another key, live or deleting, and its holder can give it up.
    let (holder, other) = (&nodes[won[0]], &nodes[(won[0] + 1) % 4]);
    assert!(
        other
            .table
            .put::<Names>(&other.key, &(), "photos", None)
            .await
            .is_err()
    );
    holder
        .table
        .put::<Names>(&holder.key, &(), "photos", None)
        .await
        .unwrap();
    other
        .table
        .create::<Names>(&other.key, &(), "photos", &"mine now".into())
        .await
        .unwrap();
    // Read-modify-write from every node at once: every node's addition survives.
    let updates = nodes.iter().enumerate().flat_map(|(i, n)| {
        (0..5u32).map(move |j| {
            let (t, key) = (n.table.clone(), n.key.clone());
            let v = i as u32 * 100 + j;
            async move {
                t.update::<Counter>(&key, "c", "set", |cur| {
                    let mut set = cur.unwrap_or_default();
                    set.insert(v);
                    Some(Some(set))
                })
                .await
                .unwrap()
            }
        })
    });
    futures_join(updates.collect::<Vec<_>>().into_iter()).await;
    let set = nodes[3]
        .table
        .get::<Counter>("c", "set")
        .await
        .unwrap()
        .unwrap()
        .known()
        .unwrap();
    assert_eq!(set.len(), 20, "{set:?}");
}

async fn futures_join<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
