//! The job service: submitting, placing, running, watching and reporting WebAssembly jobs
//! across the fabric. Each part of a job's life is a module of its own:
//!
//! - **Submitting** ([`submit`]). Any node takes a submission, with the client's session. It
//!   checks the session may write the output bucket and read every input, works out where the
//!   job may run (the inputs' and the output bucket's residency, narrowed by the spec), writes
//!   the job's row (its definition sealed under the output bucket's key, [`definition`]) and
//!   becomes the job's *coordinator*; it hands the session to one *standby* node too, over the
//!   node channel ([`protocol`]). Sessions are never written to a row. The session a job
//!   carries is the owner's own narrow capability (`Scope::Own`: signs the output bucket only,
//!   reads the inputs' buckets, lasts the job's time).
//! - **Coordinating** ([`coordinate`]). The coordinator reads the row a few times a second. A
//!   queued job is ranked with the scheduler core ([`weft_compute::schedule`]) — the typed
//!   membership (roles, health, residency, labels, cpu and memory offered and reserved,
//!   coordinates) and where the shards of the job's inputs are now — and offered to the best
//!   nodes in turn. A lease that lapsed (its runner died or was cut off) is requeued as the next
//!   attempt, placed away from that runner, after a backoff.
//! - **Standing by** ([`standby`]). The standby does what the coordinator does, at once while
//!   the coordinator is gone and a little later otherwise (a coordinator that restarted has
//!   forgotten its jobs); every transition is conditional on the row version read, so both
//!   acting is safe.
//! - **Running** ([`run`], [`runner`]). A runner reserves room for an offer on its own
//!   resources or refuses; the coordinator then starts the attempt there, handing over the
//!   job's capability (to that one node only), and the runner claims the row's lease
//!   ([`weft_compute::lease`]) or refuses. It runs the job — buckets
//!   authorized before a byte is fetched, inputs mounted read-only, the module in the sandbox,
//!   outputs written back as objects — renewing its lease every second; a renewal refused (the
//!   job was cancelled, or the lease lapsed) stops the run. It records the result with a
//!   conditional update only the current attempt's claimant can make, once.
//! - **Reporting** ([`query`], [`status`]). Status, listing, cancellation and logs (from the
//!   runner while it runs, from the saved objects after) for the account a session acts as.
//!
//! **At most one live run, one result:** in a connected fabric a new attempt is claimed only
//! after the old lease lapsed, and a runner that cannot renew has stopped by then. A partition
//! can delay a job by a lease, never record it twice.
//!
//! **Invariant:** no HTTP and no CLI; decisions (placement, leases, specs) are the IO-free cores
//! of `weft-compute`, this crate only drives them.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod check;
pub mod coordinate;
pub mod definition;
mod error;
pub mod protocol;
pub mod query;
pub mod run;
pub mod runner;
pub mod standby;
pub mod status;
pub mod submit;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use weft_compute::runtime::Runtime;
use weft_core::NodeId;
use weft_data::{Acting, DataPlane};
use weft_fabric::Fabric;
use weft_host::{Context, HostError, Service, Tasks};
use weft_meta::Table;
use weft_net::Endpoint;
use weft_store::Storage;

pub use definition::{JobKey, parse_reference};
pub use error::{JobError, RunnerError};
pub use runner::{JobReport, Tamper, deterministic_profile, result_commitment, run_job};
pub use status::{CheckView, JobStatus, PlacementView, RunView, VerificationView};
/// What a job file holds, and its validated form (re-exported for the front ends).
pub use weft_compute::spec::{Job, JobSpec, SpecError};

/// The job service of a node. Cheap to clone.
#[derive(Clone)]
pub struct JobService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) me: NodeId,
    pub(crate) endpoint: Endpoint,
    pub(crate) fabric: Fabric,
    pub(crate) table: Table,
    pub(crate) storage: Storage,
    pub(crate) data: DataPlane,
    /// Where this node's receipts for the attempts it ran go.
    pub(crate) ledger: weft_ledger::Ledger,
    pub(crate) tasks: Tasks,
    /// Where running jobs' working folders are.
    pub(crate) dir: PathBuf,
    pub(crate) runtime: OnceLock<Result<Runtime, String>>,
    pub(crate) config: JobsConfig,
    pub(crate) cpu_milli: u32,
    pub(crate) memory: u64,
    pub(crate) running: Mutex<HashMap<JobKey, run::Local>>,
    pub(crate) watching: Mutex<HashSet<JobKey>>,
    /// What this node does to the outputs it signs: `None` on every honest node.
    pub(crate) tamper: Mutex<Option<runner::Tamper>>,
}

/// What an operator sets for the jobs its node runs (`[jobs]` in `node.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobsConfig {
    /// Most bytes one run may write (`/out`, stdout and stderr together) before it is stopped.
    pub output_quota: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            output_quota: weft_compute::runtime::MAX_OUTPUT_BYTES,
        }
    }
}

impl Service for JobService {
    const NAME: &'static str = "jobs";

    /// Serve the job protocol with the node's resources; running jobs work in `<data>/jobs`.
    fn start(ctx: &Context) -> Result<JobService, HostError> {
        let data = ctx.service::<DataPlane>(Self::NAME)?;
        let ledger = ctx.service::<weft_ledger::Ledger>(Self::NAME)?;
        let svc = JobService {
            inner: Arc::new(Inner {
                me: ctx.id(),
                endpoint: ctx.endpoint.clone(),
                fabric: ctx.fabric.clone(),
                table: ctx.table.clone(),
                storage: ctx.storage.clone(),
                data,
                ledger,
                tasks: ctx.tasks(),
                dir: ctx.folder("jobs"),
                runtime: OnceLock::new(),
                config: ctx.setting::<JobsConfig>().unwrap_or_default(),
                cpu_milli: ctx.capacity.cpus.max(1).saturating_mul(1000),
                memory: ctx.capacity.mem_bytes,
                running: Mutex::new(HashMap::new()),
                watching: Mutex::new(HashSet::new()),
                tamper: Mutex::new(None),
            }),
        };
        // A previous run's leftovers: jobs that were running when the node stopped.
        let _ = std::fs::remove_dir_all(&svc.inner.dir);
        protocol::register(&svc);
        Ok(svc)
    }
}

impl JobService {
    /// The sandbox, made on first use (a node that never runs a job never builds one).
    pub(crate) fn runtime(&self) -> Result<Runtime, String> {
        self.inner
            .runtime
            .get_or_init(|| {
                Runtime::new()
                    .map(|r| r.with_output_quota(self.inner.config.output_quota))
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Make this node a lying runner: every run's outputs pass through `tamper` before they
    /// are written and their result signed. For the rogue test kit (`weft_cluster::Rogue`),
    /// which plays a modified member binary; an honest node never calls it.
    #[doc(hidden)]
    pub fn rogue_tamper_outputs(&self, tamper: runner::Tamper) {
        *self.inner.tamper.lock() = Some(tamper);
    }

    /// The account `session` acts for, through this node.
    pub(crate) fn acting(&self, session: &str) -> Result<Acting, JobError> {
        Ok(self.inner.data.session(session)?)
    }
}

pub(crate) fn now_ms() -> u64 {
    weft_net::now_ms()
}
