//! Push-pull anti-entropy of node records and revocations over a stream.
//!
//! The requester sends its own record, every revocation it knows and a digest of the records it
//! has; the responder applies what it was given and answers with what the requester lacks.
//! Every node does this with a random live peer each round, so news reaches all nodes in a
//! logarithmic number of rounds. Every record and revocation is verified before it is kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_core::{NodeId, NodeRecord, Revocation, proto};
use weft_net::{NetError, Peer, Rpc, RpcError};

use crate::Shared;

/// Largest sync message accepted (records are ~600 bytes; this allows thousands of nodes).
pub(crate) const MAX_SYNC_FRAME: usize = 8 << 20;
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Push-pull exchange of records and revocations.
const SYNC: Rpc<SyncRequest, SyncResponse> =
    Rpc::new(proto::SYNC, MAX_SYNC_FRAME, MAX_SYNC_FRAME, SYNC_TIMEOUT);

/// A sync request.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The requester's own current record.
    pub record: NodeRecord,
    /// Every revocation the requester knows.
    pub revocations: Vec<Revocation>,
    /// Which record version the requester holds for each node.
    pub digest: Vec<(NodeId, u64, u64)>,
}

/// A sync response.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Records the requester lacks or holds older versions of.
    pub records: Vec<NodeRecord>,
    /// Revocations the requester did not send.
    pub revocations: Vec<Revocation>,
}

impl Shared {
    fn sync_request(&self) -> SyncRequest {
        let view = self.view.read();
        SyncRequest {
            record: self.my_record(&view),
            revocations: view.revocations.values().cloned().collect(),
            digest: view
                .records
                .values()
                .map(|r| (r.node(), r.body.generation, r.body.seq))
                .collect(),
        }
    }

    fn answer(&self, req: &SyncRequest) -> SyncResponse {
        let view = self.view.read();
        let held: std::collections::HashMap<NodeId, (u64, u64)> = req
            .digest
            .iter()
            .map(|(id, g, s)| (*id, (*g, *s)))
            .collect();
        let known: std::collections::HashSet<NodeId> =
            req.revocations.iter().map(|r| r.body.node).collect();
        SyncResponse {
            records: view
                .records
                .values()
                .filter(|r| held.get(&r.node()).is_none_or(|v| *v < r.version()))
                .cloned()
                .collect(),
            revocations: view
                .revocations
                .values()
                .filter(|r| !known.contains(&r.body.node))
                .cloned()
                .collect(),
        }
    }

    /// Sync with one peer; returns the peer's record if it sent one.
    pub(crate) async fn sync_with(
        self: &Arc<Self>,
        id: Option<NodeId>,
        addr: SocketAddr,
    ) -> Result<NodeId, NetError> {
        let exchange = async {
            let (conn, peer) = match id {
                Some(id) => (self.endpoint.connection(id, addr).await?, id),
                None => {
                    let (conn, info) = self.endpoint.connect(addr, None).await?;
                    (conn, info.id)
                }
            };
            let (mut send, mut recv) = weft_net::open_on(&conn, proto::SYNC).await?;
            let resp = SYNC
                .call_on(&mut send, &mut recv, &self.sync_request())
                .await
                .map_err(|e| match e {
                    RpcError::Net(e) => e,
                    RpcError::Timeout(_) => NetError::Timeout,
                })?;
            Ok::<_, NetError>((peer, resp))
        };
        let (peer, resp) = tokio::time::timeout(SYNC_TIMEOUT, exchange)
            .await
            .map_err(|_| NetError::Timeout)??;
        for rev in resp.revocations {
            self.apply_revocation(rev);
        }
        for record in resp.records {
            self.apply_record(record);
        }
        Ok(peer)
    }

    pub(crate) fn register_sync(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        SYNC.serve_or_close(
            &self.endpoint,
            false,
            move |peer: Peer, req: SyncRequest| {
                let weak = weak.clone();
                async move {
                    let shared = weak.upgrade()?;
                    let Peer::Member(peer) = peer else {
                        return None;
                    };
                    for rev in &req.revocations {
                        shared.apply_revocation(rev.clone());
                    }
                    if req.record.node() == peer.id {
                        shared.apply_record(req.record.clone());
                    }
                    Some(shared.answer(&req))
                }
            },
        );
    }
}
