//! Access keys: S3-style credentials that act for this node's account, optionally limited to
//! one bucket and to reading or writing. Kept in `s3-keys.json` (mode 0600) in the data
//! directory; the secrets never leave the node except once, when a key is created.

use std::path::PathBuf;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::buckets::check_bucket_name;
use crate::datadir::DataDirError;

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
}

impl AccessKey {
    /// The key without its secret.
    pub fn redacted(&self) -> AccessKey {
        AccessKey {
            secret: String::new(),
            ..self.clone()
        }
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

/// Access-key failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such key.
    #[error("no access key {0:?} (see `weft key ls`)")]
    Unknown(String),
    /// Bad request.
    #[error("{0}")]
    Invalid(String),
    /// Storing the keys failed.
    #[error(transparent)]
    Store(#[from] DataDirError),
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
            Err(source) => return Err(DataDirError::Io { path, source }.into()),
        };
        Ok(KeyStore {
            path,
            keys: RwLock::new(keys),
        })
    }

    fn save(&self, keys: &[AccessKey]) -> Result<(), KeyError> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |source| DataDirError::Io {
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
    ) -> Result<AccessKey, KeyError> {
        if let Some(b) = &bucket {
            check_bucket_name(b).map_err(|e| KeyError::Invalid(e.to_string()))?;
        }
        if !read && !write {
            return Err(KeyError::Invalid(
                "a key must allow reading, writing or both".into(),
            ));
        }
        let key = AccessKey {
            id: format!("WK{}", random_text(18, ALPHABET)?),
            secret: random_text(
                40,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            )?,
            bucket,
            read,
            write,
            created_ms: weft_net::now_ms(),
        };
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
        let all = store.create(None, true, true).unwrap();
        let ro = store.create(Some("photos".into()), true, false).unwrap();
        assert!(store.create(None, false, false).is_err());
        assert!(store.create(Some("No".into()), true, true).is_err());
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
