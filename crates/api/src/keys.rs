//! `/v1/keys`: access keys for the S3 gateway.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use weft_data::{AccessKey, KeyError};

use crate::errors::ApiFailure;
use crate::state::{AppState, Caller};

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
    /// What the key acts with: a session its account signed for exactly this scope (see
    /// `weft_data::AccessKey::grant`). Without one, the key acts for the node's own account,
    /// which only the node's operator may ask for.
    #[serde(default)]
    pub grant: Option<String>,
}

pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Json(k): Json<CreateKey>,
) -> Result<Json<AccessKey>, ApiFailure> {
    if k.grant.is_none() && acting.account() != s.node.data().own().account() {
        return Err(ApiFailure(
            StatusCode::FORBIDDEN,
            "a key for your account needs a grant your account signed (`weft key create` makes \
             one)"
                .into(),
        ));
    }
    let made = match k.grant {
        Some(grant) => acting
            .keys()
            .create(k.bucket, k.read, k.write, grant)
            .await
            .map_err(ApiFailure::from)?,
        None => {
            let keys = s.node.data().node_keys().clone();
            tokio::task::spawn_blocking(move || keys.create(k.bucket, k.read, k.write, None))
                .await
                .map_err(|e| ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(ApiFailure::from)?
        }
    };
    Ok(Json(made))
}

/// Keys of the acting account only: its keys in the table, and (for the node's own account)
/// the keys from before accounts in the node's file.
pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(acting): Caller,
) -> Result<Json<Vec<AccessKey>>, ApiFailure> {
    let mut out: Vec<AccessKey> = Vec::new();
    if acting.account() == s.node.data().own().account() {
        out.extend(s.node.data().node_keys().list());
    }
    match acting.keys().list().await {
        Ok(listed) => out.extend(listed.into_iter().map(AccessKey::from)),
        // A bucket-scoped session cannot read the account's list; the node's own keys stand.
        Err(KeyError::Invalid(_)) if !out.is_empty() => {}
        Err(e) => return Err(ApiFailure::from(e)),
    }
    Ok(Json(out))
}

pub(crate) async fn remove(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    let data = s.node.data();
    if acting.account() == data.own().account() && data.node_keys().lookup(&id).is_some() {
        let keys = data.node_keys().clone();
        tokio::task::spawn_blocking(move || keys.remove(&id))
            .await
            .map_err(|e| ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(ApiFailure::from)?;
        return Ok(StatusCode::NO_CONTENT);
    }
    acting.keys().remove(&id).await.map_err(ApiFailure::from)?;
    Ok(StatusCode::NO_CONTENT)
}
