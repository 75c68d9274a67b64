//! Buckets and named objects: rows in the replicated metadata table that point at manifests.
//!
//! Rows (see [`crate::schema`]): the bucket's name claim → [`BucketRecord`]; per bucket, object
//! key → [`ObjectRecord`] (the current version). Buckets that keep more than one version also
//! write every version to a row keyed by version id (time-ordered), pruned to the bucket's
//! `versions` newest. Every row of a bucket is signed by its owner's account key, and replicas
//! refuse rows of a bucket signed by anyone else. An object's key is stored only
//! wrapped under its bucket's key, which is derived from the owner's account key (kept in the
//! owner's data directory), so other members can see that an object exists but cannot read it.
//! Names, records, uploads and parts are sealed under keys derived from the bucket key too
//! ([`crate::sealed`], read and written through [`crate::rows`]), so the nodes storing them
//! learn no names, content types, metadata, ETags or content ids.
//! A capability (`weft share`) hands out one object's key explicitly.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use weft_core::{BucketKeys, ContentHash, Delegation, NodeId, SecretKey};
use weft_heal::RefHolder;
use weft_meta::{MetaError, Signer, Table, Value};
use weft_store::{Capability, Erasure, Manifest, ReadReport, Residency, Storage, StorageError};

use crate::rows::BucketRows;
use crate::schema;

/// What an operation needs of a bucket ([`Buckets::authorize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Reading: get, head, list, versions, parts, share.
    Read,
    /// Writing: put, delete, copy into, multipart, bucket deletion.
    Write,
}

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
}

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

pub(crate) fn check_key(key: &str) -> Result<(), BucketError> {
    if key.is_empty() || key.len() > 1024 || key.contains('\0') {
        return Err(BucketError::Invalid(format!(
            "object key {key:?}: 1 to 1024 bytes, no NUL"
        )));
    }
    Ok(())
}

/// What a node holds to act for an account: a key that signs its rows (the account's own, or
/// a delegate's with the account's [`Delegation`]) and the keys of the buckets it may open.
#[derive(Clone)]
pub struct Access {
    account: NodeId,
    /// `None`: read-only.
    signer: Option<Signer>,
    keys: BucketKeys,
    /// The account's own key, when the node holds it (a data directory from before accounts
    /// left the nodes): every key, legacy ones included, derives from it.
    root: Option<SecretKey>,
    /// For a session scoped to one bucket: that bucket and the session's delegate (which a
    /// grant of the bucket would name; see [`crate::grants`]).
    scoped: Option<(String, NodeId)>,
}

impl Access {
    /// The account itself (its key is here).
    pub fn account(key: SecretKey) -> Access {
        let keys = BucketKeys::of(&key, &weft_core::Scope { bucket: None }, &[]);
        Access {
            account: key.public(),
            signer: Some(Signer::own(key.clone())),
            keys,
            root: Some(key),
            scoped: None,
        }
    }

    /// A delegate: `key` signs for `via`'s account, opening the buckets `keys` covers.
    pub fn delegated(key: SecretKey, via: Delegation, keys: BucketKeys) -> Access {
        Access {
            account: via.body.account,
            signer: Some(Signer::delegated(key, via)),
            keys,
            root: None,
            scoped: None,
        }
    }

    /// Read-only: opens the buckets of `account` that `keys` covers and signs nothing.
    pub fn read_only(account: NodeId, keys: BucketKeys) -> Access {
        Access {
            account,
            signer: None,
            keys,
            root: None,
            scoped: None,
        }
    }

    /// The same access, as a session scoped to `bucket` whose delegate is `delegate`.
    pub fn scoped_to(mut self, bucket: String, delegate: NodeId) -> Access {
        self.scoped = Some((bucket, delegate));
        self
    }

    /// The same access, known to be the bucket owner's own (an access key it made for one
    /// bucket), not a grant: no grant row is asked for.
    pub fn owners_own(mut self) -> Access {
        self.scoped = None;
        self
    }

    /// The delegate of the session this access came from, if it is scoped to `bucket`.
    pub fn scoped_delegate(&self, bucket: &str) -> Option<NodeId> {
        self.scoped
            .as_ref()
            .filter(|(b, _)| b == bucket)
            .map(|(_, d)| *d)
    }

    /// The account acted for.
    pub fn author(&self) -> NodeId {
        self.account
    }

    /// Whether it may write.
    pub fn can_write(&self) -> bool {
        self.signer.is_some()
    }
}

/// Buckets and objects for one account, through one node.
#[derive(Clone)]
pub struct Buckets {
    pub(crate) table: Table,
    pub(crate) storage: Storage,
    pub(crate) refs: weft_heal::Registry,
    pub(crate) grant_checks: crate::grants::GrantChecks,
    access: Access,
}

impl Buckets {
    /// Buckets of the account `access` acts for.
    pub fn new(table: Table, storage: Storage, access: Access) -> Buckets {
        Buckets {
            refs: weft_heal::Registry::new(table.clone()),
            grant_checks: Default::default(),
            table,
            storage,
            access,
        }
    }

    /// The same table and storage, acting for another account.
    pub fn acting_as(&self, access: Access) -> Buckets {
        Buckets {
            refs: self.refs.clone(),
            grant_checks: self.grant_checks.clone(),
            table: self.table.clone(),
            storage: self.storage.clone(),
            access,
        }
    }

    /// The account id.
    pub fn account(&self) -> NodeId {
        self.access.author()
    }

    /// What this acts with (to act the same way through another node).
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// What signs this account's rows (none for read-only access).
    pub(crate) fn signer(&self) -> Result<&Signer, BucketError> {
        self.access.signer.as_ref().ok_or(BucketError::ReadOnly)
    }

    /// A key derived from the account's bucket master (`None` without one: a bucket-scoped
    /// access).
    pub(crate) fn master_derived(&self, context: &str) -> Option<[u8; 32]> {
        self.access
            .keys
            .master
            .map(|m| blake3::derive_key(context, &m))
    }

    /// The rows of bucket `b` (which the caller authorized), as this access reads them.
    /// The primary key of `bucket`, if this access holds it.
    pub(crate) fn primary_key(&self, bucket: &str) -> Option<[u8; 32]> {
        self.access.keys.primary(bucket)
    }

    pub(crate) fn rows(&self, b: &BucketRecord) -> Result<BucketRows<'_>, BucketError> {
        BucketRows::new(&self.table, b, self.access.keys.primary(&b.name))
    }

    /// Wrap an object key under `bucket`'s key.
    pub(crate) fn wrap(
        &self,
        bucket: &str,
        plain: &[u8; 32],
        context: &str,
    ) -> Result<Vec<u8>, BucketError> {
        let key = self
            .access
            .keys
            .primary(bucket)
            .ok_or_else(|| BucketError::NoKey(bucket.into()))?;
        weft_store::wrap_key(&key, plain, context.as_bytes())
            .map_err(|e| BucketError::Storage(e.into()))
    }

    /// Unwrap an object key of `bucket` with any key this access holds for it.
    pub(crate) fn unwrap(&self, bucket: &str, wrapped: &[u8], context: &str) -> Option<[u8; 32]> {
        let mut keys = self.access.keys.candidates(bucket);
        if let Some(root) = &self.access.root {
            keys.push(weft_core::account::legacy_bucket_key(root, bucket));
        }
        keys.iter()
            .find_map(|k| weft_store::unwrap_key(k, wrapped, context.as_bytes()))
    }

    /// Create a bucket.
    pub async fn create(
        &self,
        name: &str,
        policy: Residency,
        ec: Option<Erasure>,
        versions: u32,
    ) -> Result<BucketRecord, BucketError> {
        check_bucket_name(name)?;
        if self.access.scoped_delegate(name).is_some() {
            return Err(BucketError::Shared(name.into(), "create it".into()));
        }
        if !(1..=MAX_VERSIONS).contains(&versions) {
            return Err(BucketError::Invalid(format!(
                "versions to keep: 1 to {MAX_VERSIONS}, not {versions}"
            )));
        }
        if let Some(ec) = ec {
            ec.validate()
                .map_err(|e| BucketError::Invalid(e.to_string()))?;
        }
        let record = BucketRecord {
            name: name.into(),
            owner: self.account(),
            policy,
            ec,
            versions,
            created_ms: weft_net::now_ms(),
            sealed: true,
        };
        match self
            .table
            .create::<schema::Buckets>(self.signer()?, &(), name, &record)
            .await
        {
            Ok(_) => Ok(record),
            Err(MetaError::Conflict) => Err(BucketError::Exists(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Look a bucket up.
    pub async fn bucket(&self, name: &str) -> Result<BucketRecord, BucketError> {
        let row = self.table.get::<schema::Buckets>(&(), name).await?;
        let row = row.ok_or_else(|| BucketError::NoBucket(name.into()))?;
        match row.value {
            None => Err(BucketError::NoBucket(name.into())),
            // The name's holder is whoever signed its claim.
            Some(Value::Known(b)) if b.owner == row.signer && b.name == name => Ok(b),
            Some(_) => Err(BucketError::Corrupt(format!("bucket {name}"))),
        }
    }

    /// Every bucket.
    pub async fn list_buckets(&self) -> Result<Vec<BucketRecord>, BucketError> {
        let rows = self.table.list::<schema::Buckets>(&(), "").await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, r)| {
                let signer = r.signer;
                r.known().filter(|b| b.owner == signer && b.name == name)
            })
            .collect())
    }

    /// The one authorization check every operation on a bucket goes through, whatever the
    /// front end (API, CLI, S3): the bucket must be the acting account's, a write needs an
    /// access that can sign, and the access must hold the bucket's key (a session or access key
    /// scoped to another bucket does not). Decided before anything of the bucket is read.
    pub async fn authorize(&self, bucket: &str, need: Need) -> Result<BucketRecord, BucketError> {
        let b = self.bucket(bucket).await?;
        if b.owner != self.account() {
            return Err(BucketError::NotOwner(bucket.into()));
        }
        if need == Need::Write && !self.access.can_write() {
            return Err(BucketError::ReadOnly);
        }
        if let Some(d) = self.access.scoped_delegate(bucket) {
            // A session scoped to one bucket is a grant (the owner's own scoped keys are marked
            // by the gateway that looked them up): it holds only while its grant row is live,
            // and a row not found fails closed.
            match self.grant_state(&b, d).await? {
                crate::grants::GrantState::Revoked | crate::grants::GrantState::None => {
                    return Err(BucketError::Revoked(bucket.into()));
                }
                crate::grants::GrantState::Live { write: false } if need == Need::Write => {
                    return Err(BucketError::ReadOnly);
                }
                crate::grants::GrantState::Live { .. } => {}
            }
        }
        if self.access.keys.primary(bucket).is_none() {
            return Err(BucketError::NoKey(bucket.into()));
        }
        Ok(b)
    }

    /// Store an object under `bucket/key`, replacing the current version.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
    ) -> Result<(ObjectRecord, Manifest), BucketError> {
        self.put_with(bucket, key, reader, |_| Ok(ObjectAttrs::default()))
            .await
    }

    /// Store an object; `attrs` is asked once every byte has been read and stored (so a writer
    /// can hash the stream on its way in for an ETag, or refuse it if a digest does not match:
    /// then nothing is committed).
    pub async fn put_with<R: AsyncRead + Unpin>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
        attrs: impl FnOnce(&Manifest) -> Result<ObjectAttrs, BucketError>,
    ) -> Result<(ObjectRecord, Manifest), BucketError> {
        check_key(key)?;
        let b = self.authorize(bucket, Need::Write).await?;
        let (cap, manifest) = self.storage.put(reader, b.policy.clone(), b.ec).await?;
        let attrs = attrs(&manifest)?;
        let record = self.record_for(bucket, key, &cap, &manifest, attrs)?;
        self.commit(&b, key, &record).await?;
        Ok((record, manifest))
    }

    fn record_for(
        &self,
        bucket: &str,
        key: &str,
        cap: &Capability,
        manifest: &Manifest,
        attrs: ObjectAttrs,
    ) -> Result<ObjectRecord, BucketError> {
        let context = format!("{bucket}/{key}");
        let wrapped_key = self.wrap(bucket, &cap.key, &context)?;
        let now = weft_net::now_ms();
        Ok(ObjectRecord {
            manifest: cap.manifest,
            holders: cap.holders.clone(),
            size: manifest.size,
            content_id: manifest.content_id,
            wrapped_key,
            created_ms: now,
            version: new_version(now),
            attrs,
            parts: Vec::new(),
        })
    }

    /// Make `record` the current version of `key` (and keep it in the history if the bucket
    /// keeps versions, pruning the oldest beyond its limit).
    pub(crate) async fn commit(
        &self,
        b: &BucketRecord,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), BucketError> {
        let rows = self.rows(b)?;
        // The new version holds its objects before anything points at it; what it replaces
        // lets go of its objects only after (garbage collection waits a safety delay anyway).
        self.hold(&rows, b, key, record).await?;
        let replaced = if b.versions == 1 {
            rows.object(key).await.ok().flatten()
        } else {
            None
        };
        let mut pruned = Vec::new();
        if b.versions > 1 {
            rows.put_version(self.signer()?, key, &record.version, Some(record))
                .await?;
            let history = rows.versions(key).await?;
            let excess = history.len().saturating_sub(b.versions as usize);
            for (old, r) in history.into_iter().take(excess) {
                rows.put_version(self.signer()?, key, &old, None).await?;
                pruned.extend(r);
            }
        }
        rows.put_object(self.signer()?, key, Some(record)).await?;
        for old in replaced.iter().chain(&pruned) {
            if old.version != record.version {
                self.let_go(&rows, b, key, old).await?;
            }
        }
        Ok(())
    }

    /// The reference a version of `key` holds its bytes by (naming the key as it is stored).
    fn ref_name(
        &self,
        rows: &BucketRows<'_>,
        b: &BucketRecord,
        key: &str,
        version: &str,
    ) -> RefHolder {
        RefHolder::Version {
            owner: self.account(),
            bucket: b.name.clone(),
            key: rows.stored_name(key),
            version: version.into(),
        }
    }

    /// Hold an object stored under no name (its capability was handed out) for good.
    pub async fn retain_capability(&self, manifest: &ContentHash) -> Result<(), BucketError> {
        let holder = RefHolder::Capability {
            owner: self.account(),
        };
        self.refs
            .retain(manifest, &holder, self.signer()?)
            .await
            .map_err(|e| BucketError::Catalog(e.to_string()))
    }

    /// The stored objects a record's bytes live in.
    fn stored_objects(record: &ObjectRecord) -> Vec<ContentHash> {
        if record.parts.is_empty() {
            vec![record.manifest]
        } else {
            record.parts.iter().map(|p| p.manifest).collect()
        }
    }

    async fn hold(
        &self,
        rows: &BucketRows<'_>,
        b: &BucketRecord,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), BucketError> {
        let name = self.ref_name(rows, b, key, &record.version);
        for m in Self::stored_objects(record) {
            self.refs
                .retain(&m, &name, self.signer()?)
                .await
                .map_err(|e| BucketError::Catalog(e.to_string()))?;
        }
        Ok(())
    }

    async fn let_go(
        &self,
        rows: &BucketRows<'_>,
        b: &BucketRecord,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<(), BucketError> {
        let name = self.ref_name(rows, b, key, &record.version);
        for m in Self::stored_objects(record) {
            self.refs
                .release(&m, &name, self.signer()?)
                .await
                .map_err(|e| BucketError::Catalog(e.to_string()))?;
        }
        Ok(())
    }

    /// Make an object stored elsewhere (a capability this account can read) `bucket/key` too,
    /// without copying its shards: S3's CopyObject.
    pub async fn link(
        &self,
        (from_bucket, from_key): (&str, &str),
        source: &ObjectRecord,
        (bucket, key): (&str, &str),
        attrs: ObjectAttrs,
    ) -> Result<ObjectRecord, BucketError> {
        check_key(key)?;
        self.authorize(from_bucket, Need::Read).await?;
        let b = self.authorize(bucket, Need::Write).await?;
        let mut record = source.clone();
        let rewrap = |wrapped: &[u8], from: String, to: String| {
            let plain = self.unwrap(from_bucket, wrapped, &from).ok_or_else(|| {
                BucketError::Corrupt(format!("{from_bucket}/{from_key} (key does not unwrap)"))
            })?;
            self.wrap(bucket, &plain, &to)
        };
        if source.parts.is_empty() {
            record.wrapped_key = rewrap(
                &source.wrapped_key,
                format!("{from_bucket}/{from_key}"),
                format!("{bucket}/{key}"),
            )?;
        }
        for (i, part) in record.parts.iter_mut().enumerate() {
            part.wrapped_key = rewrap(
                &part.wrapped_key,
                part_context(from_bucket, from_key, i),
                part_context(bucket, key, i),
            )?;
        }
        let now = weft_net::now_ms();
        record.created_ms = now;
        record.version = new_version(now);
        record.attrs = attrs;
        self.commit(&b, key, &record).await?;
        Ok(record)
    }

    /// Read bytes `start..end` of `record` (a version of `bucket/key`, whole or assembled from
    /// parts) into `writer`, verifying every byte. Parts are fetched two at a time so an
    /// assembled object reads as fast as a whole one; memory stays bounded by the pipes.
    pub async fn read_range<W: AsyncWrite + Unpin>(
        &self,
        (bucket, key): (&str, &str),
        record: &ObjectRecord,
        start: u64,
        end: u64,
        mut writer: W,
    ) -> Result<(), BucketError> {
        use tokio::io::AsyncWriteExt;
        let end = end.min(record.size);
        if record.parts.is_empty() {
            let cap = self.capability_of(bucket, key, record)?;
            let manifest = self.storage.manifest(&cap).await?;
            self.storage
                .read_range(&cap, &manifest, start, end, writer)
                .await?;
            return Ok(());
        }
        let mut wanted = Vec::new();
        let mut offset = 0u64;
        for (i, part) in record.parts.iter().enumerate() {
            let (s, e) = (offset, offset + part.size);
            offset = e;
            if s < end && e > start {
                let object_key = self
                    .unwrap(bucket, &part.wrapped_key, &part_context(bucket, key, i))
                    .ok_or_else(|| BucketError::Corrupt(format!("{bucket}/{key} part {i}")))?;
                let cap = Capability {
                    manifest: part.manifest,
                    key: object_key,
                    holders: part.holders.clone(),
                };
                wanted.push((cap, start.max(s) - s, end.min(e) - s));
            }
        }
        let mut queue = std::collections::VecDeque::new();
        let mut wanted = wanted.into_iter();
        loop {
            while queue.len() < 2 {
                let Some((cap, a, b)) = wanted.next() else {
                    break;
                };
                let (reader, pipe) = tokio::io::duplex(1 << 20);
                let storage = self.storage.clone();
                // Aborted if this read is dropped (a client that went away).
                queue.push_back((
                    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                        let manifest = storage.manifest(&cap).await?;
                        storage.read_range(&cap, &manifest, a, b, pipe).await
                    })),
                    reader,
                ));
            }
            let Some((task, mut reader)) = queue.pop_front() else {
                break;
            };
            let copied = tokio::io::copy(&mut reader, &mut writer).await;
            match task.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(BucketError::Corrupt(format!("part read stopped: {e}"))),
            }
            copied.map_err(|e| BucketError::Storage(e.into()))?;
        }
        writer
            .flush()
            .await
            .map_err(|e| BucketError::Storage(e.into()))?;
        Ok(())
    }

    /// Versions of `bucket/key` kept in its history, newest first (empty if the bucket keeps
    /// only the current version).
    pub async fn versions(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<ObjectRecord>, BucketError> {
        let b = self.authorize(bucket, Need::Read).await?;
        let history = self.rows(&b)?.versions(key).await?;
        let mut out: Vec<ObjectRecord> = history.into_iter().filter_map(|(_, r)| r).collect();
        out.reverse();
        Ok(out)
    }

    /// One kept version of `bucket/key`.
    pub async fn version(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<ObjectRecord, BucketError> {
        let no = || BucketError::NoVersion(key.into(), bucket.into(), version.into());
        let b = self.authorize(bucket, Need::Read).await?;
        let current = self.object_in(&b, key).await;
        if let Ok(r) = &current
            && r.version == version
        {
            return current;
        }
        self.rows(&b)?.version(key, version).await?.ok_or_else(no)
    }

    /// The record of `bucket/key`.
    pub async fn object(&self, bucket: &str, key: &str) -> Result<ObjectRecord, BucketError> {
        let b = self.authorize(bucket, Need::Read).await?;
        self.object_in(&b, key).await
    }

    /// The record of `key` in bucket `b` (which the caller authorized).
    pub(crate) async fn object_in(
        &self,
        b: &BucketRecord,
        key: &str,
    ) -> Result<ObjectRecord, BucketError> {
        self.rows(b)?
            .object(key)
            .await?
            .ok_or_else(|| BucketError::NoObject(key.into(), b.name.clone()))
    }

    /// A read capability for `bucket/key` (owner only): what `weft share` prints.
    pub async fn capability(&self, bucket: &str, key: &str) -> Result<Capability, BucketError> {
        let b = self.authorize(bucket, Need::Read).await?;
        let record = self.object_in(&b, key).await?;
        self.capability_of(bucket, key, &record)
    }

    /// The read capability of a record of `bucket/key` (any version).
    pub fn capability_of(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Result<Capability, BucketError> {
        if !record.parts.is_empty() {
            return Err(BucketError::Invalid(format!(
                "{bucket}/{key} was uploaded in {} parts, and a capability names one stored \
                 object; read it by name (or through S3)",
                record.parts.len()
            )));
        }
        let context = format!("{bucket}/{key}");
        let object_key = self
            .unwrap(bucket, &record.wrapped_key, &context)
            .ok_or_else(|| BucketError::Corrupt(format!("{bucket}/{key} (key does not unwrap)")))?;
        Ok(Capability {
            manifest: record.manifest,
            key: object_key,
            holders: record.holders.clone(),
        })
    }

    /// Read `bucket/key` into `writer`.
    pub async fn get<W: AsyncWrite + Unpin>(
        &self,
        bucket: &str,
        key: &str,
        writer: W,
    ) -> Result<ReadReport, BucketError> {
        let cap = self.capability(bucket, key).await?;
        Ok(self.storage.get(&cap, writer).await?)
    }

    /// Read the object `cap` names into `writer`.
    pub async fn storage_get<W: AsyncWrite + Unpin>(
        &self,
        cap: &Capability,
        writer: W,
    ) -> Result<ReadReport, BucketError> {
        Ok(self.storage.get(cap, writer).await?)
    }

    /// Objects in `bucket` whose key starts with `prefix`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectRecord)>, BucketError> {
        let b = self.authorize(bucket, Need::Read).await?;
        self.rows(&b)?.objects(prefix).await
    }

    /// Delete `bucket/key`: it is no longer listed or read; kept versions stay readable by id.
    /// Shards nothing else uses are reclaimed by garbage collection after its safety delay.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), BucketError> {
        let b = self.authorize(bucket, Need::Write).await?;
        let rows = self.rows(&b)?;
        let current = rows
            .object(key)
            .await?
            .ok_or_else(|| BucketError::NoObject(key.into(), bucket.into()))?;
        rows.put_object(self.signer()?, key, None).await?;
        // Kept versions still use their objects; otherwise the bytes become garbage.
        if b.versions == 1 {
            self.let_go(&rows, &b, key, &current).await?;
        }
        Ok(())
    }

    /// Delete an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), BucketError> {
        let b = self.authorize(bucket, Need::Write).await?;
        self.owner_itself(&b, "delete it")?;
        if self.rows(&b)?.has_objects().await? {
            return Err(BucketError::NotEmpty(bucket.into()));
        }
        self.drop_grants(&b).await?;
        self.table
            .put::<schema::Buckets>(self.signer()?, &(), bucket, None)
            .await?;
        Ok(())
    }
}
