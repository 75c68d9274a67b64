//! Where a job runs: filter, then score (IO-free; the driver gives it the fabric's view).
//!
//! **Filter** (a node is out if any fails): the compute role, alive, not quarantined, not a
//! node the job already failed on, residency (the job's allowed regions and jurisdictions —
//! by default its inputs' bucket policy), required labels, and free cpu and memory.
//!
//! **Score** (higher is better), for the nodes that pass:
//! - input bytes whose shards are on the node (weight [`W_LOCAL`]) or in its site
//!   ([`W_SITE`]), as fractions of the job's input bytes;
//! - estimated time to fetch the rest, from network coordinates ([`W_TRANSFER`] per second);
//! - load spread: the fraction of the node's cpu left after placing ([`W_SPREAD`]);
//! - distance to the job's "near" target, if any ([`W_NEAR`] per second of RTT);
//! - the node's reputation (audits, uptime, verified results), [`W_REPUTATION`] per point
//!   below 1 (subtracted);
//! - the node's price per 10⁹ fuel, [`W_PRICE`] per credit (subtracted); a node priced above
//!   the job's maximum, or not priced when the job has one, is filtered out;
//! - a site another run of the same job already used (verification runs), [`W_SAME_SITE`]
//!   (subtracted), so a result is checked in another site where there is one.
//!
//! A placement need not look at every node: the nodes holding input shards are always
//! scored, then feasible nodes from a rotating start until [`SAMPLE`] of them were seen (as
//! kube-scheduler scores a fraction of large clusters), so a decision costs about the same at
//! 10 or 10,000 nodes. The runner has the last word: it admits the job on its own resources
//! or refuses, and the driver moves to the next choice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use weft_core::NodeId;
use weft_fabric::vivaldi::Coordinate;

/// Score weight of the fraction of input bytes on the node itself.
pub const W_LOCAL: f64 = 100.0;
/// Score weight of the fraction of input bytes elsewhere in the node's site.
pub const W_SITE: f64 = 40.0;
/// Score per second of estimated input transfer (subtracted).
pub const W_TRANSFER: f64 = 20.0;
/// Score weight of the fraction of cpu left free.
pub const W_SPREAD: f64 = 10.0;
/// Score per second of RTT to the "near" target (subtracted).
pub const W_NEAR: f64 = 200.0;
/// Score per point of reputation below 1 (subtracted).
pub const W_REPUTATION: f64 = 60.0;
/// Score per credit of price per 10⁹ fuel (subtracted).
pub const W_PRICE: f64 = 100.0;
/// Score of a site another run of the job used (subtracted).
pub const W_SAME_SITE: f64 = 30.0;
/// Feasible nodes scored beyond the input holders.
pub const SAMPLE: usize = 64;
/// Assumed throughput within a site, bytes/s.
const SITE_BW: f64 = 100e6;
/// Assumed throughput across sites, bytes/s.
const WAN_BW: f64 = 20e6;

/// A small interned name (region, jurisdiction, site, label), so the filter compares integers.
pub type Name = u32;

/// One node as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Its id.
    pub id: NodeId,
    /// Site, region and jurisdiction (interned).
    pub site: Name,
    /// Region.
    pub region: Name,
    /// Jurisdiction.
    pub jurisdiction: Name,
    /// Has the compute role.
    pub compute: bool,
    /// Alive (SWIM).
    pub alive: bool,
    /// Quarantined (failed audits, long absences or proven wrong results).
    pub quarantined: bool,
    /// Its reputation, 0 to 1 (1: nothing against it).
    pub reputation: f64,
    /// Its published price per 10⁹ fuel, micro-credits (`None`: it published none).
    pub price: Option<u64>,
    /// Cpu it offers, milli-cores.
    pub cpu: u32,
    /// Cpu reserved by jobs it runs.
    pub cpu_used: u32,
    /// Memory it offers, bytes.
    pub memory: u64,
    /// Memory reserved.
    pub memory_used: u64,
    /// Labels (interned key → interned value).
    pub labels: BTreeMap<Name, Name>,
    /// Network coordinate.
    pub coord: Coordinate,
}

/// Where a job's data is.
#[derive(Clone, Debug, Default)]
pub struct InputBytes {
    /// Bytes of the job's input shards each node holds.
    pub held: Vec<(NodeId, u64)>,
}

impl InputBytes {
    fn total(&self) -> u64 {
        self.held.iter().map(|(_, b)| b).sum()
    }
}

/// What a job needs.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Milli-cores.
    pub cpu: u32,
    /// Bytes.
    pub memory: u64,
    /// Allowed regions (empty: any).
    pub regions: Vec<Name>,
    /// Allowed jurisdictions (empty: any).
    pub jurisdictions: Vec<Name>,
    /// Labels the node must have.
    pub labels: BTreeMap<Name, Name>,
    /// Its inputs.
    pub inputs: InputBytes,
    /// Run near this point (a node's, a site's or a client's coordinate).
    pub near: Option<Coordinate>,
    /// Nodes not to use (where it failed, or that ran it already for a check).
    pub avoid: Vec<NodeId>,
    /// Sites other runs of it used (preferred last).
    pub sites_used: Vec<Name>,
    /// The most it may cost per 10⁹ fuel, micro-credits: nodes priced higher, or not
    /// priced, are out.
    pub max_price: Option<u64>,
}

/// Why nodes were filtered out, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Without the compute role.
    pub role: u32,
    /// Dead or quarantined.
    pub health: u32,
    /// Where the job already failed.
    pub avoided: u32,
    /// Outside the allowed regions or jurisdictions.
    pub residency: u32,
    /// Missing a required label.
    pub labels: u32,
    /// Without enough free cpu or memory.
    pub resources: u32,
    /// Priced above the job's maximum (or not priced).
    pub price: u32,
}

impl std::fmt::Display for Filtered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.role, "without the compute role"),
            (self.health, "dead or quarantined"),
            (self.avoided, "where it failed before"),
            (self.residency, "outside its residency"),
            (self.labels, "without its labels"),
            (self.resources, "without enough free cpu or memory"),
            (self.price, "above its maximum price"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
        if parts.is_empty() {
            write!(f, "no nodes")
        } else {
            write!(f, "{}", parts.join(", "))
        }
    }
}

/// One candidate, scored, with the figures that explain it.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The node.
    pub node: NodeId,
    /// Its score.
    pub score: f64,
    /// Input bytes on it.
    pub local_bytes: u64,
    /// Input bytes elsewhere in its site.
    pub site_bytes: u64,
    /// Input bytes in other sites.
    pub remote_bytes: u64,
    /// Estimated time to fetch what is not local.
    pub transfer: Duration,
}

/// The nodes a job may run on, best first.
#[derive(Clone, Debug)]
pub struct Ranking {
    /// Best first.
    pub choices: Vec<Choice>,
    /// Why the others were left out (of those looked at).
    pub filtered: Filtered,
}

/// The scheduler core: the fabric's nodes and what is reserved on them.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    nodes: Vec<NodeView>,
    /// The highest published price among the nodes (what an unpriced node is scored at).
    highest_price: u64,
    index: HashMap<NodeId, usize>,
    cursor: usize,
}

impl Scheduler {
    /// A scheduler over `nodes`.
    pub fn new(nodes: Vec<NodeView>) -> Scheduler {
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let highest_price = nodes.iter().filter_map(|n| n.price).max().unwrap_or(0);
        Scheduler {
            highest_price,
            nodes,
            index,
            cursor: 0,
        }
    }

    /// The node `id`.
    pub fn node(&self, id: &NodeId) -> Option<&NodeView> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    fn why_not(&self, n: &NodeView, needs: &Needs) -> Option<fn(&mut Filtered) -> &mut u32> {
        if !n.compute {
            return Some(|f| &mut f.role);
        }
        if !n.alive || n.quarantined {
            return Some(|f| &mut f.health);
        }
        if needs.avoid.contains(&n.id) {
            return Some(|f| &mut f.avoided);
        }
        if (!needs.regions.is_empty() && !needs.regions.contains(&n.region))
            || (!needs.jurisdictions.is_empty() && !needs.jurisdictions.contains(&n.jurisdiction))
        {
            return Some(|f| &mut f.residency);
        }
        if needs.labels.iter().any(|(k, v)| n.labels.get(k) != Some(v)) {
            return Some(|f| &mut f.labels);
        }
        if let Some(max) = needs.max_price
            && n.price.is_none_or(|p| p > max)
        {
            return Some(|f| &mut f.price);
        }
        if n.cpu.saturating_sub(n.cpu_used) < needs.cpu
            || n.memory.saturating_sub(n.memory_used) < needs.memory
        {
            return Some(|f| &mut f.resources);
        }
        None
    }

    fn score(&self, n: &NodeView, needs: &Needs, total: u64) -> Choice {
        let (mut local, mut site, mut remote) = (0u64, 0u64, 0u64);
        let mut transfer = 0.0f64;
        for (holder, bytes) in &needs.inputs.held {
            if *holder == n.id {
                local += bytes;
                continue;
            }
            let Some(h) = self.node(holder) else {
                remote += bytes;
                transfer += *bytes as f64 / WAN_BW;
                continue;
            };
            let rtt = n.coord.distance_to(&h.coord).as_secs_f64();
            if h.site == n.site {
                site += bytes;
                transfer += rtt + *bytes as f64 / SITE_BW;
            } else {
                remote += bytes;
                transfer += rtt + *bytes as f64 / WAN_BW;
            }
        }
        let frac = |b: u64| {
            if total == 0 {
                0.0
            } else {
                b as f64 / total as f64
            }
        };
        let free_after = if n.cpu == 0 {
            0.0
        } else {
            n.cpu.saturating_sub(n.cpu_used + needs.cpu) as f64 / n.cpu as f64
        };
        let near = needs
            .near
            .as_ref()
            .map_or(0.0, |p| n.coord.distance_to(p).as_secs_f64());
        let distrust = (1.0 - n.reputation.clamp(0.0, 1.0)) * W_REPUTATION;
        // A node whose price is not known yet is scored at the highest price known.
        let price = n.price.unwrap_or(self.highest_price) as f64 / 1e6 * W_PRICE;
        let same_site = if needs.sites_used.contains(&n.site) {
            W_SAME_SITE
        } else {
            0.0
        };
        Choice {
            node: n.id,
            score: W_LOCAL * frac(local) + W_SITE * frac(site) - W_TRANSFER * transfer
                + W_SPREAD * free_after
                - W_NEAR * near
                - distrust
                - same_site
                - price,
            local_bytes: local,
            site_bytes: site,
            remote_bytes: remote,
            transfer: Duration::from_secs_f64(transfer.min(1e6)),
        }
    }

    /// Rank the nodes for a job; at most `limit` choices, best first (empty: nothing fits, and
    /// `filtered` says why).
    pub fn rank(&mut self, needs: &Needs, limit: usize) -> Ranking {
        let total = needs.inputs.total();
        let mut filtered = Filtered::default();
        let mut choices: Vec<Choice> = Vec::with_capacity(SAMPLE + needs.inputs.held.len());
        let mut seen_holders: Vec<usize> = Vec::with_capacity(needs.inputs.held.len());
        for (holder, _) in &needs.inputs.held {
            let Some(&i) = self.index.get(holder) else {
                continue;
            };
            if seen_holders.contains(&i) {
                continue;
            }
            seen_holders.push(i);
            let n = &self.nodes[i];
            match self.why_not(n, needs) {
                Some(count) => *count(&mut filtered) += 1,
                None => choices.push(self.score(n, needs, total)),
            }
        }
        let len = self.nodes.len();
        let mut sampled = 0;
        let start = self.cursor;
        for step in 0..len {
            if sampled >= SAMPLE {
                break;
            }
            let i = (start + step) % len;
            if seen_holders.contains(&i) {
                continue;
            }
            let n = &self.nodes[i];
            match self.why_not(n, needs) {
                Some(count) => *count(&mut filtered) += 1,
                None => {
                    sampled += 1;
                    choices.push(self.score(n, needs, total));
                }
            }
            self.cursor = (i + 1) % len.max(1);
        }
        choices.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.node.0.cmp(&b.node.0))
        });
        choices.truncate(limit);
        Ranking { choices, filtered }
    }

    /// Record that `node` runs a job needing `needs` (what its runner admitted).
    pub fn reserve(&mut self, node: &NodeId, needs: &Needs) {
        if let Some(&i) = self.index.get(node) {
            let n = &mut self.nodes[i];
            n.cpu_used = n.cpu_used.saturating_add(needs.cpu);
            n.memory_used = n.memory_used.saturating_add(needs.memory);
        }
    }

    /// Record that a job needing `needs` left `node`.
    pub fn release(&mut self, node: &NodeId, needs: &Needs) {
        if let Some(&i) = self.index.get(node) {
            let n = &mut self.nodes[i];
            n.cpu_used = n.cpu_used.saturating_sub(needs.cpu);
            n.memory_used = n.memory_used.saturating_sub(needs.memory);
        }
    }
}

/// Nodes for tests and benchmarks: `count` nodes in `sites` sites, site `s` in region
/// `s % regions` (jurisdiction = region), each offering `cpu` milli-cores and `memory` bytes;
/// coordinates put sites 50 ms apart and nodes of a site 1 ms apart.
pub fn simulated(count: usize, sites: u32, regions: u32, cpu: u32, memory: u64) -> Vec<NodeView> {
    (0..count)
        .map(|i| {
            let site = (i as u32) % sites.max(1);
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut coord = Coordinate::default();
            coord.vec[0] = f64::from(site) * 0.05;
            coord.vec[1] = (i as f64 % 7.0) * 0.0002;
            coord.height = 0.0001;
            NodeView {
                id: NodeId(id),
                site,
                region: site % regions.max(1),
                jurisdiction: site % regions.max(1),
                compute: true,
                alive: true,
                quarantined: false,
                reputation: 1.0,
                price: Some(1_000),
                cpu,
                cpu_used: 0,
                memory,
                memory_used: 0,
                labels: BTreeMap::new(),
                coord,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn needs(held: Vec<(NodeId, u64)>) -> Needs {
        Needs {
            cpu: 500,
            memory: 64 << 20,
            inputs: InputBytes { held },
            ..Needs::default()
        }
    }

    #[test]
    fn a_job_goes_to_the_node_with_its_shards_then_to_their_site() {
        let nodes = simulated(12, 3, 3, 2000, 4 << 30);
        let holder = nodes[4].id; // site 1
        let mut s = Scheduler::new(nodes.clone());
        let r = s.rank(&needs(vec![(holder, 8 << 20)]), 3);
        assert_eq!(r.choices[0].node, holder);
        assert_eq!(r.choices[0].local_bytes, 8 << 20);
        // Without room there, a node of the same site wins over any other site's.
        let mut full = nodes.clone();
        full[4].cpu_used = 2000;
        let mut s = Scheduler::new(full);
        let r = s.rank(&needs(vec![(holder, 8 << 20)]), 3);
        assert_eq!(r.filtered.resources, 1);
        let best = s.node(&r.choices[0].node).unwrap();
        assert_eq!(best.site, 1);
        assert_eq!(r.choices[0].site_bytes, 8 << 20);
    }

    #[test]
    fn residency_roles_health_and_failures_filter_with_reasons() {
        let mut nodes = simulated(6, 3, 3, 2000, 4 << 30);
        nodes[0].compute = false;
        nodes[1].alive = false;
        let mut s = Scheduler::new(nodes.clone());
        let mut n = needs(vec![]);
        n.regions = vec![2];
        n.avoid = vec![nodes[5].id];
        let r = s.rank(&n, 10);
        // Region 2 is sites 2 (nodes 2, 5); 5 is avoided.
        assert_eq!(r.choices.len(), 1);
        assert_eq!(r.choices[0].node, nodes[2].id);
        assert_eq!(r.filtered.avoided, 1);
        assert_eq!(r.filtered.role + r.filtered.health, 2);
        n.regions = vec![9];
        let r = s.rank(&n, 10);
        assert!(r.choices.is_empty());
        assert!(
            r.filtered.to_string().contains("outside its residency"),
            "{}",
            r.filtered
        );
    }

    #[test]
    fn reservations_spread_jobs_and_free_up() {
        let mut s = Scheduler::new(simulated(4, 1, 1, 1000, 1 << 30));
        let n = needs(vec![]);
        let mut used = Vec::new();
        for _ in 0..8 {
            let c = s.rank(&n, 1).choices[0].node;
            s.reserve(&c, &n);
            used.push(c);
        }
        // 4 nodes × 2 jobs of 500 fill every node; a ninth does not fit.
        assert!(s.rank(&n, 1).choices.is_empty());
        for id in &used {
            assert_eq!(used.iter().filter(|u| *u == id).count(), 2);
        }
        s.release(&used[0], &n);
        assert_eq!(s.rank(&n, 1).choices[0].node, used[0]);
    }

    #[test]
    fn near_targets_pull_jobs_toward_them() {
        let nodes = simulated(9, 3, 1, 2000, 1 << 30);
        let mut s = Scheduler::new(nodes.clone());
        let mut n = needs(vec![]);
        n.near = Some(nodes[2].coord.clone()); // site 2
        let r = s.rank(&n, 1);
        assert_eq!(s.node(&r.choices[0].node).unwrap().site, 2);
    }

    #[test]
    fn a_distrusted_node_and_a_site_already_used_come_last() {
        let mut nodes = simulated(6, 3, 1, 2000, 1 << 30);
        // Equal otherwise: the node with the lower reputation loses.
        nodes[0].reputation = 0.4;
        let mut s = Scheduler::new(nodes.clone());
        let r = s.rank(&needs(vec![]), 6);
        assert_eq!(r.choices.last().unwrap().node, nodes[0].id);
        // A check run goes to a site the job did not run in yet.
        nodes[0].reputation = 1.0;
        let mut s = Scheduler::new(nodes.clone());
        let mut n = needs(vec![]);
        n.sites_used = vec![0, 1];
        n.avoid = vec![nodes[0].id];
        let r = s.rank(&n, 6);
        assert_eq!(s.node(&r.choices[0].node).unwrap().site, 2);
        assert!(r.choices.iter().all(|c| c.node != nodes[0].id));
    }

    #[test]
    fn a_node_priced_above_the_maximum_is_never_chosen_and_cheaper_wins() {
        let mut nodes = simulated(6, 3, 1, 2000, 1 << 30);
        nodes[1].price = Some(500);
        nodes[2].price = Some(90_000);
        nodes[3].price = None;
        let mut s = Scheduler::new(nodes.clone());
        let mut n = needs(vec![]);
        let r = s.rank(&n, 6);
        assert_eq!(
            r.choices[0].node, nodes[1].id,
            "the cheapest, all else equal"
        );
        n.max_price = Some(50_000);
        let r = s.rank(&n, 6);
        assert_eq!(r.choices.len(), 4);
        assert!(
            r.choices
                .iter()
                .all(|c| c.node != nodes[2].id && c.node != nodes[3].id)
        );
        assert_eq!(r.filtered.price, 2);
        assert!(r.filtered.to_string().contains("2 above its maximum price"));
        n.max_price = Some(100);
        assert!(s.rank(&n, 6).choices.is_empty());
    }

    proptest! {
        /// Whatever the fabric (regions, failures, load, where the data is), no choice is
        /// outside the job's residency, on a node that cannot run it, or where it failed.
        #[test]
        fn choices_never_break_residency_or_capacity(
            count in 1usize..80,
            sites in 1u32..8,
            regions in 1u32..4,
            allowed in proptest::collection::vec(0u32..4, 0..3),
            dead in proptest::collection::vec(any::<bool>(), 80),
            load in proptest::collection::vec(0u32..2500, 80),
            holders in proptest::collection::vec((0usize..80, 1u64..1 << 30), 0..6),
            avoid in proptest::collection::vec(0usize..80, 0..4),
        ) {
            let mut nodes = simulated(count, sites, regions, 2000, 1 << 30);
            for (i, n) in nodes.iter_mut().enumerate() {
                n.alive = !dead[i];
                n.cpu_used = load[i];
            }
            let mut s = Scheduler::new(nodes.clone());
            let mut job = needs(holders.iter().map(|(i, b)| (nodes[i % count].id, *b)).collect());
            job.regions = allowed.clone();
            job.avoid = avoid.iter().map(|i| nodes[i % count].id).collect();
            for _ in 0..3 {
                let r = s.rank(&job, 5);
                for c in &r.choices {
                    let n = s.node(&c.node).unwrap().clone();
                    prop_assert!(allowed.is_empty() || allowed.contains(&n.region));
                    prop_assert!(n.alive && n.compute);
                    prop_assert!(n.cpu - n.cpu_used.min(n.cpu) >= job.cpu);
                    prop_assert!(!job.avoid.contains(&c.node));
                }
                if let Some(c) = r.choices.first() {
                    s.reserve(&c.node.clone(), &job);
                }
            }
        }
    }
}
