//! Credits on a node: publishing this node's prices, reading every node's, an account's
//! balance from this node's copy of the log and the admin's grants, and granting.
//!
//! What an account spent is what its receipts in the settled log cost ([`crate::price`]);
//! what it was granted is the admin's `cr` rows (signed by the admin key, checked by every
//! replica and reader). Holds for work under way are the caller's (the job service counts its
//! account's queued and running jobs at their most).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_core::{NodeId, SecretKey};
use weft_meta::{MetaError, Table};

use crate::price::{Balance, Prices};
use crate::schema::{CreditGrant, Grants, PriceList, PriceRows};
use crate::{Ledger, LedgerError};

/// How long every node's prices, as read, are used before they are read again.
const PRICES_FRESH: Duration = Duration::from_secs(5);
/// How long an account's grants, as read, count before they are read again (a request's
/// balance check then costs no round trip; a grant counts everywhere within this).
const GRANTS_FRESH: Duration = Duration::from_secs(3);
/// The most accounts whose grants are kept as read.
const GRANTS_CACHED: usize = 10_000;
/// The most grants of one account read.
const GRANTS_MAX: usize = 10_000;
/// The longest memo of a grant.
pub const MEMO_MAX: usize = 200;

/// Every node's published prices, read from the table now; nodes that published none, or a
/// list out of bounds, are absent.
pub async fn read_price_lists(table: &Table) -> Result<HashMap<NodeId, Prices>, MetaError> {
    Ok(table
        .list::<PriceRows>(&(), "")
        .await?
        .into_iter()
        .filter_map(|(node, row)| {
            let id: NodeId = node.parse().ok()?;
            let list = row.known()?;
            list.prices.valid().then_some((id, list.prices))
        })
        .collect())
}

impl Ledger {
    /// This node's prices.
    pub fn prices(&self) -> Prices {
        self.inner.prices
    }

    /// Write this node's prices to its `lp` row (again until the table takes it).
    pub(crate) async fn publish_prices(&self) {
        let me = self.inner.key.public().to_hex();
        let list = PriceList {
            prices: self.inner.prices,
            set_ms: weft_net::now_ms(),
        };
        for attempt in 0..60u64 {
            let current = self
                .inner
                .table
                .get_value::<PriceRows>(&(), me.as_str())
                .await;
            if matches!(&current, Ok(Some(p)) if p.prices == list.prices) {
                return;
            }
            match self
                .inner
                .table
                .put::<PriceRows>(&self.inner.key, &(), me.as_str(), Some(&list))
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot publish this node's prices yet");
                    tokio::time::sleep(Duration::from_millis(500 * (attempt + 1).min(10))).await;
                }
            }
        }
    }

    /// Every node's published prices (read at most every few seconds); nodes that published
    /// none, or a list out of bounds, are absent.
    pub async fn price_lists(&self) -> HashMap<NodeId, Prices> {
        {
            let cached = self.inner.price_lists.lock();
            if cached.1.is_some_and(|at| at.elapsed() < PRICES_FRESH) {
                return cached.0.clone();
            }
        }
        let Ok(lists) = read_price_lists(&self.inner.table).await else {
            return self.inner.price_lists.lock().0.clone();
        };
        *self.inner.price_lists.lock() = (lists.clone(), Some(Instant::now()));
        lists
    }

    /// `account`'s credits as this node's copy of the log and the admin's grants say, with
    /// `held` micro-credits held for its work under way and `allowance` its free allowance
    /// (the admin's quota for it, else [`crate::price::DEFAULT_ALLOWANCE`]).
    pub async fn balance(
        &self,
        account: &NodeId,
        held: u64,
        allowance: u64,
    ) -> Result<Balance, LedgerError> {
        let cached = self
            .inner
            .granted
            .lock()
            .get(account)
            .filter(|(_, _, at)| at.elapsed() < GRANTS_FRESH)
            .map(|(g, p, _)| (*g, p.clone()));
        let (granted, prepays) = match cached {
            Some(c) => c,
            None => {
                let g = self
                    .grants(account)
                    .await?
                    .iter()
                    .fold(0u64, |sum, (_, g)| sum.saturating_add(g.amount));
                let p =
                    std::sync::Arc::new(crate::prepay::prepays(&self.inner.table, account).await?);
                let mut cache = self.inner.granted.lock();
                if cache.len() >= GRANTS_CACHED {
                    cache.retain(|_, (_, _, at)| at.elapsed() < GRANTS_FRESH);
                }
                cache.insert(*account, (g, p.clone(), Instant::now()));
                (g, p)
            }
        };
        let replica = self.inner.replica.lock();
        let (spent, receipts) = replica.spent_by(account);
        let covered = crate::prepay::covered(&prepays, |bucket, from, until| {
            replica.storage_charged(account, bucket, from, until)
        });
        let prepaid = prepays.iter().fold(0u64, |s, p| s.saturating_add(p.amount));
        Ok(Balance {
            account: account.to_hex(),
            allowance,
            granted,
            spent,
            receipts,
            held,
            prepaid,
            covered,
        })
    }

    /// Forget what was read of `account`'s grants and prepays (the next balance reads them).
    pub fn forget_credits(&self, account: &NodeId) {
        self.inner.granted.lock().remove(account);
    }

    /// The admin's grants to `account`, oldest first.
    pub async fn grants(&self, account: &NodeId) -> Result<Vec<(String, CreditGrant)>, MetaError> {
        let mut out: Vec<(String, CreditGrant)> = self
            .inner
            .table
            .list::<Grants>(account, "")
            .await?
            .into_iter()
            .take(GRANTS_MAX)
            .filter_map(|(id, row)| row.known().map(|g| (id, g)))
            .collect();
        out.sort_by_key(|(id, g)| (g.at_ms, id.clone()));
        Ok(out)
    }

    /// What `node`'s settled receipts charged, micro-credits.
    pub fn earned(&self, node: &NodeId) -> u64 {
        self.inner.replica.lock().earned_by(node)
    }

    /// Grant `amount` micro-credits to `account`, signed with the fabric's admin key.
    pub async fn grant(
        &self,
        admin: &SecretKey,
        account: &NodeId,
        amount: u64,
        memo: &str,
    ) -> Result<String, LedgerError> {
        let at_ms = weft_net::now_ms();
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let id = format!("{at_ms:013}-{}", hex(&nonce));
        let memo: String = memo.chars().take(MEMO_MAX).collect();
        let grant = CreditGrant {
            amount,
            at_ms,
            memo,
        };
        self.inner
            .table
            .create::<Grants>(admin, account, id.as_str(), &grant)
            .await?;
        self.inner.granted.lock().remove(account);
        Ok(id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
