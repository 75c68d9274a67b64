//! What a node gives each of its services, and the one way a service is started.
//!
//! A node is an endpoint (transport, protocol router, task ownership), a fabric (membership),
//! a metadata table and object storage, plus a set of *services* — the account data plane,
//! jobs, inference, and whatever comes next — each a room of its own with one owner. Every
//! service implements [`Service`]: given the node's [`Context`], it registers its protocols on
//! the endpoint, starts its tasks through the context (so the endpoint owns them and
//! `Node::shutdown` stops them), and hands back a cheap-to-clone handle that front ends call.
//! Adding a service to a node is one registration ([`Services::start`]).
//!
//! A service that uses another asks the context for it ([`Context::service`]); the node
//! starts them in an order where that works, and a service started before what it needs is
//! an error that names both, not a panic.
//!
//! **Invariant:** knows no service. It depends only on the layers every service shares
//! (transport, membership, table, storage) and knows nothing about buckets, jobs, models or
//! HTTP.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use weft_core::{Capacity, NodeId, SecretKey};
use weft_fabric::Fabric;
use weft_meta::Table;
use weft_net::{Endpoint, Joined};
use weft_store::Storage;

/// Why a service did not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A service asked for another that was not started before it.
    #[error("service {wanted} is not running (start it before {by})")]
    Missing {
        /// The service asked for.
        wanted: &'static str,
        /// The service that asked.
        by: &'static str,
    },
    /// The same service started twice.
    #[error("service {0} is already running")]
    Twice(&'static str),
    /// A service's own reason.
    #[error("{service}: {why}")]
    Failed {
        /// The service.
        service: &'static str,
        /// Why.
        why: String,
    },
}

/// A room of the node: one capability with one owner. Cheap to clone; every clone is the same
/// running service.
pub trait Service: Clone + Send + Sync + 'static {
    /// Its name, in logs and errors.
    const NAME: &'static str;

    /// Start it on `ctx`: register its protocols, start its tasks through the context. Must not
    /// block; runs inside the node's tokio runtime.
    fn start(ctx: &Context) -> Result<Self, HostError>;
}

/// Everything a service is given — the shared layers, the node's identity and resources, its
/// settings, the services started before it, a spawner and the shutdown signal. Cheap to
/// clone.
#[derive(Clone)]
pub struct Context {
    /// The transport: protocols are registered here.
    pub endpoint: Endpoint,
    /// Membership, node records, coordinates.
    pub fabric: Fabric,
    /// The replicated metadata table.
    pub table: Table,
    /// Object storage through this node.
    pub storage: Storage,
    /// The node's key (signs what the node writes in its own name).
    pub key: SecretKey,
    /// The resources this node offers.
    pub capacity: Capacity,
    data_dir: PathBuf,
    settings: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
    started: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Context {
    /// The context of a node whose data directory is `data_dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoint: Endpoint,
        fabric: Fabric,
        table: Table,
        storage: Storage,
        key: SecretKey,
        capacity: Capacity,
        data_dir: &Path,
    ) -> Context {
        Context {
            endpoint,
            fabric,
            table,
            storage,
            key,
            capacity,
            data_dir: data_dir.to_path_buf(),
            settings: Arc::default(),
            started: Arc::default(),
        }
    }

    /// The same context with a service's settings (one value per type; the node sets them
    /// from its validated settings before it starts the services).
    pub fn with_setting<T: Any + Send + Sync>(self, value: T) -> Context {
        self.settings
            .lock()
            .insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// A service's settings of type `T`, if the node gave any.
    pub fn setting<T: Any + Clone + Send + Sync>(&self) -> Option<T> {
        self.settings
            .lock()
            .get(&TypeId::of::<T>())
            .and_then(|s| s.downcast_ref::<T>())
            .cloned()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.key.public()
    }

    /// The node's data directory (a service keeps its files in [`Context::folder`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The folder of the data directory that service files named `name` live in.
    pub fn folder(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// Resolves once the node begins to shut down (every task spawned through
    /// [`Context::tasks`] is then dropped at its next await point).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.endpoint.stopped()
    }

    /// The spawner every task of a service goes through.
    pub fn tasks(&self) -> Tasks {
        Tasks(self.endpoint.clone())
    }

    /// A running service `S`, asked for by `by` (which needs it).
    pub fn service<S: Service>(&self, by: &'static str) -> Result<S, HostError> {
        self.started
            .lock()
            .get(&TypeId::of::<S>())
            .and_then(|s| s.downcast_ref::<S>())
            .cloned()
            .ok_or(HostError::Missing {
                wanted: S::NAME,
                by,
            })
    }
}

/// Runs tasks as part of the node: the endpoint owns them, so they end when the node shuts
/// down and [`weft_net::Endpoint::shutdown`] waits for them. Cheap to clone.
#[derive(Clone)]
pub struct Tasks(Endpoint);

impl Tasks {
    /// Run `task` until it ends or the node stops.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.spawn(task);
    }

    /// Run `task` and hand back its result; dropping the handle aborts it (see
    /// [`Endpoint::spawn_joined`]).
    pub fn spawn_joined<F>(&self, task: F) -> Joined<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.spawn_joined(task)
    }
}

/// The services of one node, started in order.
pub struct Services {
    ctx: Context,
}

impl Services {
    /// No service yet, on `ctx`.
    pub fn new(ctx: Context) -> Services {
        Services { ctx }
    }

    /// The context every service gets.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Start service `S` (once) and keep it where later services find it.
    pub fn start<S: Service>(&mut self) -> Result<S, HostError> {
        if self.ctx.started.lock().contains_key(&TypeId::of::<S>()) {
            return Err(HostError::Twice(S::NAME));
        }
        let service = S::start(&self.ctx)?;
        self.ctx
            .started
            .lock()
            .insert(TypeId::of::<S>(), Box::new(service.clone()));
        tracing::debug!(service = S::NAME, "service started");
        Ok(service)
    }
}
