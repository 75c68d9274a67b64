//! An auditor's checks, pure: a walk over every entry of the log that proves the entries make
//! exactly the tree a checkpoint names and that each is a receipt its node signed, in its
//! node's chain; and the rule that a job an account paid for is backed by receipts in the log.
//!
//! The walk is what `weft audit` runs on the entries it fetched (tlog-tiles bundles), trusting
//! the node it asked for nothing, and what a node runs on its own copy for `GET /v1/audit`.
//! Each failure names the entry (its index) or the job, so a tampered fabric is pointed at.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};
use weft_tlog::{Checkpoint, Frontier, leaf_hash};

use crate::receipt::{Chains, Receipt, Work};

/// Why the log does not pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// An entry is not a receipt, is not signed by its node, or breaks its node's chain.
    #[error("ledger entry #{index}: {why}")]
    Entry {
        /// Its index in the log.
        index: u64,
        /// What is wrong with it.
        why: String,
    },
    /// Entries came out of order or with a gap (the source skipped or repeated some).
    #[error("ledger entry #{got} came where #{expected} was due")]
    Order {
        /// The index expected next.
        expected: u64,
        /// The index given.
        got: u64,
    },
    /// The walked entries are fewer or more than the checkpoint counts.
    #[error("the ledger has {walked} entries where its checkpoint counts {size}")]
    Size {
        /// Entries walked.
        walked: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The entries do not hash to the checkpoint's root: some entry was changed.
    #[error(
        "the ledger's {size} entries do not hash to its cosigned checkpoint's root: an entry was changed"
    )]
    Root {
        /// The checkpoint's size.
        size: u64,
    },
}

/// What a walk added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkSummary {
    /// Entries walked (the checkpoint's size).
    pub entries: u64,
    /// Nodes that signed receipts.
    pub nodes: usize,
    /// Accounts receipts were issued for.
    pub accounts: usize,
    /// Credits charged in all, micro-credits.
    pub charged: u64,
}

/// A walk over the log from its first entry.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    frontier: Frontier,
    chains: Chains,
    /// Per account: charged, receipts.
    accounts: HashMap<NodeId, (u64, u64)>,
    /// Per node: earned, receipts.
    nodes: HashMap<NodeId, (u64, u64)>,
}

impl Walk {
    /// A walk at the log's start.
    pub fn new() -> Walk {
        Walk::default()
    }

    /// How many entries it has taken.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Take entry `index` (the next one): it must be a receipt that verifies and is the next
    /// of its node's chain.
    pub fn push(&mut self, index: u64, entry: &[u8]) -> Result<Receipt, WalkError> {
        if index != self.size() {
            return Err(WalkError::Order {
                expected: self.size(),
                got: index,
            });
        }
        self.frontier.push(leaf_hash(entry), |_, _, _| {});
        let bad = |why: String| WalkError::Entry { index, why };
        // Reading checks the signature.
        let receipt = Receipt::from_entry(entry).map_err(|e| bad(e.to_string()))?;
        self.chains
            .check(&receipt)
            .map_err(|e| bad(e.to_string()))?;
        self.chains.advance(&receipt);
        let charge = receipt.charge();
        let a = self.accounts.entry(receipt.body.account).or_default();
        a.0 = a.0.saturating_add(charge);
        a.1 += 1;
        let n = self.nodes.entry(receipt.body.node).or_default();
        n.0 = n.0.saturating_add(charge);
        n.1 += 1;
        Ok(receipt)
    }

    /// End the walk against `checkpoint`: exactly its size, hashing to its root.
    pub fn finish(&self, checkpoint: &Checkpoint) -> Result<WalkSummary, WalkError> {
        if self.size() != checkpoint.size {
            return Err(WalkError::Size {
                walked: self.size(),
                size: checkpoint.size,
            });
        }
        if self.frontier.root() != checkpoint.root {
            return Err(WalkError::Root {
                size: checkpoint.size,
            });
        }
        Ok(WalkSummary {
            entries: self.size(),
            nodes: self.nodes.len(),
            accounts: self.accounts.len(),
            charged: self.accounts.values().map(|a| a.0).sum(),
        })
    }

    /// What `account`'s receipts charged, micro-credits, and how many there are.
    pub fn charged(&self, account: &NodeId) -> (u64, u64) {
        self.accounts.get(account).copied().unwrap_or((0, 0))
    }
}

/// Walk the log up to `checkpoint` entry bundle by entry bundle, `fetch` giving the bytes of
/// a tlog-tiles bundle path (`None`: missing): the bundles must hold exactly the entries the
/// checkpoint counts, each taken by a [`Walk`]. What the node's own audit and `weft audit`
/// (over HTTP) both run.
pub fn walk_bundles(
    checkpoint: &Checkpoint,
    mut fetch: impl FnMut(&str) -> Result<Option<Vec<u8>>, String>,
) -> Result<WalkSummary, String> {
    use weft_tlog::tiles::{TILE_WIDTH, decode_bundle, entries_path};
    let mut walk = Walk::new();
    let mut bundle = 0u64;
    while walk.size() < checkpoint.size {
        let count = (checkpoint.size - bundle * TILE_WIDTH).min(TILE_WIDTH);
        let rel = entries_path(bundle, count);
        let bytes = fetch(&rel)?.ok_or_else(|| format!("entry bundle {rel} is missing"))?;
        let entries =
            decode_bundle(&bytes).ok_or_else(|| format!("{rel} is not an entry bundle"))?;
        if entries.len() as u64 != count {
            return Err(format!(
                "{rel} holds {} entries, not {count}",
                entries.len()
            ));
        }
        for (i, entry) in entries.iter().enumerate() {
            walk.push(bundle * TILE_WIDTH + i as u64, entry)
                .map_err(|e| e.to_string())?;
        }
        bundle += 1;
    }
    walk.finish(checkpoint).map_err(|e| e.to_string())
}

/// A job an account paid for, as its listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaidJob {
    /// `BUCKET/ID`.
    pub id: String,
    /// Unix ms it ended.
    pub ended_ms: u64,
    /// The attempt that produced its result, and the node that ran it.
    pub last: Option<(u32, NodeId)>,
    /// A checked job's agreed result and how many runs had to agree on it.
    pub agreed: Option<(ContentHash, usize)>,
}

/// How a paid job stands against the receipts in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobProof {
    /// Backed: this many receipts in the log for it.
    Proven(usize),
    /// Ended too recently for its receipts to be in a cosigned checkpoint yet.
    Pending,
    /// Not backed, and why.
    Missing(String),
}

/// How long after a job ends its receipts may still be on their way into a cosigned
/// checkpoint (the node hands receipts over every 200 ms; the sequencer batches and gathers
/// cosignatures within a second or two; a sequencer hand-over takes longer).
pub const RECEIPT_GRACE_MS: u64 = 60_000;

/// Whether `job` (ended) is backed by `receipts` (the account's receipts in the log, each
/// already checked: signed and included): an unchecked job by its last run's receipt, from the
/// node that ran it; a checked job by as many receipts of the agreed result, from distinct
/// nodes, as its quorum asks. `now_ms` decides whether a missing receipt may still come.
pub fn prove_job(job: &PaidJob, receipts: &[Receipt], now_ms: u64) -> JobProof {
    let of_job: Vec<(&Receipt, u32, &ContentHash)> = receipts
        .iter()
        .filter_map(|r| match &r.body.work {
            Work::Job {
                job: id,
                attempt,
                result,
                ..
            } if *id == job.id => Some((r, *attempt, result)),
            _ => None,
        })
        .collect();
    let proof = match (&job.agreed, &job.last) {
        (Some((result, quorum)), _) => {
            let mut nodes: Vec<NodeId> = of_job
                .iter()
                .filter(|(_, _, r)| *r == result)
                .map(|(r, _, _)| r.body.node)
                .collect();
            nodes.sort();
            nodes.dedup();
            if nodes.len() >= *quorum {
                JobProof::Proven(of_job.len())
            } else {
                JobProof::Missing(format!(
                    "its result {} stands on {} receipt(s) of distinct nodes in the ledger where its quorum needs {quorum}",
                    &result.to_hex()[..16],
                    nodes.len()
                ))
            }
        }
        (None, Some((attempt, runner))) => {
            if of_job
                .iter()
                .any(|(r, a, _)| a == attempt && r.body.node == *runner)
            {
                JobProof::Proven(of_job.len())
            } else {
                JobProof::Missing(format!(
                    "no receipt of its attempt {attempt} signed by node {}, which ran it, is in the ledger",
                    runner.short()
                ))
            }
        }
        (None, None) => JobProof::Missing("it names no run that produced its result".into()),
    };
    match proof {
        JobProof::Missing(_) if now_ms.saturating_sub(job.ended_ms) < RECEIPT_GRACE_MS => {
            JobProof::Pending
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::ReceiptBody;
    use weft_core::SecretKey;
    use weft_tlog::root_of;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    fn receipt(node: &SecretKey, seq: u64, prev: ContentHash, job: &str, result: u8) -> Receipt {
        Receipt::sign_priced(
            node,
            ReceiptBody {
                format: crate::receipt::RECEIPT_FORMAT,
                node: node.public(),
                seq,
                prev,
                at_ms: 1,
                account: key(9).public(),
                request: ContentHash([7; 32]),
                work: Work::Job {
                    job: job.into(),
                    attempt: seq as u32,
                    module: ContentHash([1; 32]),
                    result: ContentHash([result; 32]),
                    fuel: 2_000_000_000,
                    bytes_in: 0,
                    bytes_out: 0,
                    wall_ms: 5,
                    exit: Some(0),
                },
            },
            1_000,
        )
    }

    /// Two nodes' chains of three receipts each, interleaved.
    fn log() -> Vec<Vec<u8>> {
        let (a, b) = (key(1), key(2));
        let mut out = Vec::new();
        let (mut pa, mut pb) = (ContentHash([0; 32]), ContentHash([0; 32]));
        for seq in 0..3 {
            let r = receipt(&a, seq, pa, "b/1", 5);
            pa = r.hash();
            out.push(r.to_entry());
            let r = receipt(&b, seq, pb, "b/2", 5);
            pb = r.hash();
            out.push(r.to_entry());
        }
        out
    }

    fn checkpoint(entries: &[Vec<u8>]) -> Checkpoint {
        let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(e)).collect();
        Checkpoint {
            origin: "test".into(),
            size: entries.len() as u64,
            root: root_of(&leaves),
            extensions: Vec::new(),
        }
    }

    fn walk(entries: &[Vec<u8>], cp: &Checkpoint) -> Result<WalkSummary, WalkError> {
        let mut w = Walk::new();
        for (i, e) in entries.iter().enumerate() {
            w.push(i as u64, e)?;
        }
        w.finish(cp)
    }

    #[test]
    fn an_honest_log_passes_and_adds_up() {
        let entries = log();
        let summary = walk(&entries, &checkpoint(&entries)).expect("passes");
        assert_eq!(summary.entries, 6);
        assert_eq!(summary.nodes, 2);
        assert_eq!(summary.accounts, 1);
        // 6 receipts of 2·10⁹ fuel at 1,000 µcr per 10⁹.
        assert_eq!(summary.charged, 12_000);
    }

    #[test]
    fn a_changed_entry_is_named_or_breaks_the_root() {
        let entries = log();
        let cp = checkpoint(&entries);
        // A byte of a signed body changed: the signature no longer holds.
        let mut forged = entries.clone();
        let last = forged[3].len() - 70;
        forged[3][last] ^= 1;
        match walk(&forged, &cp) {
            Err(WalkError::Entry { index: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
        // A validly signed receipt put in another's place: the root differs.
        let mut swapped = entries.clone();
        let first_b = Receipt::from_entry(&entries[1]).expect("receipt");
        let other = receipt(&key(2), 0, first_b.body.prev, "b/2", 6);
        swapped[1] = other.to_entry();
        let mut w = Walk::new();
        for (i, e) in swapped.iter().enumerate() {
            match w.push(i as u64, e) {
                Ok(_) => {}
                // The next receipt of node 2 no longer chains to it.
                Err(WalkError::Entry { index: 3, why }) => {
                    assert!(why.contains("does not chain"), "{why}");
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("a swapped receipt passed the walk");
    }

    #[test]
    fn a_changed_last_entry_fails_on_the_root_and_a_short_log_on_its_size() {
        let entries = log();
        let cp = checkpoint(&entries);
        let mut changed = entries.clone();
        let head = Receipt::from_entry(&entries[5]).expect("receipt");
        changed[5] = receipt(&key(2), 2, head.body.prev, "b/2", 6).to_entry();
        assert_eq!(walk(&changed, &cp), Err(WalkError::Root { size: 6 }));
        assert_eq!(
            walk(&entries[..5], &cp),
            Err(WalkError::Size { walked: 5, size: 6 })
        );
        let mut w = Walk::new();
        w.push(0, &entries[0]).expect("first");
        assert_eq!(
            w.push(2, &entries[2]),
            Err(WalkError::Order {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn jobs_are_backed_by_their_runs_receipts() {
        let (a, b, c) = (key(1), key(2), key(3));
        let zero = ContentHash([0; 32]);
        let ra = receipt(&a, 0, zero, "b/1", 5);
        let rb = receipt(&b, 0, zero, "b/1", 5);
        let rc = receipt(&c, 0, zero, "b/1", 6);
        let late = 10 * RECEIPT_GRACE_MS;
        let plain = PaidJob {
            id: "b/1".into(),
            ended_ms: 1,
            last: Some((0, a.public())),
            agreed: None,
        };
        assert_eq!(
            prove_job(&plain, std::slice::from_ref(&ra), late),
            JobProof::Proven(1)
        );
        // Another node's receipt does not back the run a node did.
        assert!(matches!(
            prove_job(&plain, std::slice::from_ref(&rb), late),
            JobProof::Missing(_)
        ));
        // Just ended: its receipt may still come.
        assert_eq!(prove_job(&plain, &[], 2), JobProof::Pending);
        let checked = PaidJob {
            agreed: Some((ContentHash([5; 32]), 2)),
            last: None,
            ..plain.clone()
        };
        assert_eq!(
            prove_job(&checked, &[ra.clone(), rb.clone(), rc.clone()], late),
            JobProof::Proven(3)
        );
        // The dissenting receipt does not count toward the quorum, nor one node twice.
        assert!(matches!(
            prove_job(&checked, &[ra.clone(), ra.clone(), rc], late),
            JobProof::Missing(_)
        ));
        // Another job's receipts back nothing.
        let other = PaidJob {
            id: "b/2".into(),
            ..plain
        };
        assert!(matches!(
            prove_job(&other, &[ra], late),
            JobProof::Missing(_)
        ));
    }
}
