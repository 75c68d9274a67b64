//! Sharing a bucket with another account (`weft bucket grant`).
//!
//! A grant is a session the owner signs for the grantee — scoped to the one bucket, read-only
//! or not, carrying the bucket's keys — sealed to the grantee's account key (X25519 from its
//! Ed25519 key, with an ephemeral key of the owner's) and stored as a row of the owner's,
//! `grant/<owner>/<bucket>`, keyed by the session's delegate. The grantee's client, through any
//! node, finds the row, opens the session with its own key and hands it to the node like any
//! session: the node then acts for the owner within that bucket, and every replica checks the
//! delegation's scope as for any delegate.
//!
//! Revoking deletes the row. Every node checks, on each use of a bucket-scoped session, that no
//! grant row for its delegate was deleted (the answer is at most 3 s old: [`crate::recent`]),
//! so a revoked grant is refused everywhere within 3 s. What the grantee already read, and the bucket key it
//! was handed, cannot be taken back (that needs re-keying the bucket).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_core::{NodeId, Scope, SecretKey};

use crate::schema::{self, BucketId};
use crate::session::Session;
use crate::{Acting, BucketError, BucketRecord, Grant, Need};

fn context(owner: &NodeId, bucket: &str) -> Vec<u8> {
    format!("weft grant {}/{bucket}", owner.to_hex()).into_bytes()
}

fn box_key(shared: &[u8; 32], ephemeral: &NodeId, recipient: &NodeId) -> [u8; 32] {
    let mut material = Vec::with_capacity(96);
    material.extend_from_slice(shared);
    material.extend_from_slice(&ephemeral.0);
    material.extend_from_slice(&recipient.0);
    blake3::derive_key("weft sealed to an account v1", &material)
}

/// Seal `plain` so that only the holder of `recipient`'s key can open it.
fn seal_to(recipient: &NodeId, plain: &[u8], context: &[u8]) -> Result<Vec<u8>, BucketError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| BucketError::Invalid(format!("no randomness for a grant: {e}")))?;
    let ephemeral = SecretKey::from_seed(seed);
    let shared = ephemeral
        .agree(recipient)
        .ok_or_else(|| BucketError::Invalid(format!("{recipient} is not an account key")))?;
    let key = box_key(&shared, &ephemeral.public(), recipient);
    let mut out = ephemeral.public().0.to_vec();
    out.extend(
        weft_store::seal(&key, plain, context).map_err(|e| BucketError::Invalid(e.to_string()))?,
    );
    Ok(out)
}

/// Open what [`seal_to`] sealed to `me`.
fn open_sealed(me: &SecretKey, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
    let ephemeral = NodeId(sealed.get(..32)?.try_into().ok()?);
    let shared = me.agree(&ephemeral)?;
    weft_store::open(
        &box_key(&shared, &ephemeral, &me.public()),
        &sealed[32..],
        context,
    )
}

impl Grant {
    /// `owner`'s grant of `bucket` to `grantee` (made where the owner's key is: the client).
    pub fn new(
        owner: &SecretKey,
        bucket: &str,
        grantee: NodeId,
        write: bool,
        now_ms: u64,
    ) -> Result<Grant, BucketError> {
        if grantee == owner.public() {
            return Err(BucketError::Invalid(
                "an account cannot grant its own bucket to itself".into(),
            ));
        }
        let scope = Scope::bucket(bucket);
        // Lives until revoked: nodes check the grant row on every use.
        let session = Session::new(owner, scope, write, now_ms, u64::MAX - now_ms, &[bucket]);
        let sealed = seal_to(
            &grantee,
            session.to_text().as_bytes(),
            &context(&owner.public(), bucket),
        )?;
        Ok(Grant {
            grantee,
            write,
            delegate: session.via.body.delegate,
            sealed,
            created_ms: now_ms,
        })
    }

    /// The granted session, opened by the grantee's key; `None` if `me` is not the grantee or
    /// the grant was not made for `owner`'s `bucket`.
    pub fn open(&self, me: &SecretKey, owner: &NodeId, bucket: &str) -> Option<Session> {
        let text = open_sealed(me, &self.sealed, &context(owner, bucket))?;
        let session = Session::from_text(std::str::from_utf8(&text).ok()?).ok()?;
        let body = &session.via.body;
        (body.account == *owner
            && body.delegate == self.delegate
            && body.scope.granted_bucket() == Some(bucket))
        .then_some(session)
    }
}

/// A grant as its owner lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantListing {
    /// Who it is for.
    pub grantee: NodeId,
    /// Whether the grantee may write.
    pub write: bool,
    /// Unix ms.
    pub created_ms: u64,
}

/// What a client asks before acting on a bucket: whose it is, and the caller's grant of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantLookup {
    /// The bucket's owner.
    pub owner: NodeId,
    /// The live grant of it to the asking account, if any.
    pub grant: Option<Grant>,
}

/// What a node last saw of a grant row: whether it was revoked, and its write flag.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GrantState {
    /// No grant row names this delegate (the owner's own session or access key).
    None,
    /// A live grant.
    Live { write: bool },
    /// A deleted one.
    Revoked,
}

/// A grant row's place: the bucket's owner and name, and the granted session's delegate.
type GrantKey = (NodeId, String, NodeId);

/// Recent grant checks, shared by every [`Acting`] of a node.
#[derive(Clone, Default)]
pub(crate) struct GrantChecks(Arc<crate::recent::Recent<GrantKey, GrantState>>);

impl Acting {
    /// The state of the grant (if any) whose session has delegate `delegate`, on bucket `b`.
    pub(crate) async fn grant_state(
        &self,
        b: &BucketRecord,
        delegate: NodeId,
    ) -> Result<GrantState, BucketError> {
        let key = (b.owner, b.name.clone(), delegate);
        let (this, bucket) = (self.clone(), BucketId::of(b));
        self.grant_checks
            .0
            .get(key, &self.tasks, move || async move {
                this.table.hears_majority()?;
                let row = this.table.get::<schema::Grants>(&bucket, &delegate).await?;
                Ok::<_, BucketError>(match row {
                    None => GrantState::None,
                    Some(r) => match r.value {
                        None => GrantState::Revoked,
                        Some(v) => match v.known() {
                            Some(g) => GrantState::Live { write: g.write },
                            // A grant row this node cannot read: refuse rather than guess.
                            None => GrantState::Revoked,
                        },
                    },
                })
            })
            .await
    }

    /// Refuse a grantee doing what only the owner may (`what`) to a bucket shared with it.
    pub(crate) fn owner_itself(&self, b: &BucketRecord, what: &str) -> Result<(), BucketError> {
        // Every session scoped to one bucket that reaches here is a grant (authorize let it
        // through only with a live grant row; the owner's own scoped keys are not scoped here).
        if self.access().scoped_delegate(&b.name).is_some() {
            return Err(BucketError::Shared(b.name.clone(), what.into()));
        }
        Ok(())
    }

    /// Delete every grant of `b` (its bucket is being deleted: a bucket made again under the
    /// name starts shared with no one).
    pub(crate) async fn drop_grants(&self, b: &BucketRecord) -> Result<(), BucketError> {
        for g in self.live_grants(b).await? {
            self.table
                .put::<schema::Grants>(self.signer()?, &BucketId::of(b), &g.delegate, None)
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn live_grants(&self, b: &BucketRecord) -> Result<Vec<Grant>, BucketError> {
        let rows = self
            .table
            .list::<schema::Grants>(&BucketId::of(b), "")
            .await?;
        Ok(rows.into_iter().filter_map(|(_, r)| r.known()).collect())
    }

    /// Whether `session` is a live grant, to the acting account, of a bucket another account
    /// owns (an access key may then act with it: S3 on a shared bucket).
    pub(crate) async fn granted_to_me(&self, session: &Session) -> Result<bool, BucketError> {
        let body = &session.via.body;
        let Some(bucket) = body.scope.granted_bucket() else {
            return Ok(false);
        };
        let b = self.bucket(bucket).await?;
        if b.owner != body.account {
            return Ok(false);
        }
        let row = self
            .table
            .get_value::<schema::Grants>(&BucketId::of(&b), &body.delegate)
            .await?;
        Ok(row.is_some_and(|g| g.grantee == self.account()))
    }
}

/// The grants of an account's buckets to other accounts ([`Acting::grants`]).
pub struct Grants<'a>(pub(crate) &'a Acting);

impl Grants<'_> {
    /// Record `grant` of `bucket` (made by its owner's client with [`Grant::new`]).
    pub async fn put(&self, bucket: &str, grant: &Grant) -> Result<(), BucketError> {
        let b = self.0.authorize(bucket, Need::Write).await?;
        self.0.owner_itself(&b, "share it")?;
        if grant.grantee == b.owner || grant.sealed.len() < 32 {
            return Err(BucketError::Invalid("not a grant of this bucket".into()));
        }
        self.0
            .table
            .put::<schema::Grants>(
                self.0.signer()?,
                &BucketId::of(&b),
                &grant.delegate,
                Some(grant),
            )
            .await?;
        Ok(())
    }

    /// The live grants of `bucket`.
    pub async fn list(&self, bucket: &str) -> Result<Vec<GrantListing>, BucketError> {
        let b = self.0.authorize(bucket, Need::Read).await?;
        self.0.owner_itself(&b, "list its grants")?;
        Ok(self
            .0
            .live_grants(&b)
            .await?
            .into_iter()
            .map(|g| GrantListing {
                grantee: g.grantee,
                write: g.write,
                created_ms: g.created_ms,
            })
            .collect())
    }

    /// Revoke every grant of `bucket` to `grantee`; how many there were.
    pub async fn revoke(&self, bucket: &str, grantee: &NodeId) -> Result<usize, BucketError> {
        let b = self.0.authorize(bucket, Need::Write).await?;
        self.0.owner_itself(&b, "revoke grants")?;
        let mut revoked = 0;
        for g in self.0.live_grants(&b).await? {
            if g.grantee == *grantee {
                self.0
                    .table
                    .put::<schema::Grants>(self.0.signer()?, &BucketId::of(&b), &g.delegate, None)
                    .await?;
                revoked += 1;
            }
        }
        if revoked == 0 {
            return Err(BucketError::Invalid(format!(
                "bucket {bucket:?} is not shared with {grantee}"
            )));
        }
        Ok(revoked)
    }

    /// Whose `bucket` is, and its live grant to the acting account (any account may ask: the
    /// grant is sealed to its grantee).
    pub async fn lookup(&self, bucket: &str) -> Result<GrantLookup, BucketError> {
        let b = self.0.bucket(bucket).await?;
        let me = self.0.account();
        let grant = if b.owner == me {
            None
        } else {
            self.0
                .live_grants(&b)
                .await?
                .into_iter()
                .filter(|g| g.grantee == me)
                .max_by_key(|g| (g.write, g.created_ms))
        };
        Ok(GrantLookup {
            owner: b.owner,
            grant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_opens_only_for_its_grantee_and_bucket() {
        let alice = SecretKey::from_seed([1; 32]);
        let bob = SecretKey::from_seed([2; 32]);
        let carol = SecretKey::from_seed([3; 32]);
        let g = Grant::new(&alice, "photos", bob.public(), true, 1_000).unwrap();
        let s = g.open(&bob, &alice.public(), "photos").unwrap();
        let access = s.access(2_000).unwrap();
        assert_eq!(access.author(), alice.public());
        assert!(access.can_write());
        assert_eq!(access.scoped_delegate("photos"), Some(g.delegate));
        assert!(g.open(&carol, &alice.public(), "photos").is_none());
        assert!(g.open(&bob, &alice.public(), "other").is_none());
        assert!(g.open(&bob, &carol.public(), "photos").is_none());
        let ro = Grant::new(&alice, "photos", bob.public(), false, 1_000).unwrap();
        let access = ro
            .open(&bob, &alice.public(), "photos")
            .unwrap()
            .access(2_000)
            .unwrap();
        assert!(!access.can_write());
        assert!(Grant::new(&alice, "photos", alice.public(), false, 1).is_err());
    }
}
