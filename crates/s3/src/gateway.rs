//! The S3 operations over the node's buckets.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use futures_util::StreamExt;
use md5::{Digest, Md5};
use parking_lot::Mutex;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use weft_data::{Acting, BucketError, Erasure, ObjectAttrs, ObjectRecord, Residency, StorageError};
use weft_node::Node;

use crate::list::{After, Entry, page, url_encode};

/// The gateway: every request acts for the account its access key's grant names.
pub(crate) struct Gateway {
    pub node: Node,
    pub max_object_bytes: u64,
}

fn err(e: BucketError) -> S3Error {
    use S3ErrorCode as C;
    let code = match &e {
        BucketError::Invalid(_) => C::InvalidArgument,
        BucketError::NoBucket(_) => C::NoSuchBucket,
        BucketError::Exists(_) => C::BucketAlreadyExists,
        BucketError::NoObject(..) => C::NoSuchKey,
        BucketError::NoVersion(..) => C::NoSuchVersion,
        BucketError::NotOwner(_)
        | BucketError::NotAdmitted(_)
        | BucketError::OverQuota(_)
        | BucketError::Kept(_)
        | BucketError::ReadOnly
        | BucketError::NoKey(_)
        | BucketError::Revoked(_)
        | BucketError::Shared(..) => C::AccessDenied,
        BucketError::NotEmpty(_) => C::BucketNotEmpty,
        BucketError::Digest(_) => C::BadDigest,
        BucketError::NoUpload(_) => C::NoSuchUpload,
        BucketError::BadParts(_) => C::InvalidPart,
        BucketError::PartOrder => C::InvalidPartOrder,
        BucketError::PartTooSmall(..) => C::EntityTooSmall,
        BucketError::Meta(_) => C::ServiceUnavailable,
        BucketError::Storage(StorageError::Placement(_)) => C::ServiceUnavailable,
        BucketError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::FileTooLarge =>
        {
            C::EntityTooLarge
        }
        _ => C::InternalError,
    };
    S3Error::with_message(code, e.to_string())
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn etag_value(tag: &ETag) -> String {
    match tag {
        ETag::Strong(v) | ETag::Weak(v) => v.trim_matches('"').to_string(),
    }
}

fn header<'a>(req: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    req.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A request body as a reader that hashes (MD5, on a thread of its own so hashing overlaps
/// with encoding and storing) and counts what passes, refusing more than `limit` bytes.
struct Body {
    md5: Mutex<Option<std::thread::JoinHandle<[u8; 16]>>>,
    digest: Mutex<Option<[u8; 16]>>,
}

impl Body {
    fn reader(
        blob: StreamingBlob,
        limit: u64,
    ) -> (
        Body,
        tokio_util::io::StreamReader<
            impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
            bytes::Bytes,
        >,
    ) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(256);
        let hasher = std::thread::spawn(move || {
            let mut h = Md5::new();
            for chunk in rx {
                h.update(&chunk);
            }
            h.finalize().into()
        });
        let mut seen = 0u64;
        let stream = blob.map(move |chunk| {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
            seen += chunk.len() as u64;
            if seen > limit {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("body larger than the {limit}-byte limit"),
                ));
            }
            // Bytes clones share the buffer; the hasher only falls behind by 256 chunks.
            let _ = tx.send(chunk.clone());
            Ok(chunk)
        });
        (
            Body {
                md5: Mutex::new(Some(hasher)),
                digest: Mutex::new(None),
            },
            tokio_util::io::StreamReader::new(stream),
        )
    }

    /// The MD5 of everything read (call once the reader is dropped), checked against a
    /// `Content-MD5` the client sent.
    fn finish(&self, content_md5: Option<&str>) -> Result<[u8; 16], BucketError> {
        let mut cached = self.digest.lock();
        let digest = match *cached {
            Some(d) => d,
            None => {
                let handle = self.md5.lock().take();
                let d = handle
                    .and_then(|h| h.join().ok())
                    .ok_or_else(|| BucketError::Digest("body hashing failed".into()))?;
                *cached = Some(d);
                d
            }
        };
        if let Some(claimed) = content_md5 {
            let ours = base64::engine::general_purpose::STANDARD.encode(digest);
            if ours != claimed.trim() {
                return Err(BucketError::Digest(
                    "the Content-MD5 you specified did not match what we received".into(),
                ));
            }
        }
        Ok(digest)
    }
}

fn attrs_from(content_type: Option<String>, metadata: Option<Metadata>) -> ObjectAttrs {
    ObjectAttrs {
        content_type: content_type.unwrap_or_default(),
        meta: metadata.unwrap_or_default().into_iter().collect(),
        etag: String::new(),
    }
}

fn metadata_of(r: &ObjectRecord) -> Option<Metadata> {
    (!r.attrs.meta.is_empty()).then(|| r.attrs.meta.clone().into_iter().collect::<HashMap<_, _>>())
}

fn content_type_of(r: &ObjectRecord) -> String {
    if r.attrs.content_type.is_empty() {
        "binary/octet-stream".into()
    } else {
        r.attrs.content_type.clone()
    }
}

impl Gateway {
    /// The account the request's access key acts for: the one whose grant the key carries,
    /// or (keys from before accounts) the node's own.
    async fn view<T>(&self, req: &S3Request<T>) -> S3Result<View> {
        let id = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.as_str())
            .ok_or_else(|| s3_error!(AccessDenied, "requests must be signed"))?;
        let key = self
            .node
            .data()
            .access_key(id)
            .await
            .ok_or_else(|| s3_error!(InvalidAccessKeyId, "no such access key"))?;
        let buckets = match &key.grant {
            None => self.node.data().own().clone(),
            Some(text) => {
                let mut access = self
                    .node
                    .data()
                    .session_access(text)
                    .map_err(|e| s3_error!(AccessDenied, "access key {id}: {e}"))?;
                if key.own_grant {
                    access = access.owners_own();
                }
                self.node.data().acting(access)
            }
        };
        Ok(View { buckets, key })
    }

    /// If-Match / If-None-Match against the current ETag.
    fn preconditions(
        record: &ObjectRecord,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        let tag = record.etag();
        let matches = |c: &ETagCondition| match c {
            ETagCondition::Any => true,
            ETagCondition::ETag(t) => etag_value(t) == tag,
        };
        if let Some(c) = if_match
            && !matches(c)
        {
            return Err(s3_error!(
                PreconditionFailed,
                "ETag does not match If-Match"
            ));
        }
        if let Some(c) = if_none_match
            && matches(c)
        {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
        Ok(())
    }

    fn check_length(&self, length: Option<i64>) -> S3Result<()> {
        if let Some(n) = length
            && n as u64 > self.max_object_bytes
        {
            return Err(s3_error!(
                EntityTooLarge,
                "{n} bytes is over this gateway's {}-byte limit",
                self.max_object_bytes
            ));
        }
        Ok(())
    }
}

/// One request's view: the buckets of the account its key acts for.
struct View {
    buckets: Acting,
    key: weft_data::AccessKey,
}

impl View {
    fn buckets(&self) -> &Acting {
        &self.buckets
    }

    async fn record(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<ObjectRecord> {
        match version {
            Some(v) if v != "null" => self.buckets().objects().version(bucket, key, v).await,
            _ => self.buckets().objects().object(bucket, key).await,
        }
        .map_err(err)
    }

    async fn owned_bucket(&self, bucket: &str) -> S3Result<weft_data::BucketRecord> {
        self.buckets()
            .authorize(bucket, weft_data::Need::Read)
            .await
            .map_err(err)
    }

    async fn listing(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: &After,
        max: usize,
    ) -> S3Result<crate::list::Page<ObjectRecord>> {
        self.owned_bucket(bucket).await?;
        let rows = self
            .buckets()
            .objects()
            .list(bucket, prefix)
            .await
            .map_err(err)?;
        Ok(page(rows, prefix, delimiter, after, max))
    }
}

fn split_page(
    p: crate::list::Page<ObjectRecord>,
    encode: bool,
) -> (Vec<Object>, Vec<CommonPrefix>) {
    let enc = |k: String| if encode { url_encode(&k) } else { k };
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for e in p.entries {
        match e {
            Entry::Key(key, r) => objects.push(Object {
                key: Some(enc(key)),
                size: Some(r.size as i64),
                e_tag: Some(ETag::Strong(r.etag())),
                last_modified: Some(timestamp(r.created_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            Entry::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
        }
    }
    (objects, prefixes)
}

fn wants_url(e: &Option<EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL)
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let g = self.view(&req).await?;
        let me = g.buckets().account();
        let all = g.buckets().list_buckets().await.map_err(err)?;
        let buckets = all
            .into_iter()
            .filter(|b| b.owner == me)
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                id: Some(me.to_hex()),
                display_name: Some(me.short()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let g = self.view(&req).await?;
        let name = req.input.bucket.clone();
        let h = &req.headers;
        let list = |v: Option<&str>| -> Vec<String> {
            v.unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let policy = Residency {
            regions: list(header(h, "x-weft-regions")),
            jurisdictions: list(header(h, "x-weft-jurisdictions"))
                .into_iter()
                .map(|j| j.to_ascii_uppercase())
                .collect(),
            ..Default::default()
        };
        let ec = match header(h, "x-weft-ec") {
            Some(t) if !t.is_empty() => Some(
                t.parse::<Erasure>()
                    .map_err(|e| s3_error!(InvalidArgument, "x-weft-ec: {e}"))?,
            ),
            _ => None,
        };
        let versions = match header(h, "x-weft-versions") {
            Some(t) => t
                .parse::<u32>()
                .map_err(|_| s3_error!(InvalidArgument, "x-weft-versions: a number"))?,
            None => 1,
        };
        match g.buckets().create_bucket(&name, policy, ec, versions).await {
            Ok(_) => Ok(S3Response::new(CreateBucketOutput {
                location: Some(format!("/{name}")),
            })),
            Err(BucketError::Exists(_)) => {
                let mine = g
                    .buckets()
                    .bucket(&name)
                    .await
                    .is_ok_and(|b| b.owner == g.buckets().account());
                Err(if mine {
                    s3_error!(BucketAlreadyOwnedByYou)
                } else {
                    s3_error!(BucketAlreadyExists)
                })
            }
            Err(BucketError::Invalid(m)) if m.starts_with("bucket name") => {
                Err(s3_error!(InvalidBucketName, "{m}"))
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let g = self.view(&req).await?;
        g.buckets()
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(err)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let g = self.view(&req).await?;
        g.owned_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let g = self.view(&req).await?;
        g.owned_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        self.check_length(input.content_length)?;
        let blob = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "no body"))?;
        let (body, reader) = Body::reader(blob, self.max_object_bytes);
        let attrs = attrs_from(input.content_type, input.metadata);
        let content_md5 = input.content_md5;
        let (record, _) = g
            .buckets()
            .objects()
            .put_with(&input.bucket, &input.key, reader, || {
                let digest = body.finish(content_md5.as_deref())?;
                Ok(ObjectAttrs {
                    etag: hex(&digest),
                    ..attrs
                })
            })
            .await
            .map_err(err)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(record.etag())),
            size: Some(record.size as i64),
            version_id: Some(record.version),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "reading by part number"));
        }
        let record = g
            .record(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        Self::preconditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        let size = record.size;
        let (start, end, content_range) = match input.range {
            None => (0, size, None),
            Some(r) => {
                let range = r.check(size)?;
                let cr = format!("bytes {}-{}/{size}", range.start, range.end - 1);
                (range.start, range.end, Some(cr))
            }
        };
        let (reader, writer) = tokio::io::duplex(1 << 20);
        let buckets = g.buckets().clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let rec = record.clone();
        let ledger = self.node.ledger().clone();
        self.node.spawn(async move {
            match buckets
                .objects()
                .read_range((&bucket, &key), &rec, start, end, writer)
                .await
            {
                // Served: metered to the account it was read for (a transfer receipt).
                Ok(()) => ledger.meter_transfer(
                    buckets.account(),
                    &format!("{bucket}/{key}@{} {start}-{end}", rec.version),
                    end - start,
                ),
                // The body stops short of its Content-Length: the client sees a failed
                // transfer, never wrong bytes.
                Err(e) => tracing::warn!(%bucket, %key, error = %e, "S3 read failed"),
            }
        });
        let body = StreamingBlob::wrap(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 << 10,
        ));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some((end - start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: Some(content_type_of(&record)),
            e_tag: Some(ETag::Strong(record.etag())),
            last_modified: Some(timestamp(record.created_ms)),
            metadata: metadata_of(&record),
            version_id: Some(record.version.clone()),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let record = g
            .record(&input.bucket, &input.key, input.version_id.as_deref())
            .await?;
        Self::preconditions(
            &record,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(record.size as i64),
            accept_ranges: Some("bytes".into()),
            content_type: Some(content_type_of(&record)),
            e_tag: Some(ETag::Strong(record.etag())),
            last_modified: Some(timestamp(record.created_ms)),
            metadata: metadata_of(&record),
            version_id: Some(record.version.clone()),
            parts_count: (!record.parts.is_empty()).then_some(record.parts.len() as i32),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        match g
            .buckets()
            .objects()
            .delete(&input.bucket, &input.key)
            .await
        {
            // Deleting what is not there succeeds, as S3 does.
            Ok(()) | Err(BucketError::NoObject(..)) => {
                Ok(S3Response::new(DeleteObjectOutput::default()))
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        g.owned_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            match g.buckets().objects().delete(&input.bucket, &o.key).await {
                Ok(()) | Err(BucketError::NoObject(..)) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = err(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(o.key),
                        message: e.message().map(String::from),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let g = self.view(&req).await?;
        let CopySource::Bucket {
            bucket: from_bucket,
            key: from_key,
            version_id,
        } = &req.input.copy_source
        else {
            return Err(s3_error!(NotImplemented, "copy from access points"));
        };
        // The key must also be allowed to read the source.
        if !g.key.allows(Some(from_bucket), false) {
            return Err(s3_error!(
                AccessDenied,
                "this key may not read {from_bucket}"
            ));
        }
        let input = &req.input;
        let source = g
            .record(from_bucket, from_key, version_id.as_deref())
            .await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let attrs = if replace {
            ObjectAttrs {
                etag: source.attrs.etag.clone(),
                ..attrs_from(input.content_type.clone(), input.metadata.clone())
            }
        } else {
            source.attrs.clone()
        };
        let record = g
            .buckets()
            .objects()
            .link(
                (from_bucket, from_key),
                &source,
                (&input.bucket, &input.key),
                attrs,
            )
            .await
            .map_err(err)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(record.etag())),
                last_modified: Some(timestamp(record.created_ms)),
                ..Default::default()
            }),
            version_id: Some(record.version),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => After::from_token(t)
                .ok_or_else(|| s3_error!(InvalidArgument, "bad continuation token"))?,
            (None, Some(k)) => After::Key(k.clone()),
            (None, None) => After::Start,
        };
        let p = g
            .listing(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                &after,
                max,
            )
            .await?;
        let (truncated, next) = (p.truncated, p.next.clone());
        let encode = wants_url(&input.encoding_type);
        let (contents, prefixes) = split_page(p, encode);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(if encode { url_encode(&prefix) } else { prefix }),
            delimiter: input.delimiter,
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            start_after: input.start_after,
            encoding_type: input.encoding_type,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match &input.marker {
            Some(m) if !m.is_empty() => After::Key(m.clone()),
            _ => After::Start,
        };
        let p = g
            .listing(
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                &after,
                max,
            )
            .await?;
        let truncated = p.truncated;
        let last = p.entries.last().map(|e| match e {
            Entry::Key(k, _) => k.clone(),
            Entry::Prefix(p) => p.clone(),
        });
        let encode = wants_url(&input.encoding_type);
        let (contents, prefixes) = split_page(p, encode);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(prefix),
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_marker: if truncated { last } else { None },
            encoding_type: input.encoding_type,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let attrs = attrs_from(input.content_type, input.metadata);
        let id = g
            .buckets()
            .uploads()
            .create(&input.bucket, &input.key, attrs)
            .await
            .map_err(err)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        self.check_length(input.content_length)?;
        let number = u32::try_from(input.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "part number"))?;
        let blob = input
            .body
            .ok_or_else(|| s3_error!(IncompleteBody, "no body"))?;
        let (body, reader) = Body::reader(blob, self.max_object_bytes);
        let content_md5 = input.content_md5;
        let part = g
            .buckets()
            .uploads()
            .put_part(&input.bucket, &input.upload_id, number, reader, || {
                Ok(hex(&body.finish(content_md5.as_deref())?))
            })
            .await
            .map_err(err)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let mut chosen = Vec::new();
        for p in listed {
            let number = p
                .part_number
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| s3_error!(InvalidPart, "a part without a number"))?;
            let tag = p
                .e_tag
                .as_ref()
                .map(etag_value)
                .ok_or_else(|| s3_error!(InvalidPart, "part {number} without an ETag"))?;
            chosen.push((number, tag));
        }
        let record = g
            .buckets()
            .uploads()
            .complete(&input.bucket, &input.upload_id, &chosen, |parts| {
                // S3's multipart ETag: MD5 of the parts' binary MD5s, then "-N".
                let mut h = Md5::new();
                for p in parts {
                    let raw: Vec<u8> = (0..p.etag.len() / 2)
                        .filter_map(|i| u8::from_str_radix(&p.etag[2 * i..2 * i + 2], 16).ok())
                        .collect();
                    h.update(&raw);
                }
                format!("{}-{}", hex(&h.finalize()), parts.len())
            })
            .await
            .map_err(err)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(record.etag())),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            version_id: Some(record.version),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        g.buckets()
            .uploads()
            .abort(&input.bucket, &input.upload_id)
            .await
            .map_err(err)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let marker = input.part_number_marker.unwrap_or(0);
        let all = g
            .buckets()
            .uploads()
            .parts(&input.bucket, &input.upload_id)
            .await
            .map_err(err)?;
        let mut after: Vec<_> = all
            .into_iter()
            .filter(|p| i64::from(p.number) > i64::from(marker))
            .collect();
        let truncated = after.len() > max;
        after.truncate(max);
        let next = after.last().map(|p| p.number as i32);
        let parts = after
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.number as i32),
                e_tag: Some(ETag::Strong(p.etag)),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            parts: Some(parts),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if truncated { next } else { None },
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let g = self.view(&req).await?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
        let mut all = g
            .buckets()
            .uploads()
            .list(&input.bucket, &prefix)
            .await
            .map_err(err)?;
        // S3 orders uploads by key, then by when they started.
        all.sort_by(|a, b| (&a.1.key, &a.0).cmp(&(&b.1.key, &b.0)));
        if let Some(km) = input.key_marker.as_deref().filter(|k| !k.is_empty()) {
            let id_marker = input.upload_id_marker.clone().unwrap_or_default();
            all.retain(|(id, u)| u.key.as_str() > km || (u.key == km && *id > id_marker));
        }
        let truncated = all.len() > max;
        all.truncate(max);
        let (next_key, next_id) = match all.last() {
            Some((id, u)) if truncated => (Some(u.key.clone()), Some(id.clone())),
            _ => (None, None),
        };
        let uploads = all
            .into_iter()
            .map(|(id, u)| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(id),
                initiated: Some(timestamp(u.initiated_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn blob(parts: &[&'static [u8]]) -> StreamingBlob {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(bytes::Bytes::from_static(p)))
            .collect();
        StreamingBlob::wrap(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn bodies_are_hashed_checked_and_capped() {
        let (body, mut reader) = Body::reader(blob(&[b"hello ", b"world"]), 100);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello world");
        drop(reader);
        let md5 = body.finish(None).unwrap();
        assert_eq!(hex(&md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        let claimed = base64::engine::general_purpose::STANDARD.encode(md5);
        assert!(body.finish(Some(&claimed)).is_ok());
        assert!(matches!(
            body.finish(Some("AAAAAAAAAAAAAAAAAAAAAA==")),
            Err(BucketError::Digest(_))
        ));
        let (_, mut reader) = Body::reader(blob(&[b"0123456789", b"0123456789"]), 15);
        let e = reader.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(
            err(BucketError::Storage(StorageError::Io(e))).code(),
            &S3ErrorCode::EntityTooLarge
        );
    }
}
