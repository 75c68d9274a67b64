//! Scrubbing: every node re-hashes its own shards at a bounded rate; a shard that no longer
//! matches its name is removed (and its absence is what the owner's next check repairs).

use std::time::{Duration, Instant};

use crate::Healer;

impl Healer {
    /// One pass over every local shard. Returns (bytes checked, corrupt shards removed).
    pub async fn scrub_once(&self) -> (u64, u64) {
        let store = self.storage.local().clone();
        let Ok(list) = tokio::task::spawn_blocking({
            let store = store.clone();
            move || store.list()
        })
        .await
        .unwrap_or_else(|e| {
            Err(weft_store::ShardStoreError::Io {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })
        }) else {
            return (0, 0);
        };
        let started = Instant::now();
        let started_ms = weft_net::now_ms();
        let rate = self.config.scrub_bytes_per_sec.max(1) as f64;
        let (mut checked, mut corrupt) = (0u64, 0u64);
        for (hash, len) in list {
            let store = store.clone();
            let verdict = tokio::task::spawn_blocking(move || match store.get(&hash) {
                Err(weft_store::ShardStoreError::Corrupt(_)) => {
                    let _ = store.delete(&hash);
                    true
                }
                _ => false,
            })
            .await
            .unwrap_or(false);
            checked += len;
            if verdict {
                corrupt += 1;
                tracing::warn!(shard = %hash, "scrub: corrupt shard removed; it will be rebuilt");
            }
            let due = Duration::from_secs_f64(checked as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut s = self.status.lock();
        s.scrubbed_bytes += checked;
        s.scrub_corrupt += corrupt;
        s.last_scrub_started_ms = started_ms;
        (checked, corrupt)
    }
}
