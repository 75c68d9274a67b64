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

/// An account's own rows: partition `own/<account>`.
struct Own;
impl Schema for Own {
    const KIND: &'static str = "own";
    const WRITER: Writer = Writer::PartitionKey(1);
    const FORMAT: u8 = 1;
    type Part = str;
    type Sort = str;
    type Value = String;
    fn partition(account: &str) -> String {
        account.into()
    }
}

fn rules() -> Rules {
    let mut r = Rules::new();
    r.add(Own::KIND, Own::WRITER);
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

/// [untrusted] 6: a key an account delegated to, once its delegation has expired, stamps rows
/// with a time just before the expiry and writes them straight to the replicas. Replicas judge
/// a delegated row new to them by their own clock: it is refused. A replica that missed a row
/// its fellow replicas took while it was fresh still gets it from anti-entropy; one that only
/// the forger's replica holds, it never takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_delegate_cannot_backdate_rows() {
    use weft_core::{Delegation, Scope};
    use weft_meta::Signer;
    use weft_meta::table::{META, MetaRequest, MetaResponse};
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(3, dir.path()).await;
    let (alice, mallory) = (
        SecretKey::from_seed([50; 32]),
        SecretKey::from_seed([51; 32]),
    );
    let pk = format!("own/{}", alice.public().to_hex());
    let now = weft_net::now_ms();
    let row = |via: &Delegation, sk: &str, wall: u64| Item {
        pk: pk.clone(),
        sk: sk.into(),
        entry: Entry::sign(
            Signer::delegated(mallory.clone(), via.clone()),
            &pk,
            sk,
            Timestamp {
                wall,
                logical: 0,
                node: mallory.public(),
            },
            Some(enc("forged")),
        ),
    };
    let expired = Delegation::sign(&alice, mallory.public(), Scope::Account, now - 120_000);
    let backdated = row(&expired, "late", now - 121_000);
    for (i, n) in nodes.iter().enumerate() {
        let addr = n.endpoint.local_addr().unwrap();
        let answer = META
            .call(
                &nodes[(i + 1) % nodes.len()].endpoint,
                n.fabric.id(),
                addr,
                &MetaRequest::Write(vec![backdated.clone()]),
            )
            .await
            .unwrap();
        match answer {
            MetaResponse::Error(e) => assert!(e.contains("stamped"), "{e}"),
            other => panic!("a backdated row was taken: {other:?}"),
        }
    }
    assert!(value(&nodes[1].table.get::<Own>(&pk[4..], "late").await.unwrap()).is_none());

    // A row written in time (its delegation still good) that one replica missed: the other two
    // took it while it was fresh, so anti-entropy hands it on, however old it is now.
    let good = Delegation::sign(&alice, mallory.public(), Scope::Account, u64::MAX);
    let anything = |_: &Item, _: Option<&Entry>| Ok(());
    let missed = row(&good, "missed", now - 300_000);
    nodes[0]
        .local
        .merge(std::slice::from_ref(&missed), &anything)
        .unwrap();
    nodes[1]
        .local
        .merge(std::slice::from_ref(&missed), &anything)
        .unwrap();
    // A backdated row only one replica holds (the forger's, say).
    let lonely = row(&good, "lonely", now - 300_000);
    nodes[0]
        .local
        .merge(std::slice::from_ref(&lonely), &anything)
        .unwrap();
    for _ in 0..6 {
        for n in &nodes {
            n.table.sync_once().await;
        }
    }
    assert_eq!(
        nodes[2].local.get(&pk, "missed").unwrap(),
        Some(missed.entry.clone())
    );
    assert!(nodes[2].local.get(&pk, "lonely").unwrap().is_none());
    assert!(nodes[1].local.get(&pk, "lonely").unwrap().is_none());
}
