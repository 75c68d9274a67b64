//! The in-process fabric the node tests share: real nodes on loopback QUIC, admitted by
//! invite, with healing checks driven by hand.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_core::Placement;
use weft_fabric::{MemberState, SwimTiming};
use weft_node::{DataDir, InviteRequest, Node, NodeSettings};

/// Settings of a test node: healing checks and scrubbing only when a test runs them.
pub fn settings(dir: &std::path::Path, gc_delay: Duration) -> NodeSettings {
    NodeSettings {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        labels: Default::default(),
        capacity: weft_core::Capacity {
            cpus: 1,
            mem_bytes: 1 << 30,
            disk_bytes: 1 << 30,
        },
        wan: None,
        timing: SwimTiming::default(),
        heal: weft_node::HealConfig {
            grace: Duration::from_secs(1),
            // Checks are driven by hand here.
            interval: Duration::from_secs(3600),
            scrub_interval: Duration::from_secs(3600),
            gc_delay,
            ..Default::default()
        },
    }
}

pub async fn cluster(n: usize, gc_delay: Duration) -> (tempfile::TempDir, Vec<PathBuf>, Vec<Node>) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut dirs, mut nodes): (Vec<PathBuf>, Vec<Node>) = (Vec::new(), Vec::new());
    for i in 0..n {
        let placement = Placement {
            site: format!("s{}", i % 3),
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
        nodes.push(Node::start(settings(&path, gc_delay)).await.unwrap());
        dirs.push(path);
    }
    wait("cluster formed", 20, || {
        nodes.iter().all(|node| {
            let m = node.members();
            m.len() == n && m.iter().all(|s| s.state == MemberState::Alive)
        })
    })
    .await;
    (tmp, dirs, nodes)
}

pub async fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
