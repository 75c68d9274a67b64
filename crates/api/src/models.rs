//! `/v1/models`: models as fabric objects — add one (its files already stored as objects of
//! one of the account's buckets), list every model with where it is served, change its
//! placement, remove it. Adding, placing and removing act as the session's account.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use weft_inference::{ModelFile, ModelKind, ModelListing, ModelRecord};

use crate::errors::ApiFailure;
use crate::state::{AppState, Caller};

/// `POST /v1/models` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddModel {
    /// Its name.
    pub name: String,
    /// What it does.
    pub kind: ModelKind,
    /// Its files, stored as objects.
    pub files: Vec<ModelFile>,
    /// How many nodes should serve it.
    pub replicas: u32,
    /// Regions it may be served in (empty: any).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Jurisdictions it may be served in (empty: any).
    #[serde(default)]
    pub jurisdictions: Vec<String>,
}

/// `PUT /v1/models/{name}/placement` body: what to change.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PlaceModel {
    /// How many nodes should serve it.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Regions it may be served in (an empty list: any).
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Jurisdictions it may be served in (an empty list: any).
    #[serde(default)]
    pub jurisdictions: Option<Vec<String>>,
}

pub(crate) async fn add(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Json(m): Json<AddModel>,
) -> Result<Json<ModelRecord>, ApiFailure> {
    let record = ModelRecord {
        name: m.name,
        owner: acting.account(),
        kind: m.kind,
        files: m.files,
        replicas: m.replicas,
        regions: m.regions,
        jurisdictions: m
            .jurisdictions
            .iter()
            .map(|j| j.to_ascii_uppercase())
            .collect(),
        created_ms: 0,
    };
    Ok(Json(s.node.inference().owner(&acting).add(record).await?))
}

pub(crate) async fn list(
    State(s): State<AppState>,
    Caller(_): Caller,
) -> Result<Json<Vec<ModelListing>>, ApiFailure> {
    Ok(Json(s.node.inference().listing().await?))
}

pub(crate) async fn place(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Path(name): Path<String>,
    Json(p): Json<PlaceModel>,
) -> Result<Json<ModelRecord>, ApiFailure> {
    Ok(Json(
        s.node
            .inference()
            .owner(&acting)
            .place(&name, p.replicas, p.regions, p.jurisdictions)
            .await?,
    ))
}

pub(crate) async fn remove(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    s.node.inference().owner(&acting).remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
