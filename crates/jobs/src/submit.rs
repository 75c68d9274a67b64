//! Submitting a job: any node takes it with the client's session, checks the session may
//! write the output bucket and read every input, narrows where it may run to what every
//! bucket's residency and the spec allow, writes the job's row (its definition sealed) and
//! starts coordinating it, with a standby on another node.

use weft_compute::lease::Life;
use weft_compute::schema::{Checks, JobRecord, Jobs};
use weft_compute::spec::{JobSpec, Near, Source};
use weft_data::{BucketError, Capability, Need};
use weft_meta::Schema;

use crate::definition::{Definition, narrow, new_id};
use crate::protocol::{JOB_RPC, JobAsk};
use crate::status::status_of;
use crate::{JobError, JobKey, JobService, JobStatus, now_ms};

impl JobService {
    /// Submit `spec` for the account `session` acts as; returns at once, queued. The module
    /// must already be an object or a capability (the CLI uploads a local file first).
    pub async fn submit(&self, session: &str, spec: &JobSpec) -> Result<JobStatus, JobError> {
        let job = spec.validate()?;
        if let Source::File(f) = &job.module {
            return Err(JobError::Spec(weft_compute::spec::SpecError {
                field: "module",
                why: format!(
                    "{f:?} is a local file; upload it first (the CLI does) and name it BUCKET/KEY"
                ),
            }));
        }
        let b = self.acting(session)?;
        if !b.access().can_write() {
            return Err(JobError::ReadOnly);
        }
        let (active, held) = self.held_by(&b).await?;
        let quota = b.quota().await?;
        if let Some(limit) = quota.jobs
            && active >= limit as usize
        {
            return Err(BucketError::OverQuota(format!(
                "account {} has {active} jobs queued or running, its quota is {limit}",
                b.account().short()
            ))
            .into());
        }
        let out = b.authorize(&job.output_bucket, Need::Write).await?;
        let mut regions = job.regions.clone();
        let mut jurisdictions = job.jurisdictions.clone();
        let mut policies = vec![out.policy.clone()];
        for input in job.inputs.iter().chain(std::iter::once(&job.module)) {
            match input {
                Source::Object { bucket, key } => {
                    let rec = b.authorize(bucket, Need::Read).await?;
                    b.objects().object(bucket, key).await?;
                    policies.push(rec.policy);
                }
                Source::Capability(text) => {
                    let cap = Capability::from_text(text).map_err(BucketError::from)?;
                    if cap.inline.is_some() {
                        // It carries its object: nothing stored anywhere to stay near.
                        continue;
                    }
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
            return Err(JobError::Nowhere(
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
        let checks = spec
            .policy()?
            .quorum_for(&key.reference())
            .map(|quorum| Checks {
                quorum,
                runs: Vec::new(),
                verdict: None,
            });
        // Held against the account's credits while it is queued or running: its fuel limit at
        // the most it may be charged per unit, for every run it may take.
        let max_price = spec.max_price_micro()?;
        let unit = match max_price {
            Some(m) => m,
            None => self.highest_fuel_price().await,
        };
        let runs = checks.as_ref().map_or(1, |c| u64::from(c.quorum.1));
        let hold = weft_ledger::price::job_ceiling(job.limits.fuel, unit).saturating_mul(runs);
        let allowance = quota
            .allowance
            .unwrap_or(weft_ledger::price::DEFAULT_ALLOWANCE);
        let balance = self
            .inner
            .ledger
            .balance(&b.account(), held, allowance)
            .await?;
        if balance.available() < i128::from(hold) {
            let c = weft_ledger::price::credits;
            return Err(JobError::Credits(format!(
                "account {} has {} credits available ({} in its balance, {} held by {active} jobs under way); this job may cost up to {} ({} fuel at {} credits per 10⁹{}) — ask the fabric's admin for credits (`weft ledger grant`), or lower its fuel or max price",
                b.account().short(),
                c(balance.available()),
                c(balance.balance()),
                c(i128::from(held)),
                c(i128::from(hold)),
                job.limits.fuel,
                c(i128::from(unit)),
                if runs > 1 {
                    format!(", {runs} runs")
                } else {
                    String::new()
                },
            )));
        }
        let def = Definition {
            job,
            regions,
            jurisdictions,
            near_node,
            // A result checked on several nodes must be the same on each.
            deterministic: spec.deterministic || checks.is_some(),
        };
        let more = crate::definition::DefinitionMore {
            deterministic: def.deterministic,
        };
        let sealed =
            Self::seal_of(&b, &key.bucket)?.seal(Jobs::KIND, &key.reference(), &(&def, &more));
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
            checks,
            max_price,
            hold,
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
            self.inner.tasks.spawn(async move {
                if let Err(e) = JOB_RPC.call(&endpoint, node, addr, &ask).await {
                    tracing::warn!(standby = %node, error = %e, "a job's standby did not take it");
                }
            });
        }
        Ok(status_of(&key, &rec, &def))
    }
}

impl JobService {
    /// The highest price per 10⁹ fuel a node that may run jobs published (this node's own if
    /// none did): what a job with no maximum is held at.
    async fn highest_fuel_price(&self) -> u64 {
        let lists = self.inner.ledger.price_lists().await;
        self.inner
            .fabric
            .members()
            .iter()
            .filter(|m| m.has_role(weft_core::Role::Compute))
            .filter_map(|m| lists.get(&m.id).map(|p| p.fuel_per_g))
            .max()
            .unwrap_or(self.inner.ledger.prices().fuel_per_g)
    }

    /// Jobs of `b`'s account queued or running, in every bucket it owns, and the credits they
    /// hold (micro-credits).
    pub async fn held_by(&self, b: &weft_data::Acting) -> Result<(usize, u64), JobError> {
        let (mut active, mut held) = (0, 0u64);
        for bucket in b.list_buckets().await? {
            if bucket.owner != b.account() {
                continue;
            }
            let part = weft_compute::schema::JobBucket {
                owner: bucket.owner,
                bucket: bucket.name,
            };
            for (_, row) in self.inner.table.list::<Jobs>(&part, "").await? {
                if let Some(rec) = row.known()
                    && !rec.life.ended()
                {
                    active += 1;
                    held = held.saturating_add(rec.hold);
                }
            }
        }
        Ok((active, held))
    }
}
