//! The ledger's rows. Every key of these kinds is made here.
//!
//! | kind | partition key | sort key | value | written by |
//! |---|---|---|---|---|
//! | `lh` | `lh` | `head` | [`Head`]: the newest checkpoint as its sequencer signed it | any member, by a conditional write from the head it extends |
//! | `lh` | `lh` | `cosigned` | [`Head`]: the newest checkpoint with a quorum of cosignatures | any member (readers check the cosignatures) |
//! | `lb` | `lb/<first entry / 65536>` | `<first entry, 20 digits>-<batch hash>` | [`Batch`] | its first claimant (its key names its content) |
//! | `lp` | `lp` | node id | [`PriceList`]: the node's prices | that node, a member |
//! | `cr` | `cr/<account>` | grant id | [`CreditGrant`]: credits the admin granted the account | the admin key |
//! | `pp` | `pp/<account>` | `<bucket>/<start ms>` | [`crate::prepay::Prepay`]: credits set aside for a bucket until a date | the account (or its session) |
//! | `lf` | `lf/<offender>` | the wrong receipt's hash | [`crate::fault::Fault`] | its first claimant (readers count only faults that check) |

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId, wire};
use weft_meta::{Rules, Schema, Writer, row_kind};

/// A batch of entries as the log took them, by its first entry, size and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    /// Index of its first entry.
    pub first: u64,
    /// How many entries.
    pub count: u64,
    /// [`batch_hash`] of it.
    pub hash: ContentHash,
}

/// Entries the log took at once, who sequenced them, and the batch before them (to walk back
/// from a head).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Index of the first entry.
    pub first: u64,
    /// The member that sequenced it (its batches count for nothing once it is revoked,
    /// unless a quorum cosigned them first).
    pub maker: NodeId,
    /// The entries.
    pub entries: Vec<Vec<u8>>,
    /// The batch before (`None` for the log's first).
    pub prev: Option<BatchRef>,
}

impl Batch {
    /// Its reference.
    pub fn reference(&self) -> BatchRef {
        BatchRef {
            first: self.first,
            count: self.entries.len() as u64,
            hash: ContentHash::of(&wire::encode(self)),
        }
    }
}

/// A checkpoint note and the batch that brought the log to its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The checkpoint, a C2SP signed note.
    pub note: String,
    /// The batch that ends at its size.
    pub batch: BatchRef,
}

row_kind! {
    /// The ledger's head and newest cosigned checkpoint.
    pub struct Heads {
        kind: "lh",
        writer: Writer::Member,
        part: (),
        sort: str,
        value: Head,
        partition: |_| String::new(),
    }
}

row_kind! {
    /// The ledger's batches.
    pub struct Batches {
        kind: "lb",
        writer: Writer::FirstClaim,
        part: u64,
        sort: str,
        value: Batch,
        partition: |block| block.to_string(),
    }
}

/// A node's published prices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceList {
    /// The prices, micro-credits per unit.
    pub prices: crate::price::Prices,
    /// Unix ms they were set.
    pub set_ms: u64,
}

row_kind! {
    /// Every node's prices.
    pub struct PriceRows {
        kind: "lp",
        writer: Writer::SortKeyMember,
        part: (),
        sort: str,
        value: PriceList,
        partition: |_| String::new(),
    }
}

/// Credits the fabric's admin granted an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditGrant {
    /// Micro-credits.
    pub amount: u64,
    /// Unix ms it was granted.
    pub at_ms: u64,
    /// Why (free text, at most 200 bytes).
    pub memo: String,
}

row_kind! {
    /// Credit grants, by account.
    pub struct Grants {
        kind: "cr",
        writer: Writer::Admin,
        part: NodeId,
        sort: str,
        value: CreditGrant,
        partition: |account| account.to_hex(),
    }
}

/// The sort key of the head row.
pub const HEAD: &str = "head";
/// The sort key of the newest cosigned checkpoint's row.
pub const COSIGNED: &str = "cosigned";

/// Where a batch's row is: its partition and sort key.
pub fn batch_key(batch: &BatchRef) -> (u64, String) {
    (
        batch.first / 65_536,
        format!("{:020}-{}", batch.first, batch.hash.to_hex()),
    )
}

/// Declare the ledger's row kinds.
pub fn register(rules: &mut Rules) {
    rules.add(Heads::KIND, Heads::WRITER);
    rules.add(Batches::KIND, Batches::WRITER);
    rules.add(PriceRows::KIND, PriceRows::WRITER);
    rules.add(Grants::KIND, Grants::WRITER);
    rules.add(
        crate::prepay::Prepays::KIND,
        <crate::prepay::Prepays as Schema>::WRITER,
    );
    crate::fault::register(rules);
}
