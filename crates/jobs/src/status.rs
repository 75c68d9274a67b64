//! A job as people see it (`weft job status`): built from its row and definition.

use serde::{Deserialize, Serialize};
use weft_compute::lease::JobState;
use weft_compute::schema::{Checked, Checks, JobRecord};
use weft_core::NodeId;

use crate::JobKey;
use crate::definition::{Definition, source_text};

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
    /// Whether it runs in the deterministic profile.
    #[serde(default)]
    pub deterministic: bool,
    /// How its result is being checked on several nodes, if it is.
    #[serde(default)]
    pub verification: Option<VerificationView>,
}

/// A checked job's runs and verdict, for display.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerificationView {
    /// `K-of-N`.
    pub quorum: String,
    /// `checking`, `agreed` or `undecided`.
    pub verdict: String,
    /// The result that stood (hex), once agreed.
    pub result: Option<String>,
    /// Runs that exited, with the result each signed (hex; `None`: its receipt does not
    /// verify).
    pub runs: Vec<CheckView>,
    /// Nodes that signed another result than the one that stood.
    pub wrong: Vec<String>,
}

/// One run of a checked job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckView {
    /// The attempt.
    pub attempt: u32,
    /// Its runner.
    pub runner: String,
    /// Its site.
    pub site: String,
    /// The result commitment its receipt signs.
    pub result: Option<String>,
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

pub(crate) fn status_of(key: &JobKey, rec: &JobRecord, def: &Definition) -> JobStatus {
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
        deterministic: def.deterministic,
        verification: rec.checks.as_ref().map(|c| verification(key, rec, c)),
    }
}

/// A checked job's runs as the coordinator counts them: a run's result shows only when its
/// receipt is one [`crate::check::read_run`] takes.
fn verification(key: &JobKey, rec: &JobRecord, c: &Checks) -> VerificationView {
    let request = crate::run::request_of(key, rec);
    let (verdict, result, wrong) = match &c.verdict {
        None => ("checking", None, Vec::new()),
        Some(Checked::Undecided) => ("undecided", None, Vec::new()),
        Some(Checked::Agreed { result, wrong, .. }) => (
            "agreed",
            Some(result.to_hex()),
            wrong.iter().map(NodeId::to_hex).collect(),
        ),
    };
    VerificationView {
        quorum: format!("{}-of-{}", c.quorum.0, c.quorum.1),
        verdict: verdict.into(),
        result,
        runs: c
            .runs
            .iter()
            .map(|r| CheckView {
                attempt: r.attempt,
                runner: r.runner.to_hex(),
                site: r.site.clone(),
                result: crate::check::read_run(key, request, r).map(|s| s.result.to_hex()),
            })
            .collect(),
        wrong,
    }
}
