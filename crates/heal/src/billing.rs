//! What a node holds for whom: the facts its storage receipts are made of. For each object
//! the catalog places shards on this node, the bytes of those shards, split among the
//! (account, bucket) pairs whose signed references keep the object; and the audits this node passed, as its
//! auditors' tallies count them. The ledger's storage receipts are issued from these (see the
//! node's billing loop); a node its auditors quarantined bills nothing.

use std::collections::HashMap;

use weft_core::{ContentHash, NodeId};

use crate::Healer;
use crate::schema::{References, Tallies};

/// What this node holds for one account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeldFor {
    /// Bytes of shards on this node (an object kept by several accounts is split evenly).
    pub bytes: u64,
    /// The objects (manifest hashes), sorted.
    pub objects: Vec<ContentHash>,
}

impl Healer {
    /// The bytes of shards the catalog places on this node, per account and bucket that keep
    /// the objects they belong to (bucket empty: objects stored under no name). Objects
    /// released by garbage collection, objects whose manifest cannot be read and objects nobody
    /// references are left out (nobody is billed for them).
    pub async fn held_for_accounts(&self) -> Result<HashMap<(NodeId, String), HeldFor>, String> {
        let me = self.storage.id();
        let mut out: HashMap<(NodeId, String), HeldFor> = HashMap::new();
        for part in crate::schema::catalog_parts() {
            let listing = self
                .registry
                .list(part)
                .await
                .map_err(|e| format!("catalog partition {part:02x}: {e}"))?;
            for (hash, entry) in listing.rows {
                if entry.released_ms.is_some() {
                    continue;
                }
                let mut manifest = match self.storage.manifest_at(hash, &entry.holders).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(object = %hash.to_hex(), error = %e, "not billed: manifest unreadable");
                        continue;
                    }
                };
                entry.locations().apply(&mut manifest);
                let bytes: u64 = manifest
                    .segments
                    .iter()
                    .map(|s| {
                        s.holders.iter().filter(|h| **h == me).count() as u64 * s.info.shard_len
                    })
                    .sum();
                if bytes == 0 {
                    continue;
                }
                let owners = self.owners_of(&hash).await?;
                if owners.is_empty() {
                    continue;
                }
                let share = bytes / owners.len() as u64;
                for owner in owners {
                    let held = out.entry(owner).or_default();
                    held.bytes = held.bytes.saturating_add(share);
                    held.objects.push(hash);
                }
            }
        }
        for held in out.values_mut() {
            held.objects.sort();
        }
        Ok(out)
    }

    /// The accounts, and their buckets, whose references (rows each signed) keep `object`.
    async fn owners_of(&self, object: &ContentHash) -> Result<Vec<(NodeId, String)>, String> {
        let rows = self
            .registry
            .table()
            .list::<References>(object, "")
            .await
            .map_err(|e| format!("references of {}: {e}", object.to_hex()))?;
        let mut owners: Vec<(NodeId, String)> = rows
            .into_iter()
            .filter_map(|(sort, row)| {
                row.known()?;
                let owner: NodeId = sort.get(..64)?.parse().ok()?;
                // `<owner>/v/<bucket>/…`, `<owner>/u/<bucket>/…`, `<owner>/capability`.
                let mut rest = sort.get(65..)?.splitn(3, '/');
                let bucket = match (rest.next(), rest.next()) {
                    (Some("v" | "u"), Some(bucket)) => bucket.to_string(),
                    _ => String::new(),
                };
                Some((owner, bucket))
            })
            .collect();
        owners.sort();
        owners.dedup();
        Ok(owners)
    }

    /// Audits this node passed, all time, as its auditors' tallies say; and whether its
    /// auditors' view (as this node last judged it) has it quarantined.
    pub async fn audit_standing(&self) -> Result<(u64, bool), String> {
        let me = self.storage.id();
        let rows = self
            .registry
            .table()
            .list::<Tallies>(&me, "")
            .await
            .map_err(|e| format!("audit tallies: {e}"))?;
        let passed = crate::reputation::tallies_of(&me, rows)
            .iter()
            .map(|t| t.passed)
            .sum();
        let quarantined = self
            .reputation
            .lock()
            .get(&me)
            .is_some_and(|r| r.quarantined);
        Ok((passed, quarantined))
    }
}
