//! The catalog of stored objects, kept in the replicated metadata table: one row per manifest
//! (partition key `m/<first byte of its hash>`, sort key = its hash), with where the manifest
//! copies are and which shards repair has moved. Writes are acknowledged only once their row is
//! on a quorum, so every acknowledged object is known to the nodes that repair it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId, wire};
use weft_meta::Table;
use weft_store::{BoxFuture, Catalog, Erasure, Locations, Manifest, Residency};

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

    /// Record that shard `shard` of segment `segment` now lives on `node`.
    pub fn set_moved(&mut self, segment: u32, shard: u16, node: NodeId) {
        self.moved
            .retain(|(s, i, _)| !(*s == segment && *i == shard));
        self.moved.push((segment, shard, node));
    }
}

/// Partition key of a manifest's row.
pub fn pk_of(hash: &ContentHash) -> String {
    format!("m/{:02x}", hash.0[0])
}

/// Partition key of a manifest's references.
fn refs_pk(hash: &ContentHash) -> String {
    format!("r/{}", hash.to_hex())
}

/// Every partition key the catalog uses.
pub fn all_pks() -> impl Iterator<Item = String> {
    (0..=255u8).map(|b| format!("m/{b:02x}"))
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

    /// One entry.
    pub async fn get(&self, hash: &ContentHash) -> Result<Option<ManifestEntry>, String> {
        let entry = self
            .table
            .get(&pk_of(hash), &hash.to_hex())
            .await
            .map_err(|e| e.to_string())?;
        Ok(entry
            .and_then(|e| e.value)
            .and_then(|v| wire::decode(&v).ok()))
    }

    /// Write an entry.
    pub async fn put(&self, hash: &ContentHash, entry: &ManifestEntry) -> Result<(), String> {
        self.table
            .put(&pk_of(hash), &hash.to_hex(), Some(wire::encode(entry)))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Remove an object's row (after its shards were reclaimed).
    pub async fn forget(&self, hash: &ContentHash) -> Result<(), String> {
        self.table
            .put(&pk_of(hash), &hash.to_hex(), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Record that `holder` (e.g. `v/bucket/key/version`) uses the object: it is not garbage
    /// while any holder does.
    pub async fn retain(&self, hash: &ContentHash, holder: &str) -> Result<(), String> {
        self.table
            .put(&refs_pk(hash), holder, Some(Vec::new()))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Record that `holder` no longer uses the object.
    pub async fn release(&self, hash: &ContentHash, holder: &str) -> Result<(), String> {
        self.table
            .put(&refs_pk(hash), holder, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Live references and the wall-clock ms of the latest change to any of them.
    pub async fn refs(&self, hash: &ContentHash) -> Result<(usize, u64), String> {
        let pk = refs_pk(hash);
        let answers = self
            .table
            .list_all(&pk, "")
            .await
            .map_err(|e| e.to_string())?;
        let live = answers.iter().filter(|(_, e)| e.value.is_some()).count();
        let latest = answers.iter().map(|(_, e)| e.ts.wall).max().unwrap_or(0);
        Ok((live, latest))
    }

    /// Every entry under one partition key, from every replica (see
    /// [`weft_meta::Table::list_from_all`]).
    pub async fn list_from_all(
        &self,
        pk: &str,
    ) -> Result<Vec<(ContentHash, ManifestEntry)>, String> {
        let rows = self
            .table
            .list_from_all(pk, "")
            .await
            .map_err(|e| e.to_string())?;
        Ok(decode_rows(rows))
    }

    /// Every entry under one partition key.
    pub async fn list(&self, pk: &str) -> Result<Vec<(ContentHash, ManifestEntry)>, String> {
        let rows = self.table.list(pk, "").await.map_err(|e| e.to_string())?;
        Ok(decode_rows(rows))
    }
}

fn decode_rows(rows: Vec<(String, weft_meta::Entry)>) -> Vec<(ContentHash, ManifestEntry)> {
    rows.into_iter()
        .filter_map(|(sk, e)| {
            let hash: ContentHash = sk.parse().ok()?;
            Some((hash, wire::decode(&e.value?).ok()?))
        })
        .collect()
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
            self.put(&manifest, &entry).await
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
            let entry = self
                .table
                .get_relaxed(&pk_of(&manifest), &manifest.to_hex())
                .await
                .ok()??;
            wire::decode::<ManifestEntry>(&entry.value?)
                .ok()
                .map(|e| e.locations())
        })
    }
}

/// The registry as storage's catalog.
pub fn as_catalog(registry: &Registry) -> Arc<dyn Catalog> {
    Arc::new(registry.clone())
}
