//! Garbage collection: an object nobody references any more (every name that used it was
//! deleted or overwritten, its upload was abandoned, or its write was never committed under a
//! name) for longer than the safety delay is released in the catalog; then its holders are
//! asked to delete its shards and manifest copies (each holder checks the catalog first), and
//! its catalog row goes.
//!
//! Orphans: shards a node holds that no object in the catalog places on it (it was down while
//! its shards were rebuilt elsewhere, or while a released object was reclaimed, or a write
//! failed before it was registered). Each node sweeps its own after scrubbing: shards older
//! than the safety delay that the whole catalog does not place on it are deleted (never those
//! stored before the node first ran with a catalog: their objects may not be in it). The sweep
//! is all or nothing: any catalog partition or manifest it cannot read cancels it.

use std::collections::{HashMap, HashSet};

use weft_core::{ContentHash, NodeId};
use weft_store::protocol::{DeleteRequest, MAX_HAS};

use crate::Healer;
use crate::registry::ManifestEntry;

/// How long every member's state must have held before orphans are swept (or the safety
/// delay, if shorter).
const SWEEP_SETTLE: std::time::Duration = std::time::Duration::from_secs(600);

impl Healer {
    /// Release and reclaim `hash` if it is garbage. Returns true when the object is released
    /// (so it must not be repaired).
    pub(crate) async fn collect(
        &self,
        hash: ContentHash,
        entry: &ManifestEntry,
        is_lost: &impl Fn(&NodeId) -> bool,
        askable: &impl Fn(&NodeId) -> bool,
    ) -> bool {
        let mut entry = entry.clone();
        if entry.released_ms.is_none() {
            let Ok((live, latest)) = self.registry.refs(&hash).await else {
                return false;
            };
            let quiet_since = latest.max(entry.created_ms);
            let delay = self.config.gc_delay.as_millis() as u64;
            if live > 0 || weft_net::now_ms().saturating_sub(quiet_since) < delay {
                return false;
            }
            let now = weft_net::now_ms();
            entry.released_ms = Some(now);
            let released = self
                .registry
                .update(&hash, |cur| {
                    let mut e = cur?;
                    e.released_ms.get_or_insert(now);
                    Some(e)
                })
                .await;
            if released.is_err() {
                return false;
            }
            tracing::info!(manifest = %hash, bytes = entry.stored_bytes, "object released; reclaiming its shards");
        }
        // Segment shards first, the manifest copies last (holders read the manifest to check
        // what they are asked to delete).
        let mut by_node: HashMap<NodeId, Vec<ContentHash>> = HashMap::new();
        let mut m = match self.storage.manifest_at(hash, &entry.holders).await {
            Ok(m) => m,
            Err(e) => {
                // Without the manifest this node cannot tell which shards are the object's:
                // delete nothing (not even the manifest copies) and try again next check.
                tracing::warn!(manifest = %hash, error = %e, "released object left alone: its manifest cannot be read");
                return true;
            }
        };
        entry.locations().apply(&mut m);
        for seg in &m.segments {
            for (n, shard) in seg.holders.iter().zip(&seg.info.shards) {
                by_node.entry(*n).or_default().push(*shard);
            }
        }
        let mut complete = true;
        for (node, shards) in by_node {
            if is_lost(&node) {
                continue;
            }
            if !askable(&node) {
                complete = false;
                continue;
            }
            for chunk in shards.chunks(MAX_HAS) {
                let req = DeleteRequest {
                    manifest: hash,
                    manifest_holders: entry.holders.clone(),
                    shards: chunk.to_vec(),
                };
                if self.storage.delete_on(node, req).await.is_err() {
                    complete = false;
                    continue;
                }
                // A holder that could not confirm the release (a catalog read that failed for
                // a moment) deleted nothing: the row stays until every shard is gone.
                match self.storage.has_shards(node, chunk.to_vec()).await {
                    Ok(held) if !held.contains(&true) => {}
                    _ => complete = false,
                }
            }
        }
        if complete {
            for node in &entry.holders {
                if is_lost(node) {
                    continue;
                }
                let req = DeleteRequest {
                    manifest: hash,
                    manifest_holders: entry.holders.clone(),
                    shards: vec![hash],
                };
                if !askable(node) || self.storage.delete_on(*node, req).await.is_err() {
                    complete = false;
                }
            }
        }
        if complete && self.registry.forget(&hash).await.is_ok() {
            let mut s = self.status.lock();
            s.gc_objects += 1;
            s.gc_bytes += entry.stored_bytes;
        }
        true
    }
}

impl Healer {
    /// Delete this node's orphan shards. Returns (shards deleted, bytes).
    pub async fn sweep_orphans(&self) -> (u64, u64) {
        let me = self.storage.id();
        let store = self.storage.local().clone();
        let cutoff = std::time::SystemTime::now()
            .checked_sub(self.config.gc_delay)
            .unwrap_or(std::time::UNIX_EPOCH);
        let since = store.catalog_since();
        let old: Vec<(ContentHash, u64)> = match tokio::task::spawn_blocking({
            let store = store.clone();
            move || {
                store.list().map(|all| {
                    all.into_iter()
                        .filter(|(h, _)| {
                            store
                                .written_at(h)
                                .is_some_and(|t| t < cutoff && t >= since)
                        })
                        .collect::<Vec<_>>()
                })
            }
        })
        .await
        {
            Ok(Ok(old)) => old,
            _ => return (0, 0),
        };
        if old.is_empty() {
            return (0, 0);
        }
        // Only in a settled fabric: after membership changes, catalog rows may still be on
        // their way to new replicas, and a row missed here would be data deleted.
        let settle = self.config.gc_delay.min(SWEEP_SETTLE);
        if self
            .storage
            .fabric()
            .members()
            .iter()
            .any(|m| !m.is_self && m.state_for < settle)
        {
            return (0, 0);
        }
        let wanted = match self.placed_here(me).await {
            Ok(w) => w,
            Err(why) => {
                tracing::info!(reason = %why, "orphan sweep skipped: deleting nothing");
                let mut s = self.status.lock();
                s.sweeps_skipped += 1;
                s.last_sweep_skip = why;
                return (0, 0);
            }
        };
        let (mut removed, mut bytes) = (0, 0);
        for (hash, len) in old {
            if wanted.contains(&hash) {
                continue;
            }
            let store = store.clone();
            if let Ok(Ok(true)) = tokio::task::spawn_blocking(move || store.delete(&hash)).await {
                removed += 1;
                bytes += len;
            }
        }
        if removed > 0 {
            tracing::info!(shards = removed, bytes, "orphan shards deleted");
            let mut s = self.status.lock();
            s.orphans_removed += removed;
            s.orphan_bytes += bytes;
        }
        (removed, bytes)
    }

    /// Every shard and manifest copy the catalog places on `me`, or why that cannot be known
    /// (a catalog partition or manifest that could not be read, or a row this node does not
    /// understand).
    async fn placed_here(&self, me: NodeId) -> Result<HashSet<ContentHash>, String> {
        let mut wanted = HashSet::new();
        for part in crate::schema::catalog_parts() {
            let listing = self
                .registry
                .list_from_all(part)
                .await
                .map_err(|e| format!("catalog partition {part:02x}: {e}"))?;
            if let Some(why) = listing.unreadable.first() {
                return Err(why.clone());
            }
            for (hash, entry) in listing.rows {
                if entry.holders.contains(&me) {
                    wanted.insert(hash);
                }
                let mut manifest = self
                    .storage
                    .manifest_at(hash, &entry.holders)
                    .await
                    .map_err(|e| e.to_string())?;
                entry.locations().apply(&mut manifest);
                for seg in &manifest.segments {
                    for (h, shard) in seg.holders.iter().zip(&seg.info.shards) {
                        if *h == me {
                            wanted.insert(*shard);
                        }
                    }
                }
            }
        }
        Ok(wanted)
    }
}
