//! Access keys: S3-style credentials that act for an account, optionally limited to one bucket
//! and to reading or writing.
//!
//! A key of an account lives in the replicated table, found by a hash of its id and sealed
//! under a key derived from its id ([`lookup_key`]): no replica can read it, and any node that
//! receives a request signed with the key can (it learns the id from the request). The sealed
//! row carries the SigV4 secret, the scope and the *grant* — a session the account signed for
//! exactly that scope — which is what the gateway acts with. The account's own list of its keys
//! is sealed under a key derived from its bucket master.
//!
//! Keys from before accounts live in `s3-keys.json` (mode 0600) of the node that made them and
//! act for that node's own account ([`KeyStore`]).

use std::path::PathBuf;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use weft_core::NodeId;
use weft_meta::{Table, Value};

use crate::schema::{KeyHash, KeyIndex, SealedKeys};
use crate::{Acting, KeyError, check_bucket_name};
use weft_meta::SortKey;

const FILE: &str = "s3-keys.json";

/// One access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Public id (the S3 access key id), `WK` + 18 characters.
    pub id: String,
    /// Secret (the S3 secret access key); empty in listings.
    pub secret: String,
    /// The only bucket it may touch (None: every bucket of the account).
    pub bucket: Option<String>,
    /// May read (get, head, list).
    pub read: bool,
    /// May write (put, delete, create, multipart).
    pub write: bool,
    /// Unix ms.
    pub created_ms: u64,
    /// What the key acts with: a [`crate::Session`] (as text) its account signed for the
    /// key's scope. `None`: a key from before accounts, acting for the node's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Set when the key was looked up in the table: its grant is its own account's (not a
    /// grant of a bucket shared with it). Never stored.
    #[serde(skip)]
    pub own_grant: bool,
}

impl AccessKey {
    /// The key without its secret.
    pub fn redacted(&self) -> AccessKey {
        AccessKey {
            secret: String::new(),
            grant: None,
            ..self.clone()
        }
    }

    /// The account the key acts for (`node`: the node's own, for keys without a grant).
    pub fn account(&self, node: weft_core::NodeId) -> weft_core::NodeId {
        self.grant
            .as_deref()
            .and_then(|g| crate::Session::from_text(g).ok())
            .map_or(node, |s| s.via.body.account)
    }

    /// Whether this key allows `write` (or read) access to `bucket` (None: account-wide
    /// operations such as listing buckets).
    pub fn allows(&self, bucket: Option<&str>, write: bool) -> bool {
        let scope = match (&self.bucket, bucket) {
            (None, _) => true,
            (Some(mine), Some(b)) => mine == b,
            // A bucket-scoped key may list buckets (it sees names only) but not change the set.
            (Some(_), None) => !write,
        };
        scope && if write { self.write } else { self.read }
    }
}

/// What an account's own key list holds of each key (no secret, no grant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyListing {
    /// The id.
    pub id: String,
    /// Bucket scope.
    pub bucket: Option<String>,
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
    /// Unix ms.
    pub created_ms: u64,
}

impl From<KeyListing> for AccessKey {
    /// A listed key, as listings show keys (no secret, no grant).
    fn from(l: KeyListing) -> AccessKey {
        AccessKey {
            own_grant: false,
            id: l.id,
            secret: String::new(),
            bucket: l.bucket,
            read: l.read,
            write: l.write,
            created_ms: l.created_ms,
            grant: None,
        }
    }
}

/// The key a key's sealed row is encrypted under: derived from its id, which only the key's
/// holders (and the gateway a request signed with it reaches) know.
fn seal_key(id: &str) -> [u8; 32] {
    blake3::derive_key("weft s3 key seal v1", id.as_bytes())
}

fn new_key(
    bucket: Option<String>,
    read: bool,
    write: bool,
    grant: Option<String>,
) -> Result<AccessKey, KeyError> {
    if let Some(b) = &bucket {
        check_bucket_name(b).map_err(|e| KeyError::Invalid(e.to_string()))?;
    }
    if !read && !write {
        return Err(KeyError::Invalid(
            "a key must allow reading, writing or both".into(),
        ));
    }
    Ok(AccessKey {
        own_grant: false,
        id: format!("WK{}", random_text(18, ALPHABET)?),
        secret: random_text(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        )?,
        bucket,
        read,
        write,
        created_ms: weft_net::now_ms(),
        grant,
    })
}

/// The access key `id` from the replicated table, with the account it acts for; `None` if
/// there is none (or it was removed, or its row does not open or does not match).
pub async fn lookup_key(table: &Table, id: &str) -> Result<Option<(AccessKey, NodeId)>, KeyError> {
    let hash = KeyHash::of(id);
    let Some(row) = table.get::<SealedKeys>(&hash, &hash).await? else {
        return Ok(None);
    };
    let author = row.signer;
    let Some(Value::Known(sealed)) = row.value else {
        return Ok(None);
    };
    let Some(plain) = weft_store::open(&seal_key(id), &sealed, hash.to_sort().as_bytes()) else {
        return Ok(None);
    };
    let Ok(key) = weft_core::wire::decode::<AccessKey>(&plain) else {
        return Ok(None);
    };
    // The row's claimant must be the account the grant is from (or the grantee of a live grant
    // of a bucket shared with it), and the key the one asked.
    let Some(grant) = key
        .grant
        .as_deref()
        .and_then(|g| crate::Session::from_text(g).ok())
    else {
        return Ok(None);
    };
    let body = &grant.via.body;
    let ok = body.account == author
        || match body.scope.granted_bucket() {
            Some(b) => {
                let bucket = crate::schema::BucketId::anywhere(body.account, b);
                table
                    .get_value::<crate::schema::Grants>(&bucket, &body.delegate)
                    .await?
                    .is_some_and(|g| g.grantee == author)
            }
            None => false,
        };
    if key.id != id || !ok {
        return Ok(None);
    }
    let own = body.account == author;
    Ok(Some((
        AccessKey {
            own_grant: own,
            ..key
        },
        author,
    )))
}

/// The access keys of an account ([`Acting::keys`]).
pub struct Keys<'a>(pub(crate) &'a Acting);

impl Keys<'_> {
    fn listing_key(&self) -> Result<[u8; 32], KeyError> {
        self.0.master_derived("weft key list v1").ok_or_else(|| {
            KeyError::Invalid(
                "keys are made and listed with an account-wide session (not a bucket's)".into(),
            )
        })
    }

    /// Make an access key of this account, stored sealed in the replicated table so every node
    /// serves it. `grant` is the session it acts with: signed by this account, for exactly the
    /// key's scope (its bucket; a signer if and only if it may write).
    pub async fn create(
        &self,
        bucket: Option<String>,
        read: bool,
        write: bool,
        grant: String,
    ) -> Result<AccessKey, KeyError> {
        let session =
            crate::Session::from_text(&grant).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let access = session
            .access(weft_net::now_ms())
            .map_err(|e| KeyError::Invalid(e.to_string()))?;
        if access.author() != self.0.account() && !self.0.granted_to_me(&session).await? {
            return Err(KeyError::ForeignGrant);
        }
        if session.via.body.scope
            != bucket
                .as_deref()
                .map_or(weft_core::Scope::Account, weft_core::Scope::bucket)
            || access.can_write() != write
        {
            return Err(KeyError::Invalid(
                "the grant's scope is not the key's".into(),
            ));
        }
        let listing_key = self.listing_key()?;
        let key = new_key(bucket, read, write, Some(grant))?;
        let hash = KeyHash::of(&key.id);
        let context = hash.to_sort();
        let sealed = weft_store::seal(
            &seal_key(&key.id),
            &weft_core::wire::encode(&key),
            context.as_bytes(),
        )
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
        let listing = KeyListing {
            id: key.id.clone(),
            bucket: key.bucket.clone(),
            read,
            write,
            created_ms: key.created_ms,
        };
        let listed = weft_store::seal(
            &listing_key,
            &weft_core::wire::encode(&listing),
            context.as_bytes(),
        )
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
        let signer = self.0.signer()?;
        self.0
            .table
            .create::<SealedKeys>(signer, &hash, &hash, &sealed)
            .await?;
        if let Err(e) = self
            .0
            .table
            .put::<KeyIndex>(signer, &self.0.account(), &hash, Some(&listed))
            .await
        {
            // Unlisted, the key could not be found to remove: withdraw it (best effort).
            let _ = self
                .0
                .table
                .put::<SealedKeys>(signer, &hash, &hash, None)
                .await;
            return Err(e.into());
        }
        Ok(key)
    }

    /// This account's access keys (no secrets).
    pub async fn list(&self) -> Result<Vec<KeyListing>, KeyError> {
        let listing_key = self.listing_key()?;
        let rows = self.0.table.list::<KeyIndex>(&self.0.account(), "").await?;
        let mut out: Vec<KeyListing> = rows
            .into_iter()
            .filter_map(|(sk, row)| {
                let sealed = row.known()?;
                let plain = weft_store::open(&listing_key, &sealed, sk.as_bytes())?;
                weft_core::wire::decode(&plain).ok()
            })
            .collect();
        out.sort_by_key(|k: &KeyListing| k.created_ms);
        Ok(out)
    }

    /// Remove one of this account's access keys; every node refuses it from then on (within the
    /// few seconds gateways cache a key).
    pub async fn remove(&self, id: &str) -> Result<(), KeyError> {
        let hash = KeyHash::of(id);
        match lookup_key(&self.0.table, id).await? {
            Some((_, author)) if author == self.0.account() => {}
            _ => return Err(KeyError::Unknown(id.into())),
        }
        let signer = self.0.signer()?;
        self.0
            .table
            .put::<SealedKeys>(signer, &hash, &hash, None)
            .await?;
        self.0
            .table
            .put::<KeyIndex>(signer, &self.0.account(), &hash, None)
            .await?;
        Ok(())
    }
}

/// The node's access keys.
pub struct KeyStore {
    path: PathBuf,
    keys: RwLock<Vec<AccessKey>>,
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn random_text(len: usize, alphabet: &[u8]) -> Result<String, KeyError> {
    let mut raw = vec![0u8; len];
    getrandom::fill(&mut raw).map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
    Ok(raw
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect())
}

impl KeyStore {
    /// Load the keys in `dir` (none if the file does not exist yet).
    pub fn open(dir: &std::path::Path) -> Result<KeyStore, KeyError> {
        let path = dir.join(FILE);
        let keys = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                KeyError::Invalid(format!("{} is not a key list: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        Ok(KeyStore {
            path,
            keys: RwLock::new(keys),
        })
    }

    fn save(&self, keys: &[AccessKey]) -> Result<(), KeyError> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |source| KeyError::Io {
            path: self.path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        let text = serde_json::to_vec_pretty(keys).map_err(|e| KeyError::Invalid(e.to_string()))?;
        weft_net::write_secret_file(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// Make a new key; the returned value carries the secret (shown once).
    pub fn create(
        &self,
        bucket: Option<String>,
        read: bool,
        write: bool,
        grant: Option<String>,
    ) -> Result<AccessKey, KeyError> {
        let key = new_key(bucket, read, write, grant)?;
        let mut keys = self.keys.write();
        let mut next = keys.clone();
        next.push(key.clone());
        self.save(&next)?;
        *keys = next;
        Ok(key)
    }

    /// Every key, secrets removed.
    pub fn list(&self) -> Vec<AccessKey> {
        self.keys.read().iter().map(AccessKey::redacted).collect()
    }

    /// Remove a key (by id).
    pub fn remove(&self, id: &str) -> Result<(), KeyError> {
        let mut keys = self.keys.write();
        if !keys.iter().any(|k| k.id == id) {
            return Err(KeyError::Unknown(id.into()));
        }
        let next: Vec<AccessKey> = keys.iter().filter(|k| k.id != id).cloned().collect();
        self.save(&next)?;
        *keys = next;
        Ok(())
    }

    /// A key by id, with its secret.
    pub fn lookup(&self, id: &str) -> Option<AccessKey> {
        self.keys.read().iter().find(|k| k.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_are_private_and_scope_access() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let all = store.create(None, true, true, None).unwrap();
        let ro = store
            .create(Some("photos".into()), true, false, None)
            .unwrap();
        assert!(store.create(None, false, false, None).is_err());
        assert!(store.create(Some("No".into()), true, true, None).is_err());
        assert_eq!(all.id.len(), 20);
        assert_eq!(all.secret.len(), 40);
        let again = KeyStore::open(dir.path()).unwrap();
        assert_eq!(again.lookup(&ro.id), Some(ro.clone()));
        assert!(again.list().iter().all(|k| k.secret.is_empty()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(all.allows(Some("x"), true) && all.allows(None, true));
        assert!(ro.allows(Some("photos"), false));
        assert!(!ro.allows(Some("photos"), true));
        assert!(!ro.allows(Some("other"), false));
        assert!(ro.allows(None, false) && !ro.allows(None, true));
        again.remove(&ro.id).unwrap();
        assert!(matches!(again.remove(&ro.id), Err(KeyError::Unknown(_))));
        assert!(KeyStore::open(dir.path()).unwrap().lookup(&ro.id).is_none());
    }
}
