//! Prepaid buckets (Arweave's pay-once storage, for a term): an account sets credits aside for
//! one of its buckets until a date. The credits leave its balance at once; the bucket's storage
//! receipts (which name their bucket) posted within the term are paid from them instead of the
//! balance until they are used up; and the bucket's objects are kept for the term — no delete,
//! overwrite or bucket removal is taken until it ends.
//!
//! A prepay is a row of the account's own (`pp/<account>`, sorted by bucket and start), signed
//! by the account or its session like its other rows, and read by every node that checks a
//! balance or a delete. It binds the fabric's nodes, not the account's own key: a client that
//! signs as the account could rewrite its row, which only that account loses by.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;
use weft_meta::{MetaError, Signer, Table, Writer, row_kind};

/// The most prepays an account's balance counts.
const PREPAYS_MAX: usize = 1_000;

/// Credits set aside for a bucket until a date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    /// The bucket.
    pub bucket: String,
    /// Micro-credits.
    pub amount: u64,
    /// Unix ms the term starts (the prepay was made).
    pub from_ms: u64,
    /// Unix ms it ends.
    pub until_ms: u64,
}

row_kind! {
    /// Prepays, by account (sort key: `<bucket>/<start ms, 13 digits>`).
    pub struct Prepays {
        kind: "pp",
        writer: Writer::PartitionKey(1),
        part: NodeId,
        sort: str,
        value: Prepay,
        partition: |account| account.to_hex(),
    }
}

impl Prepay {
    /// Whether its figures make sense (a row with others is ignored).
    pub fn valid(&self) -> bool {
        !self.bucket.is_empty()
            && self.bucket.len() <= 63
            && self.amount > 0
            && self.from_ms < self.until_ms
    }
}

/// `account`'s prepays, oldest first (at most [`PREPAYS_MAX`]; invalid rows aside).
pub async fn prepays(table: &Table, account: &NodeId) -> Result<Vec<Prepay>, MetaError> {
    let mut out: Vec<Prepay> = table
        .list::<Prepays>(account, "")
        .await?
        .into_iter()
        .take(PREPAYS_MAX)
        .filter_map(|(sort, row)| {
            let p = row.known()?;
            (p.valid() && sort == sort_key(&p)).then_some(p)
        })
        .collect();
    out.sort_by_key(|p| (p.from_ms, p.bucket.clone()));
    Ok(out)
}

/// Until when `bucket` is kept by one of `prepays` (its owner's) running at `now_ms`, if one is.
pub fn kept_until(prepays: &[Prepay], bucket: &str, now_ms: u64) -> Option<u64> {
    prepays
        .iter()
        .filter(|p| p.bucket == bucket && p.from_ms <= now_ms && now_ms < p.until_ms)
        .map(|p| p.until_ms)
        .max()
}

/// Keep `prepay` for `account`, signed by `signer` (the account or its session).
pub async fn put(
    table: &Table,
    signer: &Signer,
    account: &NodeId,
    prepay: &Prepay,
) -> Result<(), MetaError> {
    table
        .put::<Prepays>(signer.clone(), account, &sort_key(prepay), Some(prepay))
        .await
        .map(|_| ())
}

impl crate::Ledger {
    /// Keep `prepay` for `account`, signed by `signer` (the account or its session); the next
    /// balance of the account counts it. The caller checked the account has the credits.
    pub async fn prepay(
        &self,
        signer: &Signer,
        account: &NodeId,
        prepay: &Prepay,
    ) -> Result<(), crate::LedgerError> {
        put(&self.inner.table, signer, account, prepay).await?;
        self.forget_credits(account);
        Ok(())
    }

    /// `account`'s prepays, oldest first.
    pub async fn prepays(&self, account: &NodeId) -> Result<Vec<Prepay>, MetaError> {
        prepays(&self.inner.table, account).await
    }
}

fn sort_key(p: &Prepay) -> String {
    format!("{}/{:013}", p.bucket, p.from_ms)
}

/// Of `prepays`, what the storage charges `charged(bucket, from, until)` used up: per bucket,
/// the charges posted within its prepays' span, up to what they set aside.
pub fn covered(prepays: &[Prepay], charged: impl Fn(&str, u64, u64) -> u64) -> u64 {
    let mut buckets: Vec<&str> = prepays.iter().map(|p| p.bucket.as_str()).collect();
    buckets.sort();
    buckets.dedup();
    buckets
        .into_iter()
        .map(|b| {
            let of: Vec<&Prepay> = prepays.iter().filter(|p| p.bucket == b).collect();
            let set_aside = of.iter().fold(0u64, |s, p| s.saturating_add(p.amount));
            let from = of.iter().map(|p| p.from_ms).min().unwrap_or(0);
            let until = of.iter().map(|p| p.until_ms).max().unwrap_or(0);
            charged(b, from, until).min(set_aside)
        })
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp(bucket: &str, amount: u64, from_ms: u64, until_ms: u64) -> Prepay {
        Prepay {
            bucket: bucket.into(),
            amount,
            from_ms,
            until_ms,
        }
    }

    #[test]
    fn a_prepay_pays_its_buckets_storage_in_its_term_up_to_what_it_set_aside() {
        // Storage of bucket `a` charged 10 per ms over 0..1000, of `b` 1 per ms.
        let charged = |bucket: &str, from: u64, until: u64| match bucket {
            "a" => (until.min(1000) - from.min(1000)) * 10,
            _ => until.min(1000) - from.min(1000),
        };
        assert_eq!(covered(&[pp("a", 1_000_000, 0, 500)], charged), 5_000);
        // Used up: no more than was set aside.
        assert_eq!(covered(&[pp("a", 300, 0, 500)], charged), 300);
        // Two prepays of one bucket cover its span once, up to both amounts.
        assert_eq!(
            covered(&[pp("a", 2_000, 0, 300), pp("a", 2_000, 200, 500)], charged),
            4_000
        );
        // Another bucket's storage is not paid by it.
        assert_eq!(covered(&[pp("b", 100, 0, 50)], charged), 50);
        let kept = [pp("a", 1, 10, 20), pp("a", 1, 15, 40), pp("b", 1, 0, 100)];
        assert_eq!(kept_until(&kept, "a", 16), Some(40));
        assert_eq!(kept_until(&kept, "a", 5), None);
        assert_eq!(kept_until(&kept, "a", 40), None);
        assert!(!pp("", 1, 0, 1).valid());
        assert!(!pp("a", 0, 0, 1).valid());
        assert!(!pp("a", 1, 5, 5).valid());
    }
}
