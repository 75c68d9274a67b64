//! What a member can send a node over the inference protocol: requests it cannot serve are
//! refused with a reason, malformed or oversized ones never hurt it.

use std::time::Duration;

use weft_core::proto;
use weft_inference::{Allowed, Frame, Refusal, Request, Work};
use weft_net::{read_message, write_message};

async fn ask(from: &weft_node::Node, to: &weft_node::Node, request: &Request) -> Option<Frame> {
    let (mut send, mut recv) = from
        .fabric()
        .endpoint()
        .open(to.id(), to.addr(), proto::INFER)
        .await
        .unwrap();
    write_message(&mut send, request).await.unwrap();
    let _ = send.finish();
    tokio::time::timeout(
        Duration::from_secs(5),
        read_message::<Frame>(&mut recv, 1 << 20),
    )
    .await
    .unwrap()
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_what_it_cannot_serve_and_survives_garbage() {
    let (_tmp, _dirs, nodes) = weft_cluster::cluster(2, Duration::from_secs(3600)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Too many inputs: refused for what it is, before anything is computed or allocated.
    let huge = Request {
        model: "minilm".into(),
        work: Work::Embed {
            inputs: vec!["x".to_string(); 3000],
        },
        allowed: Allowed::default(),
        account: weft_core::NodeId([7; 32]),
    };
    match ask(a, b, &huge).await {
        Some(Frame::Failed {
            invalid: true,
            message,
        }) => {
            assert!(message.contains("2048"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A model it does not hold.
    let absent = Request {
        model: "minilm".into(),
        work: Work::Embed {
            inputs: vec!["hello".into()],
        },
        allowed: Allowed::default(),
        account: weft_core::NodeId([7; 32]),
    };
    match ask(a, b, &absent).await {
        Some(Frame::Refused {
            why: Refusal::NotHere,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Bytes that are no request: the stream ends, the node stays up and answers again.
    let (mut send, mut recv) = a
        .fabric()
        .endpoint()
        .open(b.id(), b.addr(), proto::INFER)
        .await
        .unwrap();
    send.write_all(&[0, 0, 0, 9, 0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7])
        .await
        .unwrap();
    let _ = send.finish();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        read_message::<Frame>(&mut recv, 1 << 20),
    )
    .await
    .unwrap();
    assert!(answer.is_err(), "{answer:?}");
    assert!(matches!(
        ask(a, b, &absent).await,
        Some(Frame::Refused { .. })
    ));
}
