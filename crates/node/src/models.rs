//! Models on the fabric. A model is a name claimed fabric-wide (like a bucket's) by the account
//! that added it; its files (weights, tokenizer, config) are objects of one of that account's
//! buckets — encrypted, erasure-coded, under the bucket's residency — named in the model's row
//! by capability and BLAKE3. The row also says how many replicas should serve it and where
//! they may be. Every node works out the same placement from the membership ([`holders`]);
//! each node the placement picks fetches the files (verified against their BLAKE3, cached on
//! its disk), loads them into the engine ([`weft_infer`]) and says so in a `serve` row, which
//! it deletes when it stops holding the model.
//!
//! What a member can see: a model's name, kind, file sizes and hashes, and capabilities that
//! read its files — weights are shared with the nodes that serve them. Prompts are not in any
//! row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use weft_core::{NodeId, Role, SecretKey};
use weft_fabric::{Fabric, Member, MemberState};
use weft_meta::{MetaError, Table, Value};
use weft_net::Endpoint;
use weft_store::{Capability, Storage};

use crate::buckets::{BucketError, Buckets};
use crate::schema;

/// How often a node reconciles what it holds with the placement.
const RECONCILE: Duration = Duration::from_secs(2);
/// How long a node waits before trying again to load a model that failed (unless its files
/// change first): a fetch can fail for a while (its shards' holders down), a bad file always.
const RETRY_FAILED: Duration = Duration::from_secs(60);
/// Most replicas a model may ask for.
pub const MAX_REPLICAS: u32 = 64;

/// What a model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat and completions (a GGUF file).
    Chat,
    /// Sentence embeddings (`config.json`, `tokenizer.json`, `model.safetensors`).
    Embeddings,
}

impl ModelKind {
    /// The files a model of this kind must have.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            ModelKind::Chat => &[],
            ModelKind::Embeddings => &["config.json", "tokenizer.json", "model.safetensors"],
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Chat => "chat",
            ModelKind::Embeddings => "embeddings",
        })
    }
}

/// One file of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Its file name (no folders).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of its bytes (hex): a node checks what it fetched against it.
    pub blake3: String,
    /// A capability that reads it.
    pub capability: String,
}

/// A model's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Its name.
    pub name: String,
    /// The account that added it.
    pub owner: NodeId,
    /// What it does.
    pub kind: ModelKind,
    /// Its files.
    pub files: Vec<ModelFile>,
    /// How many nodes should serve it.
    pub replicas: u32,
    /// Regions its replicas may be in (empty: any).
    pub regions: Vec<String>,
    /// Jurisdictions its replicas may be in (empty: any).
    pub jurisdictions: Vec<String>,
    /// Unix ms it was added.
    pub created_ms: u64,
}

impl ModelRecord {
    /// Bytes of its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Memory a node needs to hold it loaded (weights may be widened at load: twice the files).
    pub fn memory_needed(&self) -> u64 {
        self.size().saturating_mul(2)
    }

    /// Its identity as loaded: a change of files is a new model to load.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new_derive_key("weft model files v1");
        for f in &self.files {
            h.update(f.name.as_bytes());
            h.update(&[0]);
            h.update(f.blake3.as_bytes());
            h.update(&[0]);
        }
        h.finalize().to_hex()[..32].to_string()
    }

    /// Check what an account may put in a row.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_model_name(&self.name)?;
        if self.files.is_empty() {
            return Err(ModelError::Invalid(
                "a model needs at least one file".into(),
            ));
        }
        let mut names = HashSet::new();
        for f in &self.files {
            let plain = !f.name.is_empty()
                && f.name != "."
                && f.name != ".."
                && !f.name.contains(['/', '\\', '\0']);
            if !plain || !names.insert(f.name.as_str()) {
                return Err(ModelError::Invalid(format!(
                    "file name {:?}: plain, distinct file names only",
                    f.name
                )));
            }
            if f.blake3.len() != 64 || !f.blake3.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ModelError::Invalid(format!(
                    "file {}: blake3 must be 64 hex digits",
                    f.name
                )));
            }
            Capability::from_text(&f.capability)
                .map_err(|e| ModelError::Invalid(format!("file {}: capability: {e}", f.name)))?;
        }
        for need in self.kind.required() {
            if !names.contains(need) {
                return Err(ModelError::Invalid(format!(
                    "a {} model needs {need} (it has {})",
                    self.kind,
                    self.files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if self.kind == ModelKind::Chat
            && (self.files.len() != 1 || !self.files[0].name.ends_with(".gguf"))
        {
            return Err(ModelError::Invalid("a chat model is one .gguf file".into()));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(ModelError::Invalid(format!(
                "replicas: 1 to {MAX_REPLICAS}, not {}",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// Model names: 1 to 64 of lowercase letters, digits, `-`, `_`, `.`.
pub fn check_model_name(name: &str) -> Result<(), ModelError> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "model name {name:?}: 1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// A node's word on a model it holds (its `serve` row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serving {
    /// The model's files it holds ([`ModelRecord::digest`]).
    pub digest: String,
    /// Loaded and answering.
    pub ready: bool,
    /// Why it could not load it.
    pub error: Option<String>,
    /// Unix ms of this state.
    pub since_ms: u64,
}

/// Model failures.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("model {0:?} already exists (another account's, or yours: `weft model ls`)")]
    Exists(String),
    /// No such model.
    #[error("no model named {0:?} (`weft model ls` lists them)")]
    NoModel(String),
    /// Another account's model.
    #[error("model {0:?} belongs to another account")]
    NotOwner(String),
    /// Bucket trouble (authorization included).
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// Metadata table trouble.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The nodes that should hold `model` now: nodes with the inference role, alive, with the
/// memory it needs (when they say how much they offer) and where its regions and
/// jurisdictions allow — ranked by rendezvous hash of the model's name and the node, one per
/// site before any site gets a second, as many as it asks for. Every node computes the same.
pub fn holders(model: &ModelRecord, members: &[Member]) -> Vec<NodeId> {
    let need = model.memory_needed();
    let mut eligible: Vec<(&Member, [u8; 32])> = members
        .iter()
        .filter(|m| {
            m.has_role(Role::Inference)
                && m.state == MemberState::Alive
                && (m.capacity.mem_bytes == 0 || m.capacity.mem_bytes >= need)
                && (model.regions.is_empty() || model.regions.contains(&m.placement.region))
                && (model.jurisdictions.is_empty()
                    || model
                        .jurisdictions
                        .iter()
                        .any(|j| j.eq_ignore_ascii_case(&m.placement.jurisdiction)))
        })
        .map(|m| {
            let mut h = blake3::Hasher::new_derive_key("weft model placement v1");
            h.update(model.name.as_bytes());
            h.update(&m.id.0);
            (m, *h.finalize().as_bytes())
        })
        .collect();
    eligible.sort_by_key(|e| std::cmp::Reverse(e.1));
    let want = model.replicas as usize;
    let mut chosen: Vec<NodeId> = Vec::new();
    let mut sites = HashSet::new();
    for (m, _) in &eligible {
        if chosen.len() < want && sites.insert(m.placement.site.clone()) {
            chosen.push(m.id);
        }
    }
    for (m, _) in &eligible {
        if chosen.len() < want && !chosen.contains(&m.id) {
            chosen.push(m.id);
        }
    }
    chosen
}

/// A model loaded into the engine.
pub enum Engine {
    /// Embeddings.
    Embeddings(weft_infer::Embedder),
    /// Chat (one generation at a time).
    Chat(Mutex<weft_infer::ChatModel>),
}

struct Held {
    digest: String,
    engine: Arc<Engine>,
}

struct Inner {
    me: NodeId,
    key: SecretKey,
    fabric: Fabric,
    table: Table,
    storage: Storage,
    dir: PathBuf,
    held: Mutex<HashMap<String, Held>>,
    /// Models being fetched or loaded (by name), and those that failed (with their digest
    /// and when: retried after [`RETRY_FAILED`], or at once if their files change).
    loading: Mutex<HashSet<String>>,
    failed: Mutex<HashMap<String, (String, std::time::Instant)>>,
}

/// The models this node holds, kept in line with the placement.
#[derive(Clone)]
pub struct ModelService {
    inner: Arc<Inner>,
}

impl ModelService {
    /// Start reconciling (every 2 s) on `endpoint`'s tasks; files are cached under `dir`.
    pub fn start(
        endpoint: &Endpoint,
        key: SecretKey,
        fabric: Fabric,
        table: Table,
        storage: Storage,
        dir: PathBuf,
    ) -> ModelService {
        let svc = ModelService {
            inner: Arc::new(Inner {
                me: key.public(),
                key,
                fabric,
                table,
                storage,
                dir,
                held: Mutex::new(HashMap::new()),
                loading: Mutex::new(HashSet::new()),
                failed: Mutex::new(HashMap::new()),
            }),
        };
        let me = svc.clone();
        let tasks = endpoint.clone();
        endpoint.spawn(async move {
            loop {
                if let Err(e) = me.reconcile(&tasks).await {
                    tracing::debug!(error = %e, "model placement not reconciled");
                }
                tokio::time::sleep(RECONCILE).await;
            }
        });
        svc
    }

    /// The engine of a model this node holds loaded.
    pub fn engine(&self, name: &str) -> Option<Arc<Engine>> {
        self.inner.held.lock().get(name).map(|h| h.engine.clone())
    }

    /// The names of the models this node holds loaded.
    pub fn held_names(&self) -> Vec<String> {
        self.inner.held.lock().keys().cloned().collect()
    }

    /// Every model's row (claims whose signer is not the owner named in them are left out).
    pub async fn models(table: &Table) -> Result<Vec<ModelRecord>, ModelError> {
        let rows = table.list::<schema::Models>(&(), "").await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, r)| {
                let signer = r.signer;
                r.known().filter(|m| m.owner == signer && m.name == name)
            })
            .collect())
    }

    /// Which nodes say they hold `model`, and how.
    pub async fn serving(table: &Table, model: &str) -> Result<Vec<(NodeId, Serving)>, ModelError> {
        let rows = table
            .list::<schema::Servers>(&model.to_string(), "")
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(node, r)| {
                let id: NodeId = node.parse().ok()?;
                (r.signer == id).then_some(())?;
                Some((id, r.known()?))
            })
            .collect())
    }

    async fn reconcile(&self, tasks: &Endpoint) -> Result<(), ModelError> {
        let inner = &self.inner;
        let models = Self::models(&inner.table).await?;
        let members = inner.fabric.members();
        let mut mine: BTreeMap<String, ModelRecord> = BTreeMap::new();
        for m in models {
            if holders(&m, &members).contains(&inner.me) {
                mine.insert(m.name.clone(), m);
            }
        }
        // Let go of what the placement moved elsewhere (or whose row is gone or changed).
        let dropped: Vec<String> = inner
            .held
            .lock()
            .iter()
            .filter(|(name, h)| mine.get(*name).is_none_or(|m| m.digest() != h.digest))
            .map(|(name, _)| name.clone())
            .collect();
        for name in dropped {
            inner.held.lock().remove(&name);
            tracing::info!(model = %name, "no longer holding a model");
            inner
                .table
                .put::<schema::Servers>(&inner.key, &name, &inner.me, None)
                .await?;
        }
        for (name, model) in mine {
            let digest = model.digest();
            let held = inner
                .held
                .lock()
                .get(&name)
                .is_some_and(|h| h.digest == digest);
            let failed = inner
                .failed
                .lock()
                .get(&name)
                .is_some_and(|(d, at)| *d == digest && at.elapsed() < RETRY_FAILED);
            if held || failed || !inner.loading.lock().insert(name.clone()) {
                continue;
            }
            let svc = self.clone();
            tasks.spawn(async move {
                svc.load(model).await;
                svc.inner.loading.lock().remove(&name);
            });
        }
        Ok(())
    }

    async fn announce(&self, model: &str, state: Serving) {
        let inner = &self.inner;
        if let Err(e) = inner
            .table
            .put::<schema::Servers>(&inner.key, &model.to_string(), &inner.me, Some(&state))
            .await
        {
            tracing::warn!(model, error = %e, "cannot say whether this node serves a model");
        }
    }

    async fn load(&self, model: ModelRecord) {
        let digest = model.digest();
        tracing::info!(model = %model.name, files = model.files.len(), bytes = model.size(), "fetching a model");
        self.announce(
            &model.name,
            Serving {
                digest: digest.clone(),
                ready: false,
                error: None,
                since_ms: weft_net::now_ms(),
            },
        )
        .await;
        let loaded = match self.fetch(&model).await {
            Ok(dir) => {
                let kind = model.kind;
                tokio::task::spawn_blocking(move || load_engine(kind, &dir))
                    .await
                    .unwrap_or_else(|e| Err(format!("the loading thread failed: {e}")))
            }
            Err(e) => Err(e),
        };
        match loaded {
            Ok(engine) => {
                self.inner.failed.lock().remove(&model.name);
                self.inner.held.lock().insert(
                    model.name.clone(),
                    Held {
                        digest: digest.clone(),
                        engine: Arc::new(engine),
                    },
                );
                tracing::info!(model = %model.name, "model loaded");
                self.announce(
                    &model.name,
                    Serving {
                        digest,
                        ready: true,
                        error: None,
                        since_ms: weft_net::now_ms(),
                    },
                )
                .await;
            }
            Err(why) => {
                tracing::warn!(model = %model.name, error = %why, "cannot load a model");
                self.inner.failed.lock().insert(
                    model.name.clone(),
                    (digest.clone(), std::time::Instant::now()),
                );
                self.announce(
                    &model.name,
                    Serving {
                        digest,
                        ready: false,
                        error: Some(why),
                        since_ms: weft_net::now_ms(),
                    },
                )
                .await;
            }
        }
    }

    /// The model's files in a folder of their own names, fetched by capability unless cached,
    /// each checked against its BLAKE3.
    async fn fetch(&self, model: &ModelRecord) -> Result<PathBuf, String> {
        let cache = self.inner.dir.join("files");
        let folder = self.inner.dir.join(model.digest());
        std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        for f in &model.files {
            let cached = cache.join(&f.blake3);
            if !cached.exists() {
                self.fetch_file(f, &cached).await?;
            }
            let named = folder.join(&f.name);
            if !named.exists() {
                std::fs::hard_link(&cached, &named)
                    .or_else(|_| std::fs::copy(&cached, &named).map(|_| ()))
                    .map_err(|e| format!("{}: {e}", named.display()))?;
            }
        }
        Ok(folder)
    }

    async fn fetch_file(&self, f: &ModelFile, to: &Path) -> Result<(), String> {
        let cap = Capability::from_text(&f.capability).map_err(|e| format!("{}: {e}", f.name))?;
        let tmp = to.with_extension("download");
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut writer = tokio::io::BufWriter::new(file);
        self.inner
            .storage
            .get(&cap, &mut writer)
            .await
            .map_err(|e| format!("fetching {}: {e}", f.name))?;
        writer
            .flush()
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        drop(writer);
        let path = tmp.clone();
        let hash = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut h = blake3::Hasher::new();
            h.update_reader(std::fs::File::open(&path)?)?;
            Ok(h.finalize().to_hex().to_string())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
        if hash != f.blake3 {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "{}: what the capability reads is not the file the model names (BLAKE3 {} , expected {})",
                f.name, hash, f.blake3
            ));
        }
        std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))
    }
}

fn load_engine(kind: ModelKind, dir: &Path) -> Result<Engine, String> {
    match kind {
        ModelKind::Embeddings => weft_infer::Embedder::load(dir)
            .map(Engine::Embeddings)
            .map_err(|e| e.to_string()),
        ModelKind::Chat => {
            let gguf = std::fs::read_dir(dir)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "gguf"))
                .ok_or("no .gguf file")?;
            weft_infer::ChatModel::load(&gguf)
                .map(|m| Engine::Chat(Mutex::new(m)))
                .map_err(|e| e.to_string())
        }
    }
}

impl Buckets {
    /// Add a model as this account: its files must be objects the account can read (checked
    /// by reading each capability's manifest is left to the nodes that load it).
    pub async fn add_model(&self, mut model: ModelRecord) -> Result<ModelRecord, ModelError> {
        model.owner = self.account();
        model.created_ms = weft_net::now_ms();
        model.validate()?;
        match self
            .table
            .create::<schema::Models>(self.signer()?, &(), &model.name, &model)
            .await
        {
            Ok(_) => Ok(model),
            Err(MetaError::Conflict) => Err(ModelError::Exists(model.name)),
            Err(e) => Err(e.into()),
        }
    }

    /// A model this account owns.
    async fn own_model(&self, name: &str) -> Result<ModelRecord, ModelError> {
        let row = self.table.get::<schema::Models>(&(), name).await?;
        let model = match row {
            Some(r) => {
                let signer = r.signer;
                match r.value {
                    Some(Value::Known(m)) if m.owner == signer && m.name == name => m,
                    _ => return Err(ModelError::NoModel(name.into())),
                }
            }
            None => return Err(ModelError::NoModel(name.into())),
        };
        if model.owner != self.account() {
            return Err(ModelError::NotOwner(name.into()));
        }
        Ok(model)
    }

    /// Change where and how widely a model is served.
    pub async fn place_model(
        &self,
        name: &str,
        replicas: Option<u32>,
        regions: Option<Vec<String>>,
        jurisdictions: Option<Vec<String>>,
    ) -> Result<ModelRecord, ModelError> {
        let mut model = self.own_model(name).await?;
        if let Some(r) = replicas {
            model.replicas = r;
        }
        if let Some(r) = regions {
            model.regions = r;
        }
        if let Some(j) = jurisdictions {
            model.jurisdictions = j.iter().map(|j| j.to_ascii_uppercase()).collect();
        }
        model.validate()?;
        self.table
            .put::<schema::Models>(self.signer()?, &(), name, Some(&model))
            .await?;
        Ok(model)
    }

    /// Remove a model (its files stay objects of their bucket).
    pub async fn remove_model(&self, name: &str) -> Result<(), ModelError> {
        self.own_model(name).await?;
        self.table
            .put::<schema::Models>(self.signer()?, &(), name, None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::{Capacity, Placement};

    fn member(n: u8, site: &str, region: &str, roles: &[Role], mem: u64) -> Member {
        let id = SecretKey::from_seed([n; 32]).public();
        Member {
            id,
            is_self: false,
            placement: Placement {
                site: site.into(),
                region: region.into(),
                jurisdiction: if region == "eu" {
                    "DE".into()
                } else {
                    "US".into()
                },
            },
            roles: roles.to_vec(),
            addr: None,
            state: MemberState::Alive,
            state_for: Duration::ZERO,
            uptime: None,
            coordinate: None,
            est_rtt: None,
            measured_rtt: None,
            labels: Default::default(),
            capacity: Capacity {
                cpus: 2,
                mem_bytes: mem,
                disk_bytes: 0,
            },
            load: Default::default(),
            software: String::new(),
            dead_verdicts: 0,
        }
    }

    fn model(replicas: u32, regions: &[&str]) -> ModelRecord {
        ModelRecord {
            name: "minilm".into(),
            owner: SecretKey::from_seed([9; 32]).public(),
            kind: ModelKind::Embeddings,
            files: vec![ModelFile {
                name: "model.safetensors".into(),
                size: 100 << 20,
                blake3: "ab".repeat(32),
                capability: String::new(),
            }],
            replicas,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            jurisdictions: vec![],
            created_ms: 0,
        }
    }

    fn fabric() -> Vec<Member> {
        let ai = [Role::Storage, Role::Inference];
        vec![
            member(1, "eu-1", "eu", &ai, 8 << 30),
            member(2, "eu-1", "eu", &ai, 8 << 30),
            member(3, "eu-2", "eu", &ai, 8 << 30),
            member(4, "us-1", "us", &ai, 8 << 30),
            member(5, "us-1", "us", &[Role::Storage], 8 << 30),
            member(6, "us-2", "us", &ai, 100 << 20),
        ]
    }

    #[test]
    fn replicas_go_to_inference_nodes_with_room_where_allowed_one_per_site_first() {
        let members = fabric();
        let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
        let three = holders(&model(3, &[]), &members);
        assert_eq!(three.len(), 3);
        // Not the storage-only node, not the one with too little memory.
        assert!(
            !three.contains(&ids[4]) && !three.contains(&ids[5]),
            "{three:?}"
        );
        // Three sites are eligible (eu-1, eu-2, us-1): one each.
        let sites: HashSet<_> = three
            .iter()
            .map(|id| {
                members
                    .iter()
                    .find(|m| m.id == *id)
                    .unwrap()
                    .placement
                    .site
                    .clone()
            })
            .collect();
        assert_eq!(sites.len(), 3);
        let eu = holders(&model(5, &["eu"]), &members);
        assert_eq!(eu.len(), 3, "only three eu nodes can hold it");
        assert!(eu.iter().all(|id| ids[..3].contains(id)));
        // Every node computes the same, in any order of the membership.
        let mut shuffled = members.clone();
        shuffled.reverse();
        assert_eq!(holders(&model(3, &[]), &shuffled), three);
        // A holder that dies is replaced; the others stay.
        let mut fewer = members.clone();
        let gone = three[0];
        fewer.iter_mut().find(|m| m.id == gone).unwrap().state = MemberState::Dead;
        let after = holders(&model(2, &[]), &fewer);
        assert!(!after.contains(&gone));
        assert!(
            holders(&model(2, &[]), &members)
                .iter()
                .filter(|id| **id != gone)
                .all(|id| after.contains(id))
        );
        assert!(holders(&model(1, &["ap"]), &members).is_empty());
    }

    #[test]
    fn bad_models_are_refused_with_the_reason() {
        let cap = Capability {
            manifest: weft_core::ContentHash([1; 32]),
            key: [2; 32],
            holders: vec![],
        }
        .to_text();
        let file = |name: &str| ModelFile {
            name: name.into(),
            size: 1,
            blake3: "ab".repeat(32),
            capability: cap.clone(),
        };
        let mut good = model(1, &[]);
        good.files = ["config.json", "tokenizer.json", "model.safetensors"]
            .iter()
            .map(|n| file(n))
            .collect();
        good.validate().unwrap();
        let err = |f: &dyn Fn(&mut ModelRecord)| {
            let mut m = good.clone();
            f(&mut m);
            m.validate().unwrap_err().to_string()
        };
        assert!(err(&|m| m.files[0].capability = "weft-cap1-nope".into()).contains("capability"));
        assert!(err(&|m| m.name = "Bad Name".into()).contains("model name"));
        assert!(err(&|m| m.replicas = 0).contains("replicas"));
        assert!(err(&|m| m.files.pop().map(|_| ()).unwrap()).contains("needs model.safetensors"));
        assert!(err(&|m| m.files[1].name = "../x".into()).contains("plain"));
        assert!(err(&|m| m.files[1].name = "config.json".into()).contains("distinct"));
        assert!(err(&|m| m.files[0].blake3 = "zz".into()).contains("64 hex"));
        assert!(err(&|m| m.kind = ModelKind::Chat).contains("one .gguf"));
        let mut chat = good.clone();
        chat.kind = ModelKind::Chat;
        chat.files = vec![file("smol.gguf")];
        chat.validate().unwrap();
        assert_ne!(chat.digest(), good.digest());
    }
}
