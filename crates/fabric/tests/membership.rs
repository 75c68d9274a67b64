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
    let mut cfg = FabricConfig::new(key, cert, addr, weft_net::now_ms());
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
