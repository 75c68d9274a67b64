//! Storage receipts: every `[repair] storage_receipts` period (an hour unless the operator
//! sets it) a node signs, for each account and bucket whose objects it holds shards of, a receipt for the
//! byte-hours it held them since its last one, with the audits it passed in the period. The
//! facts come from the healer (the catalog's placement, the accounts' signed references, the
//! auditors' tallies); a node its auditors quarantined bills nothing for the period. The
//! period's start and the audit count it was at are kept in the data dir, so a restart
//! neither bills twice nor loses a period.

use serde::{Deserialize, Serialize};
use weft_core::ContentHash;
use weft_ledger::Work;

use crate::{Node, NodeError};

/// The file the last bill is kept in.
const BILLED_FILE: &str = "storage-billed.json";

/// Where billing stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Billed {
    /// Unix ms the billed period ended.
    until_ms: u64,
    /// Audits passed, all time, at that moment.
    audits: u64,
}

/// What one storage bill did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageBill {
    /// The period, Unix ms.
    pub from_ms: u64,
    /// See `from_ms`.
    pub until_ms: u64,
    /// Receipts signed (one per account held for).
    pub receipts: usize,
    /// Byte-hours billed in all.
    pub byte_hours: u64,
    /// Why nothing was billed, if so.
    pub skipped: Option<String>,
}

impl Node {
    fn billed(&self) -> Option<Billed> {
        let bytes = std::fs::read(self.inner.dir.path(BILLED_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The storage receipts loop, one bill per period.
    pub(crate) async fn bill_storage(self) {
        let every = self.inner.healer.storage_receipts_every();
        loop {
            tokio::time::sleep(every).await;
            match self.bill_storage_now().await {
                Ok(b) => {
                    tracing::debug!(receipts = b.receipts, byte_hours = b.byte_hours, skipped = ?b.skipped, "storage billed")
                }
                Err(e) => tracing::warn!(error = %e, "storage not billed this period"),
            }
        }
    }

    /// Bill the storage held since the last bill (or, the first time, start the first period
    /// now): one receipt per account held for.
    pub async fn bill_storage_now(&self) -> Result<StorageBill, NodeError> {
        let now = weft_net::now_ms();
        let healer = &self.inner.healer;
        let (audits, quarantined) = healer.audit_standing().await.map_err(NodeError::Billing)?;
        let Some(last) = self.billed() else {
            self.save_billed(Billed {
                until_ms: now,
                audits,
            })?;
            return Ok(StorageBill {
                from_ms: now,
                until_ms: now,
                skipped: Some("the first period starts now".into()),
                ..StorageBill::default()
            });
        };
        let mut bill = StorageBill {
            from_ms: last.until_ms,
            until_ms: now,
            ..StorageBill::default()
        };
        if quarantined {
            bill.skipped = Some("quarantined by its auditors".into());
        } else {
            let held = healer
                .held_for_accounts()
                .await
                .map_err(NodeError::Billing)?;
            let elapsed = now.saturating_sub(last.until_ms);
            let passed = u32::try_from(audits.saturating_sub(last.audits)).unwrap_or(u32::MAX);
            let mut accounts: Vec<_> = held.into_iter().collect();
            accounts.sort_by(|(a, _), (b, _)| a.cmp(b));
            for ((account, bucket), h) in accounts {
                let byte_hours = weft_ledger::price::byte_hours(h.bytes, elapsed);
                if byte_hours == 0 {
                    continue;
                }
                // Bound to the objects whose references the account signed, and the period.
                let request = ContentHash::of(&weft_core::wire::encode(&(
                    "weft/storage",
                    account,
                    &bucket,
                    last.until_ms,
                    now,
                    &h.objects,
                )));
                self.ledger()
                    .issue(
                        account,
                        request,
                        Work::Storage {
                            bucket,
                            byte_hours,
                            audits: passed,
                        },
                    )
                    .map_err(|e| NodeError::Billing(format!("storage receipt: {e}")))?;
                bill.receipts += 1;
                bill.byte_hours = bill.byte_hours.saturating_add(byte_hours);
            }
        }
        self.save_billed(Billed {
            until_ms: now,
            audits,
        })?;
        Ok(bill)
    }

    fn save_billed(&self, b: Billed) -> Result<(), NodeError> {
        let json = serde_json::to_vec(&b).map_err(|e| NodeError::Billing(e.to_string()))?;
        self.inner
            .dir
            .write_atomic(BILLED_FILE, &json)
            .map_err(NodeError::from)
    }
}
