//! The fabric's policy for accounts: *open* (any key is an account, the default) or
//! *invite-only* (an account acts on buckets only once the fabric's admin admitted it).
//!
//! Both are rows only the fabric's admin key writes ([`weft_meta::Writer::Admin`]; replicas
//! refuse anyone else's, delegates' included): [`Policies`] (the accounts policy under
//! [`ACCOUNTS`]) and [`Passes`] (one per admitted account; deleting it dismisses the account).
//! [`Acting::entitled`] — which every bucket operation passes, whatever the front end — and
//! bucket creation check them, from a cache a few seconds fresh shared by every [`Acting`] of a
//! node, so a dismissed account stops within [`CHECK_TTL`] on every node. A policy that cannot
//! be read refuses (fails closed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_core::NodeId;

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

/// Recent policy, pass and quota checks, and this node's tally counters, shared by every
/// [`Acting`] of a node.
#[derive(Clone, Default)]
pub(crate) struct PolicyChecks(pub(crate) Arc<Mutex<Checks>>);

#[derive(Default)]
pub(crate) struct Checks {
    invite_only: Option<(Instant, bool)>,
    passes: HashMap<NodeId, (Instant, bool)>,
    /// Every `quota` row, as last read.
    pub(crate) quotas: Option<(Instant, HashMap<String, crate::quota::AccountQuota>)>,
    /// Bucket records, as last read (see [`Acting::bucket_recent`]).
    pub(crate) buckets: HashMap<String, (Instant, crate::BucketRecord)>,
    /// This node's counters per (account, bucket): `None` until read from the table.
    pub(crate) tallies: HashMap<(NodeId, String), crate::quota::Counter>,
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
        let cached = self.policy_checks.0.lock().invite_only;
        let invite_only = match cached {
            Some((at, v)) if at.elapsed() < CHECK_TTL => v,
            _ => {
                self.table.hears_majority()?;
                let asked = Instant::now();
                let v = self
                    .table
                    .get_value::<Policies>(&(), ACCOUNTS)
                    .await?
                    .is_some_and(|p| p.invite_only);
                self.policy_checks.0.lock().invite_only = Some((asked, v));
                v
            }
        };
        if !invite_only {
            return Ok(());
        }
        let cached = self.policy_checks.0.lock().passes.get(&account).copied();
        let admitted = match cached {
            Some((at, v)) if at.elapsed() < CHECK_TTL => v,
            _ => {
                self.table.hears_majority()?;
                let asked = Instant::now();
                let v = self
                    .table
                    .get_value::<Passes>(&(), &account)
                    .await?
                    .is_some();
                let mut checks = self.policy_checks.0.lock();
                if checks.passes.len() > 10_000 {
                    checks.passes.clear();
                }
                checks.passes.insert(account, (asked, v));
                v
            }
        };
        if admitted {
            Ok(())
        } else {
            Err(BucketError::NotAdmitted(account.to_hex()))
        }
    }
}
