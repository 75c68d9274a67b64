//! Partitions and their replicas: keys hash to one of [`PARTITIONS`] partitions; a partition's
//! replicas are the top nodes by rendezvous hash, preferring distinct sites.
//!
//! **Rows held to regions.** A partition key whose kind carries a region tag,
//! `<kind>@<region>+<region>/…` (regions sorted, each once: [`tag`]), keeps its rows on nodes of
//! those regions only: its partitions are a class of their own after the plain ones (the class
//! a hash of the tag, [`CLASSES`] of them), its replicas are chosen among members in the
//! regions, and a replica outside them refuses the rows ([`placeable`]). A tag names nothing
//! else: writer rules read the kind without it.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;

/// Number of partitions of rows that may live anywhere (and in each class of rows held to
/// regions).
pub const PARTITIONS: u16 = 256;

/// Classes of partitions for rows held to regions, after the plain partitions: at most
/// `PARTITIONS * (1 + CLASSES)` partitions in all, which fits a [`Partition`].
pub const CLASSES: u16 = 255;

/// A partition number.
pub type Partition = u16;

/// The partition of a key.
pub fn partition_of(key: &[u8]) -> Partition {
    let h = blake3::hash(key);
    let p = u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) % PARTITIONS;
    match std::str::from_utf8(key).ok().and_then(tag_of) {
        None => p,
        Some(tag) => PARTITIONS + class_of(tag) * PARTITIONS + p,
    }
}

/// Whether partition `p` holds rows held to regions.
pub fn held(p: Partition) -> bool {
    p >= PARTITIONS
}

fn class_of(tag: &str) -> u16 {
    let h = blake3::derive_key("weft meta region class", tag.as_bytes());
    u16::from_le_bytes([h[0], h[1]]) % CLASSES
}

/// The region tag of a partition key (what follows `@` in its kind), if it has one.
fn tag_of(pk: &str) -> Option<&str> {
    let kind = pk.split('/').next()?;
    kind.split_once('@').map(|(_, tag)| tag)
}

/// The regions `pk`'s rows are held to: `Ok(None)` for rows that may live anywhere; an error
/// for a tag that is not one [`tag`] makes (empty, unsorted, repeated, or a region with a
/// character a tag cannot carry).
pub fn regions_of(pk: &str) -> Result<Option<Vec<&str>>, String> {
    match tag_of(pk) {
        None => Ok(None),
        Some(t) => parse_tag(t)
            .map(Some)
            .ok_or_else(|| format!("{pk:?} has a malformed region tag")),
    }
}

/// The regions of a tag as [`tag`] makes it: sorted, each once, each 1 to 64 letters, digits,
/// `-`, `_` or `.`.
fn parse_tag(t: &str) -> Option<Vec<&str>> {
    let regions: Vec<&str> = t.split('+').collect();
    let valid = |r: &&str| {
        !r.is_empty()
            && r.len() <= 64
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    (regions.iter().all(valid) && regions.windows(2).all(|w| w[0] < w[1])).then_some(regions)
}

/// The tag that holds a kind's rows to `regions` (sorted, each once); `None` for no regions,
/// or for a region a tag cannot carry (see [`regions_of`]) — such rows may live anywhere.
pub fn tag(regions: &[String]) -> Option<String> {
    let mut r: Vec<&str> = regions.iter().map(String::as_str).collect();
    r.sort_unstable();
    r.dedup();
    let t = r.join("+");
    (!r.is_empty() && parse_tag(&t).is_some()).then_some(t)
}

/// Whether a node in `region` may hold the rows of `pk`.
pub fn placeable(pk: &str, region: &str) -> bool {
    match regions_of(pk) {
        Ok(None) => true,
        Ok(Some(regions)) => regions.contains(&region),
        Err(_) => false,
    }
}

/// A node that can replicate metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The node.
    pub id: NodeId,
    /// Its site.
    pub site: String,
    /// Its region.
    pub region: String,
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
    replicas_in(partition, nodes, n, None)
}

/// The `n` replicas of the partition of `pk` among `nodes`: those in its regions only, if it
/// is held to regions; distinct nodes, distinct sites first. None for a malformed tag.
pub fn replicas_of_key(pk: &str, nodes: &[Replica], n: usize) -> Vec<NodeId> {
    match regions_of(pk) {
        Ok(regions) => replicas_in(partition_of(pk.as_bytes()), nodes, n, regions.as_deref()),
        Err(_) => Vec::new(),
    }
}

/// [`replicas`] among the nodes in `regions` (all, for `None`).
pub fn replicas_in(
    partition: Partition,
    nodes: &[Replica],
    n: usize,
    regions: Option<&[&str]>,
) -> Vec<NodeId> {
    let mut ranked: Vec<&Replica> = nodes
        .iter()
        .filter(|r| regions.is_none_or(|rs| rs.contains(&r.region.as_str())))
        .collect();
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
                region: s.to_string(),
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

    #[test]
    fn rows_held_to_regions_are_placed_only_there() {
        let all = nodes(&["eu", "eu", "us", "us", "ap", "ap"]);
        let region_of = |id: &NodeId| all.iter().find(|n| n.id == *id).unwrap().region.clone();
        let t = tag(&["us".into(), "eu".into(), "eu".into()]).unwrap();
        assert_eq!(t, "eu+us");
        for i in 0..200u32 {
            let pk = format!("so@{t}/owner/bucket{i}");
            let p = partition_of(pk.as_bytes());
            assert!(held(p));
            let r = replicas_of_key(&pk, &all, 3);
            assert_eq!(r.len(), 3);
            assert!(r.iter().all(|id| region_of(id) != "ap"), "{pk}");
            // Both regions' sites are used.
            let sites: std::collections::BTreeSet<_> = r.iter().map(region_of).collect();
            assert_eq!(sites.len(), 2);
            assert!(placeable(&pk, "eu") && placeable(&pk, "us") && !placeable(&pk, "ap"));
            // The same rows untagged may live anywhere, in the plain partitions.
            let plain = format!("so/owner/bucket{i}");
            assert!(!held(partition_of(plain.as_bytes())));
            assert!(placeable(&plain, "ap"));
        }
        // One region with a single node: one replica, not a node elsewhere.
        let few = nodes(&["eu", "us", "us"]);
        assert_eq!(replicas_of_key("so@eu/o/b", &few, 3), vec![few[0].id]);
        // No node in the regions: no replicas (the write fails), never others.
        assert!(replicas_of_key("so@sa/o/b", &few, 3).is_empty());
        // Tags only as `tag` makes them.
        for bad in [
            "so@/o/b",
            "so@us+eu/o/b",
            "so@eu+eu/o/b",
            "so@e u/o/b",
            "so@eu+/o/b",
        ] {
            assert!(regions_of(bad).is_err(), "{bad}");
            assert!(!placeable(bad, "eu"), "{bad}");
            assert!(replicas_of_key(bad, &all, 3).is_empty(), "{bad}");
        }
        assert_eq!(tag(&[]), None);
        assert_eq!(tag(&["e/u".into()]), None);
        assert_eq!(regions_of("so/o/b"), Ok(None));
    }
}
