//! Verified results: a job's verification policy, and the decision — from the result
//! commitments the runs signed — whether more runs are needed, which result stands and which
//! runners were wrong. Pure and deterministic: the coordinator feeds it the runs' receipts and
//! acts on the verdict.
//!
//! A run's result commitment (exit code, every output's key, size and hash, the profile's
//! name) is in its runner's signed receipt, so a runner on the losing side has signed the
//! evidence of its wrong result itself.

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId};

/// How a job's result is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// Run once; the runner's word.
    #[default]
    None,
    /// With probability `per_mille`/1000, decided by the job's id (so every coordinator makes
    /// the same choice), checked as 2-of-3; otherwise run once.
    SpotCheck {
        /// Chance of a check, per thousand.
        per_mille: u16,
    },
    /// Run on at least `k` distinct nodes and at most `n`; a result stands once `k` runs agree
    /// (Golem's 2+1 is `k = 2, n = 3`: two runs, a third only if they differ).
    Quorum {
        /// Runs that must agree.
        k: u8,
        /// Runs allowed.
        n: u8,
    },
}

/// Why a policy is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// `k` and `n` out of range.
    #[error(
        "a k-of-n check needs 1 <= k <= n <= 9 and more than half of n agreeing (k > n/2); got {k}-of-{n}"
    )]
    Quorum {
        /// Runs that must agree.
        k: u8,
        /// Runs allowed.
        n: u8,
    },
    /// A chance above 1.
    #[error("a spot-check chance is per thousand, at most 1000; got {0}")]
    Chance(u16),
}

impl Policy {
    /// Check the policy's numbers: `k` must be a majority of `n`, so two different results can
    /// never both stand.
    pub fn validate(self) -> Result<Policy, PolicyError> {
        match self {
            Policy::Quorum { k, n }
                if k == 0 || k > n || n > 9 || u16::from(k) * 2 <= u16::from(n) =>
            {
                Err(PolicyError::Quorum { k, n })
            }
            Policy::SpotCheck { per_mille } if per_mille > 1000 => {
                Err(PolicyError::Chance(per_mille))
            }
            p => Ok(p),
        }
    }

    /// The quorum the job `reference` is checked with (`None`: run once).
    pub fn quorum_for(self, reference: &str) -> Option<(u8, u8)> {
        match self {
            Policy::None => None,
            Policy::Quorum { k, n } => Some((k, n)),
            Policy::SpotCheck { per_mille } => {
                let mut h = blake3::Hasher::new_derive_key("weft spot check v1");
                h.update(reference.as_bytes());
                let hash = h.finalize();
                let draw = u16::from_le_bytes([hash.as_bytes()[0], hash.as_bytes()[1]]) % 1000;
                (draw < per_mille).then_some((2, 3))
            }
        }
    }
}

/// One finished run of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Who ran it.
    pub runner: NodeId,
    /// Its site.
    pub site: String,
    /// The result commitment its receipt signed.
    pub result: ContentHash,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start `more` runs at once, on nodes none of `exclude` (a node runs a job once; the
    /// scheduler prefers sites in `sites_used` last).
    Need {
        /// Runs to start.
        more: u8,
        /// Nodes that ran it already.
        exclude: Vec<NodeId>,
        /// Sites that ran it already.
        sites_used: Vec<String>,
    },
    /// A result stands: `k` runs agree on it. Those that signed another result were wrong.
    Agreed {
        /// The result.
        result: ContentHash,
        /// Who agreed.
        agreeing: Vec<NodeId>,
        /// Who signed another result (their receipts are the evidence).
        wrong: Vec<NodeId>,
    },
    /// Every run allowed was made and no result has `k`: the job fails as unverifiable.
    Undecided,
}

/// Decide, from the runs so far (each on a distinct node; a second run by one node is
/// ignored), what the quorum `(k, n)` calls for.
pub fn decide((k, n): (u8, u8), runs: &[Run]) -> Verdict {
    let mut seen: Vec<&Run> = Vec::new();
    for r in runs {
        if !seen.iter().any(|s| s.runner == r.runner) {
            seen.push(r);
        }
    }
    // Results by how many runs signed them; ties by the result's bytes, so every coordinator
    // decides the same.
    let mut counts: Vec<(ContentHash, usize)> = Vec::new();
    for r in &seen {
        match counts.iter_mut().find(|(h, _)| *h == r.result) {
            Some((_, c)) => *c += 1,
            None => counts.push((r.result, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.0.cmp(&b.0.0)));
    let best = counts.first().map_or(0, |c| c.1);
    if let Some(&(result, count)) = counts.first()
        && count >= usize::from(k)
    {
        return Verdict::Agreed {
            result,
            agreeing: seen
                .iter()
                .filter(|r| r.result == result)
                .map(|r| r.runner)
                .collect(),
            wrong: seen
                .iter()
                .filter(|r| r.result != result)
                .map(|r| r.runner)
                .collect(),
        };
    }
    let made = seen.len();
    let left = usize::from(n).saturating_sub(made);
    let short = usize::from(k) - best;
    if short > left {
        return Verdict::Undecided;
    }
    let mut sites: Vec<String> = seen.iter().map(|r| r.site.clone()).collect();
    sites.sort();
    sites.dedup();
    Verdict::Need {
        more: short as u8,
        exclude: seen.iter().map(|r| r.runner).collect(),
        sites_used: sites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(node: u8, result: u8) -> Run {
        Run {
            runner: NodeId([node; 32]),
            site: format!("site-{}", node % 3),
            result: ContentHash([result; 32]),
        }
    }

    #[test]
    fn two_plus_one_runs_twice_and_a_third_time_only_when_they_differ() {
        let q = (2, 3);
        assert_eq!(
            decide(q, &[]),
            Verdict::Need {
                more: 2,
                exclude: vec![],
                sites_used: vec![]
            }
        );
        let agreed = decide(q, &[run(1, 7), run(2, 7)]);
        assert!(
            matches!(agreed, Verdict::Agreed { ref wrong, .. } if wrong.is_empty()),
            "{agreed:?}"
        );
        // They differ: one more, elsewhere.
        let need = decide(q, &[run(1, 7), run(2, 9)]);
        assert_eq!(
            need,
            Verdict::Need {
                more: 1,
                exclude: vec![NodeId([1; 32]), NodeId([2; 32])],
                sites_used: vec!["site-1".into(), "site-2".into()],
            }
        );
        // The third sides with one: the other was wrong, by its own signed result.
        match decide(q, &[run(1, 7), run(2, 9), run(3, 7)]) {
            Verdict::Agreed {
                result,
                agreeing,
                wrong,
            } => {
                assert_eq!(result, ContentHash([7; 32]));
                assert_eq!(agreeing, vec![NodeId([1; 32]), NodeId([3; 32])]);
                assert_eq!(wrong, vec![NodeId([2; 32])]);
            }
            v => panic!("{v:?}"),
        }
        // All three differ: nothing stands.
        assert_eq!(
            decide(q, &[run(1, 7), run(2, 9), run(3, 8)]),
            Verdict::Undecided
        );
        // A node's second run counts once.
        assert!(matches!(
            decide(q, &[run(1, 7), run(1, 7)]),
            Verdict::Need { more: 1, .. }
        ));
    }

    #[test]
    fn policies_need_a_majority_and_spot_checks_are_the_same_everywhere() {
        assert!(Policy::Quorum { k: 2, n: 3 }.validate().is_ok());
        for (k, n) in [(0, 1), (1, 2), (2, 4), (3, 2), (5, 10)] {
            assert!(Policy::Quorum { k, n }.validate().is_err(), "{k}-of-{n}");
        }
        assert!(Policy::SpotCheck { per_mille: 1001 }.validate().is_err());
        let p = Policy::SpotCheck { per_mille: 100 };
        let checked = (0..10_000)
            .filter(|i| p.quorum_for(&format!("logs/{i:016x}")).is_some())
            .count();
        assert!((800..1200).contains(&checked), "{checked}");
        assert_eq!(p.quorum_for("logs/01"), p.quorum_for("logs/01"));
        assert_eq!(Policy::None.quorum_for("x"), None);
        assert_eq!(
            Policy::SpotCheck { per_mille: 1000 }.quorum_for("x"),
            Some((2, 3))
        );
    }

    proptest! {
        #[test]
        fn no_two_results_ever_stand_and_no_more_than_n_runs_are_asked_for(
            k in 1u8..6, extra in 0u8..4, results in proptest::collection::vec(0u8..3, 0..9)
        ) {
            let n = (k + extra).min(9);
            prop_assume!(u16::from(k) * 2 > u16::from(n));
            let runs: Vec<Run> = results.iter().enumerate().map(|(i, r)| run(i as u8, *r)).collect();
            // Feed the runs one at a time, as they finish, while the verdict asks for more.
            let mut made = Vec::new();
            let mut verdict = decide((k, n), &made);
            for r in &runs {
                match verdict {
                    Verdict::Need { .. } => {
                        made.push(r.clone());
                        verdict = decide((k, n), &made);
                    }
                    _ => break,
                }
            }
            prop_assert!(made.len() <= usize::from(n));
            match &verdict {
                Verdict::Agreed { result, agreeing, wrong } => {
                    prop_assert!(agreeing.len() >= usize::from(k));
                    prop_assert_eq!(agreeing.len() + wrong.len(), made.len());
                    let signed = made.iter().filter(|r| r.result == *result).count();
                    prop_assert_eq!(signed, agreeing.len());
                    // k is a majority of n: no other result can reach k.
                    prop_assert!(made.len() - signed < usize::from(k));
                }
                Verdict::Need { more, .. } => {
                    prop_assert!(made.len() + usize::from(*more) <= usize::from(n));
                    prop_assert!(*more >= 1);
                }
                Verdict::Undecided => prop_assert!(made.len() <= usize::from(n)),
            }
        }
    }
}
