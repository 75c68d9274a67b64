//! Who may do what: access keys (SigV4 secrets) from the node's key store, their bucket and
//! read/write scope, and a per-key request-rate limit.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};
use weft_node::Node;

/// Secrets for SigV4 verification: the node's own keys and every account's keys in the table.
pub(crate) struct Keys(pub Node);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0
            .data()
            .access_key(access_key)
            .await
            .map(|k| SecretKey::from(k.secret))
            .ok_or_else(|| s3_error!(InvalidAccessKeyId, "no such access key"))
    }
}

/// Whether an operation only reads.
pub(crate) fn is_read(op: &str) -> bool {
    op.starts_with("Get") || op.starts_with("Head") || op.starts_with("List")
}

/// A token bucket per access key.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Scope checks and rate limits.
pub(crate) struct Access {
    pub node: Node,
    pub limit: RateLimit,
}

/// A request-rate limit per access key.
pub(crate) struct RateLimit {
    pub per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimit {
    pub(crate) fn new(per_sec: u32) -> RateLimit {
        RateLimit {
            per_sec: per_sec as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one request token for `key`; false when it is over its rate.
    fn admit(&self, key: &str) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let burst = self.per_sec.max(1.0);
        let mut all = self.buckets.lock();
        let b = all.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(cred) = cx.credentials() else {
            return Err(s3_error!(
                AccessDenied,
                "requests must be signed with a weft access key (`weft key create`)"
            ));
        };
        let key = self
            .node
            .data()
            .access_key(&cred.access_key)
            .await
            .ok_or_else(|| s3_error!(InvalidAccessKeyId, "no such access key"))?;
        if !self.limit.admit(&key.id) {
            return Err(s3_error!(
                SlowDown,
                "request rate limit exceeded; retry later"
            ));
        }
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
        };
        let op = cx.s3_op().name();
        if key.allows(bucket, !is_read(op)) {
            Ok(())
        } else {
            Err(s3_error!(
                AccessDenied,
                "access key {} may not {op} {}",
                key.id,
                bucket.unwrap_or("(account)")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_rate_and_no_more() {
        let access = RateLimit::new(5);
        let admitted = (0..20).filter(|_| access.admit("a")).count();
        assert_eq!(admitted, 5, "a burst is capped at one second's worth");
        assert!(access.admit("b"), "keys are limited separately");
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(access.admit("a"), "tokens come back with time");
        let unlimited = RateLimit::new(0);
        assert!((0..1000).all(|_| unlimited.admit("a")));
        assert!(is_read("GetObject") && is_read("ListObjectsV2") && is_read("HeadBucket"));
        assert!(!is_read("PutObject") && !is_read("DeleteObjects") && !is_read("CopyObject"));
    }
}
