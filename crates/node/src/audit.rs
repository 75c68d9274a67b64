//! An auditor's view of an account's storage: where each shard of its objects lives and a
//! fresh proof from its holder that it holds it (`weft audit`, `GET /v1/audit/objects`).

use std::collections::HashMap;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use weft_core::NodeId;
use weft_data::BucketError;

use crate::Node;

/// Storage challenges one audit has in flight at once.
const CHALLENGES_AT_ONCE: usize = 16;
/// The most objects one audit answer covers (name a bucket to audit a larger account).
const OBJECTS_MAX: usize = 10_000;

/// One shard of an audited object: who holds it, where, and whether it proved it just now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardAudit {
    /// The manifest's place among the object's stored parts (0 for a whole object).
    pub part: usize,
    /// The segment.
    pub segment: u32,
    /// The shard's number in its segment.
    pub shard: usize,
    /// Its hash (hex).
    pub hash: String,
    /// The holder (hex).
    pub holder: String,
    /// The holder's region and jurisdiction from its admission (`None`: not a member now).
    pub region: Option<String>,
    /// See `region`.
    pub jurisdiction: Option<String>,
    /// `passed`, `failed` (the holder's proof did not check against the hash) or
    /// `unreachable: …`.
    pub proof: String,
}

/// One audited object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAudit {
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Plaintext bytes.
    pub size: u64,
    /// The regions its bucket allows (empty: any).
    pub regions: Vec<String>,
    /// The jurisdictions its bucket allows (empty: any).
    pub jurisdictions: Vec<String>,
    /// Its shards; none for a small object kept in its (sealed) row.
    pub shards: Vec<ShardAudit>,
}

/// `GET /v1/audit/objects` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectsAudit {
    /// The account's objects, bucket by bucket.
    pub objects: Vec<ObjectAudit>,
    /// Whether objects were left out (more than one answer covers).
    pub truncated: bool,
}

impl Node {
    /// Where each shard of `acting`'s objects (of bucket `only`, or all) lives and whether its
    /// holder proves it holds it now: a fresh storage challenge per shard, the holder's region
    /// and jurisdiction from its admission (`weft audit`).
    pub async fn audit_objects(
        &self,
        acting: &weft_data::Acting,
        only: Option<&str>,
    ) -> Result<ObjectsAudit, BucketError> {
        let me = acting.account();
        let mut buckets: Vec<_> = acting
            .list_buckets()
            .await?
            .into_iter()
            .filter(|b| b.owner == me && only.is_none_or(|o| o == b.name))
            .collect();
        if let Some(name) = only
            && buckets.is_empty()
        {
            buckets.push(acting.bucket(name).await?);
        }
        let places: HashMap<NodeId, weft_core::Placement> = self
            .members()
            .into_iter()
            .filter(|m| !matches!(m.state, weft_fabric::MemberState::Revoked))
            .map(|m| (m.id, m.placement))
            .collect();
        let mut out = ObjectsAudit::default();
        'buckets: for b in buckets {
            for (key, _) in acting.objects().list(&b.name, "").await? {
                if out.objects.len() >= OBJECTS_MAX {
                    out.truncated = true;
                    break 'buckets;
                }
                let manifests = acting.objects().stored_manifests(&b.name, &key).await?;
                let mut wanted = Vec::new();
                for (part, m) in manifests.iter().enumerate() {
                    for seg in &m.segments {
                        for (shard, (hash, holder)) in
                            seg.info.shards.iter().zip(&seg.holders).enumerate()
                        {
                            wanted.push((
                                part,
                                seg.info.index,
                                shard,
                                *hash,
                                *holder,
                                seg.info.shard_len,
                            ));
                        }
                    }
                }
                let storage = self.storage().clone();
                let shards: Vec<ShardAudit> = futures_util::stream::iter(wanted)
                    .map(|(part, segment, shard, hash, holder, len)| {
                        let storage = storage.clone();
                        let place = places.get(&holder).cloned();
                        async move {
                            let proof = match storage.audit(holder, hash, len).await {
                                Ok(true) => "passed".to_string(),
                                Ok(false) => "failed".to_string(),
                                Err(e) => format!("unreachable: {e}"),
                            };
                            ShardAudit {
                                part,
                                segment,
                                shard,
                                hash: hash.to_hex(),
                                holder: holder.to_hex(),
                                region: place.as_ref().map(|p| p.region.clone()),
                                jurisdiction: place.map(|p| p.jurisdiction),
                                proof,
                            }
                        }
                    })
                    .buffered(CHALLENGES_AT_ONCE)
                    .collect()
                    .await;
                out.objects.push(ObjectAudit {
                    bucket: b.name.clone(),
                    key,
                    size: manifests.iter().map(|m| m.size).sum(),
                    regions: b.policy.regions.clone(),
                    jurisdictions: b.policy.jurisdictions.clone(),
                    shards,
                });
            }
        }
        Ok(out)
    }
}
