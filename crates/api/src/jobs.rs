//! `/v1/jobs`: submit, list, inspect, follow and cancel jobs. Every route acts as the account
//! of the request's session, which the node hands on to the job's runner and standby (so jobs
//! need a session; the operator's token alone is not an account's).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use weft_jobs::{JobSpec, JobStatus};

use crate::errors::ApiFailure;
use crate::state::{AppState, SESSION_HEADER};

/// The session text of a request.
pub(crate) struct SessionText(pub(crate) String);

impl axum::extract::FromRequestParts<AppState> for SessionText {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _s: &AppState,
    ) -> Result<SessionText, ApiFailure> {
        let text = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiFailure(
                    StatusCode::UNAUTHORIZED,
                    "jobs act as an account: send a session (the CLI does; `weft account create`)"
                        .into(),
                )
            })?;
        Ok(SessionText(text.to_string()))
    }
}

/// `GET /v1/jobs` query.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ListJobs {
    /// Only this bucket's jobs.
    #[serde(default)]
    pub bucket: Option<String>,
}

/// `GET /v1/jobs/{bucket}/{id}/logs` query.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LogsQuery {
    /// Stderr instead of stdout.
    #[serde(default)]
    pub stderr: bool,
    /// From this byte.
    #[serde(default)]
    pub offset: u64,
}

/// A piece of a job's log.
#[derive(Debug, Serialize, Deserialize)]
pub struct LogChunk {
    /// The bytes, base64.
    pub data: String,
    /// The offset after them.
    pub next: u64,
    /// Whether the job has not ended yet (more may come).
    pub running: bool,
}

impl LogChunk {
    /// The bytes.
    pub fn bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }
}

pub(crate) async fn submit(
    State(s): State<AppState>,
    SessionText(session): SessionText,
    Json(spec): Json<JobSpec>,
) -> Result<Json<JobStatus>, ApiFailure> {
    Ok(Json(s.node.jobs().submit(&session, &spec).await?))
}

pub(crate) async fn list(
    State(s): State<AppState>,
    SessionText(session): SessionText,
    Query(q): Query<ListJobs>,
) -> Result<Json<Vec<JobStatus>>, ApiFailure> {
    Ok(Json(
        s.node.jobs().list(&session, q.bucket.as_deref()).await?,
    ))
}

pub(crate) async fn status(
    State(s): State<AppState>,
    SessionText(session): SessionText,
    Path((bucket, id)): Path<(String, String)>,
) -> Result<Json<JobStatus>, ApiFailure> {
    Ok(Json(s.node.jobs().status(&session, &bucket, &id).await?))
}

pub(crate) async fn cancel(
    State(s): State<AppState>,
    SessionText(session): SessionText,
    Path((bucket, id)): Path<(String, String)>,
) -> Result<Json<JobStatus>, ApiFailure> {
    Ok(Json(s.node.jobs().cancel(&session, &bucket, &id).await?))
}

pub(crate) async fn logs(
    State(s): State<AppState>,
    SessionText(session): SessionText,
    Path((bucket, id)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<LogChunk>, ApiFailure> {
    let (bytes, running) = s
        .node
        .jobs()
        .logs(&session, &bucket, &id, q.stderr, q.offset)
        .await?;
    Ok(Json(LogChunk {
        next: q.offset + bytes.len() as u64,
        data: base64::engine::general_purpose::STANDARD.encode(&bytes),
        running,
    }))
}
