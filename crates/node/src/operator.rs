//! The operator's face of a node: repair and audits, invites and revocation, emulated WAN
//! links, and the tunnel that carries remote clients to the API.

use std::net::SocketAddr;
use std::sync::Arc;

use weft_core::{Invite, NodeId, Revocation, RevocationBody, Role};

use crate::{HealStatus, InviteRequest, Node, NodeError, Reputation, WanConfig, issue_invite};

/// The fabric's policy for accounts, as `weft fabric accounts` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccountsPolicy {
    /// Only admitted accounts may act on buckets.
    pub invite_only: bool,
    /// The admitted accounts (hex ids).
    pub admitted: Vec<String>,
}

/// One quota, as `weft fabric quota` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuotaEntry {
    /// `default`, or an account (hex id).
    pub applies_to: String,
    /// Bytes stored (`None`: no limit).
    pub bytes: Option<u64>,
    /// Jobs queued or running at once (`None`: no limit).
    pub jobs: Option<u32>,
    /// AI tokens in any minute (`None`: no limit).
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// The free allowance, micro-credits (`None`: the fabric's default).
    #[serde(default)]
    pub allowance: Option<u64>,
}

impl QuotaEntry {
    /// The entry for `applies_to` with `quota`'s limits (none: no limits, default allowance).
    pub fn new(applies_to: String, quota: Option<&weft_data::quota::AccountQuota>) -> QuotaEntry {
        let q = quota.cloned().unwrap_or_default();
        QuotaEntry {
            applies_to,
            bytes: q.bytes,
            jobs: q.jobs,
            tokens_per_minute: q.tokens_per_minute,
            allowance: q.allowance,
        }
    }
}

impl Node {
    /// The quotas the fabric's admin set: the default first, then each account's own.
    pub async fn quotas(&self) -> Result<Vec<QuotaEntry>, NodeError> {
        use weft_data::schema::{DEFAULT_QUOTA, Quotas};
        let mut out: Vec<QuotaEntry> = self
            .table()
            .list::<Quotas>(&(), "")
            .await?
            .into_iter()
            .filter_map(|(who, row)| row.known().map(|q| QuotaEntry::new(who, Some(&q))))
            .collect();
        out.sort_by_key(|q| (q.applies_to != DEFAULT_QUOTA, q.applies_to.clone()));
        Ok(out)
    }

    /// Set the quota of `applies_to` (`default`, or an account's id), or remove it (`None`;
    /// an account then has the default). Admin nodes only; `set_ms` is set here.
    pub async fn set_quota(
        &self,
        applies_to: &str,
        quota: Option<weft_data::quota::AccountQuota>,
    ) -> Result<String, NodeError> {
        use weft_data::quota::AccountQuota;
        use weft_data::schema::{DEFAULT_QUOTA, Quotas};
        let admin = self.inner.admin.as_ref().ok_or(NodeError::NotAdmin)?;
        let who = applies_to.trim();
        let who = if who == DEFAULT_QUOTA {
            DEFAULT_QUOTA.to_string()
        } else {
            parse_account(who)?.to_hex()
        };
        let quota = quota.map(|q| AccountQuota {
            set_ms: weft_net::now_ms(),
            ..q
        });
        self.table()
            .put::<Quotas>(admin.clone(), &(), &who, quota.as_ref())
            .await?;
        Ok(who)
    }

    /// Grant `credits` (micro-credits) to `account`, signed with the admin key; the grant's
    /// id. Admin nodes only.
    pub async fn grant_credits(
        &self,
        account: &str,
        micro: u64,
        memo: &str,
    ) -> Result<(NodeId, String), NodeError> {
        let admin = self.inner.admin.as_ref().ok_or(NodeError::NotAdmin)?;
        let account = parse_account(account)?;
        if micro == 0 {
            return Err(NodeError::Invalid("a grant of no credits".into()));
        }
        let id = self
            .ledger()
            .grant(admin, &account, micro, memo)
            .await
            .map_err(|e| NodeError::Invalid(format!("the grant was not written: {e}")))?;
        Ok((account, id))
    }

    /// The fabric's policy for accounts and the accounts its admin admitted.
    pub async fn accounts_policy(&self) -> Result<AccountsPolicy, NodeError> {
        use weft_data::schema::{ACCOUNTS, Passes, Policies};
        let table = self.table();
        let invite_only = table
            .get_value::<Policies>(&(), ACCOUNTS)
            .await?
            .is_some_and(|p| p.invite_only);
        let admitted = table
            .list::<Passes>(&(), "")
            .await?
            .into_iter()
            .filter(|(_, r)| {
                r.value
                    .as_ref()
                    .is_some_and(|v| v.clone().known().is_some())
            })
            .map(|(id, _)| id)
            .collect();
        Ok(AccountsPolicy {
            invite_only,
            admitted,
        })
    }

    /// Make the fabric open to any account, or invite-only (admin nodes only).
    pub async fn set_invite_only(&self, invite_only: bool) -> Result<(), NodeError> {
        use weft_data::policy::AccountPolicy;
        use weft_data::schema::{ACCOUNTS, Policies};
        let admin = self.inner.admin.as_ref().ok_or(NodeError::NotAdmin)?;
        let policy = AccountPolicy {
            invite_only,
            set_ms: weft_net::now_ms(),
        };
        self.table()
            .put::<Policies>(admin.clone(), &(), ACCOUNTS, Some(&policy))
            .await?;
        Ok(())
    }

    /// Admit `account` to an invite-only fabric, or (`admit` false) dismiss it (admin nodes
    /// only). Dismissed, it stops acting on buckets on every node within seconds.
    pub async fn admit_account(&self, account: &str, admit: bool) -> Result<NodeId, NodeError> {
        use weft_data::policy::AccountPass;
        use weft_data::schema::Passes;
        let admin = self.inner.admin.as_ref().ok_or(NodeError::NotAdmin)?;
        let id = parse_account(account)?;
        let pass = AccountPass {
            admitted_ms: weft_net::now_ms(),
        };
        self.table()
            .put::<Passes>(admin.clone(), &(), &id, admit.then_some(&pass))
            .await?;
        Ok(id)
    }

    /// Repair and scrubbing, as `weft repair status` shows them.
    pub fn repair_status(&self) -> HealStatus {
        self.inner.healer.status()
    }

    /// Every node's reputation, as this node's audits see it.
    pub fn reputation(&self) -> Vec<Reputation> {
        self.inner.healer.reputation()
    }

    /// Check the objects this node owns now (instead of at the next interval).
    pub async fn check_repair(&self) -> HealStatus {
        self.inner.healer.check_once().await;
        self.inner.healer.status()
    }

    /// Scrub this node's shards now.
    pub async fn scrub(&self) -> HealStatus {
        self.inner.healer.scrub_once().await;
        self.inner.healer.status()
    }

    /// Change the emulated WAN links (nodes started with `wan` settings only).
    pub fn set_wan(&self, wan: WanConfig) -> Result<(), NodeError> {
        Ok(self.inner.endpoint.set_wan(wan)?)
    }

    /// Change the emulated WAN links from their text form (`a-b=DELAY[:JITTER[:LOSS%]],...`)
    /// and an extra loss on every link (`5%`).
    pub fn set_wan_links(&self, links: &str, loss: Option<&str>) -> Result<(), NodeError> {
        let config = WanConfig {
            links: WanConfig::parse_links(links)
                .map_err(|e| NodeError::Invalid(format!("links: {e}")))?,
            loss: match loss {
                Some(l) => weft_net::wan::parse_percent(l)
                    .map_err(|e| NodeError::Invalid(format!("loss: {e}")))?,
                None => 0.0,
            },
        };
        self.set_wan(config)
    }

    /// Carry clients' connections to the API at `api` over QUIC (`proto::CLIENT_API`, open to
    /// guests): a CLI on another machine reaches this node encrypted, and knows it is this
    /// node by its key. At most 64 at once.
    pub fn serve_api_tunnel(&self, api: SocketAddr) {
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        self.inner.endpoint.register_stream(
            weft_core::proto::CLIENT_API,
            true,
            Arc::new(move |_peer, mut send, recv| {
                let limit = limit.clone();
                Box::pin(async move {
                    let Ok(_permit) = limit.try_acquire() else {
                        let _ = send.reset(quinn::VarInt::from_u32(503));
                        return;
                    };
                    let Ok(tcp) = tokio::net::TcpStream::connect(api).await else {
                        let _ = send.reset(quinn::VarInt::from_u32(502));
                        return;
                    };
                    weft_net::splice(send, recv, tcp).await;
                })
            }),
        );
    }

    /// Issue an invite (admin nodes only). The invite names this node as its bootstrap.
    pub fn invite(&self, request: InviteRequest) -> Result<Invite, NodeError> {
        let admin = self.inner.admin.as_ref().ok_or(NodeError::NotAdmin)?;
        if request.ttl.is_zero() {
            return Err(NodeError::Invalid(
                "invite lifetime must be positive".into(),
            ));
        }
        if request.roles.contains(&Role::Admin) {
            return Err(NodeError::Invalid(
                "invites cannot grant the admin role; the admin key stays on its node".into(),
            ));
        }
        issue_invite(
            admin,
            request,
            vec![self.inner.advertise],
            weft_net::now_ms(),
        )
        .map_err(|e| NodeError::Invalid(format!("cannot make an invite: {e}")))
    }

    /// Revoke the node whose id starts with `prefix` (admin nodes only).
    pub fn revoke(&self, prefix: &str) -> Result<NodeId, NodeError> {
        let admin = self.inner.admin.as_ref().ok_or(NodeError::NotAdmin)?;
        let prefix = prefix.trim();
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(NodeError::Invalid(format!(
                "{prefix:?} is not a node id (hex digits, as `weft nodes` shows)"
            )));
        }
        let matches: Vec<NodeId> = self
            .members()
            .iter()
            .map(|m| m.id)
            .filter(|id| id.matches_prefix(prefix))
            .collect();
        let target = match matches.as_slice() {
            [] => return Err(NodeError::UnknownNode(prefix.to_string())),
            [one] => *one,
            many => {
                let list = many
                    .iter()
                    .map(|m| m.short())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(NodeError::AmbiguousNode(prefix.to_string(), list));
            }
        };
        if target == self.id() {
            return Err(NodeError::Invalid(
                "refusing to revoke the admin node itself".into(),
            ));
        }
        let rev = Revocation::issue(
            admin,
            RevocationBody {
                fabric: self.inner.cert.body.fabric,
                node: target,
                revoked_at: weft_net::now_ms(),
            },
        );
        self.fabric()
            .revoke(rev)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        Ok(target)
    }
}

fn parse_account(account: &str) -> Result<NodeId, NodeError> {
    account.trim().parse().map_err(|_| {
        NodeError::Invalid(format!(
            "{account:?} is not an account id (64 hex digits, as `weft account show` prints)"
        ))
    })
}
