//! The models this node holds, kept in line with the placement: every few seconds a node reads
//! the model rows, works out which it should hold ([`crate::placement::holders`]), fetches
//! their files (by capability, verified against the row's BLAKE3, cached on its disk), loads
//! them into the engine ([`weft_infer`]) and says so in a `serve` row, which it deletes when
//! it stops holding the model. A node checks every fetched file before using it, so a holder
//! serving wrong shards or a stale capability cannot make it load other weights.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use weft_core::{NodeId, SecretKey};
use weft_fabric::Fabric;
use weft_host::{Context, Tasks};
use weft_meta::Table;
use weft_store::{Capability, Storage};

use crate::placement::holders;
use crate::{ModelError, ModelFile, ModelKind, ModelRecord, Serving, schema};

/// How often a node reconciles what it holds with the placement.
const RECONCILE: Duration = Duration::from_secs(2);
/// How long a node waits before trying again to load a model that failed (unless its files
/// change first): a fetch can fail for a while (its shards' holders down), a bad file always.
const RETRY_FAILED: Duration = Duration::from_secs(60);

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
pub struct ModelHolder {
    inner: Arc<Inner>,
}

impl ModelHolder {
    /// Start reconciling (every 2 s) as a task of the node; files are cached in `<data>/models`.
    pub fn start(ctx: &Context) -> ModelHolder {
        let svc = ModelHolder {
            inner: Arc::new(Inner {
                me: ctx.id(),
                key: ctx.key.clone(),
                fabric: ctx.fabric.clone(),
                table: ctx.table.clone(),
                storage: ctx.storage.clone(),
                dir: ctx.folder("models"),
                held: Mutex::new(HashMap::new()),
                loading: Mutex::new(HashSet::new()),
                failed: Mutex::new(HashMap::new()),
            }),
        };
        let me = svc.clone();
        let tasks = ctx.tasks();
        ctx.tasks().spawn(async move {
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

    async fn reconcile(&self, tasks: &Tasks) -> Result<(), ModelError> {
        let inner = &self.inner;
        let models = schema::models(&inner.table).await?;
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
