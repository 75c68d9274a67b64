//! `[ledger]` The fabric's ledger: receipts every node signs reach one log that every member
//! keeps and cosigns; sequencing moves when the sequencer stops; a member that forges the
//! head or asks witnesses to cosign another history gets no cosignature and stops nothing.

use std::time::Duration;

use weft_cluster::{Builder, Rogue};
use weft_core::{ContentHash, NodeId, SecretKey};
use weft_ledger::schema::{Batch, Head, Heads};
use weft_ledger::{Included, LEDGER_RPC, LedgerAnswer, LedgerAsk, Receipt, Work};
use weft_node::Node;
use weft_tlog::{Checkpoint, Hash, Note, Signer, leaf_hash, verify_consistency, verify_inclusion};

fn account() -> NodeId {
    SecretKey::from_seed([21; 32]).public()
}

fn issue(node: &Node, n: u64) -> Vec<Receipt> {
    (0..n)
        .map(|i| {
            node.ledger()
                .issue(
                    account(),
                    ContentHash::of(format!("request {i}").as_bytes()),
                    Work::Transfer { bytes: 1000 + i },
                )
                .unwrap()
        })
        .collect()
}

/// The included receipt's proof checks against its checkpoint, which a quorum cosigned.
fn check(node: &Node, included: &Included) -> Checkpoint {
    let checkpoint = node
        .ledger()
        .verify_checkpoint(&included.checkpoint)
        .expect("a checkpoint cosigned by a quorum of members");
    assert!(verify_inclusion(
        included.index,
        checkpoint.size,
        &leaf_hash(&included.receipt.to_entry()),
        &included.proof,
        &checkpoint.root
    ));
    checkpoint
}

/// A fabric of `n` whose every node has 3 receipts in a cosigned checkpoint.
async fn with_three_receipts_each(n: usize) -> weft_cluster::Cluster {
    let c = Builder::new(n).start().await;
    for node in &c.nodes {
        issue(node, 3);
    }
    for node in &c.nodes {
        node.ledger()
            .wait_included(2, Duration::from_secs(30))
            .await
            .unwrap();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_of_every_node_reach_one_log_that_every_member_proves() {
    let c = Builder::new(4).start().await;
    for node in &c.nodes {
        issue(node, 25);
    }
    for node in &c.nodes {
        let included = node
            .ledger()
            .wait_included(24, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(included.receipt.body.seq, 24);
        check(node, &included);
    }
    // Every member holds the whole log and proves any node's receipt.
    let ids: Vec<NodeId> = c.nodes.iter().map(Node::id).collect();
    weft_cluster::wait("every replica to prove all 100 receipts", 30, || {
        c.nodes.iter().all(|n| {
            ids.iter()
                .all(|id| n.ledger().receipts_of(id) == 25 && n.ledger().prove(id, 24).is_ok())
        })
    })
    .await;
    for node in &c.nodes {
        for id in &ids {
            let included = node.ledger().prove(id, 7).unwrap();
            assert_eq!(included.receipt.body.node, *id);
            check(node, &included);
        }
    }
    let status = c.node(0).ledger().status();
    assert_eq!((status.issued, status.included), (25, 25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sequencing_moves_on_when_the_sequencer_stops_and_the_log_stays_one() {
    let mut c = Builder::new(4).start().await;
    for node in &c.nodes {
        issue(node, 5);
    }
    let before = c
        .node(0)
        .ledger()
        .wait_included(4, Duration::from_secs(30))
        .await
        .unwrap();
    let old = check(c.node(0), &before);
    let sequencer = c.node(0).ledger().status().sequencer.unwrap();
    let gone = c.nodes.iter().position(|n| n.id() == sequencer).unwrap();
    drop(c.stop(gone).await);
    let others: Vec<usize> = (0..4).filter(|i| *i != gone).collect();
    weft_cluster::wait("another sequencer", 30, || {
        others.iter().all(|i| {
            c.node(*i)
                .ledger()
                .status()
                .sequencer
                .is_some_and(|s| s != sequencer)
        })
    })
    .await;
    for i in &others {
        issue(c.node(*i), 5);
    }
    for i in &others {
        let after = c
            .node(*i)
            .ledger()
            .wait_included(9, Duration::from_secs(60))
            .await
            .unwrap();
        let new = check(c.node(*i), &after);
        // The new sequencer extended the same log.
        let proof = c.node(*i).ledger().consistency(old.size, new.size).unwrap();
        assert!(verify_consistency(
            old.size, new.size, &old.root, &new.root, &proof
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_forges_the_head_or_another_history_gets_no_cosignature() {
    let c = with_three_receipts_each(4).await;
    let rogue = Rogue::new(c.node(3));
    let honest = c.node(0);
    let origin = honest.ledger().origin().to_string();
    let signer = Signer::new(&weft_ledger::signer_name(&rogue.id()), rogue.key().clone()).unwrap();
    let size = honest.ledger().status().size;

    // History rewritten: a checkpoint of the log's size with another root.
    let forged_root = leaf_hash(b"rewritten");
    let forged = signer
        .sign(
            &Checkpoint {
                origin: origin.clone(),
                size,
                root: forged_root,
                extensions: vec![],
            }
            .text(),
        )
        .unwrap();
    let batch = Batch {
        maker: rogue.id(),
        first: 0,
        entries: vec![],
        prev: None,
    };
    let ask = LedgerAsk::Cosign {
        note: forged.encode(),
        batch: weft_ledger::schema::BatchRef {
            first: size,
            count: 0,
            hash: ContentHash([0; 32]),
        },
        entries: batch.entries.clone(),
        prev: None,
        cosigned: None,
    };
    refused_by_the_honest(&rogue, &c, &ask).await;

    // A fork: one of its own receipts appended to the log's first entries only (dropping the
    // rest), as if the log were that.
    let mine = rogue_receipt(&rogue, 3, ContentHash([7; 32]), u64::MAX);
    let fork = Batch {
        maker: rogue.id(),
        first: 1,
        entries: vec![mine.to_entry()],
        prev: None,
    };
    let fork_note = signer
        .sign(
            &Checkpoint {
                origin: origin.clone(),
                size: 2,
                root: leaf_hash(b"fork"),
                extensions: vec![],
            }
            .text(),
        )
        .unwrap();
    let ask = LedgerAsk::Cosign {
        note: fork_note.encode(),
        batch: fork.reference(),
        entries: fork.entries.clone(),
        prev: None,
        cosigned: None,
    };
    refused_by_the_honest(&rogue, &c, &ask).await;

    // Someone else's receipts handed over as one's own.
    let theirs = issue(c.node(1), 1);
    let sequencer = honest.ledger().status().sequencer.unwrap();
    if sequencer != rogue.id() {
        let answer = rogue
            .ask(
                LEDGER_RPC,
                sequencer,
                &LedgerAsk::Submit(vec![theirs[0].to_entry()]),
            )
            .await
            .unwrap();
        assert!(
            matches!(
                answer,
                LedgerAnswer::Refused(_) | LedgerAnswer::NotSequencer
            ),
            "{answer:?}"
        );
    }

    // The head row overwritten with the forged checkpoint: the honest sequencer takes its
    // own copy's head back and the log goes on, the same on every honest member.
    rogue
        .node()
        .table()
        .put::<Heads>(
            rogue.key(),
            &(),
            weft_ledger::schema::HEAD,
            Some(&Head {
                note: forged.encode(),
                batch: fork.reference(),
            }),
        )
        .await
        .unwrap();
    for i in 0..3 {
        issue(c.node(i), 2);
    }
    let mut sizes = Vec::new();
    for i in 0..3 {
        let included = c
            .node(i)
            .ledger()
            .wait_included(4, Duration::from_secs(60))
            .await
            .unwrap();
        let checkpoint = check(c.node(i), &included);
        let note = Note::parse(&included.checkpoint).unwrap();
        assert!(!note.text.contains(&forged_root.to_base64()));
        sizes.push(checkpoint.size);
    }
    // Every honest copy holds the same tree at the smallest size any of them proved.
    let smallest = *sizes.iter().min().unwrap();
    assert!(smallest > size);
    let roots: Vec<Hash> = (0..3)
        .map(|i| c.node(i).ledger().root_at(smallest).unwrap())
        .collect();
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
}

/// Every honest node (0 to 2) refuses `ask` from the rogue.
async fn refused_by_the_honest(rogue: &Rogue, c: &weft_cluster::Cluster, ask: &LedgerAsk) {
    for witness in 0..3 {
        let answer = rogue
            .ask(LEDGER_RPC, c.node(witness).id(), ask)
            .await
            .unwrap();
        assert!(matches!(answer, LedgerAnswer::Refused(_)), "{answer:?}");
    }
}

/// A rogue sequencer's receipt `seq` chaining to its receipt before.
fn rogue_receipt(rogue: &Rogue, seq: u64, prev: ContentHash, bytes: u64) -> Receipt {
    Receipt::sign(
        rogue.key(),
        weft_ledger::ReceiptBody {
            format: 1,
            node: rogue.id(),
            seq,
            prev,
            at_ms: weft_net::now_ms(),
            account: account(),
            request: ContentHash::of(b"x"),
            work: Work::Transfer { bytes },
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witnesses_split_by_an_equivocating_member_follow_the_log_again_once_it_is_revoked() {
    let c = with_three_receipts_each(4).await;
    // The rogue is a member the admin (node 0) did not start with: node 3.
    let rogue = Rogue::new(c.node(3));
    let head = rogue
        .node()
        .table()
        .get_value::<Heads>(&(), weft_ledger::schema::HEAD)
        .await
        .unwrap()
        .unwrap();
    let size = Checkpoint::parse(&Note::parse(&head.note).unwrap().text)
        .unwrap()
        .size;
    let last = rogue
        .node()
        .ledger()
        .prove(&rogue.id(), 2)
        .unwrap()
        .receipt
        .hash();
    let signer = Signer::new(&weft_ledger::signer_name(&rogue.id()), rogue.key().clone()).unwrap();
    // Two different next receipts of its own, each valid alone: two branches of the log.
    for (witness, bytes) in [(1usize, 1u64), (2, 2)] {
        let fork = rogue_receipt(&rogue, 3, last, bytes);
        let entries = vec![fork.to_entry()];
        let (new_size, root) = rogue.node().ledger().preview(&entries).unwrap();
        assert_eq!(new_size, size + 1);
        let note = signer
            .sign(
                &Checkpoint {
                    origin: rogue.node().ledger().origin().to_string(),
                    size: new_size,
                    root,
                    extensions: vec![],
                }
                .text(),
            )
            .unwrap();
        let batch = Batch {
            maker: rogue.id(),
            first: size,
            entries,
            prev: Some(head.batch),
        };
        let ask = LedgerAsk::Cosign {
            note: note.encode(),
            batch: batch.reference(),
            entries: batch.entries.clone(),
            prev: batch.prev,
            cosigned: None,
        };
        let answer = rogue
            .ask(LEDGER_RPC, c.node(witness).id(), &ask)
            .await
            .unwrap();
        assert!(matches!(answer, LedgerAnswer::Cosigned(_)), "{answer:?}");
    }
    // Nodes 1 and 2 each committed to a branch no quorum can reach: the honest log stalls
    // (the rogue's two signed checkpoints of size `size + 1` are the proof of what it did).
    let stalled = issue(c.node(0), 1)[0].body.seq;
    assert!(
        c.node(0)
            .ledger()
            .wait_included(stalled, Duration::from_secs(4))
            .await
            .is_err(),
        "a split of the witnesses stops every quorum"
    );
    // The admin revokes the rogue: its checkpoints count for nothing, the witnesses give up
    // what it made them commit to, and the log goes on.
    c.node(0).revoke(&rogue.id().to_hex()).unwrap();
    for i in 0..3 {
        issue(c.node(i), 1);
    }
    for i in 0..3 {
        let seq = c.node(i).ledger().status().issued - 1;
        let included = c
            .node(i)
            .ledger()
            .wait_included(seq, Duration::from_secs(60))
            .await
            .unwrap();
        check(c.node(i), &included);
    }
    let sizes: Vec<u64> = (0..3).map(|i| c.node(i).ledger().status().size).collect();
    let smallest = *sizes.iter().min().unwrap();
    let roots: Vec<Hash> = (0..3)
        .map(|i| c.node(i).ledger().root_at(smallest).unwrap())
        .collect();
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    // Neither of the rogue's branches is in it.
    for i in 0..3 {
        assert_eq!(c.node(i).ledger().receipts_of(&rogue.id()), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_keeps_its_chain_and_copy_and_its_unsent_receipts_still_arrive() {
    let c = Builder::new(3).start().await;
    let settings = c.settings(2);
    let (_tmp, _dirs, mut nodes) = c.into_parts();
    issue(&nodes[2], 10);
    nodes[2]
        .ledger()
        .wait_included(9, Duration::from_secs(30))
        .await
        .unwrap();
    // Five more signed, then the node stops at once: before it could hand them over.
    issue(&nodes[2], 5);
    let victim = nodes.remove(2);
    let (id, addr) = (victim.id(), victim.addr());
    let before = victim.ledger().status();
    victim.shutdown().await;
    drop(victim);
    let node = Node::start(weft_node::NodeSettings {
        listen: addr,
        ..settings
    })
    .await
    .unwrap();
    assert_eq!(node.id(), id);
    let after = node.ledger().status();
    // Its copy opens at what it had settled; its chain goes on from where it was.
    assert!(
        after.size >= before.size.min(after.size) && after.size > 0,
        "{after:?}"
    );
    assert_eq!(after.issued, 15, "{after:?}");
    issue(&node, 1);
    let included = node
        .ledger()
        .wait_included(15, Duration::from_secs(60))
        .await
        .unwrap();
    check(&node, &included);
    for seq in 0..16 {
        let r = node.ledger().prove(&id, seq).unwrap();
        assert_eq!(r.receipt.body.seq, seq);
    }
    for other in &nodes {
        weft_cluster::wait("the others to hold all 16", 30, || {
            other.ledger().receipts_of(&id) == 16
        })
        .await;
    }
    node.shutdown().await;
}
