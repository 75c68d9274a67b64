//! Creating a fabric, issuing invites, redeeming them, and the join protocol between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_core::{
    AdmissionError, CertBody, FabricId, Invite, InviteBody, MembershipCert, NodeId, Placement,
    Role, SecretKey, Signature, proto, wire,
};
use weft_net::{Endpoint, EndpointConfig, NetError, Peer, Rpc, Trust};

use crate::datadir::{DataDir, DataDirError};

const JOIN_PROOF_DOMAIN: &str = "weft join request v1";
const MAX_JOIN_FRAME: usize = 64 << 10;
/// Redeem an invite (guests allowed: the joiner has no certificate yet).
const JOIN: Rpc<JoinRequest, JoinResponse> = Rpc::new(
    proto::JOIN,
    MAX_JOIN_FRAME,
    MAX_JOIN_FRAME,
    Duration::from_secs(10),
);
/// How long a membership certificate is valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A joining node asks for a certificate.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The invite being redeemed.
    pub invite: Invite,
    /// The joining node's key.
    pub node: NodeId,
    /// The node's signature over the invite nonce, proving it holds the key.
    pub proof: Signature,
    /// Placement the joiner declares (used where the invite leaves a field empty).
    pub declared: Placement,
}

/// The admin node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum JoinResponse {
    /// Admitted.
    Admitted(MembershipCert),
    /// Refused, with the reason.
    Refused(String),
}

/// Admission failures seen by a user.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The invite itself is bad.
    #[error("invalid invite: {0}")]
    Invite(#[from] AdmissionError),
    /// The admin node refused it.
    #[error("the fabric refused the invite: {0}")]
    Refused(String),
    /// No bootstrap address answered.
    #[error("could not reach any node named in the invite ({tried}): {last}")]
    Unreachable {
        /// Addresses tried.
        tried: String,
        /// The last error.
        last: String,
    },
    /// Local storage failed.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// Transport setup failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// Create a new fabric in `dir`: a node key, an admin key, and this node's own certificate.
pub fn init_fabric(
    dir: &DataDir,
    placement: Placement,
    now: u64,
) -> Result<(FabricId, MembershipCert), DataDirError> {
    dir.ensure_not_member()?;
    let node = dir.node_key()?;
    let admin = dir.create_admin_key()?;
    let cert = MembershipCert::issue(
        &admin,
        CertBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            node: node.public(),
            placement,
            roles: vec![Role::Admin, Role::Storage, Role::Compute],
            issued_at: now,
            expires_at: now.saturating_add(CERT_VALIDITY.as_millis() as u64),
        },
    );
    dir.save_membership(&admin.public(), &[], &cert)?;
    Ok((cert.body.fabric, cert))
}

/// What an invite should say.
#[derive(Clone, Debug, Default)]
pub struct InviteRequest {
    /// Placement to certify (empty fields: the joiner declares them).
    pub placement: Placement,
    /// Roles; empty means the defaults.
    pub roles: Vec<Role>,
    /// Lifetime.
    pub ttl: Duration,
}

/// Sign an invite that names `bootstrap` as the nodes to redeem it with.
pub fn issue_invite(
    admin: &SecretKey,
    request: InviteRequest,
    bootstrap: Vec<SocketAddr>,
    now: u64,
) -> std::io::Result<Invite> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let roles = if request.roles.is_empty() {
        Role::defaults()
    } else {
        request.roles
    };
    Ok(Invite::issue(
        admin,
        InviteBody {
            fabric: FabricId::from_admin_key(&admin.public()),
            admin: admin.public(),
            nonce,
            placement: request.placement,
            roles,
            expires_at: now.saturating_add(request.ttl.as_millis() as u64),
            bootstrap,
        },
    ))
}

fn nonce_hex(nonce: &[u8; 16]) -> String {
    nonce.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the join protocol on an admin node.
pub(crate) struct Admissions {
    dir: DataDir,
    admin: SecretKey,
    /// Serialises redemptions so an invite cannot be used twice concurrently.
    used: Mutex<std::collections::HashSet<String>>,
}

impl Admissions {
    pub(crate) fn new(dir: DataDir, admin: SecretKey) -> Result<Self, DataDirError> {
        let used = dir.used_invites()?;
        Ok(Admissions {
            dir,
            admin,
            used: Mutex::new(used),
        })
    }

    /// Decide a join request.
    pub(crate) fn admit(&self, req: &JoinRequest, now: u64) -> Result<MembershipCert, String> {
        let fabric = FabricId::from_admin_key(&self.admin.public());
        req.invite
            .verify(fabric, &self.admin.public(), now)
            .map_err(|e| e.to_string())?;
        req.node
            .verify(
                JOIN_PROOF_DOMAIN,
                &proof_message(&req.invite, &req.node),
                &req.proof,
            )
            .map_err(|_| "the joining node did not prove it holds its key".to_string())?;
        // Where a node is decides where data may live, so the region and jurisdiction a
        // certificate names are the admin's word (the invite's), never the joiner's: a joiner
        // that declares one the invite leaves open is refused rather than certified as it
        // says. The site — a failure domain the operator names — the joiner may fill in.
        let fixed = &req.invite.body.placement;
        let certified = |what: &str, fixed: &str, declared: &str| -> Result<String, String> {
            if !fixed.is_empty() {
                Ok(fixed.to_string())
            } else if declared.is_empty() {
                Ok(String::new())
            } else {
                Err(format!(
                    "the invite does not set a {what}, and a node's own word on its {what} is \
                     not certified: join without --{what}, or ask the fabric's admin for an \
                     invite made with --{what}"
                ))
            }
        };
        let placement = Placement {
            site: if fixed.site.is_empty() {
                req.declared.site.clone()
            } else {
                fixed.site.clone()
            },
            region: certified("region", &fixed.region, &req.declared.region)?,
            jurisdiction: certified(
                "jurisdiction",
                &fixed.jurisdiction,
                &req.declared.jurisdiction,
            )?,
        };
        // Used only once the request is good: a refused joiner may try again.
        let nonce = nonce_hex(&req.invite.body.nonce);
        {
            let mut used = self.used.lock();
            if used.contains(&nonce) {
                return Err(AdmissionError::AlreadyUsed.to_string());
            }
            self.dir
                .mark_invite_used(&nonce)
                .map_err(|e| format!("admin node could not record the invite: {e}"))?;
            used.insert(nonce);
        }
        Ok(MembershipCert::issue(
            &self.admin,
            CertBody {
                fabric,
                node: req.node,
                placement,
                roles: req.invite.body.roles.clone(),
                issued_at: now,
                expires_at: now.saturating_add(CERT_VALIDITY.as_millis() as u64),
            },
        ))
    }

    pub(crate) fn register(self: Arc<Self>, endpoint: &Endpoint) {
        JOIN.serve(endpoint, true, move |peer: Peer, req: JoinRequest| {
            let this = self.clone();
            async move {
                match this.admit(&req, weft_net::now_ms()) {
                    Ok(cert) => {
                        tracing::info!(node = %req.node, ?peer, site = %cert.body.placement.site, "admitted node");
                        JoinResponse::Admitted(cert)
                    }
                    Err(reason) => {
                        tracing::warn!(node = %req.node, ?peer, %reason, "refused join");
                        JoinResponse::Refused(reason)
                    }
                }
            }
        });
    }
}

fn proof_message(invite: &Invite, node: &NodeId) -> Vec<u8> {
    let mut m = invite.body.nonce.to_vec();
    m.extend_from_slice(&node.0);
    m.extend_from_slice(&wire::encode(&invite.body.fabric));
    m
}

/// Redeem `invite` for the node whose key is `key`: contact the bootstrap nodes (verifying they
/// belong to the invite's fabric) until one admits or refuses.
pub async fn redeem(
    invite: &Invite,
    key: &SecretKey,
    declared: Placement,
) -> Result<MembershipCert, JoinError> {
    invite.verify_self_consistent()?;
    let now = weft_net::now_ms();
    if now > invite.body.expires_at {
        return Err(AdmissionError::Expired {
            what: "invite",
            ago_secs: (now - invite.body.expires_at) / 1000,
        }
        .into());
    }
    let trust = Arc::new(Trust::new(invite.body.admin));
    let endpoint = Endpoint::bind(EndpointConfig {
        listen: "0.0.0.0:0".parse().map_err(|_| NetError::Timeout)?,
        key: key.clone(),
        membership: None,
        trust: trust.clone(),
        accept_guests: false,
        wan: None,
    })?;
    let request = JoinRequest {
        invite: invite.clone(),
        node: key.public(),
        proof: key.sign(JOIN_PROOF_DOMAIN, &proof_message(invite, &key.public())),
        declared,
    };
    let mut last = String::from("no bootstrap addresses in invite");
    for addr in &invite.body.bootstrap {
        let attempt = async {
            let (conn, _) = endpoint.connect(*addr, None).await?;
            let (mut send, mut recv) = weft_net::open_on(&conn, proto::JOIN).await?;
            JOIN.call_on(&mut send, &mut recv, &request)
                .await
                .map_err(|e| NetError::Stream(e.to_string()))
        };
        match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Ok(Ok(JoinResponse::Admitted(cert))) => {
                trust
                    .check(&cert, &key.public(), weft_net::now_ms())
                    .map_err(JoinError::Invite)?;
                endpoint.shutdown().await;
                return Ok(cert);
            }
            Ok(Ok(JoinResponse::Refused(reason))) => {
                endpoint.shutdown().await;
                return Err(JoinError::Refused(reason));
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
    }
    endpoint.shutdown().await;
    Err(JoinError::Unreachable {
        tried: invite
            .body
            .bootstrap
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        _tmp: tempfile::TempDir,
        admissions: Admissions,
        admin: SecretKey,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        init_fabric(&dir, Placement::default(), 0).unwrap();
        let admin = dir.admin_key().unwrap().unwrap();
        Setup {
            admissions: Admissions::new(dir, admin.clone()).unwrap(),
            admin,
            _tmp: tmp,
        }
    }

    fn request(invite: &Invite, node: &SecretKey) -> JoinRequest {
        JoinRequest {
            invite: invite.clone(),
            node: node.public(),
            proof: node.sign(JOIN_PROOF_DOMAIN, &proof_message(invite, &node.public())),
            declared: Placement {
                site: "declared-site".into(),
                ..Placement::default()
            },
        }
    }

    fn invite(admin: &SecretKey, site: &str, ttl_secs: u64) -> Invite {
        issue_invite(
            admin,
            InviteRequest {
                placement: Placement {
                    site: site.into(),
                    ..Placement::default()
                },
                roles: vec![],
                ttl: Duration::from_secs(ttl_secs),
            },
            vec!["127.0.0.1:1".parse().unwrap()],
            1_000,
        )
        .unwrap()
    }

    /// [untrusted] smaller items: a joiner's region and jurisdiction decide which data it
    /// may hold; only the admin's invite can certify them.
    #[test]
    fn a_joiner_cannot_certify_its_own_region() {
        let s = setup();
        let inv = invite(&s.admin, "lab", 60);
        let node = SecretKey::from_seed([4; 32]);
        let mut claiming = request(&inv, &node);
        claiming.declared.region = "declared-region".into();
        claiming.declared.jurisdiction = "FR".into();
        let refused = s.admissions.admit(&claiming, 2_000).unwrap_err();
        assert!(refused.contains("does not set a region"), "{refused}");
        // Declaring no region, it joins with none (it holds no region-restricted data).
        let cert = s.admissions.admit(&request(&inv, &node), 2_000).unwrap();
        assert_eq!(cert.body.placement.site, "lab");
        assert_eq!(cert.body.placement.region, "");
        assert_eq!(cert.body.placement.jurisdiction, "");
    }

    #[test]
    fn an_invite_admits_once_with_the_admins_placement() {
        let s = setup();
        let mut inv = invite(&s.admin, "lab", 60);
        inv = {
            let mut body = inv.body.clone();
            body.placement.region = "eu".into();
            body.placement.jurisdiction = "DE".into();
            Invite::issue(&s.admin, body)
        };
        let node = SecretKey::from_seed([4; 32]);
        let mut declaring = request(&inv, &node);
        declaring.declared.region = "declared-region".into();
        let cert = s.admissions.admit(&declaring, 2_000).unwrap();
        assert_eq!(cert.body.node, node.public());
        assert_eq!(cert.body.placement.site, "lab");
        // The invite's word wins over what the joiner declared.
        assert_eq!(cert.body.placement.region, "eu");
        assert_eq!(cert.body.placement.jurisdiction, "DE");
        assert_eq!(cert.body.roles, Role::defaults());
        let again = s
            .admissions
            .admit(&request(&inv, &SecretKey::from_seed([5; 32])), 2_000);
        assert!(again.unwrap_err().contains("already used"));
        // The record of use survives a restart of the admin node.
        let reopened = Admissions::new(s.admissions.dir.clone(), s.admin.clone()).unwrap();
        assert!(reopened.admit(&request(&inv, &node), 2_000).is_err());
    }

    #[test]
    fn expired_foreign_and_unproven_requests_are_refused() {
        let s = setup();
        let node = SecretKey::from_seed([4; 32]);
        let expired = invite(&s.admin, "", 1);
        assert!(
            s.admissions
                .admit(&request(&expired, &node), 10_000)
                .unwrap_err()
                .contains("expired")
        );
        let other = SecretKey::from_seed([9; 32]);
        let foreign = invite(&other, "", 60);
        assert!(
            s.admissions
                .admit(&request(&foreign, &node), 2_000)
                .unwrap_err()
                .contains("fabric")
        );
        // Someone who saw an invite and a proof cannot swap in their own key.
        let inv = invite(&s.admin, "", 60);
        let mut stolen = request(&inv, &node);
        stolen.node = SecretKey::from_seed([6; 32]).public();
        assert!(
            s.admissions
                .admit(&stolen, 2_000)
                .unwrap_err()
                .contains("prove")
        );
        // The refused attempt did not burn the invite.
        assert!(s.admissions.admit(&request(&inv, &node), 2_000).is_ok());
    }
}
