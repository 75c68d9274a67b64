//! Structured hostile input for the documents every node decodes from peers and joiners —
//! invites, membership certificates, revocations, node records: valid ones with a length or a
//! count rewritten to something huge at every position, and every truncation. Each decode
//! answers a value or an error at once (`wire::hostile`). None of these types nests itself,
//! so depth is bounded by the type; the one recursive row type is tested in `weft-meta`.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_core::wire::{self, hostile};
use weft_core::{
    Capacity, CertBody, FabricId, Invite, InviteBody, Load, MembershipCert, NodeRecord, Placement,
    RecordBody, Revocation, RevocationBody, Role, SecretKey,
};

/// Slower than this is allocating or looping on what a peer only declared.
const QUICK: Duration = Duration::from_millis(200);

fn cert() -> (SecretKey, MembershipCert) {
    let admin = SecretKey::from_seed([1; 32]);
    let node = SecretKey::from_seed([2; 32]);
    let cert = MembershipCert::issue(
        &admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: node.public(),
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
    (admin, cert)
}

#[test]
fn invites_certificates_revocations_and_records_refuse_huge_claims_cheaply() {
    let (admin, cert) = cert();
    let fabric = FabricId::from_admin_key(&admin.public());
    let invite = Invite::issue(
        &admin,
        InviteBody {
            fabric,
            admin: admin.public(),
            nonce: [7; 16],
            placement: cert.body.placement.clone(),
            roles: Role::defaults(),
            expires_at: 10,
            bootstrap: vec!["127.0.0.1:4000".parse().unwrap()],
        },
    );
    let revocation = Revocation::issue(
        &admin,
        RevocationBody {
            fabric,
            node: cert.body.node,
            revoked_at: 1,
        },
    );
    let record = NodeRecord::sign(
        &SecretKey::from_seed([2; 32]),
        RecordBody {
            cert: cert.clone(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
            seq: 0,
            labels: BTreeMap::from([("gpu".to_string(), "none".to_string())]),
            capacity: Capacity::default(),
            software: "weft".into(),
            load: Load::default(),
        },
    );
    let checks = [
        ("invite", hostile::slowest::<Invite>(&wire::encode(&invite))),
        (
            "cert",
            hostile::slowest::<MembershipCert>(&wire::encode(&cert)),
        ),
        (
            "revocation",
            hostile::slowest::<Revocation>(&wire::encode(&revocation)),
        ),
        (
            "record",
            hostile::slowest::<NodeRecord>(&wire::encode(&record)),
        ),
    ];
    for (what, slowest) in checks {
        assert!(
            slowest < QUICK,
            "{what}: a hostile variant took {slowest:?}"
        );
    }
    // The text form a joiner pastes goes through the same decoder.
    let text = invite.to_text();
    for n in 0..text.len() {
        let _ = Invite::from_text(&text[..n]);
    }
}
