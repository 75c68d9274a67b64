//! The replicated table across in-process nodes: quorum, concurrent writers, divergence healed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_core::{CertBody, FabricId, MembershipCert, Placement, Role, SecretKey};
use weft_fabric::{Fabric, FabricConfig, MemberState};
use weft_meta::{Entry, Item, LocalTable, Table, Timestamp};
use weft_net::{Endpoint, EndpointConfig, Trust};

struct Node {
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
        key,
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
        Duration::from_secs(3600),
    );
    Node {
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
                .all(|s| s.state == MemberState::Alive && s.uptime_secs.is_some())
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

fn value(e: &Option<Entry>) -> Option<Vec<u8>> {
    e.as_ref().and_then(|e| e.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_and_reads_from_any_node_survive_a_replica_loss() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(5, dir.path()).await;
    nodes[0]
        .table
        .put("bucket-a", "k1", Some(b"v1".to_vec()))
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(
            value(&n.table.get("bucket-a", "k1").await.unwrap()),
            Some(b"v1".to_vec())
        );
    }
    // Stop one replica of the partition: writes and reads still reach a majority.
    let p = weft_meta::ring::partition_of(b"bucket-a");
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
        .put("bucket-a", "k1", Some(b"v2".to_vec()))
        .await
        .unwrap();
    writer.table.put("bucket-a", "k2", None).await.unwrap();
    let reader = nodes
        .iter()
        .enumerate()
        .rfind(|(i, _)| *i != down)
        .unwrap()
        .1;
    assert_eq!(
        value(&reader.table.get("bucket-a", "k1").await.unwrap()),
        Some(b"v2".to_vec())
    );
    let listed: Vec<String> = reader
        .table
        .list("bucket-a", "")
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
        let t = n.table.clone();
        async move {
            t.put("shared", "key", Some(format!("from-{i}").into_bytes()))
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
    let p = weft_meta::ring::partition_of(b"shared");
    for n in &nodes {
        if nodes[0].table.replicas_of(p).contains(&n.fabric.id()) {
            assert_eq!(
                value(&n.local.get("shared", "key").unwrap()),
                Some(format!("from-{winner}").into_bytes()),
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
    let item = |sk: &str, v: &str, t| Item {
        pk: "b".into(),
        sk: sk.into(),
        entry: Entry {
            ts: t,
            value: Some(v.as_bytes().to_vec()),
        },
    };
    nodes[0]
        .local
        .merge(&[
            item("x", "left", ts(10, &nodes[0])),
            item("only-left", "1", ts(11, &nodes[0])),
        ])
        .unwrap();
    nodes[1]
        .local
        .merge(&[
            item("x", "right", ts(20, &nodes[1])),
            item("only-right", "2", ts(12, &nodes[1])),
        ])
        .unwrap();
    nodes[2]
        .local
        .merge(&[item("x", "old", ts(5, &nodes[2]))])
        .unwrap();
    // Healed: anti-entropy runs until every replica holds the same rows.
    let p = weft_meta::ring::partition_of(b"b");
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
        assert_eq!(
            value(&n.local.get("b", "x").unwrap()),
            Some(b"right".to_vec())
        );
        assert_eq!(n.local.list("b", "only").unwrap().len(), 2);
    }
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
