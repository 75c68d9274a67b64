//! `/v1/buckets` and `/v1/b/{bucket}/{key}`: buckets and named objects.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use weft_data::{BucketRecord, Need, ObjectRecord};

use crate::errors::ApiFailure;
use crate::objects::{PutAnswer, placement};
use crate::state::{AppState, Caller};

/// `POST /v1/buckets` body.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CreateBucket {
    /// Name.
    pub name: String,
    /// Allowed regions, comma separated.
    #[serde(default)]
    pub regions: String,
    /// Allowed jurisdictions, comma separated.
    #[serde(default)]
    pub jurisdictions: String,
    /// Erasure coding such as `4+2`.
    #[serde(default)]
    pub ec: String,
    /// Versions of each object to keep (default 1: only the current one).
    #[serde(default)]
    pub versions: Option<u32>,
    /// The most a node holding its shards may charge, credits per GB-month (default: any).
    #[serde(default)]
    pub max_price: Option<f64>,
}

/// One row of a listing.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListedObject {
    /// Key.
    pub key: String,
    /// Size.
    pub size: u64,
    /// Content id (hex).
    pub content_id: String,
    /// Unix ms.
    pub created_ms: u64,
    /// Version id.
    pub version: String,
    /// Kept in its row (a small object), not stored in segments.
    #[serde(default)]
    pub inline: bool,
}

impl ListedObject {
    fn new(key: String, r: &ObjectRecord) -> ListedObject {
        ListedObject {
            key,
            size: r.size,
            content_id: r.content_id.to_hex(),
            created_ms: r.created_ms,
            version: r.version.clone(),
            inline: r.is_inline(),
        }
    }
}

/// `?version=` of a read.
#[derive(Debug, Default, Deserialize)]
pub struct VersionQuery {
    /// Version id (default: the current version).
    #[serde(default)]
    pub version: Option<String>,
}

/// `?prefix=` of a listing.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Key prefix.
    #[serde(default)]
    pub prefix: String,
}

pub(crate) async fn create(
    Caller(acting): Caller,
    Json(b): Json<CreateBucket>,
) -> Result<Json<BucketRecord>, ApiFailure> {
    let (mut policy, ec) = placement(&b.regions, &b.jurisdictions, &b.ec)?;
    if let Some(credits) = b.max_price {
        if !(0.0..=1e6).contains(&credits) {
            return Err(ApiFailure(
                StatusCode::BAD_REQUEST,
                format!("max price {credits}: credits per GB-month, from 0 to 10^6"),
            ));
        }
        policy.max_price = Some((credits * weft_ledger::price::MICRO as f64).round() as u64);
    }
    Ok(Json(
        acting
            .create_bucket(&b.name, policy, ec, b.versions.unwrap_or(1))
            .await
            .map_err(ApiFailure::from)?,
    ))
}

pub(crate) async fn get_bucket(
    Caller(acting): Caller,
    Path(name): Path<String>,
) -> Result<Json<BucketRecord>, ApiFailure> {
    let b = acting
        .authorize(&name, Need::Read)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(b))
}

pub(crate) async fn usage(Caller(acting): Caller) -> Result<Json<crate::UsageAnswer>, ApiFailure> {
    let quota = acting.quota().await.map_err(ApiFailure::from)?;
    Ok(Json(crate::UsageAnswer {
        account: acting.account().to_hex(),
        stored_bytes: acting.usage().await.map_err(ApiFailure::from)?,
        quota_bytes: quota.bytes,
        quota_jobs: quota.jobs,
    }))
}

pub(crate) async fn list_buckets(
    Caller(acting): Caller,
) -> Result<Json<Vec<BucketRecord>>, ApiFailure> {
    Ok(Json(acting.list_buckets().await.map_err(ApiFailure::from)?))
}

pub(crate) async fn list_objects(
    Caller(acting): Caller,
    Path(bucket): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ListedObject>>, ApiFailure> {
    let rows = acting
        .objects()
        .list(&bucket, &q.prefix)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(
        rows.into_iter()
            .map(|(key, r)| ListedObject::new(key, &r))
            .collect(),
    ))
}

pub(crate) async fn put(
    Caller(acting): Caller,
    Path((bucket, key)): Path<(String, String)>,
    body: Body,
) -> Result<Json<PutAnswer>, ApiFailure> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let (record, manifest) = acting
        .objects()
        .put(&bucket, &key, reader)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(match manifest {
        Some(manifest) => PutAnswer {
            capability: String::new(),
            content_id: manifest.content_id.to_hex(),
            size: manifest.size,
            segments: manifest.segments.len(),
            ec: manifest.ec.to_string(),
        },
        // Kept in its row: no segments, no coding of its own.
        None => PutAnswer {
            capability: String::new(),
            content_id: record.content_id.to_hex(),
            size: record.size,
            segments: 0,
            ec: PutAnswer::INLINE.into(),
        },
    }))
}

pub(crate) async fn get(
    State(s): State<AppState>,
    Caller(acting): Caller,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiFailure> {
    let buckets = acting;
    // Private by default: `object`/`version` authorize the account before reading anything.
    let record = match &q.version {
        None => buckets.objects().object(&bucket, &key).await,
        Some(v) => buckets.objects().version(&bucket, &key, v).await,
    }
    .map_err(ApiFailure::from)?;
    let bill = Some((
        buckets.account(),
        format!("{bucket}/{key}@{}", record.version),
    ));
    // A whole object's manifest is fetched first, so a bad one fails with a status.
    if record.parts.is_empty() && !record.is_inline() {
        let cap = buckets
            .objects()
            .capability_of(&bucket, &key, &record)
            .map_err(ApiFailure::from)?;
        return crate::objects::stream_object(&s, cap, &headers, bill).await;
    }
    Ok(crate::objects::ranged_body(
        &s.node,
        record.size,
        &headers,
        bill,
        move |start, end, writer| async move {
            buckets
                .objects()
                .read_range((&bucket, &key), &record, start, end, writer)
                .await
                .map_err(|e| e.to_string())
        },
    ))
}

pub(crate) async fn versions(
    Caller(acting): Caller,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Json<Vec<ListedObject>>, ApiFailure> {
    let rows = acting
        .objects()
        .versions(&bucket, &key)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(
        rows.iter()
            .map(|r| ListedObject::new(key.clone(), r))
            .collect(),
    ))
}

pub(crate) async fn delete_bucket(
    Caller(acting): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    acting
        .delete_bucket(&name)
        .await
        .map_err(ApiFailure::from)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete(
    Caller(acting): Caller,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiFailure> {
    acting
        .objects()
        .delete(&bucket, &key)
        .await
        .map_err(ApiFailure::from)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn share(
    Caller(acting): Caller,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiFailure> {
    let cap = acting
        .objects()
        .capability(&bucket, &key)
        .await
        .map_err(ApiFailure::from)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Json(serde_json::json!({ "capability": cap.to_text() })),
    )
        .into_response())
}

/// `DELETE /v1/buckets/{name}/grants/{account}` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Revoked {
    /// Grants revoked.
    pub revoked: usize,
}

pub(crate) async fn put_grant(
    Caller(acting): Caller,
    Path(name): Path<String>,
    Json(grant): Json<weft_data::Grant>,
) -> Result<Json<weft_data::GrantListing>, ApiFailure> {
    acting
        .grants()
        .put(&name, &grant)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(weft_data::GrantListing {
        grantee: grant.grantee,
        write: grant.write,
        created_ms: grant.created_ms,
    }))
}

pub(crate) async fn list_grants(
    Caller(acting): Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<weft_data::GrantListing>>, ApiFailure> {
    Ok(Json(
        acting
            .grants()
            .list(&name)
            .await
            .map_err(ApiFailure::from)?,
    ))
}

pub(crate) async fn revoke_grant(
    Caller(acting): Caller,
    Path((name, account)): Path<(String, String)>,
) -> Result<Json<Revoked>, ApiFailure> {
    let grantee: weft_core::NodeId = account.parse().map_err(|_| {
        ApiFailure(
            StatusCode::BAD_REQUEST,
            format!("{account:?} is not an account id (64 hex digits)"),
        )
    })?;
    let revoked = acting
        .grants()
        .revoke(&name, &grantee)
        .await
        .map_err(ApiFailure::from)?;
    Ok(Json(Revoked { revoked }))
}

pub(crate) async fn grant_lookup(
    Caller(acting): Caller,
    Path(name): Path<String>,
) -> Result<Json<weft_data::GrantLookup>, ApiFailure> {
    Ok(Json(
        acting
            .grants()
            .lookup(&name)
            .await
            .map_err(ApiFailure::from)?,
    ))
}
