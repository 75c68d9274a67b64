//! The catalog of stored objects, kept in the replicated metadata table: one row per manifest
//! (partition key `m/<first byte of its hash>`, sort key = its hash), with where the manifest
//! copies are and which shards repair has moved. Writes are acknowledged only once their row is
//! on a quorum, so every acknowledged object is known to the nodes that repair it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};
use weft_meta::{MetaError, Row, Signer, Table, Value};
use weft_store::{BoxFuture, Catalog, Erasure, Locations, Manifest, Residency};

use crate::schema::{CatalogRows, RefHolder, References, catalog_part};

/// What the catalog knows about one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Nodes holding the manifest now.
    pub holders: Vec<NodeId>,
    /// Plaintext size.
    pub size: u64,
    /// Bytes of shards it occupies across the fabric.
    pub stored_bytes: u64,
    /// Erasure coding.
    pub ec: Erasure,
    /// Residency policy: repairs place shards only where it allows.
    pub policy: Residency,
    /// Unix ms.
    pub created_ms: u64,
    /// Shards rebuilt on another node: (segment, shard, holder).
    pub moved: Vec<(u32, u16, NodeId)>,
    /// Set when garbage collection released the object (Unix ms): its shards are being
    /// deleted, and holders may delete them.
    pub released_ms: Option<u64>,
}

impl ManifestEntry {
    /// Current locations, as storage's read path wants them.
    pub fn locations(&self) -> Locations {
        Locations {
            manifest_holders: self.holders.clone(),
            moved: self.moved.clone(),
        }
    }

    /// Check what a member wrote before using it: a valid coding, and moves that name shards
    /// the coding has.
    pub fn validate(&self) -> Result<(), String> {
        self.ec
            .validate()
            .map_err(|_| format!("erasure coding {} is not valid", self.ec))?;
        let n = self.ec.data + self.ec.parity;
        if let Some((s, i, _)) = self.moved.iter().find(|(_, i, _)| *i as usize >= n) {
            return Err(format!(
                "moved shard {i} of segment {s} is past the coding's {n}"
            ));
        }
        Ok(())
    }

    /// Record that shard `shard` of segment `segment` now lives on `node`.
    pub fn set_moved(&mut self, segment: u32, shard: u16, node: NodeId) {
        self.moved
            .retain(|(s, i, _)| !(*s == segment && *i == shard));
        self.moved.push((segment, shard, node));
    }
}

/// A catalog error.
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    /// The metadata table failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Catalog rows of one partition: the ones this node can read, and what it could not read
/// (newer formats, corrupt rows), which anything that deletes data must treat as "cannot tell".
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable entries.
    pub rows: Vec<(ContentHash, ManifestEntry)>,
    /// Rows that could not be read, with why.
    pub unreadable: Vec<String>,
}

/// The catalog over the metadata table.
#[derive(Clone)]
pub struct Registry {
    table: Table,
}

impl Registry {
    /// The catalog on `table`.
    pub fn new(table: Table) -> Registry {
        Registry { table }
    }

    /// The table it lives in.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// One entry (a row this node cannot read is an error, never "absent").
    pub async fn get(&self, hash: &ContentHash) -> Result<Option<ManifestEntry>, HealError> {
        Ok(self
            .table
            .get_value::<CatalogRows>(&catalog_part(hash), hash)
            .await?)
    }

    /// Write an entry (signed by this node).
    pub async fn put(&self, hash: &ContentHash, entry: &ManifestEntry) -> Result<(), HealError> {
        self.table
            .put::<CatalogRows>(
                self.table.node_key(),
                &catalog_part(hash),
                hash,
                Some(entry),
            )
            .await?;
        Ok(())
    }

    /// Change an entry in place: `change` gets the current entry (versions only some replicas
    /// hold combined first) and returns the new one, or `None` to leave it. Retried if another
    /// node writes the entry meanwhile; an entry this node cannot read is left alone (error).
    pub async fn update(
        &self,
        hash: &ContentHash,
        mut change: impl FnMut(Option<ManifestEntry>) -> Option<ManifestEntry>,
    ) -> Result<(), HealError> {
        self.table
            .update::<CatalogRows>(self.table.node_key(), &catalog_part(hash), hash, |cur| {
                change(cur).map(Some)
            })
            .await?;
        Ok(())
    }

    /// Remove an object's row (after its shards were reclaimed).
    pub async fn forget(&self, hash: &ContentHash) -> Result<(), HealError> {
        self.table
            .put::<CatalogRows>(self.table.node_key(), &catalog_part(hash), hash, None)
            .await?;
        Ok(())
    }

    /// Record that `holder` uses the object: it is not garbage while any holder does. Signed
    /// by `by`, which must be the holder's account.
    pub async fn retain(
        &self,
        hash: &ContentHash,
        holder: &RefHolder,
        by: impl Into<Signer>,
    ) -> Result<(), HealError> {
        self.table
            .put::<References>(by, hash, holder, Some(&()))
            .await?;
        Ok(())
    }

    /// Record that `holder` no longer uses the object.
    pub async fn release(
        &self,
        hash: &ContentHash,
        holder: &RefHolder,
        by: impl Into<Signer>,
    ) -> Result<(), HealError> {
        self.table.put::<References>(by, hash, holder, None).await?;
        Ok(())
    }

    /// Live references and the wall-clock ms of the latest change to any of them. A reference
    /// row this node cannot read counts as live.
    pub async fn refs(&self, hash: &ContentHash) -> Result<(usize, u64), HealError> {
        let answers = self.table.list_all::<References>(hash, "").await?;
        let live = answers.iter().filter(|(_, r)| r.value.is_some()).count();
        let latest = answers.iter().map(|(_, r)| r.ts.wall).max().unwrap_or(0);
        Ok((live, latest))
    }

    /// Every entry of one catalog partition, from every replica (see
    /// [`weft_meta::Table::list_from_all`]).
    pub async fn list_from_all(&self, part: u8) -> Result<Listing, HealError> {
        let rows = self.table.list_from_all::<CatalogRows>(&part, "").await?;
        Ok(sort_rows(rows))
    }

    /// Every entry of one catalog partition.
    pub async fn list(&self, part: u8) -> Result<Listing, HealError> {
        let rows = self.table.list::<CatalogRows>(&part, "").await?;
        Ok(sort_rows(rows))
    }
}

fn sort_rows(rows: Vec<(String, Row<ManifestEntry>)>) -> Listing {
    let mut out = Listing::default();
    for (sk, row) in rows {
        let hash = sk.parse::<ContentHash>();
        match (hash, row.value) {
            (Ok(hash), Some(Value::Known(e))) => match e.validate() {
                Ok(()) => out.rows.push((hash, e)),
                Err(why) => out.unreadable.push(format!("catalog row {sk}: {why}")),
            },
            (_, None) => {}
            (Err(_), Some(_)) => out.unreadable.push(format!("catalog row {sk:?}: bad key")),
            (_, Some(Value::Newer(f))) => out.unreadable.push(format!(
                "catalog row {sk}: format {f} is newer than this node knows"
            )),
            (_, Some(Value::Corrupt(why))) => {
                out.unreadable.push(format!("catalog row {sk}: {why}"))
            }
        }
    }
    out
}

impl Catalog for Registry {
    fn record<'a>(
        &'a self,
        manifest: ContentHash,
        body: &'a Manifest,
        holders: &'a [NodeId],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let stored_bytes = body
                .segments
                .iter()
                .map(|s| s.info.shard_len * s.info.shards.len() as u64)
                .sum();
            let entry = ManifestEntry {
                holders: holders.to_vec(),
                size: body.size,
                stored_bytes,
                ec: body.ec,
                policy: body.policy.clone(),
                created_ms: weft_net::now_ms(),
                moved: Vec::new(),
                released_ms: None,
            };
            self.put(&manifest, &entry).await.map_err(|e| e.to_string())
        })
    }

    fn released(&self, manifest: ContentHash) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            matches!(self.get(&manifest).await, Ok(Some(e)) if e.released_ms.is_some())
        })
    }

    fn locate(&self, manifest: ContentHash) -> BoxFuture<'_, Option<Locations>> {
        Box::pin(async move {
            // A read must not fail because the catalog lost its majority for a moment.
            let row = self
                .table
                .get_relaxed::<CatalogRows>(&catalog_part(&manifest), &manifest)
                .await
                .ok()??;
            row.known()
                .filter(|e| e.validate().is_ok())
                .map(|e| e.locations())
        })
    }
}

/// The registry as storage's catalog.
pub fn as_catalog(registry: &Registry) -> Arc<dyn Catalog> {
    Arc::new(registry.clone())
}
