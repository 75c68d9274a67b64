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
        // The owners' references decide, checked every time: a catalog row's release (any
        // member may write one) is bookkeeping, never evidence. An object younger than the
        // delay is not garbage yet (its name may still be on its way).
        let delay = self.config.gc_delay;
        let young = weft_net::now_ms().saturating_sub(entry.created_ms) < delay.as_millis() as u64;
        let garbage = !young && matches!(self.registry.unreferenced(&hash, delay).await, Ok(true));
        if !garbage {
            if entry.released_ms.is_some() {
                tracing::warn!(manifest = %hash, "a catalog row says released, but the object is referenced; kept");
            }
            return false;
        }
        if entry.released_ms.is_none() {
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
    /// Stop charging senders for the shards the catalog places on this node (see
    /// [`weft_store::ShardStore::put_from`]). Returns how many were claimed.
    pub async fn claim_shards(&self) -> usize {
        let store = self.storage.local().clone();
        let unclaimed = match tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.unclaimed()
        })
        .await
        {
            Ok(Ok(u)) if !u.is_empty() => u,
            _ => return 0,
        };
        let placed = match self.placed_here(self.storage.id(), &HashSet::new()).await {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(reason = %why, "shard claims skipped");
                return 0;
            }
        };
        self.claim_placed(&unclaimed, &placed).await
    }

    async fn claim_placed(&self, unclaimed: &[ContentHash], placed: &Placed) -> usize {
        let claimed: Vec<ContentHash> = unclaimed
            .iter()
            .filter(|h| placed.wanted.contains(h))
            .copied()
            .collect();
        let n = claimed.len();
        let store = self.storage.local().clone();
        match tokio::task::spawn_blocking(move || store.claim(&claimed)).await {
            Ok(Ok(())) => n,
            _ => 0,
        }
    }

    /// Delete this node's orphan shards. Returns (shards deleted, bytes).
    pub async fn sweep_orphans(&self) -> (u64, u64) {
        // Claims first: they need the catalog but none of a sweep's caution.
        self.claim_shards().await;
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
        let held: HashSet<ContentHash> = old.iter().map(|(h, _)| *h).collect();
        let placed = match self.placed_here(me, &held).await {
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
            if placed.wanted.contains(&hash) {
                continue;
            }
            // A copy the catalog says was rebuilt elsewhere goes only once the new holder
            // proves, to this node, that it holds it: a catalog row is a member's word.
            if let Some(moved) = placed.elsewhere.get(&hash) {
                let Some((to, shard_len)) = moved else {
                    tracing::warn!(shard = %hash, "a catalog row moves this shard where too many of its segment's shards would be on one node; kept");
                    continue;
                };
                if !matches!(self.storage.audit(*to, hash, *shard_len).await, Ok(true)) {
                    continue;
                }
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

    /// What the catalog places on `me`, and where it places the shards among `held` that it
    /// does not place on `me`; or why that cannot be known (a catalog partition or manifest
    /// that could not be read, a row this node does not understand or cannot verify, a deleted
    /// row of an object still referenced whose manifest cannot be found).
    async fn placed_here(&self, me: NodeId, held: &HashSet<ContentHash>) -> Result<Placed, String> {
        let mut placed = Placed::default();
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
                    placed.wanted.insert(hash);
                }
                let mut manifest = self
                    .storage
                    .manifest_at(hash, &entry.holders)
                    .await
                    .map_err(|e| e.to_string())?;
                entry.locations().apply(&mut manifest);
                let most = manifest.ec.parity.max(1);
                for seg in &manifest.segments {
                    let concentrated = seg
                        .holders
                        .iter()
                        .any(|h| seg.holders.iter().filter(|x| *x == h).count() > most);
                    for (holder, shard) in seg.holders.iter().zip(&seg.info.shards) {
                        if *holder == me {
                            placed.wanted.insert(*shard);
                        } else if held.contains(shard) {
                            // An object's shard this node holds but the object places on
                            // another node: rebuilt there while this node was away, says
                            // the row.
                            let moved = (!concentrated).then_some((*holder, seg.info.shard_len));
                            placed.elsewhere.insert(*shard, moved);
                        }
                    }
                }
            }
            for hash in listing.deleted {
                self.protect_if_referenced(hash, &mut placed).await?;
            }
        }
        // A shard placed here by one object is kept whatever another says.
        let wanted = &placed.wanted;
        placed.elsewhere.retain(|h, _| !wanted.contains(h));
        Ok(placed)
    }

    /// An object whose catalog row was deleted: keep all its shards unless its owners let
    /// it go ([`Healer::reregister_if_referenced`]).
    async fn protect_if_referenced(
        &self,
        hash: ContentHash,
        placed: &mut Placed,
    ) -> Result<(), String> {
        if let Some(manifest) = self.reregister_if_referenced(hash).await? {
            placed.wanted.insert(hash);
            for seg in &manifest.segments {
                placed.wanted.extend(seg.info.shards.iter().copied());
            }
        }
        Ok(())
    }

    /// An object whose catalog row was deleted: garbage if its owners let it go (`None`;
    /// remembered, so each deletion is checked once); otherwise its row was deleted by someone
    /// who had no business to — register it again from its manifest (returned), so repair
    /// looks after it. The partition owner's check does this every pass; a sweep, before it
    /// deletes anything.
    pub(crate) async fn reregister_if_referenced(
        &self,
        hash: ContentHash,
    ) -> Result<Option<weft_store::Manifest>, String> {
        if self.collected.lock().contains(&hash) {
            return Ok(None);
        }
        let gone = self
            .registry
            .unreferenced(&hash, self.config.gc_delay)
            .await
            .map_err(|e| format!("references of {hash}: {e}"))?;
        if gone {
            self.collected.lock().insert(hash);
            return Ok(None);
        }
        let members: Vec<NodeId> = self
            .storage
            .fabric()
            .members()
            .into_iter()
            .filter(|m| m.is_alive())
            .map(|m| m.id)
            .collect();
        let manifest = self.storage.manifest_at(hash, &members).await.map_err(|e| {
            format!("object {hash} is referenced but its catalog row was deleted, and its manifest cannot be found: {e}")
        })?;
        tracing::warn!(manifest = %hash, "an object still referenced had its catalog row deleted; registering it again");
        let mut holders = Vec::new();
        for m in &members {
            if matches!(self.storage.has_shards(*m, vec![hash]).await, Ok(v) if v == [true]) {
                holders.push(*m);
            }
        }
        if !holders.is_empty() {
            let entry = crate::registry::ManifestEntry::new(&manifest, holders);
            if let Err(e) = self.registry.put(&hash, &entry).await {
                tracing::warn!(manifest = %hash, error = %e, "could not register the object again");
            }
        }
        Ok(Some(manifest))
    }
}

/// What an orphan sweep may not delete, and what it may delete only on proof.
#[derive(Default)]
struct Placed {
    /// Shards and manifest copies the catalog places on this node.
    wanted: HashSet<ContentHash>,
    /// Shards this node held that the catalog says were rebuilt on another node: that node
    /// and the shard's length, or `None` when the move would put more of a segment's shards
    /// on one node than the coding can lose (a member's row, not repair's).
    elsewhere: HashMap<ContentHash, Option<(NodeId, u64)>>,
}
