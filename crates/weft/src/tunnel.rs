//! `--node ID@HOST:PORT`: the CLI reaches a node on another machine through the node's QUIC
//! port. Each HTTP connection the API client makes to a local forwarder is carried on its own
//! QUIC stream (`proto::CLIENT_API`), so it is encrypted (TLS 1.3) and the CLI knows it reached
//! the node it named: the node's certificate must be made from the key `ID` names.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use weft_core::{NodeId, SecretKey, proto};
use weft_net::{Endpoint, EndpointConfig, Trust};

/// A `--node` value: a node's API address (on this machine), or `ID@HOST:PORT` for a node's
/// QUIC address, reached encrypted.
pub enum Target {
    /// Plain HTTP to an API address (loopback).
    Api(String),
    /// Through the node's QUIC port, pinned to its key.
    Quic(NodeId, SocketAddr),
}

impl Target {
    /// Parse a `--node` value.
    pub fn parse(text: &str) -> Result<Target> {
        let Some((id, addr)) = text.split_once('@') else {
            return Ok(Target::Api(text.to_string()));
        };
        let id: NodeId = id.parse().map_err(|_| {
            anyhow!("--node {text:?}: the part before '@' must be the node's full id (64 hex digits, `weft nodes --json`)")
        })?;
        let addr: SocketAddr = addr.parse().with_context(|| {
            format!("--node {text:?}: the part after '@' must be the node's QUIC address, like 203.0.113.5:7400")
        })?;
        Ok(Target::Quic(id, addr))
    }
}

/// Start a forwarder to node `id` at `addr` for the rest of this process; the local address
/// to send the API's HTTP to. Fails if the node cannot be reached or is not `id`.
pub fn open(id: NodeId, addr: SocketAddr) -> Result<SocketAddr> {
    let (ready, started) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
        runtime.block_on(async move {
            match start(id, addr).await {
                Ok((endpoint, listener)) => {
                    let _ = ready.send(listener.local_addr().map_err(Into::into));
                    forward(endpoint, listener, id, addr).await;
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        });
    });
    started
        .recv()
        .map_err(|_| anyhow!("the connection to {addr} could not start"))?
}

async fn start(id: NodeId, addr: SocketAddr) -> Result<(Endpoint, tokio::net::TcpListener)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
    let listen: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let endpoint = Endpoint::bind(EndpointConfig {
        listen,
        key: SecretKey::from_seed(seed),
        membership: None,
        trust: Arc::new(Trust::pinned(id)),
        accept_guests: false,
        wan: None,
    })?;
    // Dial once now, so a wrong id or an unreachable node fails the command clearly.
    endpoint
        .connect(addr, Some(id))
        .await
        .with_context(|| format!("cannot reach node {} at {addr}", id.short()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok((endpoint, listener))
}

async fn forward(
    endpoint: Endpoint,
    listener: tokio::net::TcpListener,
    id: NodeId,
    addr: SocketAddr,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let conn_endpoint = endpoint.clone();
        // A task of the client's endpoint, like every task of a node's.
        endpoint.spawn(async move {
            let endpoint = conn_endpoint;
            let Ok((conn, _)) = endpoint.connect(addr, Some(id)).await else {
                return;
            };
            let Ok((send, recv)) = weft_net::open_on(&conn, proto::CLIENT_API).await else {
                return;
            };
            weft_net::splice(send, recv, tcp).await;
        });
    }
}
