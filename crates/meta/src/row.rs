//! Signed rows and the rules that say who may write them. Pure: no IO, no clock.
//!
//! Every row version carries its writer's Ed25519 signature over the row's partition key, sort
//! key, timestamp and value (or the deletion), so a replica can check a row it is handed by
//! anyone — a writer, a co-replica in anti-entropy, a reader repairing it — without trusting the
//! sender. Who may sign is declared per row *kind* (the partition key up to its first `/`) by a
//! [`Writer`] rule. Rules look only at the row's keys, its signer and (for name claims) the
//! signer of the replica's current version, never at values: a replica must judge rows whose
//! value format is newer than it knows, and every replica must reach the same verdict so they
//! converge.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use weft_core::{Delegation, NodeId, SecretKey, Signature, wire};

use crate::hlc::Timestamp;

const ROW_DOMAIN: &str = "weft table row v1";

/// A versioned, signed value; `None` is a deletion (tombstone), kept so deletes win over older
/// writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was written.
    pub ts: Timestamp,
    /// The value (a schema's encoded value, opaque here), or `None` if deleted.
    pub value: Option<Vec<u8>>,
    /// Who signed it: a node key, an account key, or a key an account delegated to (`via`).
    pub signer: NodeId,
    /// The signer's signature over the row's keys, `ts` and `value`.
    pub sig: Signature,
    /// Name claims only: another key's withdrawal (its signed deletion) of the name, which this
    /// version follows. It lets every replica — also one that never saw the withdrawal —
    /// accept a new holder of a name, and refuse the old holder's replayed claim. Covered by
    /// its own signature, not by `sig`. Decoded at most [`MAX_PRIOR_DEPTH`] deep.
    #[serde(deserialize_with = "bounded_prior")]
    pub prior: Option<Box<Entry>>,
    /// When `signer` signs for an account: the account's delegation to it. The row then counts
    /// as the account's ([`Entry::author`]) wherever the delegation covers it.
    pub via: Option<Delegation>,
}

/// Most bytes a row's keys and value may take together; every replica refuses more (rows are
/// small records — data goes to storage — and a row is read whole by repair and sync).
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// Most bytes of a partition or sort key.
pub const MAX_KEY_BYTES: usize = 1024;

/// How many `prior` fields the decoder may enter on its way down a row: the row's own and
/// its prior's, so a row decodes with one prior and no deeper chain. Honest writers nest one:
/// a claim's prior is a withdrawal, which carries none of its own (a deletion by the claimant
/// carries its earlier withdrawal, again one level). Anything deeper is refused as it is
/// decoded — a chain thousands deep would otherwise recurse until the decoding thread's stack
/// overflows and the process aborts.
pub const MAX_PRIOR_DEPTH: u32 = 2;

thread_local! {
    /// How many priors the decoder on this thread is inside of.
    static PRIOR_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Decode a prior, refusing one nested deeper than [`MAX_PRIOR_DEPTH`] before recursing into it.
pub(crate) fn bounded_prior<'de, D, T>(d: D) -> Result<Option<Box<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Level;
    impl Drop for Level {
        fn drop(&mut self) {
            PRIOR_DEPTH.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
    let depth = PRIOR_DEPTH.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let _level = Level;
    if depth > MAX_PRIOR_DEPTH {
        return Err(serde::de::Error::custom(format!(
            "a row's priors nest deeper than {MAX_PRIOR_DEPTH}"
        )));
    }
    Option::<Box<T>>::deserialize(d)
}

/// Who signs rows: a key, acting for itself or for the account that delegated to it.
#[derive(Clone, Debug)]
pub struct Signer {
    key: SecretKey,
    via: Option<Delegation>,
}

impl Signer {
    /// `key` signing for itself.
    pub fn own(key: SecretKey) -> Signer {
        Signer { key, via: None }
    }

    /// `key` signing for the account of `via` (which must name `key` as its delegate).
    pub fn delegated(key: SecretKey, via: Delegation) -> Signer {
        Signer {
            key,
            via: Some(via),
        }
    }

    /// The key whose rows these are: the delegating account, or the key itself.
    pub fn author(&self) -> NodeId {
        self.via
            .as_ref()
            .map_or_else(|| self.key.public(), |d| d.body.account)
    }
}

impl From<SecretKey> for Signer {
    fn from(key: SecretKey) -> Signer {
        Signer::own(key)
    }
}

impl From<&Signer> for Signer {
    fn from(s: &Signer) -> Signer {
        s.clone()
    }
}

impl From<&SecretKey> for Signer {
    fn from(key: &SecretKey) -> Signer {
        Signer::own(key.clone())
    }
}

/// A row: partition key, sort key, entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Partition key (e.g. a bucket): all rows with the same one live in one partition.
    pub pk: String,
    /// Sort key within the partition (e.g. an object key).
    pub sk: String,
    /// The entry.
    pub entry: Entry,
}

fn signed_bytes(pk: &str, sk: &str, ts: &Timestamp, value: Option<&[u8]>) -> Vec<u8> {
    wire::encode(&(pk, sk, ts, value))
}

impl Entry {
    /// A row version signed by `by`.
    pub fn sign(
        by: impl Into<Signer>,
        pk: &str,
        sk: &str,
        ts: Timestamp,
        value: Option<Vec<u8>>,
    ) -> Entry {
        let by = by.into();
        let sig = by
            .key
            .sign(ROW_DOMAIN, &signed_bytes(pk, sk, &ts, value.as_deref()));
        Entry {
            ts,
            value,
            signer: by.key.public(),
            sig,
            prior: None,
            via: by.via,
        }
    }

    /// Whose row this is: the account that delegated to the signer, or the signer. (Whether
    /// the delegation holds is the replica's check, [`Rules::check`].)
    pub fn author(&self) -> NodeId {
        self.via.as_ref().map_or(self.signer, |d| d.body.account)
    }

    /// Whether the signature is the signer's over these keys and this version (a version
    /// read again is checked once per process: [`NodeId::verify_once`]).
    pub fn signature_ok(&self, pk: &str, sk: &str) -> bool {
        self.signer.verify_once(
            ROW_DOMAIN,
            &signed_bytes(pk, sk, &self.ts, self.value.as_deref()),
            &self.sig,
        )
    }

    /// Whether this is a deletion.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Who may write the rows of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// The key whose hex id is segment `n` of the partition key (`kind/<id>/...`, the kind is
    /// segment 0): an account's own rows.
    PartitionKey(usize),
    /// The key whose hex id is the sort key's first segment (`<id>/...`): rows that several
    /// writers keep side by side in one partition, each its own.
    SortKey,
    /// A current member node (its record is known and it is not revoked), whose id is the sort
    /// key's first segment: a node's own rows about others (audit tallies).
    SortKeyMember,
    /// Any current member node: rows of the fabric's own bookkeeping.
    Member,
    /// A name claim: whoever signed the replica's current live version, or anyone if there is
    /// none (the name is free or was deleted).
    FirstClaim,
    /// The fabric's admin key itself (never a delegate): the fabric's own policy.
    Admin,
}

/// Why a replica refused a row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signature does not verify (forged, altered, or missing).
    #[error("row {pk}/{sk}: bad or missing signature")]
    BadSignature {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
    },
    /// Signed by a key the kind's rule does not allow.
    #[error("row {pk}/{sk}: {signer} may not write it ({why})")]
    Unauthorized {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// Short id of the signer.
        signer: String,
        /// The rule that refused it.
        why: String,
    },
    /// A kind no schema on this node declares.
    #[error("row {pk}/{sk}: unknown row kind {kind:?} (is this node older than the writer?)")]
    UnknownKind {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// The kind.
        kind: String,
    },
    /// Keys that cannot be stored.
    #[error("row keys must not contain NUL bytes")]
    BadKey,
    /// A row larger than replicas keep (its keys, or keys and value together).
    #[error(
        "row {pk}/…: {size} bytes, more than a row may hold (keys {MAX_KEY_BYTES}, row {MAX_ROW_BYTES})"
    )]
    TooLarge {
        /// Partition key (its start).
        pk: String,
        /// Bytes of keys and value.
        size: usize,
    },
    /// A row signed under a delegation that reached this replica long after the time it
    /// claims: a delegate could otherwise stamp rows just before its delegation expired,
    /// forever after.
    #[error(
        "row {pk}/{sk}: signed under a delegation, stamped {age_ms} ms before this replica's clock (at most {max_ms} taken from writers)"
    )]
    Stale {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
        /// How far behind this replica's clock its timestamp was.
        age_ms: u64,
        /// The most a writer's delegated row may be behind.
        max_ms: u64,
    },
}

/// The kind of a partition key: everything before its first `/`.
pub fn kind_of(pk: &str) -> &str {
    let kind = pk.split('/').next().unwrap_or(pk);
    // A region tag ([`crate::ring::tag`]) places the rows; it is not part of their kind.
    kind.split_once('@').map_or(kind, |(k, _)| k)
}

/// The writer rule of every row kind this node knows, and the digests of row versions whose
/// signatures it has checked lately (a row served again — by another replica, a later listing,
/// anti-entropy — is not verified again; its writer rule still is).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    kinds: HashMap<&'static str, Writer>,
    /// Kinds a delegation scoped to one bucket may not write (only the account itself or an
    /// account-wide delegate): what governs a bucket rather than what is in it.
    unscoped: std::collections::HashSet<&'static str>,
    verified: std::sync::Arc<parking_lot::Mutex<std::collections::HashSet<[u8; 32]>>>,
    /// The fabric's admin key, which alone writes [`Writer::Admin`] rows (none known: nobody).
    admin: Option<NodeId>,
}

/// How many checked signatures [`Rules`] remembers before it starts over.
const VERIFIED_CAPACITY: usize = 200_000;

impl Rules {
    /// No kinds: every row is refused.
    pub fn new() -> Rules {
        Rules::default()
    }

    /// The fabric's admin key: the only writer of [`Writer::Admin`] rows.
    pub fn with_admin(mut self, admin: NodeId) -> Rules {
        self.admin = Some(admin);
        self
    }

    /// Declare `kind`'s rule. Panics if a kind is declared twice with different rules (a
    /// programming error, found by any test that starts a node).
    pub fn add(&mut self, kind: &'static str, writer: Writer) {
        if let Some(old) = self.kinds.insert(kind, writer) {
            assert_eq!(old, writer, "row kind {kind:?} declared twice");
        }
    }

    /// Declare that a delegation scoped to one bucket may not write rows of `kind`, even for
    /// its own bucket (the bucket's claim and who it is shared with are the owner's alone).
    pub fn account_wide_only(&mut self, kind: &'static str) {
        self.unscoped.insert(kind);
    }

    /// Whether the signatures of `e` (the row's and its delegation's) hold, from memory if this
    /// exact version was checked before.
    fn signatures_ok(&self, pk: &str, sk: &str, e: &Entry) -> bool {
        let digest = *blake3::hash(&wire::encode(&(pk, sk, e))).as_bytes();
        if self.verified.lock().contains(&digest) {
            return true;
        }
        let ok = e.signature_ok(pk, sk) && e.via.as_ref().is_none_or(Delegation::signature_ok);
        if ok {
            let mut seen = self.verified.lock();
            if seen.len() >= VERIFIED_CAPACITY {
                seen.clear();
            }
            seen.insert(digest);
        }
        ok
    }

    /// Whether `by` carries a withdrawal of the name `sk` by `claim`'s author, made after
    /// `claim`: a deletion signed by that author — or by its delegate, under a delegation the
    /// author signed that names the signer, covers the name (account-wide for kinds only an
    /// account-wide session may write) and had not expired when the withdrawal was stamped.
    /// Nothing in the withdrawal is taken on its word: a forged delegation withdraws nothing.
    fn withdrawn(&self, pk: &str, sk: &str, by: &Entry, claim: &Entry) -> bool {
        by.prior.as_deref().is_some_and(|p| {
            let delegation_holds = p.via.as_ref().is_none_or(|d| {
                (d.body.scope.is_account() || !self.unscoped.contains(kind_of(pk)))
                    && d.covers(&p.signer, Some(sk), p.ts.wall)
            });
            p.is_tombstone()
                && p.author() == claim.author()
                && p.ts > claim.ts
                && delegation_holds
                && p.signature_ok(pk, sk)
        })
    }

    /// The rule of `kind`, if known.
    pub fn writer(&self, kind: &str) -> Option<Writer> {
        self.kinds.get(kind).copied()
    }

    /// Whether `new` replaces `old` (two versions of the row `pk`/`sk`): last-writer-wins,
    /// except for name claims held by different keys, where what counts is who withdrew:
    /// - a live claim replaces another key's live claim only if it carries that key's signed
    ///   withdrawal, made after the claim it replaces;
    /// - a deletion never removes another key's live claim (so a failed claimant withdrawing
    ///   its partial claim cannot delete the winner's);
    /// - a live claim replaces another key's deletion unless that deletion carries the
    ///   claimant's own later withdrawal (a replayed old claim stays dead).
    pub fn replaces(&self, pk: &str, sk: &str, new: &Entry, old: &Entry) -> bool {
        if self.writer(kind_of(pk)) == Some(Writer::FirstClaim) && new.author() != old.author() {
            return match (new.is_tombstone(), old.is_tombstone()) {
                (false, false) => self.withdrawn(pk, sk, new, old),
                (true, false) => false,
                (false, true) => !self.withdrawn(pk, sk, old, new),
                (true, true) => crate::local::supersedes(new, old),
            };
        }
        crate::local::supersedes(new, old)
    }

    /// Check a row version a replica is asked to take. `current` is the replica's version of
    /// the row, if any; `is_member` says whether a key is a current member node.
    pub fn check(
        &self,
        item: &Item,
        current: Option<&Entry>,
        is_member: &dyn Fn(&NodeId) -> bool,
    ) -> Result<(), Refusal> {
        let (pk, sk, e) = (&item.pk, &item.sk, &item.entry);
        if pk.contains('\0') || sk.contains('\0') {
            return Err(Refusal::BadKey);
        }
        let size = pk.len() + sk.len() + e.value.as_ref().map_or(0, Vec::len);
        if pk.len() > MAX_KEY_BYTES || sk.len() > MAX_KEY_BYTES || size > MAX_ROW_BYTES {
            return Err(Refusal::TooLarge {
                pk: pk.chars().take(80).collect(),
                size,
            });
        }
        if !self.signatures_ok(pk, sk, e) {
            return Err(Refusal::BadSignature {
                pk: pk.clone(),
                sk: sk.clone(),
            });
        }
        let kind = kind_of(pk);
        let writer = self.writer(kind).ok_or_else(|| Refusal::UnknownKind {
            pk: pk.clone(),
            sk: sk.clone(),
            kind: kind.into(),
        })?;
        let refuse = |why: &str| {
            Err(Refusal::Unauthorized {
                pk: pk.clone(),
                sk: sk.clone(),
                signer: e.signer.short(),
                why: why.into(),
            })
        };
        // A delegate's row is its account's where the delegation covers it: the row's subject
        // (the segment after the account's, a bucket) inside the scope, signed before expiry.
        if let Some(via) = &e.via {
            let subject = match writer {
                Writer::PartitionKey(n) => pk.split('/').nth(n + 1),
                Writer::SortKey => sk.split('/').nth(2),
                Writer::FirstClaim => Some(sk.as_str()),
                Writer::SortKeyMember | Writer::Member => {
                    return refuse("rows of member nodes cannot be delegated");
                }
                Writer::Admin => {
                    return refuse("the fabric's policy is its admin's own word");
                }
            };
            if !via.body.scope.is_account() && self.unscoped.contains(kind) {
                return refuse("a delegation narrower than its account cannot write these rows");
            }
            if !via.allows(&e.signer, subject, e.ts.wall) {
                return refuse(
                    "its delegation does not cover this row (scope, expiry or signature)",
                );
            }
        }
        let author = e.author();
        let names_author = |segment: Option<&str>| segment == Some(author.to_hex().as_str());
        match writer {
            Writer::PartitionKey(n) => {
                if !names_author(pk.split('/').nth(n)) {
                    return refuse("only the key named in the partition key writes these rows");
                }
            }
            Writer::SortKey => {
                if !names_author(sk.split('/').next()) {
                    return refuse("only the key named in the sort key writes this row");
                }
            }
            Writer::SortKeyMember => {
                if !names_author(sk.split('/').next()) {
                    return refuse("only the node named in the sort key writes this row");
                }
                if !is_member(&e.signer) {
                    return refuse("not a current member node");
                }
            }
            Writer::Member => {
                if !is_member(&e.signer) {
                    return refuse("only member nodes write these rows");
                }
            }
            Writer::FirstClaim => {
                if let Some(cur) = current
                    && !cur.is_tombstone()
                    && cur.author() != author
                    && (e.is_tombstone() || !self.withdrawn(pk, sk, e, cur))
                {
                    return refuse("the name is held by another key");
                }
            }
            Writer::Admin => {
                if self.admin != Some(e.signer) {
                    return refuse("only the fabric's admin key writes these rows");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall: u64) -> Timestamp {
        Timestamp {
            wall,
            logical: 0,
            node: NodeId([9; 32]),
        }
    }

    fn item(key: &SecretKey, pk: &str, sk: &str, wall: u64, v: Option<&[u8]>) -> Item {
        Item {
            pk: pk.into(),
            sk: sk.into(),
            entry: Entry::sign(key, pk, sk, ts(wall), v.map(<[u8]>::to_vec)),
        }
    }

    fn rules() -> Rules {
        let mut r = Rules::new();
        r.add("acct", Writer::PartitionKey(1));
        r.add("refs", Writer::SortKey);
        r.add("rep", Writer::SortKeyMember);
        r.add("cat", Writer::Member);
        r.add("names", Writer::FirstClaim);
        r
    }

    #[test]
    fn each_rule_admits_its_writers_only() {
        let (alice, bob, node) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let member = |id: &NodeId| *id == node.public();
        let r = rules();
        let a = alice.public().to_hex();
        let ok = |i: &Item, cur: Option<&Entry>| r.check(i, cur, &member).is_ok();
        assert!(ok(
            &item(&alice, &format!("acct/{a}/b"), "k", 1, Some(b"v")),
            None
        ));
        assert!(!ok(
            &item(&bob, &format!("acct/{a}/b"), "k", 1, Some(b"v")),
            None
        ));
        assert!(!ok(&item(&bob, &format!("acct/{a}/b"), "k", 1, None), None));
        assert!(ok(
            &item(&alice, "refs/x", &format!("{a}/v/1"), 1, None),
            None
        ));
        assert!(!ok(
            &item(&bob, "refs/x", &format!("{a}/v/1"), 1, None),
            None
        ));
        let n = node.public().to_hex();
        assert!(ok(&item(&node, "rep/x", &n, 1, Some(b"t")), None));
        assert!(!ok(&item(&alice, "rep/x", &a, 1, Some(b"t")), None));
        assert!(ok(&item(&node, "cat/00", "h", 1, Some(b"t")), None));
        assert!(!ok(&item(&alice, "cat/00", "h", 1, Some(b"t")), None));
        // Name claims: first live claim holds the name; after a delete anyone may claim it.
        let claim = item(&alice, "names", "photos", 1, Some(b"a"));
        assert!(ok(&claim, None));
        let steal = item(&bob, "names", "photos", 2, Some(b"b"));
        assert!(!ok(&steal, Some(&claim.entry)));
        assert!(!ok(
            &item(&bob, "names", "photos", 2, None),
            Some(&claim.entry)
        ));
        let gone = item(&alice, "names", "photos", 3, None);
        assert!(ok(&gone, Some(&claim.entry)));
        assert!(ok(&steal, Some(&gone.entry)));
        // A new holder's claim carries the old holder's withdrawal, so a replica that never saw
        // the withdrawal takes it, and the old holder's replayed claim stays dead.
        let mut reclaim = item(&bob, "names", "photos", 4, Some(b"b"));
        assert!(!ok(&reclaim, Some(&claim.entry)));
        reclaim.entry.prior = Some(Box::new(gone.entry.clone()));
        assert!(ok(&reclaim, Some(&claim.entry)));
        assert!(r.replaces("names", "photos", &reclaim.entry, &claim.entry));
        assert!(!r.replaces("names", "photos", &claim.entry, &reclaim.entry));
        let mut bob_gone = item(&bob, "names", "photos", 5, None);
        bob_gone.entry.prior = reclaim.entry.prior.clone();
        assert!(!r.replaces("names", "photos", &claim.entry, &bob_gone.entry));
        // A stranger's deletion never hides a live claim, whatever its timestamp.
        let late = item(&bob, "names", "photos", 9, None);
        assert!(!r.replaces("names", "photos", &late.entry, &claim.entry));
        assert!(r.replaces("names", "photos", &claim.entry, &late.entry));
        // Unknown kinds, altered rows and zeroed signatures are refused.
        assert!(matches!(
            r.check(&item(&node, "new/x", "k", 1, None), None, &member),
            Err(Refusal::UnknownKind { .. })
        ));
        let mut altered = item(&node, "cat/00", "h", 1, Some(b"t"));
        altered.entry.value = Some(b"u".to_vec());
        assert!(matches!(
            r.check(&altered, None, &member),
            Err(Refusal::BadSignature { .. })
        ));
        let mut moved = item(&node, "cat/00", "h", 1, Some(b"t"));
        moved.sk = "other".into();
        assert!(!ok(&moved, None));
        let mut unsigned = item(&node, "cat/00", "h", 1, Some(b"t"));
        unsigned.entry.sig = Signature([0; 64]);
        assert!(!ok(&unsigned, None));
    }

    /// [untrusted] 13: rows larger than replicas keep — a huge value, a huge key — are
    /// refused by the writer rules every replica runs, whoever signs them.
    #[test]
    fn oversized_rows_are_refused() {
        let k = SecretKey::from_seed([1; 32]);
        let r = rules();
        let member = |_: &NodeId| true;
        let big = vec![7u8; MAX_ROW_BYTES + 1];
        assert!(matches!(
            r.check(&item(&k, "cat", "x", 1, Some(&big)), None, &member),
            Err(Refusal::TooLarge { .. })
        ));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            r.check(&item(&k, "cat", &long, 1, Some(b"v")), None, &member),
            Err(Refusal::TooLarge { .. })
        ));
        let fits = vec![7u8; MAX_ROW_BYTES - 10];
        assert!(
            r.check(&item(&k, "cat", "x", 1, Some(&fits)), None, &member)
                .is_ok()
        );
    }

    /// [untrusted] account policy: the fabric's policy rows are its admin key's own word — no
    /// member, account or delegate writes them, and a fabric whose admin is not known takes
    /// none.
    #[test]
    fn only_the_admin_key_writes_the_fabrics_policy() {
        use weft_core::Scope;
        let (admin, member, alice) = (
            SecretKey::from_seed([7; 32]),
            SecretKey::from_seed([8; 32]),
            SecretKey::from_seed([9; 32]),
        );
        let is_member = |id: &NodeId| *id == member.public();
        let mut r = Rules::new().with_admin(admin.public());
        r.add("policy", Writer::Admin);
        let ok = |r: &Rules, i: &Item| r.check(i, None, &is_member).is_ok();
        assert!(ok(
            &r,
            &item(&admin, "policy", "accounts", 1, Some(b"closed"))
        ));
        assert!(!ok(
            &r,
            &item(&member, "policy", "accounts", 1, Some(b"open"))
        ));
        assert!(!ok(
            &r,
            &item(&alice, "policy", "accounts", 1, Some(b"open"))
        ));
        // Not through a delegation of the admin key either.
        let via = Delegation::sign(&admin, alice.public(), Scope::Account, u64::MAX);
        let mut delegated = item(&alice, "policy", "accounts", 1, Some(b"open"));
        delegated.entry = Entry::sign(
            Signer::delegated(alice.clone(), via),
            "policy",
            "accounts",
            ts(1),
            Some(b"open".to_vec()),
        );
        assert!(!ok(&r, &delegated));
        let mut unknown = Rules::new();
        unknown.add("policy", Writer::Admin);
        assert!(!ok(
            &unknown,
            &item(&admin, "policy", "accounts", 1, Some(b"x"))
        ));
    }

    /// [untrusted] 2: a withdrawal "by" the holder that is really the thief's own deletion,
    /// dressed in a delegation the holder never signed (or that does not cover it), must not
    /// let the thief take the name.
    #[test]
    fn a_forged_withdrawal_does_not_steal_a_name() {
        use weft_core::Scope;
        let (alice, mallory) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let r = rules();
        let never = |_: &NodeId| false;
        let claim = item(&alice, "names", "photos", 1, Some(b"a"));
        // Mallory signs a deletion and names Alice's account through a delegation whose
        // signature is not Alice's.
        let all = Scope::Account;
        let mut fake = Delegation::sign(&mallory, mallory.public(), all.clone(), u64::MAX);
        fake.body.account = alice.public();
        let mut withdrawal = item(&mallory, "names", "photos", 2, None);
        withdrawal.entry.via = Some(fake);
        let mut steal = item(&mallory, "names", "photos", 3, Some(b"m"));
        steal.entry.prior = Some(Box::new(withdrawal.entry.clone()));
        assert!(r.check(&steal, Some(&claim.entry), &never).is_err());
        assert!(!r.replaces("names", "photos", &steal.entry, &claim.entry));
        // A real delegation of Alice's that had expired when the "withdrawal" was stamped, or
        // that names another delegate, does not withdraw for her either.
        for via in [
            Delegation::sign(&alice, mallory.public(), all.clone(), 1),
            Delegation::sign(&alice, alice.public(), all.clone(), u64::MAX),
        ] {
            let mut withdrawal = item(&mallory, "names", "photos", 2, None);
            withdrawal.entry.via = Some(via);
            let mut steal = item(&mallory, "names", "photos", 3, Some(b"m"));
            steal.entry.prior = Some(Box::new(withdrawal.entry.clone()));
            assert!(r.check(&steal, Some(&claim.entry), &never).is_err());
            assert!(!r.replaces("names", "photos", &steal.entry, &claim.entry));
        }
        // Alice's own delegate, within its delegation, does withdraw for her.
        let via = Delegation::sign(&alice, mallory.public(), all, u64::MAX);
        let mut withdrawal = item(&mallory, "names", "photos", 2, None);
        withdrawal.entry = Entry::sign(
            Signer::delegated(mallory.clone(), via),
            "names",
            "photos",
            ts(2),
            None,
        );
        let mut reclaim = item(&mallory, "names", "photos", 3, Some(b"m"));
        reclaim.entry.prior = Some(Box::new(withdrawal.entry.clone()));
        assert!(r.check(&reclaim, Some(&claim.entry), &never).is_ok());
        assert!(r.replaces("names", "photos", &reclaim.entry, &claim.entry));
    }

    /// [untrusted] 4: a row whose prior chain nests thousands deep is refused as it is decoded,
    /// on an ordinary thread's stack, instead of overflowing it.
    #[test]
    fn a_deep_prior_chain_is_refused_not_a_stack_overflow() {
        let key = SecretKey::from_seed([3; 32]);
        // Encode the chain on a thread with room for it (encoding recurses too).
        let bytes = std::thread::Builder::new()
            .stack_size(512 << 20)
            .spawn(move || {
                let mut e = Entry::sign(&key, "names", "x", ts(1), None);
                for i in 0..20_000 {
                    let mut next = Entry::sign(&key, "names", "x", ts(2 + i), None);
                    next.prior = Some(Box::new(e));
                    e = next;
                }
                let bytes = wire::encode(&Item {
                    pk: "names".into(),
                    sk: "x".into(),
                    entry: e.clone(),
                });
                // Dropping the chain recurses as well: leak it here, on the big stack's side.
                std::mem::forget(e);
                bytes
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || wire::decode::<Item>(&bytes).is_err())
            .unwrap()
            .join();
        assert_eq!(
            decoded.ok(),
            Some(true),
            "the deep chain must decode to an error"
        );
        // An honest claim's prior (a withdrawal without one of its own) still decodes.
        let key = SecretKey::from_seed([3; 32]);
        let mut claim = Entry::sign(&key, "names", "x", ts(5), Some(b"v".to_vec()));
        claim.prior = Some(Box::new(Entry::sign(&key, "names", "x", ts(4), None)));
        let back: Entry = wire::decode(&wire::encode(&claim)).unwrap();
        assert_eq!(back, claim);
    }

    #[test]
    fn a_delegate_writes_for_its_account_only_within_its_delegation() {
        use weft_core::Scope;
        let (alice, gateway, bob) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([4; 32]),
            SecretKey::from_seed([2; 32]),
        );
        let r = rules();
        let never = |_: &NodeId| false;
        let a = alice.public().to_hex();
        let signed = |via: Delegation, pk: &str, sk: &str, wall: u64| Item {
            pk: pk.into(),
            sk: sk.into(),
            entry: Entry::sign(
                Signer::delegated(gateway.clone(), via),
                pk,
                sk,
                ts(wall),
                Some(b"v".to_vec()),
            ),
        };
        let photos = Scope::bucket("photos");
        let all = Delegation::sign(&alice, gateway.public(), Scope::Account, 100);
        let one = Delegation::sign(&alice, gateway.public(), photos, u64::MAX);
        let ok = |i: &Item| r.check(i, None, &never).is_ok();
        // The row is Alice's: her partitions, her references, her name claims.
        let row = signed(all.clone(), &format!("acct/{a}/docs"), "k", 5);
        assert!(ok(&row));
        assert_eq!(row.entry.author(), alice.public());
        assert!(ok(&signed(
            all.clone(),
            "refs/x",
            &format!("{a}/v/docs/k"),
            5
        )));
        assert!(ok(&signed(
            all.clone(),
            "refs/x",
            &format!("{a}/capability"),
            5
        )));
        assert!(ok(&signed(all.clone(), "names", "docs", 5)));
        // Past its expiry, outside its scope, or for another account's rows: refused.
        assert!(!ok(&signed(
            all.clone(),
            &format!("acct/{a}/docs"),
            "k",
            101
        )));
        assert!(ok(&signed(
            one.clone(),
            &format!("acct/{a}/photos"),
            "k",
            500
        )));
        assert!(!ok(&signed(one.clone(), &format!("acct/{a}/docs"), "k", 5)));
        assert!(!ok(&signed(
            one.clone(),
            "refs/x",
            &format!("{a}/capability"),
            5
        )));
        assert!(!ok(&signed(one.clone(), "names", "docs", 5)));
        // Kinds kept to account-wide delegations refuse a bucket-scoped one, even for its bucket.
        assert!(ok(&signed(one.clone(), "names", "photos", 5)));
        let mut strict = rules();
        strict.account_wide_only("names");
        let strict_ok = |i: &Item| strict.check(i, None, &never).is_ok();
        assert!(!strict_ok(&signed(one.clone(), "names", "photos", 5)));
        assert!(strict_ok(&signed(all.clone(), "names", "photos", 5)));
        let b = bob.public().to_hex();
        assert!(!ok(&signed(all.clone(), &format!("acct/{b}/docs"), "k", 5)));
        // Member rows are never delegated; a forged delegation is refused.
        let member = |id: &NodeId| *id == gateway.public();
        assert!(
            r.check(&signed(all.clone(), "cat/00", "h", 5), None, &member)
                .is_err()
        );
        let mut forged = all.clone();
        forged.body.expires_ms = u64::MAX;
        assert!(!ok(&signed(forged, &format!("acct/{a}/docs"), "k", 500)));
        // A name a delegate claimed for Alice is Alice's: she may delete it, Bob may not.
        let claim = signed(all, "names", "docs", 5);
        let mine = item(&alice, "names", "docs", 6, None);
        assert!(r.check(&mine, Some(&claim.entry), &never).is_ok());
        let theirs = item(&bob, "names", "docs", 6, None);
        assert!(r.check(&theirs, Some(&claim.entry), &never).is_err());
    }
}
