//! Self-healing across an in-process fabric of real nodes: a lost node's shards are rebuilt
//! elsewhere after the grace period; shards deleted or corrupted on disk are found (presence
//! checks, scrubbing) and rebuilt; reads keep working throughout and after.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_cluster::{cluster, data, wait};
use weft_core::{ContentHash, NodeId};
use weft_fabric::MemberState;
use weft_node::Node;
use weft_store::{Capability, Manifest, Residency};

/// Run every live node's check until `done` holds (each node owns some catalog partitions).
async fn heal_until(nodes: &[&Node], what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    loop {
        for n in nodes {
            n.healer().check_once().await;
        }
        if done().await {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether every shard of the object is on a live node that has it.
async fn fully_redundant(reader: &Node, cap: &Capability, alive: &[NodeId]) -> bool {
    let Ok(m): Result<Manifest, _> = reader.storage().manifest_now(cap).await else {
        return false;
    };
    for seg in &m.segments {
        for (i, h) in seg.holders.iter().enumerate() {
            if !alive.contains(h) {
                return false;
            }
            match reader
                .storage()
                .has_shards(*h, vec![seg.info.shards[i]])
                .await
            {
                Ok(v) if v == [true] => {}
                _ => return false,
            }
        }
    }
    true
}

fn shard_path(dir: &std::path::Path, hash: &ContentHash) -> PathBuf {
    let hex = hash.to_hex();
    dir.join("store/shards").join(&hex[..2]).join(&hex[2..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_deleted_and_corrupt_shards_are_rebuilt() {
    let (_tmp, dirs, nodes) = cluster(7, Duration::from_secs(1)).await;
    let bytes = data((9 << 20) + 4321);
    let (cap, manifest) = nodes[0]
        .storage()
        .put(&bytes[..], Residency::default(), None)
        .await
        .unwrap();
    assert_eq!(manifest.ec.to_string(), "4+2");
    // Held by capability (as the API's anonymous put does), so it is never garbage.
    nodes[0]
        .data()
        .own()
        .retain_capability(&cap.manifest)
        .await
        .unwrap();
    // Kill a node that holds shards (not the writer).
    let victim_id = manifest.segments[0]
        .holders
        .iter()
        .find(|h| **h != nodes[0].id())
        .copied()
        .unwrap();
    let victim = nodes.iter().position(|n| n.id() == victim_id).unwrap();
    nodes[victim].shutdown().await;
    let live: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    let alive: Vec<NodeId> = live.iter().map(|n| n.id()).collect();
    wait("the loss was not noticed", 20, || {
        live.iter().all(|n| {
            n.members()
                .iter()
                .any(|m| m.id == victim_id && m.state != MemberState::Alive)
        })
    })
    .await;
    let reader = live[2];
    heal_until(
        &live,
        "redundancy did not come back after a loss",
        async || fully_redundant(reader, &cap, &alive).await,
    )
    .await;
    let repaired: u64 = live
        .iter()
        .map(|n| n.healer().status().shards_repaired)
        .sum();
    let held = manifest
        .segments
        .iter()
        .flat_map(|s| &s.holders)
        .filter(|h| **h == victim_id)
        .count() as u64;
    assert!(
        repaired >= held,
        "{repaired} shards rebuilt, the lost node held {held}"
    );
    let mut out = Vec::new();
    reader.storage().get(&cap, &mut out).await.unwrap();
    assert!(out == bytes);

    // A shard file deleted behind its holder's back is found by the presence check.
    let m = reader.storage().manifest(&cap).await.unwrap();
    let (seg, shard) = (&m.segments[1], 3);
    let holder = nodes
        .iter()
        .position(|n| n.id() == seg.holders[shard])
        .unwrap();
    std::fs::remove_file(shard_path(&dirs[holder], &seg.info.shards[shard])).unwrap();
    assert!(!fully_redundant(reader, &cap, &alive).await);
    heal_until(&live, "a deleted shard was not rebuilt", async || {
        fully_redundant(reader, &cap, &alive).await
    })
    .await;

    // A bit flipped on disk is found by scrubbing, removed, and rebuilt.
    let m = reader.storage().manifest(&cap).await.unwrap();
    let seg = &m.segments[2];
    let holder = nodes.iter().position(|n| n.id() == seg.holders[0]).unwrap();
    let path = shard_path(&dirs[holder], &seg.info.shards[0]);
    let mut raw = std::fs::read(&path).unwrap();
    raw[10] ^= 0x40;
    std::fs::write(&path, &raw).unwrap();
    let (_, corrupt) = nodes[holder].healer().scrub_once().await;
    assert_eq!(corrupt, 1);
    assert_eq!(nodes[holder].healer().status().scrub_corrupt, 1);
    heal_until(&live, "a corrupt shard was not rebuilt", async || {
        fully_redundant(reader, &cap, &alive).await
    })
    .await;

    // Two more losses (the code's limit) and the object still reads, from repaired shards.
    let mut killed = Vec::new();
    for n in &live[1..] {
        if killed.len() == 2 {
            break;
        }
        if n.id() != reader.id() && n.id() != nodes[0].id() {
            n.shutdown().await;
            killed.push(n.id());
        }
    }
    let mut out = Vec::new();
    if let Err(e) = reader.storage().get(&cap, &mut out).await {
        let m = reader.storage().manifest(&cap).await.unwrap();
        let mut view = String::new();
        for seg in &m.segments {
            let mut has = Vec::new();
            for (i, h) in seg.holders.iter().enumerate() {
                let up = alive.contains(h) && !killed.contains(h);
                let got = if up {
                    match reader.storage().get_shard(*h, seg.info.shards[i]).await {
                        Ok(Some(b)) if ContentHash::of(&b) == seg.info.shards[i] => "ok".into(),
                        Ok(Some(_)) => "corrupt".into(),
                        Ok(None) => "missing".into(),
                        Err(e) => e.to_string(),
                    }
                } else {
                    "down".to_string()
                };
                has.push(format!("{}({got})", &h.to_hex()[..6]));
            }
            view.push_str(&format!(
                "\n  segment {}: {}",
                seg.info.index,
                has.join(" ")
            ));
        }
        panic!("read after two more losses failed: {e}{view}");
    }
    assert!(out == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_of_deleted_overwritten_and_orphaned_objects_comes_back() {
    let delay = Duration::from_secs(3);
    let (_tmp, _dirs, nodes) = cluster(6, delay).await;
    let used = |nodes: &[Node]| -> u64 { nodes.iter().map(|n| n.storage().local().used()).sum() };
    let b = nodes[1].data().own();
    b.create_bucket("trash", Residency::default(), None, 1)
        .await
        .unwrap();
    let baseline = used(&nodes);
    let keep = data(3 << 20);
    b.objects().put("trash", "keep", &keep[..]).await.unwrap();
    let with_keep = used(&nodes);
    // Garbage: an overwritten version, a deleted object, an object never given a name.
    b.objects()
        .put("trash", "over", &data(2 << 20)[..])
        .await
        .unwrap();
    b.objects().put("trash", "over", &b"new"[..]).await.unwrap();
    b.objects()
        .put("trash", "gone", &data(2 << 20)[..])
        .await
        .unwrap();
    b.objects().delete("trash", "gone").await.unwrap();
    nodes[2]
        .storage()
        .put(&data(1 << 20)[..], Residency::default(), None)
        .await
        .unwrap();
    let (over, _) = b
        .objects()
        .put("trash", "copy-src", &data(1 << 20)[..])
        .await
        .unwrap();
    b.objects()
        .link(
            ("trash", "copy-src"),
            &over,
            ("trash", "copy-dst"),
            Default::default(),
        )
        .await
        .unwrap();
    b.objects().delete("trash", "copy-src").await.unwrap();
    let last_write = Instant::now();
    assert!(used(&nodes) > with_keep + (5 << 20));
    // Nothing is collected before the safety delay.
    for n in &nodes {
        n.healer().check_once().await;
    }
    if last_write.elapsed() < delay {
        assert!(used(&nodes) > with_keep + (5 << 20));
    }
    tokio::time::sleep(delay.saturating_sub(last_write.elapsed())).await;
    let start = Instant::now();
    loop {
        for n in &nodes {
            n.healer().check_once().await;
        }
        // What is left: "keep", "over" (3 bytes), the copy (shared with the deleted source).
        let copy = (1 << 20) * 6 / 4 + (1 << 16);
        if used(&nodes) <= with_keep + copy + (1 << 16) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "garbage was not collected: {} bytes over",
            used(&nodes) - with_keep
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let collected: u64 = nodes.iter().map(|n| n.healer().status().gc_objects).sum();
    assert_eq!(
        collected, 3,
        "the old \"over\", \"gone\" and the unnamed object"
    );
    // What is still named reads back; the copy outlives its deleted source.
    let mut out = Vec::new();
    b.objects().get("trash", "keep", &mut out).await.unwrap();
    assert!(out == keep);
    let mut out = Vec::new();
    b.objects()
        .get("trash", "copy-dst", &mut out)
        .await
        .unwrap();
    assert!(out == data(1 << 20));
    assert!(used(&nodes) > baseline);

    // Orphans: a shard no object places anywhere (a write that died before it was
    // registered), and the old copy of a shard repair moved while its holder was away.
    let keep_cap = b.objects().capability("trash", "keep").await.unwrap();
    let m = nodes[1].storage().manifest(&keep_cap).await.unwrap();
    let seg = &m.segments[0];
    let (from, shard) = (seg.holders[0], seg.info.shards[0]);
    // The stray goes to a node whose only orphan it will be (`from` gets another one below).
    let stray_node = nodes.iter().find(|n| n.id() != from).unwrap();
    let stray = data(70_000);
    let stray_hash = ContentHash::of(&stray);
    stray_node
        .storage()
        .local()
        .put(&stray_hash, &stray)
        .unwrap();
    // Six nodes, six shards: the new holder already holds another shard of the segment.
    let to = seg.holders[1];
    let bytes = nodes[1]
        .storage()
        .get_shard(from, shard)
        .await
        .unwrap()
        .unwrap();
    nodes[1]
        .storage()
        .put_shard(to, shard, std::sync::Arc::new(bytes))
        .await
        .unwrap();
    let registry = nodes[0].healer().registry();
    let mut entry = registry.get(&keep_cap.manifest).await.unwrap().unwrap();
    entry.set_moved(seg.info.index, 0, to);
    registry.put(&keep_cap.manifest, &entry).await.unwrap();
    let node = |id: NodeId| nodes.iter().find(|n| n.id() == id).unwrap();
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    // Young shards are never swept, whatever the catalog says.
    assert_eq!(stray_node.healer().sweep_orphans().await.0, 0);
    tokio::time::sleep(delay).await;
    let mut removed = 0;
    for n in &nodes {
        removed += n.healer().sweep_orphans().await.0;
    }
    assert_eq!(removed, 2, "the stray shard and the moved shard's old copy");
    assert!(!stray_node.storage().local().present(&stray_hash).unwrap());
    assert!(!node(from).storage().local().present(&shard).unwrap());
    assert!(node(to).storage().local().present(&shard).unwrap());
    // Everything the catalog places is still where it says, and reads back.
    assert!(fully_redundant(&nodes[2], &keep_cap, &ids).await);
    let mut out = Vec::new();
    b.objects().get("trash", "keep", &mut out).await.unwrap();
    assert!(out == keep);
    let mut out = Vec::new();
    b.objects()
        .get("trash", "copy-dst", &mut out)
        .await
        .unwrap();
    assert!(out == data(1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_fails_audits_is_quarantined_and_its_data_rebuilt_elsewhere() {
    let (_tmp, dirs, nodes) = cluster(8, Duration::from_secs(3600)).await;
    let mut objects = Vec::new();
    for i in 0..5u8 {
        let bytes: Vec<u8> = data((4 << 20) + i as usize * 1000);
        let (cap, _) = nodes[0]
            .storage()
            .put(&bytes[..], Residency::default(), None)
            .await
            .unwrap();
        nodes[0]
            .data()
            .own()
            .retain_capability(&cap.manifest)
            .await
            .unwrap();
        objects.push((cap, bytes));
    }
    // Audits of honest holders pass.
    for n in &nodes {
        n.healer().check_once().await;
    }
    let passed: u64 = nodes
        .iter()
        .map(|n| n.healer().status().audits_passed)
        .sum();
    assert!(passed > 0);
    assert_eq!(
        nodes
            .iter()
            .map(|n| n.healer().status().audits_failed)
            .sum::<u64>(),
        0
    );
    // The cheater keeps its files but their bytes are wrong (bit rot or worse).
    let cheater = (1..nodes.len())
        .max_by_key(|i| nodes[*i].storage().local().used())
        .unwrap();
    let cheater_id = nodes[cheater].id();
    for (hash, _) in nodes[cheater].storage().local().list().unwrap() {
        let path = shard_path(&dirs[cheater], &hash);
        let mut raw = std::fs::read(&path).unwrap();
        raw[0] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
    }
    // Reads never return wrong bytes: the bad shards fail verification and are read around.
    // (The reader is an honest node: it runs checks, so it knows who is quarantined.)
    let reader = nodes
        .iter()
        .find(|n| n.id() != cheater_id && n.id() != nodes[0].id())
        .unwrap();
    for (cap, bytes) in &objects {
        let mut out = Vec::new();
        reader.storage().get(cap, &mut out).await.unwrap();
        assert!(out == *bytes);
    }
    let others: Vec<&Node> = nodes.iter().filter(|n| n.id() != cheater_id).collect();
    let honest: Vec<NodeId> = others.iter().map(|n| n.id()).collect();
    heal_until(
        &others,
        "the cheater was not quarantined and repaired around",
        async || {
            let flagged = others.iter().any(|n| {
                n.healer()
                    .reputation()
                    .iter()
                    .any(|r| r.node == cheater_id.to_hex() && r.quarantined)
            });
            let mut redundant = true;
            for (cap, _) in &objects {
                redundant &= fully_redundant(reader, cap, &honest).await;
            }
            flagged && redundant
        },
    )
    .await;
    // No new shard goes to the quarantined node (from a writer that has judged it);
    // everything still reads.
    reader.healer().check_once().await;
    assert!(reader.storage().quarantined().contains(&cheater_id));
    let (cap, manifest) = reader
        .storage()
        .put(&data(3 << 20)[..], Residency::default(), None)
        .await
        .unwrap();
    assert!(
        manifest
            .segments
            .iter()
            .all(|s| !s.holders.contains(&cheater_id)),
        "a quarantined node got new shards"
    );
    assert!(!cap.holders.contains(&cheater_id));
    for (cap, bytes) in &objects {
        let mut out = Vec::new();
        reader.storage().get(cap, &mut out).await.unwrap();
        assert!(out == *bytes);
    }
}
