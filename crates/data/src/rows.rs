//! One bucket's rows, read and written by object key whatever their form: sealed (the `s…`
//! kinds, names and values encrypted under the bucket's key) or, for a bucket made before weft
//! sealed rows, plain. Everything above this module speaks plaintext names and records.

use weft_meta::schema::partition_key;
use weft_meta::{MetaError, Schema, Signer, SortKey, Table};

use crate::schema::{self, BucketId, ObjectId, PartNumber, UploadId};
use crate::sealed::BucketSeal;
use crate::{BucketError, BucketRecord, ObjectRecord, PartRecord, UploadRecord};

/// The value sealed in a row of plain kind `P`: a sealed body carries no format byte, so it is
/// decoded as `P`'s newest format first, then each older one (a body decodes as one format at
/// most: decoding leaves no byte over).
fn open_value<P: Schema>(seal: &BucketSeal, pk: &str, sk: &str, sealed: &[u8]) -> Option<P::Value> {
    let plain = seal.open_bytes(pk, sk, sealed)?;
    (1..=P::FORMAT)
        .rev()
        .find_map(|format| P::decode(format, &plain).ok())
}

/// A table error; a row this node cannot read becomes [`BucketError::Corrupt`] naming it.
pub(crate) fn unreadable(e: MetaError, what: impl FnOnce() -> String) -> BucketError {
    match e {
        MetaError::Unreadable { why, .. } => BucketError::Corrupt(format!("{} ({why})", what())),
        e => e.into(),
    }
}

/// The rows of one bucket.
pub(crate) struct BucketRows<'a> {
    table: &'a Table,
    id: BucketId,
    name: String,
    /// `None`: a bucket with plain rows.
    seal: Option<BucketSeal>,
}

impl<'a> BucketRows<'a> {
    /// The rows of `b`; `key` is the bucket's key (needed if its rows are sealed).
    pub fn new(
        table: &'a Table,
        b: &BucketRecord,
        key: Option<[u8; 32]>,
    ) -> Result<BucketRows<'a>, BucketError> {
        let seal = match (b.sealed, key) {
            (false, _) => None,
            (true, Some(k)) => Some(BucketSeal::new(&k)),
            (true, None) => return Err(BucketError::NoKey(b.name.clone())),
        };
        Ok(BucketRows {
            table,
            id: BucketId::of(b),
            name: b.name.clone(),
            seal,
        })
    }

    /// How object key `key` appears in rows (and in the names of the references that hold
    /// its bytes).
    pub fn stored_name(&self, key: &str) -> String {
        match &self.seal {
            Some(s) => s.name(key),
            None => key.to_string(),
        }
    }

    fn object_id(&self, key: &str) -> ObjectId {
        ObjectId {
            bucket: self.id.clone(),
            key: self.stored_name(key),
        }
    }

    fn upload_id(&self, upload: &str) -> UploadId {
        UploadId {
            bucket: self.id.clone(),
            upload: upload.into(),
        }
    }

    /// The live value of one row, of plain kind `P` or its sealed kind `S`.
    async fn get<P, S>(
        &self,
        part: &P::Part,
        sort: &P::Sort,
        what: impl Fn() -> String,
    ) -> Result<Option<P::Value>, BucketError>
    where
        P: Schema,
        S: Schema<Part = P::Part, Sort = P::Sort, Value = Vec<u8>>,
    {
        let Some(seal) = &self.seal else {
            return self
                .table
                .get_value::<P>(part, sort)
                .await
                .map_err(|e| unreadable(e, &what));
        };
        let sealed = self.table.get_value::<S>(part, sort).await;
        let Some(bytes) = sealed.map_err(|e| unreadable(e, &what))? else {
            return Ok(None);
        };
        open_value::<P>(seal, &partition_key::<S>(part), &sort.to_sort(), &bytes)
            .map(Some)
            .ok_or_else(|| BucketError::Corrupt(format!("{} (does not open)", what())))
    }

    /// Write (or, with `None`, delete) one row.
    async fn put<P, S>(
        &self,
        signer: &Signer,
        part: &P::Part,
        sort: &P::Sort,
        value: Option<&P::Value>,
    ) -> Result<(), BucketError>
    where
        P: Schema,
        S: Schema<Part = P::Part, Sort = P::Sort, Value = Vec<u8>>,
    {
        match &self.seal {
            None => self.table.put::<P>(signer, part, sort, value).await?,
            Some(seal) => {
                let sealed =
                    value.map(|v| seal.seal(&partition_key::<S>(part), &sort.to_sort(), v));
                self.table
                    .put::<S>(signer, part, sort, sealed.as_ref())
                    .await?
            }
        };
        Ok(())
    }

    /// Live rows whose stored sort key starts with `prefix`, in stored order; a value this node
    /// cannot read or open is `None`.
    async fn list<P, S>(
        &self,
        part: &P::Part,
        prefix: &str,
    ) -> Result<Vec<(String, Option<P::Value>)>, BucketError>
    where
        P: Schema,
        S: Schema<Part = P::Part, Sort = P::Sort, Value = Vec<u8>>,
    {
        let Some(seal) = &self.seal else {
            let rows = self.table.list::<P>(part, prefix).await?;
            return Ok(rows.into_iter().map(|(k, r)| (k, r.known())).collect());
        };
        let pk = partition_key::<S>(part);
        let rows = self.table.list::<S>(part, prefix).await?;
        Ok(rows
            .into_iter()
            .map(|(k, r)| {
                let v = r.known().and_then(|b| open_value::<P>(seal, &pk, &k, &b));
                (k, v)
            })
            .collect())
    }

    /// The current version of `key`.
    pub async fn object(&self, key: &str) -> Result<Option<ObjectRecord>, BucketError> {
        let sk = self.stored_name(key);
        self.get::<schema::Objects, schema::SealedObjects>(&self.id, &sk, || {
            format!("{}/{key}", self.name)
        })
        .await
    }

    /// Make `record` the current version of `key` (`None`: delete it).
    pub async fn put_object(
        &self,
        signer: &Signer,
        key: &str,
        record: Option<&ObjectRecord>,
    ) -> Result<(), BucketError> {
        let sk = self.stored_name(key);
        self.put::<schema::Objects, schema::SealedObjects>(signer, &self.id, &sk, record)
            .await
    }

    /// [`BucketRows::put_object`], answering the versions of `key` it replaced on the replicas
    /// that took it, newest first (see [`Table::put_returning`]): one round trip for both.
    pub async fn put_object_returning(
        &self,
        signer: &Signer,
        key: &str,
        record: Option<&ObjectRecord>,
    ) -> Result<Vec<ObjectRecord>, BucketError> {
        let sk = self.stored_name(key);
        let Some(seal) = &self.seal else {
            let (_, replaced) = self
                .table
                .put_returning::<schema::Objects>(signer, &self.id, &sk, record)
                .await?;
            return Ok(replaced);
        };
        let pk = partition_key::<schema::SealedObjects>(&self.id);
        let sealed = record.map(|v| seal.seal(&pk, &sk, v));
        let (_, replaced) = self
            .table
            .put_returning::<schema::SealedObjects>(signer, &self.id, &sk, sealed.as_ref())
            .await?;
        Ok(replaced
            .iter()
            .filter_map(|bytes| open_value::<schema::Objects>(seal, &pk, &sk, bytes))
            .collect())
    }

    /// Objects whose key starts with `prefix`, in key order (those this node cannot read are
    /// left out).
    pub async fn objects(&self, prefix: &str) -> Result<Vec<(String, ObjectRecord)>, BucketError> {
        let Some(seal) = &self.seal else {
            let rows = self
                .list::<schema::Objects, schema::SealedObjects>(&self.id, prefix)
                .await?;
            return Ok(rows
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect());
        };
        // Every key with the prefix is stored under its last whole directory.
        let rows = self
            .list::<schema::Objects, schema::SealedObjects>(&self.id, &seal.dir_prefix(prefix))
            .await?;
        let mut out: Vec<(String, ObjectRecord)> = rows
            .into_iter()
            .filter_map(|(stored, v)| {
                let key = seal.open_name(&stored)?;
                key.starts_with(prefix).then_some((key, v?))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Whether any object is live in the bucket (readable here or not).
    pub async fn has_objects(&self) -> Result<bool, BucketError> {
        let rows = self
            .list::<schema::Objects, schema::SealedObjects>(&self.id, "")
            .await?;
        Ok(!rows.is_empty())
    }

    /// The kept versions of `key`, oldest first; a version this node cannot read is `None`.
    pub async fn versions(
        &self,
        key: &str,
    ) -> Result<Vec<(String, Option<ObjectRecord>)>, BucketError> {
        self.list::<schema::Versions, schema::SealedVersions>(&self.object_id(key), "")
            .await
    }

    /// One kept version of `key`.
    pub async fn version(
        &self,
        key: &str,
        version: &str,
    ) -> Result<Option<ObjectRecord>, BucketError> {
        self.get::<schema::Versions, schema::SealedVersions>(&self.object_id(key), version, || {
            format!("version {version} of {}/{key}", self.name)
        })
        .await
    }

    /// Keep (or, with `None`, drop) version `version` of `key`.
    pub async fn put_version(
        &self,
        signer: &Signer,
        key: &str,
        version: &str,
        record: Option<&ObjectRecord>,
    ) -> Result<(), BucketError> {
        self.put::<schema::Versions, schema::SealedVersions>(
            signer,
            &self.object_id(key),
            version,
            record,
        )
        .await
    }

    /// An upload in progress.
    pub async fn upload(&self, upload: &str) -> Result<Option<UploadRecord>, BucketError> {
        self.get::<schema::Uploads, schema::SealedUploads>(&self.id, upload, || {
            format!("upload {upload} in {}", self.name)
        })
        .await
    }

    /// Record (or, with `None`, forget) an upload.
    pub async fn put_upload(
        &self,
        signer: &Signer,
        upload: &str,
        record: Option<&UploadRecord>,
    ) -> Result<(), BucketError> {
        self.put::<schema::Uploads, schema::SealedUploads>(signer, &self.id, upload, record)
            .await
    }

    /// Uploads in progress (those readable here), by id.
    pub async fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, BucketError> {
        let rows = self
            .list::<schema::Uploads, schema::SealedUploads>(&self.id, "")
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect())
    }

    /// Part `number` of an upload.
    pub async fn part(&self, upload: &str, number: u32) -> Result<Option<PartRecord>, BucketError> {
        self.get::<schema::Parts, schema::SealedParts>(
            &self.upload_id(upload),
            &PartNumber(number),
            || format!("part {number} of upload {upload}"),
        )
        .await
    }

    /// Record (or, with `None`, drop) part `number` of an upload.
    pub async fn put_part(
        &self,
        signer: &Signer,
        upload: &str,
        number: u32,
        record: Option<&PartRecord>,
    ) -> Result<(), BucketError> {
        self.put::<schema::Parts, schema::SealedParts>(
            signer,
            &self.upload_id(upload),
            &PartNumber(number),
            record,
        )
        .await
    }

    /// The parts of an upload (those readable here), by number.
    pub async fn parts(&self, upload: &str) -> Result<Vec<PartRecord>, BucketError> {
        let rows = self
            .list::<schema::Parts, schema::SealedParts>(&self.upload_id(upload), "")
            .await?;
        Ok(rows.into_iter().filter_map(|(_, v)| v).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ObjectRecordV1;
    use weft_core::{ContentHash, NodeId};

    fn v1() -> ObjectRecordV1 {
        ObjectRecordV1 {
            manifest: ContentHash([1; 32]),
            holders: vec![NodeId([2; 32])],
            size: 10,
            content_id: ContentHash([3; 32]),
            wrapped_key: vec![4; 40],
            created_ms: 5,
            version: "0000000000005-00000000".into(),
            attrs: Default::default(),
            parts: Vec::new(),
        }
    }

    #[test]
    fn object_records_sealed_before_inline_objects_still_open() {
        let seal = BucketSeal::new(&[9; 32]);
        let old = seal.seal("so/x/b", "k", &v1());
        let opened = open_value::<schema::Objects>(&seal, "so/x/b", "k", &old).unwrap();
        assert_eq!(opened, ObjectRecord::from(v1()));
        assert!(!opened.is_inline());
        let mut new = opened.clone();
        new.inline = Some(vec![7; 20]);
        let sealed = seal.seal("so/x/b", "k", &new);
        assert_eq!(
            open_value::<schema::Objects>(&seal, "so/x/b", "k", &sealed),
            Some(new)
        );
        // Bound to its row, as every sealed value.
        assert_eq!(
            open_value::<schema::Objects>(&seal, "so/x/b", "other", &sealed),
            None
        );
        // Plain rows: format 1 decodes through the kind's hook.
        let body = weft_core::wire::encode(&v1());
        assert_eq!(
            <schema::Objects as Schema>::decode(1, &body).unwrap(),
            ObjectRecord::from(v1())
        );
    }
}
