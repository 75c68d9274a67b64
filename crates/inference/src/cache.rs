//! What the entry reads from the table, kept briefly: every model's row, and each model's
//! ready replicas. A list read in the last second is used as is; an older one (up to
//! [`STALE`]) that still holds what is asked for answers at once while a fresh one is read in
//! the background, so no request waits on a quorum read (a replica that went away since is
//! handled by failover).

use std::time::{Duration, Instant};

use weft_core::NodeId;

use crate::{InferenceError, InferenceService, ModelRecord};

/// How long a model list or a model's replica list read from the table is reused.
const FRESH: Duration = Duration::from_secs(1);
/// How long an older list may still answer while a fresh one is read.
const STALE: Duration = Duration::from_secs(10);

impl InferenceService {
    /// Nodes whose `serve` row says they hold `model`'s current files ready. A list read in
    /// the last second is used as is; an older one (up to [`STALE`]) that names a replica is used
    /// while a fresh read runs in the background, so a request does not wait on a quorum read
    /// (a replica that went away since is handled by failover).
    pub(crate) async fn ready_replicas(
        &self,
        model: &ModelRecord,
    ) -> Result<Vec<NodeId>, InferenceError> {
        let cached = self.inner.serving.lock().get(&model.name).cloned();
        if let Some((at, nodes)) = cached {
            let age = at.elapsed();
            if age < FRESH {
                return Ok(nodes);
            }
            if age < STALE && !nodes.is_empty() {
                if self.inner.refreshing.lock().insert(model.name.clone()) {
                    let me = self.clone();
                    let model = model.clone();
                    self.inner.tasks.spawn(async move {
                        let _ = me.read_ready_replicas(&model).await;
                        me.inner.refreshing.lock().remove(&model.name);
                    });
                }
                return Ok(nodes);
            }
        }
        self.read_ready_replicas(model).await
    }

    pub(crate) async fn read_ready_replicas(
        &self,
        model: &ModelRecord,
    ) -> Result<Vec<NodeId>, InferenceError> {
        let digest = model.digest();
        let nodes: Vec<NodeId> = crate::schema::serving(&self.inner.table, &model.name)
            .await
            .map_err(|e| InferenceError::Unavailable(format!("cannot read who serves it: {e}")))?
            .into_iter()
            .filter(|(_, s)| s.ready && s.digest == digest)
            .map(|(n, _)| n)
            .collect();
        // A `serve` row is its node's word: route only where the placement put the model.
        let nodes = crate::placement::routable(model, &self.inner.fabric.members(), &nodes);
        self.inner
            .serving
            .lock()
            .insert(model.name.clone(), (Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// Every model's row: like [`Self::ready_replicas`], an older list (that holds `need`, when
    /// given) is used while a fresh one is read in the background.
    pub(crate) async fn catalog(
        &self,
        need: Option<&str>,
    ) -> Result<Vec<ModelRecord>, InferenceError> {
        let cached = self.inner.catalog.lock().clone();
        if let Some((at, all)) = cached {
            let age = at.elapsed();
            if age < FRESH {
                return Ok(all);
            }
            let usable = need.is_none_or(|n| all.iter().any(|m| m.name == n));
            if age < STALE && usable {
                if self.inner.refreshing.lock().insert(String::new()) {
                    let me = self.clone();
                    self.inner.tasks.spawn(async move {
                        let _ = me.read_catalog().await;
                        me.inner.refreshing.lock().remove("");
                    });
                }
                return Ok(all);
            }
        }
        self.read_catalog().await
    }

    pub(crate) async fn read_catalog(&self) -> Result<Vec<ModelRecord>, InferenceError> {
        let all = crate::schema::models(&self.inner.table)
            .await
            .map_err(|e| InferenceError::Unavailable(format!("cannot read the models: {e}")))?;
        *self.inner.catalog.lock() = Some((Instant::now(), all.clone()));
        Ok(all)
    }
}
