//! Checking a job's result on several nodes (`verify = "2-of-3"`, or a spot check that drew
//! it): the coordinator's side.
//!
//! Each run of a checked job is an ordinary attempt on a distinct node that writes its outputs
//! apart ([`crate::run::checks_prefix`]), signs its receipt (which commits to the result) and
//! queues the job again with the receipt in the row. While the job is queued the coordinator
//! reads the receipts — keeping only those that verify, are the runner's own and answer this
//! job's request, so a runner holding the job's capability cannot speak for another — and
//! decides with [`weft_compute::verify::decide`]:
//!
//! - **another run**: placed on a node that has not run it, in another site where there is one;
//! - **agreed**: the outputs of an agreeing run are read back and hashed, and kept only if they
//!   make exactly the agreed commitment (a runner cannot sign the right result and store wrong
//!   bytes); they are linked under the job's output prefix (no copy of their shards), every
//!   run's own outputs are deleted, and the job is done. Each node that signed another result
//!   has its receipt and the agreeing ones kept as a fault (`weft_ledger::fault`), which lowers
//!   its reputation and, repeated, quarantines it;
//! - **undecided**: no result can reach the quorum within the runs allowed: the job fails.

use std::pin::Pin;
use std::task::Poll;

use weft_compute::lease::Ended;
use weft_compute::schema::{Checked, Checks, JobRecord};
use weft_compute::verify::{Run, Verdict, decide};
use weft_core::{ContentHash, NodeId};
use weft_data::{Acting, ObjectAttrs};
use weft_ledger::{Fault, Receipt, Work};

use crate::definition::Definition;
use crate::run::{CHECKS_DIR, checks_prefix, request_of};
use crate::{JobKey, JobService};

/// What the coordinator does next with a queued checked job.
pub(crate) enum CheckStep {
    /// Start another run, on none of `avoid`, preferring sites not in `sites_used`.
    Run {
        /// Nodes that ran it.
        avoid: Vec<NodeId>,
        /// Their sites.
        sites_used: Vec<String>,
    },
    /// The row changed (settled or failed): read it again.
    Changed,
    /// Nothing could be done now (the table or the outputs did not answer): try again later.
    Later,
}

/// A run whose receipt checked.
pub(crate) struct Signed {
    attempt: u32,
    receipt: Receipt,
    pub(crate) result: ContentHash,
    exit: Option<i32>,
}

impl JobService {
    /// Decide the next step of a queued checked job from its runs' receipts.
    pub(crate) async fn step_checks(
        &self,
        b: &Acting,
        signer: &weft_meta::Signer,
        key: &JobKey,
        rec: &JobRecord,
        checks: &Checks,
    ) -> CheckStep {
        let request = request_of(key, rec);
        let mut runs: Vec<Run> = Vec::new();
        let mut signed: Vec<Signed> = Vec::new();
        for run in &checks.runs {
            let Some(s) = read_run(key, request, run) else {
                tracing::warn!(job = %key.reference(), runner = %run.runner, "a check run's receipt does not verify; it counts for nothing");
                continue;
            };
            if signed.iter().any(|o| o.receipt.body.node == run.runner) {
                continue;
            }
            runs.push(Run {
                runner: run.runner,
                site: run.site.clone(),
                result: s.result,
            });
            signed.push(s);
        }
        match decide(checks.quorum, &runs) {
            Verdict::Need {
                exclude,
                sites_used,
                ..
            } => CheckStep::Run {
                avoid: exclude,
                sites_used,
            },
            Verdict::Undecided => {
                let (k, n) = checks.quorum;
                let why = format!(
                    "its result could not be verified: no result was signed by {k} of the {n} runs allowed"
                );
                if let Ok(def) = Self::open_definition(b, key, rec) {
                    self.drop_check_outputs(b, key, &def).await;
                }
                let me = self.inner.me;
                let _ = self
                    .change(signer, key, |r| {
                        r.life = r.life.unplaceable(me, why.clone())?;
                        if let Some(c) = &mut r.checks {
                            c.verdict = Some(Checked::Undecided);
                        }
                        Ok(())
                    })
                    .await;
                CheckStep::Changed
            }
            Verdict::Agreed {
                result,
                agreeing,
                wrong,
            } => {
                let Ok(def) = Self::open_definition(b, key, rec) else {
                    return CheckStep::Later;
                };
                let mut kept = None;
                for s in signed
                    .iter()
                    .filter(|s| s.result == result && agreeing.contains(&s.receipt.body.node))
                {
                    match self.keep_outputs(b, key, &def, s).await {
                        Ok(true) => {
                            kept = Some(s);
                            break;
                        }
                        Ok(false) => {
                            tracing::warn!(job = %key.reference(), runner = %s.receipt.body.node, "a run's stored outputs do not make the result it signed")
                        }
                        Err(e) => {
                            tracing::warn!(job = %key.reference(), error = %e, "cannot keep a checked job's outputs yet");
                            return CheckStep::Later;
                        }
                    }
                }
                let Some(kept) = kept else {
                    let me = self.inner.me;
                    let _ = self
                        .change(signer, key, |r| {
                            r.life = r.life.unplaceable(
                                me,
                                "no agreeing run stored the outputs its result commits to".into(),
                            )?;
                            Ok(())
                        })
                        .await;
                    return CheckStep::Changed;
                };
                let ended = Ended {
                    attempt: kept.attempt,
                    runner: kept.receipt.body.node,
                    exit_code: kept.exit,
                    error: None,
                };
                let verdict = Checked::Agreed {
                    result,
                    attempt: kept.attempt,
                    agreeing: agreeing.clone(),
                    wrong: wrong.clone(),
                };
                if self
                    .change(signer, key, |r| {
                        r.life = r.life.settle(ended.clone())?;
                        if let Some(c) = &mut r.checks {
                            c.verdict = Some(verdict.clone());
                        }
                        Ok(())
                    })
                    .await
                    .is_err()
                {
                    return CheckStep::Later;
                }
                // Only once it is settled: a coordinator lost before this leaves its standby
                // the runs' outputs to keep again, and one lost after leaves only clutter.
                self.drop_check_outputs(b, key, &def).await;
                let right: Vec<Receipt> = signed
                    .iter()
                    .filter(|s| s.result == result)
                    .map(|s| s.receipt.clone())
                    .take(weft_ledger::fault::MAX_AGREEING)
                    .collect();
                for s in signed.iter().filter(|s| s.result != result) {
                    let fault = Fault {
                        wrong: s.receipt.clone(),
                        agreeing: right.clone(),
                    };
                    match self.inner.ledger.report_fault(&fault).await {
                        Ok(node) => {
                            tracing::warn!(job = %key.reference(), %node, "a runner signed a wrong result; its receipt is kept as proof")
                        }
                        Err(e) => {
                            tracing::debug!(job = %key.reference(), error = %e, "a wrong result was not kept as a fault")
                        }
                    }
                }
                CheckStep::Changed
            }
        }
    }

    /// Read the outputs run `s` stored, and if they make exactly the result it signed, link
    /// them under the job's output prefix; whether they did.
    async fn keep_outputs(
        &self,
        b: &Acting,
        key: &JobKey,
        def: &Definition,
        s: &Signed,
    ) -> Result<bool, weft_data::BucketError> {
        let (bucket, prefix) = (&def.job.output_bucket, &def.job.output_prefix);
        let staged = checks_prefix(prefix, &key.id, s.attempt);
        let objects = b.objects().list(bucket, &staged).await?;
        let mut outputs: Vec<(String, u64, [u8; 32])> = Vec::with_capacity(objects.len());
        for (k, _) in &objects {
            let mut hashing = Hashing::default();
            b.objects().get(bucket, k, &mut hashing).await?;
            let rel = k.strip_prefix(&staged).unwrap_or(k).to_string();
            outputs.push((rel, hashing.size, *hashing.hasher.finalize().as_bytes()));
        }
        let Some(exit) = s.exit else {
            return Ok(false);
        };
        let profile = crate::runner::deterministic_profile(&key.reference(), 0);
        if crate::runner::result_commitment(exit, &outputs, profile) != s.result {
            return Ok(false);
        }
        for (k, record) in &objects {
            let rel = k.strip_prefix(&staged).unwrap_or(k);
            let attrs: ObjectAttrs = record.attrs.clone();
            b.objects()
                .link(
                    (bucket, k),
                    record,
                    (bucket, &format!("{prefix}{rel}")),
                    attrs,
                )
                .await?;
        }
        Ok(true)
    }

    /// Delete the outputs every run of the job stored apart (best effort: what stays is only
    /// listed under the prefix's check folder).
    async fn drop_check_outputs(&self, b: &Acting, key: &JobKey, def: &Definition) {
        let (bucket, prefix) = (&def.job.output_bucket, &def.job.output_prefix);
        let all = format!("{prefix}{CHECKS_DIR}{}-", key.id);
        if let Ok(objects) = b.objects().list(bucket, &all).await {
            for (k, _) in objects {
                let _ = b.objects().delete(bucket, &k).await;
            }
        }
    }
}

/// A check run's receipt, if it verifies, is its runner's, and answers this job's request.
pub(crate) fn read_run(
    key: &JobKey,
    request: ContentHash,
    run: &weft_compute::schema::CheckRun,
) -> Option<Signed> {
    if run.receipt.len() > weft_ledger::receipt::MAX_RECEIPT {
        return None;
    }
    let receipt: Receipt = weft_core::wire::decode(&run.receipt).ok()?;
    if !receipt.verifies() || receipt.body.node != run.runner || receipt.body.request != request {
        return None;
    }
    match &receipt.body.work {
        Work::Job {
            job,
            attempt,
            result,
            exit,
            ..
        } if *job == key.reference() && *attempt == run.attempt => Some(Signed {
            attempt: *attempt,
            result: *result,
            exit: *exit,
            receipt,
        }),
        _ => None,
    }
}

/// Hashes and counts what is written to it.
#[derive(Default)]
struct Hashing {
    hasher: blake3::Hasher,
    size: u64,
}

impl tokio::io::AsyncWrite for Hashing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
