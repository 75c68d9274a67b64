//! The fabric: who is in it, who is alive, where they are and how far apart.
//!
//! It owns SWIM membership (foca, with suspicion) over the authenticated transport, node
//! records and revocations spread by push-pull anti-entropy, and Vivaldi network coordinates
//! fed by RTT probes. Upper layers ask it for a snapshot of members and for RTT estimates.
//!
//! It never knows about files, configuration formats, HTTP or the CLI; and it knows nothing of
//! what other protocols (storage, jobs) do. The pure parts (coordinates, record ordering) are
//! tested without IO; the drivers are thin.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod coords;
mod swim;
mod sync;
mod view;
pub mod vivaldi;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use rand::RngExt;
use tokio::sync::{mpsc, oneshot};
use weft_core::{
    AdmissionError, Capacity, MembershipCert, NodeId, NodeRecord, RecordBody, Revocation,
    SecretKey, proto,
};
use weft_net::{Endpoint, PeerInfo, SiteMap};

pub use coords::CoordMessage;
pub use swim::{SwimId, SwimTiming};
pub use sync::{SyncRequest, SyncResponse};
pub use view::{Member, MemberState};

use view::View;

/// How to start a node's fabric membership.
#[derive(Clone, Debug)]
pub struct FabricConfig {
    /// The node key (signs the node's record).
    pub key: SecretKey,
    /// The node's membership certificate.
    pub cert: MembershipCert,
    /// The address peers reach this node on.
    pub advertise: SocketAddr,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Offered resources.
    pub capacity: Capacity,
    /// Addresses to contact when the node knows no live member.
    pub bootstrap: Vec<SocketAddr>,
    /// Failure-detection timing.
    pub timing: SwimTiming,
    /// How often to send a coordinate probe.
    pub coord_interval: Duration,
    /// How often to sync records with a random peer.
    pub sync_interval: Duration,
    /// Unix ms start time of this run (its SWIM generation).
    pub generation: u64,
    /// Where to record peers' sites for WAN emulation (if on).
    pub site_map: Option<Arc<SiteMap>>,
}

impl FabricConfig {
    /// Defaults for everything but identity and address.
    pub fn new(
        key: SecretKey,
        cert: MembershipCert,
        advertise: SocketAddr,
        generation: u64,
    ) -> Self {
        FabricConfig {
            key,
            cert,
            advertise,
            labels: BTreeMap::new(),
            capacity: Capacity::default(),
            bootstrap: Vec::new(),
            timing: SwimTiming::default(),
            coord_interval: Duration::from_millis(50),
            sync_interval: Duration::from_secs(1),
            generation,
            site_map: None,
        }
    }
}

pub(crate) struct Shared {
    endpoint: Endpoint,
    local: NodeId,
    view: RwLock<View>,
    swim: mpsc::UnboundedSender<swim::Input>,
    outstanding: coords::Outstanding,
    dead_verdicts: AtomicU64,
    self_revoked: AtomicBool,
    site_map: Option<Arc<SiteMap>>,
    key: weft_core::SecretKey,
}

/// A running fabric membership. Cheap to clone.
#[derive(Clone)]
pub struct Fabric {
    shared: Arc<Shared>,
}

impl Fabric {
    /// Start membership on `endpoint`. Must run inside a tokio runtime.
    pub fn start(endpoint: Endpoint, cfg: FabricConfig) -> Fabric {
        let local = cfg.key.public();
        let me = NodeRecord::sign(
            &cfg.key,
            RecordBody {
                cert: cfg.cert.clone(),
                addr: cfg.advertise,
                generation: cfg.generation,
                seq: 0,
                labels: cfg.labels.clone(),
                capacity: cfg.capacity.clone(),
                software: weft_core::SOFTWARE_VERSION.to_string(),
                load: weft_core::Load::default(),
            },
        );
        if let Some(sites) = &cfg.site_map {
            sites.insert(cfg.advertise, &cfg.cert.body.placement.site);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            local,
            view: RwLock::new(View::new(me)),
            swim: tx.clone(),
            outstanding: coords::Outstanding::default(),
            dead_verdicts: AtomicU64::new(0),
            self_revoked: AtomicBool::new(false),
            site_map: cfg.site_map.clone(),
            key: cfg.key.clone(),
        });
        let swim_id = SwimId {
            node: local,
            addr: cfg.advertise,
            generation: cfg.generation,
        };
        let swim_tx = tx.clone();
        endpoint.register_datagram(
            proto::SWIM,
            Arc::new(move |peer: &PeerInfo, bytes: Bytes| {
                let _ = swim_tx.send(swim::Input::Data(peer.id, bytes));
            }),
        );
        shared.register_sync();
        shared.register_coords();
        // A peer that refuses this node as revoked hands it the signed revocation: verified
        // like any other, it tells the node it is out (and the node stops).
        let weak = Arc::downgrade(&shared);
        endpoint.on_revoked(Arc::new(move |bytes: Vec<u8>| {
            if let (Some(shared), Ok(rev)) = (
                weak.upgrade(),
                weft_core::wire::decode::<Revocation>(&bytes),
            ) && rev.body.node == shared.local
            {
                shared.apply_revocation(rev);
            }
        }));
        endpoint.spawn(swim::run(shared.clone(), swim_id, cfg.timing, tx, rx));
        endpoint.spawn(shared.clone().run_coords(cfg.coord_interval));
        endpoint.spawn(shared.clone().run_sync(cfg.sync_interval, cfg.bootstrap));
        Fabric { shared }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.local
    }

    /// The transport endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// Every node this one knows of, itself included, sorted by site.
    pub fn members(&self) -> Vec<Member> {
        self.shared
            .view
            .read()
            .members(self.shared.local, weft_net::now_ms())
    }

    /// Report this node's live load: its record is re-signed with it and spreads with the
    /// next record exchanges.
    pub fn set_load(&self, load: weft_core::Load) {
        let mut view = self.shared.view.write();
        let Some(me) = view.records.get(&self.shared.local) else {
            return;
        };
        if me.body.load == load {
            return;
        }
        let mut body = me.body.clone();
        body.seq += 1;
        body.load = load;
        let record = NodeRecord::sign(&self.shared.key, body);
        view.records.insert(self.shared.local, record);
    }

    /// One member, if known.
    pub fn member(&self, node: &NodeId) -> Option<Member> {
        self.members().into_iter().find(|m| m.id == *node)
    }

    /// The current verified record of `node`.
    pub fn record(&self, node: &NodeId) -> Option<NodeRecord> {
        self.shared.view.read().records.get(node).cloned()
    }

    /// RTT to `node` estimated from network coordinates.
    pub fn estimated_rtt(&self, node: &NodeId) -> Option<Duration> {
        let view = self.shared.view.read();
        let coord = view.coords.get(node)?;
        Some(view.vivaldi.coordinate().distance_to(coord))
    }

    /// This node's network coordinate.
    pub fn coordinate(&self) -> vivaldi::Coordinate {
        self.shared.view.read().vivaldi.coordinate().clone()
    }

    /// How many times this node has seen any member declared dead.
    pub fn dead_verdicts(&self) -> u64 {
        self.shared.dead_verdicts.load(Ordering::Relaxed)
    }

    /// True once this node has learned it was revoked.
    pub fn is_revoked(&self) -> bool {
        self.shared.self_revoked.load(Ordering::Relaxed)
    }

    /// Apply a revocation (verified against the fabric's admin key) and spread it at once.
    /// Returns whether it was new.
    pub fn revoke(&self, revocation: Revocation) -> Result<bool, AdmissionError> {
        let trust = self.shared.endpoint.trust();
        revocation.verify(trust.fabric(), &trust.admin())?;
        let new = self.shared.apply_revocation(revocation);
        if new {
            for (id, addr) in self.shared.view.read().live_peers() {
                let shared = self.shared.clone();
                self.shared.endpoint.spawn(async move {
                    let _ = shared.sync_with(Some(id), addr).await;
                });
            }
        }
        Ok(new)
    }

    /// Leave the fabric gracefully: tell peers, so they mark this node down at once.
    pub async fn leave(&self) {
        let generation = self
            .shared
            .view
            .read()
            .records
            .get(&self.shared.local)
            .map(|r| r.body.generation);
        if let Some(generation) = generation {
            // Datagrams can be lost; the notice is tiny, so say it three times.
            for _ in 0..3 {
                self.shared.announce_leaving(generation);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        let (tx, rx) = oneshot::channel();
        if self.shared.swim.send(swim::Input::Leave(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
            // Give the leave datagrams a moment to go out before the endpoint closes.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Shared {
    fn my_record(&self, view: &View) -> NodeRecord {
        view.records
            .get(&self.local)
            .cloned()
            .expect("a node's own record is inserted at start and never removed")
    }

    /// Keep `record` if it verifies and is newer than what we hold.
    fn apply_record(&self, record: NodeRecord) -> bool {
        let trust = self.endpoint.trust();
        let node = record.node();
        if node == self.local || trust.is_revoked(&node) {
            return false;
        }
        if let Err(e) = record.verify(trust.fabric(), &trust.admin(), weft_net::now_ms()) {
            tracing::debug!(%node, error = %e, "ignoring invalid node record");
            return false;
        }
        let mut view = self.view.write();
        if view
            .records
            .get(&node)
            .is_some_and(|held| held.version() >= record.version())
        {
            return false;
        }
        if let Some(sites) = &self.site_map {
            sites.insert(record.body.addr, &record.body.cert.body.placement.site);
        }
        view.records.insert(node, record);
        true
    }

    /// Apply a revocation that must still be verified. Returns whether it was new.
    fn apply_revocation(&self, rev: Revocation) -> bool {
        let trust = self.endpoint.trust();
        if rev.verify(trust.fabric(), &trust.admin()).is_err() {
            return false;
        }
        let node = rev.body.node;
        {
            let mut view = self.view.write();
            if view.revocations.contains_key(&node) {
                return false;
            }
            view.revocations.insert(node, rev.clone());
        }
        trust.revoke_with(node, weft_core::wire::encode(&rev));
        if node == self.local {
            tracing::error!("this node's membership was revoked by the fabric admin");
            self.self_revoked.store(true, Ordering::Relaxed);
            return true;
        }
        tracing::warn!(%node, "node revoked");
        self.endpoint.disconnect(&node);
        let _ = self.swim.send(swim::Input::MarkDown(node));
        true
    }

    async fn run_sync(self: Arc<Self>, interval: Duration, bootstrap: Vec<SocketAddr>) {
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        loop {
            let peers = self.view.read().live_peers();
            if peers.is_empty() {
                self.bootstrap(&bootstrap).await;
            } else {
                let (id, addr) = peers[rng.random_range(0..peers.len())];
                if let Err(e) = self.sync_with(Some(id), addr).await {
                    tracing::debug!(peer = %id, error = %e, "sync failed");
                }
            }
            tokio::time::sleep(interval.mul_f64(rng.random_range(0.5..1.5))).await;
        }
    }

    /// Contact bootstrap addresses (and every node we have a record of) until one answers,
    /// then announce ourselves to it.
    async fn bootstrap(self: &Arc<Self>, bootstrap: &[SocketAddr]) {
        let mut targets: Vec<(Option<NodeId>, SocketAddr)> =
            bootstrap.iter().map(|a| (None, *a)).collect();
        {
            let view = self.view.read();
            for r in view.records.values() {
                if r.node() != self.local && !targets.iter().any(|(_, a)| *a == r.body.addr) {
                    targets.push((Some(r.node()), r.body.addr));
                }
            }
        }
        let own = self
            .view
            .read()
            .records
            .get(&self.local)
            .map(|r| r.body.addr);
        for (id, addr) in targets {
            if Some(addr) == own {
                continue;
            }
            match self.sync_with(id, addr).await {
                Ok(peer) => {
                    let record = self.view.read().records.get(&peer).cloned();
                    if let Some(r) = record {
                        let _ = self.swim.send(swim::Input::Announce(SwimId {
                            node: peer,
                            addr: r.body.addr,
                            generation: r.body.generation,
                        }));
                        return;
                    }
                }
                Err(e) => tracing::debug!(%addr, error = %e, "bootstrap contact failed"),
            }
        }
    }
}
