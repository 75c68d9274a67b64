//! The auditor's routes: the ledger's tiles (what `weft audit` walks itself), where an
//! account's shards live with a fresh storage proof from each holder, and the whole audit run
//! by the node on its own copy (`GET /v1/audit`, for programs that trust the node they ask).
//!
//! The checks that turn these facts into findings ([`object_findings`], and the ledger's
//! [`weft_ledger::audit`]) are shared by the node's report and the CLI's own.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use weft_ledger::audit::{JobProof, PaidJob, prove_job};
pub use weft_node::{ObjectAudit, ObjectsAudit, ShardAudit};

use crate::errors::ApiFailure;
use crate::jobs::SessionText;
use crate::state::{AppState, Caller};

/// `GET /v1/audit/objects` and `GET /v1/audit` parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditParams {
    /// Only this bucket.
    pub bucket: Option<String>,
}

/// How one paid job stands (`GET /v1/audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAudit {
    /// `BUCKET/ID`.
    pub id: String,
    /// `proven`, `pending` (ended within the last minute) or `missing`.
    pub verdict: String,
    /// Receipts found, or why it is not backed.
    pub detail: String,
}

/// `GET /v1/audit` answer: the node's own audit of its copy and the caller's account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditReport {
    /// The cosigned checkpoint walked to.
    pub checkpoint: Option<String>,
    /// What the walk added up (absent when it failed).
    pub ledger: Option<weft_ledger::audit::WalkSummary>,
    /// The account's objects.
    pub objects: ObjectsAudit,
    /// The account's ended jobs that ran.
    pub jobs: Vec<JobAudit>,
    /// Everything that does not pass, each naming what; empty when the audit passes.
    pub findings: Vec<String>,
}

/// What is wrong with `o`: shards outside its regions or jurisdictions, shards whose holder
/// did not prove it holds them.
pub fn object_findings(o: &ObjectAudit) -> Vec<String> {
    let mut out = Vec::new();
    for s in &o.shards {
        let at = format!(
            "{}/{}: shard {} of segment {}{} on node {}",
            o.bucket,
            o.key,
            s.shard,
            s.segment,
            if s.part > 0 || o.shards.iter().any(|x| x.part > 0) {
                format!(" of part {}", s.part)
            } else {
                String::new()
            },
            &s.holder[..s.holder.len().min(16)]
        );
        match (&s.region, &s.jurisdiction) {
            (Some(region), Some(jurisdiction)) => {
                if !o.regions.is_empty() && !o.regions.contains(region) {
                    out.push(format!(
                        "{at} is in region {region}, outside the bucket's regions ({})",
                        o.regions.join(", ")
                    ));
                }
                if !o.jurisdictions.is_empty()
                    && !o
                        .jurisdictions
                        .iter()
                        .any(|j| j.eq_ignore_ascii_case(jurisdiction))
                {
                    out.push(format!(
                        "{at} is under jurisdiction {jurisdiction:?}, outside the bucket's ({})",
                        o.jurisdictions.join(", ")
                    ));
                }
            }
            _ => out.push(format!("{at}: that node is not a member of the fabric")),
        }
        if s.proof != "passed" {
            out.push(format!("{at}: no proof it holds the shard ({})", s.proof));
        }
    }
    out
}

/// `GET /v1/ledger/tile/{*path}`: a tile or entry bundle of the cosigned log (C2SP
/// tlog-tiles paths below `tile/`).
pub(crate) async fn tile(
    State(s): State<AppState>,
    _who: Caller,
    Path(rest): Path<String>,
) -> Result<Response, ApiFailure> {
    let rel = format!("tile/{rest}");
    match s.node.ledger().tile(&rel)? {
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        None => Err(ApiFailure(
            StatusCode::NOT_FOUND,
            format!("{rel} names no tile of the cosigned ledger"),
        )),
    }
}

/// `GET /v1/audit/objects`.
pub(crate) async fn objects(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Query(q): Query<AuditParams>,
) -> Result<Json<ObjectsAudit>, ApiFailure> {
    Ok(Json(
        s.node.audit_objects(&acting, q.bucket.as_deref()).await?,
    ))
}

/// What a job's listing says about the run its result came from, for [`prove_job`]; `None`
/// for a job that did not end done.
pub fn paid_job(j: &weft_jobs::JobStatus) -> Option<PaidJob> {
    if j.state != "done" {
        return None;
    }
    let agreed = j.verification.as_ref().and_then(|v| {
        let result: weft_core::ContentHash = v.result.as_deref()?.parse().ok()?;
        let k = v.quorum.split("-of-").next()?.parse().ok()?;
        Some((result, k))
    });
    let last = j
        .runs
        .iter()
        .max_by_key(|r| r.attempt)
        .and_then(|r| Some((r.attempt, r.runner.parse().ok()?)));
    Some(PaidJob {
        id: j.id.clone(),
        ended_ms: j.ended_ms.unwrap_or(j.submitted_ms),
        last,
        agreed,
    })
}

/// `JobProof` as a report line.
pub fn job_audit(id: &str, proof: &JobProof) -> JobAudit {
    let (verdict, detail) = match proof {
        JobProof::Proven(n) => ("proven", format!("{n} receipt(s) in the ledger")),
        JobProof::Pending => (
            "pending",
            "ended within the last minute; its receipts may not be cosigned yet".into(),
        ),
        JobProof::Missing(why) => ("missing", why.clone()),
    };
    JobAudit {
        id: id.into(),
        verdict: verdict.into(),
        detail,
    }
}

/// `GET /v1/audit`: the node audits its own copy of the ledger and the caller's account.
pub(crate) async fn report(
    State(s): State<AppState>,
    Caller(acting): Caller,
    SessionText(session): SessionText,
    Query(q): Query<AuditParams>,
) -> Result<Json<AuditReport>, ApiFailure> {
    let mut findings = Vec::new();
    let ledger = s.node.ledger().clone();
    let walked = tokio::task::spawn_blocking(move || ledger.walk())
        .await
        .map_err(|e| ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (checkpoint, summary) = match walked {
        Ok((note, summary)) => (Some(note), Some(summary)),
        Err(e) => {
            findings.push(format!("the node's copy of the ledger: {e}"));
            (None, None)
        }
    };
    let objects = s.node.audit_objects(&acting, q.bucket.as_deref()).await?;
    findings.extend(objects.objects.iter().flat_map(object_findings));
    let mut receipts = Vec::new();
    loop {
        let page = s
            .node
            .ledger()
            .receipts_for(&acting.account(), receipts.len(), 1000)?;
        let n = page.len();
        receipts.extend(page.into_iter().map(|i| i.receipt));
        if n < 1000 {
            break;
        }
    }
    let now = crate::state::now_ms();
    let mut jobs = Vec::new();
    for j in s.node.jobs().list(&session, q.bucket.as_deref()).await? {
        let Some(paid) = paid_job(&j) else { continue };
        let proof = prove_job(&paid, &receipts, now);
        if let JobProof::Missing(why) = &proof {
            findings.push(format!("job {}: {why}", paid.id));
        }
        jobs.push(job_audit(&paid.id, &proof));
    }
    Ok(Json(AuditReport {
        checkpoint,
        ledger: summary,
        objects,
        jobs,
        findings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(region: &str, proof: &str) -> ShardAudit {
        ShardAudit {
            part: 0,
            segment: 0,
            shard: 1,
            hash: "00".repeat(32),
            holder: "ab".repeat(32),
            region: Some(region.into()),
            jurisdiction: Some("DE".into()),
            proof: proof.into(),
        }
    }

    #[test]
    fn shards_outside_their_regions_or_unproven_are_named() {
        let mut o = ObjectAudit {
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            regions: vec!["eu".into()],
            jurisdictions: vec![],
            shards: vec![shard("eu", "passed")],
        };
        assert!(object_findings(&o).is_empty());
        o.shards.push(shard("us", "passed"));
        let f = object_findings(&o);
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("b/k: shard 1 of segment 0"), "{f:?}");
        assert!(f[0].contains("region us"), "{f:?}");
        o.shards = vec![shard("eu", "failed")];
        let f = object_findings(&o);
        assert!(
            f[0].contains("no proof it holds the shard (failed)"),
            "{f:?}"
        );
        o.jurisdictions = vec!["fr".into()];
        o.shards = vec![shard("eu", "passed")];
        assert!(object_findings(&o)[0].contains("jurisdiction \"DE\""));
        o.shards[0].region = None;
        assert!(object_findings(&o)[0].contains("not a member"));
    }
}
