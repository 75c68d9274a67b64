//! An account's objects: put (whole, or as S3 writes with its ETag), read (whole, ranged,
//! assembled from parts), list, keep versions, copy without copying bytes, delete, share by
//! capability. Every operation authorizes its bucket first.

use tokio::io::{AsyncRead, AsyncWrite};
use weft_store::{Capability, Erasure, Manifest, ReadReport, Residency};

use crate::{
    Acting, BucketError, BucketRecord, INLINE_MAX, Need, ObjectAttrs, ObjectRecord, check_key,
    new_version, part_context,
};

/// Whether `b` keeps small objects in their rows: only where its rows live where its objects
/// may — a bucket allowed anywhere, or one whose rows are held to its regions — since an
/// object's bytes must stay where its owner allowed, sealed or not. (Rows are not held to
/// jurisdictions: a bucket with one stores every object in segments.)
pub(crate) fn keeps_inline(b: &BucketRecord) -> bool {
    b.policy.jurisdictions.is_empty() && (b.policy.regions.is_empty() || b.rows_in_regions)
}

/// The objects of an account ([`Acting::objects`]).
pub struct Objects<'a>(pub(crate) &'a Acting);

impl Objects<'_> {
    /// Store an object under no name, for the acting account, under `policy`: the capability
    /// that reads it is its only name, so it is kept for good (nothing can let go of it).
    pub async fn put_unnamed<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        policy: Residency,
        ec: Option<Erasure>,
    ) -> Result<(Capability, Manifest), BucketError> {
        self.0.room_for(0).await?;
        let (cap, manifest) = self.0.storage.put(reader, policy, ec).await?;
        self.0.room_for(manifest.size).await?;
        self.0
            .count(crate::quota::UNNAMED, manifest.size, true)
            .await?;
        self.0.retain_capability(&cap.manifest).await?;
        Ok((cap, manifest))
    }

    /// Store an object under `bucket/key`, replacing the current version.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        bucket: &str,
        key: &str,
        reader: R,
    ) -> Result<(ObjectRecord, Option<Manifest>), BucketError> {
        self.put_with(bucket, key, reader, || Ok(ObjectAttrs::default()))
            .await
    }

    /// Store an object; `attrs` is asked once every byte has been read and stored and `reader`
    /// dropped (so a writer
    /// can hash the stream on its way in for an ETag, or refuse it if a digest does not match:
    /// then nothing is committed). An object of at most [`INLINE_MAX`] bytes in a bucket whose
    /// rows may be kept anywhere ([`keeps_inline`]) is kept in its row (no manifest then).
    pub async fn put_with<R: AsyncRead + Unpin>(
        &self,
        bucket: &str,
        key: &str,
        mut reader: R,
        attrs: impl FnOnce() -> Result<ObjectAttrs, BucketError>,
    ) -> Result<(ObjectRecord, Option<Manifest>), BucketError> {
        use tokio::io::AsyncReadExt;
        check_key(key)?;
        let b = self.0.authorize(bucket, Need::Write).await?;
        self.0.room_for(0).await?;
        let mut head = Vec::with_capacity(INLINE_MAX + 1);
        (&mut reader)
            .take(INLINE_MAX as u64 + 1)
            .read_to_end(&mut head)
            .await
            .map_err(|e| BucketError::Storage(e.into()))?;
        if head.len() <= INLINE_MAX && keeps_inline(&b) {
            // Every byte was read: the reader goes before `attrs` (a writer may finish what it
            // computed on the stream only once the stream is gone).
            drop(reader);
            self.0.room_for_object(&b, key, head.len() as u64).await?;
            let record = self.0.record_inline(bucket, key, &head, attrs()?)?;
            self.0.commit(&b, key, &record).await?;
            return Ok((record, None));
        }
        let reader = std::io::Cursor::new(head).chain(reader);
        let prepared = self
            .0
            .storage
            .prepare(reader, b.policy.clone(), b.ec)
            .await?;
        self.0
            .room_for_object(&b, key, prepared.manifest().size)
            .await?;
        let attrs = attrs()?;
        let record = self.0.record_for(
            bucket,
            key,
            prepared.capability(),
            prepared.manifest(),
            attrs,
        )?;
        let (record, manifest) = self.0.finish_and_commit(&b, key, prepared, record).await?;
        Ok((record, Some(manifest)))
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
        self.0.authorize(from_bucket, Need::Read).await?;
        let b = self.0.authorize(bucket, Need::Write).await?;
        if let Some(bytes) = self.0.inline_bytes(from_bucket, from_key, source)
            && !keeps_inline(&b)
        {
            // Kept in a row anywhere, it cannot become a row of a bucket held to regions:
            // it is stored under the target's residency instead.
            let bytes = bytes?;
            let (record, _) = self.put_with(bucket, key, &bytes[..], || Ok(attrs)).await?;
            return Ok(record);
        }
        self.0.room_for_object(&b, key, source.size).await?;
        let mut record = source.clone();
        let rewrap = |wrapped: &[u8], from: String, to: String| {
            let plain = self.0.unwrap(from_bucket, wrapped, &from).ok_or_else(|| {
                BucketError::Corrupt(format!("{from_bucket}/{from_key} (key does not unwrap)"))
            })?;
            self.0.wrap(bucket, &plain, &to)
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
        self.0.commit(&b, key, &record).await?;
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
        if let Some(bytes) = self.0.inline_bytes(bucket, key, record) {
            let bytes = bytes?;
            let start = start.min(end) as usize;
            writer
                .write_all(&bytes[start..end as usize])
                .await
                .map_err(|e| BucketError::Storage(e.into()))?;
            writer
                .flush()
                .await
                .map_err(|e| BucketError::Storage(e.into()))?;
            return Ok(());
        }
        if record.parts.is_empty() {
            let cap = self.capability_of(bucket, key, record)?;
            let manifest = self.0.storage.manifest(&cap).await?;
            self.0
                .storage
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
                    .0
                    .unwrap(bucket, &part.wrapped_key, &part_context(bucket, key, i))
                    .ok_or_else(|| BucketError::Corrupt(format!("{bucket}/{key} part {i}")))?;
                let cap = Capability {
                    manifest: part.manifest,
                    key: object_key,
                    holders: part.holders.clone(),
                    inline: None,
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
                let storage = self.0.storage.clone();
                // Aborted if this read is dropped (a client that went away), and owned by
                // the node like every task (stopped when it shuts down).
                queue.push_back((
                    self.0.tasks.spawn_joined(async move {
                        let manifest = storage.manifest(&cap).await?;
                        storage.read_range(&cap, &manifest, a, b, pipe).await
                    }),
                    reader,
                ));
            }
            let Some((task, mut reader)) = queue.pop_front() else {
                break;
            };
            let copied = tokio::io::copy(&mut reader, &mut writer).await;
            match task.await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(BucketError::Corrupt("part read stopped".into())),
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
        let b = self.0.authorize(bucket, Need::Read).await?;
        let history = self.0.rows(&b)?.versions(key).await?;
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
        let b = self.0.authorize(bucket, Need::Read).await?;
        let current = self.0.object_in(&b, key).await;
        if let Ok(r) = &current
            && r.version == version
        {
            return current;
        }
        self.0.rows(&b)?.version(key, version).await?.ok_or_else(no)
    }

    /// The record of `bucket/key`.
    pub async fn object(&self, bucket: &str, key: &str) -> Result<ObjectRecord, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        self.0.object_in(&b, key).await
    }

    /// The read capability of the current version of `bucket/key`: what `weft share` prints
    /// (a small object kept in its row is carried by it).
    pub async fn capability(&self, bucket: &str, key: &str) -> Result<Capability, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        let record = self.0.object_in(&b, key).await?;
        self.capability_of(bucket, key, &record)
    }

    /// The manifests `bucket/key`'s current version is stored as, each as it stands now
    /// (holders moved by repair included): one, or one per uploaded part; none for a small
    /// object kept in its row. What an auditor checks the shards of.
    pub async fn stored_manifests(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<Manifest>, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        let record = self.0.object_in(&b, key).await?;
        if record.inline.is_some() {
            return Ok(Vec::new());
        }
        let mut caps = Vec::new();
        if record.parts.is_empty() {
            caps.push(self.capability_of(bucket, key, &record)?);
        }
        for (i, part) in record.parts.iter().enumerate() {
            let object_key = self
                .0
                .unwrap(bucket, &part.wrapped_key, &part_context(bucket, key, i))
                .ok_or_else(|| BucketError::Corrupt(format!("{bucket}/{key} part {i}")))?;
            caps.push(Capability {
                manifest: part.manifest,
                key: object_key,
                holders: part.holders.clone(),
                inline: None,
            });
        }
        let mut out = Vec::with_capacity(caps.len());
        for cap in caps {
            out.push(self.0.storage.manifest_now(&cap).await?);
        }
        Ok(out)
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
            .0
            .unwrap(bucket, &record.wrapped_key, &context)
            .ok_or_else(|| BucketError::Corrupt(format!("{bucket}/{key} (key does not unwrap)")))?;
        // A small object kept in its row is carried by its capability, sealed as in the row.
        Ok(Capability {
            manifest: record.manifest,
            key: object_key,
            holders: record.holders.clone(),
            inline: record.inline.clone(),
        })
    }

    /// Read `bucket/key` into `writer`.
    pub async fn get<W: AsyncWrite + Unpin>(
        &self,
        bucket: &str,
        key: &str,
        writer: W,
    ) -> Result<ReadReport, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        let record = self.0.object_in(&b, key).await?;
        if record.is_inline() || !record.parts.is_empty() {
            self.read_range((bucket, key), &record, 0, record.size, writer)
                .await?;
            return Ok(ReadReport {
                bytes: record.size,
                ..ReadReport::default()
            });
        }
        let cap = self.capability_of(bucket, key, &record)?;
        Ok(self.0.storage.get(&cap, writer).await?)
    }

    /// Read the object `cap` names into `writer`.
    pub async fn get_capability<W: AsyncWrite + Unpin>(
        &self,
        cap: &Capability,
        writer: W,
    ) -> Result<ReadReport, BucketError> {
        Ok(self.0.storage.get(cap, writer).await?)
    }

    /// Objects in `bucket` whose key starts with `prefix`.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, ObjectRecord)>, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        self.0.rows(&b)?.objects(prefix).await
    }

    /// Delete `bucket/key`: it is no longer listed or read; kept versions stay readable by id.
    /// Shards nothing else uses are reclaimed by garbage collection after its safety delay.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), BucketError> {
        let b = self.0.authorize(bucket, Need::Write).await?;
        let rows = self.0.rows(&b)?;
        let current = rows
            .object(key)
            .await?
            .ok_or_else(|| BucketError::NoObject(key.into(), bucket.into()))?;
        self.0.not_kept(&b, &format!("deleting {key}")).await?;
        rows.put_object(self.0.signer()?, key, None).await?;
        // Kept versions still use their objects; otherwise the bytes become garbage.
        if b.versions == 1 {
            self.0.reference(&rows, &b, key, &current, false).await?;
        }
        Ok(())
    }
}
