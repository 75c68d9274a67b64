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
use weft_meta::{Rules, Schema, Writer, row_kind};

use crate::lease::Life;

/// The partition of a bucket's jobs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobBucket {
    /// The bucket's owner.
    pub owner: NodeId,
    /// The bucket.
    pub bucket: String,
}

row_kind! {
    /// Job rows.
    pub struct Jobs {
        kind: "job",
        writer: Writer::PartitionKey(1),
        part: JobBucket,
        sort: str,
        value: JobRecord,
        partition: |b| format!("{}/{}", b.owner.to_hex(), b.bucket),
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
}
