//! The records an account's rows hold: buckets, objects (whole or assembled from parts),
//! uploads in progress and their parts, and the checks names go through.

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};
use weft_store::{Erasure, Residency};

use crate::BucketError;

/// Most versions a bucket may keep per object.
pub const MAX_VERSIONS: u32 = 1000;

/// The wrapping context of part `index` of `bucket/key`.
pub(crate) fn part_context(bucket: &str, key: &str, index: usize) -> String {
    format!("{bucket}/{key}#{index}")
}

pub(crate) fn new_version(now_ms: u64) -> String {
    let mut salt = [0u8; 4];
    // Without randomness two writes in one millisecond would share an id; the clock part
    // alone still orders them, so a failure here only loses the tie-break.
    let _ = getrandom::fill(&mut salt);
    format!("{now_ms:013}-{:08x}", u32::from_be_bytes(salt))
}

/// A bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Name.
    pub name: String,
    /// Owning account (public key).
    pub owner: NodeId,
    /// Where its shards may live.
    pub policy: Residency,
    /// Erasure coding (None: chosen per write for the fabric's size).
    pub ec: Option<Erasure>,
    /// How many versions of each object to keep (1: only the current one).
    pub versions: u32,
    /// Unix ms.
    pub created_ms: u64,
    /// Whether its rows are sealed (object names encrypted, records sealed, under keys derived
    /// from the bucket's key: [`crate::sealed`]). False only for buckets made before weft
    /// sealed them, whose rows stay plain.
    pub sealed: bool,
    /// Whether its rows are held to its regions too (their replicas are nodes in them, so its
    /// small objects live in their rows): every bucket with regions made since weft placed
    /// rows by residency; false for one made before, whose rows stay where they are.
    pub rows_in_regions: bool,
    /// The most a holder of its shards may charge, micro-credits per GB-month (`None`: any);
    /// the encoded policy does not carry it, so it is kept here and set into `policy` when
    /// the record is read (format 4).
    pub max_price: Option<u64>,
}

/// A bucket as stored before maximum prices (`bucket` format 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketRecordV3 {
    pub name: String,
    pub owner: NodeId,
    pub policy: Residency,
    pub ec: Option<Erasure>,
    pub versions: u32,
    pub created_ms: u64,
    pub sealed: bool,
    pub rows_in_regions: bool,
}

impl From<BucketRecordV3> for BucketRecord {
    fn from(b: BucketRecordV3) -> BucketRecord {
        BucketRecord {
            name: b.name,
            owner: b.owner,
            policy: b.policy,
            ec: b.ec,
            versions: b.versions,
            created_ms: b.created_ms,
            sealed: b.sealed,
            rows_in_regions: b.rows_in_regions,
            max_price: None,
        }
    }
}

/// A bucket as stored before its rows were held to its regions (`bucket` format 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketRecordV2 {
    pub name: String,
    pub owner: NodeId,
    pub policy: Residency,
    pub ec: Option<Erasure>,
    pub versions: u32,
    pub created_ms: u64,
    pub sealed: bool,
}

impl From<BucketRecordV2> for BucketRecord {
    fn from(b: BucketRecordV2) -> BucketRecord {
        BucketRecord {
            name: b.name,
            owner: b.owner,
            policy: b.policy,
            ec: b.ec,
            versions: b.versions,
            created_ms: b.created_ms,
            sealed: b.sealed,
            rows_in_regions: false,
            max_price: None,
        }
    }
}

/// A bucket as stored before rows were sealed (`bucket` format 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketRecordV1 {
    pub name: String,
    pub owner: NodeId,
    pub policy: Residency,
    pub ec: Option<Erasure>,
    pub versions: u32,
    pub created_ms: u64,
}

impl From<BucketRecordV1> for BucketRecord {
    fn from(b: BucketRecordV1) -> BucketRecord {
        BucketRecord {
            name: b.name,
            owner: b.owner,
            policy: b.policy,
            ec: b.ec,
            versions: b.versions,
            created_ms: b.created_ms,
            sealed: false,
            rows_in_regions: false,
            max_price: None,
        }
    }
}

/// What a writer says about an object besides its bytes (S3's content type, user metadata and
/// ETag travel here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttrs {
    /// MIME type ("" if not given).
    pub content_type: String,
    /// User metadata.
    pub meta: std::collections::BTreeMap<String, String>,
    /// Entity tag ("" if the writer computed none).
    pub etag: String,
}

/// A named object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// The manifest.
    pub manifest: ContentHash,
    /// Nodes holding the manifest.
    pub holders: Vec<NodeId>,
    /// Plaintext size.
    pub size: u64,
    /// BLAKE3 of the plaintext.
    pub content_id: ContentHash,
    /// Object key wrapped under the bucket key.
    pub wrapped_key: Vec<u8>,
    /// Unix ms.
    pub created_ms: u64,
    /// Version id: time-ordered, unique.
    pub version: String,
    /// Content type, user metadata, ETag.
    pub attrs: ObjectAttrs,
    /// For an object assembled from parts (S3 multipart upload): the parts, whose bytes in
    /// order are the object's. Empty for an object stored whole (then `manifest`, `holders` and
    /// `wrapped_key` name it).
    pub parts: Vec<PartRef>,
    /// For a small object kept in its row ([`INLINE_MAX`] bytes at most): its bytes sealed
    /// under its object key (the one `wrapped_key` wraps; [`weft_store::seal_inline`]), so they are never plaintext in a
    /// row, sealed bucket or not. Then nothing is stored for it: `manifest` is zero,
    /// `holders` and `parts` empty.
    pub inline: Option<Vec<u8>>,
}

/// Largest object kept inside its row: one quorum write stores it, one quorum read reads it
/// (Storj inlines segments under 4 KiB, Garage objects under 3 KiB).
pub const INLINE_MAX: usize = 4096;

/// An object record as stored before small objects were kept inline (`obj`/`ver` format 1,
/// and the bodies of sealed rows that do not decode as the current record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectRecordV1 {
    pub manifest: ContentHash,
    pub holders: Vec<NodeId>,
    pub size: u64,
    pub content_id: ContentHash,
    pub wrapped_key: Vec<u8>,
    pub created_ms: u64,
    pub version: String,
    pub attrs: ObjectAttrs,
    pub parts: Vec<PartRef>,
}

impl From<ObjectRecordV1> for ObjectRecord {
    fn from(r: ObjectRecordV1) -> ObjectRecord {
        ObjectRecord {
            manifest: r.manifest,
            holders: r.holders,
            size: r.size,
            content_id: r.content_id,
            wrapped_key: r.wrapped_key,
            created_ms: r.created_ms,
            version: r.version,
            attrs: r.attrs,
            parts: r.parts,
            inline: None,
        }
    }
}

/// One part of an assembled object: a stored object of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// Its manifest.
    pub manifest: ContentHash,
    /// Nodes holding the manifest.
    pub holders: Vec<NodeId>,
    /// Plaintext size.
    pub size: u64,
    /// Its object key, wrapped under the bucket key (context `bucket/key#index`).
    pub wrapped_key: Vec<u8>,
}

impl ObjectRecord {
    /// The entity tag: the writer's, or one derived from the content id.
    pub fn etag(&self) -> String {
        if self.attrs.etag.is_empty() {
            self.content_id.to_hex()[..32].to_string()
        } else {
            self.attrs.etag.clone()
        }
    }

    /// Whether the object is kept in its row (see [`ObjectRecord::inline`]).
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }
}

/// Validate a bucket name (S3's rules, simplified).
pub fn check_bucket_name(name: &str) -> Result<(), BucketError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(BucketError::Invalid(format!(
            "bucket name {name:?}: 3 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
        )))
    }
}

/// Validate an object key: 1 to 1024 bytes, no NUL.
pub fn check_key(key: &str) -> Result<(), BucketError> {
    if key.is_empty() || key.len() > 1024 || key.contains('\0') {
        return Err(BucketError::Invalid(format!(
            "object key {key:?}: 1 to 1024 bytes, no NUL"
        )));
    }
    Ok(())
}

/// Highest part number (S3's limit).
pub const MAX_PARTS: u32 = 10_000;
/// Smallest part but the last (S3's limit).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Object key it will become.
    pub key: String,
    /// Content type and metadata given when it started.
    pub attrs: ObjectAttrs,
    /// Unix ms.
    pub initiated_ms: u64,
}

/// One uploaded part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// 1..=10000.
    pub number: u32,
    /// The writer's entity tag for it (S3: hex MD5).
    pub etag: String,
    /// Plaintext size.
    pub size: u64,
    /// Its manifest.
    pub manifest: ContentHash,
    /// Manifest holders.
    pub holders: Vec<NodeId>,
    /// BLAKE3 of its plaintext.
    pub content_id: ContentHash,
    /// Its object key wrapped under the bucket key (context `bucket#upload#number`).
    pub wrapped_key: Vec<u8>,
    /// Unix ms.
    pub created_ms: u64,
}

pub(crate) fn upload_part_context(bucket: &str, upload: &str, number: u32) -> String {
    format!("{bucket}#{upload}#{number}")
}

/// One account's grant of one bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Who it is for.
    pub grantee: NodeId,
    /// Whether the grantee may write.
    pub write: bool,
    /// The granted session's delegate (the row's sort key).
    pub delegate: NodeId,
    /// The session, sealed to the grantee.
    pub sealed: Vec<u8>,
    /// Unix ms.
    pub created_ms: u64,
}
