//! The one mapping from what the node's services can answer to an HTTP status and an
//! `{"error": ...}` body, for every route of the API (a route adds only its own request's
//! parsing errors).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weft_data::{BucketError, KeyError, MetaError, StorageError};
use weft_inference::ModelError;
use weft_jobs::JobError;
use weft_node::NodeError;

use crate::ErrorBody;

/// A failed request: its status and the message the user sees.
pub(crate) struct ApiFailure(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn storage_status(e: &StorageError) -> StatusCode {
    match e {
        StorageError::Placement(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StorageError::BadCapability(_) | StorageError::InlineCorrupt => StatusCode::BAD_REQUEST,
        // Asked for what a capability that carries its object does not have (a manifest).
        StorageError::Inline(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StorageError::ManifestUnavailable(_) => StatusCode::NOT_FOUND,
        // A manifest this node cannot use (newer format, malformed): the object exists but
        // cannot be served from here.
        StorageError::Manifest(..) => StatusCode::BAD_GATEWAY,
        StorageError::Io(_) => StatusCode::BAD_REQUEST,
        StorageError::Codec(_)
        | StorageError::Write { .. }
        | StorageError::Unreadable { .. }
        | StorageError::Catalog(_) => StatusCode::BAD_GATEWAY,
    }
}

impl From<StorageError> for ApiFailure {
    fn from(e: StorageError) -> Self {
        ApiFailure(storage_status(&e), e.to_string())
    }
}

impl From<weft_ledger::LedgerError> for ApiFailure {
    fn from(e: weft_ledger::LedgerError) -> Self {
        use weft_ledger::LedgerError as L;
        let status = match &e {
            L::NotYet { .. } => StatusCode::NOT_FOUND,
            L::Replica(weft_ledger::ReplicaError::Log(weft_tlog::LogError::OutOfRange {
                ..
            })) => StatusCode::BAD_REQUEST,
            L::Meta(_) | L::Diverged(_) => StatusCode::BAD_GATEWAY,
            L::Issued(_) | L::Replica(_) | L::Audit(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiFailure(status, e.to_string())
    }
}

impl From<BucketError> for ApiFailure {
    fn from(e: BucketError) -> Self {
        ApiFailure(bucket_status(&e), e.to_string())
    }
}

pub(crate) fn bucket_status(e: &BucketError) -> StatusCode {
    {
        match e {
            BucketError::Invalid(_)
            | BucketError::Digest(_)
            | BucketError::BadParts(_)
            | BucketError::PartOrder
            | BucketError::PartTooSmall(..) => StatusCode::BAD_REQUEST,
            BucketError::NoBucket(_)
            | BucketError::NoObject(..)
            | BucketError::NoVersion(..)
            | BucketError::NoUpload(_) => StatusCode::NOT_FOUND,
            BucketError::Exists(_) | BucketError::NotEmpty(_) | BucketError::Kept(_) => {
                StatusCode::CONFLICT
            }
            BucketError::NotOwner(_)
            | BucketError::NotAdmitted(_)
            | BucketError::OverQuota(_)
            | BucketError::ReadOnly
            | BucketError::NoKey(_)
            | BucketError::Revoked(_)
            | BucketError::Shared(..) => StatusCode::FORBIDDEN,
            BucketError::Storage(s) => storage_status(s),
            BucketError::Corrupt(_) => StatusCode::BAD_GATEWAY,
            BucketError::Meta(_) | BucketError::Catalog(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<NodeError> for ApiFailure {
    fn from(e: NodeError) -> Self {
        let status = match &e {
            NodeError::NotAdmin => StatusCode::FORBIDDEN,
            NodeError::UnknownNode(_) => StatusCode::NOT_FOUND,
            NodeError::AmbiguousNode(..) | NodeError::Invalid(_) => StatusCode::BAD_REQUEST,
            NodeError::Meta(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiFailure(status, e.to_string())
    }
}

impl From<KeyError> for ApiFailure {
    fn from(e: KeyError) -> Self {
        let status = match &e {
            KeyError::Unknown(_) => StatusCode::NOT_FOUND,
            KeyError::Invalid(_) => StatusCode::BAD_REQUEST,
            KeyError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            KeyError::Meta(MetaError::Conflict) => StatusCode::CONFLICT,
            KeyError::Meta(_) => StatusCode::SERVICE_UNAVAILABLE,
            KeyError::Access(b) => bucket_status(b),
            KeyError::ForeignGrant => StatusCode::FORBIDDEN,
        };
        ApiFailure(status, e.to_string())
    }
}

impl From<JobError> for ApiFailure {
    fn from(e: JobError) -> Self {
        let status = match &e {
            JobError::Spec(_) | JobError::BadId(_) => StatusCode::BAD_REQUEST,
            JobError::Session(_) => StatusCode::UNAUTHORIZED,
            JobError::Bucket(b) => bucket_status(b),
            JobError::NoJob(_) => StatusCode::NOT_FOUND,
            JobError::Nowhere(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JobError::Refused(_) => StatusCode::CONFLICT,
            JobError::Table(_) => StatusCode::SERVICE_UNAVAILABLE,
            JobError::ReadOnly => StatusCode::FORBIDDEN,
            JobError::Credits(_) => StatusCode::PAYMENT_REQUIRED,
            JobError::Ledger(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiFailure(status, e.to_string())
    }
}

impl From<ModelError> for ApiFailure {
    fn from(e: ModelError) -> Self {
        let status = match &e {
            ModelError::Invalid(_) => StatusCode::BAD_REQUEST,
            ModelError::Exists(_) => StatusCode::CONFLICT,
            ModelError::NoModel(_) => StatusCode::NOT_FOUND,
            ModelError::NotOwner(_) => StatusCode::FORBIDDEN,
            ModelError::Bucket(b) => bucket_status(b),
            ModelError::Meta(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiFailure(status, e.to_string())
    }
}
