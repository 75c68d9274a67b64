//! `/v1/keys`: access keys for the S3 gateway.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use weft_node::AccessKey;

use crate::errors::ApiFailure;
use crate::server::AppState;

/// `POST /v1/keys` body.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateKey {
    /// Limit the key to this bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
}

pub(crate) async fn create(
    State(s): State<AppState>,
    Json(k): Json<CreateKey>,
) -> Result<Json<AccessKey>, ApiFailure> {
    let keys = s.node.keys().clone();
    let made = tokio::task::spawn_blocking(move || keys.create(k.bucket, k.read, k.write))
        .await
        .map_err(|e| ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiFailure::from)?;
    Ok(Json(made))
}

pub(crate) async fn list(State(s): State<AppState>) -> Json<Vec<AccessKey>> {
    Json(s.node.keys().list())
}

pub(crate) async fn remove(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let keys = s.node.keys().clone();
    tokio::task::spawn_blocking(move || keys.remove(&id))
        .await
        .map_err(|e| ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiFailure::from)?;
    Ok(StatusCode::NO_CONTENT)
}
