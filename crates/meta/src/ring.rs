//! Partitions and their replicas: keys hash to one of [`PARTITIONS`] partitions; a partition's
//! replicas are the top nodes by rendezvous hash, preferring distinct sites.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;

/// Number of partitions.
pub const PARTITIONS: u16 = 256;

/// A partition number.
pub type Partition = u16;

/// The partition of a key.
pub fn partition_of(key: &[u8]) -> Partition {
    let h = blake3::hash(key);
    u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) % PARTITIONS
}

/// A node that can replicate metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The node.
    pub id: NodeId,
    /// Its site.
    pub site: String,
}

fn score(partition: Partition, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"weft meta partition");
    h.update(&partition.to_le_bytes());
    h.update(&node.0);
    *h.finalize().as_bytes()
}

/// The `n` replicas of `partition` among `nodes`: distinct nodes, distinct sites first.
pub fn replicas(partition: Partition, nodes: &[Replica], n: usize) -> Vec<NodeId> {
    let mut ranked: Vec<&Replica> = nodes.iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(score(partition, &r.id)));
    ranked.dedup_by_key(|r| r.id);
    let mut chosen: Vec<&Replica> = Vec::new();
    for r in &ranked {
        if chosen.len() < n && !chosen.iter().any(|c| c.site == r.site) {
            chosen.push(r);
        }
    }
    for r in &ranked {
        if chosen.len() < n && !chosen.iter().any(|c| c.id == r.id) {
            chosen.push(r);
        }
    }
    chosen.into_iter().map(|r| r.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(sites: &[&str]) -> Vec<Replica> {
        sites
            .iter()
            .enumerate()
            .map(|(i, s)| Replica {
                id: NodeId([i as u8 + 1; 32]),
                site: s.to_string(),
            })
            .collect()
    }

    #[test]
    fn replicas_spread_over_sites_and_are_stable() {
        let all = nodes(&["eu", "eu", "us", "us", "ap", "ap"]);
        for p in 0..PARTITIONS {
            let r = replicas(p, &all, 3);
            assert_eq!(r.len(), 3);
            let sites: std::collections::BTreeSet<_> = r
                .iter()
                .map(|id| all.iter().find(|n| n.id == *id).unwrap().site.clone())
                .collect();
            assert_eq!(sites.len(), 3, "partition {p} not spread");
        }
        // Fewer nodes than replicas: everyone.
        assert_eq!(replicas(7, &all[..2], 3).len(), 2);
        // Keys spread over partitions.
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000u32 {
            seen.insert(partition_of(&i.to_le_bytes()));
        }
        assert!(seen.len() > 200);
    }
}
