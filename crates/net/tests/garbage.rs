//! Malformed input from the network closes the offending stream or connection and never panics
//! or stalls the node: after every kind of garbage, the node still serves a valid exchange.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use weft_core::{CertBody, FabricId, MembershipCert, Placement, Role, SecretKey};
use weft_net::{
    Endpoint, EndpointConfig, Peer, Trust, peer_from_certificate, read_message, write_message,
};

const ECHO: u16 = 100;

fn member(admin: &SecretKey, seed: u8) -> Endpoint {
    let key = SecretKey::from_seed([seed; 32]);
    let cert = MembershipCert::issue(
        admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: key.public(),
            placement: Placement::default(),
            roles: Role::defaults(),
            issued_at: 0,
            expires_at: u64::MAX,
        },
    );
    let ep = Endpoint::bind(EndpointConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        key,
        membership: Some(cert),
        trust: Arc::new(Trust::new(admin.public())),
        accept_guests: true,
        wan: None,
    })
    .unwrap();
    ep.register_stream(
        ECHO,
        false,
        Arc::new(|_: Peer, mut send, mut recv| {
            Box::pin(async move {
                if let Ok(m) = read_message::<Vec<u8>>(&mut recv, 1024).await {
                    let _ = write_message(&mut send, &m).await;
                    let _ = send.finish();
                }
            })
        }),
    );
    ep
}

async fn echo_works(client: &Endpoint, server: &Endpoint) -> bool {
    let addr = server.local_addr().unwrap();
    let attempt = async {
        let (mut s, mut r) = client.open(server.id(), addr, ECHO).await.ok()?;
        write_message(&mut s, &b"ping".to_vec()).await.ok()?;
        read_message::<Vec<u8>>(&mut r, 1024).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        == Some(b"ping".to_vec())
}

#[tokio::test]
async fn garbage_streams_and_datagrams_do_not_hurt_the_node() {
    let admin = SecretKey::from_seed([1; 32]);
    let server = member(&admin, 2);
    let addr = server.local_addr().unwrap();
    let payloads: Vec<Vec<u8>> = vec![
        vec![],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0xff; 7],
        weft_core::wire::stream_header(9999, 1).to_vec(),
        [
            weft_core::wire::stream_header(ECHO, 1).as_slice(),
            &[0xff, 0xff, 0xff, 0xff],
        ]
        .concat(),
        [
            weft_core::wire::stream_header(ECHO, 1).as_slice(),
            &[0, 0, 0, 3, 1],
        ]
        .concat(),
        (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let client = member(&admin, 10 + i as u8);
        if let Ok((conn, _)) = client.connect(addr, None).await {
            for channel in [0u8, 1, 2, 200] {
                let mut d = vec![channel];
                d.extend_from_slice(payload);
                let _ = conn.send_datagram(d.into());
            }
            if let Ok((mut s, _r)) = conn.open_bi().await {
                let _ = s.write_all(payload).await;
                let _ = s.finish();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fresh = member(&admin, 50 + i as u8);
        assert!(
            echo_works(&fresh, &server).await,
            "node stopped serving after payload {i}"
        );
    }
    // A stream of a newer protocol version is refused with a reset, never handed to the
    // handler, and the connection stays usable.
    let newer = member(&admin, 80);
    let (conn, _) = newer.connect(addr, None).await.unwrap();
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    s.write_all(&weft_core::wire::stream_header(
        ECHO,
        weft_net::WIRE_VERSION + 1,
    ))
    .await
    .unwrap();
    let _ = write_message(&mut s, &b"ping".to_vec()).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        read_message::<Vec<u8>>(&mut r, 1024),
    )
    .await
    .unwrap();
    assert!(
        answer.is_err(),
        "a newer-version stream was answered: {answer:?}"
    );
    assert!(echo_works(&newer, &server).await);
    // A peer that opens a stream and never sends the header does not stall others.
    let slow = member(&admin, 90);
    let (conn, _) = slow.connect(addr, None).await.unwrap();
    let _held = conn.open_bi().await.unwrap();
    assert!(echo_works(&member(&admin, 91), &server).await);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn certificate_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = peer_from_certificate(&bytes);
    }
}
