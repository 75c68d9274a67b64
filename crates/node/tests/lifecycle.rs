//! A node's lifecycle in process: `Node::shutdown` ends every task of the node, frees its UDP
//! port and closes its databases, so the same data directory starts again in the same process
//! (same address, same id, same shards).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_core::Placement;
use weft_fabric::{MemberState, SwimTiming};
use weft_node::{DataDir, InviteRequest, Node, NodeSettings};
use weft_store::{Residency, ShardStore};

const DISK: u64 = 1 << 30;

fn settings(dir: &Path, listen: SocketAddr) -> NodeSettings {
    NodeSettings {
        data_dir: dir.to_path_buf(),
        listen,
        advertise: None,
        labels: Default::default(),
        capacity: weft_core::Capacity {
            cpus: 1,
            mem_bytes: 1 << 30,
            disk_bytes: DISK,
        },
        wan: None,
        timing: SwimTiming::default(),
        heal: weft_node::HealConfig {
            grace: Duration::from_secs(60),
            interval: Duration::from_secs(3600),
            scrub_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    }
}

async fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_alive(nodes: &[&Node], n: usize) -> bool {
    nodes.iter().all(|node| {
        let m = node.members();
        m.len() == n && m.iter().all(|s| s.state == MemberState::Alive)
    })
}

async fn cluster(n: usize) -> (tempfile::TempDir, Vec<PathBuf>, Vec<Node>) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut dirs, mut nodes): (Vec<PathBuf>, Vec<Node>) = (Vec::new(), Vec::new());
    for i in 0..n {
        let placement = Placement {
            site: format!("s{i}"),
            region: "eu".into(),
            jurisdiction: "DE".into(),
        };
        let path = tmp.path().join(format!("n{i}"));
        let dir = DataDir::open(&path).unwrap();
        if i == 0 {
            weft_node::init_fabric(&dir, placement, weft_net::now_ms()).unwrap();
        } else {
            let invite = nodes[0]
                .invite(InviteRequest {
                    placement,
                    roles: vec![],
                    ttl: Duration::from_secs(60),
                })
                .unwrap();
            let key = dir.node_key().unwrap();
            let cert = weft_node::redeem(&invite, &key, Placement::default())
                .await
                .unwrap();
            dir.save_membership(&invite.body.admin, &invite.body.bootstrap, &cert)
                .unwrap();
        }
        let listen = "127.0.0.1:0".parse().unwrap();
        nodes.push(Node::start(settings(&path, listen)).await.unwrap());
        dirs.push(path);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait("cluster did not form", 20, || all_alive(&refs, n)).await;
    (tmp, dirs, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_task() {
    let (_tmp, dirs, mut nodes) = cluster(3).await;
    let bytes: Vec<u8> = (0..(5 << 20)).map(|i: usize| (i * 7 % 253) as u8).collect();
    let (cap, _) = nodes[0]
        .storage()
        .put(&bytes[..], Residency::default(), None)
        .await
        .unwrap();
    let victim = nodes.remove(2);
    let (id, addr, dir) = (victim.id(), victim.addr(), dirs[2].clone());
    let held = victim.storage().local().list().unwrap();
    assert!(!held.is_empty(), "the victim holds shards of the object");
    assert!(victim.live_tasks() > 0);

    victim.shutdown().await;
    // (a) No task of the node is left.
    assert_eq!(victim.live_tasks(), 0, "tasks outlived Node::shutdown");
    // (b) Its UDP port is free...
    drop(std::net::UdpSocket::bind(addr).expect("the node's UDP port is still bound"));
    // ... and, once the handle is dropped, its databases are closed.
    drop(victim);
    let meta = weft_meta::LocalTable::open(&dir.join("meta.redb"))
        .expect("meta.redb is still open after shutdown");
    let store = ShardStore::open(&dir.join("store"), DISK)
        .expect("shards.redb is still open after shutdown");
    assert_eq!(store.list().unwrap().len(), held.len());
    drop((meta, store));

    // (c) It starts again on the same directory and address, as the same node with its data.
    let node = Node::start(settings(&dir, addr)).await.unwrap();
    assert_eq!(node.id(), id);
    assert_eq!(node.addr(), addr);
    assert_eq!(node.storage().local().list().unwrap().len(), held.len());
    let generation = node.fabric().record(&id).unwrap().body.generation;
    let everyone = [&nodes[0], &nodes[1], &node];
    wait("the restarted node did not rejoin", 20, || {
        all_alive(&everyone, 3)
            && everyone.iter().all(|n| {
                n.fabric()
                    .record(&id)
                    .is_some_and(|r| r.body.generation == generation)
            })
    })
    .await;
    let mut out = Vec::new();
    node.storage().get(&cap, &mut out).await.unwrap();
    assert!(
        out == bytes,
        "the object did not read back through the restarted node"
    );

    node.shutdown().await;
    assert_eq!(node.live_tasks(), 0);
    for n in &nodes {
        n.shutdown().await;
        assert_eq!(n.live_tasks(), 0);
    }
}
