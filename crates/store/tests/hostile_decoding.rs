//! Structured hostile input for what a storage node decodes from other members: manifests
//! (read from any holder), capabilities (pasted by anyone), and the shard protocols' requests
//! and answers — valid ones with a length or a count rewritten to something huge at every
//! position, and every truncation (`weft_core::wire::hostile`). Each answers at once.

use std::time::{Duration, Instant};

use weft_core::wire::{self, hostile};
use weft_core::{ContentHash, NodeId};
use weft_store::object::PlacedSegment;
use weft_store::protocol::{
    DeleteRequest, GetAnswer, GetRequest, HasRequest, ProveAnswer, ProveRequest, PutAnswer,
    PutHeader,
};
use weft_store::{Capability, Erasure, Manifest, Residency, SegmentInfo};

/// Slower than this is allocating or looping on what a peer only declared.
const QUICK: Duration = Duration::from_millis(200);

fn manifest() -> Manifest {
    let segment = |index: u32| PlacedSegment {
        info: SegmentInfo {
            index,
            plain_len: 4 << 20,
            plain_hash: ContentHash([index as u8; 32]),
            cipher_len: (4 << 20) + 16,
            shard_len: (2 << 20) + 8,
            shards: (0..3).map(|i| ContentHash([i; 32])).collect(),
        },
        holders: (0..3).map(|i| NodeId([i + 10; 32])).collect(),
    };
    Manifest {
        size: 8 << 20,
        content_id: ContentHash([9; 32]),
        segment_size: 4 << 20,
        ec: Erasure { data: 2, parity: 1 },
        policy: Residency {
            regions: vec!["eu".into()],
            jurisdictions: vec!["DE".into()],
            ..Default::default()
        },
        segments: vec![segment(0), segment(1)],
        keyed: true,
    }
}

#[test]
fn manifests_capabilities_and_shard_messages_refuse_huge_claims_cheaply() {
    let m = manifest();
    let stored = m.encode();
    let slowest = hostile::variants(&stored)
        .map(|bytes| {
            let t = Instant::now();
            let _ = Manifest::decode(&bytes);
            t.elapsed()
        })
        .max()
        .unwrap_or_default();
    assert!(slowest < QUICK, "stored manifest: {slowest:?}");
    let hash = ContentHash([3; 32]);
    let checks = [
        (
            "manifest body",
            hostile::slowest::<Manifest>(&wire::encode(&m)),
        ),
        (
            "put header",
            hostile::slowest::<PutHeader>(&wire::encode(&PutHeader { hash, len: 1 << 20 })),
        ),
        (
            "put answer",
            hostile::slowest::<PutAnswer>(&wire::encode(&PutAnswer::Refused("full".into()))),
        ),
        (
            "get",
            hostile::slowest::<GetRequest>(&wire::encode(&GetRequest { hash })),
        ),
        (
            "get answer",
            hostile::slowest::<GetAnswer>(&wire::encode(&GetAnswer::Found { len: 1 << 20 })),
        ),
        (
            "has",
            hostile::slowest::<HasRequest>(&wire::encode(&HasRequest {
                hashes: vec![hash; 8],
            })),
        ),
        (
            "delete",
            hostile::slowest::<DeleteRequest>(&wire::encode(&DeleteRequest {
                manifest: hash,
                manifest_holders: vec![NodeId([1; 32]); 3],
                shards: vec![hash; 6],
            })),
        ),
        (
            "prove",
            hostile::slowest::<ProveRequest>(&wire::encode(&ProveRequest {
                hash,
                start: 0,
                len: 1024,
            })),
        ),
        (
            "prove answer",
            hostile::slowest::<ProveAnswer>(&wire::encode(&ProveAnswer::Proof(vec![7; 300]))),
        ),
        (
            "capability",
            hostile::slowest::<Capability>(&wire::encode(&Capability {
                manifest: hash,
                key: [5; 32],
                holders: vec![NodeId([1; 32]); 3],
                inline: Some(vec![7; 300]),
            })),
        ),
    ];
    for (what, slowest) in checks {
        assert!(
            slowest < QUICK,
            "{what}: a hostile variant took {slowest:?}"
        );
    }
}
