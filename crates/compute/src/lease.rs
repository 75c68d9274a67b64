//! A job's life as the replicated table keeps it, and the only transitions allowed (pure).
//!
//! Every change is a conditional read-modify-write of the job's row, applied with these
//! functions: a change that does not apply to the row as read is refused, so two nodes racing
//! (two schedulers, a stale runner and a new one) cannot both win.
//!
//! - A runner **claims** a queued job for attempt `n` with a lease; it **renews** the lease
//!   while it runs (every [`RENEW_EVERY_MS`]), and stops the run if a renewal is refused or
//!   its lease would lapse — so once a lease has expired, its runner is no longer running.
//! - A lease that expired (the runner died, or is cut off) is **requeued** as attempt `n + 1`,
//!   avoiding that runner, with backoff; after the job's retries it fails for good.
//! - Only the current attempt's runner can **finish** the job, once: its result is recorded
//!   exactly once, and a result from a stale attempt is refused.
//!
//! In a connected fabric a job never has two live runs: a new attempt starts only after the
//! old lease expired, and a runner that cannot renew stops before its lease does. A network
//! partition can delay a job (its lease must expire first) but cannot record two results; a
//! runner cut off from every table replica stops within its lease.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;

/// How long a claim lasts without renewal.
pub const LEASE_MS: u64 = 5_000;
/// How often a runner renews (well inside the lease).
pub const RENEW_EVERY_MS: u64 = 1_000;
/// First retry delay; doubles per attempt, up to [`BACKOFF_MAX_MS`].
pub const BACKOFF_MS: u64 = 500;
/// Longest retry delay.
pub const BACKOFF_MAX_MS: u64 = 30_000;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// The attempt that ended.
    pub attempt: u32,
    /// The node that ran it.
    pub runner: NodeId,
    /// Exit code (when the module exited).
    pub exit_code: Option<i32>,
    /// Why it ended if not by exiting (a limit, a trap, a refusal).
    pub error: Option<String>,
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for a runner: attempt `attempt`, not before `not_before_ms`.
    Queued {
        /// The attempt to start.
        attempt: u32,
        /// Backoff.
        not_before_ms: u64,
    },
    /// Claimed by `runner` until `until_ms`.
    Running {
        /// The attempt.
        attempt: u32,
        /// The node running it.
        runner: NodeId,
        /// Lease end.
        until_ms: u64,
    },
    /// Finished (any exit code).
    Done(Ended),
    /// Gave up: out of retries, or a failure retrying cannot fix.
    Failed(Ended),
    /// Cancelled by its account.
    Cancelled,
}

/// A job's state and the history that shapes its next placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Life {
    /// Where it is.
    pub state: JobState,
    /// Retries allowed after the first attempt.
    pub retries: u32,
    /// Nodes an attempt failed or died on (placed elsewhere next).
    pub failed_on: Vec<NodeId>,
}

/// A transition that does not apply to the row as read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The job is not waiting (claimed, ended or cancelled).
    #[error("the job is not queued")]
    NotQueued,
    /// Its backoff has not passed.
    #[error("the job waits for its retry delay")]
    TooEarly,
    /// The caller does not hold the current claim.
    #[error("this runner does not hold the job's current claim")]
    NotClaimant,
    /// The lease has not expired.
    #[error("the job's lease has not expired")]
    LeaseLive,
    /// It already ended.
    #[error("the job already ended")]
    Ended,
}

fn backoff(attempt: u32) -> u64 {
    BACKOFF_MS
        .saturating_mul(1u64 << attempt.min(16))
        .min(BACKOFF_MAX_MS)
}

impl Life {
    /// A new job, queued for its first attempt.
    pub fn new(retries: u32) -> Life {
        Life {
            state: JobState::Queued {
                attempt: 0,
                not_before_ms: 0,
            },
            retries,
            failed_on: Vec::new(),
        }
    }

    /// Whether it ended (done, failed or cancelled).
    pub fn ended(&self) -> bool {
        matches!(
            self.state,
            JobState::Done(_) | JobState::Failed(_) | JobState::Cancelled
        )
    }

    /// `runner` claims the queued attempt.
    pub fn claim(&self, runner: NodeId, now_ms: u64) -> Result<Life, Refused> {
        match self.state {
            JobState::Queued {
                attempt,
                not_before_ms,
            } => {
                if now_ms < not_before_ms {
                    return Err(Refused::TooEarly);
                }
                Ok(Life {
                    state: JobState::Running {
                        attempt,
                        runner,
                        until_ms: now_ms + LEASE_MS,
                    },
                    ..self.clone()
                })
            }
            _ if self.ended() => Err(Refused::Ended),
            _ => Err(Refused::NotQueued),
        }
    }

    fn check_claim(&self, who: NodeId, which: u32) -> Result<(), Refused> {
        match self.state {
            JobState::Running {
                attempt, runner, ..
            } if attempt == which && runner == who => Ok(()),
            _ if self.ended() => Err(Refused::Ended),
            _ => Err(Refused::NotClaimant),
        }
    }

    /// The claimant extends its lease. Refused once the lease expired, even to the claimant:
    /// the job may be requeued from then on.
    pub fn renew(&self, runner: NodeId, attempt: u32, now_ms: u64) -> Result<Life, Refused> {
        self.check_claim(runner, attempt)?;
        match self.state {
            JobState::Running { until_ms, .. } if until_ms < now_ms => Err(Refused::NotClaimant),
            _ => Ok(Life {
                state: JobState::Running {
                    attempt,
                    runner,
                    until_ms: now_ms + LEASE_MS,
                },
                ..self.clone()
            }),
        }
    }

    /// The claimant records how its attempt ended. A run that exited (any code) is done; one
    /// that failed is retried elsewhere if `retryable` and retries remain, else the job fails.
    pub fn finish(&self, ended: Ended, retryable: bool, now_ms: u64) -> Result<Life, Refused> {
        self.check_claim(ended.runner, ended.attempt)?;
        if ended.error.is_none() {
            return Ok(Life {
                state: JobState::Done(ended),
                ..self.clone()
            });
        }
        let mut next = self.clone();
        next.failed_on.push(ended.runner);
        next.state = if retryable && self.retries_left() {
            JobState::Queued {
                attempt: ended.attempt + 1,
                not_before_ms: now_ms + backoff(ended.attempt),
            }
        } else {
            JobState::Failed(ended)
        };
        Ok(next)
    }

    /// Whether a failed or lost attempt may be retried: one retry per failure, whatever runs
    /// of a checked job ([`Life::checked`]) came before.
    fn retries_left(&self) -> bool {
        (self.failed_on.len() as u64) < u64::from(self.retries)
    }

    /// The claimant records a run that exited, of a job whose result is checked on several
    /// nodes: the job is queued again at once, and its coordinator decides from the runs'
    /// receipts whether it needs another run or a result stands ([`Life::settle`]).
    pub fn checked(&self, ended: &Ended, now_ms: u64) -> Result<Life, Refused> {
        self.check_claim(ended.runner, ended.attempt)?;
        if ended.error.is_some() {
            return Err(Refused::NotClaimant);
        }
        Ok(Life {
            state: JobState::Queued {
                attempt: ended.attempt + 1,
                not_before_ms: now_ms,
            },
            ..self.clone()
        })
    }

    /// The coordinator ends a checked job with the run whose result stood.
    pub fn settle(&self, ended: Ended) -> Result<Life, Refused> {
        match self.state {
            JobState::Queued { .. } => Ok(Life {
                state: JobState::Done(ended),
                ..self.clone()
            }),
            _ if self.ended() => Err(Refused::Ended),
            _ => Err(Refused::NotQueued),
        }
    }

    /// Requeue an attempt whose lease expired (its runner died or was cut off), avoiding that
    /// runner; out of retries, the job fails.
    pub fn expire(&self, now_ms: u64) -> Result<Life, Refused> {
        let JobState::Running {
            attempt,
            runner,
            until_ms,
        } = self.state
        else {
            return Err(if self.ended() {
                Refused::Ended
            } else {
                Refused::NotClaimant
            });
        };
        if now_ms <= until_ms {
            return Err(Refused::LeaseLive);
        }
        let mut next = self.clone();
        next.failed_on.push(runner);
        next.state = if self.retries_left() {
            JobState::Queued {
                attempt: attempt + 1,
                not_before_ms: now_ms + backoff(attempt),
            }
        } else {
            JobState::Failed(Ended {
                attempt,
                runner,
                exit_code: None,
                error: Some(format!(
                    "its runner stopped answering (attempt {} of {})",
                    attempt + 1,
                    self.retries + 1
                )),
            })
        };
        Ok(next)
    }

    /// Its coordinator gives up on a queued job: no node can run it (`why` says which filters
    /// left none) for longer than it waits, or its runs could not agree on a result.
    pub fn unplaceable(&self, coordinator: NodeId, why: String) -> Result<Life, Refused> {
        let JobState::Queued { attempt, .. } = self.state else {
            return Err(if self.ended() {
                Refused::Ended
            } else {
                Refused::NotQueued
            });
        };
        Ok(Life {
            state: JobState::Failed(Ended {
                attempt,
                runner: coordinator,
                exit_code: None,
                error: Some(why),
            }),
            ..self.clone()
        })
    }

    /// The account cancels it (a running attempt's runner stops at its next renewal).
    pub fn cancel(&self) -> Result<Life, Refused> {
        if self.ended() {
            return Err(Refused::Ended);
        }
        Ok(Life {
            state: JobState::Cancelled,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn ok(runner: NodeId, attempt: u32) -> Ended {
        Ended {
            attempt,
            runner,
            exit_code: Some(0),
            error: None,
        }
    }

    #[test]
    fn a_job_runs_renews_and_finishes_once() {
        let life = Life::new(2);
        let running = life.claim(node(1), 1_000).unwrap();
        assert_eq!(running.claim(node(2), 1_001), Err(Refused::NotQueued));
        let renewed = running.renew(node(1), 0, 4_000).unwrap();
        assert_eq!(renewed.expire(8_000), Err(Refused::LeaseLive));
        assert_eq!(renewed.renew(node(2), 0, 4_000), Err(Refused::NotClaimant));
        let done = renewed.finish(ok(node(1), 0), true, 5_000).unwrap();
        assert!(matches!(done.state, JobState::Done(_)));
        assert_eq!(
            done.finish(ok(node(1), 0), true, 5_001),
            Err(Refused::Ended)
        );
        assert_eq!(done.cancel(), Err(Refused::Ended));
    }

    #[test]
    fn an_expired_lease_is_requeued_elsewhere_with_backoff_then_fails() {
        let life = Life::new(1).claim(node(1), 0).unwrap();
        // The claimant cannot renew a lapsed lease, and its late result is refused.
        assert_eq!(
            life.renew(node(1), 0, LEASE_MS + 1),
            Err(Refused::NotClaimant)
        );
        let again = life.expire(LEASE_MS + 1).unwrap();
        assert_eq!(again.failed_on, [node(1)]);
        let JobState::Queued {
            attempt: 1,
            not_before_ms,
        } = again.state
        else {
            panic!("{again:?}")
        };
        assert!(not_before_ms > LEASE_MS + 1);
        assert_eq!(again.claim(node(2), LEASE_MS + 2), Err(Refused::TooEarly));
        let second = again.claim(node(2), not_before_ms).unwrap();
        assert_eq!(
            second.finish(ok(node(1), 0), true, not_before_ms),
            Err(Refused::NotClaimant)
        );
        let failed = second.expire(not_before_ms + LEASE_MS + 1).unwrap();
        assert!(
            matches!(&failed.state, JobState::Failed(e) if e.error.as_deref().unwrap().contains("stopped answering"))
        );
    }

    #[test]
    fn failures_retry_only_when_retrying_can_help() {
        let life = Life::new(3).claim(node(1), 0).unwrap();
        let trap = Ended {
            error: Some("out of fuel".into()),
            exit_code: None,
            ..ok(node(1), 0)
        };
        assert!(matches!(
            life.finish(trap.clone(), false, 1).unwrap().state,
            JobState::Failed(_)
        ));
        assert!(matches!(
            life.finish(trap, true, 1).unwrap().state,
            JobState::Queued { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_checked_job_queues_again_after_each_run_until_its_coordinator_settles_it() {
        let life = Life::new(1).claim(node(1), 0).unwrap();
        let first = ok(node(1), 0);
        let again = life.checked(&first, 10).unwrap();
        assert_eq!(
            again.state,
            JobState::Queued {
                attempt: 1,
                not_before_ms: 10
            }
        );
        // Only the claimant, once, and only a run that exited.
        assert_eq!(again.checked(&first, 11), Err(Refused::NotClaimant));
        assert_eq!(life.checked(&ok(node(2), 0), 10), Err(Refused::NotClaimant));
        // Check runs use no retries: a failure after them is still retried once.
        let second = again.claim(node(2), 20).unwrap();
        let lost = second.expire(20 + LEASE_MS + 1).unwrap();
        assert!(matches!(lost.state, JobState::Queued { attempt: 2, .. }));
        let done = lost.settle(first.clone()).unwrap();
        assert_eq!(done.state, JobState::Done(first.clone()));
        assert_eq!(done.settle(first), Err(Refused::Ended));
    }

    proptest! {
        /// Whatever order claims, renewals, finishes and expiries from several runners arrive
        /// in, a job ends at most once, only the current claimant's result is taken, and no
        /// two runners hold a live lease at the same time.
        #[test]
        fn results_are_recorded_once_and_leases_never_overlap(
            ops in proptest::collection::vec((0u8..5, 1u8..4, 0u32..4, 0u64..3_000), 1..60),
        ) {
            let mut life = Life::new(2);
            let mut now = 0u64;
            let mut ends = 0;
            for (op, runner, attempt, dt) in ops {
                now += dt;
                let before = life.clone();
                let next = match op {
                    0 => life.claim(node(runner), now),
                    1 => life.renew(node(runner), attempt, now),
                    2 => life.finish(ok(node(runner), attempt), true, now),
                    3 => life.expire(now),
                    _ => life.cancel(),
                };
                if let Ok(next) = next {
                    if next.ended() && !before.ended() {
                        ends += 1;
                    }
                    if let (JobState::Running { runner: a, until_ms, .. }, JobState::Running { runner: b, .. }) =
                        (&before.state, &next.state)
                    {
                        // A claim changes hands only through expiry (never while live).
                        prop_assert!(a == b || *until_ms < now);
                    }
                    if let JobState::Done(e) = &next.state
                        && !before.ended()
                    {
                        let JobState::Running { attempt, runner, .. } = before.state else {
                            panic!("done without a claim");
                        };
                        prop_assert_eq!((e.attempt, e.runner), (attempt, runner));
                    }
                    life = next;
                }
            }
            prop_assert!(ends <= 1);
        }
    }
}
