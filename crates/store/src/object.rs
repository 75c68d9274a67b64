//! Objects across the fabric: the write path (segment, encode, place, store, manifest) and the
//! read path (manifest, nearest holders first, hedging, verify, decode, stream out).
//!
//! Memory is bounded by the segments in flight ([`IN_FLIGHT`] × segment size × (k+m)/k), never
//! by the object size. A write is acknowledged only when every shard of every segment and the
//! manifest are durable on their holders, so it survives the loss of any `parity` holders.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use weft_core::{ContentHash, NodeId, Role, wire};
use weft_fabric::{Fabric, MemberState};
use weft_net::Endpoint;

use crate::catalog::{Catalog, Locations};
use crate::hot::{HotShards, site_home};
use crate::placement::{Candidate, PlacementError, Residency, default_erasure, place};
use crate::protocol::{TransferError, get_remote, has_remote, put_remote};
use crate::{
    CodecError, Erasure, ObjectKey, SegmentInfo, ShardStore, decode_segment, encode_segment,
};

/// Plaintext bytes per segment.
pub const SEGMENT: usize = 4 << 20;
/// Segments encoded and transferred concurrently.
pub const IN_FLIGHT: usize = 8;
/// Copies of each manifest.
pub const MANIFEST_COPIES: usize = 3;
/// Extra request sent when a segment's fetch has not finished after this long.
pub const HEDGE_AFTER: Duration = Duration::from_millis(250);
/// Pause before shards that failed for a transport reason are asked for once more.
const RETRY_AFTER: Duration = Duration::from_millis(300);
const CAP_PREFIX: &str = "weft-cap1-";
/// The text form of a capability that carries its object ([`Capability::inline`]).
const CAP_INLINE_PREFIX: &str = "weft-cap2-";

/// The context a small object kept whole — in its row, or in a capability — is sealed in,
/// under its object key.
const INLINE_CONTEXT: &[u8] = b"weft inline object v1";

/// A small object kept whole rather than stored in segments: its bytes sealed under a fresh
/// object key (AES-256-GCM, [`INLINE_CONTEXT`]), that key, and its content id (keyed by the
/// key, as a stored object's).
pub fn seal_inline(bytes: &[u8]) -> Result<(Vec<u8>, [u8; 32], ContentHash), StorageError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut content = crate::codec::content_hasher(&ObjectKey(key), true);
    content.update(bytes);
    let sealed = crate::codec::seal(&key, bytes, INLINE_CONTEXT)?;
    Ok((sealed, key, ContentHash(*content.finalize().as_bytes())))
}

/// What [`seal_inline`] sealed under `key`; `None` if altered or another key's.
pub fn open_inline(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    crate::codec::open(key, sealed, INLINE_CONTEXT)
}

/// A segment and where its shards live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedSegment {
    /// Hashes and lengths.
    pub info: SegmentInfo,
    /// Holder of each shard, in shard order.
    pub holders: Vec<NodeId>,
}

/// Everything needed to read an object back (except its key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Plaintext size.
    pub size: u64,
    /// BLAKE3 of the whole plaintext keyed with a key derived from the object key: the
    /// object's content id, which only readers of the object can compute or check (plain
    /// BLAKE3 in manifests of format 1).
    pub content_id: ContentHash,
    /// Plaintext bytes per segment.
    pub segment_size: u64,
    /// Erasure coding.
    pub ec: Erasure,
    /// Residency policy the shards were placed under.
    pub policy: Residency,
    /// The segments.
    pub segments: Vec<PlacedSegment>,
    /// Whether its hashes are keyed (format 2 and later); not stored, known from the format.
    #[serde(skip)]
    pub keyed: bool,
}

/// The first bytes of an encoded manifest: a marker, then the format version.
const MANIFEST_MAGIC: [u8; 2] = *b"WM";
/// The manifest format this build writes, and the newest it reads. 2: plaintext hashes keyed
/// with the object key (1: plain BLAKE3, still read).
pub const MANIFEST_FORMAT: u8 = 2;

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Written by a newer weft: kept, but not understood here.
    #[error("manifest format {0} is newer than this node knows ({MANIFEST_FORMAT})")]
    Newer(u8),
    /// Does not decode, or describes an impossible object.
    #[error("malformed manifest: {0}")]
    Malformed(String),
}

impl Manifest {
    /// The stored form: marker, format version, postcard body. Its BLAKE3 names the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_vec();
        // An old manifest stays byte-identical: its hash names it.
        out.push(if self.keyed { MANIFEST_FORMAT } else { 1 });
        out.extend_from_slice(&wire::encode(self));
        out
    }

    /// Decode and [validate](Manifest::validate) a stored manifest. Manifests written before
    /// manifests carried a format version (a bare postcard body) are still read.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest = match bytes {
            [a, b, format, body @ ..] if [*a, *b] == MANIFEST_MAGIC => match *format {
                f @ (1 | MANIFEST_FORMAT) => Manifest {
                    keyed: f >= 2,
                    ..wire::decode::<Manifest>(body)
                        .map_err(|e| ManifestError::Malformed(e.to_string()))?
                },
                f if f > MANIFEST_FORMAT => return Err(ManifestError::Newer(f)),
                f => return Err(ManifestError::Malformed(format!("unknown format {f}"))),
            },
            legacy => wire::decode::<Manifest>(legacy)
                .map_err(|e| ManifestError::Malformed(e.to_string()))?,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check that the manifest describes a possible object: a valid coding, segments in order
    /// whose sizes add up, every segment with one shard hash and one holder per shard, lengths
    /// within what the codec and the shard protocol allow. A manifest comes from other members,
    /// so nothing may index into it before this passed.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |why: String| Err(ManifestError::Malformed(why));
        if self.ec.validate().is_err() {
            return bad(format!("erasure coding {} is not valid", self.ec));
        }
        let n = self.ec.data + self.ec.parity;
        if self.segment_size == 0 || self.segment_size > crate::protocol::MAX_SHARD {
            return bad(format!("segment size {}", self.segment_size));
        }
        let mut total = 0u64;
        for (i, seg) in self.segments.iter().enumerate() {
            let info = &seg.info;
            if info.index as usize != i {
                return bad(format!("segment {i} says it is segment {}", info.index));
            }
            if info.shards.len() != n || seg.holders.len() != n {
                return bad(format!(
                    "segment {i} has {} shards and {} holders for {} coding",
                    info.shards.len(),
                    seg.holders.len(),
                    self.ec
                ));
            }
            if info.plain_len > self.segment_size
                || info.shard_len > crate::protocol::MAX_SHARD
                || info.cipher_len < info.plain_len
                || info.shard_len.saturating_mul(self.ec.data as u64) < info.cipher_len
            {
                return bad(format!("segment {i} has impossible lengths"));
            }
            total = total.saturating_add(info.plain_len);
        }
        if total != self.size {
            return bad(format!(
                "segments hold {total} bytes, the object is {}",
                self.size
            ));
        }
        Ok(())
    }
}

/// A read capability: the manifest's name, the object key, and where the manifest is — or,
/// for a small object kept whole ([`Capability::inline`]), the object itself, sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// BLAKE3 of the encoded manifest (zero for an object the capability carries).
    pub manifest: ContentHash,
    /// The object key.
    pub key: [u8; 32],
    /// Nodes holding the manifest.
    pub holders: Vec<NodeId>,
    /// A small object kept whole rather than stored in segments: its bytes sealed under
    /// `key` ([`seal_inline`]). Whoever holds the capability holds the key anyway.
    pub inline: Option<Vec<u8>>,
}

/// A capability as its first text form carries it (no [`Capability::inline`]).
#[derive(Serialize, Deserialize)]
struct CapabilityV1 {
    manifest: ContentHash,
    key: [u8; 32],
    holders: Vec<NodeId>,
}

impl Capability {
    /// Text form, as `weft put` prints it: `weft-cap1-…` for a stored object (the form every
    /// version of weft reads), `weft-cap2-…` for one the capability carries.
    pub fn to_text(&self) -> String {
        let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        match &self.inline {
            None => format!(
                "{CAP_PREFIX}{}",
                b64(wire::encode(&CapabilityV1 {
                    manifest: self.manifest,
                    key: self.key,
                    holders: self.holders.clone(),
                }))
            ),
            Some(_) => format!("{CAP_INLINE_PREFIX}{}", b64(wire::encode(self))),
        }
    }

    /// Parse the text form.
    pub fn from_text(text: &str) -> Result<Capability, StorageError> {
        let bad = |why: String| StorageError::BadCapability(why);
        let text = text.trim();
        let decode = |b64: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|e| bad(e.to_string()))
        };
        if let Some(b64) = text.strip_prefix(CAP_PREFIX) {
            let v1: CapabilityV1 = wire::decode(&decode(b64)?).map_err(|e| bad(e.to_string()))?;
            return Ok(Capability {
                manifest: v1.manifest,
                key: v1.key,
                holders: v1.holders,
                inline: None,
            });
        }
        let b64 = text
            .strip_prefix(CAP_INLINE_PREFIX)
            .ok_or_else(|| bad(format!("a capability starts with {CAP_PREFIX:?}")))?;
        let cap: Capability = wire::decode(&decode(b64)?).map_err(|e| bad(e.to_string()))?;
        if cap.inline.is_none() {
            return Err(bad("a capability of this form carries its object".into()));
        }
        Ok(cap)
    }

    /// The object a capability carries, opened and verified (`None`: it names a stored one).
    pub fn open_inline(&self) -> Option<Result<Vec<u8>, StorageError>> {
        let sealed = self.inline.as_ref()?;
        Some(open_inline(&self.key, sealed).ok_or(StorageError::InlineCorrupt))
    }
}

/// One segment's plaintext and what fetching it did.
type SegmentRead = Result<(Vec<u8>, ReadReport), StorageError>;

/// What a read did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReport {
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Shard bytes received from each node.
    pub sources: BTreeMap<String, u64>,
    /// Holders that returned bad or corrupt shards.
    pub bad_holders: Vec<String>,
}

/// Storage failures seen by users.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Placement impossible under the policy.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A shard could not be stored anywhere.
    #[error("could not store a shard of segment {segment}: {last}")]
    Write {
        /// Segment index.
        segment: u32,
        /// Last failure.
        last: String,
    },
    /// Not enough shards could be fetched.
    #[error("segment {segment} is unreadable: {reason}")]
    Unreadable {
        /// Segment index.
        segment: u32,
        /// Why.
        reason: String,
    },
    /// No holder had the manifest.
    #[error("manifest {0} is not available from any of its holders")]
    ManifestUnavailable(ContentHash),
    /// The manifest was found but cannot be used here.
    #[error("manifest {0}: {1}")]
    Manifest(ContentHash, ManifestError),
    /// The capability text is malformed.
    #[error("not a weft capability: {0}")]
    BadCapability(String),
    /// The object could not be registered for repair, so the write is not acknowledged.
    #[error("could not register the object with the fabric's catalog: {0}")]
    Catalog(String),
    /// Reading input or writing output failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A capability that carries its object has no manifest or shards to show.
    #[error(
        "this capability carries its object itself ({0} bytes sealed): it has no manifest or shards"
    )]
    Inline(usize),
    /// The object a capability carries does not open under its key (altered).
    #[error("the object this capability carries does not open under its key")]
    InlineCorrupt,
}

/// The storage service of one node.
#[derive(Clone)]
pub struct Storage {
    endpoint: Endpoint,
    fabric: Fabric,
    local: Arc<ShardStore>,
    hedge_after: Duration,
    catalog: Arc<std::sync::OnceLock<Arc<dyn Catalog>>>,
    quarantined: Arc<parking_lot::RwLock<std::collections::HashSet<NodeId>>>,
    /// Nodes' reputations as the healer last judged them (absent: 1).
    reputation: Arc<parking_lot::RwLock<HashMap<NodeId, f64>>>,
    /// Nodes' published storage prices, micro-credits per GB-month (absent: none known).
    prices: Arc<parking_lot::RwLock<HashMap<NodeId, u64>>>,
    /// Holders that served a shard not matching its name since repair last asked.
    bad_reads: Arc<parking_lot::Mutex<HashMap<NodeId, u32>>>,
    /// Manifests this node wrote or fetched (see [`Manifests`]).
    manifests: Arc<parking_lot::Mutex<Manifests>>,
    /// Shards kept hot for this node's site (see [`crate::hot`]).
    hot: Arc<parking_lot::Mutex<HotShards>>,
    /// Hot fetches under way, so concurrent asks for one shard fetch it once.
    hot_fetches: Arc<parking_lot::Mutex<HashMap<ContentHash, Arc<HotFetch>>>>,
    /// Shards fetched from their holders to be kept hot.
    hot_fetched: Arc<std::sync::atomic::AtomicU64>,
}

/// Encode segment `index` (off the runtime's threads): its info and its shards by name.
async fn encode(
    key: Arc<ObjectKey>,
    index: u32,
    plain: Vec<u8>,
    ec: Erasure,
) -> Result<(SegmentInfo, Vec<(ContentHash, Arc<Vec<u8>>)>), StorageError> {
    let encoded = tokio::task::spawn_blocking(move || encode_segment(&key, index, &plain, ec))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let shards = encoded
        .info
        .shards
        .iter()
        .copied()
        .zip(encoded.shards.into_iter().map(Arc::new))
        .collect();
    Ok((encoded.info, shards))
}

/// The size of the largest of `shards` (what placement needs room for on each holder).
fn largest(shards: &[(ContentHash, Arc<Vec<u8>>)]) -> u64 {
    shards
        .iter()
        .map(|(_, b)| b.len() as u64)
        .max()
        .unwrap_or(0)
}

/// A segment (its index), its shards and the nodes chosen for them.
type Shards = (u32, Vec<(ContentHash, Arc<Vec<u8>>)>, Vec<NodeId>);

/// An object read, encoded, placed and named, not yet durable ([`Storage::prepare`]).
pub struct Prepared {
    cap: Capability,
    manifest: Manifest,
    /// The manifest's copies (its bytes under its name, once per holder).
    copies: Vec<(ContentHash, Arc<Vec<u8>>)>,
    /// The object's last segment (its only one, if small), written by [`Storage::finish`].
    shards: Option<Shards>,
}

impl Prepared {
    /// The capability the object will have (unless a holder fails; see [`Storage::finish`]).
    pub fn capability(&self) -> &Capability {
        &self.cap
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// One fetch of a shard to keep hot, shared by everyone who asks for it meanwhile.
type HotFetch = tokio::sync::OnceCell<Option<Arc<Vec<u8>>>>;

/// Where one shard of a segment is asked for.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Of its holder.
    Holder(NodeId),
    /// Of the reader's site home, which fetches it from `holder` once and keeps it hot.
    Home { home: NodeId, holder: NodeId },
}

impl Source {
    /// The node asked.
    fn asked(&self) -> NodeId {
        match self {
            Source::Holder(n) | Source::Home { home: n, .. } => *n,
        }
    }
}

/// What a read needs to ask its site home for shards: the manifest's name and holders, and the
/// members of the reader's site that may keep the object (the reader included).
struct HotRoute {
    manifest: ContentHash,
    holders: Vec<NodeId>,
    site: Vec<NodeId>,
    /// Every member of the reader's site, whatever its state: a shard held by one of them
    /// is never far.
    near: Vec<NodeId>,
}

/// Manifests recently written or fetched and verified here, by hash, up to
/// [`Manifests::BUDGET`] bytes of their encoding, the oldest going first. A manifest never
/// changes (its name is its hash), so a read of an object this node wrote or read lately
/// costs no round trip for it; shards repair moved are still found through the catalog.
#[derive(Default)]
struct Manifests {
    by_hash: HashMap<ContentHash, (Arc<Manifest>, usize)>,
    order: std::collections::VecDeque<ContentHash>,
    bytes: usize,
}

impl Manifests {
    const BUDGET: usize = 16 << 20;

    fn get(&self, hash: &ContentHash) -> Option<Manifest> {
        self.by_hash.get(hash).map(|(m, _)| Manifest::clone(m))
    }

    fn insert(&mut self, hash: ContentHash, manifest: &Manifest, len: usize) {
        if len > Self::BUDGET / 4 || self.by_hash.contains_key(&hash) {
            return;
        }
        while self.bytes + len > Self::BUDGET {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = self.by_hash.remove(&old) {
                self.bytes -= n;
            }
        }
        self.by_hash.insert(hash, (Arc::new(manifest.clone()), len));
        self.order.push_back(hash);
        self.bytes += len;
    }
}

impl Storage {
    /// Storage over this node's endpoint, membership and shard store.
    pub fn new(endpoint: Endpoint, fabric: Fabric, local: Arc<ShardStore>) -> Storage {
        Storage {
            endpoint,
            fabric,
            local,
            hedge_after: HEDGE_AFTER,
            catalog: Arc::new(std::sync::OnceLock::new()),
            quarantined: Arc::default(),
            reputation: Arc::default(),
            prices: Arc::default(),
            bad_reads: Arc::default(),
            manifests: Arc::default(),
            hot: Arc::default(),
            hot_fetches: Arc::default(),
            hot_fetched: Arc::default(),
        }
    }

    /// Members of this node's site (in the ring — alive, or only suspected, so a passing
    /// suspicion moves no home — this node included) that an object under `policy` may be
    /// kept on; empty when this node itself may not keep it.
    fn hot_site(&self, policy: &Residency) -> Vec<NodeId> {
        let members: Vec<(bool, Candidate)> = self
            .fabric
            .members()
            .into_iter()
            .map(|m| {
                let ok = m.is_self || m.in_ring();
                let c = Candidate {
                    id: m.id,
                    site: m.placement.site,
                    region: m.placement.region,
                    jurisdiction: m.placement.jurisdiction,
                    free_bytes: 0,
                    healthy: ok,
                    reputation: 1.0,
                    price: None,
                };
                (m.is_self, c)
            })
            .collect();
        let Some((_, me)) = members.iter().find(|(is_self, _)| *is_self) else {
            return Vec::new();
        };
        if !policy.allows(me) {
            return Vec::new();
        }
        members
            .iter()
            .filter(|(_, c)| c.healthy && c.site == me.site && policy.allows(c))
            .map(|(_, c)| c.id)
            .collect()
    }

    /// Every member of this node's site, whatever its state (this node included).
    fn site_members(&self) -> Vec<NodeId> {
        let members = self.fabric.members();
        let Some(site) = members
            .iter()
            .find(|m| m.is_self)
            .map(|m| m.placement.site.clone())
        else {
            return Vec::new();
        };
        members
            .iter()
            .filter(|m| m.placement.site == site)
            .map(|m| m.id)
            .collect()
    }

    /// Bytes of shards kept hot here.
    pub fn hot_bytes(&self) -> usize {
        self.hot.lock().bytes()
    }

    /// Shards this node fetched from their holders to keep hot (a second reader in the site
    /// is served what the first one brought).
    pub fn hot_fetched(&self) -> u64 {
        self.hot_fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The shards kept hot here (each as stored: encrypted, named by its hash).
    pub fn hot_shards(&self) -> Vec<(ContentHash, Arc<Vec<u8>>)> {
        let hot = self.hot.lock();
        hot.hashes()
            .into_iter()
            .filter_map(|h| hot.get(&h).map(|b| (h, b)))
            .collect()
    }

    /// Serve `SHARD_HOT` (see [`crate::hot`]).
    pub fn serve_hot(&self) {
        let this = self.clone();
        crate::protocol::HOT.serve(&self.endpoint, false, move |_peer, req| {
            let this = this.clone();
            async move { this.answer_hot(req).await }
        });
    }

    /// A shard for a reader of this site: only of an object whose manifest this node verified
    /// and whose residency allows this node, and only one held outside the site.
    async fn answer_hot(&self, req: crate::protocol::HotRequest) -> Option<Vec<u8>> {
        if req.holders.len() > crate::protocol::MAX_HOT_HOLDERS {
            return None;
        }
        let manifest = self.manifest_at(req.manifest, &req.holders).await.ok()?;
        let site = self.hot_site(&manifest.policy);
        let seg = manifest.segments.get(req.segment as usize)?;
        let hash = *seg.info.shards.get(req.shard as usize)?;
        let holder = *seg.holders.get(req.shard as usize)?;
        if !site.contains(&self.fabric.id()) || self.site_members().contains(&holder) {
            return None;
        }
        self.hot_fetch(hash, holder).await.map(|b| b.to_vec())
    }

    /// Shard `hash` from what is kept hot here, else fetched from `holder` (once, however many
    /// ask meanwhile), checked against its name and kept.
    async fn hot_fetch(&self, hash: ContentHash, holder: NodeId) -> Option<Arc<Vec<u8>>> {
        if let Some(b) = self.hot.lock().get(&hash) {
            return Some(b);
        }
        let fetch = self.hot_fetches.lock().entry(hash).or_default().clone();
        let got = fetch
            .get_or_init(|| async {
                self.hot_fetched
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.get_shard(holder, hash).await {
                    Ok(Some(b)) if ContentHash::of(&b) == hash => {
                        let b = Arc::new(b);
                        self.hot.lock().insert(hash, b.clone());
                        Some(b)
                    }
                    _ => None,
                }
            })
            .await
            .clone();
        self.hot_fetches.lock().remove(&hash);
        got
    }

    /// One shard from `source` (unverified: check its hash).
    async fn get_from(
        &self,
        source: Source,
        route: Option<&HotRoute>,
        segment: u32,
        shard: usize,
        hash: ContentHash,
    ) -> Result<Option<Vec<u8>>, TransferError> {
        match (source, route) {
            (Source::Holder(node), _) | (Source::Home { holder: node, .. }, None) => {
                self.get_shard(node, hash).await
            }
            (Source::Home { home, holder }, Some(_)) if home == self.fabric.id() => {
                Ok(self.hot_fetch(hash, holder).await.map(|b| b.to_vec()))
            }
            (Source::Home { home, .. }, Some(route)) => {
                let req = crate::protocol::HotRequest {
                    manifest: route.manifest,
                    holders: route
                        .holders
                        .iter()
                        .copied()
                        .take(crate::protocol::MAX_HOT_HOLDERS)
                        .collect(),
                    segment,
                    shard: shard as u32,
                };
                let addr = self.addr_of(home)?;
                Ok(crate::protocol::HOT
                    .call(&self.endpoint, home, addr, &req)
                    .await?)
            }
        }
    }

    /// Holders that served corrupt shards to reads since the last call, and how many times
    /// (reputation counts them like failed audits).
    pub fn take_bad_reads(&self) -> HashMap<NodeId, u32> {
        std::mem::take(&mut *self.bad_reads.lock())
    }

    /// Nodes in quarantine now.
    pub fn quarantined(&self) -> std::collections::HashSet<NodeId> {
        self.quarantined.read().clone()
    }

    /// Nodes that get no new shards (failed audits). Shared by every clone.
    pub fn set_quarantined(&self, nodes: std::collections::HashSet<NodeId>) {
        *self.quarantined.write() = nodes;
    }

    /// Nodes' reputations, 0 to 1, as the healer last judged them (absent: 1).
    pub fn reputation(&self) -> HashMap<NodeId, f64> {
        self.reputation.read().clone()
    }

    /// Set the nodes' reputations (the healer does). Shared by every clone.
    pub fn set_reputation(&self, scores: HashMap<NodeId, f64>) {
        *self.reputation.write() = scores;
    }

    /// Set the nodes' storage prices (micro-credits per GB-month), which placement holds a
    /// policy's maximum price to. Shared by every clone.
    pub fn set_prices(&self, prices: HashMap<NodeId, u64>) {
        *self.prices.write() = prices;
    }

    /// Challenge `node` to prove it holds bytes of shard `hash` (`shard_len` long) at a random
    /// offset; true when the proof checks against the shard's name.
    pub async fn audit(
        &self,
        node: NodeId,
        hash: ContentHash,
        shard_len: u64,
    ) -> Result<bool, String> {
        let mut pick = [0u8; 8];
        getrandom::fill(&mut pick).map_err(|e| e.to_string())?;
        let start = u64::from_le_bytes(pick) % shard_len.max(1);
        let len = crate::proof::MAX_CHALLENGE.min(shard_len - start).max(1);
        let req = crate::protocol::ProveRequest { hash, start, len };
        let answer = if node == self.fabric.id() {
            let local = self.local.clone();
            tokio::task::spawn_blocking(move || crate::protocol::answer_challenge(&local, &req))
                .await
                .map_err(|e| e.to_string())?
        } else {
            let addr = self.addr_of(node).map_err(|e| e.to_string())?;
            crate::protocol::prove_remote(&self.endpoint, node, addr, req)
                .await
                .map_err(|e| e.to_string())?
        };
        Ok(match answer {
            crate::protocol::ProveAnswer::Proof(p) => {
                crate::proof::verify(&hash, start, len, &p).is_some()
            }
            _ => false,
        })
    }

    /// Register the catalog (once; later calls are ignored). Shared by every clone.
    pub fn set_catalog(&self, catalog: Arc<dyn Catalog>) {
        let _ = self.catalog.set(catalog);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.fabric.id()
    }

    /// The endpoint (which also owns the node's tasks).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The membership view storage uses.
    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    /// The same service with a different hedging delay (how long a segment fetch may take
    /// before one more holder is asked).
    pub fn with_hedge_after(mut self, delay: Duration) -> Storage {
        self.hedge_after = delay;
        self
    }

    /// The local shard store.
    pub fn local(&self) -> &Arc<ShardStore> {
        &self.local
    }

    /// Nodes that can hold shards now.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.fabric
            .members()
            .into_iter()
            .map(|m| Candidate {
                id: m.id,
                healthy: m.is_alive()
                    && m.has_role(Role::Storage)
                    && !self.quarantined.read().contains(&m.id),
                free_bytes: if m.is_self {
                    self.local.capacity().saturating_sub(self.local.used())
                } else {
                    m.capacity.disk_bytes
                },
                reputation: self.reputation.read().get(&m.id).copied().unwrap_or(1.0),
                price: self.prices.read().get(&m.id).copied(),
                site: m.placement.site,
                region: m.placement.region,
                jurisdiction: m.placement.jurisdiction,
            })
            .collect()
    }

    /// Store one shard on `node` (this node included); returns once it is durable there.
    pub async fn put_shard(
        &self,
        node: NodeId,
        hash: ContentHash,
        bytes: Arc<Vec<u8>>,
    ) -> Result<(), TransferError> {
        if node == self.fabric.id() {
            let local = self.local.clone();
            tokio::task::spawn_blocking(move || local.put(&hash, &bytes))
                .await
                .map_err(|e| TransferError::Protocol {
                    node,
                    reason: e.to_string(),
                })??;
            return Ok(());
        }
        let addr = self.addr_of(node)?;
        put_remote(&self.endpoint, node, addr, hash, &bytes).await
    }

    fn addr_of(&self, node: NodeId) -> Result<std::net::SocketAddr, TransferError> {
        self.fabric
            .record(&node)
            .map(|r| r.body.addr)
            .ok_or_else(|| TransferError::Protocol {
                node,
                reason: "no address known".into(),
            })
    }

    /// Fetch one shard from `node` (unverified when remote: check its hash).
    pub async fn get_shard(
        &self,
        node: NodeId,
        hash: ContentHash,
    ) -> Result<Option<Vec<u8>>, TransferError> {
        if node == self.fabric.id() {
            let local = self.local.clone();
            return tokio::task::spawn_blocking(move || local.get(&hash))
                .await
                .map_err(|e| TransferError::Protocol {
                    node,
                    reason: e.to_string(),
                })?
                .map_err(|e| match e {
                    crate::ShardStoreError::Corrupt(_) => TransferError::Corrupt(node),
                    other => TransferError::Local(other),
                });
        }
        let addr = self.addr_of(node)?;
        get_remote(&self.endpoint, node, addr, hash).await
    }

    /// Serve `SHARD_DELETE`: a peer asks this node to delete shards of a manifest. Only shards
    /// that belong to that manifest (or the manifest itself), held here longer than the safety
    /// delay, are deleted, and only when this node verifies for itself that the object's
    /// owners let it go ([`Catalog::deletable`]): whoever asks, a member cannot make others
    /// drop live data.
    pub fn serve_deletes(&self) {
        let this = self.clone();
        crate::protocol::DELETE.serve(&self.endpoint, false, move |_peer, req| {
            let this = this.clone();
            async move { this.delete_released(&req).await }
        });
    }

    /// Delete the local shards of a released object named in `req`; returns how many went.
    pub async fn delete_released(&self, req: &crate::protocol::DeleteRequest) -> u64 {
        let Some(catalog) = self.catalog.get() else {
            return 0;
        };
        if req.shards.len() > crate::protocol::MAX_HAS {
            return 0;
        }
        // What this node holds of the request, held longer than the safety delay: nothing,
        // and the request costs no reads of the table.
        let held_before = std::time::SystemTime::now()
            .checked_sub(catalog.safety_delay())
            .unwrap_or(std::time::UNIX_EPOCH);
        let local = self.local.clone();
        let asked = req.shards.clone();
        let held: Vec<ContentHash> = tokio::task::spawn_blocking(move || {
            asked
                .into_iter()
                .filter(|h| local.written_at(h).is_some_and(|t| t < held_before))
                .collect()
        })
        .await
        .unwrap_or_default();
        if held.is_empty() || !catalog.deletable(req.manifest).await {
            return 0;
        }
        // The shards must be the manifest's: read it (from here or its holders) to check.
        let mut allowed: std::collections::HashSet<ContentHash> = Default::default();
        allowed.insert(req.manifest);
        if let Some(m) = self
            .fetch_manifest(req.manifest, &req.manifest_holders)
            .await
        {
            allowed.extend(
                m.segments
                    .iter()
                    .flat_map(|s| s.info.shards.iter().copied()),
            );
        } else if req.shards.iter().any(|h| *h != req.manifest) {
            return 0;
        }
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || {
            held.iter()
                .filter(|h| allowed.contains(h))
                .filter(|h| local.delete(h).unwrap_or(false))
                .count() as u64
        })
        .await
        .unwrap_or(0)
    }

    /// Ask `node` to delete shards of released object `manifest`.
    pub async fn delete_on(
        &self,
        node: NodeId,
        req: crate::protocol::DeleteRequest,
    ) -> Result<u64, TransferError> {
        if node == self.fabric.id() {
            return Ok(self.delete_released(&req).await);
        }
        let addr = self.addr_of(node)?;
        crate::protocol::delete_remote(&self.endpoint, node, addr, req).await
    }

    /// Which of `hashes` `node` holds (a cheap presence check, no hashing).
    pub async fn has_shards(
        &self,
        node: NodeId,
        hashes: Vec<ContentHash>,
    ) -> Result<Vec<bool>, TransferError> {
        if node == self.fabric.id() {
            let local = self.local.clone();
            return tokio::task::spawn_blocking(move || {
                hashes
                    .iter()
                    .map(|h| local.present(h).unwrap_or(false))
                    .collect()
            })
            .await
            .map_err(|e| TransferError::Protocol {
                node,
                reason: e.to_string(),
            });
        }
        let addr = self.addr_of(node)?;
        has_remote(&self.endpoint, node, addr, hashes).await
    }

    /// Store `bytes` under `hash` on the nodes placement picks (retrying elsewhere on failure).
    async fn store_placed(
        &self,
        key: &ContentHash,
        shards: Vec<(ContentHash, Arc<Vec<u8>>)>,
        policy: &Residency,
        segment: u32,
    ) -> Result<Vec<NodeId>, StorageError> {
        let chosen = self.choose(key, &shards, policy)?;
        self.store_chosen(&shards, chosen, policy, segment).await
    }

    /// Where placement puts `shards` (named for placement by `key`).
    fn choose(
        &self,
        key: &ContentHash,
        shards: &[(ContentHash, Arc<Vec<u8>>)],
        policy: &Residency,
    ) -> Result<Vec<NodeId>, StorageError> {
        let shard_bytes = largest(shards);
        Ok(place(
            key,
            shards.len(),
            shard_bytes,
            &self.candidates(),
            policy,
        )?)
    }

    /// Store each shard on the node chosen for it, placing it elsewhere if that fails; returns
    /// where each went.
    async fn store_chosen(
        &self,
        shards: &[(ContentHash, Arc<Vec<u8>>)],
        chosen: Vec<NodeId>,
        policy: &Residency,
        segment: u32,
    ) -> Result<Vec<NodeId>, StorageError> {
        let shard_bytes = largest(shards);
        let mut tasks = JoinSet::new();
        for (i, ((hash, bytes), node)) in shards
            .iter()
            .cloned()
            .zip(chosen.iter().copied())
            .enumerate()
        {
            let this = self.clone();
            tasks.spawn(async move { (i, node, this.put_shard(node, hash, bytes).await) });
        }
        let mut holders = chosen.clone();
        let mut failed: Vec<(usize, String)> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (i, node, result) = done.map_err(|e| StorageError::Write {
                segment,
                last: e.to_string(),
            })?;
            if let Err(e) = result {
                tracing::warn!(%node, error = %e, "shard write failed; placing it elsewhere");
                failed.push((i, e.to_string()));
            }
        }
        if failed.is_empty() {
            return Ok(holders);
        }
        let candidates = self.candidates();
        for (i, mut last) in failed {
            let mut excluded: Vec<NodeId> = holders.clone();
            let mut stored = false;
            for _ in 0..3 {
                let rest: Vec<Candidate> = candidates
                    .iter()
                    .filter(|c| !excluded.contains(&c.id))
                    .cloned()
                    .collect();
                let Ok(next) = place(&shards[i].0, 1, shard_bytes, &rest, policy) else {
                    break;
                };
                let node = next[0];
                match self.put_shard(node, shards[i].0, shards[i].1.clone()).await {
                    Ok(()) => {
                        holders[i] = node;
                        stored = true;
                        break;
                    }
                    Err(e) => {
                        last = e.to_string();
                        excluded.push(node);
                    }
                }
            }
            if !stored {
                return Err(StorageError::Write { segment, last });
            }
        }
        Ok(holders)
    }

    /// Write an object read from `reader`. Returns its capability and manifest once durable.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        policy: Residency,
        ec: Option<Erasure>,
    ) -> Result<(Capability, Manifest), StorageError> {
        let prepared = self.prepare(reader, policy, ec).await?;
        self.finish(prepared).await
    }

    /// Read, encode and place an object, and name it: what [`Storage::finish`] makes durable.
    /// Every segment but the last is stored on the way (they cannot all wait in memory); the
    /// last (an object of one segment: all of it) is only placed, so its shards, the manifest
    /// and the catalog row go out together in one round trip — and the caller may write what
    /// points at the object beside them, since its name is known now.
    pub async fn prepare<R: AsyncRead + Unpin>(
        &self,
        mut reader: R,
        policy: Residency,
        ec: Option<Erasure>,
    ) -> Result<Prepared, StorageError> {
        let eligible = self
            .candidates()
            .iter()
            .filter(|c| c.healthy && policy.admits(c))
            .count();
        let ec = ec.unwrap_or_else(|| default_erasure(eligible));
        ec.validate()?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        let object_key = Arc::new(ObjectKey(key));
        let mut content = crate::codec::content_hasher(&object_key, true);
        let mut size = 0u64;
        let mut placed: BTreeMap<u32, PlacedSegment> = BTreeMap::new();
        let mut tasks: JoinSet<Result<PlacedSegment, StorageError>> = JoinSet::new();
        // A full segment is stored once the next read shows the object goes on; the last one
        // (known by the read that finds the end) is left for `finish`.
        let mut index = 0u32;
        let mut pending: Option<(u32, Vec<u8>)> = None;
        let mut tail: Option<(u32, Vec<u8>)> = None;
        loop {
            let mut buf = vec![0u8; SEGMENT];
            let mut filled = 0;
            while filled < SEGMENT {
                let n = reader.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            content.update(&buf);
            size += filled as u64;
            if let Some((i, prev)) = pending.take() {
                if filled == 0 {
                    tail = Some((i, prev));
                    break;
                }
                while tasks.len() >= IN_FLIGHT {
                    if let Some(done) = tasks.join_next().await {
                        let seg = done.map_err(|e| std::io::Error::other(e.to_string()))??;
                        placed.insert(seg.info.index, seg);
                    }
                }
                let this = self.clone();
                let (k, policy) = (object_key.clone(), policy.clone());
                tasks.spawn(async move {
                    let (info, shards) = encode(k, i, prev, ec).await?;
                    let holders = this
                        .store_placed(&info.shards[0], shards, &policy, i)
                        .await?;
                    Ok(PlacedSegment { info, holders })
                });
            }
            if filled == 0 {
                break;
            }
            if filled < SEGMENT {
                tail = Some((index, buf));
                break;
            }
            pending = Some((index, buf));
            index += 1;
        }
        // The last segment (the whole object, if small): placed now, written by `finish`
        // beside the manifest.
        let mut last: Option<Shards> = None;
        if let Some((i, buf)) = tail {
            let (info, shards) = encode(object_key.clone(), i, buf, ec).await?;
            let chosen = self.choose(&info.shards[0], &shards, &policy)?;
            placed.insert(
                i,
                PlacedSegment {
                    info,
                    holders: chosen.clone(),
                },
            );
            last = Some((i, shards, chosen));
        }
        while let Some(done) = tasks.join_next().await {
            let seg = done.map_err(|e| std::io::Error::other(e.to_string()))??;
            placed.insert(seg.info.index, seg);
        }
        let manifest = Manifest {
            size,
            content_id: ContentHash(*content.finalize().as_bytes()),
            segment_size: SEGMENT as u64,
            ec,
            policy,
            segments: placed.into_values().collect(),
            keyed: true,
        };
        let copies = MANIFEST_COPIES.min(eligible.max(1));
        self.name(key, manifest, copies, last)
    }

    /// The manifest's bytes, name and chosen holders.
    fn name(
        &self,
        key: [u8; 32],
        manifest: Manifest,
        copies: usize,
        shards: Option<Shards>,
    ) -> Result<Prepared, StorageError> {
        let bytes = Arc::new(manifest.encode());
        let hash = ContentHash::of(&bytes);
        self.manifests.lock().insert(hash, &manifest, bytes.len());
        let copies: Vec<(ContentHash, Arc<Vec<u8>>)> = vec![(hash, bytes); copies];
        let holders = self.choose(&hash, &copies, &manifest.policy)?;
        Ok(Prepared {
            cap: Capability {
                manifest: hash,
                key,
                holders,
                inline: None,
            },
            manifest,
            copies,
            shards,
        })
    }

    /// Make a prepared object durable: its remaining shards, its manifest copies and its
    /// catalog row, all at once. Returns its capability and manifest — the prepared ones,
    /// unless a holder failed and a shard had to go elsewhere (then the manifest, and so the
    /// object's name, changed; the caller must point at the new one).
    pub async fn finish(&self, prepared: Prepared) -> Result<(Capability, Manifest), StorageError> {
        let Prepared {
            mut cap,
            mut manifest,
            copies,
            shards,
        } = prepared;
        let policy = manifest.policy.clone();
        let shards_stored = async {
            match &shards {
                Some((index, shards, chosen)) => self
                    .store_chosen(shards, chosen.clone(), &policy, *index)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let manifest_stored = self.store_chosen(&copies, cap.holders.clone(), &policy, u32::MAX);
        let recorded = async {
            match self.catalog.get() {
                Some(catalog) => catalog
                    .record(cap.manifest, &manifest, &cap.holders)
                    .await
                    .map_err(StorageError::Catalog),
                None => Ok(()),
            }
        };
        let (shards_stored, manifest_stored, recorded) =
            tokio::join!(shards_stored, manifest_stored, recorded);
        let shard_holders = shards_stored?;
        let manifest_holders = manifest_stored?;
        recorded?;
        if let (Some(holders), Some((index, _, chosen))) = (shard_holders, &shards)
            && holders != *chosen
        {
            // A shard went elsewhere: the manifest says where, so the object has a new name
            // (the first one is never referenced, and goes as garbage).
            if let Some(seg) = manifest
                .segments
                .iter_mut()
                .find(|s| s.info.index == *index)
            {
                seg.holders = holders;
            }
            let again = self.name(cap.key, manifest, copies.len(), None)?;
            return Box::pin(self.finish(again)).await;
        }
        if manifest_holders != cap.holders {
            cap.holders = manifest_holders;
            if let Some(catalog) = self.catalog.get() {
                catalog
                    .record(cap.manifest, &manifest, &cap.holders)
                    .await
                    .map_err(StorageError::Catalog)?;
            }
        }
        Ok((cap, manifest))
    }

    /// Nodes ordered nearest first: this node, then alive nodes by estimated RTT, then the rest.
    pub fn nearest_first(&self, nodes: &[NodeId]) -> Vec<NodeId> {
        let alive: HashMap<NodeId, MemberState> = self
            .fabric
            .members()
            .into_iter()
            .map(|m| (m.id, m.state))
            .collect();
        let mut ranked: Vec<(u8, Duration, NodeId)> = nodes
            .iter()
            .map(|n| {
                let tier = if *n == self.fabric.id() {
                    0
                } else if alive.get(n) == Some(&MemberState::Alive) {
                    1
                } else {
                    2
                };
                let rtt = self
                    .fabric
                    .estimated_rtt(n)
                    .unwrap_or(Duration::from_secs(1));
                (tier, rtt, *n)
            })
            .collect();
        ranked.sort();
        ranked.dedup_by_key(|r| r.2);
        ranked.into_iter().map(|r| r.2).collect()
    }

    /// Fetch and verify the manifest a capability names, with shards that repair moved
    /// pointed at their new holders.
    pub async fn manifest(&self, cap: &Capability) -> Result<Manifest, StorageError> {
        if let Some(sealed) = &cap.inline {
            return Err(StorageError::Inline(sealed.len()));
        }
        self.manifest_at(cap.manifest, &cap.holders).await
    }

    /// Like [`Storage::manifest`], with every shard's holder as the catalog has it now (shards
    /// repair moved are shown where they went even if their first holder is back). For
    /// showing where an object lives; reads do not need the extra catalog lookup.
    pub async fn manifest_now(&self, cap: &Capability) -> Result<Manifest, StorageError> {
        if let Some(sealed) = &cap.inline {
            return Err(StorageError::Inline(sealed.len()));
        }
        self.fetch_located(cap.manifest, &cap.holders, true).await
    }

    /// Fetch and verify manifest `hash`, trying `holders` first, then wherever the catalog
    /// says it is now.
    pub async fn manifest_at(
        &self,
        hash: ContentHash,
        holders: &[NodeId],
    ) -> Result<Manifest, StorageError> {
        self.fetch_located(hash, holders, false).await
    }

    /// Fetch a manifest and apply the catalog's moves: always, or only when a holder is gone.
    async fn fetch_located(
        &self,
        hash: ContentHash,
        holders: &[NodeId],
        always: bool,
    ) -> Result<Manifest, StorageError> {
        let mut located: Option<Locations> = None;
        let mut manifest = self.try_fetch_manifest(hash, holders).await;
        if matches!(manifest, Err(StorageError::ManifestUnavailable(_))) {
            located = self.locate(hash).await;
            if let Some(l) = &located {
                manifest = self.try_fetch_manifest(hash, &l.manifest_holders).await;
            }
        }
        let mut manifest = manifest?;
        // Shards move only when repair rebuilds them, and it does that when a holder is lost:
        // ask the catalog only then, so healthy reads cost nothing extra.
        if located.is_none() && (always || !self.all_holders_alive(&manifest)) {
            located = self.locate(hash).await;
        }
        if let Some(l) = located {
            l.apply(&mut manifest);
        }
        Ok(manifest)
    }

    async fn locate(&self, hash: ContentHash) -> Option<Locations> {
        self.catalog.get()?.locate(hash).await
    }

    fn all_holders_alive(&self, manifest: &Manifest) -> bool {
        let alive: std::collections::HashSet<NodeId> = self
            .fabric
            .members()
            .into_iter()
            .filter(|m| m.is_alive())
            .map(|m| m.id)
            .collect();
        // Quarantined holders count as gone: repair moves their shards away.
        let quarantined = self.quarantined.read();
        manifest
            .segments
            .iter()
            .flat_map(|s| &s.holders)
            .all(|h| alive.contains(h) && !quarantined.contains(h))
    }

    async fn fetch_manifest(&self, hash: ContentHash, holders: &[NodeId]) -> Option<Manifest> {
        self.try_fetch_manifest(hash, holders).await.ok()
    }

    /// The manifest from the nearest holder that has it; an error says whether none had it or
    /// it cannot be used here (newer format, malformed).
    async fn try_fetch_manifest(
        &self,
        hash: ContentHash,
        holders: &[NodeId],
    ) -> Result<Manifest, StorageError> {
        if let Some(m) = self.manifests.lock().get(&hash) {
            return Ok(m);
        }
        for node in self.nearest_first(holders) {
            if let Ok(Some(bytes)) = self.get_shard(node, hash).await
                && ContentHash::of(&bytes) == hash
            {
                // The bytes match the name, so every holder has the same ones: if they do not
                // make a usable manifest, asking the others will not help.
                let manifest = Manifest::decode(&bytes).map_err(|e| {
                    tracing::warn!(manifest = %hash, error = %e, "manifest cannot be used");
                    StorageError::Manifest(hash, e)
                })?;
                self.manifests.lock().insert(hash, &manifest, bytes.len());
                return Ok(manifest);
            }
        }
        Err(StorageError::ManifestUnavailable(hash))
    }

    /// Fetch one segment: the k nearest holders first, hedge after a delay, fall back on failure.
    async fn fetch_segment(
        &self,
        key: Arc<ObjectKey>,
        seg: PlacedSegment,
        ec: Erasure,
        route: Option<Arc<HotRoute>>,
        report: &mut ReadReport,
    ) -> Result<Vec<u8>, StorageError> {
        let by_node: HashMap<NodeId, Vec<usize>> =
            seg.holders
                .iter()
                .enumerate()
                .fold(HashMap::new(), |mut m, (i, n)| {
                    m.entry(*n).or_default().push(i);
                    m
                });
        let direct: Vec<(usize, Source)> = self
            .nearest_first(&seg.holders)
            .into_iter()
            .flat_map(|n| {
                by_node
                    .get(&n)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |i| (i, Source::Holder(n)))
            })
            .collect();
        // Shards held outside this node's site are asked of the site's home for them (in the
        // site, so first), with their holders kept as the fallback.
        let mut order = direct.clone();
        if let Some(route) = &route {
            let (mut near, mut far): (Vec<_>, Vec<_>) = direct
                .iter()
                .map(|&(i, s)| match s {
                    Source::Holder(holder) if !route.near.contains(&holder) => {
                        match site_home(&seg.info.shards[i], &route.site) {
                            Some(home) => (i, Source::Home { home, holder }),
                            None => (i, s),
                        }
                    }
                    _ => (i, s),
                })
                .partition(|(_, s)| match s {
                    Source::Holder(n) => route.near.contains(n),
                    Source::Home { .. } => true,
                });
            let homed: Vec<(usize, Source)> = direct
                .iter()
                .filter(|(i, _)| {
                    near.iter()
                        .any(|(j, s)| j == i && matches!(s, Source::Home { .. }))
                })
                .copied()
                .collect();
            far.retain(|(i, _)| !homed.iter().any(|(j, _)| j == i));
            near.extend(far);
            near.extend(homed);
            order = near;
        }
        let mut next = 0;
        let mut tasks = JoinSet::new();
        let launch = |tasks: &mut JoinSet<_>, order: &[(usize, Source)], next: &mut usize| {
            if let Some(&(i, source)) = order.get(*next) {
                *next += 1;
                let this = self.clone();
                let hash = seg.info.shards[i];
                let (route, segment) = (route.clone(), seg.info.index);
                tasks.spawn(async move {
                    let got = this
                        .get_from(source, route.as_deref(), segment, i, hash)
                        .await;
                    (i, source, got)
                });
            }
        };
        while next < ec.data.min(order.len()) {
            launch(&mut tasks, &order, &mut next);
        }
        let mut good: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut last = String::from("no holders");
        let hedge = tokio::time::sleep(self.hedge_after);
        tokio::pin!(hedge);
        let mut hedged = false;
        // Shards that failed for a transport reason (a timeout, a refused connection on a
        // busy holder) get one more try once every other source has been asked.
        let mut retry: Vec<(usize, Source)> = Vec::new();
        let mut retried = false;
        while good.len() < ec.data {
            tokio::select! {
                done = tasks.join_next() => {
                    let Some(done) = done else {
                        if retried || retry.is_empty() {
                            break;
                        }
                        retried = true;
                        tokio::time::sleep(RETRY_AFTER).await;
                        order.append(&mut retry);
                        while tasks.len() < ec.data - good.len() && next < order.len() {
                            launch(&mut tasks, &order, &mut next);
                        }
                        continue;
                    };
                    let Ok((i, source, result)) = done else { continue };
                    let node = source.asked();
                    match result {
                        // The same shard from a second source (a hedge or a fallback).
                        Ok(Some(_)) if good.iter().any(|(j, _)| *j == i) => {}
                        Ok(Some(bytes)) if ContentHash::of(&bytes) == seg.info.shards[i] => {
                            *report.sources.entry(node.to_hex()).or_default() += bytes.len() as u64;
                            good.push((i, bytes));
                        }
                        other => {
                            let why = match other {
                                Ok(Some(_)) | Err(TransferError::Corrupt(_)) => {
                                    report.bad_holders.push(node.to_hex());
                                    *self.bad_reads.lock().entry(node).or_default() += 1;
                                    "hash mismatch".to_string()
                                }
                                Ok(None) => "shard missing".to_string(),
                                Err(e) => {
                                    if !retried {
                                        retry.push((i, source));
                                    }
                                    e.to_string()
                                }
                            };
                            tracing::warn!(%node, shard = i, segment = seg.info.index, reason = %why, "shard fetch failed");
                            last = format!("node {node}: {why}");
                            launch(&mut tasks, &order, &mut next);
                        }
                    }
                }
                _ = &mut hedge, if !hedged => {
                    hedged = true;
                    launch(&mut tasks, &order, &mut next);
                }
            }
        }
        tasks.abort_all();
        if good.len() < ec.data {
            return Err(StorageError::Unreadable {
                segment: seg.info.index,
                reason: format!(
                    "{} of {} shards available; last error: {last}",
                    good.len(),
                    ec.data
                ),
            });
        }
        let info = seg.info.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let supplied: Vec<(usize, &[u8])> =
                good.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            decode_segment(&key, &info, ec, &supplied)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(decoded.plain)
    }

    /// Read the object a capability names into `writer`, verifying everything on the way.
    pub async fn get<W: AsyncWrite + Unpin>(
        &self,
        cap: &Capability,
        writer: W,
    ) -> Result<ReadReport, StorageError> {
        if let Some(bytes) = cap.open_inline() {
            let bytes = bytes?;
            let mut writer = writer;
            tokio::io::AsyncWriteExt::write_all(&mut writer, &bytes).await?;
            tokio::io::AsyncWriteExt::flush(&mut writer).await?;
            return Ok(ReadReport {
                bytes: bytes.len() as u64,
                ..ReadReport::default()
            });
        }
        let manifest = self.manifest(cap).await?;
        self.read_range(cap, &manifest, 0, manifest.size, writer)
            .await
    }

    /// Read bytes `start..end` of an object (a manifest already fetched) into `writer`,
    /// fetching only the segments that overlap the range. The whole-object content id is
    /// checked when the range is the whole object; every segment is verified either way.
    pub async fn read_range<W: AsyncWrite + Unpin>(
        &self,
        cap: &Capability,
        manifest: &Manifest,
        start: u64,
        end: u64,
        mut writer: W,
    ) -> Result<ReadReport, StorageError> {
        let end = end.min(manifest.size);
        let whole = start == 0 && end == manifest.size;
        let key = Arc::new(ObjectKey(cap.key));
        let mut report = ReadReport::default();
        let mut content = crate::codec::content_hasher(&key, manifest.keyed);
        let seg_size = manifest.segment_size.max(1);
        let site = self.hot_site(&manifest.policy);
        let route = (!site.is_empty()).then(|| {
            Arc::new(HotRoute {
                manifest: cap.manifest,
                holders: cap.holders.clone(),
                site,
                near: self.site_members(),
            })
        });
        // Up to IN_FLIGHT segments are fetched at once; they are written strictly in order.
        let mut pending = manifest
            .segments
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| {
                let (s, e) = (*i as u64 * seg_size, (*i as u64 + 1) * seg_size);
                start < end && s < end && e > start
            });
        let mut next_out = pending.clone().next().map_or(0, |(i, _)| i);
        let mut tasks: JoinSet<(usize, SegmentRead)> = JoinSet::new();
        let mut ready: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some((i, seg)) = pending.next() else {
                    break;
                };
                let (this, key, ec) = (self.clone(), key.clone(), manifest.ec);
                let route = route.clone();
                let manifest_hash = cap.manifest;
                tasks.spawn(async move {
                    let mut part = ReadReport::default();
                    let mut result = this
                        .fetch_segment(key.clone(), seg.clone(), ec, route.clone(), &mut part)
                        .await;
                    // Too few shards where the manifest says: repair may have moved some.
                    if result.is_err()
                        && let Some(l) = this.locate(manifest_hash).await
                    {
                        let mut moved = seg;
                        l.apply_segment(&mut moved);
                        result = this.fetch_segment(key, moved, ec, None, &mut part).await;
                    }
                    (i, result.map(|plain| (plain, part)))
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (i, result) = done.map_err(|e| std::io::Error::other(e.to_string()))?;
            let (plain, part) = result?;
            for (node, n) in part.sources {
                *report.sources.entry(node).or_default() += n;
            }
            report.bad_holders.extend(part.bad_holders);
            ready.insert(i, plain);
            while let Some(plain) = ready.remove(&next_out) {
                content.update(&plain);
                let seg_start = next_out as u64 * seg_size;
                let from = start.saturating_sub(seg_start).min(plain.len() as u64) as usize;
                let to = (end - seg_start).min(plain.len() as u64) as usize;
                writer.write_all(&plain[from..to.max(from)]).await?;
                report.bytes += (to.max(from) - from) as u64;
                next_out += 1;
            }
        }
        writer.flush().await?;
        if whole && ContentHash(*content.finalize().as_bytes()) != manifest.content_id {
            return Err(StorageError::Unreadable {
                segment: u32::MAX,
                reason: "object content id mismatch".into(),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod manifest_tests {
    use super::*;

    fn manifest(keyed: bool) -> Manifest {
        Manifest {
            size: 0,
            content_id: ContentHash([1; 32]),
            segment_size: 4 << 20,
            ec: Erasure { data: 2, parity: 1 },
            policy: Residency::default(),
            segments: Vec::new(),
            keyed,
        }
    }

    #[test]
    fn manifests_keep_their_format_and_bytes() {
        for keyed in [true, false] {
            let bytes = manifest(keyed).encode();
            assert_eq!(bytes[2], if keyed { MANIFEST_FORMAT } else { 1 });
            let back = Manifest::decode(&bytes).unwrap();
            assert_eq!(back, manifest(keyed));
            assert_eq!(
                back.encode(),
                bytes,
                "re-encoding changes the manifest's name"
            );
        }
        let mut newer = manifest(true).encode();
        newer[2] = MANIFEST_FORMAT + 1;
        assert_eq!(
            Manifest::decode(&newer),
            Err(ManifestError::Newer(MANIFEST_FORMAT + 1))
        );
    }

    #[test]
    fn remembered_manifests_stay_within_their_budget_oldest_first() {
        let mut cache = Manifests::default();
        let m = manifest(true);
        let len = Manifests::BUDGET / 8;
        for i in 0..10u8 {
            cache.insert(ContentHash([i; 32]), &m, len);
        }
        assert!(cache.bytes <= Manifests::BUDGET);
        assert_eq!(cache.by_hash.len(), 8);
        assert!(cache.get(&ContentHash([0; 32])).is_none());
        assert!(cache.get(&ContentHash([1; 32])).is_none());
        assert_eq!(cache.get(&ContentHash([9; 32])), Some(m.clone()));
        // One too big to keep is not kept, and pushes nothing out.
        cache.insert(ContentHash([42; 32]), &m, Manifests::BUDGET / 2);
        assert!(cache.get(&ContentHash([42; 32])).is_none());
        assert_eq!(cache.by_hash.len(), 8);
    }
}
