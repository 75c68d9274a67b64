//! The documents that admit a node to a fabric and take admission away.
//!
//! All three are signed by the fabric's admin key. A node proves membership by presenting its
//! [`MembershipCert`]; every peer checks it against the admin key it already trusts, so no
//! online authority is needed to verify anyone.

use std::net::SocketAddr;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{FabricId, NodeId, SecretKey, Signature, SignatureError, wire};

const INVITE_DOMAIN: &str = "weft invite v1";
const CERT_DOMAIN: &str = "weft membership certificate v1";
const REVOCATION_DOMAIN: &str = "weft revocation v1";
const INVITE_PREFIX: &str = "weft1-";

/// What a node may do in the fabric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Holds the admin key: can issue invites and revocations.
    Admin,
    /// Stores shards.
    Storage,
    /// Runs jobs.
    Compute,
    /// Serves inference.
    Inference,
}

impl Role {
    /// The roles a node gets unless its invite says otherwise.
    pub fn defaults() -> Vec<Role> {
        vec![Role::Storage, Role::Compute]
    }

    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Storage => "storage",
            Role::Compute => "compute",
            Role::Inference => "inference",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "storage" => Ok(Role::Storage),
            "compute" => Ok(Role::Compute),
            "inference" => Ok(Role::Inference),
            other => Err(format!(
                "unknown role {other:?} (expected admin, storage, compute or inference)"
            )),
        }
    }
}

/// Where a node is: the unit of failure (site), of latency (region) and of law (jurisdiction).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// A failure domain: one building, one rack, one operator's machines.
    pub site: String,
    /// A latency/geography region such as `eu` or `us-east`.
    pub region: String,
    /// An ISO country code (or empty when not declared).
    pub jurisdiction: String,
}

/// Why an admission document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    /// The text is not an invite at all.
    #[error("not a weft invite: {0}")]
    Malformed(String),
    /// Signed by a key other than the fabric's admin key, or altered after signing.
    #[error("forged or altered {what}: {source}")]
    Forged {
        /// Which document.
        what: &'static str,
        /// The signature failure.
        source: SignatureError,
    },
    /// Issued for a different fabric.
    #[error("{what} belongs to fabric {found}, not this fabric ({expected})")]
    OtherFabric {
        /// Which document.
        what: &'static str,
        /// This fabric.
        expected: FabricId,
        /// The fabric named in the document.
        found: FabricId,
    },
    /// Past its expiry time.
    #[error("{what} expired {ago_secs}s ago")]
    Expired {
        /// Which document.
        what: &'static str,
        /// How long ago.
        ago_secs: u64,
    },
    /// The certificate names a different key than the one that presented it.
    #[error("certificate is for node {certified}, but was presented by {presenter}")]
    WrongNode {
        /// The node in the certificate.
        certified: NodeId,
        /// The key that presented it.
        presenter: NodeId,
    },
    /// The node has been revoked.
    #[error("node {0} has been revoked from this fabric")]
    Revoked(NodeId),
    /// The invite was already redeemed.
    #[error("invite was already used")]
    AlreadyUsed,
}

/// The signed content of an invite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteBody {
    /// The fabric the invite admits to.
    pub fabric: FabricId,
    /// The admin key that signed it (its hash must equal `fabric`).
    pub admin: NodeId,
    /// Random id; an invite can be redeemed once.
    pub nonce: [u8; 16],
    /// Placement the admitted node will be certified with (empty fields: the joiner chooses).
    pub placement: Placement,
    /// Roles the admitted node will hold.
    pub roles: Vec<Role>,
    /// Unix ms after which the invite is refused.
    pub expires_at: u64,
    /// Addresses of nodes that can redeem the invite and bootstrap membership.
    pub bootstrap: Vec<SocketAddr>,
}

/// A signed, single-use, expiring ticket to join a fabric.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// What was signed.
    pub body: InviteBody,
    /// The admin key's signature over `body`.
    pub signature: Signature,
}

impl Invite {
    /// Sign a new invite with the admin key.
    pub fn issue(admin: &SecretKey, body: InviteBody) -> Invite {
        let signature = admin.sign(INVITE_DOMAIN, &wire::encode(&body));
        Invite { body, signature }
    }

    /// The text form users copy around: `weft1-<base64url>`.
    pub fn to_text(&self) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(wire::encode(self));
        format!("{INVITE_PREFIX}{b64}")
    }

    /// Parse the text form (whitespace around it is ignored). Does not check the signature.
    pub fn from_text(text: &str) -> Result<Invite, AdmissionError> {
        let text = text.trim();
        let b64 = text.strip_prefix(INVITE_PREFIX).ok_or_else(|| {
            AdmissionError::Malformed(format!("an invite starts with {INVITE_PREFIX:?}"))
        })?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| AdmissionError::Malformed(format!("bad base64: {e}")))?;
        wire::decode(&bytes).map_err(|e| AdmissionError::Malformed(e.to_string()))
    }

    /// Check the invite is self-consistent: the admin key matches the fabric id and signed it.
    /// Used by the joiner, who does not yet know the fabric.
    pub fn verify_self_consistent(&self) -> Result<(), AdmissionError> {
        let derived = FabricId::from_admin_key(&self.body.admin);
        if derived != self.body.fabric {
            return Err(AdmissionError::Forged {
                what: "invite",
                source: SignatureError::Mismatch,
            });
        }
        self.body
            .admin
            .verify(INVITE_DOMAIN, &wire::encode(&self.body), &self.signature)
            .map_err(|source| AdmissionError::Forged {
                what: "invite",
                source,
            })
    }

    /// Full check by an admin node of `fabric` at time `now`. Single use is the caller's job.
    pub fn verify(&self, fabric: FabricId, admin: &NodeId, now: u64) -> Result<(), AdmissionError> {
        if self.body.fabric != fabric {
            return Err(AdmissionError::OtherFabric {
                what: "invite",
                expected: fabric,
                found: self.body.fabric,
            });
        }
        admin
            .verify(INVITE_DOMAIN, &wire::encode(&self.body), &self.signature)
            .map_err(|source| AdmissionError::Forged {
                what: "invite",
                source,
            })?;
        if now > self.body.expires_at {
            return Err(AdmissionError::Expired {
                what: "invite",
                ago_secs: (now - self.body.expires_at) / 1000,
            });
        }
        Ok(())
    }
}

/// The signed content of a membership certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertBody {
    /// The fabric.
    pub fabric: FabricId,
    /// The certified node key.
    pub node: NodeId,
    /// Where the node is, as the admin certified it.
    pub placement: Placement,
    /// What it may do.
    pub roles: Vec<Role>,
    /// Unix ms of issue.
    pub issued_at: u64,
    /// Unix ms after which the certificate is no longer accepted.
    pub expires_at: u64,
}

/// Proof that a node key was admitted to a fabric, signed by the fabric's admin key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipCert {
    /// What was signed.
    pub body: CertBody,
    /// The admin key's signature over `body`.
    pub signature: Signature,
}

impl MembershipCert {
    /// Sign a certificate with the admin key.
    pub fn issue(admin: &SecretKey, body: CertBody) -> MembershipCert {
        let signature = admin.sign(CERT_DOMAIN, &wire::encode(&body));
        MembershipCert { body, signature }
    }

    /// Check the certificate was issued by `admin` for `fabric`, to `presenter`, and is current.
    /// Revocation is checked separately (it needs the fabric's revocation list).
    pub fn verify(
        &self,
        fabric: FabricId,
        admin: &NodeId,
        presenter: &NodeId,
        now: u64,
    ) -> Result<(), AdmissionError> {
        if self.body.fabric != fabric {
            return Err(AdmissionError::OtherFabric {
                what: "membership certificate",
                expected: fabric,
                found: self.body.fabric,
            });
        }
        admin
            .verify(CERT_DOMAIN, &wire::encode(&self.body), &self.signature)
            .map_err(|source| AdmissionError::Forged {
                what: "membership certificate",
                source,
            })?;
        if self.body.node != *presenter {
            return Err(AdmissionError::WrongNode {
                certified: self.body.node,
                presenter: *presenter,
            });
        }
        if now > self.body.expires_at {
            return Err(AdmissionError::Expired {
                what: "membership certificate",
                ago_secs: (now - self.body.expires_at) / 1000,
            });
        }
        Ok(())
    }

    /// True when the certificate grants `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.body.roles.contains(&role)
    }
}

/// The signed content of a revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationBody {
    /// The fabric.
    pub fabric: FabricId,
    /// The node whose membership ends.
    pub node: NodeId,
    /// Unix ms when the admin revoked it.
    pub revoked_at: u64,
}

/// An admin's statement that a node is no longer a member. Spread to every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What was signed.
    pub body: RevocationBody,
    /// The admin key's signature over `body`.
    pub signature: Signature,
}

impl Revocation {
    /// Sign a revocation with the admin key.
    pub fn issue(admin: &SecretKey, body: RevocationBody) -> Revocation {
        let signature = admin.sign(REVOCATION_DOMAIN, &wire::encode(&body));
        Revocation { body, signature }
    }

    /// Check it was signed by this fabric's admin.
    pub fn verify(&self, fabric: FabricId, admin: &NodeId) -> Result<(), AdmissionError> {
        if self.body.fabric != fabric {
            return Err(AdmissionError::OtherFabric {
                what: "revocation",
                expected: fabric,
                found: self.body.fabric,
            });
        }
        admin
            .verify(
                REVOCATION_DOMAIN,
                &wire::encode(&self.body),
                &self.signature,
            )
            .map_err(|source| AdmissionError::Forged {
                what: "revocation",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> SecretKey {
        SecretKey::from_seed([1; 32])
    }

    fn fabric() -> FabricId {
        FabricId::from_admin_key(&admin().public())
    }

    fn invite(expires_at: u64) -> Invite {
        Invite::issue(
            &admin(),
            InviteBody {
                fabric: fabric(),
                admin: admin().public(),
                nonce: [3; 16],
                placement: Placement::default(),
                roles: Role::defaults(),
                expires_at,
                bootstrap: vec!["127.0.0.1:7000".parse().unwrap()],
            },
        )
    }

    #[test]
    fn invite_text_round_trips_and_verifies() {
        let inv = invite(1000);
        let parsed = Invite::from_text(&format!("  {}\n", inv.to_text())).unwrap();
        assert_eq!(parsed, inv);
        parsed.verify_self_consistent().unwrap();
        parsed.verify(fabric(), &admin().public(), 999).unwrap();
    }

    #[test]
    fn expired_forged_and_foreign_invites_are_refused() {
        let inv = invite(1000);
        assert!(matches!(
            inv.verify(fabric(), &admin().public(), 5000),
            Err(AdmissionError::Expired { ago_secs: 4, .. })
        ));
        let other = SecretKey::from_seed([2; 32]);
        let other_fabric = FabricId::from_admin_key(&other.public());
        assert!(matches!(
            inv.verify(other_fabric, &other.public(), 0),
            Err(AdmissionError::OtherFabric { .. })
        ));
        let mut forged = inv.clone();
        forged.body.roles.push(Role::Admin);
        assert!(matches!(
            forged.verify(fabric(), &admin().public(), 0),
            Err(AdmissionError::Forged { .. })
        ));
        assert!(forged.verify_self_consistent().is_err());
        // Signed by a stranger who claims our fabric id.
        let stranger = Invite::issue(&other, inv.body.clone());
        assert!(stranger.verify_self_consistent().is_err());
        assert!(Invite::from_text("hello").is_err());
        assert!(Invite::from_text("weft1-!!!").is_err());
        assert!(Invite::from_text("weft1-AAAA").is_err());
    }

    #[test]
    fn certificates_bind_node_fabric_and_time() {
        let node = SecretKey::from_seed([5; 32]).public();
        let cert = MembershipCert::issue(
            &admin(),
            CertBody {
                fabric: fabric(),
                node,
                placement: Placement::default(),
                roles: vec![Role::Storage],
                issued_at: 0,
                expires_at: 100,
            },
        );
        cert.verify(fabric(), &admin().public(), &node, 50).unwrap();
        assert!(cert.has_role(Role::Storage) && !cert.has_role(Role::Admin));
        let someone = SecretKey::from_seed([6; 32]).public();
        assert!(matches!(
            cert.verify(fabric(), &admin().public(), &someone, 50),
            Err(AdmissionError::WrongNode { .. })
        ));
        assert!(matches!(
            cert.verify(fabric(), &admin().public(), &node, 101),
            Err(AdmissionError::Expired { .. })
        ));
        let self_signed = MembershipCert::issue(&SecretKey::from_seed([5; 32]), cert.body.clone());
        assert!(matches!(
            self_signed.verify(fabric(), &admin().public(), &node, 50),
            Err(AdmissionError::Forged { .. })
        ));
    }

    #[test]
    fn revocations_verify_against_the_admin() {
        let body = RevocationBody {
            fabric: fabric(),
            node: NodeId([9; 32]),
            revoked_at: 1,
        };
        let rev = Revocation::issue(&admin(), body.clone());
        rev.verify(fabric(), &admin().public()).unwrap();
        let fake = Revocation::issue(&SecretKey::from_seed([8; 32]), body);
        assert!(fake.verify(fabric(), &admin().public()).is_err());
    }
}
