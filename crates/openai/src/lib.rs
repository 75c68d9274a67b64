//! The OpenAI-compatible API every node serves (beside its local API and the S3 gateway):
//! `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/chat/completions` (JSON or server-sent
//! events), `POST /v1/completions`, and `GET /health` — the endpoints the OpenAI SDKs,
//! llama-server and Ollama clients speak. A request reaching any node runs on the nearest
//! node that holds its model, never outside the places its `X-Weft-Regions` /
//! `X-Weft-Jurisdictions` headers allow ([`weft_inference`] decides and carries it).
//!
//! Keys are the account's access keys (`weft key create`) sent as `Authorization: Bearer
//! KEYID.SECRET`. Errors have OpenAI's shape and status codes. Every answer carries token usage,
//! and the header `X-Weft-Node` names the node that computed it.
//!
//! It knows HTTP, JSON and OpenAI's formats; it never knows the engine, the network or where
//! a model is — those are the inference service's.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod api;
mod error;
mod wire;

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use weft_node::Node;

pub use api::{JURISDICTIONS_HEADER, NODE_HEADER, REGIONS_HEADER};
pub use error::ApiError;
pub use wire::MAX_INPUTS;

/// Where the node writes the API's bound address (like `s3.addr`).
pub const OPENAI_ADDR_FILE: &str = "openai.addr";

/// API settings.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            max_body_bytes: 16 << 20,
        }
    }
}

/// The routes, for serving or testing.
pub fn router(node: Node, cfg: &OpenAiConfig) -> Router {
    let state = api::AppState {
        node,
        max_body: cfg.max_body_bytes,
    };
    Router::new()
        .route("/health", get(api::health))
        .route("/v1/models", get(api::list_models))
        .route("/v1/models/{id}", get(api::get_model))
        .route("/v1/embeddings", post(api::embeddings))
        .route(
            "/v1/chat/completions",
            post(api::generation::<wire::ChatRequest>),
        )
        .route(
            "/v1/completions",
            post(api::generation::<wire::CompletionRequest>),
        )
        .fallback(api::fallback)
        .with_state(state)
}

/// Serve the API on `listener` until the node stops, then let its connections finish for up
/// to 5 s. Connections run as tasks of the node; run this future with
/// [`Node::spawn_service`].
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    cfg: OpenAiConfig,
) -> std::io::Result<()> {
    let app = router(node.clone(), &cfg);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = ConnBuilder::new(TokioExecutor::new()).http1_only();
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(weft_node::HTTP_HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    node.accept_until_stopped(listener, "OpenAI API", |socket| {
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = ?e, "OpenAI API connection ended with an error");
            }
        }
    })
    .await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}
