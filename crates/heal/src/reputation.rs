//! Audits and reputation. Owners challenge the holders of the objects they check for a random
//! range of a shard; the proof is checked against the shard's name (BLAKE3/bao) without the
//! auditor holding the shard. Each auditor keeps a tally per audited node in the metadata
//! table (`rep/<node>`, one row per auditor, so auditors never overwrite each other); a node's
//! audit score is the share of passed audits among the recent ones of all its auditors.
//!
//! A node's **reputation** is one score from three things the fabric checked itself: its audit
//! score, its availability (the share of its auditors' checks at which it was up), and its
//! verified results — each proven wrong result (a fault row whose receipts check, see
//! `weft_ledger::fault`) takes [`PER_FAULT`] off. The score is their product; the scheduler
//! and placement weigh it. A node is quarantined when its audits fall below the threshold, when
//! it is mostly away, or at [`FAULTS_TO_QUARANTINE`] proven wrong results: it gets no new
//! shards and no jobs, and its shards count as lost, so they are rebuilt elsewhere.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use weft_core::NodeId;

use crate::Healer;
use crate::schema::Tallies;

/// How often placement's view of the nodes' storage prices is read again.
pub const PRICES_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Recent audits that count per auditor.
const WINDOW: u32 = 32;
/// Audits needed before a node can be judged: one lost file on a young node is not enough.
pub const MIN_AUDITS: u32 = 8;
/// Share of passed audits below which a node is quarantined.
pub const THRESHOLD: f64 = 0.5;
/// Proven wrong results at which a node is quarantined (one may be a fluke of hardware).
pub const FAULTS_TO_QUARANTINE: u32 = 3;
/// What each proven wrong result takes off the reputation's verified-results factor.
pub const PER_FAULT: f64 = 1.0 / FAULTS_TO_QUARANTINE as f64;

/// One auditor's record of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Recent results, newest in the lowest bit (1 = passed).
    pub recent: u64,
    /// How many of `recent`'s bits are results (at most [`WINDOW`]).
    pub count: u32,
    /// Audits passed, all time.
    pub passed: u64,
    /// Audits failed, all time.
    pub failed: u64,
    /// Whether the node was up at this auditor's recent checks, newest in the lowest bit.
    pub up: u64,
    /// How many of `up`'s bits are samples (at most [`WINDOW`]).
    pub up_count: u32,
}

impl Tally {
    /// Add an availability sample.
    pub fn push_up(&mut self, up: bool) {
        self.up = (self.up << 1) | u64::from(up);
        self.up_count = (self.up_count + 1).min(WINDOW);
    }

    /// (up, samples) among the recent availability samples.
    pub fn availability(&self) -> (u32, u32) {
        ((self.up & mask(self.up_count)).count_ones(), self.up_count)
    }

    /// Add a result.
    pub fn push(&mut self, passed: bool) {
        self.recent = (self.recent << 1) | u64::from(passed);
        self.count = (self.count + 1).min(WINDOW);
        if passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// (passed, total) among the recent results.
    pub fn window(&self) -> (u32, u32) {
        ((self.recent & mask(self.count)).count_ones(), self.count)
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// What the fabric thinks of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reputation {
    /// Node id (hex).
    pub node: String,
    /// The one score, 0 to 1: audit score × availability × verified-results factor.
    pub score: f64,
    /// Share of recent audits passed (1.0 when never audited).
    #[serde(default = "one")]
    pub audit_score: f64,
    /// Proven wrong results (faults that check).
    #[serde(default)]
    pub wrong_results: u32,
    /// Recent audits counted.
    pub audits: u32,
    /// Audits passed, all time, over all auditors.
    pub passed: u64,
    /// Audits failed, all time.
    pub failed: u64,
    /// Share of its auditors' recent checks at which it was up (1.0 when never sampled).
    #[serde(default = "one")]
    pub availability: f64,
    /// Gets no new shards; its shards are rebuilt elsewhere.
    pub quarantined: bool,
}

fn one() -> f64 {
    1.0
}

/// Judge a node from its auditors' tallies (one each). Each auditor counts once, whatever it
/// wrote: its recent window is clamped to [`WINDOW`] results, and the score is the mean of
/// the auditors' shares — so one auditor (a member that forges its tally) cannot outweigh the
/// others, and quarantine needs most of a node's auditors to have seen it fail. `up_now`:
/// whether it is up at the moment; a node is judged on availability only then, so an outage
/// alone never skips the grace period.
pub fn judge(node: &NodeId, tallies: &[Tally], up_now: bool, wrong_results: u32) -> Reputation {
    let (mut total, mut passed, mut failed, mut samples) = (0, 0u64, 0u64, 0);
    let (mut scores, mut ups) = (Vec::new(), Vec::new());
    for t in tallies {
        let clamped = Tally {
            count: t.count.min(WINDOW),
            up_count: t.up_count.min(WINDOW),
            ..t.clone()
        };
        let (p, n) = clamped.window();
        if n > 0 {
            scores.push(f64::from(p) / f64::from(n));
            total += n;
        }
        let (u, s) = clamped.availability();
        if s > 0 {
            ups.push(f64::from(u) / f64::from(s));
            samples += s;
        }
        passed = passed.saturating_add(t.passed);
        failed = failed.saturating_add(t.failed);
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            1.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (audit_score, availability) = (mean(&scores), mean(&ups));
    let fails_audits = total >= MIN_AUDITS && audit_score < THRESHOLD;
    let mostly_away = up_now && samples >= MIN_AUDITS && availability < THRESHOLD;
    let results = (1.0 - f64::from(wrong_results) * PER_FAULT).max(0.0);
    Reputation {
        node: node.to_hex(),
        score: audit_score * availability * results,
        audit_score,
        wrong_results,
        audits: total,
        passed,
        failed,
        availability,
        quarantined: fails_audits || mostly_away || wrong_results >= FAULTS_TO_QUARANTINE,
    }
}

/// The tallies that count for `node` among its rows: readable ones by other nodes — a node
/// vouches only for audits it made, never for itself.
pub fn tallies_of(node: &NodeId, rows: Vec<(String, weft_meta::Row<Tally>)>) -> Vec<Tally> {
    let me = node.to_hex();
    rows.into_iter()
        .filter(|(auditor, _)| *auditor != me)
        .filter_map(|(_, r)| r.known())
        .collect()
}

impl Healer {
    /// Re-read the nodes' published storage prices, which placement holds a bucket's maximum
    /// price to (done with every reputation refresh).
    /// How many nodes' prices are known.
    pub async fn refresh_prices(&self) -> usize {
        match weft_ledger::credits::read_price_lists(self.registry.table()).await {
            Ok(lists) => {
                let n = lists.len();
                self.storage.set_prices(
                    lists
                        .into_iter()
                        .map(|(id, p)| (id, p.storage_gb_month))
                        .collect(),
                );
                n
            }
            Err(_) => 0,
        }
    }

    /// Keep the nodes' prices fresh for placement: every [`PRICES_EVERY`]; in this node's
    /// first minute, every 0.5 s while a live member's price is still unknown (nodes publish
    /// their lists as they start; one that never does is not polled for).
    pub(crate) async fn price_loop(self) {
        let started = std::time::Instant::now();
        loop {
            let known = self.refresh_prices().await;
            let members = self
                .storage
                .fabric()
                .members()
                .iter()
                .filter(|m| m.is_alive())
                .count();
            let wait = if known < members && started.elapsed() < std::time::Duration::from_secs(60)
            {
                std::time::Duration::from_millis(500)
            } else {
                PRICES_EVERY
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Re-read every known node's tallies, recompute reputations and apply quarantine.
    pub(crate) async fn refresh_reputation(&self) {
        let mut reps = HashMap::new();
        for m in self.storage.fabric().members() {
            let id = m.id;
            let Ok(rows) = self.registry.table().list::<Tallies>(&id, "").await else {
                // Keep what was known when the table cannot answer.
                if let Some(old) = self.reputation.lock().get(&id) {
                    reps.insert(id, old.clone());
                }
                continue;
            };
            let tallies = tallies_of(&id, rows);
            let up_now = m.state == weft_fabric::MemberState::Alive;
            let wrong = match weft_ledger::fault::faults_of(self.registry.table(), &id).await {
                Ok(f) => f.len() as u32,
                Err(_) => self
                    .reputation
                    .lock()
                    .get(&id)
                    .map_or(0, |r| r.wrong_results),
            };
            reps.insert(id, judge(&id, &tallies, up_now, wrong));
        }
        let quarantined: HashSet<NodeId> = reps
            .iter()
            .filter(|(_, r)| r.quarantined)
            .map(|(id, _)| *id)
            .collect();
        for id in &quarantined {
            if !self.storage.quarantined().contains(id) {
                tracing::warn!(node = %id, "node quarantined after failed audits, long absences or proven wrong results; its shards will be rebuilt elsewhere");
            }
        }
        self.storage.set_quarantined(quarantined);
        self.storage
            .set_reputation(reps.iter().map(|(id, r)| (*id, r.score)).collect());
        *self.reputation.lock() = reps;
    }

    /// Record this node's audit results, and whether each holder it depends on was up, in its
    /// tallies.
    pub(crate) async fn record_audits(
        &self,
        mut results: HashMap<NodeId, Vec<bool>>,
        holders: &HashSet<NodeId>,
        up: &HashSet<NodeId>,
    ) {
        let me = self.storage.id();
        for h in holders {
            if *h != me {
                results.entry(*h).or_default();
            }
        }
        let table = self.registry.table();
        for (node, outcomes) in results {
            // A tally this node cannot read (a newer format) is left alone.
            let mut tally: Tally = match table.get_value::<Tallies>(&node, &me).await {
                Ok(t) => t.unwrap_or_default(),
                Err(_) => continue,
            };
            for o in &outcomes {
                tally.push(*o);
            }
            if holders.contains(&node) {
                tally.push_up(up.contains(&node));
            }
            let failed = outcomes.iter().filter(|o| !**o).count();
            if failed > 0 {
                tracing::warn!(node = %node, failed, of = outcomes.len(), "storage audits failed");
            }
            let _ = table
                .put::<Tallies>(table.node_key(), &node, &me, Some(&tally))
                .await;
            let mut s = self.status.lock();
            s.audits_passed += outcomes.len() as u64 - failed as u64;
            s.audits_failed += failed as u64;
        }
    }

    /// Reputations as last computed.
    pub fn reputation(&self) -> Vec<Reputation> {
        let mut v: Vec<Reputation> = self.reputation.lock().values().cloned().collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_failing_most_recent_audits_is_quarantined() {
        let node = NodeId([1; 32]);
        assert!(!judge(&node, &[], true, 0).quarantined);
        let mut good = Tally::default();
        for _ in 0..40 {
            good.push(true);
        }
        assert_eq!(good.window(), (32, 32));
        let mut bad = Tally::default();
        for _ in 0..MIN_AUDITS - 1 {
            bad.push(false);
        }
        // Too few audits to judge.
        assert!(!judge(&node, &[bad.clone()], true, 0).quarantined);
        bad.push(false);
        let r = judge(&node, &[bad.clone()], true, 0);
        assert!(r.quarantined && r.audit_score == 0.0 && r.failed == u64::from(MIN_AUDITS));
        // Many auditors who saw it pass outweigh one who saw it fail.
        assert!(!judge(&node, &[bad.clone(), good.clone()], true, 0).quarantined);
        // Recent results count: old passes roll out of the window.
        for _ in 0..32 {
            good.push(false);
        }
        assert!(judge(&node, &[good], true, 0).quarantined);
    }

    /// [untrusted] 9: a member writes a tally of a node it never audited (a huge count of
    /// failures), and one about itself (all passed): the honest node is not quarantined, and the
    /// rogue's own record is what its auditors saw.
    #[test]
    fn forged_tallies_do_not_quarantine_an_honest_node() {
        let (victim, rogue, honest) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let mut seen = Tally::default();
        for _ in 0..MIN_AUDITS {
            seen.push(true);
            seen.push_up(true);
        }
        let forged = Tally {
            recent: 0,
            count: u32::MAX,
            passed: 0,
            failed: u64::MAX,
            up: 0,
            up_count: u32::MAX,
        };
        let r = judge(&victim, &[seen.clone(), forged.clone()], true, 0);
        assert!(!r.quarantined, "{r:?}");
        assert_eq!(r.audits, MIN_AUDITS + WINDOW);
        let row = |t: &Tally| weft_meta::Row {
            ts: weft_meta::Timestamp {
                wall: 1,
                logical: 0,
                node: rogue,
            },
            signer: rogue,
            value: Some(weft_meta::Value::Known(t.clone())),
        };
        // The rogue's record: its honest auditor saw it fail; its own tally says otherwise.
        let mut failing = Tally::default();
        for _ in 0..MIN_AUDITS {
            failing.push(false);
        }
        let mut perfect = Tally::default();
        for _ in 0..WINDOW {
            perfect.push(true);
        }
        let rows = vec![
            (honest.to_hex(), row(&failing)),
            (rogue.to_hex(), row(&perfect)),
        ];
        let counted = tallies_of(&rogue, rows);
        assert_eq!(counted, vec![failing]);
        assert!(judge(&rogue, &counted, true, 0).quarantined);
    }

    #[test]
    fn proven_wrong_results_lower_the_one_score_and_repeated_ones_quarantine() {
        let node = NodeId([3; 32]);
        let mut good = Tally::default();
        for _ in 0..WINDOW {
            good.push(true);
            good.push_up(true);
        }
        let clean = judge(&node, std::slice::from_ref(&good), true, 0);
        assert_eq!(clean.score, 1.0);
        let once = judge(&node, std::slice::from_ref(&good), true, 1);
        assert!(once.score < clean.score && !once.quarantined);
        let twice = judge(&node, std::slice::from_ref(&good), true, 2);
        assert!(twice.score < once.score && !twice.quarantined);
        let thrice = judge(&node, &[good], true, FAULTS_TO_QUARANTINE);
        assert!(thrice.quarantined && thrice.score == 0.0 && thrice.audit_score == 1.0);
    }

    #[test]
    fn a_node_mostly_away_is_quarantined_only_while_up() {
        let node = NodeId([2; 32]);
        let mut t = Tally::default();
        for i in 0..MIN_AUDITS * 2 {
            t.push(true);
            t.push_up(i % 4 == 0);
        }
        let r = judge(&node, std::slice::from_ref(&t), true, 0);
        assert!(r.quarantined && r.availability < THRESHOLD && r.audit_score == 1.0);
        // While it is down the grace period decides, not its record.
        assert!(!judge(&node, std::slice::from_ref(&t), false, 0).quarantined);
        // Staying up brings it back.
        for _ in 0..WINDOW {
            t.push_up(true);
        }
        assert!(!judge(&node, &[t], true, 0).quarantined);
    }
}
