//! weft's replicated metadata table (Dynamo/Garage style): rows keyed by a partition key and a
//! sort key; partitions placed on [`table::REPLICATION`] replicas by rendezvous hashing over
//! live nodes, spread across sites; writes and reads go to a majority; conflicts resolve
//! last-writer-wins on hybrid logical clocks (deletes are tombstones); replicas converge after
//! failures and partitions by Merkle-tree anti-entropy (rows held by non-replicas are handed
//! to the current replicas).
//!
//! Rows are typed and signed: each kind of row is a [`Schema`] (key shape, value type and
//! format, writer rule), every row version carries its writer's signature, and every replica
//! checks signature and rule before it takes a row ([`row`]).
//!
//! It knows nothing about buckets, objects or files: those are schemas its users declare.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod hlc;
pub mod local;
pub mod ring;
pub mod row;
pub mod schema;
pub mod table;

pub use hlc::{Hlc, Timestamp};
pub use local::{Cond, LegacyEntry, LocalError, LocalTable, PartitionTree, Seen};
pub use row::{Entry, Item, Refusal, Rules, Signer, Writer};
pub use schema::{Row, Schema, SortKey, Value};
pub use table::{MetaError, Table};
