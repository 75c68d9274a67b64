//! The local shard store: shards as files named by their BLAKE3 hash, metadata and space
//! accounting in redb.
//!
//! A shard is acknowledged only after its bytes are fsynced, renamed into place and the
//! directory fsynced: the files are the truth. The redb index is a cache of them, committed
//! without fsync (and durably every [`DURABLE_EVERY`] commits), because an fsync per shard for
//! the index too would double the cost of every write. On open, shard files the index lost
//! are verified and re-indexed, files that fail verification or are half-written are removed,
//! and entries without a file are dropped, so the accounting is exact.
//! Reads re-verify the hash, so a shard altered on disk is reported, never served.
//!
//! Shares: a shard another member sent ([`ShardStore::put_from`]) is charged to that member
//! until the catalog places it here ([`ShardStore::claim`], from the holder's own reading of
//! the catalog) or it is deleted. A member's charges may not pass its share of the capacity
//! (the caller says how much: the node gives each other member an equal part), so members
//! that store what no object owns fill at most their share of anyone's disk, and an orphan
//! sweep later empties it. Charges are kept in the index and survive restarts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use weft_core::{ContentHash, NodeId};

const SHARDS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("shards");
/// Shards another member sent that the catalog has not placed here yet: shard → sender.
const UNCLAIMED: TableDefinition<&[u8; 32], &[u8; 32]> = TableDefinition::new("unclaimed");
/// Every this many index commits, one is made durable (bounds re-indexing after a crash).
pub const DURABLE_EVERY: u64 = 64;

/// Shard-store failures.
#[derive(Debug, thiserror::Error)]
pub enum ShardStoreError {
    /// Not enough free capacity.
    #[error("shard store is full: {needed} bytes needed, {free} of {capacity} free")]
    Full {
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Configured capacity.
        capacity: u64,
    },
    /// Bytes that do not hash to the name they were offered under.
    #[error("shard bytes do not match their name {0}")]
    WrongHash(ContentHash),
    /// A stored shard no longer matches its hash.
    #[error("stored shard {0} is corrupt")]
    Corrupt(ContentHash),
    /// The sending member's share of this store is taken by shards no object owns yet.
    #[error(
        "member {sender} already has {charged} bytes here that no object owns yet (its share is {share}); {needed} more refused"
    )]
    OverShare {
        /// The member.
        sender: NodeId,
        /// Its unclaimed bytes here.
        charged: u64,
        /// Its share.
        share: u64,
        /// Bytes offered.
        needed: u64,
    },
    /// Filesystem failure.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// What.
        source: std::io::Error,
    },
    /// Database failure.
    #[error("shard index: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> ShardStoreError {
    ShardStoreError::Db(e.to_string())
}

/// A node's local shards.
pub struct ShardStore {
    root: PathBuf,
    db: Database,
    capacity: u64,
    /// Bytes used; also serialises writers so capacity checks are exact.
    used: Mutex<u64>,
    /// Unclaimed bytes per sending member (see the module's doc on shares).
    charges: Mutex<std::collections::HashMap<NodeId, u64>>,
    /// Woken when a member reaches its share: its shards may have been claimed since.
    over_share: tokio::sync::Notify,
    commits: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("root", &self.root)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ShardStore {
    /// Open (or create) the store under `root` with `capacity` bytes, reconciling files and index.
    pub fn open(root: &Path, capacity: u64) -> Result<ShardStore, ShardStoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ShardStoreError::Io { path, source }
        };
        fs::create_dir_all(root.join("shards")).map_err(io(root))?;
        let db = Database::create(root.join("shards.redb")).map_err(db_err)?;
        let store = ShardStore {
            root: root.to_path_buf(),
            db,
            capacity,
            used: Mutex::new(0),
            charges: Mutex::default(),
            over_share: tokio::sync::Notify::new(),
            commits: std::sync::atomic::AtomicU64::new(0),
        };
        let used = store.reconcile()?;
        *store.used.lock().unwrap_or_else(|e| e.into_inner()) = used;
        let charges = store.recount_charges()?;
        *store.charges.lock().unwrap_or_else(|e| e.into_inner()) = charges;
        Ok(store)
    }

    fn path_of(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join("shards").join(&hex[..2]).join(&hex[2..])
    }

    fn reconcile(&self) -> Result<u64, ShardStoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let mut used = 0;
        {
            let mut table = tx.open_table(SHARDS).map_err(db_err)?;
            let mut missing = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let hash = ContentHash(*k.value());
                if self.path_of(&hash).exists() {
                    used += v.value();
                } else {
                    missing.push(hash);
                }
            }
            for h in missing {
                tracing::warn!(shard = %h, "indexed shard file is missing; dropping it");
                table.remove(&h.0).map_err(db_err)?;
            }
            for dir in fs::read_dir(self.root.join("shards"))
                .into_iter()
                .flatten()
                .flatten()
            {
                for file in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                    let name = format!(
                        "{}{}",
                        dir.file_name().to_string_lossy(),
                        file.file_name().to_string_lossy()
                    );
                    let indexed = name
                        .parse::<ContentHash>()
                        .ok()
                        .map(|h| table.get(&h.0).map(|v| v.is_some()))
                        .transpose()
                        .map_err(db_err)?
                        .unwrap_or(false);
                    if !indexed {
                        // A shard whose index entry was lost in a crash: keep it if it is whole.
                        let whole = name.parse::<ContentHash>().ok().and_then(|h| {
                            let bytes = fs::read(file.path()).ok()?;
                            (ContentHash::of(&bytes) == h).then_some((h, bytes.len() as u64))
                        });
                        match whole {
                            Some((h, len)) => {
                                table.insert(&h.0, len).map_err(db_err)?;
                                used += len;
                            }
                            None => {
                                let _ = fs::remove_file(file.path());
                            }
                        }
                    }
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(used)
    }

    /// Unclaimed bytes per sender, from the index (charges of shards no longer held go).
    fn recount_charges(&self) -> Result<std::collections::HashMap<NodeId, u64>, ShardStoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let mut charges = std::collections::HashMap::new();
        {
            let shards = tx.open_table(SHARDS).map_err(db_err)?;
            let mut unclaimed = tx.open_table(UNCLAIMED).map_err(db_err)?;
            let mut gone = Vec::new();
            for entry in unclaimed.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                match shards.get(k.value()).map_err(db_err)? {
                    Some(len) => *charges.entry(NodeId(*v.value())).or_insert(0) += len.value(),
                    None => gone.push(*k.value()),
                }
            }
            for k in gone {
                unclaimed.remove(&k).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(charges)
    }

    /// Store a shard `sender` sent, charged to it until claimed (see the module's doc): refused
    /// when its unclaimed bytes here would pass `share`. A shard already held is not charged.
    pub fn put_from(
        &self,
        hash: &ContentHash,
        bytes: &[u8],
        sender: NodeId,
        share: u64,
    ) -> Result<bool, ShardStoreError> {
        let needed = bytes.len() as u64;
        // Held under the charges lock from check to record, so concurrent puts of one sender
        // cannot both pass the check.
        let mut charges = self.charges.lock().unwrap_or_else(|e| e.into_inner());
        if self.present(hash)? {
            return Ok(false);
        }
        let charged = charges.get(&sender).copied().unwrap_or(0);
        if charged + needed > share {
            self.over_share.notify_one();
            return Err(ShardStoreError::OverShare {
                sender,
                charged,
                share,
                needed,
            });
        }
        let stored = self.put(hash, bytes)?;
        if stored {
            let tx = self.db.begin_write().map_err(db_err)?;
            {
                let mut unclaimed = tx.open_table(UNCLAIMED).map_err(db_err)?;
                unclaimed.insert(&hash.0, &sender.0).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            *charges.entry(sender).or_insert(0) += needed;
        }
        Ok(stored)
    }

    /// Shards sent by other members that the catalog has not placed here yet.
    pub fn unclaimed(&self) -> Result<Vec<ContentHash>, ShardStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = match tx.open_table(UNCLAIMED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, _) = entry.map_err(db_err)?;
            out.push(ContentHash(*k.value()));
        }
        Ok(out)
    }

    /// The catalog places these shards here: they stop counting against their senders.
    pub fn claim(&self, shards: &[ContentHash]) -> Result<(), ShardStoreError> {
        if shards.is_empty() {
            return Ok(());
        }
        let mut charges = self.charges.lock().unwrap_or_else(|e| e.into_inner());
        self.uncharge(shards, &mut charges)
    }

    fn uncharge(
        &self,
        shards: &[ContentHash],
        charges: &mut std::collections::HashMap<NodeId, u64>,
    ) -> Result<(), ShardStoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let lens = tx.open_table(SHARDS).map_err(db_err)?;
            let mut unclaimed = tx.open_table(UNCLAIMED).map_err(db_err)?;
            for hash in shards {
                let Some(sender) = unclaimed
                    .remove(&hash.0)
                    .map_err(db_err)?
                    .map(|v| *v.value())
                else {
                    continue;
                };
                let len = lens.get(&hash.0).map_err(db_err)?.map_or(0, |v| v.value());
                if let Some(c) = charges.get_mut(&NodeId(sender)) {
                    *c = c.saturating_sub(len);
                    if *c == 0 {
                        charges.remove(&NodeId(sender));
                    }
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }

    /// Bytes charged to `sender` here.
    pub fn charged(&self, sender: &NodeId) -> u64 {
        let charges = self.charges.lock().unwrap_or_else(|e| e.into_inner());
        charges.get(sender).copied().unwrap_or(0)
    }

    /// Wait until some member reaches its share (a cue to claim what the catalog placed).
    pub async fn over_share(&self) {
        self.over_share.notified().await
    }

    /// Configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes used by stored shards.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store a shard durably. Returns false if it was already stored.
    pub fn put(&self, hash: &ContentHash, bytes: &[u8]) -> Result<bool, ShardStoreError> {
        if ContentHash::of(bytes) != *hash {
            return Err(ShardStoreError::WrongHash(*hash));
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if self.contains(hash)? {
            if self.path_of(hash).exists() {
                return Ok(false);
            }
            // Indexed but its file is gone (deleted behind the store's back): forget the stale
            // entry and store the shard again.
            let tx = self.db.begin_write().map_err(db_err)?;
            let stale = {
                let mut table = tx.open_table(SHARDS).map_err(db_err)?;
                table.remove(&hash.0).map_err(db_err)?.map(|v| v.value())
            };
            tx.commit().map_err(db_err)?;
            *used = used.saturating_sub(stale.unwrap_or(0));
        }
        let needed = bytes.len() as u64;
        if *used + needed > self.capacity {
            return Err(ShardStoreError::Full {
                needed,
                free: self.capacity.saturating_sub(*used),
                capacity: self.capacity,
            });
        }
        let path = self.path_of(hash);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let io = |source| ShardStoreError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join(format!(".{}.tmp", hash.to_hex()));
        {
            let mut f = fs::File::create(&tmp).map_err(io)?;
            f.write_all(bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(SHARDS).map_err(db_err)?;
            table.insert(&hash.0, needed).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        *used += needed;
        Ok(true)
    }

    fn begin_index_write(&self) -> Result<redb::WriteTransaction, ShardStoreError> {
        let mut tx = self.db.begin_write().map_err(db_err)?;
        let n = self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !n.is_multiple_of(DURABLE_EVERY) {
            tx.set_durability(redb::Durability::None).map_err(db_err)?;
        }
        Ok(tx)
    }

    /// True when the shard is stored.
    pub fn contains(&self, hash: &ContentHash) -> Result<bool, ShardStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = match tx.open_table(SHARDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(db_err(e)),
        };
        Ok(table.get(&hash.0).map_err(db_err)?.is_some())
    }

    /// Read a shard, verifying it. `Ok(None)` if not stored; `Err(Corrupt)` if altered on disk.
    pub fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, ShardStoreError> {
        if !self.contains(hash)? {
            return Ok(None);
        }
        let path = self.path_of(hash);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ShardStoreError::Corrupt(*hash));
            }
            Err(source) => return Err(ShardStoreError::Io { path, source }),
        };
        if ContentHash::of(&bytes) != *hash {
            return Err(ShardStoreError::Corrupt(*hash));
        }
        Ok(Some(bytes))
    }

    /// When this store first ran with a catalog (shards older than that may belong to objects
    /// the catalog never heard of, so nothing may treat them as orphans). Recorded on first call.
    pub fn catalog_since(&self) -> std::time::SystemTime {
        let path = self.root.join("catalog-since");
        let read = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let ms = match read {
            Some(ms) => ms,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let _ = fs::write(&path, now.to_string());
                now
            }
        };
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
    }

    /// When shard `hash`'s file was last written (None if there is no file).
    pub fn written_at(&self, hash: &ContentHash) -> Option<std::time::SystemTime> {
        fs::metadata(self.path_of(hash))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Whether a shard is indexed and its file is still there (no hashing: a cheap check).
    pub fn present(&self, hash: &ContentHash) -> Result<bool, ShardStoreError> {
        Ok(self.contains(hash)? && self.path_of(hash).exists())
    }

    /// Remove a shard. Returns false if it was not stored.
    pub fn delete(&self, hash: &ContentHash) -> Result<bool, ShardStoreError> {
        {
            let mut charges = self.charges.lock().unwrap_or_else(|e| e.into_inner());
            if !charges.is_empty() {
                self.uncharge(std::slice::from_ref(hash), &mut charges)?;
            }
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.begin_index_write()?;
        let removed = {
            let mut table = tx.open_table(SHARDS).map_err(db_err)?;
            table.remove(&hash.0).map_err(db_err)?.map(|v| v.value())
        };
        tx.commit().map_err(db_err)?;
        let Some(len) = removed else { return Ok(false) };
        let _ = fs::remove_file(self.path_of(hash));
        *used = used.saturating_sub(len);
        Ok(true)
    }

    /// Every stored shard with its length.
    pub fn list(&self) -> Result<Vec<(ContentHash, u64)>, ShardStoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = match tx.open_table(SHARDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((ContentHash(*k.value()), v.value()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stored_verified_accounted_and_reconciled() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), 1000).unwrap();
        let a = vec![1u8; 400];
        let ha = ContentHash::of(&a);
        assert!(store.put(&ha, &a).unwrap());
        assert!(!store.put(&ha, &a).unwrap());
        assert_eq!(store.used(), 400);
        assert!(matches!(
            store.put(&ContentHash::of(b"x"), b"y"),
            Err(ShardStoreError::WrongHash(_))
        ));
        let big = vec![2u8; 700];
        assert!(matches!(
            store.put(&ContentHash::of(&big), &big),
            Err(ShardStoreError::Full {
                needed: 700,
                free: 600,
                ..
            })
        ));
        assert_eq!(store.get(&ha).unwrap().unwrap(), a);
        assert_eq!(store.get(&ContentHash::of(b"none")).unwrap(), None);

        // Bit rot on disk is reported, not served.
        let path = store.path_of(&ha);
        let mut rotten = a.clone();
        rotten[3] ^= 0x10;
        fs::write(&path, &rotten).unwrap();
        assert!(matches!(store.get(&ha), Err(ShardStoreError::Corrupt(_))));
        fs::write(&path, &a).unwrap();

        // A whole shard the index lost (crash before the index commit) is re-indexed; a
        // damaged stray is removed; a lost file is dropped from the index.
        let b = vec![3u8; 100];
        let hb = ContentHash::of(&b);
        let stray = store.path_of(&hb);
        fs::create_dir_all(stray.parent().unwrap()).unwrap();
        fs::write(&stray, &b).unwrap();
        let c = vec![4u8; 50];
        let hc = ContentHash::of(&c);
        let damaged = store.path_of(&hc);
        fs::create_dir_all(damaged.parent().unwrap()).unwrap();
        fs::write(&damaged, &c[..49]).unwrap();
        drop(store);
        let store = ShardStore::open(dir.path(), 1000).unwrap();
        assert!(!damaged.exists());
        assert_eq!(store.get(&hb).unwrap().unwrap(), b);
        assert_eq!(store.used(), 500);
        assert!(store.delete(&hb).unwrap());
        assert_eq!(store.used(), 400);
        fs::remove_file(store.path_of(&ha)).unwrap();
        drop(store);
        let store = ShardStore::open(dir.path(), 1000).unwrap();
        assert_eq!(store.used(), 0);
        assert!(store.list().unwrap().is_empty());
        assert!(store.put(&ha, &a).unwrap());
        assert!(store.delete(&ha).unwrap());
        assert!(!store.delete(&ha).unwrap());
        assert_eq!(store.used(), 0);
    }

    #[test]
    fn a_sender_fills_only_its_share_until_the_catalog_claims_its_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::open(dir.path(), 10_000).unwrap();
        let (rogue, honest) = (NodeId([1; 32]), NodeId([2; 32]));
        let shard = |i: u8| vec![i; 1000];
        for i in 0..3 {
            let b = shard(i);
            assert!(
                store
                    .put_from(&ContentHash::of(&b), &b, rogue, 3000)
                    .unwrap()
            );
        }
        // Again: already held, not charged twice.
        let b = shard(0);
        assert!(
            !store
                .put_from(&ContentHash::of(&b), &b, rogue, 3000)
                .unwrap()
        );
        let b = shard(3);
        assert!(matches!(
            store.put_from(&ContentHash::of(&b), &b, rogue, 3000),
            Err(ShardStoreError::OverShare {
                charged: 3000,
                needed: 1000,
                ..
            })
        ));
        // Another member's share is its own.
        assert!(
            store
                .put_from(&ContentHash::of(&b), &b, honest, 3000)
                .unwrap()
        );
        assert_eq!(
            (store.charged(&rogue), store.charged(&honest)),
            (3000, 1000)
        );
        // Claimed by the catalog, or deleted: the charge goes; and it survives a restart.
        store.claim(&[ContentHash::of(&shard(0))]).unwrap();
        store.delete(&ContentHash::of(&shard(1))).unwrap();
        assert_eq!(store.charged(&rogue), 1000);
        assert_eq!(store.unclaimed().unwrap().len(), 2);
        drop(store);
        let store = ShardStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(
            (store.charged(&rogue), store.charged(&honest)),
            (1000, 1000)
        );
        let b = shard(4);
        assert!(
            store
                .put_from(&ContentHash::of(&b), &b, rogue, 3000)
                .unwrap()
        );
        // A file deleted behind the store's back: its charge goes at the next open.
        fs::remove_file(store.path_of(&ContentHash::of(&shard(2)))).unwrap();
        drop(store);
        let store = ShardStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(store.charged(&rogue), 1000);
    }
}
