//! Per-account quotas: bytes stored and jobs running, set by the fabric's admin, open or
//! invite-only alike (the ledger will price them).
//!
//! The quotas are rows only the admin key writes ([`Quotas`]: `default` for every account,
//! an account's own row instead of it). What an account stores is its *tally*: each node that
//! makes one of the account's objects held or let go (the moment its reference is written or
//! released, the same event garbage collection counts) adds the object's size to its own
//! counters for that bucket ([`Tallies`], one row per account, node and bucket, signed like the
//! bucket's other rows: by the owner or a delegate whose scope writes the bucket), so no two
//! nodes write one row and the account's usage is one partition read. A write is refused once
//! the tally says it would pass the quota, before it is committed (its bytes become garbage).
//! The tally is plain (replicas see a bucket's bytes, as they see its shards' sizes); names and
//! records stay sealed.
//!
//! Checked by the node the account acts through. An account whose holder runs a member can
//! write its rows without that check; what such a member stores is bounded on every other node
//! by its disk share until its objects are registered, and by nothing after — holders' own
//! accounting with receipts is the ledger's.

use serde::{Deserialize, Serialize};

use crate::schema::{DEFAULT_QUOTA, Quotas, Tallies, TallyKey};
use crate::{Acting, BucketError};

/// An account's quota (`None`: no limit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountQuota {
    /// Bytes stored (every kept version and uploaded part counts, at its plaintext size).
    pub bytes: Option<u64>,
    /// Jobs queued or running at once.
    pub jobs: Option<u32>,
    /// When the admin set it (Unix ms).
    pub set_ms: u64,
    /// AI tokens (prompt and generated) in any minute, as the ledger's receipts count them.
    pub tokens_per_minute: Option<u64>,
    /// The free allowance of credits, micro-credits (`None`: the fabric's default,
    /// `weft_ledger::price::DEFAULT_ALLOWANCE`).
    pub allowance: Option<u64>,
}

/// [`AccountQuota`] in row format 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccountQuotaV1 {
    pub bytes: Option<u64>,
    pub jobs: Option<u32>,
    pub set_ms: u64,
}

impl From<AccountQuotaV1> for AccountQuota {
    fn from(v: AccountQuotaV1) -> AccountQuota {
        AccountQuota {
            bytes: v.bytes,
            jobs: v.jobs,
            set_ms: v.set_ms,
            ..AccountQuota::default()
        }
    }
}

/// What one node counted of one bucket: bytes made held, bytes let go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Bytes whose references this node wrote.
    pub held: u64,
    /// Bytes whose references this node released.
    pub released: u64,
}

/// The bucket slot of objects stored under no name (no bucket name can be it).
pub const UNNAMED: &str = "~unnamed";

/// This node's counters of one bucket of an account, as last written (`None`: not read yet).
/// Held across the read and the write, so one node's updates of its row never interleave.
pub(crate) type Counter = std::sync::Arc<tokio::sync::Mutex<Option<Tally>>>;

impl Acting {
    /// The quota that applies to this account: its own, else the fabric's default (every
    /// quota row read at most once per [`crate::policy::CHECK_TTL`] per node).
    pub async fn quota(&self) -> Result<AccountQuota, BucketError> {
        self.quota_of(&self.account()).await
    }

    /// The quota that applies to `account` (as [`Acting::quota`]): what a front end that
    /// serves an account by its key, not its session, enforces.
    pub async fn quota_of(&self, account: &weft_core::NodeId) -> Result<AccountQuota, BucketError> {
        let this = self.clone();
        let all = self
            .policy_checks
            .quotas
            .get((), &self.tasks, move || async move {
                this.table.hears_majority()?;
                let all: std::collections::HashMap<String, AccountQuota> = this
                    .table
                    .list::<Quotas>(&(), "")
                    .await?
                    .into_iter()
                    .filter_map(|(who, row)| row.known().map(|q| (who, q)))
                    .collect();
                Ok::<_, BucketError>(all)
            })
            .await?;
        Ok(all
            .get(&account.to_hex())
            .or_else(|| all.get(DEFAULT_QUOTA))
            .cloned()
            .unwrap_or_default())
    }

    /// Bytes this account stores, from its tally: every node's rows of it, one partition read.
    pub async fn usage(&self) -> Result<u64, BucketError> {
        let account = self.account();
        let rows = self
            .table
            .list::<Tallies>(&account, &format!("{}/", account.to_hex()))
            .await?;
        let (mut held, mut released) = (0u64, 0u64);
        for (_, row) in rows {
            if let Some(t) = row.known() {
                held = held.saturating_add(t.held);
                released = released.saturating_add(t.released);
            }
        }
        Ok(held.saturating_sub(released))
    }

    /// Refuse a write of `bytes` more that would take the account past its quota.
    pub(crate) async fn room_for(&self, bytes: u64) -> Result<(), BucketError> {
        self.room_replacing(bytes, None).await
    }

    /// [`Acting::room_for`] a new version of `key` in `b`: in a bucket that keeps one version,
    /// the one it replaces is let go, so only the difference counts.
    pub(crate) async fn room_for_object(
        &self,
        b: &crate::BucketRecord,
        key: &str,
        bytes: u64,
    ) -> Result<(), BucketError> {
        self.room_replacing(bytes, (b.versions == 1).then_some((b, key)))
            .await
    }

    async fn room_replacing(
        &self,
        bytes: u64,
        replacing: Option<(&crate::BucketRecord, &str)>,
    ) -> Result<(), BucketError> {
        let Some(limit) = self.quota().await?.bytes else {
            return Ok(());
        };
        let mut used = self.usage().await?;
        if let Some((b, key)) = replacing
            && let Ok(Some(old)) = self.rows(b)?.object(key).await
        {
            used = used.saturating_sub(old.size);
        }
        if used.saturating_add(bytes) > limit || (bytes == 0 && used >= limit) {
            return Err(BucketError::OverQuota(format!(
                "account {} stores {used} of its {limit} bytes; {bytes} more would pass its quota",
                self.account().short()
            )));
        }
        Ok(())
    }

    /// Count `bytes` of `bucket` as let go, after the fact: a failure leaves the tally high
    /// (the account's loss, never a way past its quota), and is logged.
    pub(crate) async fn count_released(&self, bucket: &str, bytes: u64) {
        if let Err(e) = self.count(bucket, bytes, false).await {
            tracing::warn!(bucket, bytes, error = %e, "could not count released bytes");
        }
    }

    /// Count `bytes` of `bucket` as held (or let go) by this account, on this node's row: one
    /// write (and, the first time this node counts for the bucket, one read).
    pub(crate) async fn count(
        &self,
        bucket: &str,
        bytes: u64,
        hold: bool,
    ) -> Result<(), BucketError> {
        if bytes == 0 {
            return Ok(());
        }
        let key = TallyKey {
            owner: self.account(),
            node: self.table.node_key().public(),
            bucket: bucket.to_string(),
        };
        let counter = {
            let mut tallies = self.policy_checks.tallies.lock();
            if tallies.len() > 10_000 {
                tallies.clear();
            }
            tallies
                .entry((key.owner, key.bucket.clone()))
                .or_default()
                .clone()
        };
        let mut counter = counter.lock().await;
        let mut t = match *counter {
            Some(t) => t,
            None => self
                .table
                .get_value::<Tallies>(&key.owner, &key)
                .await?
                .unwrap_or_default(),
        };
        if hold {
            t.held = t.held.saturating_add(bytes);
        } else {
            t.released = t.released.saturating_add(bytes);
        }
        // Unknown until the write lands: re-read next time if it does not.
        *counter = None;
        self.table
            .put::<Tallies>(self.signer()?.clone(), &key.owner, &key, Some(&t))
            .await?;
        *counter = Some(t);
        Ok(())
    }
}

impl Acting {
    /// Until when bucket `b` is kept by a prepay of its owner running now (every owner's
    /// prepays read at most once per [`crate::policy::CHECK_TTL`] per node): nothing it holds
    /// may be deleted or replaced before then.
    pub async fn kept_until(&self, b: &crate::BucketRecord) -> Result<Option<u64>, BucketError> {
        let this = self.clone();
        let owner = b.owner;
        let prepays = self
            .policy_checks
            .prepays
            .get(owner, &self.tasks, move || async move {
                weft_ledger::prepay::prepays(&this.table, &owner)
                    .await
                    .map_err(BucketError::from)
            })
            .await?;
        Ok(weft_ledger::prepay::kept_until(
            &prepays,
            &b.name,
            weft_net::now_ms(),
        ))
    }

    /// Forget this node's copy of `owner`'s prepays (the next check reads them): after a
    /// prepay made through this node, which holds here at once.
    pub fn forget_prepays(&self, owner: &weft_core::NodeId) {
        self.policy_checks.prepays.forget(owner);
    }

    /// Refuse `what` on bucket `b` while a prepay keeps it.
    pub(crate) async fn not_kept(
        &self,
        b: &crate::BucketRecord,
        what: &str,
    ) -> Result<(), BucketError> {
        match self.kept_until(b).await? {
            Some(until) => Err(kept(b, until, what)),
            None => Ok(()),
        }
    }
}

/// Why `what` on bucket `b`, kept until `until` (Unix ms), is refused.
pub(crate) fn kept(b: &crate::BucketRecord, until: u64, what: &str) -> BucketError {
    BucketError::Kept(format!(
        "bucket {} is prepaid and keeps what it holds until {} (Unix ms {until}): {what} is refused until then",
        b.name,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(until)
        )
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_meta::schema::{Value, decode_value, encode_value};

    #[test]
    fn quotas_written_before_tokens_and_allowances_still_read() {
        let mut v1 = vec![1u8];
        v1.extend(weft_core::wire::encode(&AccountQuotaV1 {
            bytes: Some(5),
            jobs: Some(2),
            set_ms: 9,
        }));
        assert_eq!(
            decode_value::<Quotas>(&v1),
            Value::Known(AccountQuota {
                bytes: Some(5),
                jobs: Some(2),
                set_ms: 9,
                tokens_per_minute: None,
                allowance: None,
            })
        );
        let now = AccountQuota {
            tokens_per_minute: Some(100),
            allowance: Some(0),
            ..AccountQuota::default()
        };
        assert_eq!(
            decode_value::<Quotas>(&encode_value::<Quotas>(&now)),
            Value::Known(now)
        );
    }
}
