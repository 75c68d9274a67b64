//! weft's replicated metadata table (Dynamo/Garage style): rows keyed by a partition key and a
//! sort key; partitions placed on [`table::REPLICATION`] replicas by rendezvous hashing over
//! live nodes, spread across sites; writes and reads go to a majority; conflicts resolve
//! last-writer-wins on hybrid logical clocks (deletes are tombstones); replicas converge after
//! failures and partitions by Merkle-tree anti-entropy (rows held by non-replicas are handed
//! to the current replicas).
//!
//! It knows nothing about buckets, objects or files: those are rows its users define.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod hlc;
pub mod local;
pub mod ring;
pub mod table;

pub use hlc::{Hlc, Timestamp};
pub use local::{Entry, Item, LocalError, LocalTable, PartitionTree};
pub use table::{MetaError, Table};
