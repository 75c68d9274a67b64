//! The row kinds healing keeps in the metadata table. Every key of these kinds is made here.
//!
//! | kind | partition key | sort key | value | written by |
//! |---|---|---|---|---|
//! | `m` catalog | `m/<first byte of manifest hash, 2 hex>` | manifest hash | [`ManifestEntry`] | any member node |
//! | `r` references | `r/<manifest hash>` | `<account>/<holder>` ([`RefHolder`]) | `()` | the account named in the sort key |
//! | `rep` audit tallies | `rep/<audited node>` | `<auditor node>` | [`Tally`] | the auditor, a member node |

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};
use weft_meta::{Rules, Schema, SortKey, Writer, row_kind};

use crate::registry::ManifestEntry;
use crate::reputation::Tally;

/// Catalog rows: one per stored object.
pub struct CatalogRows;

impl Schema for CatalogRows {
    const KIND: &'static str = "m";
    const WRITER: Writer = Writer::Member;
    /// 2: [`ManifestEntry::max_price`] added.
    const FORMAT: u8 = 2;
    /// The first byte of the manifest hash.
    type Part = u8;
    type Sort = ContentHash;
    type Value = ManifestEntry;

    fn partition(first_byte: &u8) -> String {
        format!("{first_byte:02x}")
    }

    fn decode(format: u8, body: &[u8]) -> Result<ManifestEntry, weft_core::wire::WireError> {
        let mut entry: ManifestEntry = match format {
            1 => weft_core::wire::decode::<crate::registry::ManifestEntryV1>(body)?.into(),
            _ => weft_core::wire::decode(body)?,
        };
        entry.policy.max_price = entry.max_price;
        Ok(entry)
    }

    /// Versions only some replicas hold are combined so no repair's moves are lost: the newer
    /// version's moves win for the same shard, the older's are kept for the others.
    fn join(mut newer: ManifestEntry, older: &ManifestEntry) -> ManifestEntry {
        for (seg, shard, node) in &older.moved {
            if !newer.moved.iter().any(|(s, i, _)| s == seg && i == shard) {
                newer.moved.push((*seg, *shard, *node));
            }
        }
        newer.released_ms = newer.released_ms.or(older.released_ms);
        newer
    }
}

/// The catalog partition of an object.
pub fn catalog_part(manifest: &ContentHash) -> u8 {
    manifest.0[0]
}

/// Every catalog partition.
pub fn catalog_parts() -> impl Iterator<Item = u8> {
    0..=255u8
}

/// References: who uses a stored object (so it is not garbage).
pub struct References;

/// One user of a stored object; always an account's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefHolder {
    /// A named version of an object.
    Version {
        /// The bucket's owner.
        owner: NodeId,
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
        /// Version id.
        version: String,
    },
    /// An uploaded part of a multipart upload.
    Part {
        /// The bucket's owner.
        owner: NodeId,
        /// Bucket.
        bucket: String,
        /// Upload id.
        upload: String,
        /// Part number.
        number: u32,
    },
    /// An object stored under no name (its capability was handed out): kept for good.
    Capability {
        /// Whose put it was.
        owner: NodeId,
    },
}

impl RefHolder {
    /// The account that holds the reference (and signs its row).
    pub fn owner(&self) -> NodeId {
        match self {
            RefHolder::Version { owner, .. }
            | RefHolder::Part { owner, .. }
            | RefHolder::Capability { owner } => *owner,
        }
    }
}

impl SortKey for RefHolder {
    fn to_sort(&self) -> String {
        match self {
            RefHolder::Version {
                owner,
                bucket,
                key,
                version,
            } => format!("{}/v/{bucket}/{key}/{version}", owner.to_hex()),
            RefHolder::Part {
                owner,
                bucket,
                upload,
                number,
            } => format!("{}/u/{bucket}/{upload}/{number}", owner.to_hex()),
            RefHolder::Capability { owner } => format!("{}/capability", owner.to_hex()),
        }
    }
}

impl Schema for References {
    const KIND: &'static str = "r";
    const WRITER: Writer = Writer::SortKey;
    const FORMAT: u8 = 1;
    /// The referenced manifest.
    type Part = ContentHash;
    type Sort = RefHolder;
    type Value = ();

    fn partition(manifest: &ContentHash) -> String {
        manifest.to_hex()
    }
}

row_kind! {
    /// Audit tallies: one row per (audited node, auditor): partition the audited node, sort
    /// key the auditor.
    pub struct Tallies {
        kind: "rep",
        writer: Writer::SortKeyMember,
        part: NodeId,
        sort: NodeId,
        value: Tally,
        partition: |node| node.to_hex(),
    }
}

/// Declare healing's row kinds.
pub fn register(rules: &mut Rules) {
    rules.add(CatalogRows::KIND, CatalogRows::WRITER);
    rules.add(References::KIND, References::WRITER);
    rules.add(Tallies::KIND, Tallies::WRITER);
}
