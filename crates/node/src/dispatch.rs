//! The job service: submitting, placing, running, watching and reporting jobs across the
//! fabric.
//!
//! **Submitting.** Any node takes a submission, with the client's session. It checks the
//! session may write the output bucket and read every input, works out where the job may run
//! (the inputs' and the output bucket's residency, narrowed by the spec), writes the job's row
//! (its definition sealed under the output bucket's key) and becomes the job's *coordinator*;
//! it hands the session to one *standby* node too, over the node channel. Sessions are never
//! written to a row.
//!
//! **Placing.** The coordinator ranks the fabric with the scheduler core
//! ([`weft_compute::schedule`]): the typed membership (roles, health, residency, labels, cpu
//! and memory offered and reserved, coordinates) and where the shards of the job's inputs are
//! now. It offers the job to the best node; the runner admits it on its own resources (and
//! claims the row's lease, [`weft_compute::lease`]) or refuses, and the coordinator moves on to
//! the next choice.
//!
//! **Running.** The runner runs the job ([`Buckets::run_job`]), renewing its lease every
//! second; a renewal refused (the job was cancelled, or the lease lapsed) stops the run. It
//! records the result with a conditional update only the current attempt's claimant can make.
//!
//! **Watching.** The coordinator reads the row a few times a second: a lease that lapsed (its
//! runner died or was cut off) is requeued as the next attempt, placed away from that runner,
//! after a backoff. The standby does the same only while the coordinator is not alive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_compute::lease::{Ended, JobState, LEASE_MS, Life, RENEW_EVERY_MS, Refused};
use weft_compute::runtime::{MAX_CONCURRENT, RunError, Runtime};
use weft_compute::schedule::{InputBytes, Name, Needs, NodeView, Scheduler};
use weft_compute::schema::{JobBucket, JobRecord, Jobs, Placement, RunFigures};
use weft_compute::spec::{Job, JobSpec, Near, Source};
use weft_core::{NodeId, Role, proto};
use weft_fabric::{Fabric, MemberState};
use weft_meta::{MetaError, Schema, Table};
use weft_net::{Endpoint, Rpc};
use weft_store::{Capability, Storage};

use crate::buckets::{BucketError, Buckets, Need};
use crate::jobs::{JobError, JobInput, JobRun};
use crate::sealed::BucketSeal;
use crate::session::{Session, SessionError};

/// How often a coordinator reads the rows of the jobs it watches.
const POLL: Duration = Duration::from_millis(200);
/// How long past its lease end a running job's row must stay unrenewed before it is requeued
/// (allows for clocks a little apart).
const EXPIRY_GRACE_MS: u64 = 1_000;
/// How much later than its coordinator a standby acts on a job (while the coordinator is up).
const STANDBY_LAG_MS: u64 = 3_000;
/// How long a job no node can run waits before it fails.
const UNPLACEABLE_WAIT: Duration = Duration::from_secs(30);
/// Choices offered per placement round.
const OFFERS: usize = 8;
/// The most log bytes one read returns.
const LOG_CHUNK: u64 = 1 << 20;

/// The job protocol (`proto::JOB`).
const JOB_RPC: Rpc<JobAsk, JobAnswer> = Rpc::new(
    proto::JOB,
    256 << 10,
    (LOG_CHUNK as usize) + 4096,
    Duration::from_secs(30),
);

/// A job's name in the table: its bucket's owner, the bucket, its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobKey {
    /// The output bucket's owner.
    pub owner: NodeId,
    /// The output bucket.
    pub bucket: String,
    /// The id, unique in the bucket and time-ordered.
    pub id: String,
}

impl JobKey {
    fn part(&self) -> JobBucket {
        JobBucket {
            owner: self.owner,
            bucket: self.bucket.clone(),
        }
    }

    /// How users name it: `BUCKET/ID`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.bucket, self.id)
    }
}

/// Questions of the job protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum JobAsk {
    /// Run attempt `attempt` of a job (the runner claims it or refuses).
    Offer {
        key: JobKey,
        attempt: u32,
        session: String,
        placement: Placement,
    },
    /// Watch a job as its standby coordinator.
    Watch { key: JobKey, session: String },
    /// Read a running job's stdout (or stderr) from `offset`.
    Logs {
        key: JobKey,
        session: String,
        stderr: bool,
        offset: u64,
    },
}

/// Answers of the job protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum JobAnswer {
    Admitted,
    Refused(String),
    Watching,
    Logs { bytes: Vec<u8>, running: bool },
}

/// What a job's row seals: the job as validated, and where it may run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Definition {
    job: Job,
    /// Regions it may run in (empty: any), the spec's narrowing of its buckets' policies.
    regions: Vec<String>,
    /// Jurisdictions likewise.
    jurisdictions: Vec<String>,
    /// For `near = "me"`: the node the client submitted through.
    near_node: Option<NodeId>,
}

/// A job as `weft job status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    /// `BUCKET/ID`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// The current (or last) attempt, from 0.
    pub attempt: u32,
    /// Attempts it may have in all.
    pub attempts_allowed: u32,
    /// The node running it (or that ran the last attempt).
    pub runner: Option<String>,
    /// Its exit code, once done.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix ms.
    pub submitted_ms: u64,
    /// Unix ms the current or last attempt was claimed.
    pub started_ms: Option<u64>,
    /// Unix ms it ended.
    pub ended_ms: Option<u64>,
    /// The node coordinating it.
    pub coordinator: String,
    /// Its standby coordinator.
    pub standby: Option<String>,
    /// The module (`BUCKET/KEY` or a capability).
    pub module: String,
    /// Its inputs.
    pub inputs: Vec<String>,
    /// Where its outputs go (`BUCKET/PREFIX`).
    pub output: String,
    /// Regions it may run in (empty: any).
    pub regions: Vec<String>,
    /// Jurisdictions it may run in.
    pub jurisdictions: Vec<String>,
    /// Where the current or last attempt was placed and why.
    pub placement: Option<PlacementView>,
    /// Finished attempts.
    pub runs: Vec<RunView>,
    /// Nodes an attempt failed or was lost on.
    pub failed_on: Vec<String>,
}

/// A placement, for display.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlacementView {
    /// The runner.
    pub runner: String,
    /// Its score.
    pub score: f64,
    /// Input bytes on it.
    pub local_bytes: u64,
    /// Input bytes elsewhere in its site.
    pub site_bytes: u64,
    /// Input bytes in other sites.
    pub remote_bytes: u64,
    /// Estimated transfer time, ms.
    pub transfer_ms: u64,
    /// Feasible nodes it was chosen among.
    pub candidates: u32,
    /// Nodes left out and why.
    pub filtered: String,
    /// Runners that refused first.
    pub refused: Vec<(String, String)>,
}

/// One finished attempt, for display.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunView {
    /// The attempt.
    pub attempt: u32,
    /// Where it ran.
    pub runner: String,
    /// Unix ms.
    pub started_ms: u64,
    /// Unix ms.
    pub ended_ms: u64,
    /// Fuel used.
    pub fuel_used: u64,
    /// Module wall time, ms.
    pub wall_ms: u64,
    /// Input bytes read.
    pub input_bytes: u64,
    /// Objects written (key, size).
    pub outputs: Vec<(String, u64)>,
}

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The spec does not validate.
    #[error(transparent)]
    Spec(#[from] weft_compute::spec::SpecError),
    /// The session does not open.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A bucket or object problem (authorization included).
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// No such job.
    #[error("no job {0} (see `weft job ls`)")]
    NoJob(String),
    /// A job reference that is not `BUCKET/ID`.
    #[error("{0:?} is not a job id: jobs are named BUCKET/ID, as `weft job run` printed")]
    BadId(String),
    /// It cannot run anywhere: the residency of its data and spec leave no place.
    #[error("the job can run nowhere: {0}")]
    Nowhere(String),
    /// The change does not apply to the job as it is.
    #[error("{0}")]
    Refused(String),
    /// The table failed.
    #[error("job table: {0}")]
    Table(#[from] MetaError),
    /// The session can only read.
    #[error("this session is read-only; submitting or cancelling a job needs one that signs")]
    ReadOnly,
}

/// Sets a run's cancel flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A job running on this node.
struct Local {
    cancel: Arc<AtomicBool>,
    workdir: PathBuf,
    cpu: u32,
    memory: u64,
}

/// The job service of a node. Cheap to clone.
#[derive(Clone)]
pub struct JobService {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    endpoint: Endpoint,
    fabric: Fabric,
    table: Table,
    storage: Storage,
    buckets: Buckets,
    dir: PathBuf,
    runtime: OnceLock<Result<Runtime, String>>,
    cpu_milli: u32,
    memory: u64,
    running: Mutex<HashMap<JobKey, Local>>,
    watching: Mutex<HashSet<JobKey>>,
}

fn now_ms() -> u64 {
    weft_net::now_ms()
}

fn new_id(now: u64) -> String {
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    format!("{now:012x}{:04x}", u16::from_le_bytes(r))
}

/// Parse `BUCKET/ID`.
pub fn parse_reference(text: &str) -> Result<(String, String), DispatchError> {
    match text.trim().split_once('/') {
        Some((b, id))
            if !b.is_empty() && !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok((b.to_string(), id.to_string()))
        }
        _ => Err(DispatchError::BadId(text.to_string())),
    }
}

fn source_text(s: &Source) -> String {
    match s {
        Source::Object { bucket, key } => format!("{bucket}/{key}"),
        Source::Capability(c) => c.clone(),
        Source::File(f) => f.clone(),
    }
}

/// Intersect allowed sets (empty = anything).
fn narrow(current: &mut Vec<String>, allowed: &[String]) {
    if allowed.is_empty() {
        return;
    }
    if current.is_empty() {
        *current = allowed.to_vec();
    } else {
        current.retain(|c| allowed.contains(c));
        if current.is_empty() {
            // Mark "nothing" distinctly from "anything".
            current.push(String::new());
        }
    }
}

impl JobService {
    /// The service of a node; registers the job protocol on `endpoint`.
    pub(crate) fn start(
        endpoint: Endpoint,
        fabric: Fabric,
        table: Table,
        storage: Storage,
        buckets: Buckets,
        dir: PathBuf,
        capacity: &weft_core::Capacity,
    ) -> JobService {
        let svc = JobService {
            inner: Arc::new(Inner {
                me: endpoint.id(),
                endpoint: endpoint.clone(),
                fabric,
                table,
                storage,
                buckets,
                dir,
                runtime: OnceLock::new(),
                cpu_milli: capacity.cpus.max(1).saturating_mul(1000),
                memory: capacity.mem_bytes,
                running: Mutex::new(HashMap::new()),
                watching: Mutex::new(HashSet::new()),
            }),
        };
        // A previous run's leftovers: jobs that were running when the node stopped.
        let _ = std::fs::remove_dir_all(&svc.inner.dir);
        let weak = Arc::downgrade(&svc.inner);
        JOB_RPC.serve(&endpoint, false, move |peer, ask| {
            let weak = weak.clone();
            async move {
                let Some(inner) = weak.upgrade() else {
                    return JobAnswer::Refused("the node is stopping".into());
                };
                let weft_net::Peer::Member(peer) = peer else {
                    return JobAnswer::Refused("jobs are between members".into());
                };
                JobService { inner }.answer(peer.id, ask).await
            }
        });
        svc
    }

    fn runtime(&self) -> Result<Runtime, String> {
        self.inner
            .runtime
            .get_or_init(|| Runtime::new().map_err(|e| e.to_string()))
            .clone()
    }

    fn acting(&self, session: &str) -> Result<Buckets, DispatchError> {
        let access = Session::from_text(session)?.access(now_ms())?;
        Ok(self.inner.buckets.acting_as(access))
    }

    fn seal_of(b: &Buckets, bucket: &str) -> Result<BucketSeal, DispatchError> {
        let key = b
            .primary_key(bucket)
            .ok_or_else(|| BucketError::NoKey(bucket.to_string()))?;
        Ok(BucketSeal::new(&key))
    }

    fn open_definition(
        b: &Buckets,
        key: &JobKey,
        rec: &JobRecord,
    ) -> Result<Definition, DispatchError> {
        Self::seal_of(b, &key.bucket)?
            .open(Jobs::KIND, &key.reference(), &rec.sealed)
            .ok_or_else(|| {
                DispatchError::Bucket(BucketError::Corrupt(format!(
                    "job {} (its definition does not open)",
                    key.reference()
                )))
            })
    }

    /// Submit `spec` for the account `session` acts as; returns at once, queued. The module
    /// must already be an object or a capability (the CLI uploads a local file first).
    pub async fn submit(&self, session: &str, spec: &JobSpec) -> Result<JobStatus, DispatchError> {
        let job = spec.validate()?;
        if let Source::File(f) = &job.module {
            return Err(DispatchError::Spec(weft_compute::spec::SpecError {
                field: "module",
                why: format!(
                    "{f:?} is a local file; upload it first (the CLI does) and name it BUCKET/KEY"
                ),
            }));
        }
        let b = self.acting(session)?;
        if !b.access().can_write() {
            return Err(DispatchError::ReadOnly);
        }
        let out = b.authorize(&job.output_bucket, Need::Write).await?;
        let mut regions = job.regions.clone();
        let mut jurisdictions = job.jurisdictions.clone();
        let mut policies = vec![out.policy.clone()];
        for input in job.inputs.iter().chain(std::iter::once(&job.module)) {
            match input {
                Source::Object { bucket, key } => {
                    let rec = b.authorize(bucket, Need::Read).await?;
                    b.object(bucket, key).await?;
                    policies.push(rec.policy);
                }
                Source::Capability(text) => {
                    let cap = Capability::from_text(text).map_err(BucketError::from)?;
                    let m = self
                        .inner
                        .storage
                        .manifest(&cap)
                        .await
                        .map_err(BucketError::from)?;
                    policies.push(m.policy);
                }
                Source::File(_) => {}
            }
        }
        for p in &policies {
            narrow(&mut regions, &p.regions);
            narrow(&mut jurisdictions, &p.jurisdictions);
        }
        if regions.iter().any(String::is_empty) || jurisdictions.iter().any(String::is_empty) {
            return Err(DispatchError::Nowhere(
                "the residency of its buckets and spec have no region or jurisdiction in common"
                    .into(),
            ));
        }
        let near_node = matches!(job.near, Some(Near::Client)).then_some(self.inner.me);
        let now = now_ms();
        let key = JobKey {
            owner: out.owner,
            bucket: job.output_bucket.clone(),
            id: new_id(now),
        };
        let def = Definition {
            job,
            regions,
            jurisdictions,
            near_node,
        };
        let sealed = Self::seal_of(&b, &key.bucket)?.seal(Jobs::KIND, &key.reference(), &def);
        let standby = self.pick_standby();
        let rec = JobRecord {
            sealed,
            life: Life::new(def.job.retries),
            submitted_ms: now,
            coordinator: self.inner.me,
            standby,
            placement: None,
            started_ms: None,
            runs: Vec::new(),
        };
        self.inner
            .table
            .create::<Jobs>(b.signer()?.clone(), &key.part(), &key.id, &rec)
            .await?;
        self.watch(key.clone(), session.to_string(), true);
        if let Some(node) = standby
            && let Some(addr) = self.inner.fabric.member(&node).and_then(|m| m.addr)
        {
            let (endpoint, ask) = (
                self.inner.endpoint.clone(),
                JobAsk::Watch {
                    key: key.clone(),
                    session: session.to_string(),
                },
            );
            self.inner.endpoint.spawn(async move {
                if let Err(e) = JOB_RPC.call(&endpoint, node, addr, &ask).await {
                    tracing::warn!(standby = %node, error = %e, "a job's standby did not take it");
                }
            });
        }
        Ok(status_of(&key, &rec, &def))
    }

    /// Another live member, another site first, to watch a job if its coordinator is lost.
    fn pick_standby(&self) -> Option<NodeId> {
        let members = self.inner.fabric.members();
        let my_site = members
            .iter()
            .find(|m| m.is_self)
            .map(|m| m.placement.site.clone());
        let mut others: Vec<_> = members
            .into_iter()
            .filter(|m| !m.is_self && m.state == MemberState::Alive && m.addr.is_some())
            .collect();
        others.sort_by_key(|m| (Some(&m.placement.site) == my_site.as_ref(), m.id));
        others.first().map(|m| m.id)
    }

    fn watch(&self, key: JobKey, session: String, primary: bool) {
        if !self.inner.watching.lock().insert(key.clone()) {
            return;
        }
        let svc = self.clone();
        self.inner.endpoint.spawn(async move {
            svc.coordinate(&key, &session, primary).await;
            svc.inner.watching.lock().remove(&key);
        });
    }

    /// Watch a job until it ends: place it when it is queued, requeue it when its lease
    /// lapses. A standby acts only while the coordinator is not alive.
    async fn coordinate(&self, key: &JobKey, session: &str, primary: bool) {
        let Ok(b) = self.acting(session) else {
            return;
        };
        let Ok(signer) = b.signer().cloned() else {
            return;
        };
        let mut unplaceable_since: Option<Instant> = None;
        let mut missing = 0;
        loop {
            let rec = match self
                .inner
                .table
                .get_value::<Jobs>(&key.part(), &key.id)
                .await
            {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // A standby may hear of a job before its row reaches a majority.
                    missing += 1;
                    if missing > 50 {
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(_) => {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if rec.life.ended() {
                return;
            }
            // The standby acts at once while the coordinator is gone, and otherwise a little
            // later than the coordinator would (a coordinator that restarted has forgotten
            // the jobs it watched); the transitions are conditional, so both acting is safe.
            let coordinator_gone = self
                .inner
                .fabric
                .member(&rec.coordinator)
                .is_none_or(|m| !matches!(m.state, MemberState::Alive | MemberState::Suspect));
            let lag = if primary || coordinator_gone {
                0
            } else {
                STANDBY_LAG_MS
            };
            let now = now_ms().saturating_sub(lag);
            let queued_since = if lag > 0 { rec.submitted_ms } else { 0 };
            {
                match rec.life.state {
                    JobState::Queued {
                        attempt,
                        not_before_ms,
                    } if now >= not_before_ms.max(queued_since) => {
                        match self.place(&b, key, &rec, attempt, session).await {
                            Placed::Yes => {
                                unplaceable_since = None;
                                continue;
                            }
                            Placed::Busy => unplaceable_since = None,
                            Placed::Nowhere(why) => {
                                let since = *unplaceable_since.get_or_insert_with(Instant::now);
                                if since.elapsed() > UNPLACEABLE_WAIT {
                                    let me = self.inner.me;
                                    let why = format!(
                                        "no node could run it for {UNPLACEABLE_WAIT:?}: {why}"
                                    );
                                    let _ = self
                                        .change(&signer, key, |r| {
                                            r.life = r.life.unplaceable(me, why.clone())?;
                                            Ok(())
                                        })
                                        .await;
                                }
                            }
                        }
                    }
                    JobState::Running { until_ms, .. }
                        if now > until_ms.saturating_add(EXPIRY_GRACE_MS) =>
                    {
                        let at = now_ms();
                        if self
                            .change(&signer, key, |r| {
                                r.life = r.life.expire(at.saturating_sub(EXPIRY_GRACE_MS))?;
                                Ok(())
                            })
                            .await
                            .is_ok()
                        {
                            tracing::info!(job = %key.reference(), "requeued a job whose runner stopped renewing its lease");
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Apply `f` to the job's row, conditionally (see [`Table::update`]); a transition that
    /// does not apply is [`DispatchError::Refused`].
    async fn change(
        &self,
        signer: &weft_meta::Signer,
        key: &JobKey,
        mut f: impl FnMut(&mut JobRecord) -> Result<(), Refused>,
    ) -> Result<JobRecord, DispatchError> {
        let mut refused: Option<Refused> = None;
        let mut written: Option<JobRecord> = None;
        self.inner
            .table
            .update::<Jobs>(signer.clone(), &key.part(), &key.id, |cur| {
                let Some(mut rec) = cur else {
                    refused = None;
                    written = None;
                    return None;
                };
                match f(&mut rec) {
                    Ok(()) => {
                        refused = None;
                        written = Some(rec.clone());
                        Some(Some(rec))
                    }
                    Err(e) => {
                        refused = Some(e);
                        written = None;
                        None
                    }
                }
            })
            .await?;
        match (written, refused) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => Err(DispatchError::Refused(e.to_string())),
            (None, None) => Err(DispatchError::NoJob(key.reference())),
        }
    }

    /// What the job needs, with where its inputs' shards are now.
    async fn needs(
        &self,
        b: &Buckets,
        def: &Definition,
        life: &Life,
        names: &mut Interner,
    ) -> Needs {
        let mut held: HashMap<NodeId, u64> = HashMap::new();
        for input in &def.job.inputs {
            for (node, bytes) in self.shard_bytes(b, input).await {
                *held.entry(node).or_default() += bytes;
            }
        }
        let mut held: Vec<(NodeId, u64)> = held.into_iter().collect();
        held.sort_by_key(|(n, _)| *n);
        let near = match &def.job.near {
            None => None,
            Some(Near::Client) => def
                .near_node
                .and_then(|n| self.inner.fabric.member(&n))
                .and_then(|m| m.coordinate),
            Some(Near::Node(id)) => self
                .inner
                .fabric
                .members()
                .into_iter()
                .find(|m| m.id.to_hex().starts_with(&id.to_ascii_lowercase()))
                .and_then(|m| m.coordinate),
            Some(Near::Site(site)) => self
                .inner
                .fabric
                .members()
                .into_iter()
                .find(|m| &m.placement.site == site && m.state == MemberState::Alive)
                .and_then(|m| m.coordinate),
        };
        Needs {
            cpu: def.job.cpu_milli,
            memory: def.job.limits.memory,
            regions: def.regions.iter().map(|r| names.get(r)).collect(),
            jurisdictions: def.jurisdictions.iter().map(|j| names.get(j)).collect(),
            labels: def
                .job
                .labels
                .iter()
                .map(|(k, v)| (names.get(k), names.get(v)))
                .collect(),
            inputs: InputBytes { held },
            near,
            avoid: life.failed_on.clone(),
        }
    }

    /// Bytes of `input`'s shards per holder (empty if it cannot be read now: the job is then
    /// placed without locality, and the runner reports the failure).
    async fn shard_bytes(&self, b: &Buckets, input: &Source) -> Vec<(NodeId, u64)> {
        let mut manifests: Vec<(weft_core::ContentHash, Vec<NodeId>)> = Vec::new();
        match input {
            Source::Object { bucket, key } => {
                let Ok(rec) = b.object(bucket, key).await else {
                    return Vec::new();
                };
                if rec.parts.is_empty() {
                    manifests.push((rec.manifest, rec.holders));
                } else {
                    manifests.extend(rec.parts.into_iter().map(|p| (p.manifest, p.holders)));
                }
            }
            Source::Capability(text) => {
                if let Ok(cap) = Capability::from_text(text) {
                    manifests.push((cap.manifest, cap.holders));
                }
            }
            Source::File(_) => {}
        }
        let mut out = Vec::new();
        for (hash, holders) in manifests {
            let Ok(m) = self.inner.storage.manifest_at(hash, &holders).await else {
                continue;
            };
            for seg in &m.segments {
                // Any k shards rebuild a segment: each holder's share is its shard's bytes.
                for holder in &seg.holders {
                    out.push((*holder, seg.info.shard_len));
                }
            }
        }
        out
    }

    /// One placement round: rank, then offer to each choice until one admits.
    async fn place(
        &self,
        b: &Buckets,
        key: &JobKey,
        rec: &JobRecord,
        attempt: u32,
        session: &str,
    ) -> Placed {
        let Ok(def) = Self::open_definition(b, key, rec) else {
            return Placed::Nowhere("its definition does not open with this session".into());
        };
        let mut names = Interner::default();
        let needs = self.needs(b, &def, &rec.life, &mut names).await;
        let quarantined = self.inner.storage.quarantined();
        let members = self.inner.fabric.members();
        let views: Vec<NodeView> = members
            .iter()
            .map(|m| {
                let cpus = m.capacity.cpus.max(1);
                NodeView {
                    id: m.id,
                    site: names.get(&m.placement.site),
                    region: names.get(&m.placement.region),
                    jurisdiction: names.get(&m.placement.jurisdiction),
                    compute: m.has_role(Role::Compute),
                    alive: m.state == MemberState::Alive,
                    quarantined: quarantined.contains(&m.id),
                    cpu: cpus * 1000,
                    cpu_used: m.load.cpu_milli.saturating_mul(cpus),
                    memory: m.capacity.mem_bytes,
                    memory_used: m.load.mem_bytes,
                    labels: m
                        .labels
                        .iter()
                        .map(|(k, v)| (names.get(k), names.get(v)))
                        .collect::<BTreeMap<_, _>>(),
                    coord: m.coordinate.clone().unwrap_or_default(),
                }
            })
            .collect();
        let mut scheduler = Scheduler::new(views);
        let ranking = scheduler.rank(&needs, OFFERS);
        if ranking.choices.is_empty() {
            return Placed::Nowhere(ranking.filtered.to_string());
        }
        let candidates = ranking.choices.len() as u32;
        let mut refused: Vec<(NodeId, String)> = Vec::new();
        for choice in ranking.choices {
            let placement = Placement {
                runner: choice.node,
                score: choice.score,
                local_bytes: choice.local_bytes,
                site_bytes: choice.site_bytes,
                remote_bytes: choice.remote_bytes,
                transfer_ms: choice.transfer.as_millis() as u64,
                candidates,
                filtered: ranking.filtered.to_string(),
                refused: refused.clone(),
            };
            let ask = JobAsk::Offer {
                key: key.clone(),
                attempt,
                session: session.to_string(),
                placement,
            };
            let answer = if choice.node == self.inner.me {
                self.answer(self.inner.me, ask).await
            } else {
                let Some(addr) = members
                    .iter()
                    .find(|m| m.id == choice.node)
                    .and_then(|m| m.addr)
                else {
                    continue;
                };
                match JOB_RPC
                    .call(&self.inner.endpoint, choice.node, addr, &ask)
                    .await
                {
                    Ok(a) => a,
                    Err(e) => JobAnswer::Refused(format!("unreachable: {e}")),
                }
            };
            match answer {
                JobAnswer::Admitted => return Placed::Yes,
                JobAnswer::Refused(why) => refused.push((choice.node, why)),
                _ => refused.push((choice.node, "answered out of turn".into())),
            }
        }
        tracing::debug!(job = %key.reference(), ?refused, "no runner admitted a job this round");
        tokio::time::sleep(Duration::from_millis(300)).await;
        Placed::Busy
    }

    async fn answer(&self, peer: NodeId, ask: JobAsk) -> JobAnswer {
        match ask {
            JobAsk::Offer {
                key,
                attempt,
                session,
                placement,
            } => match self.admit(&key, attempt, &session, placement).await {
                Ok(()) => JobAnswer::Admitted,
                Err(why) => JobAnswer::Refused(why),
            },
            JobAsk::Watch { key, session } => {
                if self.acting(&session).is_err() {
                    return JobAnswer::Refused("the session does not open".into());
                }
                tracing::debug!(job = %key.reference(), coordinator = %peer, "standby for a job");
                self.watch(key, session, false);
                JobAnswer::Watching
            }
            JobAsk::Logs {
                key,
                session,
                stderr,
                offset,
            } => match self.local_logs(&key, &session, stderr, offset).await {
                Ok((bytes, running)) => JobAnswer::Logs { bytes, running },
                Err(e) => JobAnswer::Refused(e.to_string()),
            },
        }
    }

    /// Admit attempt `attempt` of a job on this node's resources and claim its lease, or say
    /// why not; then run it in the background.
    async fn admit(
        &self,
        key: &JobKey,
        attempt: u32,
        session: &str,
        mut placement: Placement,
    ) -> Result<(), String> {
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
        self.runtime()?;
        let (cpu, memory) = (def.job.cpu_milli, def.job.limits.memory);
        let cancel = Arc::new(AtomicBool::new(false));
        let workdir = self
            .inner
            .dir
            .join(format!("{}-{}-{attempt}", key.bucket, key.id));
        {
            let mut running = self.inner.running.lock();
            if running.contains_key(key) {
                return Err("already running here".into());
            }
            let cpu_used: u32 = running.values().map(|l| l.cpu).sum();
            let mem_used: u64 = running.values().map(|l| l.memory).sum();
            if running.len() as u32 >= MAX_CONCURRENT
                || cpu_used + cpu > self.inner.cpu_milli
                || mem_used + memory > self.inner.memory
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
                    workdir: workdir.clone(),
                    cpu,
                    memory,
                },
            );
        }
        self.publish_load();
        let me = self.inner.me;
        let now = now_ms();
        placement.runner = me;
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
            self.inner.running.lock().remove(key);
            self.publish_load();
            return Err(e.to_string());
        }
        let svc = self.clone();
        let key = key.clone();
        self.inner.endpoint.spawn(async move {
            // A node that shuts down drops this task mid-run: the module, on its blocking
            // thread, must then stop too (at its next epoch tick), not run on unwatched.
            let _stop = StopOnDrop(cancel.clone());
            svc.run(
                &b,
                &signer,
                &key,
                attempt,
                def,
                cancel,
                workdir.clone(),
                now,
            )
            .await;
            let _ = tokio::fs::remove_dir_all(&workdir).await;
            svc.inner.running.lock().remove(&key);
            svc.publish_load();
        });
        Ok(())
    }

    fn publish_load(&self) {
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

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        b: &Buckets,
        signer: &weft_meta::Signer,
        key: &JobKey,
        attempt: u32,
        def: Definition,
        cancel: Arc<AtomicBool>,
        workdir: PathBuf,
        started_ms: u64,
    ) {
        let me = self.inner.me;
        let runtime = match self.runtime() {
            Ok(r) => r,
            Err(e) => {
                self.record(signer, key, attempt, Err((e, true)), started_ms)
                    .await;
                return;
            }
        };
        let work = async {
            let module = self.fetch(b, &def.job.module).await?;
            let mut inputs = Vec::new();
            let mut caps = Vec::new();
            for (i, input) in def.job.inputs.iter().enumerate() {
                match input {
                    Source::Object { bucket, key } => inputs.push(JobInput {
                        bucket: bucket.clone(),
                        key: key.clone(),
                    }),
                    Source::Capability(text) => caps.push((
                        format!("cap{i}"),
                        Capability::from_text(text).map_err(BucketError::from)?,
                    )),
                    Source::File(_) => {}
                }
            }
            let run = JobRun {
                name: def.job.name.clone(),
                module,
                args: def.job.args.clone(),
                env: def.job.env.clone(),
                inputs,
                capabilities: caps,
                output_bucket: def.job.output_bucket.clone(),
                output_prefix: def.job.output_prefix.clone(),
                limits: def.job.limits,
                cancel: Some(cancel.clone()),
            };
            b.run_job(&runtime, &run, &workdir).await
        };
        tokio::pin!(work);
        let mut until = started_ms + LEASE_MS;
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                () = tokio::time::sleep(Duration::from_millis(RENEW_EVERY_MS)) => {
                    let now = now_ms();
                    match self.change(signer, key, |r| {
                        r.life = r.life.renew(me, attempt, now)?;
                        Ok(())
                    }).await {
                        Ok(_) => until = now + LEASE_MS,
                        Err(DispatchError::Refused(why)) => {
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
            }
        };
        let outcome = match result {
            Ok(report) => Ok(report),
            Err(JobError::Run(RunError::Cancelled)) => return,
            Err(e) => {
                let retryable = matches!(
                    e,
                    JobError::Io(_)
                        | JobError::Run(RunError::Io(_))
                        | JobError::Bucket(BucketError::Storage(_))
                        | JobError::Bucket(BucketError::Meta(_))
                );
                Err((e.to_string(), retryable))
            }
        };
        self.record(signer, key, attempt, outcome, started_ms).await;
    }

    async fn fetch(&self, b: &Buckets, source: &Source) -> Result<Vec<u8>, JobError> {
        let mut bytes = Vec::new();
        match source {
            Source::Object { bucket, key } => {
                b.get(bucket, key, &mut bytes).await?;
            }
            Source::Capability(text) => {
                let cap = Capability::from_text(text).map_err(BucketError::from)?;
                b.storage_get(&cap, &mut bytes).await?;
            }
            Source::File(f) => {
                return Err(JobError::Bucket(BucketError::Invalid(format!(
                    "module {f:?} is a local file"
                ))));
            }
        }
        Ok(bytes)
    }

    /// Record how attempt `attempt` ended (only its claimant can, once).
    async fn record(
        &self,
        signer: &weft_meta::Signer,
        key: &JobKey,
        attempt: u32,
        outcome: Result<crate::jobs::JobReport, (String, bool)>,
        started_ms: u64,
    ) {
        let me = self.inner.me;
        for _ in 0..20 {
            let now = now_ms();
            let result = self
                .change(signer, key, |r| {
                    let (ended, retryable, figures) = match &outcome {
                        Ok(report) => (
                            Ended {
                                attempt,
                                runner: me,
                                exit_code: Some(report.outcome.exit_code),
                                error: None,
                            },
                            false,
                            RunFigures {
                                attempt,
                                runner: me,
                                started_ms,
                                ended_ms: now,
                                fuel_used: report.outcome.fuel_used,
                                wall_ms: report.outcome.wall.as_millis() as u64,
                                input_bytes: report.input_bytes,
                                outputs: report.outputs.clone(),
                            },
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
                Ok(_) => return,
                Err(DispatchError::Refused(why)) => {
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

    /// A job of `bucket` as the account `session` acts as reads it: its row and definition.
    async fn load(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
    ) -> Result<(Buckets, JobKey, JobRecord, Definition), DispatchError> {
        let b = self.acting(session)?;
        let rec_b = b.authorize(bucket, Need::Read).await?;
        let key = JobKey {
            owner: rec_b.owner,
            bucket: bucket.to_string(),
            id: id.to_string(),
        };
        let rec = self
            .inner
            .table
            .get_value::<Jobs>(&key.part(), &key.id)
            .await?
            .ok_or_else(|| DispatchError::NoJob(key.reference()))?;
        let def = Self::open_definition(&b, &key, &rec)?;
        Ok((b, key, rec, def))
    }

    /// A job of the account `session` acts as.
    pub async fn status(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
    ) -> Result<JobStatus, DispatchError> {
        let (_, key, rec, def) = self.load(session, bucket, id).await?;
        Ok(status_of(&key, &rec, &def))
    }

    /// Jobs of `bucket`, or of every bucket of the account, newest first.
    pub async fn list(
        &self,
        session: &str,
        bucket: Option<&str>,
    ) -> Result<Vec<JobStatus>, DispatchError> {
        let b = self.acting(session)?;
        let buckets: Vec<String> = match bucket {
            Some(name) => vec![name.to_string()],
            None => b
                .list_buckets()
                .await?
                .into_iter()
                .map(|r| r.name)
                .collect(),
        };
        let mut out = Vec::new();
        for name in buckets {
            let rec_b = b.authorize(&name, Need::Read).await?;
            let part = JobBucket {
                owner: rec_b.owner,
                bucket: name.clone(),
            };
            for (id, row) in self.inner.table.list::<Jobs>(&part, "").await? {
                let Some(weft_meta::Value::Known(rec)) = row.value else {
                    continue;
                };
                let key = JobKey {
                    owner: rec_b.owner,
                    bucket: name.clone(),
                    id,
                };
                if let Ok(def) = Self::open_definition(&b, &key, &rec) {
                    out.push(status_of(&key, &rec, &def));
                }
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.submitted_ms));
        Ok(out)
    }

    /// Cancel a job (a running attempt stops at its runner's next renewal, within a second).
    pub async fn cancel(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
    ) -> Result<JobStatus, DispatchError> {
        let b = self.acting(session)?;
        let rec_b = b.authorize(bucket, Need::Write).await?;
        let key = JobKey {
            owner: rec_b.owner,
            bucket: bucket.to_string(),
            id: id.to_string(),
        };
        let rec = self
            .change(b.signer()?, &key, |r| {
                r.life = r.life.cancel()?;
                Ok(())
            })
            .await?;
        if let Some(local) = self.inner.running.lock().get(&key) {
            local.cancel.store(true, Ordering::Relaxed);
        }
        let def = Self::open_definition(&b, &key, &rec)?;
        Ok(status_of(&key, &rec, &def))
    }

    /// A job's stdout (or stderr) from byte `offset`: from its runner while it runs, from the
    /// object it was saved as once it ended. Also whether it is still running.
    pub async fn logs(
        &self,
        session: &str,
        bucket: &str,
        id: &str,
        stderr: bool,
        offset: u64,
    ) -> Result<(Vec<u8>, bool), DispatchError> {
        let (b, key, rec, def) = self.load(session, bucket, id).await?;
        if let JobState::Running { runner, .. } = rec.life.state {
            if runner == self.inner.me {
                return self.local_logs(&key, session, stderr, offset).await;
            }
            if let Some(addr) = self.inner.fabric.member(&runner).and_then(|m| m.addr) {
                let ask = JobAsk::Logs {
                    key: key.clone(),
                    session: session.to_string(),
                    stderr,
                    offset,
                };
                if let Ok(JobAnswer::Logs { bytes, running }) =
                    JOB_RPC.call(&self.inner.endpoint, runner, addr, &ask).await
                {
                    return Ok((bytes, running));
                }
            }
            return Ok((Vec::new(), true));
        }
        let running = !rec.life.ended();
        let name = format!(
            "{}{}",
            def.job.output_prefix,
            if stderr { "stderr" } else { "stdout" }
        );
        let mut bytes = Vec::new();
        match b.get(bucket, &name, &mut bytes).await {
            Ok(_) => {}
            Err(BucketError::NoObject(..)) => return Ok((Vec::new(), running)),
            Err(e) => return Err(e.into()),
        }
        let start = (offset as usize).min(bytes.len());
        let end = (start + LOG_CHUNK as usize).min(bytes.len());
        Ok((bytes[start..end].to_vec(), running))
    }

    async fn local_logs(
        &self,
        key: &JobKey,
        session: &str,
        stderr: bool,
        offset: u64,
    ) -> Result<(Vec<u8>, bool), DispatchError> {
        let b = self.acting(session)?;
        b.authorize(&key.bucket, Need::Read).await?;
        let Some(dir) = self
            .inner
            .running
            .lock()
            .get(key)
            .map(|l| l.workdir.clone())
        else {
            return Ok((Vec::new(), false));
        };
        let path = dir.join(if stderr { "stderr" } else { "stdout" });
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            f.seek(SeekFrom::Start(offset))?;
            let mut out = Vec::new();
            f.take(LOG_CHUNK).read_to_end(&mut out)?;
            Ok(out)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
        Ok((bytes, true))
    }
}

enum Placed {
    Yes,
    Busy,
    Nowhere(String),
}

/// Interns names for the scheduler.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, Name>,
}

impl Interner {
    fn get(&mut self, s: &str) -> Name {
        let next = self.ids.len() as Name;
        *self.ids.entry(s.to_string()).or_insert(next)
    }
}

fn status_of(key: &JobKey, rec: &JobRecord, def: &Definition) -> JobStatus {
    let hex = |n: &NodeId| n.to_hex();
    let (state, attempt, runner, exit_code, error) = match &rec.life.state {
        JobState::Queued { attempt, .. } => ("queued", *attempt, None, None, None),
        JobState::Running {
            attempt, runner, ..
        } => ("running", *attempt, Some(hex(runner)), None, None),
        JobState::Done(e) => (
            "done",
            e.attempt,
            Some(hex(&e.runner)),
            e.exit_code,
            e.error.clone(),
        ),
        JobState::Failed(e) => (
            "failed",
            e.attempt,
            Some(hex(&e.runner)),
            e.exit_code,
            e.error.clone(),
        ),
        JobState::Cancelled => ("cancelled", 0, None, None, None),
    };
    let ended_ms = rec
        .life
        .ended()
        .then(|| rec.runs.last().map(|r| r.ended_ms))
        .flatten();
    JobStatus {
        id: key.reference(),
        name: def.job.name.clone(),
        state: state.to_string(),
        attempt,
        attempts_allowed: rec.life.retries + 1,
        runner,
        exit_code,
        error,
        submitted_ms: rec.submitted_ms,
        started_ms: rec.started_ms,
        ended_ms,
        coordinator: hex(&rec.coordinator),
        standby: rec.standby.as_ref().map(hex),
        module: source_text(&def.job.module),
        inputs: def.job.inputs.iter().map(source_text).collect(),
        output: format!("{}/{}", def.job.output_bucket, def.job.output_prefix),
        regions: def.regions.clone(),
        jurisdictions: def.jurisdictions.clone(),
        placement: rec.placement.as_ref().map(|p| PlacementView {
            runner: hex(&p.runner),
            score: p.score,
            local_bytes: p.local_bytes,
            site_bytes: p.site_bytes,
            remote_bytes: p.remote_bytes,
            transfer_ms: p.transfer_ms,
            candidates: p.candidates,
            filtered: p.filtered.clone(),
            refused: p.refused.iter().map(|(n, w)| (hex(n), w.clone())).collect(),
        }),
        runs: rec
            .runs
            .iter()
            .map(|r| RunView {
                attempt: r.attempt,
                runner: hex(&r.runner),
                started_ms: r.started_ms,
                ended_ms: r.ended_ms,
                fuel_used: r.fuel_used,
                wall_ms: r.wall_ms,
                input_bytes: r.input_bytes,
                outputs: r.outputs.clone(),
            })
            .collect(),
        failed_on: rec.life.failed_on.iter().map(hex).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_narrows_and_an_empty_meet_is_nowhere() {
        let mut r = Vec::new();
        narrow(&mut r, &[]);
        assert!(r.is_empty());
        narrow(&mut r, &["eu".into(), "us".into()]);
        assert_eq!(r, vec!["eu".to_string(), "us".into()]);
        narrow(&mut r, &["eu".into()]);
        assert_eq!(r, vec!["eu".to_string()]);
        narrow(&mut r, &["ap".into()]);
        assert!(r.iter().any(String::is_empty));
    }

    #[test]
    fn references_are_bucket_slash_hex_id() {
        assert_eq!(
            parse_reference("logs/0190a3b4c5d6e7f8").unwrap(),
            ("logs".into(), "0190a3b4c5d6e7f8".into())
        );
        for bad in ["logs", "/abc", "logs/", "logs/xyz", "a/b/c"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}
