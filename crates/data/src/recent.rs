//! What a node knows of the rows that authorize requests (bucket records, access keys,
//! grants, the accounts policy and passes, quotas), so a request costs no round trip for them.
//!
//! Each answer is remembered as old as the question that read it (a revocation acknowledged
//! while the question was out may be missing from the answer, so its age counts from the
//! asking). An answer younger than [`REFRESH_AFTER`] is served as it is; one younger than
//! [`TRUST_FOR`] is served too, and read again in the background (once, however many
//! requests see it), so what is in use stays fresh without any request waiting; an older one
//! is read again before answering. A revocation therefore holds on every node within
//! [`TRUST_FOR`] of its acknowledgement, and a node that cannot read (cut off from the fabric:
//! see `Table::hears_majority`) stops authorizing once what it knew is that old.
//!
//! Kept fresh by reading, not by push: a pushed change can be lost, so a deadline would still
//! need a read to keep its promise, and the read alone keeps it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weft_host::Tasks;

/// Past this age an answer is read again in the background while it is still served.
pub(crate) const REFRESH_AFTER: Duration = Duration::from_millis(1_500);
/// Past this age an answer is no longer served: the revocation promise.
pub(crate) const TRUST_FOR: Duration = crate::policy::CHECK_TTL;

/// Answers kept at most, per kind (all are dropped past it: they are read again).
const MAX_ENTRIES: usize = 10_000;

/// What memory holds for a key.
pub(crate) enum Look<V> {
    /// Young enough to serve as it is.
    Fresh(V),
    /// Serve it; read it again in the background if `refresh` (this caller claimed that).
    Stale { value: V, refresh: bool },
    /// Nothing, or too old: read before answering.
    Missing,
}

/// Answers by key, each with the time its question was asked.
pub(crate) struct Recent<K, V> {
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    answers: HashMap<K, (Instant, V)>,
    refreshing: HashSet<K>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            inner: Mutex::new(Entries {
                answers: HashMap::new(),
                refreshing: HashSet::new(),
            }),
        }
    }
}

impl<K, V> Recent<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// What memory holds for `key` now.
    pub(crate) fn look(&self, key: &K) -> Look<V> {
        let mut inner = self.inner.lock();
        let Some((asked, value)) = inner.answers.get(key) else {
            return Look::Missing;
        };
        let age = asked.elapsed();
        if age < REFRESH_AFTER {
            return Look::Fresh(value.clone());
        }
        if age >= TRUST_FOR {
            return Look::Missing;
        }
        let value = value.clone();
        let refresh = inner.refreshing.insert(key.clone());
        Look::Stale { value, refresh }
    }

    /// Remember `value` for `key`, as asked at `asked` (an older answer never replaces a newer).
    pub(crate) fn put(&self, key: K, asked: Instant, value: V) {
        let mut inner = self.inner.lock();
        inner.refreshing.remove(&key);
        if inner.answers.get(&key).is_some_and(|(at, _)| *at > asked) {
            return;
        }
        if inner.answers.len() >= MAX_ENTRIES {
            inner.answers.clear();
        }
        inner.answers.insert(key, (asked, value));
    }

    /// A background read of `key` failed: the next look past the refresh age tries again.
    pub(crate) fn failed(&self, key: &K) {
        self.inner.lock().refreshing.remove(key);
    }

    /// Forget `key` (this node changed it).
    pub(crate) fn forget(&self, key: &K) {
        self.inner.lock().answers.remove(key);
    }

    /// The answer for `key`: from memory while it may be served (read again in the background
    /// past [`REFRESH_AFTER`]), else `read` now. Only answers `read` gives are remembered.
    pub(crate) async fn get<E, Fut>(
        self: &Arc<Self>,
        key: K,
        tasks: &Tasks,
        read: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + 'static,
    {
        match self.look(&key) {
            Look::Fresh(value) => return Ok(value),
            Look::Stale { value, refresh } => {
                if refresh {
                    let this = self.clone();
                    let asked = Instant::now();
                    let reading = read();
                    tasks.spawn(async move {
                        match reading.await {
                            Ok(v) => this.put(key, asked, v),
                            Err(_) => this.failed(&key),
                        }
                    });
                }
                return Ok(value);
            }
            Look::Missing => {}
        }
        let asked = Instant::now();
        let value = read().await?;
        self.put(key, asked, value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_served_refreshed_once_then_dropped_by_their_age() {
        let recent: Recent<&str, u32> = Recent::default();
        assert!(matches!(recent.look(&"a"), Look::Missing));
        let now = Instant::now();
        recent.put("a", now, 1);
        assert!(matches!(recent.look(&"a"), Look::Fresh(1)));
        // Asked long enough ago to want a refresh: only the first look claims it.
        recent.put("b", now - REFRESH_AFTER, 2);
        assert!(matches!(
            recent.look(&"b"),
            Look::Stale {
                value: 2,
                refresh: true
            }
        ));
        assert!(matches!(
            recent.look(&"b"),
            Look::Stale {
                value: 2,
                refresh: false
            }
        ));
        recent.failed(&"b");
        assert!(matches!(
            recent.look(&"b"),
            Look::Stale { refresh: true, .. }
        ));
        // An answer to an older question never replaces a newer one.
        recent.put("b", now - TRUST_FOR * 2, 9);
        assert!(matches!(recent.look(&"b"), Look::Stale { value: 2, .. }));
        recent.put("b", now, 3);
        assert!(matches!(recent.look(&"b"), Look::Fresh(3)));
        // Past the promise it is not served at all.
        recent.put("c", now - TRUST_FOR, 4);
        assert!(matches!(recent.look(&"c"), Look::Missing));
        recent.forget(&"a");
        assert!(matches!(recent.look(&"a"), Look::Missing));
    }
}
