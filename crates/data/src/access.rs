//! What a node holds to act for an account, and what an operation needs of a bucket.

use weft_core::{BucketKeys, Delegation, NodeId, SecretKey};
use weft_meta::Signer;

/// What an operation needs of a bucket ([`crate::Acting::authorize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Reading: get, head, list, versions, parts, share.
    Read,
    /// Writing: put, delete, copy into, multipart, bucket deletion.
    Write,
}

/// What a node holds to act for an account: a key that signs its rows (the account's own, or
/// a delegate's with the account's [`Delegation`]) and the keys of the buckets it may open.
#[derive(Clone)]
pub struct Access {
    pub(crate) account: NodeId,
    /// `None`: read-only.
    pub(crate) signer: Option<Signer>,
    pub(crate) keys: BucketKeys,
    /// The account's own key, when the node holds it (a data directory from before accounts
    /// left the nodes): every key, legacy ones included, derives from it.
    pub(crate) root: Option<SecretKey>,
    /// For a session scoped to one bucket: that bucket and the session's delegate (which a
    /// grant of the bucket would name; see [`crate::grants`]).
    scoped: Option<(String, NodeId)>,
    /// For the owner's own narrow session ([`weft_core::Scope::Own`]): the buckets it may
    /// write (every other bucket it opens, it only reads).
    writes: Option<Vec<String>>,
    /// The buckets its scope reaches (`None`: every bucket of the account).
    reach: Option<Vec<String>>,
}

impl Access {
    /// The account itself (its key is here).
    pub fn account(key: SecretKey) -> Access {
        let keys = BucketKeys::of(&key, &weft_core::Scope::Account, &[]);
        Access {
            account: key.public(),
            signer: Some(Signer::own(key.clone())),
            keys,
            root: Some(key),
            scoped: None,
            writes: None,
            reach: None,
        }
    }

    /// A delegate: `key` signs for `via`'s account, opening the buckets `keys` covers.
    pub fn delegated(key: SecretKey, via: Delegation, keys: BucketKeys) -> Access {
        Access {
            account: via.body.account,
            signer: Some(Signer::delegated(key, via)),
            keys,
            root: None,
            scoped: None,
            writes: None,
            reach: None,
        }
    }

    /// Read-only: opens the buckets of `account` that `keys` covers and signs nothing.
    pub fn read_only(account: NodeId, keys: BucketKeys) -> Access {
        Access {
            account,
            signer: None,
            keys,
            root: None,
            scoped: None,
            writes: None,
            reach: None,
        }
    }

    /// The same access, as a session scoped to `bucket` whose delegate is `delegate`.
    pub fn scoped_to(mut self, bucket: String, delegate: NodeId) -> Access {
        self.scoped = Some((bucket, delegate));
        self
    }

    /// The same access, reaching only the buckets `scope` opens.
    pub fn within(mut self, scope: &weft_core::Scope) -> Access {
        self.reach = scope
            .opens()
            .map(|b| b.into_iter().map(str::to_string).collect());
        self
    }

    /// The same access, writing only `buckets` (the owner's own narrow session).
    pub fn writing_only(mut self, buckets: Vec<String>) -> Access {
        self.writes = Some(buckets);
        self
    }

    /// Whether its scope reaches `bucket` at all (whether or not it holds the key).
    pub fn opens(&self, bucket: &str) -> bool {
        match &self.reach {
            None => true,
            Some(buckets) => buckets.iter().any(|b| b == bucket),
        }
    }

    /// Whether it may write `bucket` (it signs, and its scope reaches that far).
    pub fn can_write_bucket(&self, bucket: &str) -> bool {
        self.can_write()
            && self
                .writes
                .as_ref()
                .is_none_or(|w| w.iter().any(|b| b == bucket))
    }

    /// The same access, known to be the bucket owner's own (an access key it made for one
    /// bucket), not a grant: no grant row is asked for.
    pub fn owners_own(mut self) -> Access {
        self.scoped = None;
        self
    }

    /// The delegate of the session this access came from, if it is scoped to `bucket`.
    pub fn scoped_delegate(&self, bucket: &str) -> Option<NodeId> {
        self.scoped
            .as_ref()
            .filter(|(b, _)| b == bucket)
            .map(|(_, d)| *d)
    }

    /// The account acted for.
    pub fn author(&self) -> NodeId {
        self.account
    }

    /// Whether it may write.
    pub fn can_write(&self) -> bool {
        self.signer.is_some()
    }
}
