//! An account acting through this node.
//!
//! Buckets and named objects are rows in the replicated metadata table that point at
//! manifests. Rows (see [`crate::schema`]): the bucket's name claim → [`BucketRecord`]; per
//! bucket, object key → [`ObjectRecord`] (the current version). Buckets that keep more than one
//! version also write every version to a row keyed by version id (time-ordered), pruned to the
//! bucket's `versions` newest. Every row of a bucket is signed by its owner's account key (or a
//! delegate's, with the account's delegation), and replicas refuse rows of a bucket signed by
//! anyone else. An object's key is stored only wrapped under its bucket's key, which is derived
//! from the owner's account key, so other members can see that an object exists but cannot
//! read it. Names, records, uploads and parts are sealed under keys derived from the bucket key
//! too ([`crate::sealed`], read and written through [`crate::rows`]), so the nodes storing them
//! learn no names, content types, metadata, ETags or content ids. A capability (`weft share`)
//! hands out one object's key explicitly.
//!
//! Every operation on a bucket, whatever the front end, goes through [`Acting::authorize`]
//! before anything of the bucket is read.

use weft_core::{ContentHash, NodeId};
use weft_heal::RefHolder;
use weft_host::Tasks;
use weft_meta::{MetaError, Signer, Table, Value};
use weft_store::{Capability, Erasure, Manifest, Residency, Storage};

use crate::rows::BucketRows;
use crate::{
    Access, BucketError, BucketRecord, MAX_VERSIONS, Need, ObjectAttrs, ObjectRecord,
    check_bucket_name, new_version, schema,
};

/// An account acting through this node: the one authorization check, bucket operations, and
/// narrow views for objects, uploads, grants and access keys. Cheap to clone.
#[derive(Clone)]
pub struct Acting {
    pub(crate) table: Table,
    pub(crate) storage: Storage,
    pub(crate) refs: weft_heal::Registry,
    pub(crate) grant_checks: crate::grants::GrantChecks,
    pub(crate) policy_checks: crate::policy::PolicyChecks,
    pub(crate) tasks: Tasks,
    access: Access,
}

impl Acting {
    /// The account `access` acts for, through this node's table and storage.
    pub fn new(table: Table, storage: Storage, tasks: Tasks, access: Access) -> Acting {
        Acting {
            refs: weft_heal::Registry::new(table.clone()),
            grant_checks: Default::default(),
            policy_checks: Default::default(),
            table,
            storage,
            tasks,
            access,
        }
    }

    /// The same node, acting for another account.
    pub fn as_account(&self, access: Access) -> Acting {
        Acting {
            refs: self.refs.clone(),
            grant_checks: self.grant_checks.clone(),
            policy_checks: self.policy_checks.clone(),
            table: self.table.clone(),
            storage: self.storage.clone(),
            tasks: self.tasks.clone(),
            access,
        }
    }

    /// Its objects: put, read, list, version, copy, delete, share.
    pub fn objects(&self) -> crate::Objects<'_> {
        crate::Objects(self)
    }

    /// Its multipart uploads.
    pub fn uploads(&self) -> crate::Uploads<'_> {
        crate::Uploads(self)
    }

    /// Its buckets' grants to other accounts.
    pub fn grants(&self) -> crate::Grants<'_> {
        crate::Grants(self)
    }

    /// Its access keys.
    pub fn keys(&self) -> crate::Keys<'_> {
        crate::Keys(self)
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
    pub fn signer(&self) -> Result<&Signer, BucketError> {
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

    /// The primary key of `bucket`, if this access holds it.
    pub fn primary_key(&self, bucket: &str) -> Option<[u8; 32]> {
        self.access.keys.primary(bucket)
    }

    /// The rows of bucket `b` (which the caller authorized), as this access reads them.
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
    pub async fn create_bucket(
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
        self.admitted().await?;
        let rows_in_regions = weft_meta::ring::tag(&policy.regions).is_some();
        let record = BucketRecord {
            name: name.into(),
            owner: self.account(),
            max_price: policy.max_price,
            policy,
            ec,
            versions,
            created_ms: weft_net::now_ms(),
            sealed: true,
            rows_in_regions,
        };
        let asked = std::time::Instant::now();
        match self
            .table
            .create::<schema::Buckets>(self.signer()?, &(), name, &record)
            .await
        {
            Ok(_) => {
                // A claim a majority took is the name's: this node knows its record now, and
                // the first write to the bucket through it reads nothing for it.
                self.policy_checks
                    .buckets
                    .put(name.to_string(), asked, record.clone());
                Ok(record)
            }
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

    /// [`Acting::bucket`], as this node read it at most [`crate::policy::CHECK_TTL`] ago (kept
    /// fresh in the background while in use: [`crate::recent`]): a bucket's record changes
    /// only when it is deleted (or claimed again), so authorization costs no round trip while
    /// a bucket is in use. A name not found is never remembered.
    pub(crate) async fn bucket_recent(&self, name: &str) -> Result<BucketRecord, BucketError> {
        let (this, n) = (self.clone(), name.to_string());
        self.policy_checks
            .buckets
            .get(name.to_string(), &self.tasks, move || async move {
                this.table.hears_majority()?;
                this.bucket(&n).await
            })
            .await
    }

    /// Forget this node's recent read of bucket `name` (it was just made or deleted here).
    pub(crate) fn forget_bucket(&self, name: &str) {
        self.policy_checks.buckets.forget(&name.to_string());
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
        let b = self.entitled(bucket, need).await?;
        if self.access.keys.primary(bucket).is_none() {
            return Err(BucketError::NoKey(bucket.into()));
        }
        Ok(b)
    }

    /// [`Acting::authorize`] without holding the bucket's key: whether the account and scope
    /// this acts with may `need` the bucket (for a node that serves something of the bucket it
    /// holds in the clear, such as a running job's logs, to a reader that shows only its
    /// delegation: [`crate::Session::public_part`]).
    pub async fn entitled(&self, bucket: &str, need: Need) -> Result<BucketRecord, BucketError> {
        self.admitted().await?;
        let b = self.bucket_recent(bucket).await?;
        if b.owner != self.account() {
            return Err(BucketError::NotOwner(bucket.into()));
        }
        if need == Need::Write && !self.access.can_write_bucket(bucket) {
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
        if self.access.scoped_delegate(bucket).is_none() && !self.access.opens(bucket) {
            return Err(BucketError::NoKey(bucket.into()));
        }
        Ok(b)
    }

    /// The record of a new version of `bucket/key`, stored as `cap`.
    pub(crate) fn record_for(
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
            inline: None,
        })
    }

    /// The record of a new version of `bucket/key` kept in its row: `bytes` (at most
    /// [`crate::INLINE_MAX`]) sealed under a fresh object key, wrapped like a stored object's.
    pub(crate) fn record_inline(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        attrs: ObjectAttrs,
    ) -> Result<ObjectRecord, BucketError> {
        let (sealed, object_key, content_id) = weft_store::seal_inline(bytes)?;
        let wrapped_key = self.wrap(bucket, &object_key, &format!("{bucket}/{key}"))?;
        let now = weft_net::now_ms();
        Ok(ObjectRecord {
            manifest: ContentHash([0; 32]),
            holders: Vec::new(),
            size: bytes.len() as u64,
            content_id,
            wrapped_key,
            created_ms: now,
            version: new_version(now),
            attrs,
            parts: Vec::new(),
            inline: Some(sealed),
        })
    }

    /// The bytes of `record`, a version of `bucket/key` kept in its row (`None` if it is not
    /// one); fails if they do not open (a wrong key, or altered).
    pub(crate) fn inline_bytes(
        &self,
        bucket: &str,
        key: &str,
        record: &ObjectRecord,
    ) -> Option<Result<Vec<u8>, BucketError>> {
        let sealed = record.inline.as_ref()?;
        let corrupt = || BucketError::Corrupt(format!("{bucket}/{key} (kept in its row)"));
        Some(
            self.unwrap(bucket, &record.wrapped_key, &format!("{bucket}/{key}"))
                .and_then(|k| weft_store::open_inline(&k, sealed))
                .filter(|plain| plain.len() as u64 == record.size)
                .ok_or_else(corrupt),
        )
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
        self.not_replacing_kept(b, &rows, key).await?;
        // The new version holds its objects before anything points at it (its bytes are
        // counted beside); one kept in its row has none, and is counted beside its write.
        let stored = !Self::stored_objects(record).is_empty();
        if stored {
            self.reference(&rows, b, key, record, true).await?;
        }
        self.commit_referenced(b, key, record, stored).await
    }

    /// A prepaid bucket takes new names only: what it holds stays until its term ends.
    async fn not_replacing_kept(
        &self,
        b: &BucketRecord,
        rows: &BucketRows<'_>,
        key: &str,
    ) -> Result<(), BucketError> {
        match self.kept_until(b).await? {
            Some(until) if rows.object(key).await?.is_some() => {
                Err(crate::quota::kept(b, until, &format!("replacing {key}")))
            }
            _ => Ok(()),
        }
    }

    /// Make a prepared object durable and `record` (made from it) the current version of
    /// `key`: the object's shards, manifest and catalog row are written beside the version's
    /// references (its name is known before they land), then the version's row — two round
    /// trips for an object of one segment. Returns the record as committed (pointing at the
    /// object's new name if a holder failed and it was named again) and the manifest.
    pub(crate) async fn finish_and_commit(
        &self,
        b: &BucketRecord,
        key: &str,
        prepared: weft_store::Prepared,
        record: ObjectRecord,
    ) -> Result<(ObjectRecord, Manifest), BucketError> {
        let rows = self.rows(b)?;
        self.not_replacing_kept(b, &rows, key).await?;
        let planned = prepared.capability().manifest;
        let (stored, held) = tokio::join!(
            self.storage.finish(prepared),
            self.reference(&rows, b, key, &record, true)
        );
        let (cap, manifest) = match stored {
            Ok(done) => done,
            Err(e) => {
                if held.is_ok() {
                    let (this, b, key, record) =
                        (self.clone(), b.clone(), key.to_string(), record.clone());
                    self.tasks.spawn(async move {
                        if let Ok(rows) = this.rows(&b) {
                            let _ = this.reference(&rows, &b, &key, &record, false).await;
                        }
                    });
                }
                return Err(e.into());
            }
        };
        held?;
        let mut record = record;
        if cap.manifest != planned {
            // Named again: the version holds the new name, and lets go of the first.
            let name = self.ref_name(&rows, b, key, &record.version);
            self.refs
                .retain(&cap.manifest, &name, self.signer()?)
                .await
                .map_err(|e| BucketError::Catalog(e.to_string()))?;
            if let Err(e) = self.refs.release(&planned, &name, self.signer()?).await {
                tracing::warn!(error = %e, "could not release an object named again; it is kept");
            }
            record.manifest = cap.manifest;
        }
        record.holders = cap.holders;
        self.commit_referenced(b, key, &record, true).await?;
        Ok((record, manifest))
    }

    /// [`Acting::commit`] once the version holds its objects (`stored`) or has none.
    async fn commit_referenced(
        &self,
        b: &BucketRecord,
        key: &str,
        record: &ObjectRecord,
        stored: bool,
    ) -> Result<(), BucketError> {
        let rows = self.rows(b)?;
        let counted = async {
            if stored {
                Ok(())
            } else {
                self.count(&b.name, record.size, true).await
            }
        };
        let written = async {
            if b.versions == 1 {
                // The write answers the version it replaced: one round trip for both.
                return rows
                    .put_object_returning(self.signer()?, key, Some(record))
                    .await;
            }
            rows.put_version(self.signer()?, key, &record.version, Some(record))
                .await?;
            let history = rows.versions(key).await?;
            let excess = history.len().saturating_sub(b.versions as usize);
            let mut pruned = Vec::new();
            for (old, r) in history.into_iter().take(excess) {
                rows.put_version(self.signer()?, key, &old, None).await?;
                pruned.extend(r);
            }
            rows.put_object(self.signer()?, key, Some(record)).await?;
            Ok(pruned)
        };
        let (counted, written) = tokio::join!(counted, written);
        let replaced = written?;
        counted?;
        // Acknowledged now; what the new version replaced lets go of its objects after, off
        // the writer's path. Should that fail, its bytes are kept, never lost.
        let released: Vec<ObjectRecord> = replaced
            .into_iter()
            .filter(|old| old.version != record.version)
            .collect();
        if !released.is_empty() {
            let (this, b, key) = (self.clone(), b.clone(), key.to_string());
            self.tasks.spawn(async move {
                let Ok(rows) = this.rows(&b) else {
                    return;
                };
                for old in released {
                    if let Err(e) = this.reference(&rows, &b, &key, &old, false).await {
                        tracing::warn!(bucket = %b.name, version = %old.version, error = %e, "could not release a replaced version's objects; they are kept");
                    }
                }
            });
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
        if record.is_inline() {
            Vec::new()
        } else if record.parts.is_empty() {
            vec![record.manifest]
        } else {
            record.parts.iter().map(|p| p.manifest).collect()
        }
    }

    /// Make the objects `record`'s bytes live in held by this version of `key` (before anything
    /// points at it), or let go of them (`hold` false: after nothing does).
    pub(crate) async fn reference(
        &self,
        rows: &BucketRows<'_>,
        b: &BucketRecord,
        key: &str,
        record: &ObjectRecord,
        hold: bool,
    ) -> Result<(), BucketError> {
        let name = self.ref_name(rows, b, key, &record.version);
        let refs = async {
            for m in Self::stored_objects(record) {
                let done = if hold {
                    self.refs.retain(&m, &name, self.signer()?).await
                } else {
                    self.refs.release(&m, &name, self.signer()?).await
                };
                done.map_err(|e| BucketError::Catalog(e.to_string()))?;
            }
            Ok::<_, BucketError>(())
        };
        if hold {
            // Counted beside the references, not after them: no round trip of its own.
            let (counted, held) = tokio::join!(self.count(&b.name, record.size, true), refs);
            counted?;
            held?;
        } else {
            refs.await?;
            self.count_released(&b.name, record.size).await;
        }
        Ok(())
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
    /// Delete an empty bucket (its owner only: not a grantee).
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), BucketError> {
        let b = self.authorize(bucket, Need::Write).await?;
        self.owner_itself(&b, "delete it")?;
        self.not_kept(&b, "deleting the bucket").await?;
        if self.rows(&b)?.has_objects().await? {
            return Err(BucketError::NotEmpty(bucket.into()));
        }
        self.drop_grants(&b).await?;
        self.table
            .put::<schema::Buckets>(self.signer()?, &(), bucket, None)
            .await?;
        self.forget_bucket(bucket);
        Ok(())
    }
}
