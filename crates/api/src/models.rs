//! `/v1/models`: models as fabric objects — add one (its files already stored as objects of
//! one of the account's buckets), list every model with where it is served, change its
//! placement, remove it. Adding, placing and removing act as the session's account.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use weft_node::models::holders;
use weft_node::{ModelError, ModelFile, ModelKind, ModelRecord, ModelService};

use crate::errors::ApiFailure;
use crate::server::{Acting, AppState};

impl From<ModelError> for ApiFailure {
    fn from(e: ModelError) -> Self {
        let status = match &e {
            ModelError::Invalid(_) => StatusCode::BAD_REQUEST,
            ModelError::Exists(_) => StatusCode::CONFLICT,
            ModelError::NoModel(_) => StatusCode::NOT_FOUND,
            ModelError::NotOwner(_) => StatusCode::FORBIDDEN,
            ModelError::Bucket(b) => crate::errors::bucket_status(b),
            ModelError::Meta(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiFailure(status, e.to_string())
    }
}

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

/// A node's part in serving a model.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelReplica {
    /// The node (hex id).
    pub node: String,
    /// Its site.
    pub site: String,
    /// Its region.
    pub region: String,
    /// `ready`, `loading`, `failed` (see `error`), or `placed` (chosen, not started yet).
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// One model, as listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelListing {
    /// Its row.
    #[serde(flatten)]
    pub model: ModelRecord,
    /// Bytes of its files.
    pub size: u64,
    /// The nodes the placement picks now, and those that still say they hold it.
    pub replicas_now: Vec<ModelReplica>,
}

pub(crate) async fn add(
    Acting(acting): Acting,
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
    Ok(Json(acting.add_model(record).await?))
}

pub(crate) async fn list(
    State(s): State<AppState>,
    Acting(_): Acting,
) -> Result<Json<Vec<ModelListing>>, ApiFailure> {
    let table = s.node.table();
    let members = s.node.fabric().members();
    let mut out = Vec::new();
    for model in ModelService::models(table).await? {
        let digest = model.digest();
        let said: BTreeMap<_, _> = ModelService::serving(table, &model.name)
            .await?
            .into_iter()
            .filter(|(_, sv)| sv.digest == digest)
            .collect();
        let placed = holders(&model, &members);
        let mut nodes: Vec<_> = placed.clone();
        nodes.extend(said.keys().filter(|n| !placed.contains(n)).copied());
        let replicas_now = nodes
            .into_iter()
            .map(|n| {
                let member = members.iter().find(|m| m.id == n);
                let (state, error) = match said.get(&n) {
                    Some(sv) if sv.ready => ("ready", None),
                    Some(sv) if sv.error.is_some() => ("failed", sv.error.clone()),
                    Some(_) => ("loading", None),
                    None => ("placed", None),
                };
                ModelReplica {
                    node: n.to_hex(),
                    site: member.map(|m| m.placement.site.clone()).unwrap_or_default(),
                    region: member
                        .map(|m| m.placement.region.clone())
                        .unwrap_or_default(),
                    state: state.into(),
                    error,
                }
            })
            .collect();
        out.push(ModelListing {
            size: model.size(),
            model,
            replicas_now,
        });
    }
    Ok(Json(out))
}

pub(crate) async fn place(
    Acting(acting): Acting,
    Path(name): Path<String>,
    Json(p): Json<PlaceModel>,
) -> Result<Json<ModelRecord>, ApiFailure> {
    Ok(Json(
        acting
            .place_model(&name, p.replicas, p.regions, p.jurisdictions)
            .await?,
    ))
}

pub(crate) async fn remove(
    Acting(acting): Acting,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    acting.remove_model(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
