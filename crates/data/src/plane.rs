//! The data plane as a service of the node: who acts ([`DataPlane::acting`],
//! [`DataPlane::session`]), the node's own account, access keys as gateways look them up, and
//! objects read by capability (which need no account).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use weft_host::{Context, HostError, Service};
use weft_store::{Capability, Manifest, StorageError};

use crate::recent::{Look, Recent};
use crate::{Access, AccessKey, Acting, KeyStore, Session, SessionError};

/// Most checked sessions a node remembers.
const SESSIONS: usize = 10_000;
/// Most ids of access keys found that a node remembers.
const KEY_CACHE: usize = 10_000;
/// Table reads at once for access-key ids this node never found: anyone can send random ids,
/// and each would cost a quorum read. Past this, such an id is refused without one (a
/// brand-new key may be refused while a node is flooded; the client retries). Ids found
/// before are always looked up.
const UNKNOWN_LOOKUPS: usize = 8;

/// The account data plane of a node. Cheap to clone.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

struct Inner {
    /// The node's own account (a data directory's `account.key`, from before accounts left
    /// the nodes: what the S3 gateway's node-made keys act for).
    own: Acting,
    /// Access keys made before accounts (`s3-keys.json`), acting for the node's own account.
    node_keys: Arc<KeyStore>,
    /// Sessions checked here, by the hash of their text: what they allow and until when.
    sessions: Mutex<std::collections::HashMap<[u8; 32], (Access, u64)>>,
    /// Access keys read from the table lately, found or not ([`crate::recent`]).
    key_cache: Arc<Recent<String, Option<AccessKey>>>,
    /// Ids of access keys this node has found in the table (at most [`KEY_CACHE`]).
    known_keys: Mutex<std::collections::HashSet<String>>,
    /// Slots for looking up ids not in `known_keys`.
    unknown_lookups: Arc<tokio::sync::Semaphore>,
    /// Lookups of unknown ids refused for want of a slot.
    refused_lookups: std::sync::atomic::AtomicU64,
}

impl Service for DataPlane {
    const NAME: &'static str = "data";

    fn start(ctx: &Context) -> Result<DataPlane, HostError> {
        let failed = |why: String| HostError::Failed {
            service: Self::NAME,
            why,
        };
        let account = weft_net::load_or_create_key(&ctx.folder("account.key"))
            .map_err(|e| failed(e.to_string()))?;
        let node_keys = KeyStore::open(ctx.data_dir()).map_err(|e| failed(e.to_string()))?;
        let own = Acting::new(
            ctx.table.clone(),
            ctx.storage.clone(),
            ctx.tasks(),
            Access::account(account),
        );
        Ok(DataPlane {
            inner: Arc::new(Inner {
                own,
                node_keys: Arc::new(node_keys),
                sessions: Mutex::default(),
                key_cache: Arc::default(),
                known_keys: Mutex::default(),
                unknown_lookups: Arc::new(tokio::sync::Semaphore::new(UNKNOWN_LOOKUPS)),
                refused_lookups: Default::default(),
            }),
        })
    }
}

impl DataPlane {
    /// The node's own account.
    pub fn own(&self) -> &Acting {
        &self.inner.own
    }

    /// The account `access` acts for, through this node.
    pub fn acting(&self, access: Access) -> Acting {
        self.inner.own.as_account(access)
    }

    /// The account a session (as text) acts for, checked now.
    pub fn session(&self, text: &str) -> Result<Acting, SessionError> {
        Ok(self.acting(self.session_access(text)?))
    }

    /// What a session (as text) lets a node do, checked now. A session's signatures are
    /// checked once per node (the text names exactly what was signed), its expiry every time:
    /// a front end that sees the same session on every request (an access key's grant, a
    /// client's session) pays a signature check once, not per request.
    pub fn session_access(&self, text: &str) -> Result<Access, SessionError> {
        let name = *blake3::hash(text.as_bytes()).as_bytes();
        let now = weft_net::now_ms();
        if let Some((access, expires_ms)) = self.inner.sessions.lock().get(&name) {
            if now > *expires_ms {
                return Err(SessionError::Expired);
            }
            return Ok(access.clone());
        }
        let session = Session::from_text(text)?;
        let access = session.access(now)?;
        let mut sessions = self.inner.sessions.lock();
        if sessions.len() >= SESSIONS {
            sessions.clear();
        }
        sessions.insert(name, (access.clone(), session.via.body.expires_ms));
        Ok(access)
    }

    /// Whether the fabric's accounts policy lets `account` use it (always in an open fabric;
    /// with the admin's pass in an invite-only one): for front ends that act for an account
    /// without going through a bucket, such as inference.
    pub async fn admitted(&self, account: weft_core::NodeId) -> Result<(), crate::BucketError> {
        self.inner.own.admits(account).await
    }

    /// Access keys made on this node before accounts (they act for its own account).
    pub fn node_keys(&self) -> &Arc<KeyStore> {
        &self.inner.node_keys
    }

    /// The access key `id`: one made before accounts (this node's own file, acting for the
    /// node's account) or one from the replicated table. Table keys are remembered for a few
    /// seconds and read again in the background while in use ([`crate::recent`]: a removed
    /// key stops working everywhere within them), misses too, and ids
    /// never found here are looked up at most [`UNKNOWN_LOOKUPS`] at a time (so random ids
    /// cannot make every request a quorum read).
    pub async fn access_key(&self, id: &str) -> Option<AccessKey> {
        if let Some(k) = self.inner.node_keys.lookup(id) {
            return Some(k);
        }
        match self.inner.key_cache.look(&id.to_string()) {
            Look::Fresh(k) => return k,
            Look::Stale { value, refresh } => {
                if refresh {
                    let (this, id) = (self.clone(), id.to_string());
                    self.inner.own.tasks.spawn(async move {
                        let asked = Instant::now();
                        match this.read_key(&id).await {
                            Some(found) => this.inner.key_cache.put(id, asked, found),
                            None => this.inner.key_cache.failed(&id),
                        }
                    });
                }
                return value;
            }
            Look::Missing => {}
        }
        let known = self.inner.known_keys.lock().contains(id);
        let _slot = if known {
            None
        } else {
            match self.inner.unknown_lookups.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    self.inner
                        .refused_lookups
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return None;
                }
            }
        };
        // Remembered as old as the question (a removal acknowledged meanwhile may be missing).
        let asked = Instant::now();
        let found = self.read_key(id).await?;
        self.inner
            .key_cache
            .put(id.to_string(), asked, found.clone());
        found
    }

    /// Access key `id` from the table (`Some(None)`: there is none); `None` when it cannot be
    /// read now (cut off from the fabric, no quorum), which is not remembered.
    async fn read_key(&self, id: &str) -> Option<Option<AccessKey>> {
        if let Err(e) = self.inner.own.table.hears_majority() {
            tracing::warn!(error = %e, "access key not looked up");
            return None;
        }
        let found = match crate::lookup_key(&self.inner.own.table, id).await {
            Ok(found) => found.map(|(k, _)| k),
            Err(e) => {
                tracing::warn!(error = %e, "access key lookup failed");
                return None;
            }
        };
        if found.is_some() {
            let mut known = self.inner.known_keys.lock();
            if known.len() < KEY_CACHE {
                known.insert(id.to_string());
            }
        }
        Some(found)
    }

    /// Lookups of access-key ids never found here that were refused because
    /// [`UNKNOWN_LOOKUPS`] were already under way.
    pub fn refused_key_lookups(&self) -> u64 {
        self.inner
            .refused_lookups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The manifest of the object `cap` names (any holder's copy, verified).
    pub async fn manifest(&self, cap: &Capability) -> Result<Manifest, StorageError> {
        self.inner.own.storage.manifest(cap).await
    }

    /// The manifest of `cap`'s object with where its shards are now (repair's moves applied).
    pub async fn manifest_now(&self, cap: &Capability) -> Result<Manifest, StorageError> {
        self.inner.own.storage.manifest_now(cap).await
    }

    /// Read bytes `start..end` of the object `cap` names (its `manifest`) into `writer`,
    /// verifying every byte. Anyone holding a capability may read: it carries the object's key.
    pub async fn read_capability<W: AsyncWrite + Unpin>(
        &self,
        cap: &Capability,
        manifest: &Manifest,
        start: u64,
        end: u64,
        writer: W,
    ) -> Result<(), StorageError> {
        self.inner
            .own
            .storage
            .read_range(cap, manifest, start, end, writer)
            .await
            .map(|_| ())
    }
}
