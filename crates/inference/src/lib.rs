//! Inference on the fabric: models as fabric objects, and requests for them routed from any
//! node to the nearest node that holds the model loaded, never outside the places the caller
//! allows. Each side is a module of its own:
//!
//! - **Models** ([`model`], [`schema`], [`owner`]). A model is a name claimed fabric-wide by
//!   the account that added it; its files are objects of one of that account's buckets, named
//!   in the row by capability and BLAKE3; the row says how many replicas should serve it and
//!   where they may be.
//! - **Placement** ([`placement`], pure) and **holding** ([`holder`]). Every node computes the
//!   same placement from the membership; each node it picks fetches the files (verified),
//!   loads them into the engine ([`weft_infer`]) and says so in a `serve` row.
//! - **Entry** ([`entry`], over [`route`] and [`cache`]). The node a client reaches finds the
//!   ready replicas that SWIM sees alive and asks the routing core for the least expected wait:
//!   round trip plus queue times the model's service time. Replicas outside the allowed
//!   regions/jurisdictions are never candidates, so the prompt never reaches them. A replica
//!   that cannot be reached, does not admit in time, refuses or fails before the first token is
//!   excluded and the next is tried; once text has flowed a failure ends the answer with an
//!   error.
//! - **Replica** ([`replica`]). Each replica takes at most `queue` requests per model (running
//!   and waiting; one runs at a time — a 2-core node gains nothing from two); a full one
//!   answers *busy* with a time to come back, and when every allowed replica is full the
//!   caller is told to retry (HTTP 429 at the OpenAI front end). A replica checks the request
//!   again (its place, its size) whoever sends it.
//! - **Wire** ([`wire`]): the `INFER` stream between entry and replica.
//!
//! **What it never does:** keep a prompt or an answer (nothing is written to a table or a
//! disk), or hand a request to a node that is not a fabric member.
//!
//! **Invariant:** knows no HTTP and no OpenAI wire format (the `weft-openai` front end maps
//! onto [`InferenceService`]); the engine knows no network.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cache;
pub mod entry;
mod error;
pub mod holder;
pub mod model;
pub mod owner;
pub mod placement;
pub mod replica;
pub mod route;
pub mod schema;
pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use weft_core::{NodeId, proto};
use weft_data::Acting;
use weft_fabric::Fabric;
use weft_host::{Context, HostError, Service, Tasks};
use weft_meta::Table;
use weft_net::Endpoint;

pub use entry::Answer;
pub use error::InferenceError;
pub use holder::{Engine, ModelHolder};
pub use model::{
    MAX_REPLICAS, ModelError, ModelFile, ModelKind, ModelListing, ModelRecord, ModelReplica,
    Serving, check_model_name,
};
pub use owner::ModelOwner;
pub use route::Allowed;
pub use wire::{ChatRole, Finish, Frame, Params, Refusal, Request, Work};

/// Requests a replica takes per model (running and waiting) unless told otherwise.
pub const DEFAULT_QUEUE: u32 = 8;
/// The most texts one embeddings request may hold (OpenAI's limit); a replica refuses more,
/// whoever sends them.
pub const MAX_INPUTS: usize = 2048;
/// How long a replica has to admit (or refuse) a request before the entry tries another.
const ADMIT_WITHIN: Duration = Duration::from_secs(3);
/// Service time assumed for a model before any was measured, ms.
const FIRST_GUESS_MS: f64 = 500.0;

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

/// A replica's queue for one model.
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
    tasks: Tasks,
    holder: ModelHolder,
    queue: AtomicU32,
    slots: Mutex<HashMap<String, Arc<Slots>>>,
    catalog: Cached<Vec<ModelRecord>>,
    serving: Mutex<HashMap<String, (Instant, Vec<NodeId>)>>,
    /// Lists being read in the background (model names; "" for the model list).
    refreshing: Mutex<HashSet<String>>,
    loads: Mutex<HashMap<NodeId, Load>>,
    inflight: Mutex<HashMap<NodeId, u32>>,
    failed: Mutex<HashMap<NodeId, Instant>>,
    service_ms: Mutex<HashMap<String, f64>>,
    received: AtomicU64,
    forwarded: AtomicU64,
    served: AtomicU64,
    busy: AtomicU64,
    /// Where this node's receipts for the requests it answered go.
    ledger: weft_ledger::Ledger,
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

    /// The average service time of `model`, ms (a first guess before any was measured).
    fn service_time(&self, model: &str) -> f64 {
        self.service_ms
            .lock()
            .get(model)
            .copied()
            .unwrap_or(FIRST_GUESS_MS)
    }
}

/// The inference service of a node: models held here, the entry (routing) and replica
/// (serving) sides. Cheap to clone.
#[derive(Clone)]
pub struct InferenceService {
    inner: Arc<Inner>,
}

impl Service for InferenceService {
    const NAME: &'static str = "inference";

    /// Hold the models the placement gives this node, and serve `INFER` streams.
    fn start(ctx: &Context) -> Result<InferenceService, HostError> {
        let svc = InferenceService {
            inner: Arc::new(Inner {
                me: ctx.id(),
                endpoint: ctx.endpoint.clone(),
                fabric: ctx.fabric.clone(),
                table: ctx.table.clone(),
                tasks: ctx.tasks(),
                holder: ModelHolder::start(ctx),
                queue: AtomicU32::new(DEFAULT_QUEUE),
                slots: Mutex::new(HashMap::new()),
                catalog: Mutex::new(None),
                serving: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                loads: Mutex::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                failed: Mutex::new(HashMap::new()),
                service_ms: Mutex::new(HashMap::new()),
                received: AtomicU64::new(0),
                forwarded: AtomicU64::new(0),
                served: AtomicU64::new(0),
                busy: AtomicU64::new(0),
                ledger: ctx.service::<weft_ledger::Ledger>(Self::NAME)?,
            }),
        };
        let me = svc.clone();
        ctx.endpoint.register_stream(
            proto::INFER,
            false,
            Arc::new(move |peer, send, recv| {
                let me = me.clone();
                Box::pin(async move { me.answer_peer(peer, send, recv).await })
            }),
        );
        Ok(svc)
    }
}

impl InferenceService {
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
            .holder
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

    /// The models of the account `acting` acts for: add, place, remove.
    pub fn owner<'a>(&'a self, acting: &'a Acting) -> ModelOwner<'a> {
        ModelOwner {
            acting,
            table: &self.inner.table,
        }
    }

    /// Every model with where it is served now: the nodes the placement picks, and those that
    /// still say they hold it (ready, loading, failed — with why — or placed, not started).
    pub async fn listing(&self) -> Result<Vec<ModelListing>, ModelError> {
        let table = &self.inner.table;
        let members = self.inner.fabric.members();
        let mut out = Vec::new();
        for model in schema::models(table).await? {
            let digest = model.digest();
            let said: BTreeMap<_, _> = schema::serving(table, &model.name)
                .await?
                .into_iter()
                .filter(|(_, sv)| sv.digest == digest)
                .collect();
            let placed = placement::holders(&model, &members);
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
        Ok(out)
    }
}
