//! Hot copies: shards a site reads from other sites, kept near its readers.
//!
//! When a reader's site does not hold enough shards of a segment, the shards it must fetch
//! from far away are asked of one node of its own site — the shard's *site home*, the member of
//! the site that ranks highest for that shard's name (rendezvous hashing, so every node of the
//! site picks the same one without asking, and a member leaving moves only its own share). The
//! home fetches the shard from its holder once, however many readers ask at the same time,
//! checks it against its name and keeps it in memory; the next reader in the site gets it in
//! one round trip inside the site.
//!
//! What is kept is the shard as stored: encrypted under the object's key, which the home never
//! sees, and only in memory (never written to disk). A home keeps a shard only after checking,
//! from the object's manifest (fetched and verified by its name), that the object's residency
//! allows the home's own region and jurisdiction; a reader in a site the residency excludes
//! fetches from the holders directly and nobody there keeps anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use weft_core::{ContentHash, NodeId};

/// Bytes of hot shards a node keeps (oldest dropped first).
pub const HOT_BUDGET: usize = 256 << 20;

/// The member of `site` that keeps hot copies of `shard` for it (`None` for an empty site).
pub fn site_home(shard: &ContentHash, site: &[NodeId]) -> Option<NodeId> {
    site.iter().copied().max_by_key(|n| {
        let mut h = blake3::Hasher::new_derive_key("weft site home v1");
        h.update(&shard.0);
        h.update(&n.0);
        *h.finalize().as_bytes()
    })
}

/// Shards kept hot on this node, within [`HOT_BUDGET`], oldest first out.
#[derive(Default)]
pub struct HotShards {
    by_hash: HashMap<ContentHash, Arc<Vec<u8>>>,
    order: VecDeque<ContentHash>,
    bytes: usize,
}

impl HotShards {
    /// The shard named `hash`, if kept.
    pub fn get(&self, hash: &ContentHash) -> Option<Arc<Vec<u8>>> {
        self.by_hash.get(hash).cloned()
    }

    /// Keep `bytes` (already checked against `hash`). One larger than a quarter of the budget
    /// is not kept.
    pub fn insert(&mut self, hash: ContentHash, bytes: Arc<Vec<u8>>) {
        if bytes.len() > HOT_BUDGET / 4 || self.by_hash.contains_key(&hash) {
            return;
        }
        while self.bytes + bytes.len() > HOT_BUDGET {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.by_hash.remove(&old) {
                self.bytes -= b.len();
            }
        }
        self.bytes += bytes.len();
        self.order.push_back(hash);
        self.by_hash.insert(hash, bytes);
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every shard kept (for tests and status).
    pub fn hashes(&self) -> Vec<ContentHash> {
        self.order.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reader_picks_the_same_home_and_a_leaving_member_moves_only_its_share() {
        let site: Vec<NodeId> = (1..=4u8).map(|i| NodeId([i; 32])).collect();
        let shards: Vec<ContentHash> = (0..200u8).map(|i| ContentHash([i; 32])).collect();
        let homes: Vec<NodeId> = shards
            .iter()
            .map(|s| site_home(s, &site).unwrap())
            .collect();
        // Order of the member list does not matter.
        let mut reversed = site.clone();
        reversed.reverse();
        for (s, h) in shards.iter().zip(&homes) {
            assert_eq!(site_home(s, &reversed), Some(*h));
        }
        // Spread over the members.
        for n in &site {
            assert!(homes.iter().filter(|h| *h == n).count() > 20);
        }
        // Member 4 leaves: only its shards move.
        let rest = &site[..3];
        for (s, h) in shards.iter().zip(&homes) {
            if *h != site[3] {
                assert_eq!(site_home(s, rest), Some(*h));
            }
        }
        assert_eq!(site_home(&shards[0], &[]), None);
    }

    #[test]
    fn hot_shards_stay_within_their_budget_oldest_first() {
        let mut hot = HotShards::default();
        let len = HOT_BUDGET / 8;
        for i in 0..10u8 {
            hot.insert(ContentHash([i; 32]), Arc::new(vec![i; len]));
        }
        assert!(hot.bytes() <= HOT_BUDGET);
        assert!(hot.get(&ContentHash([0; 32])).is_none());
        assert!(hot.get(&ContentHash([1; 32])).is_none());
        assert_eq!(hot.get(&ContentHash([9; 32])).unwrap()[0], 9);
        hot.insert(ContentHash([42; 32]), Arc::new(vec![0; HOT_BUDGET / 2]));
        assert!(hot.get(&ContentHash([42; 32])).is_none());
        assert_eq!(hot.hashes().len(), 8);
    }
}
