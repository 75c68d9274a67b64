//! Garbage collection: an object nobody references any more (every name that used it was
//! deleted or overwritten, its upload was abandoned, or its write was never committed under a
//! name) for longer than the safety delay is released in the catalog; then its holders are
//! asked to delete its shards and manifest copies (each holder checks the catalog first), and
//! its catalog row goes.

use std::collections::HashMap;

use weft_core::{ContentHash, NodeId};
use weft_store::protocol::{DeleteRequest, MAX_HAS};

use crate::Healer;
use crate::registry::ManifestEntry;

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
            entry.released_ms = Some(weft_net::now_ms());
            if self.registry.put(&hash, &entry).await.is_err() {
                return false;
            }
            tracing::info!(manifest = %hash, bytes = entry.stored_bytes, "object released; reclaiming its shards");
        }
        // Segment shards first, the manifest copies last (holders read the manifest to check
        // what they are asked to delete).
        let mut by_node: HashMap<NodeId, Vec<ContentHash>> = HashMap::new();
        let manifest = self.storage.manifest_at(hash, &entry.holders).await;
        if let Ok(mut m) = manifest {
            entry.locations().apply(&mut m);
            for seg in &m.segments {
                for (i, n) in seg.holders.iter().enumerate() {
                    by_node.entry(*n).or_default().push(seg.info.shards[i]);
                }
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
