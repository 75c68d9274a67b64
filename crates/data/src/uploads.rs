//! Multipart uploads (S3's): parts are stored as objects of their own as they arrive; completing
//! the upload writes one object row that lists them, so nothing is copied.
//!
//! Rows (see [`crate::schema`]): the bucket's uploads by id → [`UploadRecord`]; an upload's
//! parts by number → [`PartRecord`]. Parts of an aborted or abandoned upload are reclaimed by
//! garbage collection.

use tokio::io::AsyncRead;
use weft_core::ContentHash;
use weft_heal::RefHolder;

use crate::records::upload_part_context;
use crate::{
    Acting, BucketError, MAX_PARTS, MIN_PART_SIZE, Need, ObjectAttrs, ObjectRecord, PartRecord,
    PartRef, UploadRecord, check_key, new_version, part_context,
};

/// The multipart uploads of an account ([`Acting::uploads`]).
pub struct Uploads<'a>(pub(crate) &'a Acting);

impl Uploads<'_> {
    fn part_ref(&self, bucket: &str, upload: &str, number: u32) -> RefHolder {
        RefHolder::Part {
            owner: self.0.account(),
            bucket: bucket.into(),
            upload: upload.into(),
            number,
        }
    }

    /// Start an upload of `bucket/key`; returns its id.
    pub async fn create(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
    ) -> Result<String, BucketError> {
        check_key(key)?;
        let b = self.0.authorize(bucket, Need::Write).await?;
        let now = weft_net::now_ms();
        let id = new_version(now);
        let record = UploadRecord {
            key: key.into(),
            attrs,
            initiated_ms: now,
        };
        self.0
            .rows(&b)?
            .put_upload(self.0.signer()?, &id, Some(&record))
            .await?;
        Ok(id)
    }

    /// An upload in progress.
    pub async fn get(&self, bucket: &str, upload: &str) -> Result<UploadRecord, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        self.0
            .rows(&b)?
            .upload(upload)
            .await?
            .ok_or_else(|| BucketError::NoUpload(upload.into()))
    }

    /// Store part `number` of an upload (replacing an earlier part with that number); `etag`
    /// is asked once the part's bytes are stored (an error there drops the part).
    pub async fn put_part<R: AsyncRead + Unpin>(
        &self,
        bucket: &str,
        upload: &str,
        number: u32,
        reader: R,
        etag: impl FnOnce() -> Result<String, BucketError>,
    ) -> Result<PartRecord, BucketError> {
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(BucketError::Invalid(format!(
                "part number {number}: 1 to {MAX_PARTS}"
            )));
        }
        self.get(bucket, upload).await?;
        let b = self.0.authorize(bucket, Need::Write).await?;
        let rows = self.0.rows(&b)?;
        let replaced = rows.part(upload, number).await?;
        self.0.room_for(0).await?;
        let (cap, manifest) = self.0.storage.put(reader, b.policy.clone(), b.ec).await?;
        let name = self.part_ref(bucket, upload, number);
        if replaced
            .as_ref()
            .is_none_or(|old| old.manifest != cap.manifest)
        {
            self.0.room_for(manifest.size).await?;
            self.0.count(bucket, manifest.size, true).await?;
        }
        self.0
            .refs
            .retain(&cap.manifest, &name, self.0.signer()?)
            .await
            .map_err(|e| BucketError::Catalog(e.to_string()))?;
        let wrapped_key = self.0.wrap(
            bucket,
            &cap.key,
            &upload_part_context(bucket, upload, number),
        )?;
        let part = PartRecord {
            number,
            etag: etag()?,
            size: manifest.size,
            manifest: cap.manifest,
            holders: cap.holders,
            content_id: manifest.content_id,
            wrapped_key,
            created_ms: weft_net::now_ms(),
        };
        rows.put_part(self.0.signer()?, upload, number, Some(&part))
            .await?;
        if let Some(old) = replaced
            && old.manifest != part.manifest
        {
            self.0
                .refs
                .release(&old.manifest, &name, self.0.signer()?)
                .await
                .map_err(|e| BucketError::Catalog(e.to_string()))?;
            self.0.count_released(bucket, old.size).await;
        }
        Ok(part)
    }

    /// The parts uploaded so far, by number.
    pub async fn parts(&self, bucket: &str, upload: &str) -> Result<Vec<PartRecord>, BucketError> {
        self.get(bucket, upload).await?;
        let b = self.0.authorize(bucket, Need::Read).await?;
        self.0.rows(&b)?.parts(upload).await
    }

    /// Uploads in progress in `bucket` for keys starting with `prefix`: (id, record), by id.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, UploadRecord)>, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        let mut uploads = self.0.rows(&b)?.uploads().await?;
        uploads.retain(|(_, u)| u.key.starts_with(prefix));
        Ok(uploads)
    }

    /// Finish an upload: the listed parts (number, etag), in ascending order, become the
    /// object. Every part but the last must be at least [`MIN_PART_SIZE`].
    pub async fn complete(
        &self,
        bucket: &str,
        upload: &str,
        chosen: &[(u32, String)],
        etag: impl FnOnce(&[PartRecord]) -> String,
    ) -> Result<ObjectRecord, BucketError> {
        let b = self.0.authorize(bucket, Need::Write).await?;
        let up = self.get(bucket, upload).await?;
        if chosen.is_empty() {
            return Err(BucketError::BadParts("no parts listed".into()));
        }
        if chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(BucketError::PartOrder);
        }
        let stored = self.parts(bucket, upload).await?;
        let mut parts = Vec::new();
        for (number, tag) in chosen {
            let part = stored
                .iter()
                .find(|p| p.number == *number && p.etag == *tag)
                .ok_or_else(|| {
                    BucketError::BadParts(format!("part {number} with ETag {tag} was not uploaded"))
                })?;
            parts.push(part.clone());
        }
        if let Some(small) = parts[..parts.len() - 1]
            .iter()
            .find(|p| p.size < MIN_PART_SIZE)
        {
            return Err(BucketError::PartTooSmall(small.number, small.size));
        }
        let mut refs = Vec::new();
        let mut content = blake3::Hasher::new();
        for (i, p) in parts.iter().enumerate() {
            let plain = self
                .0
                .unwrap(
                    bucket,
                    &p.wrapped_key,
                    &upload_part_context(bucket, upload, p.number),
                )
                .ok_or_else(|| BucketError::Corrupt(format!("part {} of {upload}", p.number)))?;
            let wrapped_key = self
                .0
                .wrap(bucket, &plain, &part_context(bucket, &up.key, i))?;
            content.update(&p.content_id.0);
            refs.push(PartRef {
                manifest: p.manifest,
                holders: p.holders.clone(),
                size: p.size,
                wrapped_key,
            });
        }
        let now = weft_net::now_ms();
        let mut attrs = up.attrs.clone();
        attrs.etag = etag(&parts);
        let record = ObjectRecord {
            manifest: ContentHash([0; 32]),
            holders: Vec::new(),
            size: parts.iter().map(|p| p.size).sum(),
            // For an assembled object: BLAKE3 over its parts' content ids, in order.
            content_id: ContentHash(*content.finalize().as_bytes()),
            wrapped_key: Vec::new(),
            created_ms: now,
            version: new_version(now),
            attrs,
            parts: refs,
            inline: None,
        };
        self.0.commit(&b, &up.key, &record).await?;
        self.forget(bucket, upload).await?;
        Ok(record)
    }

    /// Abandon an upload (its parts are reclaimed by garbage collection).
    pub async fn abort(&self, bucket: &str, upload: &str) -> Result<(), BucketError> {
        self.get(bucket, upload).await?;
        self.forget(bucket, upload).await
    }

    async fn forget(&self, bucket: &str, upload: &str) -> Result<(), BucketError> {
        let b = self.0.authorize(bucket, Need::Write).await?;
        let rows = self.0.rows(&b)?;
        // A part row this node cannot read is kept (and so are its bytes).
        for p in rows.parts(upload).await? {
            rows.put_part(self.0.signer()?, upload, p.number, None)
                .await?;
            // The assembled object (if completed) holds the parts it uses; the upload lets go
            // of all of them.
            let name = self.part_ref(bucket, upload, p.number);
            self.0
                .refs
                .release(&p.manifest, &name, self.0.signer()?)
                .await
                .map_err(|e| BucketError::Catalog(e.to_string()))?;
            self.0.count_released(bucket, p.size).await;
        }
        rows.put_upload(self.0.signer()?, upload, None).await?;
        Ok(())
    }
}
