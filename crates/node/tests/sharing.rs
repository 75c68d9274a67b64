//! A bucket shared with another account: the grant's session works through any node, and once
//! the owner revokes it every node refuses it — also to a client that kept the session.

use std::time::{Duration, Instant};

use weft_cluster::cluster;
use weft_core::SecretKey;
use weft_data::{Access, BucketError, Grant};
use weft_store::Residency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_refused_by_every_node_even_to_a_client_that_kept_it() {
    let (_tmp, _dirs, nodes) = cluster(4, Duration::from_secs(3600)).await;
    let alice = SecretKey::from_seed([11; 32]);
    let bob = SecretKey::from_seed([12; 32]);
    let owner = nodes[0].data().acting(Access::account(alice.clone()));
    owner
        .create_bucket("team", Residency::default(), None, 1)
        .await
        .unwrap();
    owner
        .objects()
        .put("team", "plan", &b"the plan"[..])
        .await
        .unwrap();
    let grant = Grant::new(&alice, "team", bob.public(), true, weft_net::now_ms()).unwrap();
    owner.grants().put("team", &grant).await.unwrap();
    // Bob's client opens the grant and keeps the session.
    let session = grant.open(&bob, &alice.public(), "team").unwrap();
    let now = weft_net::now_ms();
    for n in &nodes {
        let as_bob = n.data().acting(session.access(now).unwrap());
        let mut out = Vec::new();
        as_bob
            .objects()
            .get("team", "plan", &mut out)
            .await
            .unwrap();
        assert_eq!(out, b"the plan");
        as_bob
            .objects()
            .put("team", "by-bob", &b"x"[..])
            .await
            .unwrap();
        // What only the owner may do.
        let other = Grant::new(&bob, "team", alice.public(), false, now).unwrap();
        assert!(matches!(
            as_bob.grants().put("team", &other).await,
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
    let bucket = weft_data::schema::BucketId {
        owner: alice.public(),
        name: "team".into(),
        regions: Vec::new(),
    };
    let refused = nodes[1]
        .table()
        .put::<weft_data::schema::Grants>(&signer, &bucket, &forged.delegate, Some(&forged))
        .await;
    assert!(refused.is_err(), "a grantee wrote a grant row");
    let refused = nodes[1]
        .table()
        .put::<weft_data::schema::Buckets>(&signer, &(), "team", None)
        .await;
    assert!(refused.is_err(), "a grantee deleted the bucket's claim");
    assert_eq!(owner.grants().list("team").await.unwrap().len(), 1);
    owner.grants().revoke("team", &bob.public()).await.unwrap();
    let start = Instant::now();
    for n in &nodes {
        let as_bob = n.data().acting(session.access(now).unwrap());
        loop {
            match as_bob.objects().object("team", "plan").await {
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
            as_bob.objects().put("team", "again", &b"y"[..]).await,
            Err(BucketError::Revoked(_))
        ));
    }
    println!(
        "revocation honoured by every node after {:.2} s",
        start.elapsed().as_secs_f64()
    );
    // The owner's own access is untouched.
    let mut out = Vec::new();
    owner
        .objects()
        .get("team", "by-bob", &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"x");
    assert!(owner.grants().revoke("team", &bob.public()).await.is_err());
    // A bucket deleted and made again starts shared with no one.
    let again = Grant::new(&alice, "team", bob.public(), false, now).unwrap();
    owner.grants().put("team", &again).await.unwrap();
    owner.objects().delete("team", "plan").await.unwrap();
    owner.objects().delete("team", "by-bob").await.unwrap();
    owner.delete_bucket("team").await.unwrap();
    owner
        .create_bucket("team", Residency::default(), None, 1)
        .await
        .unwrap();
    assert!(owner.grants().list("team").await.unwrap().is_empty());
}
