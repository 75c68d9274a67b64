//! weft storage. This first part holds what a node needs locally: the shard store (content
//! addressed, fsynced before acknowledged, with capacity accounting) and the object codec
//! (segment → BLAKE3 → AES-256-GCM → Reed–Solomon shards named by BLAKE3).
//!
//! It knows nothing about the network, membership or placement; the distributed write and read
//! paths will be built on these pieces.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod catalog;
pub mod codec;
pub mod hot;
pub mod object;
pub mod placement;
pub mod proof;
pub mod protocol;
pub mod shards;

pub use catalog::{BoxFuture, Catalog, Locations};
pub use codec::{
    CodecError, DecodedSegment, EncodedSegment, Erasure, ObjectKey, SegmentInfo, decode_segment,
    encode_segment, open, rebuild_shards, seal, unwrap_key, wrap_key,
};
pub use object::{
    Capability, MANIFEST_FORMAT, Manifest, ManifestError, PlacedSegment, Prepared, ReadReport,
    Storage, StorageError, open_inline, seal_inline,
};
pub use placement::{Candidate, PlacementError, Residency, default_erasure, place};
pub use shards::{ShardStore, ShardStoreError};
