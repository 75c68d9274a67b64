//! The row kind compute keeps in the metadata table. Every key of this kind is made here.
//!
//! | kind | partition key | sort key | value | written by |
//! |---|---|---|---|---|
//! | `job` | `job/<account>/<bucket>` (the job's output bucket) | job id | [`JobRecord`] | the account, through the sessions it handed the nodes coordinating and running the job |
//!
//! A job belongs to its output bucket's owner, so a session scoped to that bucket (a grant)
//! can submit and run it, and replicas check its delegation as for the bucket's objects. What
//! the job runs — module, arguments, environment, input names — is sealed under the bucket's
//! key (`JobRecord::sealed`): the table's replicas see only its state, placement and figures.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;
use weft_meta::{Rules, Schema, Writer};

use crate::lease::Life;

/// The partition of a bucket's jobs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobBucket {
    /// The bucket's owner.
    pub owner: NodeId,
    /// The bucket.
    pub bucket: String,
}

/// Job rows.
pub struct Jobs;

impl Schema for Jobs {
    const KIND: &'static str = "job";
    const WRITER: Writer = Writer::PartitionKey(1);
    /// 2: [`JobRecord::checks`], `max_price` and `hold` added (format 1 records are jobs run
    /// once, at any price, holding nothing).
    const FORMAT: u8 = 2;
    type Part = JobBucket;
    type Sort = str;
    type Value = JobRecord;

    fn partition(b: &JobBucket) -> String {
        format!("{}/{}", b.owner.to_hex(), b.bucket)
    }

    fn decode(format: u8, body: &[u8]) -> Result<JobRecord, weft_core::wire::WireError> {
        match format {
            1 => weft_core::wire::decode::<JobRecordV1>(body).map(JobRecord::from),
            _ => weft_core::wire::decode(body),
        }
    }
}

/// Declare compute's row kinds.
pub fn register(rules: &mut Rules) {
    rules.add(Jobs::KIND, Jobs::WRITER);
}

/// Why a runner was chosen: the scheduler's figures for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The runner.
    pub runner: NodeId,
    /// Its score.
    pub score: f64,
    /// Input bytes whose shards it holds.
    pub local_bytes: u64,
    /// Input bytes held elsewhere in its site.
    pub site_bytes: u64,
    /// Input bytes held in other sites.
    pub remote_bytes: u64,
    /// Estimated transfer time of what is not local, ms.
    pub transfer_ms: u64,
    /// Feasible nodes it was chosen among.
    pub candidates: u32,
    /// Nodes left out, and why (e.g. "3 outside its residency").
    pub filtered: String,
    /// Runners that refused it first, with their reasons.
    pub refused: Vec<(NodeId, String)>,
}

/// What one finished attempt did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFigures {
    /// The attempt.
    pub attempt: u32,
    /// Where it ran.
    pub runner: NodeId,
    /// Unix ms it started (claimed) and ended.
    pub started_ms: u64,
    /// Unix ms it ended.
    pub ended_ms: u64,
    /// Fuel used.
    pub fuel_used: u64,
    /// Wall time of the module, ms.
    pub wall_ms: u64,
    /// Input bytes read.
    pub input_bytes: u64,
    /// Objects written (key, size), stdout and stderr included.
    pub outputs: Vec<(String, u64)>,
}

/// A job's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job (a [`crate::spec::Job`] with its module and inputs resolved), sealed under the
    /// output bucket's key.
    pub sealed: Vec<u8>,
    /// Its life: state, attempts, where it failed.
    pub life: Life,
    /// Unix ms it was submitted.
    pub submitted_ms: u64,
    /// The node it was submitted to, which schedules it and requeues it if its runner is lost.
    pub coordinator: NodeId,
    /// A second node holding its session, which takes over if the coordinator is lost.
    pub standby: Option<NodeId>,
    /// Where the current or last attempt was placed, and why.
    pub placement: Option<Placement>,
    /// Unix ms the current or last attempt was claimed.
    pub started_ms: Option<u64>,
    /// How the finished attempts went, oldest first.
    pub runs: Vec<RunFigures>,
    /// For a job whose result is checked on several nodes: the quorum, each run's receipt and
    /// the verdict.
    pub checks: Option<Checks>,
    /// The most it may cost per 10⁹ fuel, micro-credits (`None`: any price).
    pub max_price: Option<u64>,
    /// Micro-credits held against its account's balance while it is queued or running: its
    /// fuel limit at the price it may run at, times the runs it may take.
    pub hold: u64,
}

/// A job's row as format 1 kept it.
#[derive(Deserialize)]
struct JobRecordV1 {
    sealed: Vec<u8>,
    life: Life,
    submitted_ms: u64,
    coordinator: NodeId,
    standby: Option<NodeId>,
    placement: Option<Placement>,
    started_ms: Option<u64>,
    runs: Vec<RunFigures>,
}

impl From<JobRecordV1> for JobRecord {
    fn from(v: JobRecordV1) -> JobRecord {
        JobRecord {
            sealed: v.sealed,
            life: v.life,
            submitted_ms: v.submitted_ms,
            coordinator: v.coordinator,
            standby: v.standby,
            placement: v.placement,
            started_ms: v.started_ms,
            runs: v.runs,
            checks: None,
            max_price: None,
            hold: 0,
        }
    }
}

/// How a job's result is being checked (see [`crate::verify`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// `(k, n)`: runs that must agree, runs allowed.
    pub quorum: (u8, u8),
    /// Runs that exited, oldest first.
    pub runs: Vec<CheckRun>,
    /// The verdict, once reached.
    pub verdict: Option<Checked>,
}

/// One run of a checked job, as its runner signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    /// The attempt.
    pub attempt: u32,
    /// The node that ran it.
    pub runner: NodeId,
    /// Its site.
    pub site: String,
    /// Its receipt for the run (a `weft-ledger` receipt, encoded): what it signed as the
    /// result. Readers trust only what verifies.
    pub receipt: Vec<u8>,
}

/// The verdict on a checked job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Checked {
    /// `agreeing` runs signed `result`; its outputs are the job's; `wrong` signed another.
    Agreed {
        /// The commitment that stood.
        result: weft_core::ContentHash,
        /// The attempt whose outputs were kept.
        attempt: u32,
        /// Nodes that signed it.
        agreeing: Vec<NodeId>,
        /// Nodes that signed another result.
        wrong: Vec<NodeId>,
    },
    /// No result reached the quorum within the runs allowed.
    Undecided,
}
