//! Self-healing storage. Every stored object is registered in a catalog kept in the replicated
//! metadata table ([`registry`]); the first live replica of each catalog partition owns the
//! objects in it and checks them periodically ([`repair`]): shards whose holder has been gone
//! longer than a grace period, or that their holder no longer has (deleted, or dropped as
//! corrupt by scrubbing), are rebuilt from any k others — on ciphertext, without the object
//! key — and placed on new nodes the object's residency policy allows, riskiest segments first,
//! at a bounded rate. Every node also re-hashes its own shards in the background ([`scrub`]).
//!
//! It knows storage's public operations and the metadata table, and nothing of buckets,
//! accounts, HTTP or files beyond the shard store.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod billing;
pub mod gc;
pub mod registry;
pub mod repair;
pub mod reputation;
pub mod schema;
pub mod scrub;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_meta::Table;
use weft_store::Storage;

pub use registry::{HealError, Listing, ManifestEntry, Registry};
pub use reputation::Reputation;
pub use schema::RefHolder;

/// Healing settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealConfig {
    /// How long a holder may be gone before its shards are rebuilt elsewhere (a restarting
    /// node is not a lost node).
    pub grace: Duration,
    /// Time between checks of the objects this node owns.
    pub interval: Duration,
    /// Repair rate limit, bytes of rebuilt shards written per second.
    pub repair_bytes_per_sec: u64,
    /// Scrubbing rate limit, bytes re-hashed per second (0: no scrubbing).
    pub scrub_bytes_per_sec: u64,
    /// Time between scrubbing passes.
    pub scrub_interval: Duration,
    /// How long an object must have had no references (deleted, overwritten, an abandoned
    /// upload, a write whose name was never committed) before its shards are reclaimed.
    pub gc_delay: Duration,
    /// How often this node issues storage receipts for the bytes it holds for each account.
    pub storage_receipts_every: Duration,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            grace: Duration::from_secs(300),
            interval: Duration::from_secs(30),
            repair_bytes_per_sec: 256 << 20,
            scrub_bytes_per_sec: 16 << 20,
            scrub_interval: Duration::from_secs(3600),
            gc_delay: Duration::from_secs(3600),
            storage_receipts_every: Duration::from_secs(3600),
        }
    }
}

/// What healing has done, for `weft repair status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealStatus {
    /// Grace period, seconds.
    pub grace_secs: f64,
    /// Repair rate limit, bytes per second.
    pub repair_bytes_per_sec: u64,
    /// Completed checks.
    pub scans: u64,
    /// Unix ms of the last completed check (0: none yet).
    pub last_scan_ms: u64,
    /// Unix ms at which that check began.
    pub last_scan_started_ms: u64,
    /// Objects this node owned in the last check.
    pub objects_owned: u64,
    /// Segments found below full redundancy by the last completed check (it repaired them).
    pub segments_degraded: u64,
    /// Segments that could not be repaired in the last check (too few shards, no room).
    pub segments_unrepairable: u64,
    /// Repair work waiting (segments).
    pub queued: u64,
    /// Shards rebuilt so far.
    pub shards_repaired: u64,
    /// Bytes of shards rebuilt so far.
    pub bytes_repaired: u64,
    /// Seconds spent rebuilding.
    pub repair_secs: f64,
    /// Unix ms at which the latest rebuilding began (0: never).
    pub last_repair_started_ms: u64,
    /// Unix ms at which it ended.
    pub last_repair_finished_ms: u64,
    /// Manifest copies re-made.
    pub manifests_copied: u64,
    /// Failed repair attempts.
    pub repair_failures: u64,
    /// Storage audits this node made that passed.
    pub audits_passed: u64,
    /// Storage audits this node made that failed.
    pub audits_failed: u64,
    /// Objects whose shards garbage collection reclaimed.
    pub gc_objects: u64,
    /// Bytes of shards reclaimed.
    pub gc_bytes: u64,
    /// Bytes re-hashed by scrubbing.
    pub scrubbed_bytes: u64,
    /// Corrupt shards scrubbing found and removed.
    pub scrub_corrupt: u64,
    /// Unix ms at which the latest scrubbing pass began (0: never).
    #[serde(default)]
    pub last_scrub_started_ms: u64,
    /// Orphan shards (referenced by no object in the catalog) this node deleted.
    #[serde(default)]
    pub orphans_removed: u64,
    /// Their bytes.
    #[serde(default)]
    pub orphan_bytes: u64,
    /// Catalog rows the last check could not read (written by a newer weft, or corrupt): their
    /// objects were neither repaired nor collected.
    #[serde(default)]
    pub unreadable_rows: u64,
    /// The latest such row, and why.
    #[serde(default)]
    pub last_unreadable: String,
    /// Orphan sweeps skipped because something they depend on could not be read.
    #[serde(default)]
    pub sweeps_skipped: u64,
    /// Why the latest sweep was skipped.
    #[serde(default)]
    pub last_sweep_skip: String,
}

/// The healing service of one node. Cheap to clone.
#[derive(Clone)]
pub struct Healer {
    pub(crate) storage: Storage,
    pub(crate) registry: Registry,
    pub(crate) config: HealConfig,
    pub(crate) status: Arc<Mutex<HealStatus>>,
    pub(crate) reputation: Arc<Mutex<std::collections::HashMap<weft_core::NodeId, Reputation>>>,
    /// Objects whose deleted catalog row was checked and found unreferenced (sweeps skip them).
    pub(crate) collected: Arc<Mutex<std::collections::HashSet<weft_core::ContentHash>>>,
}

impl weft_host::Service for Healer {
    const NAME: &'static str = "heal";

    fn start(ctx: &weft_host::Context) -> Result<Healer, weft_host::HostError> {
        Ok(Healer::start(
            ctx.storage.clone(),
            ctx.table.clone(),
            ctx.setting::<HealConfig>().unwrap_or_default(),
        ))
    }
}

/// Least time between two claim passes woken by members at their share.
const CLAIM_SPACING: Duration = Duration::from_secs(20);

impl Healer {
    /// Register the catalog with storage and start the repair and scrubbing loops (what
    /// [`weft_host::Service::start`] does with the node's [`HealConfig`]).
    pub fn start(storage: Storage, table: Table, config: HealConfig) -> Healer {
        let registry = Registry::new(table);
        storage.set_catalog(registry::as_catalog(&registry, config.gc_delay));
        // Shards stored before this store had a catalog are never swept as orphans.
        storage.local().catalog_since();
        storage.serve_deletes();
        storage.serve_hot();
        let healer = Healer::new(storage, registry, config);
        let endpoint = healer.storage.endpoint().clone();
        endpoint.spawn(healer.clone().repair_loop());
        endpoint.spawn(healer.clone().claim_loop());
        endpoint.spawn(healer.clone().price_loop());
        if healer.config.scrub_bytes_per_sec > 0 {
            endpoint.spawn(healer.clone().scrub_loop());
        }
        healer
    }

    fn new(storage: Storage, registry: Registry, config: HealConfig) -> Healer {
        let status = HealStatus {
            grace_secs: config.grace.as_secs_f64(),
            repair_bytes_per_sec: config.repair_bytes_per_sec,
            ..HealStatus::default()
        };
        Healer {
            storage,
            registry,
            config,
            status: Arc::new(Mutex::new(status)),
            reputation: Arc::default(),
            collected: Arc::default(),
        }
    }

    /// The catalog.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How often this node issues storage receipts for what it holds.
    pub fn storage_receipts_every(&self) -> Duration {
        self.config.storage_receipts_every
    }

    /// What healing has done so far.
    pub fn status(&self) -> HealStatus {
        self.status.lock().clone()
    }

    async fn repair_loop(self) {
        loop {
            tokio::time::sleep(self.config.interval).await;
            self.check_once().await;
        }
    }

    /// When a member reaches its share of this node's store, claim what the catalog placed
    /// here since (at most once per [`CLAIM_SPACING`]), so honest writers get their share back.
    async fn claim_loop(self) {
        loop {
            self.storage.local().over_share().await;
            let claimed = self.claim_shards().await;
            tracing::debug!(claimed, "a member reached its share: shards claimed");
            tokio::time::sleep(CLAIM_SPACING).await;
        }
    }

    async fn scrub_loop(self) {
        loop {
            tokio::time::sleep(self.config.scrub_interval).await;
            self.scrub_once().await;
            self.sweep_orphans().await;
        }
    }
}
