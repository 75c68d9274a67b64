//! Structured hostile input for the fabric's messages (what any member sends in sync and
//! coordinate exchanges): valid ones with a length or a count rewritten to something huge at
//! every position, and every truncation (`weft_core::wire::hostile`). Each answers at once.
//! SWIM packets are foca's, read through the bounded codec (`swim.rs`'s tests).

use std::collections::BTreeMap;
use std::time::Duration;

use weft_core::wire::{self, hostile};
use weft_core::{
    Capacity, CertBody, FabricId, Load, MembershipCert, NodeId, NodeRecord, Placement, RecordBody,
    Revocation, RevocationBody, Role, SecretKey,
};
use weft_fabric::vivaldi::Coordinate;
use weft_fabric::{CoordMessage, SyncRequest, SyncResponse};

/// Slower than this is allocating or looping on what a peer only declared.
const QUICK: Duration = Duration::from_millis(300);

fn record(seed: u8, admin: &SecretKey) -> NodeRecord {
    let key = SecretKey::from_seed([seed; 32]);
    let cert = MembershipCert::issue(
        admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: key.public(),
            placement: Placement {
                site: "eu-1".into(),
                region: "eu".into(),
                jurisdiction: "DE".into(),
            },
            roles: Role::defaults(),
            issued_at: 0,
            expires_at: 10,
        },
    );
    NodeRecord::sign(
        &key,
        RecordBody {
            cert,
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
            seq: 0,
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            capacity: Capacity::default(),
            software: "weft".into(),
            load: Load::default(),
        },
    )
}

#[test]
fn sync_and_coordinate_messages_refuse_huge_claims_cheaply() {
    let admin = SecretKey::from_seed([1; 32]);
    let revocation = Revocation::issue(
        &admin,
        RevocationBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: NodeId([4; 32]),
            revoked_at: 1,
        },
    );
    let request = SyncRequest {
        record: record(2, &admin),
        revocations: vec![revocation.clone()],
        digest: vec![(NodeId([3; 32]), 1, 2), (NodeId([4; 32]), 1, 7)],
    };
    let response = SyncResponse {
        records: vec![record(2, &admin), record(3, &admin)],
        revocations: vec![revocation],
    };
    let pong = CoordMessage::Pong {
        nonce: 7,
        coord: Coordinate::default(),
    };
    let checks = [
        (
            "sync request",
            hostile::slowest::<SyncRequest>(&wire::encode(&request)),
        ),
        (
            "sync response",
            hostile::slowest::<SyncResponse>(&wire::encode(&response)),
        ),
        (
            "coordinates",
            hostile::slowest::<CoordMessage>(&wire::encode(&pong)),
        ),
    ];
    for (what, slowest) in checks {
        assert!(
            slowest < QUICK,
            "{what}: a hostile variant took {slowest:?}"
        );
    }
}
