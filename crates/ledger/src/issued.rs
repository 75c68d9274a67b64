//! The receipts this node issued, in order, kept until the end of the node's data: its own
//! chain, from which it hands the sequencer whatever the log does not hold yet.
//!
//! Receipts are signed at once and written in groups ([`Issued::flush`], one synced
//! transaction for all issued since the last): only written ones are ever handed over, so a
//! node that stops before a write never shows anyone a receipt it then numbers again.

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
    /// Signed, not yet written.
    pending: Vec<Receipt>,
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
        Ok(Issued {
            db,
            next,
            last,
            pending: Vec::new(),
        })
    }

    /// How many receipts were issued.
    pub fn count(&self) -> u64 {
        self.next
    }

    /// Sign the next receipt; it is written by the next [`Issued::flush`].
    pub fn issue(
        &mut self,
        key: &SecretKey,
        at_ms: u64,
        account: NodeId,
        request: ContentHash,
        work: Work,
        price: u64,
    ) -> Result<Receipt, IssuedError> {
        let receipt = Receipt::sign_priced(
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
            price,
        );
        self.next += 1;
        self.last = receipt.hash();
        self.pending.push(receipt.clone());
        Ok(receipt)
    }

    /// Write every receipt signed since the last flush, in one synced transaction.
    pub fn flush(&mut self) -> Result<(), IssuedError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(RECEIPTS).map_err(err)?;
            for r in &self.pending {
                table
                    .insert(r.body.seq, r.to_entry().as_slice())
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.pending.clear();
        Ok(())
    }

    /// How many receipts are written.
    pub fn written(&self) -> u64 {
        self.next - self.pending.len() as u64
    }

    /// Up to `max` written receipts from number `from` on.
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
