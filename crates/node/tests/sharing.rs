//! A bucket shared with another account: the grant's session works through any node, and once
//! the owner revokes it every node refuses it — also to a client that kept the session.

mod common;

use std::time::{Duration, Instant};

use common::cluster;
use weft_core::SecretKey;
use weft_node::{Access, BucketError, Grant};
use weft_store::Residency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_refused_by_every_node_even_to_a_client_that_kept_it() {
    let (_tmp, _dirs, nodes) = cluster(4, Duration::from_secs(3600)).await;
    let alice = SecretKey::from_seed([11; 32]);
    let bob = SecretKey::from_seed([12; 32]);
    let owner = nodes[0].buckets_as(Access::account(alice.clone()));
    owner
        .create("team", Residency::default(), None, 1)
        .await
        .unwrap();
    owner.put("team", "plan", &b"the plan"[..]).await.unwrap();
    let grant = Grant::new(&alice, "team", bob.public(), true, weft_net::now_ms()).unwrap();
    owner.put_grant("team", &grant).await.unwrap();
    // Bob's client opens the grant and keeps the session.
    let session = grant.open(&bob, &alice.public(), "team").unwrap();
    let now = weft_net::now_ms();
    for n in &nodes {
        let as_bob = n.buckets_as(session.access(now).unwrap());
        let mut out = Vec::new();
        as_bob.get("team", "plan", &mut out).await.unwrap();
        assert_eq!(out, b"the plan");
        as_bob.put("team", "by-bob", &b"x"[..]).await.unwrap();
        // What only the owner may do.
        let other = Grant::new(&bob, "team", alice.public(), false, now).unwrap();
        assert!(matches!(
            as_bob.put_grant("team", &other).await,
            Err(BucketError::Shared(..))
        ));
        assert!(matches!(
            as_bob.delete_bucket("team").await,
            Err(BucketError::Shared(..))
        ));
    }
    // Nor can it through the table directly (as a modified node would): replicas refuse a
    // bucket-scoped delegation on the bucket's claim and its grants.
    let signer = weft_meta::Signer::delegated(
        SecretKey::from_seed(session.delegate.unwrap()),
        session.via.clone(),
    );
    let carol = SecretKey::from_seed([13; 32]);
    let forged = Grant::new(&alice, "team", carol.public(), true, now).unwrap();
    let bucket = weft_node::schema::BucketId {
        owner: alice.public(),
        name: "team".into(),
    };
    let refused = nodes[1]
        .table()
        .put::<weft_node::schema::Grants>(&signer, &bucket, &forged.delegate, Some(&forged))
        .await;
    assert!(refused.is_err(), "a grantee wrote a grant row");
    let refused = nodes[1]
        .table()
        .put::<weft_node::schema::Buckets>(&signer, &(), "team", None)
        .await;
    assert!(refused.is_err(), "a grantee deleted the bucket's claim");
    assert_eq!(owner.grants("team").await.unwrap().len(), 1);
    owner.revoke_grant("team", &bob.public()).await.unwrap();
    let start = Instant::now();
    for n in &nodes {
        let as_bob = n.buckets_as(session.access(now).unwrap());
        loop {
            match as_bob.object("team", "plan").await {
                Err(BucketError::Revoked(_)) => break,
                Ok(_) => assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "a node still honours a revoked grant"
                ),
                Err(e) => panic!("unexpected refusal: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(matches!(
            as_bob.put("team", "again", &b"y"[..]).await,
            Err(BucketError::Revoked(_))
        ));
    }
    println!(
        "revocation honoured by every node after {:.2} s",
        start.elapsed().as_secs_f64()
    );
    // The owner's own access is untouched.
    let mut out = Vec::new();
    owner.get("team", "by-bob", &mut out).await.unwrap();
    assert_eq!(out, b"x");
    assert!(owner.revoke_grant("team", &bob.public()).await.is_err());
    // A bucket deleted and made again starts shared with no one.
    let again = Grant::new(&alice, "team", bob.public(), false, now).unwrap();
    owner.put_grant("team", &again).await.unwrap();
    owner.delete("team", "plan").await.unwrap();
    owner.delete("team", "by-bob").await.unwrap();
    owner.delete_bucket("team").await.unwrap();
    owner
        .create("team", Residency::default(), None, 1)
        .await
        .unwrap();
    assert!(owner.grants("team").await.unwrap().is_empty());
}
