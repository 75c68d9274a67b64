//! A rogue member, for attack tests: a node admitted like any other and running honest code,
//! whose owner also signs whatever rows it likes with the member's key and sends whatever
//! requests it likes, on any protocol, to the peers it picks. Everything a patched copy of weft
//! could do on the wire, without patching it: a test names the attack, makes it through a
//! [`Rogue`], and asserts what the honest nodes did.

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_core::{NodeId, SecretKey};
use weft_net::{Rpc, RpcError};
use weft_node::Node;

/// A member node whose owner misbehaves. Cheap to clone.
#[derive(Clone)]
pub struct Rogue {
    node: Node,
}

impl Rogue {
    /// `node`, turned.
    pub fn new(node: &Node) -> Rogue {
        Rogue { node: node.clone() }
    }

    /// The member it runs as.
    pub fn id(&self) -> NodeId {
        self.node.id()
    }

    /// The node underneath (its honest services, its table signing with the member's key).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The member's key: signs anything.
    pub fn key(&self) -> &SecretKey {
        self.node.table().node_key()
    }

    /// Lie about every job this member runs from now on: before its outputs are written and
    /// their result signed, it adds a file `rogue.txt` to them, so its receipts commit to a
    /// result no honest runner gets.
    pub fn lie_about_results(&self) {
        self.node
            .jobs()
            .rogue_tamper_outputs(std::sync::Arc::new(|out: &std::path::Path| {
                let _ = std::fs::create_dir_all(out);
                let _ = std::fs::write(out.join("rogue.txt"), b"not what the module wrote");
            }));
    }

    /// Store any bytes as a shard on `peer` (`SHARD_PUT`), named by their hash.
    pub async fn put_shard(
        &self,
        peer: NodeId,
        bytes: &[u8],
    ) -> Result<(), weft_store::protocol::TransferError> {
        let addr = self.addr(&peer)?;
        weft_store::protocol::put_remote(
            self.node.storage().endpoint(),
            peer,
            addr,
            weft_core::ContentHash::of(bytes),
            bytes,
        )
        .await
    }

    fn addr(&self, peer: &NodeId) -> Result<std::net::SocketAddr, weft_net::NetError> {
        self.node
            .fabric()
            .record(peer)
            .map(|r| r.body.addr)
            .ok_or_else(|| weft_net::NetError::Stream(format!("{peer}: no address")))
    }

    /// Ask `peer` anything on `rpc`'s protocol, with no check on this side.
    pub async fn ask<Q, A>(&self, rpc: Rpc<Q, A>, peer: NodeId, question: &Q) -> Result<A, RpcError>
    where
        Q: Serialize + DeserializeOwned + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let addr = self.addr(&peer).map_err(RpcError::Net)?;
        rpc.call(self.node.storage().endpoint(), peer, addr, question)
            .await
    }
}
