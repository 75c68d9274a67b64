//! The API server is one of the node's services: `Node::shutdown` closes its connections, ends
//! its tasks and frees its TCP port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_stops_the_api_server() {
    let cluster = weft_cluster::Builder::new(1).start().await;
    let node = cluster.node(0).clone();
    let token = node.data_dir().api_token().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = node.clone();
    node.spawn_service(async move { weft_api::serve(n, listener, token).await.unwrap() });

    // A client that keeps its connection open after an answer.
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        node.data_dir().api_token().unwrap()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let got = client.read(&mut buf).await.unwrap();
    assert!(
        buf[..got].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..got])
    );

    node.shutdown().await;
    assert_eq!(node.live_tasks(), 0, "API tasks outlived Node::shutdown");
    drop(std::net::TcpListener::bind(addr).expect("the API port is still bound"));
    let closed = tokio::time::timeout(Duration::from_secs(1), client.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the client's connection is still open"
    );
}
