//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the status
//! OpenAI uses for the same case, so client SDKs raise their usual exceptions
//! (`NotFoundError`, `AuthenticationError`, `BadRequestError`, `RateLimitError`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use weft_inference::InferenceError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// For people.
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<&'static str>,
    /// OpenAI's `code`.
    pub code: Option<&'static str>,
    /// Seconds, for 429.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            param,
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// 401: no key or a wrong one.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        }
    }

    /// 403: the key is right but its account may not use this (an invite-only fabric's
    /// admin has not admitted it).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "permission_error", message)
    }

    /// 402: the account has no credits left.
    pub fn payment(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYMENT_REQUIRED, "insufficient_quota", message)
    }

    /// 429: the account is past its tokens-per-minute quota.
    pub fn rate_limited(message: impl Into<String>, retry_after: u32) -> ApiError {
        ApiError {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "tokens", message)
        }
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    /// 413: the body is larger than accepted.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            code: Some("request_too_large"),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body is larger than {} MiB", limit >> 20),
            )
        }
    }

    /// 500: this node failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> ApiError {
        let message = e.to_string();
        match e {
            InferenceError::UnknownModel(_) => ApiError {
                param: Some("model"),
                code: Some("model_not_found"),
                ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            },
            InferenceError::Invalid(_) => ApiError::invalid(message, None),
            InferenceError::ContextLength { .. } => ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::invalid(message, None)
            },
            InferenceError::Unavailable(_) => ApiError {
                code: Some("model_not_available"),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            },
            InferenceError::Busy { retry_after, .. } => ApiError {
                code: Some("rate_limit_exceeded"),
                retry_after: Some(retry_after),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
            },
            InferenceError::Failed(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}
