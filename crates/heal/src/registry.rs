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

/// Most manifest copies a catalog row may name.
pub const MAX_MANIFEST_HOLDERS: usize = 16;

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
    /// The policy's maximum price (micro-credits per GB-month), which the encoded policy does
    /// not carry: set into `policy` when the row is read (row format 2).
    pub max_price: Option<u64>,
}

/// [`ManifestEntry`] in catalog row format 1 (before maximum prices).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestEntryV1 {
    pub holders: Vec<NodeId>,
    pub size: u64,
    pub stored_bytes: u64,
    pub ec: Erasure,
    pub policy: Residency,
    pub created_ms: u64,
    pub moved: Vec<(u32, u16, NodeId)>,
    pub released_ms: Option<u64>,
}

impl From<ManifestEntryV1> for ManifestEntry {
    fn from(v: ManifestEntryV1) -> ManifestEntry {
        ManifestEntry {
            holders: v.holders,
            size: v.size,
            stored_bytes: v.stored_bytes,
            ec: v.ec,
            policy: v.policy,
            created_ms: v.created_ms,
            moved: v.moved,
            released_ms: v.released_ms,
            max_price: None,
        }
    }
}

impl ManifestEntry {
    /// A new entry for `manifest`, its copies on `holders`.
    pub fn new(manifest: &Manifest, holders: Vec<NodeId>) -> ManifestEntry {
        let stored_bytes = manifest
            .segments
            .iter()
            .map(|s| s.info.shard_len * s.info.shards.len() as u64)
            .sum();
        ManifestEntry {
            holders,
            size: manifest.size,
            stored_bytes,
            ec: manifest.ec,
            policy: manifest.policy.clone(),
            created_ms: weft_net::now_ms(),
            moved: Vec::new(),
            released_ms: None,
            max_price: manifest.policy.max_price,
        }
    }

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
        if self.holders.is_empty() || self.holders.len() > MAX_MANIFEST_HOLDERS {
            return Err(format!(
                "{} manifest holders (1 to {MAX_MANIFEST_HOLDERS})",
                self.holders.len()
            ));
        }
        // Repair records one move per shard (a newer move replaces the older): a row that
        // lists a shard twice was not written by repair.
        let distinct: std::collections::HashSet<(u32, u16)> =
            self.moved.iter().map(|(s, i, _)| (*s, *i)).collect();
        if distinct.len() != self.moved.len() {
            return Err("a shard is moved twice".into());
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
    /// Objects whose row was deleted (only in listings that include deletions).
    pub deleted: Vec<ContentHash>,
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

    /// Live references and the wall-clock ms of the latest change to any of them, read from
    /// every replica and checked here ([`weft_meta::Table::list_for_deletion`]): a reference
    /// row this node cannot read or verify counts as live. References are signed by the
    /// accounts that hold them, so this is the owners' word, which no member can forge.
    pub async fn refs(&self, hash: &ContentHash) -> Result<(usize, u64), HealError> {
        let answers = self.table.list_for_deletion::<References>(hash, "").await?;
        Ok(count_refs(&answers))
    }

    /// [`Registry::refs`] from a majority (answers once most replicas did): enough to tell
    /// that an object is still used, never that it is not.
    pub async fn refs_in_use(&self, hash: &ContentHash) -> Result<(usize, u64), HealError> {
        let answers = self.table.list_all::<References>(hash, "").await?;
        Ok(count_refs(&answers))
    }

    /// Whether the object's owners have let it go, as this node can verify itself: no live
    /// reference, and none changed for `quiet` (so a write whose name is still on its way is
    /// not taken for garbage). The only evidence anything deletes data on; a catalog row
    /// (which any member may write) never is.
    pub async fn unreferenced(
        &self,
        hash: &ContentHash,
        quiet: std::time::Duration,
    ) -> Result<bool, HealError> {
        let quiet = quiet.as_millis() as u64;
        let unused = |(live, latest): (usize, u64)| {
            live == 0 && weft_net::now_ms().saturating_sub(latest) >= quiet
        };
        Ok(unused(self.refs_in_use(hash).await?) && unused(self.refs(hash).await?))
    }

    /// Every entry of one catalog partition, deletions included, from every replica and
    /// checked here (see [`weft_meta::Table::list_for_deletion`]): for decisions that delete.
    pub async fn list_from_all(&self, part: u8) -> Result<Listing, HealError> {
        let rows = self
            .table
            .list_for_deletion::<CatalogRows>(&part, "")
            .await?;
        Ok(sort_rows(rows))
    }

    /// Every entry of one catalog partition.
    pub async fn list(&self, part: u8) -> Result<Listing, HealError> {
        let rows = self.table.list::<CatalogRows>(&part, "").await?;
        Ok(sort_rows(rows))
    }

    /// Every entry of one catalog partition, deletions included, from a majority.
    pub async fn list_with_deleted(&self, part: u8) -> Result<Listing, HealError> {
        let rows = self.table.list_all::<CatalogRows>(&part, "").await?;
        Ok(sort_rows(rows))
    }
}

/// Live references among `rows`, and the wall-clock ms of the latest change.
fn count_refs(rows: &[(String, Row<()>)]) -> (usize, u64) {
    let live = rows.iter().filter(|(_, r)| r.value.is_some()).count();
    let latest = rows.iter().map(|(_, r)| r.ts.wall).max().unwrap_or(0);
    (live, latest)
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
            (Ok(hash), None) => out.deleted.push(hash),
            (Err(_), None) => {}
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

/// The catalog as storage sees it: the registry, and the safety delay deletions wait for.
struct Hook {
    registry: Registry,
    delay: std::time::Duration,
}

impl Catalog for Hook {
    fn record<'a>(
        &'a self,
        manifest: ContentHash,
        body: &'a Manifest,
        holders: &'a [NodeId],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let entry = ManifestEntry::new(body, holders.to_vec());
            self.registry
                .put(&manifest, &entry)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn deletable(&self, manifest: ContentHash) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            matches!(
                self.registry.unreferenced(&manifest, self.delay).await,
                Ok(true)
            )
        })
    }

    fn safety_delay(&self) -> std::time::Duration {
        self.delay
    }

    fn locate(&self, manifest: ContentHash) -> BoxFuture<'_, Option<Locations>> {
        Box::pin(async move {
            // A read must not fail because the catalog lost its majority for a moment.
            let row = self
                .registry
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

/// The registry as storage's catalog; objects are deletable once unreferenced for `delay`.
pub fn as_catalog(registry: &Registry, delay: std::time::Duration) -> Arc<dyn Catalog> {
    Arc::new(Hook {
        registry: registry.clone(),
        delay,
    })
}
