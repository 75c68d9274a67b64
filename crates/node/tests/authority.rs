//! `[wan]` Authorization on the fast paths: every node keeps what authorizes a request (access
//! keys, grants, bucket records) for at most a few seconds before reading it again, so a request
//! costs no round trip most of the time. These tests hold the promises that make that safe: a
//! revoked key or grant stops working on every node within 3 s of the revocation's answer, and
//! a node that cannot hear the fabric refuses once what it knew is that old, rather than
//! serving on stale authority.

use std::time::{Duration, Instant};

use weft_cluster::Builder;
use weft_core::{Scope, SecretKey};
use weft_data::{Access, Acting, BucketError, Grant, Session};
use weft_node::Node;
use weft_store::Residency;

/// What the revocation promise allows: a node trusts its last look for this long.
const PROMISE: Duration = Duration::from_secs(3);

struct Shared {
    alice: SecretKey,
    key: String,
    bob: Session,
    grantee: weft_core::NodeId,
}

/// Alice's bucket `team` with one object, an access key of hers, and a grant of the bucket to
/// Bob (whose client keeps the session it opened).
async fn share(owner: &Acting) -> Shared {
    let alice = SecretKey::from_seed([11; 32]);
    let bob = SecretKey::from_seed([12; 32]);
    assert_eq!(owner.account(), alice.public());
    owner
        .create_bucket("team", Residency::default(), None, 1)
        .await
        .unwrap();
    owner
        .objects()
        .put("team", "plan", &b"the plan"[..])
        .await
        .unwrap();
    let session = Session::new(
        &alice,
        Scope::Account,
        true,
        weft_net::now_ms(),
        600_000,
        &[],
    )
    .to_text();
    let key = owner
        .keys()
        .create(None, true, true, session)
        .await
        .unwrap()
        .id;
    let grant = Grant::new(&alice, "team", bob.public(), false, weft_net::now_ms()).unwrap();
    owner.grants().put("team", &grant).await.unwrap();
    let grantee = bob.public();
    let bob = grant.open(&bob, &alice.public(), "team").unwrap();
    Shared {
        alice,
        key,
        bob,
        grantee,
    }
}

/// Whether `node` serves the key and the grant now (and the node's view of them).
async fn serves(node: &Node, s: &Shared) -> (bool, Result<(), BucketError>) {
    let key = node.data().access_key(&s.key).await.is_some();
    let as_bob = node
        .data()
        .acting(s.bob.access(weft_net::now_ms()).unwrap());
    let mut out = Vec::new();
    let read = as_bob.objects().get("team", "plan", &mut out).await;
    if read.is_ok() {
        assert_eq!(out, b"the plan");
    }
    (key, read.map(|_| ()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_and_grants_are_refused_on_every_node_within_three_seconds() {
    let c = Builder::new(4).start().await;
    let owner = c.account(0, 11);
    let s = share(&owner).await;
    // Every node has looked at both (so each serves them from what it knows).
    for n in &c.nodes {
        let (key, read) = serves(n, &s).await;
        assert!(key, "node {} does not know the key", n.id());
        read.unwrap();
    }
    owner.keys().remove(&s.key).await.unwrap();
    let removed = Instant::now();
    owner.grants().revoke("team", &s.grantee).await.unwrap();
    let revoked = Instant::now();
    tokio::time::sleep_until((removed + PROMISE).into()).await;
    for n in &c.nodes {
        assert!(
            n.data().access_key(&s.key).await.is_none(),
            "node {} honours a removed key 3 s after its removal",
            n.id()
        );
    }
    tokio::time::sleep_until((revoked + PROMISE).into()).await;
    for n in &c.nodes {
        let (_, read) = serves(n, &s).await;
        assert!(
            matches!(read, Err(BucketError::Revoked(_))),
            "node {} answers a revoked grant 3 s after its revocation: {read:?}",
            n.id()
        );
    }
    // The owner's own access is untouched.
    let mut out = Vec::new();
    c.nodes[3]
        .data()
        .acting(Access::account(s.alice.clone()))
        .objects()
        .get("team", "plan", &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"the plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_fabric_refuses_rather_than_serving_stale_authority() {
    let regions = ["eu", "eu", "us", "us", "ap", "ap"];
    let c = Builder::regions(&regions)
        .wan(weft_net::WanConfig::default())
        .start()
        .await;
    // Builder::regions puts node i in site `<region>-<i % 2>`: node 5 is alone in `ap-1`.
    let sites: Vec<String> = (0..regions.len())
        .map(|i| format!("{}-{}", regions[i], i % 2))
        .collect();
    let lonely = 5;
    let owner = c.account(0, 11);
    let s = share(&owner).await;
    let (key, read) = serves(&c.nodes[lonely], &s).await;
    assert!(key);
    read.unwrap();
    let mut cut = weft_net::WanConfig::default();
    for other in sites.iter().filter(|x| **x != sites[lonely]) {
        let lost = weft_net::wan::LinkSpec {
            loss: 1.0,
            ..Default::default()
        };
        cut.links.push((sites[lonely].clone(), other.clone(), lost));
    }
    for n in &c.nodes {
        n.set_wan(cut.clone()).unwrap();
    }
    let cut_at = Instant::now();
    tokio::time::sleep_until((cut_at + PROMISE).into()).await;
    // Cut off for longer than it trusts what it knew: it refuses the key, the grant and even
    // the owner's own session on the bucket (it cannot know the bucket is still hers).
    let (key, read) = serves(&c.nodes[lonely], &s).await;
    assert!(!key, "a cut-off node still honours an access key");
    assert!(read.is_err(), "a cut-off node still honours a grant");
    let as_alice = c.nodes[lonely]
        .data()
        .acting(Access::account(s.alice.clone()));
    let mut out = Vec::new();
    assert!(
        as_alice
            .objects()
            .get("team", "plan", &mut out)
            .await
            .is_err(),
        "a cut-off node still serves on a bucket record it cannot check"
    );
    // Once it counts the others dead, every replica set it computes is itself: it must still
    // refuse (it holds rows of its own, and they may be revoked on the other side).
    let since = Instant::now();
    while c.nodes[lonely]
        .fabric()
        .members()
        .iter()
        .any(|m| !m.is_self && m.in_ring())
    {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the cut-off node never counted the others dead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (key, read) = serves(&c.nodes[lonely], &s).await;
    assert!(!key, "a node alone honours an access key");
    assert!(read.is_err(), "a node alone honours a grant");
    assert!(
        as_alice
            .objects()
            .get("team", "plan", &mut out)
            .await
            .is_err(),
        "a node alone serves on a bucket record it cannot check"
    );
    // The rest of the fabric serves both all along.
    let (key, read) = serves(&c.nodes[2], &s).await;
    assert!(key);
    read.unwrap();
    // Healed, the node serves them again.
    for n in &c.nodes {
        n.set_wan(weft_net::WanConfig::default()).unwrap();
    }
    let healed = Instant::now();
    loop {
        let (key, read) = serves(&c.nodes[lonely], &s).await;
        if key && read.is_ok() {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "a healed node never served again: key {key}, read {read:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
