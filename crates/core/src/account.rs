//! Accounts and what they hand to the nodes that act for them.
//!
//! An account is an Ed25519 key held by a person (in their user config, restorable from a
//! recovery phrase), never by a node. A node acts for an account only with a [`Delegation`]:
//! the account's signature over a *delegate* key the node signs rows with, how far that
//! delegate may go ([`Scope`]) and until when. Rows signed by a delegate carry the delegation,
//! so every replica checks both signatures and the scope without asking anyone.
//!
//! Bucket keys (which wrap object keys and metadata) derive from the account's seed; what a
//! node receives is the derived [`BucketKeys`], never the seed itself.

use serde::{Deserialize, Serialize};

use crate::{NodeId, SecretKey, Signature, wire};

const DELEGATION_DOMAIN: &str = "weft delegation v1";

/// How far a delegate may act for its account.
///
/// On the wire `Account` and `Bucket` are exactly what the one-field form before `Own` was
/// (`None` / `Some(bucket)`), so delegations signed then decode and verify unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every bucket of the account, rows of no bucket, and capability puts.
    Account,
    /// One bucket: a grant to another account, or a key the owner made for one bucket (which
    /// the node holding the key's row marks as the owner's own).
    Bucket(String),
    /// The owner's own narrow capability (what a job's runner gets): signs rows of the `write`
    /// buckets only, and opens those and the `read` buckets. Never a grant.
    Own {
        /// The buckets whose rows it may sign.
        write: Vec<String>,
        /// Buckets it may only read.
        read: Vec<String>,
    },
}

impl Scope {
    /// One bucket, as a grant or a single-bucket key.
    pub fn bucket(name: &str) -> Scope {
        Scope::Bucket(name.to_string())
    }

    /// Whether it covers every bucket of the account (and rows of no bucket).
    pub fn is_account(&self) -> bool {
        matches!(self, Scope::Account)
    }

    /// The one bucket of a grant or single-bucket key.
    pub fn granted_bucket(&self) -> Option<&str> {
        match self {
            Scope::Bucket(b) => Some(b),
            Scope::Account | Scope::Own { .. } => None,
        }
    }

    /// Whether a delegate may sign a row of `bucket` (`None`: of no particular bucket, which
    /// only an account-wide scope covers).
    pub fn signs(&self, bucket: Option<&str>) -> bool {
        match (self, bucket) {
            (Scope::Account, _) => true,
            (Scope::Bucket(mine), Some(b)) => mine == b,
            (Scope::Own { write, .. }, Some(b)) => write.iter().any(|w| w == b),
            (Scope::Bucket(_) | Scope::Own { .. }, None) => false,
        }
    }

    /// The buckets it may open (`None` for an account-wide scope: every bucket).
    pub fn opens(&self) -> Option<Vec<&str>> {
        match self {
            Scope::Account => None,
            Scope::Bucket(b) => Some(vec![b.as_str()]),
            Scope::Own { write, read } => {
                Some(write.iter().chain(read).map(String::as_str).collect())
            }
        }
    }
}

/// What an account signs to let `delegate` sign rows for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DelegationBody {
    /// The account that delegates.
    pub account: NodeId,
    /// The key that signs for it.
    pub delegate: NodeId,
    /// How far.
    pub scope: Scope,
    /// Unix ms after which rows it signs are refused (`u64::MAX`: until revoked).
    pub expires_ms: u64,
}

/// A signed [`DelegationBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// What the account said.
    pub body: DelegationBody,
    /// The account's signature over it.
    pub sig: Signature,
}

impl Delegation {
    /// `account` lets `delegate` act within `scope` until `expires_ms`.
    pub fn sign(
        account: &SecretKey,
        delegate: NodeId,
        scope: Scope,
        expires_ms: u64,
    ) -> Delegation {
        let body = DelegationBody {
            account: account.public(),
            delegate,
            scope,
            expires_ms,
        };
        let sig = account.sign(DELEGATION_DOMAIN, &wire::encode(&body));
        Delegation { body, sig }
    }

    /// Whether the account's signature holds (checked once per process: every row a session
    /// writes carries the same delegation; see [`NodeId::verify_once`]).
    pub fn signature_ok(&self) -> bool {
        self.body
            .account
            .verify_once(DELEGATION_DOMAIN, &wire::encode(&self.body), &self.sig)
    }

    /// Whether it lets `delegate` act at `at_ms` for a row of `bucket` (`None`: a row of no
    /// particular bucket, which only an unscoped delegation covers). Checks the signature too.
    pub fn covers(&self, delegate: &NodeId, bucket: Option<&str>, at_ms: u64) -> bool {
        self.allows(delegate, bucket, at_ms) && self.signature_ok()
    }

    /// [`Delegation::covers`] without the signature check (for a caller that checked it).
    pub fn allows(&self, delegate: &NodeId, bucket: Option<&str>, at_ms: u64) -> bool {
        self.body.delegate == *delegate
            && at_ms <= self.body.expires_ms
            && self.body.scope.signs(bucket)
    }
}

/// The keys of one bucket of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketKey {
    /// The bucket.
    pub bucket: String,
    /// The key new objects are wrapped under.
    pub primary: [u8; 32],
    /// The key objects written before accounts left the nodes are wrapped under.
    pub legacy: [u8; 32],
}

/// The keys of an account's buckets, as a node acting for it needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketKeys {
    /// Every bucket's primary key derives from this (unscoped use); see [`bucket_master`].
    pub master: Option<[u8; 32]>,
    /// These buckets' keys, with their legacy keys.
    pub buckets: Vec<BucketKey>,
}

impl BucketKeys {
    /// The keys `account` hands over for `scope`, with the legacy keys of `buckets` (those it
    /// may meet objects of from before; a narrower hand-over holds exactly its own buckets).
    pub fn of(account: &SecretKey, scope: &Scope, buckets: &[&str]) -> BucketKeys {
        let master = bucket_master(account);
        let one = |b: &str| BucketKey {
            bucket: b.to_string(),
            primary: bucket_key(&master, b),
            legacy: legacy_bucket_key(account, b),
        };
        match scope.opens() {
            None => BucketKeys {
                master: Some(master),
                buckets: buckets.iter().map(|b| one(b)).collect(),
            },
            Some(own) => BucketKeys {
                master: None,
                buckets: own.into_iter().map(one).collect(),
            },
        }
    }

    /// These keys without any a holder of `scope` may not open.
    pub fn within(mut self, scope: &Scope) -> BucketKeys {
        if let Some(own) = scope.opens() {
            self.master = None;
            self.buckets.retain(|k| own.contains(&k.bucket.as_str()));
        }
        self
    }

    /// The key new objects of `bucket` are wrapped under, if these keys include it.
    pub fn primary(&self, bucket: &str) -> Option<[u8; 32]> {
        match (
            &self.master,
            self.buckets.iter().find(|k| k.bucket == bucket),
        ) {
            (_, Some(k)) => Some(k.primary),
            (Some(m), None) => Some(bucket_key(m, bucket)),
            (None, None) => None,
        }
    }

    /// Every key an object of `bucket` may be wrapped under, primary first.
    pub fn candidates(&self, bucket: &str) -> Vec<[u8; 32]> {
        let mut out: Vec<[u8; 32]> = self.primary(bucket).into_iter().collect();
        if let Some(k) = self.buckets.iter().find(|k| k.bucket == bucket) {
            out.push(k.legacy);
        }
        out
    }
}

/// What every bucket's primary key derives from: one derivation away from the account's seed,
/// so a node that serves all of an account's buckets never holds the key that signs for it.
pub fn bucket_master(account: &SecretKey) -> [u8; 32] {
    blake3::derive_key("weft bucket master v2", &account.seed())
}

/// The primary key of bucket `name` of the account whose master is `master`.
pub fn bucket_key(master: &[u8; 32], name: &str) -> [u8; 32] {
    let mut material = master.to_vec();
    material.extend_from_slice(name.as_bytes());
    blake3::derive_key("weft bucket key v2", &material)
}

/// The key objects of bucket `name` were wrapped under before accounts left the nodes (derived
/// from the seed itself, which is why only the account's holder can compute it).
pub fn legacy_bucket_key(account: &SecretKey, name: &str) -> [u8; 32] {
    let mut material = account.seed().to_vec();
    material.extend_from_slice(name.as_bytes());
    blake3::derive_key("weft bucket key v1", &material)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegation_covers_only_its_delegate_scope_and_time() {
        let alice = SecretKey::from_seed([1; 32]);
        let node = SecretKey::from_seed([2; 32]).public();
        let other = SecretKey::from_seed([3; 32]).public();
        let all = Delegation::sign(&alice, node, Scope::Account, 1_000);
        assert!(all.covers(&node, Some("photos"), 1_000));
        assert!(all.covers(&node, None, 5));
        assert!(!all.covers(&node, Some("photos"), 1_001));
        assert!(!all.covers(&other, Some("photos"), 5));
        let one = Delegation::sign(&alice, node, Scope::bucket("photos"), u64::MAX);
        assert!(one.covers(&node, Some("photos"), 5));
        assert!(!one.covers(&node, Some("docs"), 5));
        assert!(!one.covers(&node, None, 5));
        let mut widened = one.clone();
        widened.body.scope = Scope::Account;
        assert!(!widened.covers(&node, Some("docs"), 5));
        // Verified once and remembered: the same body under another signature is not.
        assert!(one.covers(&node, Some("photos"), 5));
        let mut forged = one.clone();
        forged.sig.0[0] ^= 1;
        assert!(!forged.covers(&node, Some("photos"), 5));
        // The owner's own narrow scope signs its one bucket; what it reads it cannot write.
        let own = Scope::Own {
            write: vec!["out".into()],
            read: vec!["data".into()],
        };
        let job = Delegation::sign(&alice, node, own.clone(), 100);
        assert!(job.covers(&node, Some("out"), 100));
        assert!(!job.covers(&node, Some("data"), 5));
        assert!(!job.covers(&node, None, 5));
        assert!(!job.covers(&node, Some("out"), 101));
        assert_eq!(own.granted_bucket(), None);
        let mut as_grant = job.clone();
        as_grant.body.scope = Scope::bucket("out");
        assert!(!as_grant.covers(&node, Some("out"), 5));
    }

    /// The form delegations had before `Scope::Own`: one optional bucket.
    #[derive(Serialize, Deserialize)]
    struct ScopeBefore {
        bucket: Option<String>,
    }

    #[test]
    fn delegations_signed_before_the_own_scope_decode_and_verify_unchanged() {
        for (before, now) in [
            (ScopeBefore { bucket: None }, Scope::Account),
            (
                ScopeBefore {
                    bucket: Some("photos".into()),
                },
                Scope::bucket("photos"),
            ),
        ] {
            assert_eq!(wire::encode(&before), wire::encode(&now));
            let back: Scope = wire::decode(&wire::encode(&before)).unwrap();
            assert_eq!(back, now);
        }
    }

    #[test]
    fn bucket_keys_match_the_accounts_derivation() {
        let alice = SecretKey::from_seed([7; 32]);
        let all = BucketKeys::of(&alice, &Scope::Account, &["old"]);
        let photos = Scope::bucket("photos");
        let one = BucketKeys::of(&alice, &photos, &[]);
        assert_eq!(all.primary("photos"), one.primary("photos"));
        assert!(all.primary("docs").is_some());
        assert_eq!(one.primary("docs"), None);
        assert_ne!(all.primary("photos"), all.primary("docs"));
        // Legacy keys only where handed over; never the seed.
        assert_eq!(all.candidates("old").len(), 2);
        assert_eq!(all.candidates("old")[1], legacy_bucket_key(&alice, "old"));
        assert_eq!(one.candidates("photos").len(), 2);
        assert_eq!(all.candidates("docs").len(), 1);
        assert_ne!(bucket_master(&alice), alice.seed());
        let own = Scope::Own {
            write: vec!["out".into()],
            read: vec!["data".into()],
        };
        let job = BucketKeys::of(&alice, &own, &[]);
        assert_eq!(job.primary("out"), all.primary("out"));
        assert_eq!(job.primary("data"), all.primary("data"));
        assert_eq!(job.primary("docs"), None);
        let narrowed = all.within(&own);
        assert_eq!(narrowed.master, None);
        assert_eq!(narrowed.primary("docs"), None);
    }
}
