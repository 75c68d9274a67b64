//! Where a segment's shards go: residency filter, health and free-space filter, then weighted
//! rendezvous hashing with site spread.
//!
//! Pure and deterministic. Rendezvous (highest-random-weight) hashing keeps placements stable
//! when membership changes: a node joining or leaving moves only the shards it wins or held.
//! The weight favours nodes with more free space, a better reputation and a lower price. Spread: each pick comes from a site with the
//! fewest shards of this segment so far, so a segment covers as many sites as it can.
//! Residency is a hard filter: if too few nodes satisfy the policy, placement fails — it never
//! falls back to a node outside it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};

use crate::Erasure;

/// A node that could hold a shard.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The node.
    pub id: NodeId,
    /// Failure domain.
    pub site: String,
    /// Region.
    pub region: String,
    /// Jurisdiction.
    pub jurisdiction: String,
    /// Free shard capacity in bytes.
    pub free_bytes: u64,
    /// Alive, storage role, not quarantined.
    pub healthy: bool,
    /// Its reputation, 0 to 1 (1: nothing against it): scales its rendezvous weight, so a
    /// distrusted node wins fewer shards.
    pub reputation: f64,
    /// Its published storage price, micro-credits per GB-month (`None`: none known).
    pub price: Option<u64>,
}

/// Where a bucket's data may live. Empty lists allow anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Residency {
    /// Allowed regions.
    pub regions: Vec<String>,
    /// Allowed jurisdictions.
    pub jurisdictions: Vec<String>,
    /// The most a holder may charge, micro-credits per GB-month (`None`: any price). Not part
    /// of the encoded policy (manifests stay byte-identical): the bucket record and the
    /// catalog row carry it beside the policy and set it here when they are read.
    #[serde(skip)]
    pub max_price: Option<u64>,
}

impl Residency {
    /// True when `c` may be given shards under this policy: where it allows, and priced
    /// (published) at or under its maximum price if it has one.
    pub fn admits(&self, c: &Candidate) -> bool {
        self.allows(c)
            && self
                .max_price
                .is_none_or(|m| c.price.is_some_and(|p| p <= m))
    }

    /// True when `c` is where this policy allows data to be.
    pub fn allows(&self, c: &Candidate) -> bool {
        (self.regions.is_empty() || self.regions.contains(&c.region))
            && (self.jurisdictions.is_empty()
                || self
                    .jurisdictions
                    .iter()
                    .any(|j| j.eq_ignore_ascii_case(&c.jurisdiction)))
    }
}

impl std::fmt::Display for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.regions.is_empty(), self.jurisdictions.is_empty()) {
            (true, true) => f.write_str("anywhere"),
            (false, true) => write!(f, "regions {}", self.regions.join(",")),
            (true, false) => write!(f, "jurisdictions {}", self.jurisdictions.join(",")),
            (false, false) => write!(
                f,
                "regions {} and jurisdictions {}",
                self.regions.join(","),
                self.jurisdictions.join(",")
            ),
        }?;
        match self.max_price {
            Some(m) => write!(
                f,
                ", priced at most {}.{:06} credits per GB-month",
                m / 1_000_000,
                m % 1_000_000
            ),
            None => Ok(()),
        }
    }
}

/// Placement could not satisfy the request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// Too few eligible nodes.
    #[error(
        "cannot place {needed} shards: only {eligible} healthy nodes with {shard_bytes} bytes free satisfy the residency policy ({policy})"
    )]
    NotEnoughNodes {
        /// Shards to place.
        needed: usize,
        /// Eligible nodes.
        eligible: usize,
        /// Shard size.
        shard_bytes: u64,
        /// The policy.
        policy: String,
    },
}

/// Rendezvous score of `node` for `key`: uniform in (0, 1].
fn uniform(key: &ContentHash, node: &NodeId) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(&key.0);
    h.update(&node.0);
    let bytes = h.finalize();
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes.as_bytes()[..8]);
    ((u64::from_le_bytes(v) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// Choose `count` distinct nodes for the shards of the segment named `key`, in shard order.
pub fn place(
    key: &ContentHash,
    count: usize,
    shard_bytes: u64,
    candidates: &[Candidate],
    policy: &Residency,
) -> Result<Vec<NodeId>, PlacementError> {
    let admitted: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.healthy && c.free_bytes >= shard_bytes && policy.admits(c))
        .collect();
    let cheapest = admitted.iter().filter_map(|c| c.price).min();
    let mut eligible: Vec<(&Candidate, f64)> = admitted
        .into_iter()
        .map(|c| {
            // Weighted rendezvous: lower is better; weight grows with free space, reputation
            // and cheapness (the cheapest price over its own, at least a quarter; a node with
            // no published price counts as a quarter where others publish one).
            let price = match (cheapest, c.price) {
                (Some(low), Some(p)) if p > 0 => (low.max(1) as f64 / p as f64).clamp(0.25, 1.0),
                (Some(_), None) => 0.25,
                _ => 1.0,
            };
            let weight = ((c.free_bytes.max(1)) as f64).ln().max(1.0)
                * c.reputation.clamp(0.05, 1.0)
                * price;
            (c, -uniform(key, &c.id).ln() / weight)
        })
        .collect();
    eligible.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.id.cmp(&b.0.id)));
    eligible.dedup_by(|a, b| a.0.id == b.0.id);
    if eligible.len() < count {
        return Err(PlacementError::NotEnoughNodes {
            needed: count,
            eligible: eligible.len(),
            shard_bytes,
            policy: policy.to_string(),
        });
    }
    let mut per_site: HashMap<&str, usize> = HashMap::new();
    let mut chosen: Vec<NodeId> = Vec::with_capacity(count);
    let mut taken = vec![false; eligible.len()];
    for _ in 0..count {
        let mut best: Option<usize> = None;
        for (i, (c, _)) in eligible.iter().enumerate() {
            if taken[i] {
                continue;
            }
            let load = per_site.get(c.site.as_str()).copied().unwrap_or(0);
            match best {
                None => best = Some(i),
                Some(b) => {
                    let best_load = per_site
                        .get(eligible[b].0.site.as_str())
                        .copied()
                        .unwrap_or(0);
                    if load < best_load {
                        best = Some(i);
                    }
                }
            }
        }
        let Some(i) = best else { break };
        taken[i] = true;
        *per_site.entry(eligible[i].0.site.as_str()).or_default() += 1;
        chosen.push(eligible[i].0.id);
    }
    Ok(chosen)
}

/// The default erasure coding for a fabric with `eligible` storage nodes: 4+2 from six nodes,
/// smaller fabrics keep one or two parity shards on distinct nodes.
pub fn default_erasure(eligible: usize) -> Erasure {
    match eligible {
        0 | 1 => Erasure { data: 1, parity: 0 },
        2 => Erasure { data: 1, parity: 1 },
        3 => Erasure { data: 2, parity: 1 },
        4 => Erasure { data: 2, parity: 2 },
        5 => Erasure { data: 3, parity: 2 },
        _ => Erasure { data: 4, parity: 2 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REGIONS: [&str; 3] = ["eu", "us", "ap"];

    fn fabric(spec: &[(u8, u8, u64, bool)]) -> Vec<Candidate> {
        spec.iter()
            .enumerate()
            .map(|(i, &(region, site, free, healthy))| Candidate {
                id: NodeId([i as u8 + 1; 32]),
                site: format!("{}-{}", REGIONS[region as usize % 3], site % 3),
                region: REGIONS[region as usize % 3].to_string(),
                jurisdiction: REGIONS[region as usize % 3].to_ascii_uppercase(),
                free_bytes: free,
                healthy,
                reputation: 1.0,
                price: Some(1_000 * (i as u64 % 4)),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn residency_is_never_violated(
            spec in proptest::collection::vec((0u8..3, 0u8..3, 0u64..1_000_000, any::<bool>()), 0..30),
            count in 1usize..8,
            seed in any::<[u8; 32]>(),
        ) {
            let nodes = fabric(&spec);
            let policy = Residency { regions: vec!["eu".into()], jurisdictions: vec![], ..Default::default() };
            let key = ContentHash(seed);
            let eligible = nodes.iter().filter(|c| c.healthy && c.region == "eu" && c.free_bytes >= 1000).count();
            match place(&key, count, 1000, &nodes, &policy) {
                Ok(chosen) => {
                    prop_assert_eq!(chosen.len(), count);
                    let mut ids = chosen.clone();
                    ids.sort();
                    ids.dedup();
                    prop_assert_eq!(ids.len(), count, "a node got two shards");
                    for id in &chosen {
                        let c = nodes.iter().find(|c| c.id == *id).unwrap();
                        prop_assert!(c.region == "eu" && c.healthy && c.free_bytes >= 1000);
                    }
                    // Spread: as many distinct sites as the eligible nodes allow.
                    let sites: std::collections::BTreeSet<&str> = chosen.iter()
                        .map(|id| nodes.iter().find(|c| c.id == *id).unwrap().site.as_str()).collect();
                    let eligible_sites: std::collections::BTreeSet<&str> = nodes.iter()
                        .filter(|c| c.healthy && c.region == "eu" && c.free_bytes >= 1000)
                        .map(|c| c.site.as_str()).collect();
                    prop_assert_eq!(sites.len(), eligible_sites.len().min(count));
                }
                Err(PlacementError::NotEnoughNodes { eligible: e, .. }) => {
                    prop_assert!(eligible < count);
                    prop_assert_eq!(e, eligible);
                }
            }
        }

        #[test]
        fn unrelated_membership_changes_do_not_move_shards(
            spec in proptest::collection::vec((0u8..3, 0u8..3, 1_000_000u64..2_000_000, Just(true)), 8..20),
            seed in any::<[u8; 32]>(),
        ) {
            let nodes = fabric(&spec);
            let key = ContentHash(seed);
            let before = place(&key, 3, 1, &nodes, &Residency::default()).unwrap();
            // Remove a node that holds nothing: the placement stays as it was.
            let bystander = nodes.iter().position(|c| !before.contains(&c.id)).unwrap();
            let mut fewer = nodes.clone();
            fewer.remove(bystander);
            let after = place(&key, 3, 1, &fewer, &Residency::default()).unwrap();
            prop_assert_eq!(before, after);
        }
    }

    #[test]
    fn an_unsatisfiable_policy_fails_clearly() {
        let nodes = fabric(&[
            (0, 0, 10_000, true),
            (1, 0, 10_000, true),
            (1, 1, 10_000, true),
        ]);
        let policy = Residency {
            regions: vec!["eu".into()],
            jurisdictions: vec![],
            ..Default::default()
        };
        let err = place(&ContentHash([1; 32]), 3, 100, &nodes, &policy).unwrap_err();
        assert!(err.to_string().contains("only 1 healthy nodes"), "{err}");
        assert!(err.to_string().contains("regions eu"), "{err}");
    }

    #[test]
    fn a_maximum_price_keeps_shards_off_dearer_and_unpriced_nodes() {
        // Prices 0, 1000, 2000, 3000, 0, 1000 … (see `fabric`); one node publishes none.
        let mut nodes = fabric(&[
            (0, 0, 10_000, true),
            (0, 1, 10_000, true),
            (0, 2, 10_000, true),
            (1, 0, 10_000, true),
            (1, 1, 10_000, true),
            (1, 2, 10_000, true),
        ]);
        nodes[4].price = None;
        let policy = Residency {
            max_price: Some(1_000),
            ..Residency::default()
        };
        let chosen = place(&ContentHash([7; 32]), 3, 100, &nodes, &policy).unwrap();
        for id in &chosen {
            let c = nodes.iter().find(|c| c.id == *id).unwrap();
            assert!(c.price.is_some_and(|p| p <= 1_000), "{c:?}");
        }
        let err = place(&ContentHash([7; 32]), 4, 100, &nodes, &policy).unwrap_err();
        assert!(
            err.to_string()
                .contains("priced at most 0.001000 credits per GB-month"),
            "{err}"
        );
        // The price is not part of the encoded policy: manifests keep their bytes.
        let encoded = weft_core::wire::encode(&policy);
        assert_eq!(encoded, weft_core::wire::encode(&Residency::default()));
    }

    #[test]
    fn cheaper_nodes_win_more_shards() {
        // Two sites alike but for price: site 0 at 1,000, site 1 at 4,000 per GB-month.
        let mut nodes = fabric(&[
            (0, 0, 10_000, true),
            (0, 0, 10_000, true),
            (0, 0, 10_000, true),
            (0, 1, 10_000, true),
            (0, 1, 10_000, true),
            (0, 1, 10_000, true),
        ]);
        for (i, n) in nodes.iter_mut().enumerate() {
            n.price = Some(if i < 3 { 1_000 } else { 4_000 });
        }
        let cheap: Vec<NodeId> = nodes[..3].iter().map(|c| c.id).collect();
        let (mut to_cheap, mut to_dear) = (0, 0);
        for k in 0..2_000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&k.to_le_bytes());
            // One shard per segment: the site spread does not even it out.
            for id in place(&ContentHash(key), 1, 100, &nodes, &Residency::default()).unwrap() {
                if cheap.contains(&id) {
                    to_cheap += 1;
                } else {
                    to_dear += 1;
                }
            }
        }
        assert!(to_cheap > 3 * to_dear, "{to_cheap} vs {to_dear}");
    }

    #[test]
    fn small_fabrics_get_smaller_codes() {
        assert_eq!(default_erasure(10), Erasure { data: 4, parity: 2 });
        assert_eq!(default_erasure(3), Erasure { data: 2, parity: 1 });
        for n in 1..10 {
            assert!(default_erasure(n).total() <= n.max(1));
        }
    }
}
