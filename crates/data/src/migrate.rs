//! One-time migration of data directories from before rows were signed.
//!
//! Opening such a replica sets its unsigned rows aside (`weft_meta::LocalTable::legacy`); they
//! are never served as table rows again. Each node then re-signs what it owns, once:
//! - catalog entries (any member may sign them): the ones its own replica held;
//! - every row of the buckets its account owns (bucket claims, objects, kept versions,
//!   uploads, parts, and the references that keep their bytes), gathered from the legacy rows
//!   of *every* member, since its own replica need not have held them;
//! - references of objects stored by capability that its replica held, under its account.
//!
//! Audit tallies are not carried over (new audits rebuild them). A row already present in the
//! signed table (written since) wins over its legacy version. The node records that it is done
//! in `<data>/migrated-rows`; legacy rows stay set aside, so an owner whose node migrates later
//! still finds them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId, wire};
use weft_heal::schema::{CatalogRows, RefHolder, References};
use weft_heal::{ManifestEntry, Registry};
use weft_meta::{LegacyEntry, MetaError, Table};

use crate::records::BucketRecordV1;
use crate::records::ObjectRecordV1;
use crate::schema::{self, BucketId, ObjectId, PartNumber, UploadId, legacy};
use crate::{Acting, BucketRecord, ObjectRecord, PartRecord, UploadRecord};

/// Summary of one migration.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Migrated {
    /// Catalog entries re-signed.
    pub catalog: u64,
    /// Rows of this account's buckets re-signed.
    pub account_rows: u64,
    /// References re-signed.
    pub references: u64,
}

/// Migrate until done, acting as the node's own account (`acting`): retried while some member
/// does not answer (a migration must see every member's legacy rows). Returns at once if
/// `marker` exists (this data directory was migrated already); writes it when done.
pub async fn run(marker: PathBuf, table: Table, buckets: Acting) {
    if marker.exists() {
        return;
    }
    let local = match table.local().legacy() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read legacy metadata rows; not migrating");
            return;
        }
    };
    // Let membership settle first: every member's legacy rows are needed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    loop {
        match once(&table, &buckets, &local).await {
            Ok(done) => {
                tracing::info!(?done, "metadata rows from before signing migrated");
                if let Ok(json) = serde_json::to_vec(&done)
                    && let Err(e) = write_atomic(&marker, &json)
                {
                    tracing::warn!(error = %e, "cannot record the migration");
                }
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, "metadata migration waits for every member");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Write `bytes` to `path` through a temporary file, so a crash leaves the old file or the new.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn legacy<T: serde::de::DeserializeOwned>(e: &LegacyEntry) -> Option<T> {
    wire::decode(e.value.as_deref()?).ok()
}

async fn once(
    table: &Table,
    buckets: &Acting,
    local: &[(String, String, LegacyEntry)],
) -> Result<Migrated, MetaError> {
    let mut done = Migrated::default();
    let registry = Registry::new(table.clone());
    let me = buckets.account();
    let Ok(key) = buckets.signer() else {
        return Ok(done); // read-only access owns nothing to re-sign
    };
    // Catalog entries this replica held.
    for (pk, sk, e) in local {
        if !pk.starts_with(legacy::CATALOG) {
            continue;
        }
        let (Ok(hash), Some(entry)) = (sk.parse::<ContentHash>(), legacy::<ManifestEntry>(e))
        else {
            continue;
        };
        registry
            .update(&hash, |cur| {
                Some(match cur {
                    Some(now) => <CatalogRows as weft_meta::Schema>::join(now, &entry),
                    None => entry.clone(),
                })
            })
            .await
            .map_err(|e| MetaError::Quorum {
                got: 0,
                needed: 1,
                last: e.to_string(),
            })?;
        done.catalog += 1;
    }
    // References of capability puts this replica held: kept, now under this node's account.
    for (pk, sk, e) in local {
        if let (Some(m), true, Some(_)) = (
            pk.strip_prefix(legacy::REFS),
            sk == legacy::CAPABILITY_REF,
            &e.value,
        ) && let Ok(hash) = m.parse::<ContentHash>()
        {
            let holder = RefHolder::Capability { owner: me };
            table
                .put::<References>(key, &hash, &holder, Some(&()))
                .await?;
            done.references += 1;
        }
    }
    // This account's buckets, from every member's legacy rows.
    let claims = table.legacy_rows(legacy::BUCKETS).await?;
    let mine: Vec<BucketRecord> = claims
        .iter()
        .filter_map(|(_, _, e)| legacy::<BucketRecordV1>(e).map(BucketRecord::from))
        .filter(|b| b.owner == me)
        .collect();
    if mine.is_empty() {
        return Ok(done);
    }
    let refs = table.legacy_rows(legacy::REFS).await?;
    for b in mine {
        let id = BucketId::of(&b);
        match table.create::<schema::Buckets>(key, &(), &b.name, &b).await {
            Ok(_) | Err(MetaError::Conflict) => {}
            Err(e) => return Err(e),
        }
        done.account_rows += 1;
        for (_, sk, e) in table.legacy_rows(&legacy::objects(&b.name)).await? {
            if let Some(r) = legacy::<ObjectRecordV1>(&e).map(ObjectRecord::from) {
                keep_newer::<schema::Objects>(table, key, &id, &sk, r).await?;
                done.account_rows += 1;
            }
        }
        for (pk, sk, e) in table.legacy_rows(&legacy::versions(&b.name)).await? {
            let Some(object) = pk.strip_prefix(&legacy::versions(&b.name)) else {
                continue;
            };
            if let Some(r) = legacy::<ObjectRecordV1>(&e).map(ObjectRecord::from) {
                let oid = ObjectId {
                    bucket: id.clone(),
                    key: object.into(),
                };
                keep_newer::<schema::Versions>(table, key, &oid, &sk, r).await?;
                done.account_rows += 1;
            }
        }
        for (_, sk, e) in table.legacy_rows(&legacy::uploads(&b.name)).await? {
            if let Some(r) = legacy::<UploadRecord>(&e) {
                keep_newer::<schema::Uploads>(table, key, &id, &sk, r).await?;
                done.account_rows += 1;
            }
        }
        for (pk, _, e) in table.legacy_rows(&legacy::parts(&b.name)).await? {
            let Some(upload) = pk.strip_prefix(&legacy::parts(&b.name)) else {
                continue;
            };
            if let Some(r) = legacy::<PartRecord>(&e) {
                let uid = UploadId {
                    bucket: id.clone(),
                    upload: upload.into(),
                };
                let n = PartNumber(r.number);
                keep_newer::<schema::Parts>(table, key, &uid, &n, r).await?;
                done.account_rows += 1;
            }
        }
        for (pk, sk, e) in &refs {
            let (Some(m), Some(_)) = (pk.strip_prefix(legacy::REFS), &e.value) else {
                continue;
            };
            let (Ok(hash), Some(holder)) = (m.parse::<ContentHash>(), ref_holder(me, &b.name, sk))
            else {
                continue;
            };
            table
                .put::<References>(key, &hash, &holder, Some(&()))
                .await?;
            done.references += 1;
        }
    }
    Ok(done)
}

/// Write `value` unless the signed table already has a row there (written since).
async fn keep_newer<S>(
    table: &Table,
    key: &weft_meta::Signer,
    part: &S::Part,
    sort: &S::Sort,
    value: S::Value,
) -> Result<(), MetaError>
where
    S: weft_meta::Schema,
    S::Value: Clone,
{
    table
        .update::<S>(key, part, sort, |cur| match cur {
            Some(_) => None,
            None => Some(Some(value.clone())),
        })
        .await
        .map(|_| ())
}

/// The holder named by an old reference's sort key (`v/<bucket>/<key>/<version>` or
/// `u/<bucket>/<upload>/<number>`), if it belongs to `bucket`.
fn ref_holder(owner: NodeId, bucket: &str, sk: &str) -> Option<RefHolder> {
    if let Some(rest) = sk.strip_prefix(&legacy::version_refs(bucket)) {
        let (key, version) = rest.rsplit_once('/')?;
        return Some(RefHolder::Version {
            owner,
            bucket: bucket.into(),
            key: key.into(),
            version: version.into(),
        });
    }
    let rest = sk.strip_prefix(&legacy::part_refs(bucket))?;
    let (upload, number) = rest.rsplit_once('/')?;
    Some(RefHolder::Part {
        owner,
        bucket: bucket.into(),
        upload: upload.into(),
        number: number.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_reference_names_parse() {
        let o = NodeId([1; 32]);
        assert_eq!(
            ref_holder(o, "b", "v/b/dir/file.txt/0001-ab"),
            Some(RefHolder::Version {
                owner: o,
                bucket: "b".into(),
                key: "dir/file.txt".into(),
                version: "0001-ab".into()
            })
        );
        assert_eq!(
            ref_holder(o, "b", "u/b/up1/7"),
            Some(RefHolder::Part {
                owner: o,
                bucket: "b".into(),
                upload: "up1".into(),
                number: 7
            })
        );
        assert_eq!(ref_holder(o, "c", "v/b/k/1"), None);
    }
}
