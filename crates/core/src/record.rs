//! Node records: what every node tells the fabric about itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{AdmissionError, FabricId, MembershipCert, NodeId, SecretKey, Signature, wire};

const RECORD_DOMAIN: &str = "weft node record v2";

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

/// What a node is doing now; it re-signs its record when this changes noticeably.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Jobs running.
    pub jobs: u32,
    /// Requests or jobs waiting.
    pub queued: u32,
    /// CPU in use, in thousandths of the offered CPUs.
    pub cpu_milli: u32,
    /// Memory in use by work, in bytes.
    pub mem_bytes: u64,
}

/// The format of the record bodies this build writes. A record of a newer format is still
/// read: its fields this build knows come first, the rest are kept (the signed bytes are
/// forwarded unchanged) but not understood.
pub const RECORD_FORMAT: u8 = 1;

/// Most bytes a node record may take: every node gossips every record, so one member's must
/// not cost the others (a certificate, an address, a few labels fit in a fraction of this).
pub const MAX_RECORD_BYTES: usize = 16 << 10;

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
    /// Live load.
    pub load: Load,
}

/// A node's self-description, signed by the node so that relays cannot alter it. On the wire
/// it is the signed bytes (format byte, then the body) and the signature, so a node forwards a
/// record of a newer format exactly as its node signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SignedRecord", into = "SignedRecord")]
pub struct NodeRecord {
    /// What was signed, as far as this build understands it.
    pub body: RecordBody,
    /// The node key's signature over `signed`.
    pub signature: Signature,
    signed: Vec<u8>,
}

/// A node record as it travels.
#[derive(Clone, Serialize, Deserialize)]
struct SignedRecord {
    signed: Vec<u8>,
    signature: Signature,
}

impl TryFrom<SignedRecord> for NodeRecord {
    type Error = String;
    fn try_from(w: SignedRecord) -> Result<NodeRecord, String> {
        if w.signed.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "node record: {} bytes, more than {MAX_RECORD_BYTES}",
                w.signed.len()
            ));
        }
        let body = match w.signed.split_first() {
            Some((&f, rest)) if f >= 1 => {
                let (body, extra) = postcard::take_from_bytes::<RecordBody>(rest)
                    .map_err(|e| format!("node record: {e}"))?;
                if f == RECORD_FORMAT && !extra.is_empty() {
                    return Err("node record: trailing bytes".into());
                }
                body
            }
            _ => return Err("node record: no format byte".into()),
        };
        Ok(NodeRecord {
            body,
            signature: w.signature,
            signed: w.signed,
        })
    }
}

impl From<NodeRecord> for SignedRecord {
    fn from(r: NodeRecord) -> SignedRecord {
        SignedRecord {
            signed: r.signed,
            signature: r.signature,
        }
    }
}

impl NodeRecord {
    /// Sign a record with the node's own key.
    pub fn sign(key: &SecretKey, body: RecordBody) -> NodeRecord {
        let mut signed = vec![RECORD_FORMAT];
        signed.extend_from_slice(&wire::encode(&body));
        let signature = key.sign(RECORD_DOMAIN, &signed);
        NodeRecord {
            body,
            signature,
            signed,
        }
    }

    /// The format the record was written in (newer than [`RECORD_FORMAT`]: some fields are
    /// not understood here).
    pub fn format(&self) -> u8 {
        self.signed.first().copied().unwrap_or(0)
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
        node.verify(RECORD_DOMAIN, &self.signed, &self.signature)
            .map_err(|source| AdmissionError::Forged {
                what: "node record",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertBody, Placement, Role};

    #[test]
    fn records_of_a_newer_format_are_read_and_forwarded_unchanged() {
        let admin = SecretKey::from_seed([1; 32]);
        let key = SecretKey::from_seed([2; 32]);
        let fabric = FabricId::from_admin_key(&admin.public());
        let cert = MembershipCert::issue(
            &admin,
            CertBody {
                fabric,
                node: key.public(),
                placement: Placement::default(),
                roles: vec![Role::Storage],
                issued_at: 0,
                expires_at: 100,
            },
        );
        let body = RecordBody {
            cert,
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
            seq: 0,
            labels: BTreeMap::new(),
            capacity: Capacity::default(),
            software: "x".into(),
            load: Load::default(),
        };
        let record = NodeRecord::sign(&key, body.clone());
        let bytes = wire::encode(&record);
        let back: NodeRecord = wire::decode(&bytes).unwrap();
        assert_eq!(back, record);
        back.verify(fabric, &admin.public(), 50).unwrap();
        // A newer node appends a field: this build reads what it knows, keeps the rest, and
        // the signature still verifies on what it forwards.
        let mut signed = vec![RECORD_FORMAT + 1];
        signed.extend_from_slice(&wire::encode(&body));
        signed.extend_from_slice(&wire::encode(&"a new field".to_string()));
        let newer = SignedRecord {
            signature: key.sign(RECORD_DOMAIN, &signed),
            signed,
        };
        let newer_bytes = wire::encode(&newer);
        let read: NodeRecord = wire::decode(&newer_bytes).unwrap();
        assert_eq!(read.body, body);
        assert_eq!(read.format(), RECORD_FORMAT + 1);
        read.verify(fabric, &admin.public(), 50).unwrap();
        assert_eq!(wire::encode(&read), newer_bytes);
        // A body altered in transit does not verify.
        let mut tampered: SignedRecord = wire::decode(&newer_bytes).unwrap();
        let last = tampered.signed.len() - 1;
        tampered.signed[last] ^= 1;
        let tampered: NodeRecord = wire::decode(&wire::encode(&tampered)).unwrap();
        assert!(tampered.verify(fabric, &admin.public(), 50).is_err());
        // [untrusted] 13: a member's record stuffed with labels (megabytes, gossiped to
        // every node) does not decode, however well signed.
        let mut stuffed = body.clone();
        for i in 0..20_000 {
            stuffed.labels.insert(format!("label-{i}"), "x".repeat(16));
        }
        let bytes = wire::encode(&NodeRecord::sign(&key, stuffed));
        assert!(bytes.len() > MAX_RECORD_BYTES);
        assert!(wire::decode::<NodeRecord>(&bytes).is_err());
    }
}
