//! Transfer receipts: the bytes a node serves to each account's clients (object reads through
//! the API and S3) are summed per account and signed as one receipt per account every
//! [`TRANSFER_EVERY`] (or sooner, past [`TRANSFER_MAX`] bytes), so a busy gateway adds a few
//! receipts a minute to the log, not one per request. The receipt is bound to what was
//! served: a hash over every read's description (bucket, key, version, range) in order. What
//! is summed but not yet signed when a node stops is not billed.

use std::collections::HashMap;
use std::time::Duration;

use weft_core::{ContentHash, NodeId};

use crate::receipt::Work;
use crate::{Ledger, LedgerError};

/// How often a node signs what it served.
pub const TRANSFER_EVERY: Duration = Duration::from_secs(10);
/// Bytes served to one account after which it is signed at once.
pub const TRANSFER_MAX: u64 = 1 << 30;
/// Accounts summed at once (past it, the sums are signed early).
const ACCOUNTS_MAX: usize = 100_000;

/// One account's bytes served since the last receipt.
pub(crate) struct Served {
    bytes: u64,
    reads: blake3::Hasher,
}

impl Ledger {
    /// Count `bytes` served to a client of `account` for the read `what` describes.
    pub fn meter_transfer(&self, account: NodeId, what: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let full = {
            let mut served = self.inner.served.lock();
            let s = served.entry(account).or_insert_with(|| Served {
                bytes: 0,
                reads: blake3::Hasher::new_derive_key("weft/transfer"),
            });
            s.bytes = s.bytes.saturating_add(bytes);
            s.reads.update(&(what.len() as u64).to_le_bytes());
            s.reads.update(what.as_bytes());
            s.reads.update(&bytes.to_le_bytes());
            s.bytes >= TRANSFER_MAX || served.len() >= ACCOUNTS_MAX
        };
        if full && let Err(e) = self.sign_transfers() {
            tracing::warn!(error = %e, "transfer receipts not signed");
        }
    }

    /// Sign one transfer receipt per account served since the last time; how many.
    pub fn sign_transfers(&self) -> Result<usize, LedgerError> {
        let served = std::mem::take(&mut *self.inner.served.lock());
        let n = served.len();
        for (account, s) in served {
            let request = ContentHash(*s.reads.finalize().as_bytes());
            self.issue(account, request, Work::Transfer { bytes: s.bytes })?;
        }
        Ok(n)
    }

    pub(crate) async fn transfer_loop(&self) {
        loop {
            tokio::time::sleep(TRANSFER_EVERY).await;
            if let Err(e) = self.sign_transfers() {
                tracing::warn!(error = %e, "transfer receipts not signed");
            }
        }
    }
}

/// The sums, per account.
pub(crate) type Meter = HashMap<NodeId, Served>;
