//! A node's lifecycle in process: `Node::shutdown` ends every task of the node, frees its UDP
//! port and closes its databases, so the same data directory starts again in the same process
//! (same address, same id, same shards).

use std::time::Duration;

use weft_cluster::{Builder, wait};
use weft_node::{Node, NodeSettings};
use weft_store::{Residency, ShardStore};

const DISK: u64 = 1 << 30;

fn all_alive(nodes: &[&Node], n: usize) -> bool {
    nodes
        .iter()
        .all(|node| weft_cluster::inproc::all_alive(node, n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_task() {
    let cluster = Builder::new(3)
        .heal(|h| h.grace = Duration::from_secs(60))
        .start()
        .await;
    let restart = cluster.settings(2);
    let (_tmp, dirs, mut nodes) = cluster.into_parts();
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
    let node = Node::start(NodeSettings {
        listen: addr,
        ..restart
    })
    .await
    .unwrap();
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
