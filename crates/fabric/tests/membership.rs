//! In-process fabrics: formation, records reaching everyone, revocation spreading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_core::{
    CertBody, FabricId, MembershipCert, Placement, Revocation, RevocationBody, Role, SecretKey,
};
use weft_fabric::{Fabric, FabricConfig, MemberState};
use weft_net::{Endpoint, EndpointConfig, Trust};

fn start_node(
    admin: &SecretKey,
    seed: u8,
    site: &str,
    bootstrap: Vec<std::net::SocketAddr>,
) -> Fabric {
    start_at(admin, seed, site, bootstrap, weft_net::now_ms())
}

/// A node whose run (SWIM generation) is `generation`.
fn start_at(
    admin: &SecretKey,
    seed: u8,
    site: &str,
    bootstrap: Vec<std::net::SocketAddr>,
    generation: u64,
) -> Fabric {
    let key = SecretKey::from_seed([seed; 32]);
    let cert = MembershipCert::issue(
        admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: key.public(),
            placement: Placement {
                site: site.into(),
                region: site.into(),
                jurisdiction: "XX".into(),
            },
            roles: Role::defaults(),
            issued_at: 0,
            expires_at: u64::MAX,
        },
    );
    let endpoint = Endpoint::bind(EndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        key: key.clone(),
        membership: Some(cert.clone()),
        trust: Arc::new(Trust::new(admin.public())),
        accept_guests: false,
        wan: None,
    })
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let mut cfg = FabricConfig::new(key, cert, addr, generation);
    cfg.bootstrap = bootstrap;
    Fabric::start(endpoint, cfg)
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_alive(nodes: &[Fabric], n: usize) -> bool {
    nodes.iter().all(|f| {
        let m = f.members();
        m.len() == n
            && m.iter()
                .all(|s| s.state == MemberState::Alive && !s.placement.site.is_empty())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_a_fabric_and_a_revocation_reaches_everyone() {
    let admin = SecretKey::from_seed([100; 32]);
    let first = start_node(&admin, 1, "eu", vec![]);
    let seed_addr = first.endpoint().local_addr().unwrap();
    let mut nodes = vec![first];
    for i in 2..=5u8 {
        nodes.push(start_node(
            &admin,
            i,
            if i % 2 == 0 { "us" } else { "eu" },
            vec![seed_addr],
        ));
    }
    let t0 = Instant::now();
    wait_for("5 nodes alive everywhere", Duration::from_secs(15), || {
        all_alive(&nodes, 5)
    })
    .await;
    eprintln!("formed in {:?}", t0.elapsed());
    wait_for("rtt estimates", Duration::from_secs(10), || {
        nodes[0]
            .members()
            .iter()
            .filter(|m| !m.is_self)
            .all(|m| m.est_rtt.is_some() && m.measured_rtt.is_some())
    })
    .await;

    let victim = nodes[4].id();
    let rev = Revocation::issue(
        &admin,
        RevocationBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: victim,
            revoked_at: 1,
        },
    );
    // A revocation signed by anyone else is refused.
    let forged = Revocation::issue(&SecretKey::from_seed([9; 32]), rev.body.clone());
    assert!(nodes[1].revoke(forged).is_err());
    assert!(nodes[1].revoke(rev).unwrap());
    wait_for("revocation everywhere", Duration::from_secs(10), || {
        nodes[..4].iter().all(|f| {
            f.endpoint().trust().is_revoked(&victim)
                && f.members()
                    .iter()
                    .any(|m| m.id == victim && m.state == MemberState::Revoked)
        })
    })
    .await;
    // The revoked node is cut off: every other node becomes unreachable to it.
    wait_for("victim isolated", Duration::from_secs(15), || {
        nodes[4]
            .members()
            .iter()
            .filter(|m| !m.is_self)
            .all(|m| m.state == MemberState::Dead)
    })
    .await;
}

/// [untrusted] 11: a member that keeps telling the others a node is down (foca takes "down" as
/// final for a run: every node would drop the victim until it started a new run) makes no one
/// drop it — another node's word is a suspicion the victim refutes — and one that suspects it
/// at an incarnation it could not refute is not heard at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_calling_a_node_down_makes_no_one_drop_it() {
    use bytes::BufMut;
    use foca::{Codec, Header, Incarnation, Member, Message, PostcardCodec, State};
    use weft_fabric::SwimId;

    let admin = SecretKey::from_seed([101; 32]);
    let generation = weft_net::now_ms();
    let first = start_at(&admin, 11, "eu", vec![], generation);
    let seed_addr = first.endpoint().local_addr().unwrap();
    let mut nodes = vec![first];
    for i in 12..=14u8 {
        nodes.push(start_at(&admin, i, "eu", vec![seed_addr], generation));
    }
    wait_for("4 nodes alive everywhere", Duration::from_secs(15), || {
        all_alive(&nodes, 4)
    })
    .await;
    let swim_id = |f: &Fabric| SwimId {
        node: f.id(),
        addr: f.endpoint().local_addr().unwrap(),
        generation,
    };
    let (honest, victim, rogue) = (&nodes[..2], &nodes[2], &nodes[3]);
    let verdicts: Vec<u64> = nodes.iter().map(Fabric::dead_verdicts).collect();
    let lie = |to: &Fabric, incarnation: Incarnation, state: State| {
        let mut buf = Vec::new();
        let header = Header {
            src: swim_id(rogue),
            src_incarnation: 0,
            dst: swim_id(to),
            message: Message::Gossip,
        };
        PostcardCodec.encode_header(&header, &mut buf).unwrap();
        buf.put_u16(1);
        let update = Member::new(swim_id(victim), incarnation, state);
        PostcardCodec.encode_member(&update, &mut buf).unwrap();
        rogue.endpoint().send_datagram(
            to.id(),
            to.endpoint().local_addr().unwrap(),
            weft_core::proto::SWIM,
            &buf,
        );
    };
    // Five seconds of "the victim is down", at every incarnation it could have reached, and
    // now and then a suspicion it could not refute.
    for round in 0..100u16 {
        for to in honest {
            lie(to, round, State::Down);
            if round % 10 == 0 {
                lie(to, Incarnation::MAX, State::Suspect);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for f in honest {
            let seen = f.member(&victim.id()).map(|m| m.state);
            assert_ne!(
                seen,
                Some(MemberState::Dead),
                "round {round}: the victim dropped"
            );
        }
    }
    wait_for(
        "the victim alive everywhere",
        Duration::from_secs(10),
        || all_alive(&nodes, 4),
    )
    .await;
    let after: Vec<u64> = nodes.iter().map(Fabric::dead_verdicts).collect();
    assert_eq!(after, verdicts, "no node declared anyone dead");
}
