//! What can go wrong acting for an account: one enum for buckets and objects (authorization
//! included), one for access keys. Front ends map them to their protocol's codes, each in one
//! place.

use weft_meta::MetaError;
use weft_store::StorageError;

/// Bucket and object failures.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// Bad name.
    #[error("{0}")]
    Invalid(String),
    /// No such bucket.
    #[error("no bucket named {0:?} (create it with `weft bucket create {0}`)")]
    NoBucket(String),
    /// Exists already.
    #[error("bucket {0:?} already exists")]
    Exists(String),
    /// No such object.
    #[error("no object {0:?} in bucket {1:?}")]
    NoObject(String, String),
    /// No such version.
    #[error("no version {2:?} of {0:?} in bucket {1:?} (list them with `weft ls --versions`)")]
    NoVersion(String, String, String),
    /// The bytes received are not the ones the writer said it sent.
    #[error("{0}")]
    Digest(String),
    /// No such multipart upload.
    #[error("no upload {0:?} in progress (completed, aborted, or never started)")]
    NoUpload(String),
    /// The parts listed to complete an upload are not the uploaded ones.
    #[error("{0}")]
    BadParts(String),
    /// Parts listed out of order.
    #[error("parts must be listed in ascending order of part number")]
    PartOrder,
    /// A part other than the last is too small.
    #[error("part {0} is {1} bytes; every part but the last must be at least 5 MiB")]
    PartTooSmall(u32, u64),
    /// Deleting a bucket that still holds objects.
    #[error("bucket {0:?} is not empty")]
    NotEmpty(String),
    /// Read-only access asked to write.
    #[error("this access is read-only")]
    ReadOnly,
    /// The keys this node was handed do not open the bucket.
    #[error("this access does not include bucket {0:?}'s key")]
    NoKey(String),
    /// What only the owner of a bucket shared with this account may do.
    #[error("bucket {0:?} is shared with this account; only its owner can {1}")]
    Shared(String, String),
    /// A grant of the bucket that was revoked.
    #[error("bucket {0:?} is no longer shared with this account (its owner revoked the grant)")]
    Revoked(String),
    /// An invite-only fabric whose admin has not admitted this account.
    #[error(
        "this fabric admits accounts by invitation and account {0} is not admitted: ask the fabric's admin to run `weft fabric admit {0}`"
    )]
    NotAdmitted(String),
    /// A prepaid bucket keeps what it holds until its term ends.
    #[error("{0}")]
    Kept(String),
    /// The account's quota (bytes stored or jobs running) does not allow it.
    #[error("over quota: {0}; the fabric's admin sets quotas (`weft fabric quota`)")]
    OverQuota(String),
    /// Someone else's bucket.
    #[error(
        "bucket {0:?} belongs to another account; ask its owner for a capability (`weft share`)"
    )]
    NotOwner(String),
    /// Metadata table trouble.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Storage trouble.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The catalog (which keeps objects from being collected) could not be updated.
    #[error("object catalog unavailable: {0}")]
    Catalog(String),
    /// A stored row does not decode.
    #[error("metadata row {0} is corrupt")]
    Corrupt(String),
}

/// Access-key failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such key.
    #[error("no access key {0:?} (see `weft key ls`)")]
    Unknown(String),
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
    /// Storing the node's own key file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The replicated table failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The acting account cannot do this (read-only, or without its bucket master).
    #[error(transparent)]
    Access(#[from] BucketError),
    /// The grant a key was to act with is another account's.
    #[error("the grant is another account's")]
    ForeignGrant,
}
