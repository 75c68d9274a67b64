//! The fabric's policy for accounts: *open* (any key is an account, the default) or
//! *invite-only* (an account acts on buckets only once the fabric's admin admitted it).
//!
//! Both are rows only the fabric's admin key writes ([`weft_meta::Writer::Admin`]; replicas
//! refuse anyone else's, delegates' included): [`Policies`] (the accounts policy under
//! [`ACCOUNTS`]) and [`Passes`] (one per admitted account; deleting it dismisses the account).
//! [`Acting::entitled`] — which every bucket operation passes, whatever the front end — and
//! bucket creation check them, from what the node read within the last few seconds, shared by
//! every [`Acting`] of a node ([`crate::recent`]), so a dismissed account stops within
//! [`CHECK_TTL`] on every node. A policy that cannot
//! be read refuses (fails closed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_core::NodeId;

use crate::recent::Recent;
use crate::schema::{ACCOUNTS, Passes, Policies};
use crate::{Acting, BucketError};

/// How long a node trusts its last look at the policy and at a pass.
pub const CHECK_TTL: Duration = Duration::from_secs(3);

/// The fabric's policy for accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPolicy {
    /// Only accounts the admin admitted may act on buckets.
    pub invite_only: bool,
    /// When the admin set it (Unix ms).
    pub set_ms: u64,
}

/// An account the fabric's admin admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPass {
    /// When (Unix ms).
    pub admitted_ms: u64,
}

/// Recent policy, pass, quota and bucket-record answers ([`crate::recent`]), and this node's
/// tally counters, shared by every [`Acting`] of a node.
#[derive(Clone, Default)]
pub(crate) struct PolicyChecks {
    pub(crate) invite_only: Arc<Recent<(), bool>>,
    pub(crate) passes: Arc<Recent<NodeId, bool>>,
    /// Every `quota` row.
    pub(crate) quotas: Arc<Recent<(), HashMap<String, crate::quota::AccountQuota>>>,
    /// Bucket records (see [`Acting::bucket_recent`]).
    pub(crate) buckets: Arc<Recent<String, crate::BucketRecord>>,
    /// Each bucket owner's prepays (see [`Acting::kept_until`]).
    pub(crate) prepays: Arc<Recent<NodeId, Vec<weft_ledger::prepay::Prepay>>>,
    /// This node's counters per (account, bucket): `None` until read from the table.
    pub(crate) tallies: Arc<Mutex<HashMap<(NodeId, String), crate::quota::Counter>>>,
}

impl Acting {
    /// Whether the fabric lets this account act on buckets: always in an open fabric, with
    /// the admin's pass in an invite-only one.
    pub(crate) async fn admitted(&self) -> Result<(), BucketError> {
        self.admits(self.account()).await
    }

    /// Whether the fabric lets `account` use it (see [`Acting::admitted`]), from this node's
    /// shared cache.
    pub(crate) async fn admits(&self, account: NodeId) -> Result<(), BucketError> {
        let this = self.clone();
        let invite_only = self
            .policy_checks
            .invite_only
            .get((), &self.tasks, move || async move {
                this.table.hears_majority()?;
                Ok::<_, BucketError>(
                    this.table
                        .get_value::<Policies>(&(), ACCOUNTS)
                        .await?
                        .is_some_and(|p| p.invite_only),
                )
            })
            .await?;
        if !invite_only {
            return Ok(());
        }
        let this = self.clone();
        let admitted = self
            .policy_checks
            .passes
            .get(account, &self.tasks, move || async move {
                this.table.hears_majority()?;
                Ok::<_, BucketError>(
                    this.table
                        .get_value::<Passes>(&(), &account)
                        .await?
                        .is_some(),
                )
            })
            .await?;
        if admitted {
            Ok(())
        } else {
            Err(BucketError::NotAdmitted(account.to_hex()))
        }
    }
}
