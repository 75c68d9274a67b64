//! The handlers: key check, request parsing, the inference service, and OpenAI's answers
//! (JSON, or server-sent events when streaming).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::stream;
use serde_json::{Value, json};
use weft_core::NodeId;
use weft_inference::{Allowed, Answer, Finish, Frame, Request as Ask, Work};
use weft_node::Node;

use crate::error::ApiError;
use crate::wire::{self, ChatRequest, CompletionRequest, EmbeddingRequest, Generate};

/// The response header naming the node that computed the answer.
pub const NODE_HEADER: &str = "x-weft-node";
/// Request headers restricting where a request may run (comma-separated lists).
pub const REGIONS_HEADER: &str = "x-weft-regions";
/// See [`REGIONS_HEADER`].
pub const JURISDICTIONS_HEADER: &str = "x-weft-jurisdictions";

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node: Node,
    pub(crate) max_body: usize,
}

/// The account the request's bearer key acts for.
async fn account(state: &AppState, headers: &HeaderMap) -> Result<NodeId, ApiError> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(ApiError::unauthorized(
            "You didn't provide an API key. Send one as 'Authorization: Bearer KEYID.SECRET' \
             (a weft access key: `weft key create`).",
        ));
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    let wrong = || {
        let shown: String = token.chars().take(8).collect();
        ApiError::unauthorized(format!(
            "Incorrect API key provided: {shown}…. Use a weft access key as KEYID.SECRET \
             (`weft key create` prints it)."
        ))
    };
    let (id, secret) = token
        .split_once('.')
        .or_else(|| token.split_once(':'))
        .ok_or_else(wrong)?;
    let key = state.node.data().access_key(id).await.ok_or_else(wrong)?;
    if !weft_core::constant_time_eq(key.secret.as_bytes(), secret.as_bytes()) {
        return Err(wrong());
    }
    let account = key.account(state.node.id());
    match state.node.data().admitted(account).await {
        Ok(()) => Ok(account),
        Err(e @ weft_data::BucketError::NotAdmitted(_)) => Err(ApiError::forbidden(e.to_string())),
        Err(e) => Err(ApiError::internal(format!(
            "cannot read the fabric's accounts policy: {e}"
        ))),
    }
}

/// Refuse an account with no credits left (its allowance and grants spent): 402, saying so;
/// or one past its tokens-per-minute quota (as the ledger's receipts of the last minute count
/// them): 429, with when to come back.
async fn paying(state: &AppState, account: &NodeId) -> Result<(), ApiError> {
    let quota = state
        .node
        .data()
        .own()
        .quota_of(account)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the account's quota: {e}")))?;
    let ledger = state.node.ledger();
    if let Some(limit) = quota.tokens_per_minute {
        let used = ledger.tokens_last_minute(account);
        if used >= limit {
            return Err(ApiError::rate_limited(
                format!(
                    "account {} used {used} tokens in the last minute; its quota is {limit} tokens per minute",
                    account.short()
                ),
                RATE_RETRY_S,
            ));
        }
    }
    let allowance = quota
        .allowance
        .unwrap_or(weft_ledger::price::DEFAULT_ALLOWANCE);
    let balance = ledger
        .balance(account, 0, allowance)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the account's credits: {e}")))?;
    if balance.available() <= 0 {
        return Err(ApiError::payment(format!(
            "account {} has no credits left ({} credits: its allowance and grants are spent); ask the fabric's admin for credits (`weft ledger grant`)",
            account.short(),
            weft_ledger::price::credits(balance.available())
        )));
    }
    Ok(())
}

/// When an account over its tokens-per-minute quota is told to try again, seconds.
const RATE_RETRY_S: u32 = 5;

/// The most the request may be charged per 1,000 tokens (`X-Weft-Max-Price`, credits),
/// micro-credits.
fn max_price(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(MAX_PRICE_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            format!("header {MAX_PRICE_HEADER}: credits per 1,000 tokens, e.g. 0.002"),
            None,
        )
    };
    let credits: f64 = v
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(bad)?;
    if !(0.0..=1e6).contains(&credits) {
        return Err(bad());
    }
    Ok(Some(
        (credits * weft_ledger::price::MICRO as f64).round() as u64
    ))
}

/// The header that caps what a request may be charged per 1,000 tokens.
pub const MAX_PRICE_HEADER: &str = "x-weft-max-price";

/// Where the request may run, from its headers.
fn allowed(headers: &HeaderMap) -> Result<Allowed, ApiError> {
    let list = |name: &'static str| -> Result<Vec<String>, ApiError> {
        let Some(v) = headers.get(name) else {
            return Ok(Vec::new());
        };
        let text = v
            .to_str()
            .map_err(|_| ApiError::invalid(format!("header {name} is not text"), None))?;
        let items: Vec<String> = text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = items.iter().find(|s| {
            !s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            return Err(ApiError::invalid(
                format!("header {name}: {bad:?} is not a region or jurisdiction name"),
                None,
            ));
        }
        Ok(items)
    };
    Ok(Allowed {
        regions: list(REGIONS_HEADER)?,
        jurisdictions: list(JURISDICTIONS_HEADER)?
            .into_iter()
            .map(|j| j.to_ascii_uppercase())
            .collect(),
    })
}

async fn body(state: &AppState, req: Request) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| ApiError::too_large(state.max_body))?;
    Ok((parts.headers, bytes))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}-{hex}")
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::Stop | Finish::Cancelled => "stop",
    }
}

fn usage(prompt: u32, completion: u32) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn with_node(mut r: Response, node: NodeId) -> Response {
    if let Ok(v) = HeaderValue::from_str(&node.to_hex()) {
        r.headers_mut().insert(NODE_HEADER, v);
    }
    r
}

/// `GET /health`: this node, its inference counters and the models it holds.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let node = &state.node;
    let me = node.status();
    axum::Json(json!({
        "status": "ok",
        "node": node.id().to_hex(),
        "site": me.site,
        "region": me.region,
        "jurisdiction": me.jurisdiction,
        "requests": node.inference().counters(),
        "models": node.inference().held(),
    }))
    .into_response()
}

fn model_json(m: &weft_inference::ModelInfo) -> Value {
    json!({
        "id": m.record.name,
        "object": "model",
        "created": 0,
        "owned_by": m.record.owner.to_hex(),
        "weft": {
            "kind": m.record.kind.to_string(),
            "ready_replicas": m.ready,
            "regions": m.record.regions,
            "jurisdictions": m.record.jurisdictions,
        },
    })
}

/// `GET /v1/models`.
pub(crate) async fn list_models(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    account(&state, &headers).await?;
    let models = state.node.inference().models().await?;
    let data: Vec<Value> = models.iter().map(model_json).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// `GET /v1/models/{id}`.
pub(crate) async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    account(&state, &headers).await?;
    let models = state.node.inference().models().await?;
    let m = models
        .iter()
        .find(|m| m.record.name == id)
        .ok_or_else(|| ApiError::from(weft_inference::InferenceError::UnknownModel(id.clone())))?;
    Ok(axum::Json(model_json(m)).into_response())
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let (headers, bytes) = body(&state, req).await?;
    let account = account(&state, &headers).await?;
    paying(&state, &account).await?;
    let req: EmbeddingRequest = wire::parse(&bytes)?;
    let inputs = req.inputs(None)?;
    let allowed = allowed(&headers)?;
    let max = max_price(&headers)?;
    let mut answer = state
        .node
        .inference()
        .run_within(
            Ask {
                model: req.model.clone(),
                work: Work::Embed { inputs },
                allowed,
                account,
            },
            max,
        )
        .await?;
    let node = answer.node;
    let (vectors, tokens) = match answer.next().await {
        Some(Frame::Embedded { vectors, tokens }) => (vectors, tokens),
        Some(Frame::Failed { message, .. }) => return Err(ApiError::internal(message)),
        _ => return Err(ApiError::internal("the replica ended without embeddings")),
    };
    if let Some(dim) = vectors.first().map(Vec::len)
        && let Err(e) = req.inputs(Some(dim as u32))
    {
        return Err(e);
    }
    let base64 = req.encoding_format.as_deref() == Some("base64");
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok(with_node(axum::Json(body).into_response(), node))
}

/// Which of the two generation endpoints.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    Chat,
    Completion,
}

impl Shape {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Completion, _) => "text_completion",
        }
    }

    /// One choice: whole (`delta` false) or a streamed piece.
    fn choice(self, text: Option<&str>, finish: Option<&str>, delta: bool) -> Value {
        match (self, delta) {
            (Shape::Chat, false) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text.unwrap_or("")},
                "logprobs": null,
                "finish_reason": finish,
            }),
            (Shape::Chat, true) => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            (Shape::Completion, _) => json!({
                "index": 0,
                "text": text.unwrap_or(""),
                "logprobs": null,
                "finish_reason": finish,
            }),
        }
    }
}

/// The shape of a generation endpoint's answers.
pub(crate) trait Answers {
    /// Chat or completion.
    const SHAPE: Shape;
}

impl Answers for ChatRequest {
    const SHAPE: Shape = Shape::Chat;
}

impl Answers for CompletionRequest {
    const SHAPE: Shape = Shape::Completion;
}

/// `POST /v1/chat/completions` and `POST /v1/completions`.
pub(crate) async fn generation<T: Generate + Answers>(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let (headers, bytes) = body(&state, req).await?;
    let account = account(&state, &headers).await?;
    paying(&state, &account).await?;
    let req: T = wire::parse(&bytes)?;
    let common = req.common();
    let (model, stream, include_usage) =
        (common.model.clone(), common.stream, common.include_usage());
    let work = req.work()?;
    let allowed = allowed(&headers)?;
    let max = max_price(&headers)?;
    generate(
        &state,
        T::SHAPE,
        model,
        work,
        (allowed, account, max),
        stream,
        include_usage,
    )
    .await
}

async fn generate(
    state: &AppState,
    shape: Shape,
    model: String,
    work: Work,
    (allowed, account, max): (Allowed, NodeId, Option<u64>),
    stream: bool,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let prefix = match shape {
        Shape::Chat => "chatcmpl",
        Shape::Completion => "cmpl",
    };
    let id = new_id(prefix);
    let created = now_s();
    let answer = state
        .node
        .inference()
        .run_within(
            Ask {
                model: model.clone(),
                work,
                allowed,
                account,
            },
            max,
        )
        .await?;
    let node = answer.node;
    let fingerprint = format!("weft-{}", env!("CARGO_PKG_VERSION"));
    if !stream {
        let mut answer = answer;
        let mut text = String::new();
        loop {
            match answer.next().await {
                Some(Frame::Piece(p)) => text.push_str(&p),
                Some(Frame::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    let body = json!({
                        "id": id,
                        "object": shape.object(false),
                        "created": created,
                        "model": model,
                        "system_fingerprint": fingerprint,
                        "choices": [shape.choice(Some(&text), Some(finish_reason(finish)), false)],
                        "usage": usage(prompt_tokens, completion_tokens),
                    });
                    return Ok(with_node(axum::Json(body).into_response(), node));
                }
                Some(Frame::Failed { message, .. }) => {
                    return Err(ApiError::from(weft_inference::InferenceError::Failed(
                        message,
                    )));
                }
                _ => {
                    return Err(ApiError::from(weft_inference::InferenceError::Failed(
                        "the replica went away in the middle of the answer".into(),
                    )));
                }
            }
        }
    }
    // Server-sent events: a first chunk with the role (chat), one per piece, a last one with
    // the finish reason and the usage, then [DONE].
    let chunk = move |choices: Value, usage: Option<Value>| -> Bytes {
        let mut c = json!({
            "id": id,
            "object": shape.object(true),
            "created": created,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    struct Streaming<F> {
        answer: Answer,
        chunk: F,
        started: bool,
        ended: bool,
        include_usage: bool,
        shape: Shape,
    }
    let state = Streaming {
        answer,
        chunk,
        started: false,
        ended: false,
        include_usage,
        shape,
    };
    let events = stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        if !s.started {
            s.started = true;
            if let Shape::Chat = s.shape {
                let first = json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
                out.extend_from_slice(&(s.chunk)(first, None));
            }
        }
        match s.answer.next().await {
            Some(Frame::Piece(p)) => {
                let c = s.shape.choice(Some(&p), None, true);
                out.extend_from_slice(&(s.chunk)(json!([c]), None));
            }
            Some(Frame::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                let u = usage(prompt_tokens, completion_tokens);
                let c = s.shape.choice(None, Some(finish_reason(finish)), true);
                out.extend_from_slice(&(s.chunk)(json!([c]), Some(u.clone())));
                if s.include_usage {
                    out.extend_from_slice(&(s.chunk)(json!([]), Some(u)));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                s.ended = true;
            }
            other => {
                let message = match other {
                    Some(Frame::Failed { message, .. }) => message,
                    _ => "the replica went away in the middle of the answer".to_string(),
                };
                let e = ApiError::from(weft_inference::InferenceError::Failed(message));
                out.extend_from_slice(format!("data: {}\n\n", e.body()).as_bytes());
                s.ended = true;
            }
        }
        Some((Ok::<_, Infallible>(Bytes::from(out)), s))
    });
    let mut r = Response::new(Body::from_stream(events));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(with_node(r, node))
}

/// Any other path.
pub(crate) async fn fallback(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {} (this node serves /v1/models, /v1/embeddings, /v1/chat/completions, /v1/completions and /health)",
        req.method(),
        req.uri().path()
    ))
}
