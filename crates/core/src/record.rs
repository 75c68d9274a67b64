//! Node records: what every node tells the fabric about itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{AdmissionError, FabricId, MembershipCert, NodeId, SecretKey, Signature, wire};

const RECORD_DOMAIN: &str = "weft node record v1";

/// Resources a node offers to the fabric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub mem_bytes: u64,
    /// Disk offered for storage, in bytes.
    pub disk_bytes: u64,
}

/// The signed content of a node record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// The node's membership certificate (carries its id, placement and roles).
    pub cert: MembershipCert,
    /// Where peers reach the node (QUIC over UDP).
    pub addr: SocketAddr,
    /// Unix ms when this run of the node started; a restart makes a newer generation.
    pub generation: u64,
    /// Bumped whenever the record changes within one generation.
    pub seq: u64,
    /// Free-form operator labels (`gpu=a100`, `tier=edge`).
    pub labels: BTreeMap<String, String>,
    /// Offered resources.
    pub capacity: Capacity,
    /// Software version.
    pub software: String,
}

/// A node's self-description, signed by the node so that relays cannot alter it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// What was signed.
    pub body: RecordBody,
    /// The node key's signature over `body`.
    pub signature: Signature,
}

impl NodeRecord {
    /// Sign a record with the node's own key.
    pub fn sign(key: &SecretKey, body: RecordBody) -> NodeRecord {
        let signature = key.sign(RECORD_DOMAIN, &wire::encode(&body));
        NodeRecord { body, signature }
    }

    /// The node this record describes.
    pub fn node(&self) -> NodeId {
        self.body.cert.body.node
    }

    /// Ordering key: a record replaces another of the same node only when this is greater.
    pub fn version(&self) -> (u64, u64) {
        (self.body.generation, self.body.seq)
    }

    /// Check the record is signed by its node and carries a valid certificate for `fabric`.
    pub fn verify(&self, fabric: FabricId, admin: &NodeId, now: u64) -> Result<(), AdmissionError> {
        let node = self.node();
        self.body.cert.verify(fabric, admin, &node, now)?;
        node.verify(RECORD_DOMAIN, &wire::encode(&self.body), &self.signature)
            .map_err(|source| AdmissionError::Forged {
                what: "node record",
                source,
            })
    }
}
