//! Running an attempt: reserving room for an offer on this node's own resources (an offer
//! carries no capability), then, started with the job's capability, claiming the job's lease, running it ([`crate::runner`]) while renewing the lease every second, and
//! recording how it ended — once, as the attempt's claimant.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weft_compute::lease::{Ended, JobState, LEASE_MS, RENEW_EVERY_MS, Refused};
use weft_compute::runtime::{MAX_CONCURRENT, RunError};
use weft_compute::schema::{CheckRun, JobRecord, Jobs, Placement, RunFigures};
use weft_data::{Acting, BucketError};

use crate::definition::Definition;
use crate::runner::JobReport;
use crate::{JobError, JobKey, JobService, RunnerError, now_ms};

/// Sets a run's cancel flag when dropped.
pub(crate) struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An attempt this node claimed: who it runs for, and what.
pub(crate) struct Attempt {
    acting: Acting,
    signer: weft_meta::Signer,
    key: JobKey,
    attempt: u32,
    def: Definition,
    /// Its result is checked on several nodes: outputs go to [`checks_prefix`], the result is
    /// recorded as a check run.
    checked: bool,
    cancel: Arc<AtomicBool>,
    workdir: PathBuf,
    started_ms: u64,
}

/// Where run `attempt` of the checked job `id` writes its outputs, under the job's output
/// prefix: apart from every other run, until its coordinator keeps the outputs of a run whose
/// result stood.
pub fn checks_prefix(prefix: &str, id: &str, attempt: u32) -> String {
    format!("{prefix}{CHECKS_DIR}{id}-{attempt}/")
}

/// The folder, under a job's output prefix, of its check runs' outputs.
pub const CHECKS_DIR: &str = ".weft-checks/";

/// How long room reserved for an offered attempt waits for its start.
pub(crate) const HOLD: Duration = Duration::from_secs(10);
/// Most reservations one member may hold on a runner at once: offers carry no capability, so
/// without a limit any member could keep every runner's room reserved.
pub(crate) const RESERVATIONS_PER_PEER: usize = 4;

/// A job running on this node (or room reserved for one, until it starts).
pub(crate) struct Local {
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) workdir: PathBuf,
    cpu: u32,
    memory: u64,
    attempt: u32,
    started: bool,
    /// The member that reserved it.
    by: weft_core::NodeId,
}

impl JobService {
    /// Reserve room for attempt `attempt` of a job needing `cpu` milli-cores and `memory`
    /// bytes, for [`HOLD`] (until [`JobService::admit`] starts it), or say why not.
    pub(crate) fn reserve(
        &self,
        by: weft_core::NodeId,
        key: &JobKey,
        attempt: u32,
        cpu: u32,
        memory: u64,
    ) -> Result<(), String> {
        key.check().map_err(|e| e.to_string())?;
        self.runtime()?;
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut running = self.inner.running.lock();
            if running.contains_key(key) {
                return Err("already running here".into());
            }
            let held = running
                .values()
                .filter(|l| !l.started && l.by == by)
                .count();
            if held >= RESERVATIONS_PER_PEER {
                return Err(format!(
                    "{held} reservations of that member are waiting to start here already"
                ));
            }
            let cpu_used: u32 = running.values().map(|l| l.cpu).sum();
            let mem_used: u64 = running.values().map(|l| l.memory).sum();
            if running.len() as u32 >= MAX_CONCURRENT
                || cpu_used.saturating_add(cpu) > self.inner.cpu_milli
                || mem_used.saturating_add(memory) > self.inner.memory
            {
                return Err(format!(
                    "busy: {} jobs, {cpu_used} of {} milli-cores and {mem_used} of {} bytes reserved",
                    running.len(),
                    self.inner.cpu_milli,
                    self.inner.memory
                ));
            }
            running.insert(
                key.clone(),
                Local {
                    cancel: cancel.clone(),
                    workdir: key.workdir(&self.inner.dir, attempt),
                    cpu,
                    memory,
                    attempt,
                    started: false,
                    by,
                },
            );
        }
        self.publish_load();
        // Room no one starts is given back.
        let (svc, key) = (self.clone(), key.clone());
        self.inner.tasks.spawn(async move {
            tokio::time::sleep(HOLD).await;
            if svc.unreserve(&key, &cancel, false) {
                tracing::debug!(job = %key.reference(), "room reserved for a job was not used");
            }
        });
        Ok(())
    }

    /// Give back the room reserved as `cancel` for `key` (only if not started, unless
    /// `started`); whether it was there.
    fn unreserve(&self, key: &JobKey, cancel: &Arc<AtomicBool>, started: bool) -> bool {
        let mut running = self.inner.running.lock();
        let ours = running
            .get(key)
            .is_some_and(|l| Arc::ptr_eq(&l.cancel, cancel) && (started || !l.started));
        if ours {
            running.remove(key);
        }
        drop(running);
        if ours {
            self.publish_load();
        }
        ours
    }

    /// Start attempt `attempt` of a job in the room reserved for it, with the job's
    /// capability (`session`): claim its lease, or say why not; then run it in the background.
    pub(crate) async fn admit(
        &self,
        key: &JobKey,
        attempt: u32,
        session: &str,
        mut placement: Placement,
    ) -> Result<(), String> {
        key.check().map_err(|e| e.to_string())?;
        let (cancel, workdir, cpu, memory) = {
            let mut running = self.inner.running.lock();
            match running.get_mut(key) {
                Some(l) if !l.started && l.attempt == attempt => {
                    l.started = true;
                    (l.cancel.clone(), l.workdir.clone(), l.cpu, l.memory)
                }
                Some(_) => return Err("already running here".into()),
                None => {
                    return Err("no room was reserved for it here (or it was given back)".into());
                }
            }
        };
        match self.open_offer(key, session, cpu, memory).await {
            Ok(opened) => {
                placement.runner = self.inner.me;
                self.claim(key, attempt, opened, cancel, workdir, placement)
                    .await
            }
            Err(why) => {
                self.unreserve(key, &cancel, true);
                Err(why)
            }
        }
    }

    /// The job a started attempt runs, opened with its capability, if it fits the room
    /// reserved for it.
    async fn open_offer(
        &self,
        key: &JobKey,
        session: &str,
        cpu: u32,
        memory: u64,
    ) -> Result<(Acting, weft_meta::Signer, Definition, bool), String> {
        let b = self.acting(session).map_err(|e| e.to_string())?;
        let signer = b.signer().map_err(|e| e.to_string())?.clone();
        let rec = self
            .inner
            .table
            .get_value::<Jobs>(&key.part(), &key.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such job")?;
        let def = Self::open_definition(&b, key, &rec).map_err(|e| e.to_string())?;
        if def.job.cpu_milli > cpu || def.job.limits.memory > memory {
            return Err(format!(
                "it needs {} milli-cores and {} bytes, more than the {cpu} and {memory} offered",
                def.job.cpu_milli, def.job.limits.memory
            ));
        }
        Ok((b, signer, def, rec.checks.is_some()))
    }

    /// Claim the job's lease for the attempt started here, and run it in the background.
    async fn claim(
        &self,
        key: &JobKey,
        attempt: u32,
        (b, signer, def, checked): (Acting, weft_meta::Signer, Definition, bool),
        cancel: Arc<AtomicBool>,
        workdir: PathBuf,
        placement: Placement,
    ) -> Result<(), String> {
        let me = self.inner.me;
        let now = now_ms();
        let claimed = self
            .change(&signer, key, |r| {
                match r.life.state {
                    JobState::Queued { attempt: a, .. } if a != attempt => {
                        return Err(Refused::NotQueued);
                    }
                    _ => {}
                }
                r.life = r.life.claim(me, now)?;
                r.placement = Some(placement.clone());
                r.started_ms = Some(now);
                Ok(())
            })
            .await;
        if let Err(e) = claimed {
            self.unreserve(key, &cancel, true);
            return Err(e.to_string());
        }
        let svc = self.clone();
        let run = Attempt {
            acting: b,
            signer,
            key: key.clone(),
            attempt,
            def,
            checked,
            cancel,
            workdir,
            started_ms: now,
        };
        self.inner.tasks.spawn(async move {
            // A node that shuts down drops this task mid-run: the module, on its blocking
            // thread, must then stop too (at its next epoch tick), not run on unwatched.
            let _stop = StopOnDrop(run.cancel.clone());
            svc.run(&run).await;
            let _ = tokio::fs::remove_dir_all(&run.workdir).await;
            svc.inner.running.lock().remove(&run.key);
            svc.publish_load();
        });
        Ok(())
    }

    pub(crate) fn publish_load(&self) {
        let running = self.inner.running.lock();
        let cpu: u32 = running.values().map(|l| l.cpu).sum();
        let memory: u64 = running.values().map(|l| l.memory).sum();
        let cpus = (self.inner.cpu_milli / 1000).max(1);
        let load = weft_core::Load {
            jobs: running.len() as u32,
            queued: 0,
            cpu_milli: cpu / cpus,
            mem_bytes: memory,
        };
        drop(running);
        self.inner.fabric.set_load(load);
    }

    /// Run an attempt this node claimed, renewing its lease, and record how it ended.
    pub(crate) async fn run(&self, run: &Attempt) {
        let Attempt {
            acting: b,
            signer,
            key,
            attempt,
            def,
            checked,
            cancel,
            workdir,
            started_ms,
        } = run;
        let (attempt, started_ms) = (*attempt, *started_ms);
        let me = self.inner.me;
        let runtime = match self.runtime() {
            Ok(r) => r,
            Err(e) => {
                self.record(signer, key, attempt, Err((e, true)), started_ms)
                    .await;
                return;
            }
        };
        let profile = if def.deterministic {
            // The job id begins with its submission time, in ms (hex).
            let submitted = key
                .id
                .get(..12)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            crate::runner::deterministic_profile(&key.reference(), submitted)
        } else {
            weft_compute::runtime::Profile::Native
        };
        let mut job = def.job.clone();
        if *checked {
            job.output_prefix = checks_prefix(&job.output_prefix, &key.id, attempt);
        }
        let tamper = self.inner.tamper.lock().clone();
        let work = crate::runner::run_job_with(
            b,
            &runtime,
            &job,
            profile,
            Some(cancel.clone()),
            workdir,
            tamper,
        );
        // The lease is renewed beside the job, never in its way: the job's own reads and
        // writes go on while a renewal waits on its round trips.
        let renew = async {
            let mut until = started_ms + LEASE_MS;
            loop {
                tokio::time::sleep(Duration::from_millis(RENEW_EVERY_MS)).await;
                let now = now_ms();
                match self
                    .change(signer, key, |r| {
                        r.life = r.life.renew(me, attempt, now)?;
                        Ok(())
                    })
                    .await
                {
                    Ok(_) => until = now + LEASE_MS,
                    Err(JobError::Refused(why)) => {
                        tracing::info!(job = %key.reference(), %why, "stopping a job");
                        cancel.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // Stop before the lease lapses: past it, another attempt may start.
                        if now_ms() + RENEW_EVERY_MS >= until {
                            tracing::warn!(job = %key.reference(), error = %e, "cannot renew a job's lease; stopping it");
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        };
        let result = tokio::select! {
            r = work => r,
            () = renew => return,
        };
        let outcome = match result {
            Ok(report) => Ok(report),
            Err(RunnerError::Run(RunError::Cancelled)) => return,
            Err(e) => {
                let retryable = matches!(
                    e,
                    RunnerError::Io(_)
                        | RunnerError::Run(RunError::Io(_))
                        | RunnerError::Bucket(BucketError::Storage(_))
                        | RunnerError::Bucket(BucketError::Meta(_))
                );
                Err((e.to_string(), retryable))
            }
        };
        match outcome {
            Ok(report) if *checked => {
                self.record_check(signer, key, attempt, report, started_ms)
                    .await
            }
            outcome => self.record(signer, key, attempt, outcome, started_ms).await,
        }
    }

    /// Record a run of a checked job that exited: sign its receipt first (the receipt is what
    /// the coordinator decides from), then add it to the row's check runs and queue the job
    /// again for its coordinator.
    async fn record_check(
        &self,
        signer: &weft_meta::Signer,
        key: &JobKey,
        attempt: u32,
        report: JobReport,
        started_ms: u64,
    ) {
        let me = self.inner.me;
        let site = self
            .inner
            .fabric
            .member(&me)
            .map(|m| m.placement.site)
            .unwrap_or_default();
        let mut receipt = None;
        for _ in 0..20 {
            if receipt.is_none() {
                match self
                    .inner
                    .table
                    .get_value::<Jobs>(&key.part(), &key.id)
                    .await
                {
                    Ok(Some(rec)) => {
                        match self.receipt(key, attempt, &report, request_of(key, &rec)) {
                            Some(r) => receipt = Some(weft_core::wire::encode(&r)),
                            None => {
                                let why = "cannot sign the run's receipt".to_string();
                                return self
                                    .record(signer, key, attempt, Err((why, true)), started_ms)
                                    .await;
                            }
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(job = %key.reference(), error = %e, "cannot read a job to record its result");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                }
            }
            let Some(bytes) = receipt.clone() else {
                continue;
            };
            let now = now_ms();
            let ended = Ended {
                attempt,
                runner: me,
                exit_code: Some(report.outcome.exit_code),
                error: None,
            };
            let result = self
                .change(signer, key, |r| {
                    r.life = r.life.checked(&ended, now)?;
                    r.runs.push(figures(attempt, me, started_ms, now, &report));
                    if let Some(c) = &mut r.checks {
                        c.runs.push(CheckRun {
                            attempt,
                            runner: me,
                            site: site.clone(),
                            receipt: bytes.clone(),
                        });
                    }
                    Ok(())
                })
                .await;
            match result {
                Ok(_) => return,
                Err(JobError::Refused(why)) => {
                    tracing::info!(job = %key.reference(), %why, "a check run's result was not recorded");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %key.reference(), error = %e, "cannot record a check run yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Record how attempt `attempt` ended (only its claimant can, once).
    pub(crate) async fn record(
        &self,
        signer: &weft_meta::Signer,
        key: &JobKey,
        attempt: u32,
        outcome: Result<JobReport, (String, bool)>,
        started_ms: u64,
    ) {
        let me = self.inner.me;
        let mut request = None;
        for _ in 0..20 {
            let now = now_ms();
            let result = self
                .change(signer, key, |r| {
                    // The job as its owner wrote it: what the receipt answers.
                    request = Some(request_of(key, r));
                    let (ended, retryable, figures) = match &outcome {
                        Ok(report) => (
                            Ended {
                                attempt,
                                runner: me,
                                exit_code: Some(report.outcome.exit_code),
                                error: None,
                            },
                            false,
                            figures(attempt, me, started_ms, now, report),
                        ),
                        Err((why, retryable)) => (
                            Ended {
                                attempt,
                                runner: me,
                                exit_code: None,
                                error: Some(why.clone()),
                            },
                            *retryable,
                            RunFigures {
                                attempt,
                                runner: me,
                                started_ms,
                                ended_ms: now,
                                fuel_used: 0,
                                wall_ms: 0,
                                input_bytes: 0,
                                outputs: Vec::new(),
                            },
                        ),
                    };
                    r.life = r.life.finish(ended, retryable, now)?;
                    r.runs.push(figures);
                    Ok(())
                })
                .await;
            match result {
                Ok(_) => {
                    if let (Ok(report), Some(request)) = (&outcome, request) {
                        let _ = self.receipt(key, attempt, report, request);
                    }
                    return;
                }
                Err(JobError::Refused(why)) => {
                    tracing::info!(job = %key.reference(), %why, "a job's result was not recorded");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %key.reference(), error = %e, "cannot record a job's result yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Sign the receipt for an attempt that ran to its end here.
    fn receipt(
        &self,
        key: &JobKey,
        attempt: u32,
        report: &JobReport,
        request: weft_core::ContentHash,
    ) -> Option<weft_ledger::Receipt> {
        let work = weft_ledger::Work::Job {
            job: key.reference(),
            attempt,
            module: report.module,
            result: report.result,
            fuel: report.outcome.fuel_used,
            bytes_in: report.input_bytes,
            bytes_out: report.outputs.iter().map(|(_, n)| n).sum(),
            wall_ms: report.outcome.wall.as_millis() as u64,
            exit: Some(report.outcome.exit_code),
        };
        match self.inner.ledger.issue(key.owner, request, work) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(job = %key.reference(), error = %e, "cannot sign the receipt of a job");
                None
            }
        }
    }
}

/// The request a job's receipts answer: the job as its owner's capability wrote it.
pub(crate) fn request_of(key: &JobKey, rec: &JobRecord) -> weft_core::ContentHash {
    weft_core::ContentHash::of(&weft_core::wire::encode(&(key.reference(), &rec.sealed)))
}

/// What a run that exited did.
fn figures(
    attempt: u32,
    runner: weft_core::NodeId,
    started_ms: u64,
    ended_ms: u64,
    report: &JobReport,
) -> RunFigures {
    RunFigures {
        attempt,
        runner,
        started_ms,
        ended_ms,
        fuel_used: report.outcome.fuel_used,
        wall_ms: report.outcome.wall.as_millis() as u64,
        input_bytes: report.input_bytes,
        outputs: report.outputs.clone(),
    }
}
