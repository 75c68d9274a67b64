//! The receipts this node issued, in order, kept until the end of the node's data: its own
//! chain, from which it hands the sequencer whatever the log does not hold yet.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use weft_core::{ContentHash, NodeId, SecretKey};

use crate::receipt::{RECEIPT_FORMAT, Receipt, ReceiptBody, Work};

const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");

/// The issued-receipts store failed.
#[derive(Debug, thiserror::Error)]
#[error("the receipt store: {0}")]
pub struct IssuedError(String);

fn err(e: impl std::fmt::Display) -> IssuedError {
    IssuedError(e.to_string())
}

/// This node's chain of receipts.
pub struct Issued {
    db: Database,
    next: u64,
    last: ContentHash,
}

impl Issued {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<Issued, IssuedError> {
        let db = Database::create(path).map_err(err)?;
        let (mut next, mut last) = (0, ContentHash([0; 32]));
        let tx = db.begin_read().map_err(err)?;
        match tx.open_table(RECEIPTS) {
            Ok(table) => {
                if let Some(entry) = table.last().map_err(err)? {
                    let (seq, bytes) = entry;
                    let receipt = Receipt::from_entry(bytes.value()).map_err(err)?;
                    next = seq.value() + 1;
                    last = receipt.hash();
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e)),
        }
        drop(tx);
        Ok(Issued { db, next, last })
    }

    /// How many receipts were issued.
    pub fn count(&self) -> u64 {
        self.next
    }

    /// Sign and keep the next receipt (durably, before it is returned).
    pub fn issue(
        &mut self,
        key: &SecretKey,
        at_ms: u64,
        account: NodeId,
        request: ContentHash,
        work: Work,
    ) -> Result<Receipt, IssuedError> {
        let receipt = Receipt::sign(
            key,
            ReceiptBody {
                format: RECEIPT_FORMAT,
                node: key.public(),
                seq: self.next,
                prev: self.last,
                at_ms,
                account,
                request,
                work,
            },
        );
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(RECEIPTS).map_err(err)?;
            table
                .insert(self.next, receipt.to_entry().as_slice())
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.next += 1;
        self.last = receipt.hash();
        Ok(receipt)
    }

    /// Up to `max` receipts from number `from` on.
    pub fn from(&self, from: u64, max: usize) -> Result<Vec<Receipt>, IssuedError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = match tx.open_table(RECEIPTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::new();
        for entry in table.range(from..).map_err(err)?.take(max) {
            let (_, bytes) = entry.map_err(err)?;
            out.push(Receipt::from_entry(bytes.value()).map_err(err)?);
        }
        Ok(out)
    }
}
