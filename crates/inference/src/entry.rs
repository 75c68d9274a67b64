//! The entry side: a request for a model at this node is routed to the best replica, and
//! failed over to the next until one admits it and sends its first text.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weft_core::{NodeId, proto};
use weft_net::{read_message, write_message};

use crate::route::{self, Replica, Route};
use crate::wire::MAX_FRAME;
use crate::{
    ADMIT_WITHIN, Frame, InferenceError, InferenceService, Inner, Load, ModelKind, ModelRecord,
    Request,
};

/// How long a replica that failed is left out.
const AVOID_FAILED: Duration = Duration::from_secs(15);
/// How long a replica's reported queue counts (it drains in about a service time).
const LOAD_FRESH: Duration = Duration::from_secs(2);

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
pub(crate) struct Inflight(Arc<Inner>, NodeId);

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(n) = self.0.inflight.lock().get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

/// How an attempt at one replica failed.
pub(crate) enum Attempt {
    /// It is full.
    Busy(u32),
    /// It could not answer; another may.
    Down(String),
    /// The request is at fault.
    Invalid(String),
    /// The prompt does not fit the context (the request's fault).
    TooLong { prompt_tokens: u32, context: u32 },
}

impl InferenceService {
    /// Run `request` on the best replica; returns once the first text (or the embeddings)
    /// arrived, so a replica that fails before that is replaced by the next.
    pub async fn run(&self, request: Request) -> Result<Answer, InferenceError> {
        self.run_within(request, None).await
    }

    /// [`InferenceService::run`] on replicas whose nodes publish a price per 1,000 tokens of at
    /// most `max_price` micro-credits (`None`: any price).
    pub async fn run_within(
        &self,
        request: Request,
        max_price: Option<u64>,
    ) -> Result<Answer, InferenceError> {
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
            let mut replicas = self.replicas(&model).await?;
            if let Some(max) = max_price {
                let prices = inner.ledger.price_lists().await;
                let all = replicas.len();
                replicas =
                    route::priced_within(replicas, |n| prices.get(n).map(|p| p.tokens_per_k), max);
                if replicas.is_empty() && all > 0 {
                    return Err(InferenceError::Unavailable(format!(
                        "model `{}`: none of its {all} replicas is priced at or under {} credits per 1,000 tokens",
                        model.name,
                        weft_ledger::price::credits(i128::from(max))
                    )));
                }
            }
            let per_request = inner.service_time(&model.name);
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
                Err(Attempt::TooLong {
                    prompt_tokens,
                    context,
                }) => {
                    return Err(InferenceError::ContextLength {
                        prompt_tokens,
                        context,
                    });
                }
            }
        }
    }

    /// One try at one replica, up to its first text.
    pub(crate) async fn attempt(
        &self,
        node: NodeId,
        request: Arc<Request>,
    ) -> Result<Answer, Attempt> {
        let inner = &self.inner;
        *inner.inflight.lock().entry(node).or_insert(0) += 1;
        let inflight = Inflight(inner.clone(), node);
        let mut rx = if node == inner.me {
            self.serve_here(self.inner.me, &request)
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
            Some(Frame::TooLong {
                prompt_tokens,
                context,
            }) => {
                return Err(Attempt::TooLong {
                    prompt_tokens,
                    context,
                });
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
            Some(Frame::TooLong {
                prompt_tokens,
                context,
            }) => Err(Attempt::TooLong {
                prompt_tokens,
                context,
            }),
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

    pub(crate) fn heard(&self, node: NodeId, queued: u32, capacity: u32) {
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
    pub(crate) async fn call(
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
        self.inner.tasks.spawn(async move {
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
    pub(crate) async fn replicas(
        &self,
        model: &ModelRecord,
    ) -> Result<Vec<Replica<NodeId>>, InferenceError> {
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
}
