//! What every route of the API shares: the node, the operator's token, and who a request acts
//! as ([`Caller`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weft_node::Node;

use crate::errors::ApiFailure;

/// The node a request reaches, and the token its operator routes need.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node: Node,
    pub(crate) token: Arc<str>,
}

pub(crate) fn token_ok(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| weft_core::constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn no_token() -> ApiFailure {
    ApiFailure(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API token (it is in the node's data directory: api.token)".into(),
    )
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !token_ok(request.headers(), &state.token) {
        return no_token().into_response();
    }
    next.run(request).await
}

/// The header a client's session travels in.
pub const SESSION_HEADER: &str = "weft-session";

/// The account a data request acts as: the session's ([`SESSION_HEADER`]), or with the
/// operator's token and no session, the node's own account.
pub(crate) struct Caller(pub(crate) weft_data::Acting);

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Caller, ApiFailure> {
        let Some(value) = parts.headers.get(SESSION_HEADER) else {
            if token_ok(&parts.headers, &s.token) {
                return Ok(Caller(s.node.data().own().clone()));
            }
            return Err(ApiFailure(
                StatusCode::UNAUTHORIZED,
                "no account session: data commands act as an account (`weft account create`)"
                    .into(),
            ));
        };
        let bad = |e: String| ApiFailure(StatusCode::UNAUTHORIZED, e);
        let text = value.to_str().map_err(|e| bad(e.to_string()))?;
        let acting = s
            .node
            .data()
            .session(text)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Caller(acting))
    }
}

/// Unix ms now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
