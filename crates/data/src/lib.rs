//! The account data plane: an account acting through this node.
//!
//! A node that receives a request (CLI, S3, a job it runs) acts for the account that sent it,
//! with what the account handed it — an [`Access`]: a key that signs the account's rows (the
//! account's own or a delegate's, with the account's delegation) and the keys of the buckets
//! it may open. [`Acting`] is that account at work: one authorization check
//! ([`Acting::authorize`]) every bucket operation goes through, bucket operations, and narrow
//! views — [`Acting::objects`] (put, read, list, versions, copy, delete, share),
//! [`Acting::uploads`] (multipart), [`Acting::grants`] (sharing a bucket with another
//! account), [`Acting::keys`] (access keys). [`DataPlane`] is the node's service: it turns
//! sessions and access keys into [`Acting`]s and reads objects by capability.
//!
//! **Why rows are sealed.** A bucket's rows live on whichever nodes replicate its partition:
//! strangers. Object names, records, uploads and parts are stored sealed under keys derived
//! from the bucket's key ([`sealed`]), and object keys wrapped under it, so a replica learns
//! counts and lengths, never names, metadata, ETags or content ids; only the owner and the
//! sessions and keys it hands out hold the bucket key. Replicas check every row's signature
//! and writer rule ([`schema`]), so no member can write into another account's bucket.
//!
//! **Invariant:** knows nothing of HTTP, S3, jobs or models; speaks plaintext names only
//! through [`rows`]; never stores a session or an account key in a row.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod access;
mod acting;
mod error;
mod grants;
mod keys;
pub mod migrate;
mod objects;
mod plane;
pub mod policy;
pub mod quota;
mod recent;
mod records;
mod rows;
pub mod schema;
pub mod sealed;
mod session;
mod uploads;

pub use access::{Access, Need};
pub use acting::Acting;
pub use error::{BucketError, KeyError};
pub use grants::{GrantListing, GrantLookup, Grants};
pub use keys::{AccessKey, KeyListing, KeyStore, Keys, lookup_key};
pub use objects::Objects;
pub use plane::DataPlane;
pub use records::{
    BucketRecord, Grant, INLINE_MAX, MAX_PARTS, MAX_VERSIONS, MIN_PART_SIZE, ObjectAttrs,
    ObjectRecord, PartRecord, PartRef, UploadRecord, check_bucket_name, check_key,
};
pub(crate) use records::{new_version, part_context};
pub use sealed::BucketSeal;
pub use session::{Session, SessionError};
pub use uploads::Uploads;
/// What the table answers when it fails (re-exported for the front ends).
pub use weft_meta::MetaError;
/// What objects are made of and where they may live (re-exported for the front ends).
pub use weft_store::{Capability, Erasure, Manifest, ReadReport, Residency, StorageError};
