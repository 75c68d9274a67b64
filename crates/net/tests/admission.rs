//! A peer without a valid, current, unrevoked membership certificate for this fabric cannot
//! complete any protocol exchange.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_core::{CertBody, FabricId, MembershipCert, NodeId, Placement, Role, SecretKey};
use weft_net::{Endpoint, EndpointConfig, Peer, Trust, read_message, write_message};

const ECHO: u16 = 100;
const GUEST_ECHO: u16 = 101;

fn cert_for(admin: &SecretKey, node: NodeId, expires_at: u64) -> MembershipCert {
    MembershipCert::issue(
        admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node,
            placement: Placement::default(),
            roles: Role::defaults(),
            issued_at: 0,
            expires_at,
        },
    )
}

fn endpoint(
    key: &SecretKey,
    membership: Option<MembershipCert>,
    trusted_admin: NodeId,
) -> Endpoint {
    let ep = Endpoint::bind(EndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        key: key.clone(),
        membership,
        trust: Arc::new(Trust::new(trusted_admin)),
        accept_guests: true,
        wan: None,
    })
    .unwrap();
    for (proto, guests) in [(ECHO, false), (GUEST_ECHO, true)] {
        ep.register_stream(
            proto,
            guests,
            Arc::new(|_peer: Peer, mut send, mut recv| {
                Box::pin(async move {
                    if let Ok(msg) = read_message::<Vec<u8>>(&mut recv, 1024).await {
                        let _ = write_message(&mut send, &msg).await;
                        let _ = send.finish();
                    }
                })
            }),
        );
    }
    ep
}

async fn exchange(client: &Endpoint, addr: SocketAddr, proto: u16) -> Result<Vec<u8>, String> {
    let attempt = async {
        let (conn, _) = client
            .connect(addr, None)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = weft_net::open_on(&conn, proto)
            .await
            .map_err(|e| e.to_string())?;
        write_message(&mut send, &b"hello".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        read_message::<Vec<u8>>(&mut recv, 1024)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(8), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

struct Fabric {
    admin: SecretKey,
    server: Endpoint,
    addr: SocketAddr,
}

fn fabric() -> Fabric {
    let admin = SecretKey::from_seed([1; 32]);
    let server_key = SecretKey::from_seed([2; 32]);
    let server = endpoint(
        &server_key,
        Some(cert_for(&admin, server_key.public(), u64::MAX)),
        admin.public(),
    );
    let addr = server.local_addr().unwrap();
    Fabric {
        admin,
        server,
        addr,
    }
}

#[tokio::test]
async fn a_member_completes_exchanges() {
    let f = fabric();
    let key = SecretKey::from_seed([3; 32]);
    let client = endpoint(
        &key,
        Some(cert_for(&f.admin, key.public(), u64::MAX)),
        f.admin.public(),
    );
    assert_eq!(exchange(&client, f.addr, ECHO).await.unwrap(), b"hello");
    assert!(client.rtt(&f.server.id()).is_some());
}

#[tokio::test]
async fn a_self_made_key_is_only_a_guest() {
    let f = fabric();
    let key = SecretKey::from_seed([4; 32]);
    // No certificate at all: may reach guest protocols (joining), nothing else.
    let guest = endpoint(&key, None, f.admin.public());
    assert_eq!(
        exchange(&guest, f.addr, GUEST_ECHO).await.unwrap(),
        b"hello"
    );
    assert!(exchange(&guest, f.addr, ECHO).await.is_err());
    // A certificate the key signed for itself.
    let selfie = endpoint(
        &key,
        Some(cert_for(&key, key.public(), u64::MAX)),
        f.admin.public(),
    );
    assert!(exchange(&selfie, f.addr, ECHO).await.is_err());
    assert!(exchange(&selfie, f.addr, GUEST_ECHO).await.is_err());
}

#[tokio::test]
async fn a_forged_certificate_is_refused() {
    let f = fabric();
    let member = SecretKey::from_seed([5; 32]);
    let genuine = cert_for(&f.admin, member.public(), u64::MAX);
    // The attacker copies a genuine certificate and swaps in its own key.
    let attacker = SecretKey::from_seed([6; 32]);
    let mut forged = genuine.clone();
    forged.body.node = attacker.public();
    let client = endpoint(&attacker, Some(forged), f.admin.public());
    assert!(exchange(&client, f.addr, ECHO).await.is_err());
    // Or presents the genuine certificate of someone else.
    let thief = endpoint(&attacker, Some(genuine), f.admin.public());
    assert!(exchange(&thief, f.addr, ECHO).await.is_err());
    // An expired certificate.
    let old = endpoint(
        &member,
        Some(cert_for(&f.admin, member.public(), 1)),
        f.admin.public(),
    );
    assert!(exchange(&old, f.addr, ECHO).await.is_err());
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_and_its_connection_closed() {
    let f = fabric();
    let key = SecretKey::from_seed([7; 32]);
    let client = endpoint(
        &key,
        Some(cert_for(&f.admin, key.public(), u64::MAX)),
        f.admin.public(),
    );
    let (conn, _) = client.connect(f.addr, None).await.unwrap();
    assert_eq!(exchange(&client, f.addr, ECHO).await.unwrap(), b"hello");
    f.server.trust().revoke(key.public());
    // The live connection is closed at its next stream, and new ones fail the handshake.
    let stream = async {
        let (mut s, mut r) = weft_net::open_on(&conn, ECHO)
            .await
            .map_err(|e| e.to_string())?;
        write_message(&mut s, &b"x".to_vec())
            .await
            .map_err(|e| e.to_string())?;
        read_message::<Vec<u8>>(&mut r, 1024)
            .await
            .map_err(|e| e.to_string())
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(8), stream)
            .await
            .map_or(true, |r| r.is_err())
    );
    let fresh = endpoint(
        &key,
        Some(cert_for(&f.admin, key.public(), u64::MAX)),
        f.admin.public(),
    );
    assert!(exchange(&fresh, f.addr, ECHO).await.is_err());
}

#[tokio::test]
async fn another_fabrics_certificate_is_refused_both_ways() {
    let f = fabric();
    let other_admin = SecretKey::from_seed([8; 32]);
    let key = SecretKey::from_seed([9; 32]);
    let other_cert = cert_for(&other_admin, key.public(), u64::MAX);
    let client = endpoint(&key, Some(other_cert.clone()), f.admin.public());
    assert!(exchange(&client, f.addr, ECHO).await.is_err());
    // A client of the other fabric refuses our server too.
    let other_client = endpoint(&key, Some(other_cert), other_admin.public());
    let err = exchange(&other_client, f.addr, GUEST_ECHO)
        .await
        .unwrap_err();
    assert!(err.contains("fabric") || err.contains("connect"), "{err}");
}

/// [untrusted] 14: anyone may connect as a guest (a joiner, a remote CLI), so guests together
/// get a bounded share: past [`weft_net::MAX_GUEST_CONNECTIONS`] open guest connections, one
/// more is closed as it arrives — and a member still gets through.
#[tokio::test]
async fn guests_get_a_bounded_share_and_members_still_get_through() {
    let f = fabric();
    let mut held = Vec::new();
    for i in 0..weft_net::MAX_GUEST_CONNECTIONS {
        let guest = endpoint(
            &SecretKey::from_seed([(i % 200) as u8 + 40; 32]),
            None,
            f.admin.public(),
        );
        let (conn, _) = guest.connect(f.addr, None).await.unwrap();
        // A guest exchange on each, so the server has taken the connection in.
        let (mut send, mut recv) = weft_net::open_on(&conn, GUEST_ECHO).await.unwrap();
        write_message(&mut send, &b"hi".to_vec()).await.unwrap();
        let _: Vec<u8> = read_message(&mut recv, 1024).await.unwrap();
        held.push((guest, conn));
    }
    let one_more = endpoint(&SecretKey::from_seed([250; 32]), None, f.admin.public());
    assert!(exchange(&one_more, f.addr, GUEST_ECHO).await.is_err());
    let key = SecretKey::from_seed([3; 32]);
    let member = endpoint(
        &key,
        Some(cert_for(&f.admin, key.public(), u64::MAX)),
        f.admin.public(),
    );
    assert_eq!(exchange(&member, f.addr, ECHO).await.unwrap(), b"hello");
    // A guest that leaves frees its slot.
    let (guest, conn) = held.pop().unwrap();
    conn.close(0u32.into(), b"bye");
    drop(guest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        exchange(&one_more, f.addr, GUEST_ECHO).await.unwrap(),
        b"hello"
    );
}
