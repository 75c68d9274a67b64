//! What a node trusts: its fabric's admin key, minus the revoked.

use std::collections::HashSet;

use parking_lot::RwLock;
use weft_core::{AdmissionError, FabricId, MembershipCert, NodeId};

/// The fabric's trust anchor and revocation list, shared by every connection of a node.
#[derive(Debug)]
pub struct Trust {
    fabric: FabricId,
    admin: NodeId,
    revoked: RwLock<HashSet<NodeId>>,
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
            revoked: RwLock::new(HashSet::new()),
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
        self.revoked.write().insert(node)
    }

    /// True when `node` has been revoked.
    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.revoked.read().contains(node)
    }

    /// Check a certificate presented by `presenter` at time `now`.
    pub fn check(
        &self,
        cert: &MembershipCert,
        presenter: &NodeId,
        now: u64,
    ) -> Result<(), AdmissionError> {
        cert.verify(self.fabric, &self.admin, presenter, now)?;
        if self.is_revoked(presenter) {
            return Err(AdmissionError::Revoked(*presenter));
        }
        Ok(())
    }
}
