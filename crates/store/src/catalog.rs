//! The hook through which storage tells the fabric what it stored and learns where shards went
//! after repair. Storage never knows how the catalog keeps this (the healing service keeps it
//! in the replicated metadata table).

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};

use crate::object::{Manifest, PlacedSegment};

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an object's pieces are now, when repair moved them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locations {
    /// Nodes holding the manifest now.
    pub manifest_holders: Vec<NodeId>,
    /// Shards rebuilt on another node: (segment, shard index, new holder).
    pub moved: Vec<(u32, u16, NodeId)>,
}

impl Locations {
    /// Apply the moves to a manifest's holder lists.
    pub fn apply(&self, manifest: &mut Manifest) {
        for seg in &mut manifest.segments {
            self.apply_segment(seg);
        }
    }

    /// Apply the moves to one segment's holders.
    pub fn apply_segment(&self, seg: &mut PlacedSegment) {
        for (index, shard, node) in &self.moved {
            if *index == seg.info.index
                && let Some(h) = seg.holders.get_mut(*shard as usize)
            {
                *h = *node;
            }
        }
    }
}

/// The registry of stored objects.
pub trait Catalog: Send + Sync + 'static {
    /// Register a newly stored object (manifest hash, manifest, manifest holders). A write is
    /// acknowledged only once this succeeds, so every acknowledged object is tracked.
    fn record<'a>(
        &'a self,
        manifest: ContentHash,
        body: &'a Manifest,
        holders: &'a [NodeId],
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Current locations of an object's pieces, if the catalog knows it.
    fn locate(&self, manifest: ContentHash) -> BoxFuture<'_, Option<Locations>>;

    /// Whether this node can verify for itself that `manifest`'s owners let it go, so its
    /// shards (and the manifest itself) may be deleted. Never on a peer's word.
    fn deletable(&self, manifest: ContentHash) -> BoxFuture<'_, bool>;

    /// How long a shard must have been held here before anything deletes it (a write's
    /// references may still be on their way).
    fn safety_delay(&self) -> std::time::Duration;
}
