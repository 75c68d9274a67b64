//! Throughput of one QUIC connection over an emulated long link, as weft's transport is
//! configured (windows, congestion control, socket buffers, WAN emulation):
//!
//! `cargo run --release -p weft-net --example longlink -- [ONE_WAY_MS=80] [STREAMS=1] [MIB=64] [up]`
//!
//! prints three rounds (the first includes slow start) of MIB mebibytes split over STREAMS
//! streams, downloaded (or uploaded with `up`), with the round trip, losses and window.
use std::sync::Arc;
use std::time::Instant;
use weft_core::{CertBody, FabricId, MembershipCert, NodeId, Placement, Role, SecretKey};
use weft_net::wan::{LinkSpec, SiteMap, WanConfig};
use weft_net::{Endpoint, EndpointConfig, Peer, Trust};

const P: u16 = 100;

fn cert(admin: &SecretKey, node: NodeId) -> MembershipCert {
    MembershipCert::issue(
        admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node,
            placement: Placement::default(),
            roles: Role::defaults(),
            issued_at: 0,
            expires_at: u64::MAX,
        },
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let one_way: f64 = args.get(1).map_or(80.0, |a| a.parse().unwrap());
    let streams: usize = args.get(2).map_or(1, |a| a.parse().unwrap());
    let up = args.get(4).is_some_and(|a| a == "up");
    let mib: usize = args.get(3).map_or(64, |a| a.parse().unwrap());
    let admin = SecretKey::from_seed([1; 32]);
    let sites = Arc::new(SiteMap::default());
    let wan = WanConfig {
        links: vec![(
            "a".into(),
            "b".into(),
            LinkSpec {
                delay_ms: one_way,
                jitter_ms: 0.0,
                loss: 0.0,
            },
        )],
        loss: 0.0,
    };
    let mk = |seed: u8, site: &str| {
        let key = SecretKey::from_seed([seed; 32]);
        Endpoint::bind(EndpointConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            key: key.clone(),
            membership: Some(cert(&admin, key.public())),
            trust: Arc::new(Trust::new(admin.public())),
            accept_guests: false,
            wan: Some((site.into(), wan.clone(), sites.clone())),
        })
        .unwrap()
    };
    let server = mk(2, "a");
    let client = mk(3, "b");
    sites.insert(server.local_addr().unwrap(), "a");
    sites.insert(client.local_addr().unwrap(), "b");
    let per = mib * (1 << 20) / streams;
    server.register_stream(
        P,
        false,
        Arc::new(
            move |_p: Peer, mut send: quinn::SendStream, mut recv: quinn::RecvStream| {
                Box::pin(async move {
                    let mut b = vec![0u8; 1 << 20];
                    let mut got = 0usize;
                    while let Ok(Some(n)) = recv.read(&mut b).await {
                        got += n;
                    }
                    if got > 1 {
                        let _ = send.write_all(&[1]).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                        return;
                    }
                    let chunk = vec![7u8; 1 << 20];
                    let mut left = per;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        send.write_all(&chunk[..n]).await.unwrap();
                        left -= n;
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                })
            },
        ),
    );
    let (conn, _) = client
        .connect(server.local_addr().unwrap(), None)
        .await
        .unwrap();
    for round in 0..3 {
        let t = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..streams {
            let conn = conn.clone();
            tasks.spawn(async move {
                let (mut s, mut r) = weft_net::open_on(&conn, P).await.unwrap();
                if up {
                    let chunk = vec![7u8; 1 << 20];
                    let mut left = per;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        s.write_all(&chunk[..n]).await.unwrap();
                        left -= n;
                    }
                } else {
                    s.write_all(&[1]).await.unwrap();
                }
                s.finish().unwrap();
                let mut total = 0usize;
                let mut buf = vec![0u8; 1 << 20];
                while let Some(n) = r.read(&mut buf).await.unwrap() {
                    total += n;
                }
                if up { per } else { total }
            });
        }
        let mut total = 0;
        while let Some(n) = tasks.join_next().await {
            total += n.unwrap();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {streams} streams, {} MiB in {:.2}s = {:.1} MB/s (rtt {:?})",
            total >> 20,
            s,
            total as f64 / s / 1e6,
            conn.rtt()
        );
        let st = conn.stats();
        println!(
            "  lost packets {}, cwnd {}, congestion events {}",
            st.path.lost_packets, st.path.cwnd, st.path.congestion_events
        );
    }
}
