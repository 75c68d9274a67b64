//! The API server is one of the node's services: `Node::shutdown` closes its connections, ends
//! its tasks and frees its TCP port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-node fabric serving its API: the fabric, the node, the API's address.
async fn api() -> (weft_cluster::Cluster, weft_node::Node, std::net::SocketAddr) {
    let cluster = weft_cluster::Builder::new(1).start().await;
    let node = cluster.node(0).clone();
    let token = node.data_dir().api_token().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = node.clone();
    node.spawn_service(async move { weft_api::serve(n, listener, token).await.unwrap() });
    (cluster, node, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_stops_the_api_server() {
    let (_cluster, node, addr) = api().await;

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

/// [untrusted] 14: clients that connect and say nothing, or trickle a request head byte by
/// byte, hold no more than their connections: well-behaved clients are answered meanwhile, the
/// server closes the idle and the slow once the head timeout passes, and connections past the
/// server's limit are closed as they arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_stall_the_api() {
    let (_cluster, node, addr) = api().await;
    let request = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        node.data_dir().api_token().unwrap()
    );
    let good = async || {
        let start = std::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        start.elapsed()
    };
    // Idle clients and slow ones, together under the connection limit.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /v1/status HTTP/1.1\r\nHo").await.unwrap();
        slow.push(c);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            for c in &mut slow {
                let _ = c.write_all(b"o").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        slow
    });
    for _ in 0..20 {
        let took = good().await;
        assert!(
            took < Duration::from_secs(1),
            "a good client waited {took:?}"
        );
    }
    // Past the head timeout both kinds are closed by the server.
    tokio::time::sleep(weft_node::HTTP_HEADER_TIMEOUT + Duration::from_secs(2)).await;
    let mut buf = [0u8; 256];
    for c in idle.iter_mut().take(20) {
        let closed = tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
            "an idle connection is still open"
        );
    }
    let mut slow = trickle.await.unwrap();
    for c in slow.iter_mut().take(20) {
        let closed = tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
            "a slow connection is still open"
        );
    }
    drop((idle, slow));
    // The limit: connections past it are closed at once; a slot freed is served again.
    let mut held = Vec::new();
    for _ in 0..weft_node::MAX_HTTP_CONNECTIONS {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the limit was kept"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    good().await;
    node.shutdown().await;
}
