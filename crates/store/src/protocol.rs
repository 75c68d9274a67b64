//! The shard protocols between nodes: store a shard (`SHARD_PUT`) and fetch one (`SHARD_GET`).
//!
//! A put is a framed header (hash, length) followed by the raw bytes; the holder verifies the
//! hash and answers only after the shard is durable. A get answers with a framed status and then
//! the raw bytes. Lengths are bounded; a peer that stalls is cut off by timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId, proto};
use weft_net::{Endpoint, NetError, Peer, Rpc, RpcError, read_message, write_message};

use crate::{ShardStore, ShardStoreError};

/// Largest shard accepted.
pub const MAX_SHARD: u64 = 64 << 20;
const CONTROL_FRAME: usize = 4096;
const TIMEOUT: Duration = Duration::from_secs(30);

/// `SHARD_HAS`: which of these shards does a node hold.
pub const HAS: Rpc<HasRequest, Vec<bool>> = Rpc::new(
    proto::SHARD_HAS,
    64 + MAX_HAS * 34,
    64 + MAX_HAS * 2,
    TIMEOUT,
);
/// `SHARD_PROVE`: prove holding a range of a shard.
pub const PROVE: Rpc<ProveRequest, ProveAnswer> = Rpc::new(
    proto::SHARD_PROVE,
    CONTROL_FRAME,
    4 * crate::proof::MAX_CHALLENGE as usize,
    TIMEOUT,
);
/// `SHARD_DELETE`: delete shards of a released object; answers how many went.
pub const DELETE: Rpc<DeleteRequest, u64> =
    Rpc::new(proto::SHARD_DELETE, 64 + MAX_HAS * 34, 64, TIMEOUT);

/// `SHARD_HOT`: a shard of a stored object, asked of the reader's site home (see
/// [`crate::hot`]); `None` when the home will not or cannot serve it.
pub const HOT: Rpc<HotRequest, Option<Vec<u8>>> = Rpc::new(
    proto::SHARD_HOT,
    CONTROL_FRAME,
    MAX_SHARD as usize + 64,
    TIMEOUT,
);

/// Most manifest holders a [`HotRequest`] may name.
pub const MAX_HOT_HOLDERS: usize = 16;

/// Which shard a reader wants kept hot: named by the object's manifest (which the home fetches
/// and verifies itself, so it learns the shard's name, holder and residency from it rather
/// than from the asker), the segment and the shard's index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HotRequest {
    /// The object's manifest.
    pub manifest: ContentHash,
    /// Where the manifest is held (a capability's holders).
    pub holders: Vec<NodeId>,
    /// Segment index.
    pub segment: u32,
    /// Shard index within the segment.
    pub shard: u32,
}

/// Header of a put.
#[derive(Debug, Serialize, Deserialize)]
pub struct PutHeader {
    /// The shard's name.
    pub hash: ContentHash,
    /// Bytes that follow.
    pub len: u64,
}

/// Answer to a put.
#[derive(Debug, Serialize, Deserialize)]
pub enum PutAnswer {
    /// Durable on the holder.
    Stored,
    /// Refused, with the reason (full, wrong hash, IO error).
    Refused(String),
}

/// A get.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetRequest {
    /// The shard wanted.
    pub hash: ContentHash,
}

/// Answer to a get; `Found` is followed by `len` raw bytes.
#[derive(Debug, Serialize, Deserialize)]
pub enum GetAnswer {
    /// Here it comes.
    Found {
        /// Bytes that follow.
        len: u64,
    },
    /// Not held here.
    NotFound,
    /// Held, but it failed verification on disk (the holder will drop it).
    Corrupt,
}

/// Presence question (`SHARD_HAS`).
#[derive(Debug, Serialize, Deserialize)]
pub struct HasRequest {
    /// Shards asked about (at most [`MAX_HAS`]).
    pub hashes: Vec<ContentHash>,
}

/// Delete request (`SHARD_DELETE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The released object's manifest.
    pub manifest: ContentHash,
    /// Where its manifest is (so the holder can check the shards belong to it).
    pub manifest_holders: Vec<NodeId>,
    /// Shards to delete (at most [`MAX_HAS`]).
    pub shards: Vec<ContentHash>,
}

/// A storage challenge (`SHARD_PROVE`): prove bytes `start..start+len` of a shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProveRequest {
    /// The shard.
    pub hash: ContentHash,
    /// First byte.
    pub start: u64,
    /// Bytes (at most [`crate::proof::MAX_CHALLENGE`]).
    pub len: u64,
}

/// Answer to a challenge.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum ProveAnswer {
    /// The bao slice.
    Proof(Vec<u8>),
    /// Not held.
    #[default]
    NotFound,
    /// Held but corrupt (the holder drops it).
    Corrupt,
}

/// Most shards one presence question may name.
pub const MAX_HAS: usize = 4096;

/// Shard transfer failures.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Transport trouble.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The holder refused.
    #[error("node {node} refused the shard: {reason}")]
    Refused {
        /// Holder.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The holder's copy is corrupt.
    #[error("node {0} holds a corrupt copy")]
    Corrupt(NodeId),
    /// Local store trouble.
    #[error(transparent)]
    Local(#[from] ShardStoreError),
    /// The peer sent something malformed.
    #[error("node {node}: {reason}")]
    Protocol {
        /// Peer.
        node: NodeId,
        /// What was wrong.
        reason: String,
    },
}

/// How much of an announced shard is read (and allocated) at a time.
const READ_STEP: usize = 256 << 10;

/// Read the `len` bytes a peer announced, memory growing with what actually arrives: a peer
/// that announces 64 MiB and sends nothing costs a step, not 64 MiB.
async fn read_announced(recv: &mut quinn::RecvStream, len: u64) -> Result<Vec<u8>, NetError> {
    let mut bytes = Vec::with_capacity(len.min(READ_STEP as u64) as usize);
    let mut chunk = vec![0u8; READ_STEP.min(len as usize)];
    while (bytes.len() as u64) < len {
        let want = (len - bytes.len() as u64).min(READ_STEP as u64) as usize;
        match recv.read(&mut chunk[..want]).await.map_err(stream_err)? {
            Some(n) => bytes.extend_from_slice(&chunk[..n]),
            None => return Err(stream_err("the stream ended before its announced length")),
        }
    }
    Ok(bytes)
}

fn stream_err(e: impl std::fmt::Display) -> NetError {
    NetError::Stream(e.to_string())
}

impl From<RpcError> for TransferError {
    fn from(e: RpcError) -> TransferError {
        match e {
            RpcError::Net(e) => TransferError::Net(e),
            RpcError::Timeout(_) => TransferError::Net(NetError::Timeout),
        }
    }
}

/// Answer a challenge from the local store.
pub fn answer_challenge(store: &ShardStore, req: &ProveRequest) -> ProveAnswer {
    if req.len > crate::proof::MAX_CHALLENGE {
        return ProveAnswer::NotFound;
    }
    match store.get(&req.hash) {
        Ok(Some(bytes)) => match crate::proof::prove(&bytes, req.start, req.len) {
            Ok(p) => ProveAnswer::Proof(p),
            Err(_) => ProveAnswer::NotFound,
        },
        Ok(None) => ProveAnswer::NotFound,
        Err(ShardStoreError::Corrupt(h)) => {
            let _ = store.delete(&h);
            ProveAnswer::Corrupt
        }
        Err(_) => ProveAnswer::NotFound,
    }
}

/// Serve a question protocol from the store, the answer worked out off the async runtime.
fn serve_question<Q, A>(
    endpoint: &Endpoint,
    rpc: Rpc<Q, A>,
    store: Arc<ShardStore>,
    answer: fn(&ShardStore, Q) -> A,
) where
    Q: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    A: Serialize + serde::de::DeserializeOwned + Send + Sync + Default + 'static,
{
    rpc.serve(endpoint, false, move |_peer, question| {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || answer(&store, question))
                .await
                .unwrap_or_default()
        }
    });
}

/// Serve the shard protocols from `store`; `share` says how many bytes no object owns yet
/// each other member may have here (see [`ShardStore::put_from`]).
pub fn register(
    endpoint: &Endpoint,
    store: Arc<ShardStore>,
    share: impl Fn() -> u64 + Send + Sync + 'static,
) {
    let share = Arc::new(share);
    serve_question(
        endpoint,
        PROVE,
        store.clone(),
        |store, req: ProveRequest| answer_challenge(store, &req),
    );
    serve_question(endpoint, HAS, store.clone(), |store, req: HasRequest| {
        // Too many at once: no answers, which the asker reads as a protocol error.
        if req.hashes.len() > MAX_HAS {
            return Vec::new();
        }
        req.hashes
            .iter()
            .map(|h| store.present(h).unwrap_or(false))
            .collect::<Vec<bool>>()
    });
    let put_store = store.clone();
    endpoint.register_stream(
        proto::SHARD_PUT,
        false,
        Arc::new(move |peer: Peer, mut send, mut recv| {
            let store = put_store.clone();
            let share = share.clone();
            Box::pin(async move {
                let serve = async {
                    let Peer::Member(sender) = &peer else {
                        return Ok(());
                    };
                    let sender = sender.id;
                    let header: PutHeader = read_message(&mut recv, CONTROL_FRAME).await?;
                    if header.len > MAX_SHARD {
                        let answer = PutAnswer::Refused(format!(
                            "shard of {} bytes exceeds the {} byte limit",
                            header.len, MAX_SHARD
                        ));
                        return write_message(&mut send, &answer).await;
                    }
                    let bytes = read_announced(&mut recv, header.len).await?;
                    let share = share();
                    let stored = tokio::task::spawn_blocking(move || {
                        store.put_from(&header.hash, &bytes, sender, share)
                    })
                    .await;
                    let answer = match stored {
                        Ok(Ok(_)) => PutAnswer::Stored,
                        Ok(Err(e)) => PutAnswer::Refused(e.to_string()),
                        Err(e) => PutAnswer::Refused(format!("internal error: {e}")),
                    };
                    write_message(&mut send, &answer).await?;
                    let _ = send.finish();
                    Ok::<_, NetError>(())
                };
                if let Ok(Err(e)) = tokio::time::timeout(TIMEOUT, serve).await {
                    tracing::debug!(?peer, error = %e, "shard put failed");
                }
            })
        }),
    );
    endpoint.register_stream(
        proto::SHARD_GET,
        false,
        Arc::new(move |peer: Peer, mut send, mut recv| {
            let store = store.clone();
            Box::pin(async move {
                let serve = async {
                    let req: GetRequest = read_message(&mut recv, CONTROL_FRAME).await?;
                    let hash = req.hash;
                    let found = tokio::task::spawn_blocking({
                        let store = store.clone();
                        move || store.get(&hash)
                    })
                    .await
                    .map_err(stream_err)?;
                    match found {
                        Ok(Some(bytes)) => {
                            write_message(&mut send, &GetAnswer::Found { len: bytes.len() as u64 })
                                .await?;
                            send.write_all(&bytes).await.map_err(stream_err)?;
                        }
                        Ok(None) => write_message(&mut send, &GetAnswer::NotFound).await?,
                        Err(ShardStoreError::Corrupt(h)) => {
                            tracing::warn!(shard = %h, "corrupt shard found while serving; dropping it");
                            let _ = tokio::task::spawn_blocking(move || store.delete(&h)).await;
                            write_message(&mut send, &GetAnswer::Corrupt).await?;
                        }
                        Err(e) => return Err(stream_err(e)),
                    }
                    let _ = send.finish();
                    Ok::<_, NetError>(())
                };
                if let Ok(Err(e)) = tokio::time::timeout(TIMEOUT, serve).await {
                    tracing::debug!(?peer, error = %e, "shard get failed");
                }
            })
        }),
    );
}

/// Store `bytes` as shard `hash` on node `id` at `addr`; returns once it is durable there.
pub async fn put_remote(
    endpoint: &Endpoint,
    id: NodeId,
    addr: SocketAddr,
    hash: ContentHash,
    bytes: &[u8],
) -> Result<(), TransferError> {
    let exchange = async {
        let (mut send, mut recv) = endpoint.open(id, addr, proto::SHARD_PUT).await?;
        write_message(
            &mut send,
            &PutHeader {
                hash,
                len: bytes.len() as u64,
            },
        )
        .await?;
        send.write_all(bytes).await.map_err(stream_err)?;
        let _ = send.finish();
        read_message::<PutAnswer>(&mut recv, CONTROL_FRAME).await
    };
    match tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| NetError::Timeout)??
    {
        PutAnswer::Stored => Ok(()),
        PutAnswer::Refused(reason) => Err(TransferError::Refused { node: id, reason }),
    }
}

/// Fetch shard `hash` from node `id` at `addr` (unverified: the caller checks the hash).
pub async fn get_remote(
    endpoint: &Endpoint,
    id: NodeId,
    addr: SocketAddr,
    hash: ContentHash,
) -> Result<Option<Vec<u8>>, TransferError> {
    let exchange = async {
        let (mut send, mut recv) = endpoint.open(id, addr, proto::SHARD_GET).await?;
        write_message(&mut send, &GetRequest { hash }).await?;
        let _ = send.finish();
        match read_message::<GetAnswer>(&mut recv, CONTROL_FRAME).await? {
            GetAnswer::Found { len } if len <= MAX_SHARD => {
                Ok(Ok(Some(read_announced(&mut recv, len).await?)))
            }
            GetAnswer::Found { len } => Ok(Err(TransferError::Protocol {
                node: id,
                reason: format!("announced a {len} byte shard"),
            })),
            GetAnswer::NotFound => Ok(Ok(None)),
            GetAnswer::Corrupt => Ok(Err(TransferError::Corrupt(id))),
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| NetError::Timeout)?
        .map_err(TransferError::Net)?
}

/// Ask node `id` which of `hashes` it holds.
pub async fn has_remote(
    endpoint: &Endpoint,
    id: NodeId,
    addr: SocketAddr,
    hashes: Vec<ContentHash>,
) -> Result<Vec<bool>, TransferError> {
    let n = hashes.len();
    let answer = HAS.call(endpoint, id, addr, &HasRequest { hashes }).await?;
    if answer.len() != n {
        return Err(TransferError::Protocol {
            node: id,
            reason: format!("answered {} of {n} presence questions", answer.len()),
        });
    }
    Ok(answer)
}

/// Ask node `id` to delete shards of a released object; returns how many it deleted.
pub async fn delete_remote(
    endpoint: &Endpoint,
    id: NodeId,
    addr: SocketAddr,
    req: DeleteRequest,
) -> Result<u64, TransferError> {
    Ok(DELETE.call(endpoint, id, addr, &req).await?)
}

/// Challenge node `id` for a range of a shard.
pub async fn prove_remote(
    endpoint: &Endpoint,
    id: NodeId,
    addr: SocketAddr,
    req: ProveRequest,
) -> Result<ProveAnswer, TransferError> {
    Ok(PROVE.call(endpoint, id, addr, &req).await?)
}
