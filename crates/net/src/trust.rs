//! What a node trusts: its fabric's admin key, minus the revoked.

use std::collections::HashMap;

use parking_lot::RwLock;
use weft_core::{AdmissionError, FabricId, MembershipCert, NodeId};

/// The fabric's trust anchor and revocation list, shared by every connection of a node.
#[derive(Debug)]
pub struct Trust {
    fabric: FabricId,
    admin: NodeId,
    /// Revoked nodes, with the signed revocation (encoded) when known: a revoked node that
    /// connects is handed it, so it learns why it is refused.
    revoked: RwLock<HashMap<NodeId, Vec<u8>>>,
    /// A client that trusts one node by its key (the CLI dialing a node it names by id),
    /// whatever fabric it is in.
    pinned: Option<NodeId>,
}

/// An authenticated fabric member at the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's key (proven by the TLS handshake).
    pub id: NodeId,
    /// Its membership certificate (verified).
    pub cert: MembershipCert,
}

impl Trust {
    /// Trust the fabric whose admin key is `admin`.
    pub fn new(admin: NodeId) -> Self {
        Trust {
            fabric: FabricId::from_admin_key(&admin),
            admin,
            revoked: RwLock::new(HashMap::new()),
            pinned: None,
        }
    }

    /// Trust only `node`, known by its key: for a client (no membership of its own) that
    /// dials a node it names by id. Its certificate must be made from that key (the TLS
    /// handshake proves the key); its fabric is not checked.
    pub fn pinned(node: NodeId) -> Self {
        Trust {
            pinned: Some(node),
            ..Trust::new(node)
        }
    }

    /// The fabric.
    pub fn fabric(&self) -> FabricId {
        self.fabric
    }

    /// The admin key.
    pub fn admin(&self) -> NodeId {
        self.admin
    }

    /// Mark a node revoked. Returns true if it was not already.
    pub fn revoke(&self, node: NodeId) -> bool {
        self.revoke_with(node, Vec::new())
    }

    /// Mark a node revoked, keeping the signed revocation (`doc`, encoded) to hand it.
    pub fn revoke_with(&self, node: NodeId, doc: Vec<u8>) -> bool {
        let mut revoked = self.revoked.write();
        match revoked.get_mut(&node) {
            Some(old) => {
                if old.is_empty() {
                    *old = doc;
                }
                false
            }
            None => {
                revoked.insert(node, doc);
                true
            }
        }
    }

    /// True when `node` has been revoked.
    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.revoked.read().contains_key(node)
    }

    /// The signed revocation of `node` (encoded; empty if only its id is known).
    pub fn revocation_of(&self, node: &NodeId) -> Option<Vec<u8>> {
        self.revoked.read().get(node).cloned()
    }

    /// Check a certificate presented by `presenter` at time `now`.
    pub fn check(
        &self,
        cert: &MembershipCert,
        presenter: &NodeId,
        now: u64,
    ) -> Result<(), AdmissionError> {
        self.check_cert(cert, presenter, now)?;
        if self.is_revoked(presenter) {
            return Err(AdmissionError::Revoked(*presenter));
        }
        Ok(())
    }

    /// Check a certificate, but not whether its node was revoked: the handshake admits a
    /// revoked node only so it can be told (the endpoint closes the connection at once, handing
    /// it the signed revocation, before any protocol runs).
    pub fn check_cert(
        &self,
        cert: &MembershipCert,
        presenter: &NodeId,
        now: u64,
    ) -> Result<(), AdmissionError> {
        match self.pinned {
            Some(node) if node == *presenter => Ok(()),
            Some(node) => Err(AdmissionError::WrongNode {
                certified: node,
                presenter: *presenter,
            }),
            None => cert.verify(self.fabric, &self.admin, presenter, now),
        }
    }
}
