//! A weft node, assembled from validated settings: it opens the data directory, loads the node
//! key and membership, opens its stores, binds the authenticated endpoint (with WAN emulation
//! if asked), starts fabric membership, the metadata table and storage, serves admission if it
//! holds the fabric's admin key, migrates old rows, and then starts every service through one
//! trait ([`weft_host::Service`]) with one context: the account data plane
//! ([`weft_data::DataPlane`]), healing ([`weft_heal::Healer`]), jobs
//! ([`weft_jobs::JobService`]) and inference ([`weft_inference::InferenceService`]). Adding a
//! service is one line in [`Node::start`].
//!
//! [`Node`] is the typed face the front ends (HTTP API, S3, OpenAI) call: its services, and the
//! operator's operations (status, invites, revocation, repair, WAN links, shutdown). Front ends
//! use nothing below it.
//!
//! This crate owns the data-directory layout and the admission workflow (init, invite, join,
//! revoke). It does not parse configuration files or flags (the binary turns those into
//! [`NodeSettings`]) and knows nothing about HTTP.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod admission;
mod audit;
mod billing;
mod datadir;
mod operator;
pub use audit::{ObjectAudit, ObjectsAudit, ShardAudit};
pub use billing::StorageBill;
pub use operator::{AccountsPolicy, QuotaEntry};
mod peers;
mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use weft_core::{Capacity, MembershipCert, NodeId, SecretKey};
use weft_data::DataPlane;
use weft_fabric::{Fabric, FabricConfig, SwimTiming};
use weft_heal::Healer;
use weft_host::{Context, HostError, Services};
use weft_inference::InferenceService;
use weft_jobs::JobService;
use weft_ledger::Ledger;
use weft_meta::Rules;
use weft_net::{Endpoint, EndpointConfig, NetError, SiteMap, Trust};
use weft_store::{ShardStore, ShardStoreError, Storage};

pub use admission::{
    CERT_VALIDITY, InviteRequest, JoinError, JoinRequest, JoinResponse, init_fabric, issue_invite,
    redeem,
};
pub use datadir::{DataDir, DataDirError, FabricFile};
pub use status::{NodeStatus, rss_bytes};

use peers::{load_peers, save_peers};
/// What the front ends see of membership (re-exported: they depend on nothing below the node).
pub use weft_fabric::{Member, MemberState};
pub use weft_heal::{HealConfig, HealStatus, Reputation};
pub use weft_ledger::Prices;
pub use weft_net::WanConfig;

/// Everything needed to start a node, already validated.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// UDP address for QUIC.
    pub listen: SocketAddr,
    /// Address peers should use (defaults to the bound address).
    pub advertise: Option<SocketAddr>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Offered resources.
    pub capacity: Capacity,
    /// WAN emulation (tests and local demos).
    pub wan: Option<WanConfig>,
    /// Repair and scrubbing.
    pub heal: weft_heal::HealConfig,
    /// Failure-detection timing.
    pub timing: SwimTiming,
    /// What jobs run here may use.
    pub jobs: weft_jobs::JobsConfig,
    /// What this node charges per unit of work (its receipts carry it).
    pub prices: weft_ledger::Prices,
}

/// Node failures.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Data directory problem.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// Transport problem.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Local shard store problem.
    #[error(transparent)]
    Shards(#[from] ShardStoreError),
    /// The stored certificate is not valid for the stored fabric.
    #[error("stored membership certificate is not valid: {0}")]
    BadMembership(String),
    /// An admin-only action on a node without the admin key.
    #[error(
        "this node does not hold the fabric admin key; run the command on the node that ran `weft init`"
    )]
    NotAdmin,
    /// A node id or prefix that matches no known node.
    #[error("no known node matches {0:?}")]
    UnknownNode(String),
    /// A prefix that matches several nodes.
    #[error("{0:?} matches several nodes ({1}); give more digits")]
    AmbiguousNode(String, String),
    /// Bad request from a user.
    #[error("{0}")]
    Invalid(String),
    /// A service did not start.
    #[error(transparent)]
    Service(#[from] HostError),
    /// The metadata table could not be read or written.
    #[error(transparent)]
    Meta(#[from] weft_meta::MetaError),
    /// Storage receipts could not be made.
    #[error("storage could not be billed: {0}")]
    Billing(String),
}

struct Inner {
    dir: DataDir,
    key: SecretKey,
    cert: MembershipCert,
    admin: Option<SecretKey>,
    endpoint: Endpoint,
    ctx: Context,
    data: DataPlane,
    healer: Healer,
    jobs: JobService,
    inference: InferenceService,
    ledger: Ledger,
    advertise: SocketAddr,
    started: Instant,
    stop: watch::Sender<bool>,
    /// Front-end services (HTTP API, S3 gateway), drained first at shutdown.
    services: TaskTracker,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Start the node described by `settings`. Must run inside a tokio runtime.
    pub async fn start(settings: NodeSettings) -> Result<Node, NodeError> {
        let dir = DataDir::open(&settings.data_dir)?;
        let (admin_pub, fabric_file) = dir
            .fabric()?
            .ok_or_else(|| DataDirError::NotAMember(dir.root().to_path_buf()))?;
        let key = dir.node_key()?;
        let cert = dir.membership()?;
        let trust = Arc::new(Trust::new(admin_pub));
        trust
            .check(&cert, &key.public(), weft_net::now_ms())
            .map_err(|e| NodeError::BadMembership(e.to_string()))?;
        let admin = dir.admin_key()?;
        // Everything that can fail is opened before the endpoint starts running tasks, so a
        // node that fails to start leaves no task, port or open file behind.
        let shards = Arc::new(ShardStore::open(
            &dir.path("store"),
            settings.capacity.disk_bytes,
        )?);
        let meta = Arc::new(
            weft_meta::LocalTable::open(&dir.path("meta.redb"))
                .map_err(|e| NodeError::Invalid(e.to_string()))?,
        );
        let admissions = match &admin {
            Some(admin_key) => Some(Arc::new(admission::Admissions::new(
                dir.clone(),
                admin_key.clone(),
            )?)),
            None => None,
        };
        let site_map = settings.wan.as_ref().map(|_| Arc::new(SiteMap::default()));
        let endpoint = Endpoint::bind(EndpointConfig {
            listen: settings.listen,
            key: key.clone(),
            membership: Some(cert.clone()),
            trust,
            // Guests may join (on the admin node) and reach the API as clients (every node).
            accept_guests: true,
            wan: settings
                .wan
                .clone()
                .zip(site_map.clone())
                .map(|(wan, sites)| (cert.body.placement.site.clone(), wan, sites)),
        })?;
        let bound = endpoint.local_addr().map_err(|e| NetError::Bind {
            addr: settings.listen,
            reason: e.to_string(),
        })?;
        let advertise = settings.advertise.unwrap_or(bound);
        if let Some(admissions) = admissions {
            admissions.register(&endpoint);
        }
        let mut bootstrap = fabric_file.bootstrap.clone();
        bootstrap.extend(load_peers(&dir));
        let mut seen = std::collections::HashSet::new();
        bootstrap.retain(|a| *a != advertise && seen.insert(*a));
        let mut cfg = FabricConfig::new(key.clone(), cert.clone(), advertise, weft_net::now_ms());
        cfg.labels = settings.labels;
        cfg.capacity = settings.capacity.clone();
        cfg.bootstrap = bootstrap;
        cfg.timing = settings.timing;
        cfg.site_map = site_map;
        let fabric = Fabric::start(endpoint.clone(), cfg);
        weft_store::protocol::register(&endpoint, shards.clone(), {
            let (fabric, capacity) = (fabric.clone(), shards.capacity());
            move || {
                member_share(
                    capacity,
                    fabric.members().iter().filter(|m| !m.is_self).count(),
                )
            }
        });
        let storage = Storage::new(endpoint.clone(), fabric.clone(), shards);
        let table = weft_meta::Table::start(
            endpoint.clone(),
            fabric.clone(),
            meta,
            key.clone(),
            rules().with_admin(admin_pub),
            Duration::from_secs(10),
        );
        let ctx = Context::new(
            endpoint.clone(),
            fabric,
            table,
            storage,
            key.clone(),
            settings.capacity.clone(),
            dir.root(),
        )
        .with_setting(settings.heal.clone())
        .with_setting(settings.jobs.clone())
        .with_setting(settings.prices);
        // Every service, in an order where each finds those it uses.
        let mut services = Services::new(ctx.clone());
        let started = (|| -> Result<_, HostError> {
            Ok((
                services.start::<Ledger>()?,
                services.start::<DataPlane>()?,
                services.start::<Healer>()?,
                services.start::<JobService>()?,
                services.start::<InferenceService>()?,
            ))
        })();
        let (ledger, data, healer, jobs, inference) = match started {
            Ok(s) => s,
            Err(e) => {
                endpoint.shutdown().await;
                return Err(e.into());
            }
        };
        let (stop, _) = watch::channel(false);
        let node = Node {
            inner: Arc::new(Inner {
                dir,
                key,
                cert,
                admin,
                endpoint,
                ctx,
                data,
                healer,
                jobs,
                inference,
                ledger,
                advertise,
                started: Instant::now(),
                stop,
                services: TaskTracker::new(),
            }),
        };
        node.inner.endpoint.spawn(node.clone().persist_peers());
        node.inner.endpoint.spawn(node.clone().bill_storage());
        node.inner.endpoint.spawn(weft_data::migrate::run(
            node.inner.dir.path("migrated-rows"),
            node.inner.ctx.table.clone(),
            node.inner.data.own().clone(),
        ));
        tracing::info!(id = %node.id(), addr = %advertise, site = %node.inner.cert.body.placement.site, "node started");
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.key.public()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.inner.dir
    }

    /// The address peers reach this node on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.advertise
    }

    /// What every service of this node was given (its endpoint, fabric, table, storage).
    /// For services and tests; front ends call the node's typed operations instead.
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// Fabric membership.
    pub fn fabric(&self) -> &Fabric {
        &self.inner.ctx.fabric
    }

    /// Object storage through this node.
    pub fn storage(&self) -> &Storage {
        &self.inner.ctx.storage
    }

    /// The replicated metadata table, as seen from this node.
    pub fn table(&self) -> &weft_meta::Table {
        &self.inner.ctx.table
    }

    /// Repair and scrubbing.
    pub fn healer(&self) -> &Healer {
        &self.inner.healer
    }

    /// The account data plane: accounts acting through this node, access keys, objects read
    /// by capability.
    pub fn data(&self) -> &DataPlane {
        &self.inner.data
    }

    /// The job service: submit, list, watch and cancel jobs.
    pub fn jobs(&self) -> &JobService {
        &self.inner.jobs
    }

    /// Inference: models, and requests for them routed to the nearest replica.
    pub fn inference(&self) -> &InferenceService {
        &self.inner.inference
    }

    /// The ledger: receipts of the work this node did, the fabric's log of them, proofs.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Every known node.
    pub fn members(&self) -> Vec<Member> {
        self.fabric().members()
    }

    /// Ask the node to stop (what `weft down` and the API's shutdown do).
    pub fn request_stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Wait until a stop is requested, the node learns it was revoked, or it shuts down: the
    /// signal on which its front-end services stop accepting and drain.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stop.subscribe();
        let shutting_down = self.inner.endpoint.stopped();
        tokio::pin!(shutting_down);
        loop {
            if *rx.borrow() || self.fabric().is_revoked() {
                return;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                () = &mut shutting_down => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Run `task` as part of this node (e.g. one connection of a front-end server): it is
    /// cancelled when the node shuts down.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.endpoint.spawn(task);
    }

    /// The accept loop of a front-end service: hand each connection `listener` accepts to
    /// `serve`, whose future runs as a task of the node, until [`Node::stopped`] resolves; then
    /// close the listener. At most [`MAX_HTTP_CONNECTIONS`] connections are served at once: one
    /// past that is closed as it is accepted, so idle or slow clients cannot take every
    /// descriptor (each server also closes a connection that sends no complete request head
    /// within [`HTTP_HEADER_TIMEOUT`], idle keep-alive included). A failed accept (out of
    /// descriptors and the like) waits 50 ms rather than spin. `what` names the service in
    /// logs. (What a connection speaks is the caller's.)
    pub async fn accept_until_stopped<F, Fut>(
        &self,
        listener: tokio::net::TcpListener,
        what: &'static str,
        mut serve: F,
    ) where
        F: FnMut(tokio::net::TcpStream) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let stopped = self.stopped();
        tokio::pin!(stopped);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let conn = serve(socket);
                            self.spawn(async move {
                                conn.await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            tracing::debug!(%peer, service = what, "connection closed: the server is at its connection limit");
                            drop(socket);
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, service = what, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut stopped => break,
            }
        }
    }

    /// Run a front-end service of this node (the HTTP API, the S3 gateway), which must stop
    /// accepting once [`Node::stopped`] resolves and then finish its requests. The node owns
    /// it: [`Node::shutdown`] waits up to 10 s for it (storage still works meanwhile, so
    /// requests in flight complete), then cancels it with everything else.
    pub fn spawn_service<F>(&self, service: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner
            .endpoint
            .spawn(self.inner.services.track_future(service));
    }

    /// Tasks of this node still alive (see [`weft_net::Endpoint::live_tasks`]): zero once
    /// [`Node::shutdown`] has returned.
    pub fn live_tasks(&self) -> usize {
        self.inner.endpoint.live_tasks()
    }

    /// Stop the node, the one way to do it: signal its front-end services and let them drain,
    /// leave the fabric gracefully, then shut the endpoint, which cancels every task of every
    /// service and waits for them and releases the UDP port. Once the last handle to the node
    /// is dropped its databases and files are closed, so the same data directory can be
    /// started again in this process.
    pub async fn shutdown(&self) {
        self.request_stop();
        self.inner.services.close();
        if tokio::time::timeout(SERVICE_DRAIN, self.inner.services.wait())
            .await
            .is_err()
        {
            tracing::warn!("front-end services did not drain in time; cancelling them");
        }
        if !self.inner.endpoint.is_stopping() {
            save_peers(&self.inner.dir, self.fabric());
            self.fabric().leave().await;
        }
        self.inner.endpoint.shutdown().await;
        tracing::info!("node stopped");
    }
}

/// Every row kind a node serves: its services' and those of the layers below.
pub fn rules() -> Rules {
    let mut rules = Rules::new();
    weft_data::schema::register(&mut rules);
    weft_inference::schema::register(&mut rules);
    weft_heal::schema::register(&mut rules);
    weft_compute::schema::register(&mut rules);
    weft_ledger::schema::register(&mut rules);
    rules
}

/// How long [`Node::shutdown`] lets front-end services finish their requests.
const SERVICE_DRAIN: Duration = Duration::from_secs(10);

/// Most connections one front-end server (API, S3, OpenAI) serves at once.
pub const MAX_HTTP_CONNECTIONS: usize = 512;

/// How long a front-end server waits for a complete request head (and, between requests, for
/// the next one) before it closes the connection.
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes no object owns yet each other member may have in a store of `capacity`
/// (`others` other members): an equal part, and never more than half.
fn member_share(capacity: u64, others: usize) -> u64 {
    capacity / others.max(2) as u64
}
