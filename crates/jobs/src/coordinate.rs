//! Coordinating a job: watching its row until it ends — placing it while it is queued
//! (rank with the scheduler core, offer to the best nodes in turn) and requeueing it when its
//! runner's lease lapses. The primary coordinator is the node that took the submission; its
//! standby runs the same loop ([`crate::standby`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use weft_compute::lease::{JobState, Life, Refused};
use weft_compute::schedule::{InputBytes, Name, Needs, NodeView, Scheduler};
use weft_compute::schema::{JobRecord, Jobs, Placement};
use weft_compute::spec::{Near, Source};
use weft_core::{NodeId, Role};
use weft_data::Acting;
use weft_fabric::MemberState;
use weft_store::Capability;

use crate::check::CheckStep;
use crate::definition::Definition;
use crate::protocol::{JOB_RPC, JobAnswer, JobAsk};
use crate::{JobError, JobKey, JobService, now_ms};

/// How often a coordinator reads the rows of the jobs it watches.
const POLL: Duration = Duration::from_millis(200);
/// How long past its lease end a running job's row must stay unrenewed before it is requeued
/// (allows for clocks a little apart).
const EXPIRY_GRACE_MS: u64 = 1_000;
/// How long a job no node can run waits before it fails.
const UNPLACEABLE_WAIT: Duration = Duration::from_secs(30);
/// Choices offered per placement round.
const OFFERS: usize = 8;

impl JobService {
    pub(crate) fn watch(&self, key: JobKey, session: String, primary: bool) {
        if !self.inner.watching.lock().insert(key.clone()) {
            return;
        }
        let svc = self.clone();
        self.inner.tasks.spawn(async move {
            svc.coordinate(&key, &session, primary).await;
            svc.inner.watching.lock().remove(&key);
        });
    }

    /// Watch a job until it ends: place it when it is queued, requeue it when its lease
    /// lapses. A standby acts only while the coordinator is not alive.
    pub(crate) async fn coordinate(&self, key: &JobKey, session: &str, primary: bool) {
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
            let lag = self.lag_ms(&rec, primary);
            let now = now_ms().saturating_sub(lag);
            let queued_since = if lag > 0 { rec.submitted_ms } else { 0 };
            {
                match rec.life.state {
                    JobState::Queued {
                        attempt,
                        not_before_ms,
                    } if now >= not_before_ms.max(queued_since) => {
                        let mut others = Others::default();
                        if let Some(checks) = &rec.checks {
                            match self.step_checks(&b, &signer, key, &rec, checks).await {
                                CheckStep::Run { avoid, sites_used } => {
                                    others = Others { avoid, sites_used };
                                }
                                CheckStep::Changed => continue,
                                CheckStep::Later => {
                                    tokio::time::sleep(POLL).await;
                                    continue;
                                }
                            }
                        }
                        match self.place(&b, key, &rec, attempt, session, &others).await {
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
    /// does not apply is [`JobError::Refused`].
    pub(crate) async fn change(
        &self,
        signer: &weft_meta::Signer,
        key: &JobKey,
        mut f: impl FnMut(&mut JobRecord) -> Result<(), Refused>,
    ) -> Result<JobRecord, JobError> {
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
            (None, Some(e)) => Err(JobError::Refused(e.to_string())),
            (None, None) => Err(JobError::NoJob(key.reference())),
        }
    }

    /// What the job needs, with where its inputs' shards are now.
    pub(crate) async fn needs(
        &self,
        b: &Acting,
        def: &Definition,
        life: &Life,
        others: &Others,
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
            avoid: life
                .failed_on
                .iter()
                .chain(&others.avoid)
                .copied()
                .collect(),
            sites_used: others.sites_used.iter().map(|s| names.get(s)).collect(),
            max_price: None,
        }
    }

    /// Bytes of `input`'s shards per holder (empty if it cannot be read now: the job is then
    /// placed without locality, and the runner reports the failure).
    pub(crate) async fn shard_bytes(&self, b: &Acting, input: &Source) -> Vec<(NodeId, u64)> {
        let mut manifests: Vec<(weft_core::ContentHash, Vec<NodeId>)> = Vec::new();
        match input {
            Source::Object { bucket, key } => {
                let Ok(rec) = b.objects().object(bucket, key).await else {
                    return Vec::new();
                };
                if rec.is_inline() {
                    // Kept in its row: no holder to be near.
                } else if rec.parts.is_empty() {
                    manifests.push((rec.manifest, rec.holders));
                } else {
                    manifests.extend(rec.parts.into_iter().map(|p| (p.manifest, p.holders)));
                }
            }
            Source::Capability(text) => {
                if let Ok(cap) = Capability::from_text(text)
                    && cap.inline.is_none()
                {
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

    /// One placement round: rank, then offer to each choice until one reserves room, and start
    /// the attempt there (the only node the job's capability goes to).
    pub(crate) async fn place(
        &self,
        b: &Acting,
        key: &JobKey,
        rec: &JobRecord,
        attempt: u32,
        session: &str,
        others: &Others,
    ) -> Placed {
        let Ok(def) = Self::open_definition(b, key, rec) else {
            return Placed::Nowhere("its definition does not open with this session".into());
        };
        let mut names = Interner::default();
        let mut needs = self.needs(b, &def, &rec.life, others, &mut names).await;
        needs.max_price = rec.max_price;
        let prices = self.inner.ledger.price_lists().await;
        let quarantined = self.inner.storage.quarantined();
        let reputation = self.inner.storage.reputation();
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
                    reputation: reputation.get(&m.id).copied().unwrap_or(1.0),
                    price: prices.get(&m.id).map(|p| p.fuel_per_g),
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
            let addr = members
                .iter()
                .find(|m| m.id == choice.node)
                .and_then(|m| m.addr);
            let offer = JobAsk::Offer {
                key: key.clone(),
                attempt,
                cpu_milli: def.job.cpu_milli,
                memory: def.job.limits.memory,
            };
            match self.ask(choice.node, addr, offer).await {
                JobAnswer::Reserved => {}
                JobAnswer::Refused(why) => {
                    refused.push((choice.node, why));
                    continue;
                }
                _ => {
                    refused.push((choice.node, "answered out of turn".into()));
                    continue;
                }
            }
            let start = JobAsk::Start {
                key: key.clone(),
                attempt,
                session: session.to_string(),
                placement,
            };
            match self.ask(choice.node, addr, start).await {
                JobAnswer::Admitted => return Placed::Yes,
                JobAnswer::Refused(why) => refused.push((choice.node, why)),
                _ => refused.push((choice.node, "answered out of turn".into())),
            }
        }
        tracing::debug!(job = %key.reference(), ?refused, "no runner admitted a job this round");
        tokio::time::sleep(Duration::from_millis(300)).await;
        Placed::Busy
    }
}

impl JobService {
    /// Ask `node` (this one, or a member at `addr`) a question of the job protocol.
    async fn ask(
        &self,
        node: NodeId,
        addr: Option<std::net::SocketAddr>,
        ask: JobAsk,
    ) -> JobAnswer {
        if node == self.inner.me {
            return self.answer(node, ask).await;
        }
        let Some(addr) = addr else {
            return JobAnswer::Refused("no address known".into());
        };
        match JOB_RPC.call(&self.inner.endpoint, node, addr, &ask).await {
            Ok(a) => a,
            Err(e) => JobAnswer::Refused(format!("unreachable: {e}")),
        }
    }
}

/// Where other runs of a checked job ran: not there again, and other sites first.
#[derive(Default)]
pub(crate) struct Others {
    pub(crate) avoid: Vec<NodeId>,
    pub(crate) sites_used: Vec<String>,
}

/// How a placement round went.
pub(crate) enum Placed {
    Yes,
    Busy,
    Nowhere(String),
}

/// Interns names for the scheduler.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<String, Name>,
}

impl Interner {
    pub(crate) fn get(&mut self, s: &str) -> Name {
        let next = self.ids.len() as Name;
        *self.ids.entry(s.to_string()).or_insert(next)
    }
}
