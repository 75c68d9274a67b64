//! Inference on the fabric: a request for a model at any node runs on the nearest node that
//! holds the model loaded, never outside the places the caller allows.
//!
//! **Entry.** The node a client reaches (the *entry*) finds the model's row, the nodes that say
//! they serve it ready (their `serve` rows, for the model's current files) and are alive, and
//! asks the routing core ([`crate::route`]) for the one with the least expected wait: its round
//! trip (measured, else from network coordinates) plus its queue times the model's typical
//! service time. Replicas outside the allowed regions/jurisdictions are never candidates, so the
//! prompt never reaches them. The entry opens an `INFER` stream to the chosen replica (or runs
//! the request itself when it holds the model and is the best choice).
//!
//! **Failover.** A replica that cannot be reached, does not admit the request in time, says it
//! does not hold the model, or fails before the first token is excluded and the next best is
//! tried; a replica that failed is avoided for a while. Once text has flowed, a failure ends the
//! answer with an error (the client has seen part of it).
//!
//! **Back-pressure.** Each replica takes at most `queue` requests per model (running and
//! waiting; one runs at a time — a 2-core node has nothing to gain from running two). A full
//! replica answers *busy* with a time to come back; the entry then tries the next replica, and
//! when every allowed one is full the caller gets *busy* (HTTP 429 with Retry-After).
//!
//! **What it never does:** keep a prompt or an answer (nothing is written to a table or a
//! disk), or hand a request to a node that is not a fabric member.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use weft_core::{NodeId, proto};
use weft_fabric::Fabric;
use weft_meta::Table;
use weft_net::{Endpoint, Peer, read_message, write_message};

use crate::models::{Engine, ModelKind, ModelRecord, ModelService};
use crate::route::{self, Allowed, Replica, Route};

/// Requests a replica takes per model (running and waiting) unless told otherwise.
pub const DEFAULT_QUEUE: u32 = 8;
/// The most texts one embeddings request may hold (OpenAI's limit); a replica refuses more,
/// whoever sends them.
pub const MAX_INPUTS: usize = 2048;
/// The largest request (prompt, inputs) the protocol carries.
const MAX_REQUEST: usize = 16 << 20;
/// The largest frame of an answer (a batch of embeddings).
const MAX_FRAME: usize = 64 << 20;
/// How long a replica has to admit (or refuse) a request before the entry tries another.
const ADMIT_WITHIN: Duration = Duration::from_secs(3);
/// How long a replica that failed is left out.
const AVOID_FAILED: Duration = Duration::from_secs(15);
/// How long a model list or a model's replica list read from the table is reused.
const FRESH: Duration = Duration::from_secs(1);
/// How long an older list may still answer while a fresh one is read.
const STALE: Duration = Duration::from_secs(10);
/// How long a replica's reported queue counts (it drains in about a service time).
const LOAD_FRESH: Duration = Duration::from_secs(2);
/// Service time assumed for a model before any was measured, ms.
const FIRST_GUESS_MS: f64 = 500.0;

/// Sampling parameters of a generation (see `weft_infer::GenerateParams`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Most tokens to generate (None: until the model ends its turn or the context is full).
    pub max_tokens: Option<u32>,
    /// Softmax temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus sampling mass.
    pub top_p: f64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Sampler seed.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// The author of a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatRole {
    /// Instructions.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// What to compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Sentence embeddings of each input.
    Embed {
        /// The texts.
        inputs: Vec<String>,
    },
    /// The assistant's next message of a conversation.
    Chat {
        /// The conversation.
        messages: Vec<(ChatRole, String)>,
        /// How to sample.
        params: Params,
    },
    /// The continuation of a raw prompt.
    Complete {
        /// The prompt.
        prompt: String,
        /// How to sample.
        params: Params,
    },
}

impl Work {
    fn kind(&self) -> ModelKind {
        match self {
            Work::Embed { .. } => ModelKind::Embeddings,
            Work::Chat { .. } | Work::Complete { .. } => ModelKind::Chat,
        }
    }
}

/// A request for a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The model's name.
    pub model: String,
    /// What to compute.
    pub work: Work,
    /// Where it may run.
    pub allowed: Allowed,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finish {
    /// End of turn or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// The caller went away.
    Cancelled,
}

/// Why a replica did not take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// It does not hold the model loaded (any more).
    NotHere,
    /// It is not where the request may run.
    NotAllowed,
}

/// One message of an answer, replica to entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Taken: `queued` other requests are ahead of it (waiting or running); it takes at most
    /// `capacity`.
    Admitted {
        /// Requests ahead of this one.
        queued: u32,
        /// The most it takes.
        capacity: u32,
    },
    /// Full: come back in `retry_after` seconds.
    Busy {
        /// Seconds.
        retry_after: u32,
    },
    /// Not taken, and why.
    Refused {
        /// Why.
        why: Refusal,
        /// For logs.
        message: String,
    },
    /// The next piece of generated text.
    Piece(String),
    /// The embeddings, with the number of tokens read.
    Embedded {
        /// One vector per input.
        vectors: Vec<Vec<f32>>,
        /// Tokens read.
        tokens: u32,
    },
    /// The generation ended.
    Done {
        /// Why.
        finish: Finish,
        /// Tokens of the prompt.
        prompt_tokens: u32,
        /// Tokens generated.
        completion_tokens: u32,
    },
    /// It failed; `invalid`: because of the request itself (no other replica would do better).
    Failed {
        /// The request's fault.
        invalid: bool,
        /// Why.
        message: String,
    },
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// There is no such model.
    #[error("the model `{0}` does not exist (GET /v1/models lists the models)")]
    UnknownModel(String),
    /// The request cannot be answered as asked.
    #[error("{0}")]
    Invalid(String),
    /// No replica can take it where it may run.
    #[error("{0}")]
    Unavailable(String),
    /// Every replica where it may run is full.
    #[error("every replica of `{model}` is busy; retry after {retry_after} s")]
    Busy {
        /// The model.
        model: String,
        /// Seconds.
        retry_after: u32,
    },
    /// The replica failed after it had started answering.
    #[error("{0}")]
    Failed(String),
}

/// A model as clients see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Its row.
    pub record: ModelRecord,
    /// Replicas ready now.
    pub ready: usize,
}

/// What a node has done for inference, since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceCounters {
    /// Requests clients sent to this node.
    pub received: u64,
    /// Of those, sent on to another node.
    pub forwarded: u64,
    /// Requests this node ran (its clients' and other nodes').
    pub served: u64,
    /// Requests this node turned away because its queue was full.
    pub busy: u64,
}

/// A model this node holds, as its queue sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldModel {
    /// Its name.
    pub name: String,
    /// Requests queued or running.
    pub queued: u32,
    /// The most it takes.
    pub capacity: u32,
}

/// An answer under way: frames of text or embeddings, then the end.
pub struct Answer {
    /// The node computing it.
    pub node: NodeId,
    first: Option<Frame>,
    rest: mpsc::Receiver<Frame>,
    _inflight: Option<Inflight>,
    /// Where to note the service time when it ends (the model, and when it was asked).
    timing: Option<(Arc<Inner>, String, Instant)>,
}

impl Answer {
    /// The next frame (`Piece`, `Embedded`, `Done` or `Failed`); `None` when it ended without
    /// one of the last (the replica went away).
    pub async fn next(&mut self) -> Option<Frame> {
        let frame = match self.first.take() {
            Some(f) => Some(f),
            None => self.rest.recv().await,
        };
        if let Some(Frame::Done { .. } | Frame::Embedded { .. }) = frame
            && let Some((inner, model, started)) = self.timing.take()
        {
            inner.note_service(&model, started.elapsed());
        }
        frame
    }
}

/// Counts a request in flight to a replica while alive.
struct Inflight(Arc<Inner>, NodeId);

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(n) = self.0.inflight.lock().get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

struct Slots {
    taken: AtomicU32,
    run: Semaphore,
}

/// What the entry last heard of a replica's queue.
struct Load {
    queued: u32,
    capacity: u32,
    at: Instant,
}

type Cached<T> = Mutex<Option<(Instant, T)>>;

struct Inner {
    me: NodeId,
    endpoint: Endpoint,
    fabric: Fabric,
    table: Table,
    models: ModelService,
    queue: AtomicU32,
    slots: Mutex<HashMap<String, Arc<Slots>>>,
    catalog: Cached<Vec<ModelRecord>>,
    serving: Mutex<HashMap<String, (Instant, Vec<NodeId>)>>,
    /// Lists being read in the background (model names; "" for the model list).
    refreshing: Mutex<std::collections::HashSet<String>>,
    loads: Mutex<HashMap<NodeId, Load>>,
    inflight: Mutex<HashMap<NodeId, u32>>,
    failed: Mutex<HashMap<NodeId, Instant>>,
    service_ms: Mutex<HashMap<String, f64>>,
    received: AtomicU64,
    forwarded: AtomicU64,
    served: AtomicU64,
    busy: AtomicU64,
}

impl Inner {
    /// Fold one service time of `model` into its running average (routing's estimate of how
    /// long a queued request waits).
    fn note_service(&self, model: &str, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let mut all = self.service_ms.lock();
        let avg = all.entry(model.to_string()).or_insert(ms);
        *avg = 0.8 * *avg + 0.2 * ms;
    }
}

/// The inference service of a node: entry (routing) and replica (serving) sides.
#[derive(Clone)]
pub struct InferenceService {
    inner: Arc<Inner>,
}

impl InferenceService {
    /// Serve `INFER` streams on `endpoint` with the models `models` holds.
    pub fn start(
        endpoint: &Endpoint,
        fabric: Fabric,
        table: Table,
        models: ModelService,
    ) -> InferenceService {
        let svc = InferenceService {
            inner: Arc::new(Inner {
                me: endpoint.id(),
                endpoint: endpoint.clone(),
                fabric,
                table,
                models,
                queue: AtomicU32::new(DEFAULT_QUEUE),
                slots: Mutex::new(HashMap::new()),
                catalog: Mutex::new(None),
                serving: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(std::collections::HashSet::new()),
                loads: Mutex::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                failed: Mutex::new(HashMap::new()),
                service_ms: Mutex::new(HashMap::new()),
                received: AtomicU64::new(0),
                forwarded: AtomicU64::new(0),
                served: AtomicU64::new(0),
                busy: AtomicU64::new(0),
            }),
        };
        let me = svc.clone();
        endpoint.register_stream(
            proto::INFER,
            false,
            Arc::new(move |peer, send, recv| {
                let me = me.clone();
                Box::pin(async move { me.answer_peer(peer, send, recv).await })
            }),
        );
        svc
    }

    /// How many requests per model this node takes (running and waiting); at least 1.
    pub fn set_queue(&self, queue: u32) {
        self.inner.queue.store(queue.max(1), Ordering::Relaxed);
    }

    /// What this node has done.
    pub fn counters(&self) -> InferenceCounters {
        let i = &self.inner;
        InferenceCounters {
            received: i.received.load(Ordering::Relaxed),
            forwarded: i.forwarded.load(Ordering::Relaxed),
            served: i.served.load(Ordering::Relaxed),
            busy: i.busy.load(Ordering::Relaxed),
        }
    }

    /// The models this node holds loaded, with their queues.
    pub fn held(&self) -> Vec<HeldModel> {
        let capacity = self.inner.queue.load(Ordering::Relaxed);
        let mut held: Vec<HeldModel> = self
            .inner
            .models
            .held_names()
            .into_iter()
            .map(|name| HeldModel {
                queued: self
                    .inner
                    .slots
                    .lock()
                    .get(&name)
                    .map_or(0, |s| s.taken.load(Ordering::Relaxed)),
                name,
                capacity,
            })
            .collect();
        held.sort_by(|a, b| a.name.cmp(&b.name));
        held
    }

    /// Every model of the fabric, with how many replicas are ready.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, InferenceError> {
        let records = self.catalog(None).await?;
        let mut out = Vec::new();
        for record in records {
            let ready = self.ready_replicas(&record).await?.len();
            out.push(ModelInfo { record, ready });
        }
        Ok(out)
    }

    /// One model, or [`InferenceError::UnknownModel`].
    pub async fn model(&self, name: &str) -> Result<ModelRecord, InferenceError> {
        self.catalog(Some(name))
            .await?
            .into_iter()
            .find(|m| m.name == name)
            .ok_or_else(|| InferenceError::UnknownModel(name.to_string()))
    }

    /// Run `request` on the best replica; returns once the first text (or the embeddings)
    /// arrived, so a replica that fails before that is replaced by the next.
    pub async fn run(&self, request: Request) -> Result<Answer, InferenceError> {
        let inner = &self.inner;
        inner.received.fetch_add(1, Ordering::Relaxed);
        let model = self.model(&request.model).await?;
        if model.kind != request.work.kind() {
            return Err(InferenceError::Invalid(match model.kind {
                ModelKind::Embeddings => format!(
                    "`{}` is an embeddings model: use it with /v1/embeddings",
                    model.name
                ),
                ModelKind::Chat => format!(
                    "`{}` is a chat model: use it with /v1/chat/completions or /v1/completions",
                    model.name
                ),
            }));
        }
        let request = Arc::new(request);
        let mut exclude: Vec<NodeId> = Vec::new();
        let mut busy: Option<u32> = None;
        let mut last_failure: Option<String> = None;
        let started = Instant::now();
        loop {
            let replicas = self.replicas(&model).await?;
            let per_request = inner
                .service_ms
                .lock()
                .get(&model.name)
                .copied()
                .unwrap_or(FIRST_GUESS_MS);
            let node = match route::route(&replicas, &request.allowed, &exclude, per_request) {
                Route::To(n) => n,
                Route::Busy { retry_after } => {
                    return Err(InferenceError::Busy {
                        model: model.name.clone(),
                        retry_after,
                    });
                }
                Route::Nowhere { why } => {
                    if let Some(retry_after) = busy {
                        return Err(InferenceError::Busy {
                            model: model.name.clone(),
                            retry_after,
                        });
                    }
                    let why = match last_failure {
                        Some(f) => format!("{why} (last: {f})"),
                        None => why,
                    };
                    return Err(InferenceError::Unavailable(format!(
                        "model `{}`: {why}",
                        model.name
                    )));
                }
            };
            exclude.push(node);
            match self.attempt(node, request.clone()).await {
                Ok(mut answer) => {
                    if node != inner.me {
                        inner.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    answer.timing = Some((inner.clone(), model.name.clone(), started));
                    return Ok(answer);
                }
                Err(Attempt::Busy(retry_after)) => {
                    busy = Some(busy.map_or(retry_after, |b| b.min(retry_after)));
                }
                Err(Attempt::Down(why)) => {
                    tracing::debug!(%node, model = %model.name, %why, "replica failed; trying the next");
                    if node != inner.me {
                        inner.failed.lock().insert(node, Instant::now());
                    }
                    last_failure = Some(why);
                }
                Err(Attempt::Invalid(why)) => return Err(InferenceError::Invalid(why)),
            }
        }
    }

    /// One try at one replica, up to its first text.
    async fn attempt(&self, node: NodeId, request: Arc<Request>) -> Result<Answer, Attempt> {
        let inner = &self.inner;
        *inner.inflight.lock().entry(node).or_insert(0) += 1;
        let inflight = Inflight(inner.clone(), node);
        let mut rx = if node == inner.me {
            self.serve_here(&request)
        } else {
            self.call(node, request).await?
        };
        // Admitted, busy or refused first.
        let first = tokio::time::timeout(ADMIT_WITHIN, rx.recv())
            .await
            .map_err(|_| Attempt::Down("it did not admit the request in time".into()))?;
        match first {
            Some(Frame::Admitted { queued, capacity }) => {
                self.heard(node, queued, capacity);
            }
            Some(Frame::Busy { retry_after }) => {
                let cap = inner.loads.lock().get(&node).map_or(1, |l| l.capacity);
                self.heard(node, cap, cap);
                return Err(Attempt::Busy(retry_after));
            }
            Some(Frame::Refused { message, .. }) => return Err(Attempt::Down(message)),
            Some(Frame::Failed {
                invalid: true,
                message,
            }) => {
                return Err(Attempt::Invalid(message));
            }
            Some(other) => {
                return Err(Attempt::Down(format!("unexpected first frame {other:?}")));
            }
            None => return Err(Attempt::Down("the stream ended".into())),
        }
        // Then the first text: until it comes, another replica may still take over.
        match rx.recv().await {
            Some(Frame::Failed {
                invalid: true,
                message,
            }) => Err(Attempt::Invalid(message)),
            Some(Frame::Failed { message, .. }) => Err(Attempt::Down(message)),
            Some(f @ (Frame::Piece(_) | Frame::Embedded { .. } | Frame::Done { .. })) => {
                Ok(Answer {
                    node,
                    first: Some(f),
                    rest: rx,
                    _inflight: Some(inflight),
                    timing: None,
                })
            }
            Some(other) => Err(Attempt::Down(format!("unexpected frame {other:?}"))),
            None => Err(Attempt::Down(
                "the replica went away before the first token".into(),
            )),
        }
    }

    fn heard(&self, node: NodeId, queued: u32, capacity: u32) {
        self.inner.loads.lock().insert(
            node,
            Load {
                queued,
                capacity,
                at: Instant::now(),
            },
        );
    }

    /// Open an `INFER` stream to `node` and relay its frames.
    async fn call(
        &self,
        node: NodeId,
        request: Arc<Request>,
    ) -> Result<mpsc::Receiver<Frame>, Attempt> {
        let addr = self
            .inner
            .fabric
            .member(&node)
            .and_then(|m| m.addr)
            .ok_or_else(|| Attempt::Down("no address known".into()))?;
        let (mut send, mut recv) = tokio::time::timeout(
            ADMIT_WITHIN,
            self.inner.endpoint.open(node, addr, proto::INFER),
        )
        .await
        .map_err(|_| Attempt::Down("no connection in time".into()))?
        .map_err(|e| Attempt::Down(e.to_string()))?;
        write_message(&mut send, &*request)
            .await
            .map_err(|e| Attempt::Down(e.to_string()))?;
        let _ = send.finish();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = read_message::<Frame>(&mut recv, MAX_FRAME) => match frame {
                        Ok(f) => {
                            if tx.send(f).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    },
                    // The caller went away: stop the replica's work.
                    _ = tx.closed() => {
                        let _ = recv.stop(quinn::VarInt::from_u32(0));
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Ready replicas of `model` that are alive, as the router sees them.
    async fn replicas(&self, model: &ModelRecord) -> Result<Vec<Replica<NodeId>>, InferenceError> {
        let inner = &self.inner;
        let nodes = self.ready_replicas(model).await?;
        let capacity = inner.queue.load(Ordering::Relaxed);
        let mut failed = inner.failed.lock();
        failed.retain(|_, at| at.elapsed() < AVOID_FAILED);
        let loads = inner.loads.lock();
        let inflight = inner.inflight.lock();
        Ok(nodes
            .into_iter()
            .filter(|n| !failed.contains_key(n))
            .filter_map(|n| {
                let m = inner.fabric.member(&n)?;
                if !m.is_alive() {
                    return None;
                }
                let local = n == inner.me;
                let (queued, cap) = if local {
                    let q = inner
                        .slots
                        .lock()
                        .get(&model.name)
                        .map_or(0, |s| s.taken.load(Ordering::Relaxed));
                    (q, capacity)
                } else {
                    let mine = inflight.get(&n).copied().unwrap_or(0);
                    match loads.get(&n) {
                        Some(l) if l.at.elapsed() < LOAD_FRESH => (l.queued.max(mine), l.capacity),
                        _ => (mine, u32::MAX),
                    }
                };
                let rtt = if local {
                    0.0
                } else {
                    m.measured_rtt
                        .or(m.est_rtt)
                        .map_or(100.0, |d| d.as_secs_f64() * 1000.0)
                };
                Some(Replica {
                    node: n,
                    local,
                    rtt_ms: rtt,
                    queued,
                    capacity: cap,
                    region: m.placement.region.clone(),
                    jurisdiction: m.placement.jurisdiction.clone(),
                })
            })
            .collect())
    }

    /// Nodes whose `serve` row says they hold `model`'s current files ready. A list read in
    /// the last second is used as is; an older one (up to [`STALE`]) that names a replica is used
    /// while a fresh read runs in the background, so a request does not wait on a quorum read
    /// (a replica that went away since is handled by failover).
    async fn ready_replicas(&self, model: &ModelRecord) -> Result<Vec<NodeId>, InferenceError> {
        let cached = self.inner.serving.lock().get(&model.name).cloned();
        if let Some((at, nodes)) = cached {
            let age = at.elapsed();
            if age < FRESH {
                return Ok(nodes);
            }
            if age < STALE && !nodes.is_empty() {
                if self.inner.refreshing.lock().insert(model.name.clone()) {
                    let me = self.clone();
                    let model = model.clone();
                    tokio::spawn(async move {
                        let _ = me.read_ready_replicas(&model).await;
                        me.inner.refreshing.lock().remove(&model.name);
                    });
                }
                return Ok(nodes);
            }
        }
        self.read_ready_replicas(model).await
    }

    async fn read_ready_replicas(
        &self,
        model: &ModelRecord,
    ) -> Result<Vec<NodeId>, InferenceError> {
        let digest = model.digest();
        let nodes: Vec<NodeId> = ModelService::serving(&self.inner.table, &model.name)
            .await
            .map_err(|e| InferenceError::Unavailable(format!("cannot read who serves it: {e}")))?
            .into_iter()
            .filter(|(_, s)| s.ready && s.digest == digest)
            .map(|(n, _)| n)
            .collect();
        self.inner
            .serving
            .lock()
            .insert(model.name.clone(), (Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// Every model's row: like [`Self::ready_replicas`], an older list (that holds `need`, when
    /// given) is used while a fresh one is read in the background.
    async fn catalog(&self, need: Option<&str>) -> Result<Vec<ModelRecord>, InferenceError> {
        let cached = self.inner.catalog.lock().clone();
        if let Some((at, all)) = cached {
            let age = at.elapsed();
            if age < FRESH {
                return Ok(all);
            }
            let usable = need.is_none_or(|n| all.iter().any(|m| m.name == n));
            if age < STALE && usable {
                if self.inner.refreshing.lock().insert(String::new()) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = me.read_catalog().await;
                        me.inner.refreshing.lock().remove("");
                    });
                }
                return Ok(all);
            }
        }
        self.read_catalog().await
    }

    async fn read_catalog(&self) -> Result<Vec<ModelRecord>, InferenceError> {
        let all = ModelService::models(&self.inner.table)
            .await
            .map_err(|e| InferenceError::Unavailable(format!("cannot read the models: {e}")))?;
        *self.inner.catalog.lock() = Some((Instant::now(), all.clone()));
        Ok(all)
    }

    /// Take `request` into this node's queue for its model: its frames (admitted or busy or
    /// refused first). Dropping the receiver cancels it.
    fn serve_here(&self, request: &Request) -> mpsc::Receiver<Frame> {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(64);
        let refuse = |why, message: String| {
            let _ = tx.try_send(Frame::Refused { why, message });
        };
        if let Work::Embed { inputs } = &request.work
            && (inputs.is_empty() || inputs.len() > MAX_INPUTS)
        {
            let _ = tx.try_send(Frame::Failed {
                invalid: true,
                message: format!(
                    "{} inputs; an embeddings request holds 1 to {MAX_INPUTS}",
                    inputs.len()
                ),
            });
            return rx;
        }
        let Some(engine) = inner.models.engine(&request.model) else {
            refuse(
                Refusal::NotHere,
                format!("this node does not hold `{}` loaded", request.model),
            );
            return rx;
        };
        let placement = inner.fabric.member(&inner.me).map(|m| m.placement);
        let here = placement
            .as_ref()
            .is_some_and(|p| request.allowed.admits(&p.region, &p.jurisdiction));
        if !here {
            refuse(
                Refusal::NotAllowed,
                "this node is not where the request may run".into(),
            );
            return rx;
        }
        let capacity = inner.queue.load(Ordering::Relaxed);
        let slots = inner
            .slots
            .lock()
            .entry(request.model.clone())
            .or_insert_with(|| {
                Arc::new(Slots {
                    taken: AtomicU32::new(0),
                    run: Semaphore::new(1),
                })
            })
            .clone();
        let taken = slots
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < capacity).then_some(t + 1)
            });
        let Ok(before) = taken else {
            inner.busy.fetch_add(1, Ordering::Relaxed);
            let per = inner
                .service_ms
                .lock()
                .get(&request.model)
                .copied()
                .unwrap_or(FIRST_GUESS_MS);
            let retry_after = ((per * capacity as f64 / 1000.0).ceil() as u32).clamp(1, 60);
            let _ = tx.try_send(Frame::Busy { retry_after });
            return rx;
        };
        inner.served.fetch_add(1, Ordering::Relaxed);
        let _ = tx.try_send(Frame::Admitted {
            queued: before,
            capacity,
        });
        let work = request.work.clone();
        let me = self.clone();
        let model = request.model.clone();
        tokio::spawn(async move {
            let release = Release(slots.clone());
            let Ok(_permit) = slots.run.acquire().await else {
                return;
            };
            if tx.is_closed() {
                return; // the caller left while it waited
            }
            let started = Instant::now();
            let sink = tx.clone();
            let end = tokio::task::spawn_blocking(move || compute(&engine, work, &sink))
                .await
                .unwrap_or_else(|e| Frame::Failed {
                    invalid: false,
                    message: format!("the engine failed: {e}"),
                });
            me.inner.note_service(&model, started.elapsed());
            let _ = tx.send(end).await;
            drop(release);
        });
        rx
    }

    /// A stream from another node: its request, answered frame by frame.
    async fn answer_peer(
        &self,
        peer: Peer,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let Peer::Member(_) = peer else { return };
        let Ok(Ok(request)) = tokio::time::timeout(
            ADMIT_WITHIN,
            read_message::<Request>(&mut recv, MAX_REQUEST),
        )
        .await
        else {
            return;
        };
        let mut rx = self.serve_here(&request);
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else { break };
                    let end = !matches!(frame, Frame::Admitted { .. } | Frame::Piece(_));
                    if write_message(&mut send, &frame).await.is_err() {
                        break; // the entry went away: dropping rx cancels the work
                    }
                    if end {
                        let _ = send.finish();
                        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
                        break;
                    }
                }
                _ = send.stopped() => break,
            }
        }
    }
}

/// Gives a queue slot back when dropped.
struct Release(Arc<Slots>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How an attempt at one replica failed.
enum Attempt {
    /// It is full.
    Busy(u32),
    /// It could not answer; another may.
    Down(String),
    /// The request is at fault.
    Invalid(String),
}

/// Run `work` on `engine` (on a blocking thread), sending pieces of text to `sink`; returns the
/// last frame.
fn compute(engine: &Engine, work: Work, sink: &mpsc::Sender<Frame>) -> Frame {
    let failed = |e: weft_infer::Error| Frame::Failed {
        invalid: matches!(e, weft_infer::Error::Invalid(_)),
        message: match e {
            weft_infer::Error::Invalid(m) => m,
            other => other.to_string(),
        },
    };
    let wrong = |what: &str| Frame::Failed {
        invalid: true,
        message: format!("this model does not do {what}"),
    };
    let on_piece = |piece: &str| {
        if sink.blocking_send(Frame::Piece(piece.to_string())).is_ok() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    };
    match (engine, work) {
        (Engine::Embeddings(e), Work::Embed { inputs }) => {
            let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
            match e.embed(&texts) {
                Ok(out) => Frame::Embedded {
                    tokens: out.total_tokens() as u32,
                    vectors: out.vectors,
                },
                Err(e) => failed(e),
            }
        }
        (Engine::Chat(m), Work::Chat { messages, params }) => {
            let mut model = m.lock();
            let params = generate_params(&params, model.context_length());
            let messages: Vec<weft_infer::Message> = messages
                .into_iter()
                .map(|(role, text)| {
                    let role = match role {
                        ChatRole::System => weft_infer::Role::System,
                        ChatRole::User => weft_infer::Role::User,
                        ChatRole::Assistant => weft_infer::Role::Assistant,
                    };
                    weft_infer::Message::new(role, text)
                })
                .collect();
            match model.chat_stream(&messages, &params, on_piece) {
                Ok(g) => done(&g),
                Err(e) => failed(e),
            }
        }
        (Engine::Chat(m), Work::Complete { prompt, params }) => {
            let mut model = m.lock();
            let params = generate_params(&params, model.context_length());
            match model.complete_stream(&prompt, &params, on_piece) {
                Ok(g) => done(&g),
                Err(e) => failed(e),
            }
        }
        (Engine::Embeddings(_), _) => wrong("text generation"),
        (Engine::Chat(_), _) => wrong("embeddings"),
    }
}

fn generate_params(p: &Params, context: usize) -> weft_infer::GenerateParams {
    weft_infer::GenerateParams {
        max_tokens: p.max_tokens.map_or(context, |n| n as usize),
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop.clone(),
        seed: p.seed,
    }
}

fn done(g: &weft_infer::Generation) -> Frame {
    Frame::Done {
        finish: match g.finish {
            weft_infer::FinishReason::Stop => Finish::Stop,
            weft_infer::FinishReason::Length => Finish::Length,
            weft_infer::FinishReason::Cancelled => Finish::Cancelled,
        },
        prompt_tokens: g.prompt_tokens as u32,
        completion_tokens: g.completion_tokens as u32,
    }
}
