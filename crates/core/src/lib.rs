//! weft's vocabulary: node and fabric identities, the signed documents that admit a node to a
//! fabric (invites, membership certificates, revocations), node records, and the wire encoding
//! every protocol shares.
//!
//! This crate owns *what things are and how they are checked*; it performs no IO and never reads
//! a clock: every check that depends on time takes `now` (Unix milliseconds) as an argument, so
//! the rules are tested deterministically. It knows nothing about QUIC, sockets, files or tokio.
//!
//! Signatures are Ed25519 over a domain-separated encoding (`sign_domain || postcard(body)`), so a
//! signature made for one kind of document can never be replayed as another.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod account;
mod admission;
mod id;
mod keys;
mod record;
pub mod wire;

pub use account::{BucketKey, BucketKeys, Delegation, DelegationBody, Scope};
pub use admission::{
    AdmissionError, CertBody, Invite, InviteBody, MembershipCert, Placement, Revocation,
    RevocationBody, Role,
};
pub use id::{ContentHash, FabricId, IdParseError, NodeId};
pub use keys::{SecretKey, Signature, SignatureError, constant_time_eq};
pub use record::{Capacity, Load, NodeRecord, RECORD_FORMAT, RecordBody};

/// The software version every node reports in its record.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The numbers protocols register under, in one place so they never collide.
pub mod proto {
    /// Stream protocol: redeem an invite for a membership certificate (guests allowed).
    pub const JOIN: u16 = 1;
    /// Stream protocol: exchange node records and revocations.
    pub const SYNC: u16 = 2;
    /// Stream protocol: store a shard on a node.
    pub const SHARD_PUT: u16 = 3;
    /// Stream protocol: fetch a shard from a node.
    pub const SHARD_GET: u16 = 4;
    /// Stream protocol: metadata table operations between replicas.
    pub const META: u16 = 5;
    /// Stream protocol: which of these shards does a node hold (repair's presence check).
    pub const SHARD_HAS: u16 = 6;
    /// Stream protocol: delete the shards of an object the catalog has released (garbage
    /// collection; the holder checks the catalog before it deletes anything).
    pub const SHARD_DELETE: u16 = 7;
    /// Stream protocol: prove holding a byte range of a shard (audits).
    pub const SHARD_PROVE: u16 = 8;
    /// Stream protocol: a client's HTTP connection to the node's API, carried over QUIC so it
    /// is encrypted and the client knows which node it reached (guests allowed).
    pub const CLIENT_API: u16 = 9;
    /// Stream protocol: jobs between nodes — offer one to a runner (with its session), hand a
    /// standby coordinator its watch, read a running job's logs.
    pub const JOB: u16 = 10;
    /// Stream protocol: an inference request from the node a client reached to a node that
    /// holds the model (the request, then admitted/busy/refused, pieces of text or embeddings,
    /// and the end).
    pub const INFER: u16 = 11;
    /// Stream protocol: a reader asks its site's home for a shard of an object held in other
    /// sites; the home fetches it once and keeps it hot for the site.
    pub const SHARD_HOT: u16 = 12;
    /// Stream protocol: the ledger between members — receipts handed to the sequencer, a
    /// checkpoint shown to a witness for its cosignature (members only).
    pub const LEDGER: u16 = 13;
    /// Datagram channel: SWIM membership messages.
    pub const SWIM: u8 = 1;
    /// Datagram channel: RTT probes that feed network coordinates.
    pub const COORD: u8 = 2;
}
